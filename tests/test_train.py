"""The training CLI and loop: outputs, resume, Ctrl-C, NaN, bad input — on generated CIFAR files."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from minisd import layers, runs, train
from minisd.checkpoint import load_checkpoint
from minisd.fake_data import write_fake_cifar10


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=40, seed=0)
    return str(root)


def quick_config(root, out, **kw):
    base = dict(dataset="cifar10", data_dir=root, depth=8, epochs=2, batch_size=16, valid_size=32,
                limit_train=0, seed=3, device="cpu", out=str(out), progress=False, eval_batch_size=64)
    base.update(kw)
    return train.Config(**base)


def model_arrays(path):
    arrays, meta = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(("model/", "optim/"))}, meta


def test_run_writes_every_output(fake_root, tmp_path):
    cfg = quick_config(fake_root, tmp_path / "run")
    summary = train.train(cfg, log=lambda *a: None)
    out = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "last.npz", "best.npz", "summary.json", "curves.png"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert set(runs.METRIC_FIELDS) == set(rows[0])
    for r in rows:
        assert 0 <= float(r["train_error"]) <= 1 and 0 <= float(r["test_error"]) <= 1
        assert 0 < float(r["mean_blocks"]) <= 3
        assert float(r["expected_blocks"]) == pytest.approx(sum([5 / 6, 4 / 6, 3 / 6]))
    best = min(rows, key=lambda r: float(r["valid_error"]))
    assert summary["test_error"] == pytest.approx(float(best["test_error"]), abs=1e-6)
    assert json.load(open(out / "summary.json"))["best_epoch"] == int(best["epoch"])
    assert json.load(open(out / "config.json"))["depth"] == 8


def test_resume_is_bit_exact(fake_root, tmp_path):
    train.train(quick_config(fake_root, tmp_path / "straight"), log=lambda *a: None)
    # one epoch, then resume for the second
    first = quick_config(fake_root, tmp_path / "split", epochs=1)
    train.train(first, log=lambda *a: None)
    resumed = quick_config(fake_root, tmp_path / "split", epochs=2)
    train.train(resumed, resume=str(tmp_path / "split" / "last.npz"), log=lambda *a: None)
    a, meta_a = model_arrays(tmp_path / "straight" / "last.npz")
    b, meta_b = model_arrays(tmp_path / "split" / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert meta_a["rng"] == meta_b["rng"]
    rows = list(csv.DictReader(open(tmp_path / "split" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]


def test_ctrl_c_saves_and_resumes_mid_epoch(fake_root, tmp_path, monkeypatch):
    train.train(quick_config(fake_root, tmp_path / "straight"), log=lambda *a: None)
    original = train.Run.train_step
    calls = {"n": 0}

    def interrupting_step(self, idx):
        result = original(self, idx)
        calls["n"] += 1
        if calls["n"] == 5:          # as if Ctrl-C arrived during step 5 (epoch 1 has 7 steps)
            self.stop_requested = True
        return result

    monkeypatch.setattr(train.Run, "train_step", interrupting_step)
    out = tmp_path / "interrupted"
    assert train.train(quick_config(fake_root, out), log=lambda *a: None) is None
    _, meta = load_checkpoint(out / "last.npz")
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 5)
    monkeypatch.setattr(train.Run, "train_step", original)
    train.train(quick_config(fake_root, out), resume=str(out / "last.npz"), log=lambda *a: None)
    a, _ = model_arrays(tmp_path / "straight" / "last.npz")
    b, _ = model_arrays(out / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(fake_root, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    train.train(quick_config(fake_root, out, epochs=1), log=lambda *a: None)
    before = open(out / "last.npz", "rb").read()
    original = layers.SoftmaxCrossEntropy.forward
    monkeypatch.setattr(layers.SoftmaxCrossEntropy, "forward",
                        lambda self, logits, labels: original(self, logits * np.nan, labels))
    with pytest.raises(train.TrainingError, match="loss became nan.*last good checkpoint"):
        train.train(quick_config(fake_root, out, epochs=2), resume=str(out / "last.npz"), log=lambda *a: None)
    assert open(out / "last.npz", "rb").read() == before


def test_float64_run(fake_root, tmp_path):
    """--dtype float64: the images are normalised to the network's dtype (they were float32 once, and failed)."""
    cfg = quick_config(fake_root, tmp_path / "f64", epochs=1, dtype="float64")
    summary = train.train(cfg, log=lambda *a: None)
    arrays, _ = model_arrays(tmp_path / "f64" / "last.npz")
    assert arrays["model/fc.weight"].dtype == np.float64
    assert 0 <= summary["test_error"] <= 1


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "minisd.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_quick_run_and_plot(fake_root, tmp_path):
    out = tmp_path / "cli"
    r = run_cli("--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--batch-size", "16",
                "--valid-size", "0", "--device", "cpu", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "done: test error" in r.stdout and "expected time" in r.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["test_error_rule"].startswith("no validation set")
    r = subprocess.run([sys.executable, "-m", "minisd.plot", str(out), str(out), "-o", str(tmp_path / "f.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--depth", "21"], "6N+2"),
    (["--p-last", "0"], "p-last"),
    (["--epochs", "0"], "epochs"),
    (["--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
])
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path):
    r = run_cli(*args, "--device", "cpu", "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr


def test_cli_unknown_flag_is_rejected(tmp_path):
    r = run_cli("--dept", "20")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_corrupt_checkpoint_is_one_clear_line(fake_root, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    r = run_cli("--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                "--valid-size", "0", "--out", str(tmp_path / "r"), "--resume", str(bad), "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot resume" in r.stderr


def test_cli_valid_size_too_large_is_one_clear_line(fake_root, tmp_path):
    r = run_cli("--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--valid-size", "5000",
                "--device", "cpu", "--out", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "--valid-size" in r.stderr


def test_cli_resume_needs_only_the_checkpoint(fake_root, tmp_path):
    """`--resume RUN/last.npz` takes the run's own settings; flags given beside it override them."""
    out = tmp_path / "run"
    assert train.main(["--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--batch-size", "16",
                       "--valid-size", "0", "--seed", "5", "--device", "cpu", "--out", str(out),
                       "--no-progress"]) == 0
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 0
    cfg = json.load(open(out / "config.json"))
    assert (cfg["depth"], cfg["data_dir"], cfg["seed"], cfg["epochs"]) == (8, fake_root, 5, 2)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]


def test_every_flag_has_a_help_line():
    """The README promises a --help line for every flag."""
    missing = [a.option_strings for a in train.build_parser()._actions if not a.help]
    assert missing == []
