"""minisd.runs: metrics.csv, config.json and the paper's number, without training anything."""
import math

from minisd import plot, runs


def row(epoch, valid, test, train=0.5):
    return dict(epoch=epoch, lr=0.1, train_loss=1.0, train_error=train, valid_error=valid, test_error=test,
                epoch_seconds=2.0, mean_blocks=2.5, expected_blocks=2.5)


def test_metrics_round_trip_with_nan(tmp_path):
    path = str(tmp_path / "metrics.csv")
    rows = [row(0, 0.4, 0.41), row(1, math.nan, 0.39)]
    runs.write_metrics(path, rows)
    back = runs.read_metrics(path)
    assert [r["epoch"] for r in back] == [0.0, 1.0]
    assert back[0]["valid_error"] == 0.4 and math.isnan(back[1]["valid_error"])
    assert set(back[0]) == set(runs.METRIC_FIELDS)
    assert not (tmp_path / "metrics.csv.tmp").exists()
    assert runs.read_metrics(str(tmp_path / "absent.csv")) == []


def test_summary_is_the_test_error_at_the_best_validation_epoch():
    s = runs.summarize([row(0, 0.30, 0.35), row(1, 0.20, 0.27), row(2, 0.25, 0.22)])
    assert (s["best_epoch"], s["test_error"], s["final_test_error"], s["epochs_run"]) == (1, 0.27, 0.22, 3)
    assert "lowest validation error" in s["test_error_rule"]


def test_summary_without_validation_set_says_so():
    s = runs.summarize([row(0, math.nan, 0.35), row(1, math.nan, 0.30)])
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
    rows = [dict(row(0, 0.50, 0.52), iteration=5, epoch_seconds=1.0), dict(row(0, 0.40, 0.41), iteration=7),
            dict(row(1, 0.30, 0.33), iteration=10, epoch_seconds=1.5), dict(row(1, 0.35, 0.30), iteration=14)]
    assert runs.epoch_end_rows(rows) == [rows[1], rows[3]]
    s = runs.summarize(rows)
    assert (s["best_epoch"], s["best_iteration"], s["test_error"]) == (1, 10, 0.33)
    assert s["mean_epoch_seconds"] == 2.0 and s["epochs_run"] == 2
    assert "every --eval-every steps" in s["test_error_rule"]
    assert "best_iteration" not in runs.summarize([row(0, 0.3, 0.3)])  # rows of old runs: no iteration
