"""The training CLI and loop: outputs, resume, Ctrl-C, NaN, bad input, run folders, a full disk,
a new user's first run (the download) — on generated CIFAR files. Signals sent to a real process:
tests/test_signals.py."""
import csv
import errno
import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from minisd import layers, step, train
from minisd.data import files as data_files
from minisd.tools import checkpoint, runs
from minisd.tools.checkpoint import load_checkpoint
from minisd.data.fake import write_fake_cifar10

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
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # numbered from 1, as on the console
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
    assert [int(r["epoch"]) for r in rows] == [1, 2]


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


def test_stop_during_evaluation_abandons_it_and_resume_evaluates_again(fake_root, tmp_path, monkeypatch):
    """A signal during an epoch's evaluation (long on a big test set) is honoured there, not after it."""
    train.train(quick_config(fake_root, tmp_path / "straight", epochs=1), log=lambda *a: None)
    original, calls = step.evaluate, {"n": 0}

    def evaluate_then_stop(net, x, y, normalizer, *, batch_size=500, should_stop=None):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1's test set: as if Ctrl-C came during it
            should_stop = lambda: True  # noqa: E731
        return original(net, x, y, normalizer, batch_size=batch_size, should_stop=should_stop)
    monkeypatch.setattr(step, "evaluate", evaluate_then_stop)
    out = tmp_path / "interrupted"
    lines = []
    assert train.train(quick_config(fake_root, out, epochs=1), log=lines.append) is None
    _, meta = load_checkpoint(out / "last.npz")
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 10) and meta["metrics"] == []  # all steps, no row
    assert "epoch 1, step 10 of 10" in lines[-1]
    monkeypatch.setattr(step, "evaluate", original)
    train.train(quick_config(fake_root, out, epochs=1), resume=str(out / "last.npz"), log=lambda *a: None)
    a, meta_a = model_arrays(tmp_path / "straight" / "last.npz")
    b, meta_b = model_arrays(out / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [r["test_error"] for r in meta_a["metrics"]] == [r["test_error"] for r in meta_b["metrics"]]


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
    assert "valid err" not in r.stdout  # no validation split: no validation figure
    r = subprocess.run([sys.executable, "-m", "minisd.plot", str(out), str(out), "-o", str(tmp_path / "f.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--depth", "21"], "6N+2"),
    (["--p-last", "0"], "p-last"),
    (["--epochs", "0"], "epochs"),
    (["--data-dir", "/nonexistent/folder", "--no-download"], "/nonexistent/folder"),
])
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path):
    r = run_cli(*args, "--device", "cpu", "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_unknown_flag_is_rejected(tmp_path):
    r = run_cli("--dept", "20")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "--dept" in r.stderr and "--help" in r.stderr  # one line, no usage block


def test_corrupt_checkpoint_is_one_clear_line(fake_root, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    r = run_cli("--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                "--valid-size", "0", "--out", str(tmp_path / "r"), "--resume", str(bad), "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot resume" in r.stderr
    assert "not a minisd checkpoint" in r.stderr and "allow_pickle" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_cli_valid_size_too_large_is_one_clear_line(fake_root, tmp_path):
    r = run_cli("--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--valid-size", "5000",
                "--device", "cpu", "--out", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "--valid-size" in r.stderr
    assert "--valid-size 0" in r.stderr and not (tmp_path / "r").exists()


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
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_every_flag_has_a_help_line():
    """The README promises a --help line for every flag."""
    missing = [a.option_strings for a in train.build_parser()._actions if not a.help]
    assert missing == []


# ---------------------------------------------------------------------------
# helpers for the CLI in this process (main() returns the exit status)
# ---------------------------------------------------------------------------


def quick_args(root, out, *extra):
    return ["--data-dir", str(root), "--depth", "8", "--epochs", "1", "--batch-size", "16", "--valid-size", "0",
            "--device", "cpu", "--out", str(out), "--no-progress", *extra]


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------
# bad input: one line, nothing written (items 7-9)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "--lr must be a number > 0, got nan"),
    (["--lr", "inf"], "--lr must be"),
    (["--lr", "-0.1"], "--lr must be"),
    (["--warmup-lr", "nan"], "--warmup-lr"),
    (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
    (["--momentum", "1.5"], "--momentum"),
    (["--weight-decay", "nan"], "--weight-decay must be a number >= 0, got nan"),
    (["--weight-decay=-1e-4"], "--weight-decay"),
    (["--p-last", "nan"], "--p-last"),
    (["--batch-size", "0"], "--batch-size"),
    (["--eval-batch-size", "-5"], "--eval-batch-size"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--warmup-epochs", "9"], "--warmup-epochs"),
    (["--milestones", "5", "3"], "--milestones"),
    (["--milestones", "1", "3"], "--milestones"),  # 3 is not below --epochs 3
    (["--limit-train", "-3"], "--limit-train must be an integer >= 0"),
    (["--seed", "-1"], "--seed"),
])
def test_every_numeric_flag_is_checked_up_front(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--data-dir", str(tmp_path / "no-data"), "--no-download", "--epochs", "3", "--device", "cpu",
                       "--out", str(out), "--no-progress", *args]) == 1
    assert message in one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "no-data").exists()


@pytest.mark.parametrize("value", ["1.0", "2.5", "-1", "-0.5", "nan", "inf", "abc", "1e3"])
def test_valid_size_rule_refuses_anything_but_a_count_or_a_fraction(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--valid-size", value, "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--valid-size" in err and "fraction in (0, 1)" in err
    assert not (tmp_path / "run").exists()


def test_valid_size_rule_and_its_help_line():
    parse = lambda v: train.build_parser().parse_args(["--valid-size", v]).valid_size  # noqa: E731
    assert parse("5000") == 5000 and isinstance(parse("5000"), int)
    assert parse("1") == 1 and parse("0") == 0 and parse("0.0") == 0
    assert parse("0.1") == 0.1 and isinstance(parse("0.1"), float)
    (action,) = [a for a in train.build_parser()._actions if "--valid-size" in a.option_strings]
    assert "integer is a count" in action.help and "fraction" in action.help and "0 means none" in action.help


def test_unwritable_out_is_one_line(fake_root, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert train.main(quick_args(fake_root, blocker / "run")) == 1
    assert "cannot create the run folder" in one_error_line(capsys)
    assert train.main(quick_args(fake_root, blocker)) == 1
    assert "is a file" in one_error_line(capsys)
    ro = tmp_path / "read-only"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(ro)) else real_access(p, mode))
    assert train.main(quick_args(fake_root, ro / "run")) == 1
    assert "not writable" in one_error_line(capsys)
    assert train.main(quick_args(fake_root, ro)) == 1
    assert "permission denied" in one_error_line(capsys)
    assert list(ro.iterdir()) == [] and blocker.read_text() == "not a folder"


# ---------------------------------------------------------------------------
# the run folder: refuse, overwrite, no empty folders (items 4, 5)
# ---------------------------------------------------------------------------


def test_out_holding_a_run_is_refused_then_overwritten(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out, "--valid-size", "32")) == 0
    assert (out / "best.npz").exists()
    (out / "notes.txt").write_text("mine")  # a file of the user's: never touched
    before = snapshot(out)
    capsys.readouterr()
    assert train.main(quick_args(fake_root, out)) == 1
    line = one_error_line(capsys)
    assert "already holds a run" in line and f"--resume {out / 'last.npz'}" in line and "--overwrite" in line
    assert snapshot(out) == before
    assert train.main(quick_args(fake_root, out, "--overwrite")) == 0  # --valid-size 0: no best.npz
    assert "removed the earlier run's" in capsys.readouterr().out
    assert not (out / "best.npz").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.load(open(out / "config.json"))["valid_size"] == 0
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [1]


def test_resuming_best_does_not_replace_a_later_last(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out, "--valid-size", "32")) == 0
    best_after_1 = (out / "best.npz").read_bytes()
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 0
    (out / "best.npz").write_bytes(best_after_1)  # as when epoch 1 stays the best
    before = snapshot(out)
    capsys.readouterr()
    assert train.main(["--resume", str(out / "best.npz"), "--epochs", "3"]) == 1
    line = one_error_line(capsys)
    assert "further along (epoch 2)" in line and "(epoch 1)" in line and "another --out" in line
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["missing data", "too few images", "valid too large", "bad labels"])
def test_failed_runs_leave_no_folder(case, fake_root, tmp_path, capsys):
    root, extra = fake_root, []
    if case == "missing data":
        root, extra = tmp_path / "empty", ["--no-download"]
        root.mkdir()
    elif case == "too few images":
        extra = ["--limit-train", "10"]
    elif case == "valid too large":
        extra = ["--valid-size", "150"]
    else:
        root = tmp_path / "bad"
        write_fake_cifar10(root, n_per_batch=20, seed=0)
        batch = root / "cifar-10-batches-py" / "data_batch_1"
        obj = __import__("pickle").loads(batch.read_bytes(), encoding="bytes")
        obj[b"labels"] = [99] * len(obj[b"labels"])
        from minisd.data.fake import write_cifar_pickle
        write_cifar_pickle(batch, obj)
    out = tmp_path / "runs" / "run"
    assert train.main(quick_args(root, out, *extra)) == 1
    one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_nan_in_the_first_epoch_leaves_no_folder(fake_root, tmp_path, monkeypatch):
    original = layers.SoftmaxCrossEntropy.forward
    monkeypatch.setattr(layers.SoftmaxCrossEntropy, "forward",
                        lambda self, logits, labels: original(self, logits * np.nan, labels))
    with pytest.raises(train.TrainingError, match="no checkpoint was written yet"):
        train.train(quick_config(fake_root, tmp_path / "nan"), log=lambda *a: None)
    assert not (tmp_path / "nan").exists()


# ---------------------------------------------------------------------------
# a full disk (item 6)
# ---------------------------------------------------------------------------


def test_disk_full_while_saving_keeps_the_previous_checkpoint(fake_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out)) == 0
    before = (out / "last.npz").read_bytes()
    real = checkpoint._write_npz

    def full_disk(f, payload):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint, "_write_npz", full_disk)
    capsys.readouterr()
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 1
    line = one_error_line(capsys)
    assert "no space left on the device" in line and "previous" in line and "kept" in line
    assert f"--resume {out / 'last.npz'}" in line
    assert (out / "last.npz").read_bytes() == before
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary file left
    monkeypatch.setattr(checkpoint, "_write_npz", real)
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 0  # and it continues


# ---------------------------------------------------------------------------
# resume: history, another folder, another depth, not a checkpoint (items 10, 11)
# ---------------------------------------------------------------------------


def test_resume_finished_run_into_a_new_folder_carries_the_history(fake_root, tmp_path, capsys):
    a, b, straight = tmp_path / "a", tmp_path / "b", tmp_path / "straight"
    assert train.main(quick_args(fake_root, a, "--valid-size", "32")) == 0
    assert train.main(quick_args(fake_root, straight, "--valid-size", "32", "--epochs", "2")) == 0
    before = snapshot(a)
    capsys.readouterr()
    assert train.main(["--resume", str(a / "last.npz")]) == 1  # finished, and no more epochs asked for
    assert "pass a larger --epochs" in one_error_line(capsys)
    assert train.main(["--resume", str(a / "last.npz"), "--epochs", "2", "--out", str(b)]) == 0
    assert snapshot(a) == before
    rows_b = runs.read_metrics(b / "metrics.csv")
    rows_s = runs.read_metrics(straight / "metrics.csv")
    assert [r["epoch"] for r in rows_b] == [1, 2]
    for rb, rs in zip(rows_b, rows_s):
        assert {k: v for k, v in rb.items() if k != "epoch_seconds"} == \
               {k: v for k, v in rs.items() if k != "epoch_seconds"}
    summary = json.load(open(b / "summary.json"))
    assert summary["epochs_run"] == 2 and summary == {**json.load(open(straight / "summary.json")),
                                                     "mean_epoch_seconds": summary["mean_epoch_seconds"]}
    assert (b / "best.npz").exists()
    x, _ = model_arrays(b / "last.npz")
    y, _ = model_arrays(straight / "last.npz")
    for k in y:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_checkpoint_of_another_depth_says_so(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out)) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2", "--depth", "20"]) == 1
    line = one_error_line(capsys)
    assert "the checkpoint is a ResNet-8, the flags ask for ResNet-20" in line and "state_dict" not in line


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"PK\x03\x04" + os.urandom(200)])
def test_not_a_checkpoint_never_suggests_allow_pickle(content, fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.npz").write_bytes(content)
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 1
    line = one_error_line(capsys)
    assert "allow_pickle" not in line and "cannot resume" in line
    assert "not a minisd checkpoint" in line or "damaged" in line
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(out / "last.npz", x=np.array([{"a": 1}], dtype=object))  # object arrays need pickle
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2"]) == 1
    line = one_error_line(capsys)
    assert "allow_pickle" not in line and "not a minisd checkpoint" in line


# ---------------------------------------------------------------------------
# a new user's first run: the download, the validation split, the epoch line (items 12-14)
# ---------------------------------------------------------------------------


@pytest.fixture
def served_cifar(tmp_path, monkeypatch):
    """The official CIFAR-10 resource pointed at a local tarball of generated files (a file: URL)."""
    src = write_fake_cifar10(tmp_path / "src", n_per_batch=40, seed=0)
    tar = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    tar.parent.mkdir()
    with tarfile.open(tar, "w:gz") as t:
        t.add(src, arcname="cifar-10-batches-py")
    res = data_files.Resource("cifar-10-python.tar.gz", tar.as_uri(), hashlib.md5(tar.read_bytes()).hexdigest())
    monkeypatch.setitem(data_files.RESOURCES, "cifar10", (res,))
    return res


def test_first_run_downloads_into_data(served_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the README's first command, made small: no --data-dir, no --download
    assert train.main(["--depth", "8", "--epochs", "1", "--batch-size", "16", "--valid-size", "0.1",
                       "--device", "cpu", "--out", "runs/quickstart"]) == 0
    captured = capsys.readouterr()
    assert "downloading" in captured.out and "MD5 ok" in captured.out
    assert sorted(os.listdir(tmp_path / "data")) == ["cifar-10-python.tar.gz"]  # whole, no part file left
    assert (tmp_path / "runs" / "quickstart" / "summary.json").exists()
    assert train.main(["--depth", "8", "--epochs", "1", "--batch-size", "16", "--valid-size", "0",
                       "--device", "cpu", "--out", "runs/again", "--no-progress", "--no-download"]) == 0
    assert "downloading" not in capsys.readouterr().out  # there now: not fetched again
    parse = lambda *a: train.build_parser().parse_args(list(a)).download  # noqa: E731
    assert parse() is True and parse("--download") is True and parse("--no-download") is False


def test_first_run_offline_is_one_line(served_cifar, tmp_path, monkeypatch, capsys):
    def offline(url, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "run"
    assert train.main(quick_args(tmp_path / "data", out)) == 1
    line = one_error_line(capsys)
    for part in ("could not download", "cifar-10-python.tar.gz", served_cifar.md5, str(tmp_path / "data"),
                 "--data-dir", "--dataset cifar10-sample"):
        assert part in line, part
    assert "download=True" not in line
    assert not out.exists() and not (tmp_path / "data").exists()  # no empty folders either


def test_no_download_refuses_to_download(served_cifar, tmp_path, monkeypatch, capsys):
    def must_not(url, *a, **k):
        raise AssertionError("--no-download downloaded")
    monkeypatch.setattr(urllib.request, "urlopen", must_not)
    assert train.main(quick_args(tmp_path / "data", tmp_path / "run", "--no-download")) == 1
    line = one_error_line(capsys)
    for part in ("--no-download", "cifar-10-python.tar.gz", served_cifar.md5, "--data-dir", "--dataset cifar10-sample"):
        assert part in line, part
    assert "download=True" not in line and not (tmp_path / "run").exists()


def test_validation_split_taking_more_than_half_is_refused(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out, "--valid-size", "101")) == 1  # 101 of 200
    line = one_error_line(capsys)
    assert "holds out 101 of the 200 training images, leaving 99" in line
    assert "--valid-size 0" in line and "fraction" in line and not out.exists()
    assert train.main(quick_args(fake_root, out, "--valid-size", "100")) == 0  # half is allowed


def test_no_validation_split_shows_no_validation_figure(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(quick_args(fake_root, out)) == 0
    stdout = capsys.readouterr().out
    assert "epoch 1/1:" in stdout and "valid err" not in stdout and "nan" not in stdout
    (row,) = csv.DictReader(open(out / "metrics.csv"))
    assert row["valid_error"] == "" and row["epoch"] == "1"
    assert math.isnan(runs.read_metrics(out / "metrics.csv")[0]["valid_error"])


def test_a_resume_opens_its_checkpoint_once(fake_root, tmp_path, monkeypatch):
    """`--resume RUN/last.npz` reads the checkpoint once and passes it along (config, checks, state)."""
    import builtins
    out = tmp_path / "run"
    assert train.main(["--data-dir", fake_root, "--depth", "8", "--epochs", "1", "--batch-size", "16",
                       "--valid-size", "16", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    last = os.path.realpath(out / "last.npz")
    real_open, opened = builtins.open, []

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == last:
            mode = args[0] if args else kwargs.get("mode", "r")
            if "r" in mode and "+" not in mode:
                opened.append(mode)
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", counting_open)
    assert train.main(["--resume", str(out / "last.npz"), "--epochs", "2", "--no-progress"]) == 0
    assert len(opened) == 1, opened
