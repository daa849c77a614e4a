"""python -m minisd.sweep: a tiny grid on generated data, skip of finished runs, resume of an
interrupted one, Figure 8 from run folders, one-line errors for bad input."""
import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from minisd import train
from minisd.tools import sweep
from minisd.tools.checkpoint import load_checkpoint
from minisd.data.fake import write_fake_cifar10

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=40)
    return str(root)


def tiny(root, out, *extra, epochs=1):
    """A tiny sweep: ResNet-8, ``epochs`` of 32 images in batches of 16."""
    return ["--out", str(out), "--depth", "8", "--epochs", str(epochs), "--batch-size", "16", "--limit-train", "32",
            "--valid-size", "0", "--data-dir", root, "--device", "cpu", "--eval-batch-size", "40", *extra]


def interrupt_at_step(n, monkeypatch, argv):
    """``python -m minisd.train ARGV`` in this process, stopped (as by Ctrl-C) after its n-th step."""
    original, calls = train.Run.train_step, {"n": 0}

    def interrupting_step(self, idx):
        result = original(self, idx)
        calls["n"] += 1
        if calls["n"] == n:
            self.stop_requested = True
        return result

    monkeypatch.setattr(train.Run, "train_step", interrupting_step)
    assert train.main(argv) == 130
    monkeypatch.setattr(train.Run, "train_step", original)


@pytest.fixture(scope="module")
def finished(fake_root, tmp_path_factory):
    """A finished grid: p_L 0.5 and 1 x linear and uniform = 3 runs (constant depth once). Read-only."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    argv = tiny(fake_root, out, "--p-last", "0.5", "1")
    r = subprocess.run([sys.executable, "-m", "minisd.sweep", *argv], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, argv, r.stdout


def test_grid_names_and_constant_depth_once():
    points = sweep.grid_points([20], ["linear", "uniform"], [0.2, 1.0, 0.5], [0])
    assert [p["name"] for p in points] == ["d20-constant-s0", "d20-linear-p0.5-s0", "d20-uniform-p0.5-s0",
                                           "d20-linear-p0.2-s0", "d20-uniform-p0.2-s0"]


def test_tiny_grid_runs_every_point_once(finished):
    out, _, stdout = finished
    names = sorted(os.listdir(out))
    assert names == ["d8-constant-s0", "d8-linear-p0.5-s0", "d8-uniform-p0.5-s0"]
    for name in names:
        summary = json.load(open(out / name / "summary.json"))
        assert summary["epochs_run"] == 1
        cfg = json.load(open(out / name / "config.json"))
        assert (cfg["depth"], cfg["epochs"], cfg["limit_train"]) == (8, 1, 32)
        assert "done: test error" in (out / name / "train.log").read_text()
    assert json.load(open(out / "d8-uniform-p0.5-s0" / "config.json"))["rule"] == "uniform"
    assert json.load(open(out / "d8-constant-s0" / "config.json"))["p_last"] == 1.0
    lines = [l for l in stdout.splitlines() if l.startswith("[")]  # one line per finished run
    assert len(lines) == 3 and all("test error" in l and l.rstrip().endswith(" s") for l in lines), stdout
    assert lines[0].startswith("[1/3] d8-constant-s0: test error ")


def test_finished_runs_are_skipped(finished, capsys):
    out, argv, _ = finished
    before = {n: os.path.getmtime(out / n / "summary.json") for n in os.listdir(out)}
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("(skipped)") == 3 and "(3 finished before, 0 to run)" in printed
    assert before == {n: os.path.getmtime(out / n / "summary.json") for n in os.listdir(out)}


def test_interrupted_run_is_resumed(fake_root, tmp_path, monkeypatch, capsys):
    """The run is started with a recipe (flags beside it override it): minisd.train refuses --recipe beside
    --resume, so the sweep resumes without it - the checkpoint holds the resolved configuration."""
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--p-last", "0.5", "--rule", "linear", "--recipe", "paper-cifar10", epochs=2)
    # first the grid point's own run, interrupted in epoch 2 (2 steps per epoch): last.npz, no summary.json
    run_dir = out / "d8-linear-p0.5-s0"
    point = sweep.grid_points([8], ["linear"], [0.5], [0])[0]
    _, passthrough = sweep.parse(argv)
    interrupt_at_step(3, monkeypatch, sweep.train_argv(point, passthrough, str(run_dir)))
    assert sweep.run_state(str(run_dir)) == "interrupted"
    assert {k: load_checkpoint(run_dir / "last.npz")[1][k] for k in ("epoch", "step_in_epoch")} == \
        {"epoch": 1, "step_in_epoch": 1}
    capsys.readouterr()

    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/1] d8-linear-p0.5-s0: test error" in printed and "resumed from last.npz" in printed
    log = (run_dir / "train.log").read_text()
    assert "resumed from" in log and "--resume" in log and "--recipe" not in log.split("--resume")[0].splitlines()[-1]
    assert json.load(open(run_dir / "summary.json"))["epochs_run"] == 2
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_folder_trained_otherwise_stops_before_any_run(finished, capsys):
    out, argv, _ = finished
    argv = tiny(str(out.parent.parent), out, "--p-last", "0.5", "1", epochs=2)
    argv[argv.index("--data-dir") + 1] = json.load(open(out / "d8-constant-s0" / "config.json"))["data_dir"]
    assert sweep.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "epochs 1 there, 2 here" in err[0], err


def test_plot_from_run_folders(finished, tmp_path, capsys):
    out, _, _ = finished
    figure = tmp_path / "fig8.png"
    assert sweep.main(["--plot", str(out), "-o", str(figure)]) == 0
    assert png_size(figure)[0] > 500
    table = capsys.readouterr().out
    assert "3 finished runs" in table and "constant" in table and "uniform" in table


def fake_run(folder, depth, rule, p_last, seed, error, seconds=10.0):
    folder.mkdir(parents=True)
    json.dump(dict(depth=depth, rule=rule, p_last=p_last, seed=seed, epochs=3), open(folder / "config.json", "w"))
    json.dump(dict(epochs_run=3, test_error=error, test_error_rule="no validation set: final test error",
                   mean_epoch_seconds=seconds), open(folder / "summary.json", "w"))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_plot_several_depths_draws_the_heat_map(tmp_path, capsys):
    """Run folders written by hand (no training): two depths, two rules, two seeds, one unfinished run."""
    for depth in (20, 56):
        for seed in (0, 1):
            fake_run(tmp_path / f"d{depth}-constant-s{seed}", depth, "linear", 1.0, seed, 0.30 + 0.01 * seed)
            for rule in ("linear", "uniform"):
                for p in (0.2, 0.5):
                    fake_run(tmp_path / sweep.run_name(depth, rule, p, seed), depth, rule, p, seed,
                             0.4 - p / 10 + 0.02 * seed, seconds=10 * p)
    (tmp_path / "d110-constant-s0").mkdir()
    json.dump(dict(depth=110, rule="linear", p_last=1.0, seed=0, epochs=3),
              open(tmp_path / "d110-constant-s0" / "config.json", "w"))
    assert sweep.main(["--plot", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "20 finished runs" in printed and "unfinished: d110-constant-s0" in printed
    row = next(l for l in printed.splitlines() if l.split()[:3] == ["20", "linear", "0.2"])
    assert "39.00  (38.0-40.0)" in row and "20%" in row  # mean over seeds, spread; 2 s vs 10 s per epoch
    width, _ = png_size(tmp_path / "fig8.png")
    single = tmp_path / "single"
    single.mkdir()
    fake_run(single / "d20-constant-s0", 20, "linear", 1.0, 0, 0.3)
    fake_run(single / "d20-linear-p0.5-s0", 20, "linear", 0.5, 0, 0.35)
    assert sweep.main(["--plot", str(single)]) == 0
    assert width > 1.5 * png_size(single / "fig8.png")[0]  # the heat map is a second panel


def test_dry_run_lists_commands_and_runs_nothing(fake_root, tmp_path, capsys):
    out = tmp_path / "g"
    assert sweep.main(tiny(fake_root, out, "--p-last", "0.8", "1", "--rule", "linear", "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert "[2/2] d8-linear-p0.8-s0 (new): python -m minisd.train --depth 8 --p-last 0.8 --rule linear" in printed
    assert not out.exists()


def test_failed_run_is_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "g"), "--depth", "8", "--p-last", "1", "0.5", "--rule", "linear",
            "--data-dir", str(tmp_path / "missing"), "--device", "cpu", "--epochs", "1"]
    assert sweep.main(argv) == 1
    printed = capsys.readouterr().out
    failed = [l for l in printed.splitlines() if "FAILED" in l]
    assert len(failed) == 2 and "missing" in failed[0] and failed[0].startswith("[1/2] d8-constant-s0: FAILED")


@pytest.mark.parametrize("args,message", [
    (["--p-last", "1.5"], "(0, 1]"),
    (["--depth", "21"], "6N+2"),
    (["--rule", "cubic"], "invalid choice"),
    (["--dept", "20"], "--dept"),
    (["--epochs", "0"], "--epochs"),
    (["--resume", "x/last.npz"], "--resume"),
    (["--print-config"], "--dry-run"),
    (["--recipe", "paper-imagenet"], "recipe"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    assert sweep.main(["--out", str(tmp_path / "g"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("args,message,code", [
    (["--p-last", "0.5"], "--out DIR is required", 2),
    (["--plot", "/nonexistent/sweep"], "/nonexistent/sweep", 1),
    (["--plot", "/tmp", "--depth", "20"], "takes no --depth", 2),
    (["--plot", "/tmp", "--epochs", "3"], "no training flags", 2),
])
def test_missing_out_and_bad_plot_folder(args, message, code, capsys):
    assert sweep.main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cli_bad_flag_is_one_line_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minisd.sweep", "--out", str(tmp_path), "--dept", "20"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "unrecognized arguments: --dept 20" in r.stderr


def test_every_flag_has_a_help_line():
    parser = sweep.build_parser()
    assert [a.option_strings for a in parser._actions if not a.help] == []
    assert "minisd.train" in parser.format_help()


# ---------------------------------------------------------------------------
# more than one worker: --jobs, --devices, --print-commands, --slurm
# ---------------------------------------------------------------------------


def test_jobs_2_runs_two_grid_points_at_once(fake_root, tmp_path, capsys):
    out = tmp_path / "grid"
    assert sweep.main(tiny(fake_root, out, "--p-last", "0.5", "1", "--rule", "linear", "--jobs", "2")) == 0
    lines = capsys.readouterr().out.splitlines()
    started = [i for i, l in enumerate(lines) if "started (job slot" in l]
    done = [i for i, l in enumerate(lines) if ": test error" in l]
    assert len(started) == 2 and len(done) == 2
    assert max(started) < min(done)  # the second started before the first finished
    assert {sweep.run_state(str(out / n)) for n in ("d8-linear-p0.5-s0", "d8-constant-s0")} == {"done"}


def test_jobs_split_the_cores_and_devices_pick_a_gpu():
    from minisd.tools import launch
    env = launch.child_env(0, jobs=2, cores=8)
    assert env["MINISD_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "4"
    assert launch.child_env(1, jobs=3, cores=2)["MINISD_NUM_THREADS"] == "1"  # never 0
    assert launch.child_env(0, jobs=1, cores=8).get("MINISD_NUM_THREADS") == os.environ.get("MINISD_NUM_THREADS")
    assert [launch.child_env(j, 4, ["0", "1", "2", "3"])["CUDA_VISIBLE_DEVICES"] for j in range(6)] == \
        ["0", "1", "2", "3", "0", "1"]


def test_ctrl_c_stops_every_job_each_resumable(fake_root, tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while two runs train: each saves."""
    import signal
    import time
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--p-last", "0.5", "1", "--rule", "linear", "--jobs", "2", epochs=200)
    proc = subprocess.Popen([sys.executable, "-m", "minisd.sweep", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    logs = [out / n / "train.log" for n in ("d8-linear-p0.5-s0", "d8-constant-s0")]
    deadline = time.monotonic() + 120
    while not all(p.exists() and "epoch 1/200" in p.read_text() for p in logs):
        assert time.monotonic() < deadline and proc.poll() is None, "the runs did not both start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    for p in logs:
        assert sweep.run_state(str(p.parent)) == "interrupted", p.read_text()[-2000:]
        assert "continue with --resume" in p.read_text()
    assert "run the same command again" in output.lower()


def test_print_commands_prints_runnable_lines_for_pending_points(fake_root, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--p-last", "0.5", "1", "--rule", "linear")
    assert sweep.main(argv + ["--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("-m minisd.train" in l and "train.log" in l for l in lines)
    assert not out.exists() or not any(out.iterdir())  # printed, nothing run
    r = subprocess.run(["bash", "-c", lines[0]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sweep.main(argv + ["--print-commands"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # only the pending one is left


def test_slurm_script_runs_each_task_as_plain_bash(fake_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "grid"
    script = tmp_path / "sweep.sbatch"
    argv = tiny(fake_root, out, "--p-last", "0.5", "1", "--rule", "linear", epochs=2)
    assert sweep.main(argv + ["--slurm", str(script)]) == 0
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and "#SBATCH --signal=TERM@120" in text and "#SBATCH --requeue" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    task = lambda i: subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(i)},  # noqa: E731
                                    cwd=tmp_path, capture_output=True, text=True, timeout=300)
    # task 1 pre-empted mid-run: its last.npz, no summary (as SIGTERM before the time limit leaves it)
    point = sweep.grid_points([8], ["linear"], [0.5, 1], [0])[1]
    _, passthrough = sweep.parse(argv)
    run1 = out / point["name"]
    interrupt_at_step(3, monkeypatch, sweep.train_argv(point, passthrough, str(run1)))
    assert sweep.run_state(str(run1)) == "interrupted"
    for i in (0, 1):
        r = task(i)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in (run1 / "train.log").read_text()
    assert {sweep.run_state(str(out / n)) for n in ("d8-linear-p0.5-s0", "d8-constant-s0")} == {"done"}
    r = task(0)
    assert r.returncode == 0 and "finished before" in r.stdout
    assert task(5).returncode == 2


def test_a_densenet_grid_is_depth_by_seed(fake_root, tmp_path, capsys):
    """--arch densenet among the training flags: runs densenet-dD-sS, no --p-last/--rule passed on."""
    out = tmp_path / "dense"
    argv = ["--out", str(out), "--depth", "10", "--seed", "0", "1", "--arch", "densenet", "--growth-rate", "4",
            "--epochs", "1", "--batch-size", "16", "--limit-train", "32", "--valid-size", "0",
            "--data-dir", fake_root, "--device", "cpu", "--eval-batch-size", "40"]
    assert sweep.main(argv + ["--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("--arch densenet" in l and "--p-last" not in l for l in lines)
    assert "densenet-d10-s1" in lines[1]
    assert sweep.main(argv) == 0
    assert {sweep.run_state(str(out / n)) for n in ("densenet-d10-s0", "densenet-d10-s1")} == {"done"}
    capsys.readouterr()
    assert sweep.main(argv + ["--p-last", "0.5"]) == 2
    assert "a DenseNet has no gates" in capsys.readouterr().err
