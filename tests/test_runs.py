"""minisd.tools.runs and minisd.plot: metrics.csv, config.json, the paper's number and the figure, without
training anything; minisd.tools.checkpoint's temporary files."""
import math
import os
import subprocess
import sys

import pytest

from minisd.tools import checkpoint, plot, runs


def row(epoch, valid, test, train=0.5):
    return dict(epoch=epoch, lr=0.1, train_loss=1.0, train_error=train, valid_error=valid, test_error=test,
                epoch_seconds=2.0, mean_blocks=2.5, expected_blocks=2.5)


def test_metrics_round_trip_with_nan(tmp_path):
    path = str(tmp_path / "metrics.csv")
    rows = [row(1, 0.4, 0.41), row(2, math.nan, 0.39)]
    runs.write_metrics(path, rows)
    back = runs.read_metrics(path)
    assert [r["epoch"] for r in back] == [1.0, 2.0]
    assert back[0]["valid_error"] == 0.4 and math.isnan(back[1]["valid_error"])
    header = open(path).read().splitlines()[0].split(",")
    assert open(path).read().splitlines()[2].split(",")[header.index("valid_error")] == ""  # no validation figure: an empty cell
    assert set(back[0]) == set(runs.METRIC_FIELDS)  # a missing column (iteration here) reads as NaN
    assert os.listdir(tmp_path) == ["metrics.csv"]  # no temporary file left
    assert runs.read_metrics(str(tmp_path / "absent.csv")) == []


def test_metrics_of_an_earlier_version_are_renumbered_from_1(tmp_path):
    """Earlier minisd numbered metrics.csv from 0 (and wrote nan): read as epochs 1, 2."""
    (tmp_path / "metrics.csv").write_text(
        "epoch,lr,train_loss,train_error,valid_error,test_error,epoch_seconds,mean_blocks,expected_blocks\n"
        "0,0.1,2.0,0.8,nan,0.7,1.0,2.5,2.5\n1,0.1,1.5,0.6,nan,0.5,1.0,2.5,2.5\n")
    back = runs.read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in back] == [1, 2] and math.isnan(back[0]["valid_error"])
    assert runs.summarize(back)["epochs_run"] == 2


def test_unreadable_metrics_raise_value_error(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,test_error\n1,zero point five\n")
    with pytest.raises(ValueError, match="line 2"):
        runs.read_metrics(tmp_path / "metrics.csv")


def test_summary_is_the_test_error_at_the_best_validation_epoch():
    s = runs.summarize([row(1, 0.30, 0.35), row(2, 0.20, 0.27), row(3, 0.25, 0.22)])
    assert (s["best_epoch"], s["test_error"], s["final_test_error"], s["epochs_run"]) == (2, 0.27, 0.22, 3)
    assert "lowest validation error" in s["test_error_rule"]


def test_summary_without_validation_set_says_so():
    s = runs.summarize([row(1, math.nan, 0.35), row(2, math.nan, 0.30)])
    assert s["test_error"] == 0.30 and s["test_error_rule"].startswith("no validation set")
    assert runs.summarize([]) == {}


def test_config_round_trip_and_run_label(tmp_path):
    assert runs.read_config(tmp_path) is None
    assert plot.run_label(str(tmp_path)) == tmp_path.name
    runs.write_json(str(tmp_path / "config.json"), {"depth": 110, "p_last": 0.5, "rule": "linear", "seed": 2})
    assert runs.read_config(tmp_path)["depth"] == 110
    assert plot.run_label(str(tmp_path)) == "ResNet-110, stochastic depth p_L=0.5 (linear), seed 2"
    (tmp_path / "config.json").write_text("{not json")
    assert runs.read_config(tmp_path) is None



def test_summary_with_rows_every_n_steps():
    """--eval-every: several rows per epoch; the best row among all of them, seconds from the epochs' ends."""
    rows = [dict(row(1, 0.50, 0.52), iteration=5, epoch_seconds=1.0), dict(row(1, 0.40, 0.41), iteration=7),
            dict(row(2, 0.30, 0.33), iteration=10, epoch_seconds=1.5), dict(row(2, 0.35, 0.30), iteration=14)]
    assert runs.epoch_end_rows(rows) == [rows[1], rows[3]]
    s = runs.summarize(rows)
    assert (s["best_epoch"], s["best_iteration"], s["test_error"]) == (2, 10, 0.33)
    assert s["mean_epoch_seconds"] == 2.0 and s["epochs_run"] == 2
    assert "every --eval-every steps" in s["test_error_rule"]
    assert "best_iteration" not in runs.summarize([row(1, 0.3, 0.3)])  # rows of old runs: no iteration
# ---------------------------------------------------------------------------
# temporary files (minisd.tools.checkpoint): recognisable, and orphans removed
# ---------------------------------------------------------------------------


def test_orphan_temp_files_are_recognised_and_only_they_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(gone.stdout)  # a process that has ended
    orphan = f"{checkpoint.TEMP_PREFIX}{dead}-0a1b2c3d-last.npz"
    live = f"{checkpoint.TEMP_PREFIX}{os.getpid()}-0a1b2c3d-best.npz"  # this process: maybe saving now
    legacy = [".tmp-ab12_xyz.npz", "metrics.csv.tmp"]  # names earlier versions used
    keep = ["last.npz", "notes.tmp", ".tmp-notes.txt", "my.npz"]
    for name in [orphan, live, *legacy, *keep]:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(checkpoint.remove_orphan_temp_files(tmp_path)) == sorted([orphan, *legacy])
    assert sorted(os.listdir(tmp_path)) == sorted([live, *keep])
    assert os.path.basename(checkpoint.temp_path(tmp_path / "last.npz")).startswith(
        f"{checkpoint.TEMP_PREFIX}{os.getpid()}-")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "config.json"
    runs.write_json(target, {"a": 1})

    def fail(f):
        f.write("{half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        checkpoint.atomic_write(target, fail, mode="w")
    assert runs.read_config(tmp_path) == {"a": 1} and os.listdir(tmp_path) == ["config.json"]


# ---------------------------------------------------------------------------
# python -m minisd.plot
# ---------------------------------------------------------------------------


def make_run(folder, n, valid=True, p_last=0.5):
    folder.mkdir(parents=True)
    runs.write_metrics(folder / "metrics.csv",
                       [row(e, 0.5 - 0.01 * e if valid else math.nan, 0.45 - 0.01 * e) for e in range(1, n + 1)])
    runs.write_json(folder / "config.json", {"depth": 20, "p_last": p_last, "rule": "linear", "seed": 0})
    return folder


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures plot_runs saves, kept open for inspection."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    import matplotlib.pyplot as plt
    figures, real_savefig = [], Figure.savefig

    def savefig(self, *a, **k):
        figures.append(self)
        return real_savefig(self, *a, **k)
    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(plt, "close", lambda *a: None)
    return figures


def test_plot_shows_validation_markers_and_whole_epochs(tmp_path, saved_figures):
    short = make_run(tmp_path / "short", 3)
    long = make_run(tmp_path / "long", 60, valid=False, p_last=1)
    plot.plot_runs([str(short), str(long)], str(tmp_path / "f.png"))
    (fig,) = saved_figures
    ax = fig.axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    short_label, long_label = plot.run_label(str(short)), plot.run_label(str(long))
    assert f"{short_label}: validation" in lines and f"{long_label}: validation" not in lines
    assert list(lines[f"{short_label}: test"].get_xdata()) == [1, 2, 3]  # epochs from 1
    assert lines[f"{short_label}: test"].get_marker() == "o"                # a short curve: markers
    assert lines[f"{long_label}: test"].get_marker() in (None, "None", "")  # a long one: none
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_plot_with_only_a_few_epochs_has_whole_number_ticks(tmp_path, saved_figures):
    run = make_run(tmp_path / "run", 2)
    plot.plot_runs([str(run)], str(tmp_path / "f.png"))
    ax = saved_figures[0].axes[0]
    saved_figures[0].canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def plot_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "minisd.plot", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))), timeout=120)


def test_plot_cli_writes_into_the_run_folder(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", 3)
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    assert plot.main([str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 1000 and os.listdir(here) == []
    assert plot.output_path(["a", "b"], None) is None
    assert plot.output_path(["a"], str(tmp_path)) == os.path.join(str(tmp_path), "curves.png")


def test_plot_cli_several_runs_need_o_and_errors_are_one_line(tmp_path, capsys):
    a, b = make_run(tmp_path / "a", 3), make_run(tmp_path / "b", 3)
    assert plot.main([str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o" in err
    assert plot.main([str(a), str(b), "-o", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").exists() and not (a / "curves.png").exists()
    capsys.readouterr()
    assert plot.main([str(tmp_path / "absent")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_plot_help_has_no_restructuredtext(tmp_path):
    r = plot_cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "``" not in r.stdout and "RUN/curves.png" in r.stdout
