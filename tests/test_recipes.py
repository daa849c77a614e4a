"""The paper's recipes (--recipe, --print-config), SVHN with extra and its per-class split,
--eval-every and --shortcut: on generated files, tiny networks, a few steps."""
import dataclasses
import csv
import json

import numpy as np
import pytest

from minisd import data, train
from minisd.tools import recipes, runs
from minisd.tools.checkpoint import load_checkpoint
from minisd.data.fake import write_fake_cifar10, write_fake_svhn

# What the paper did (arXiv 1603.09382 v3, Sec. 4; the issue quotes it), written out once more by hand.
SHARED = dict(p_last=0.5, rule="linear", mode="batch", scale="test", shortcut="subsample", batch_size=128,
              lr=0.1, weight_decay=1e-4, momentum=0.9, nesterov=True, dropped="paper", limit_train=0)
PAPER = {
    "paper-cifar10": dict(SHARED, dataset="cifar10", depth=110, epochs=500, milestones=[250, 375],
                          warmup_epochs=0, augment=True, valid_size=5000, valid_per_class=None,
                          svhn_extra=False, eval_every=0),
    "paper-cifar100": dict(SHARED, dataset="cifar100", depth=110, epochs=500, milestones=[250, 375],
                           warmup_epochs=0, augment=True, valid_size=5000, valid_per_class=None,
                           svhn_extra=False, eval_every=0),
    "paper-svhn": dict(SHARED, dataset="svhn", depth=152, epochs=50, milestones=[30, 35], warmup_epochs=0,
                       augment=False, valid_size=6000, valid_per_class=[400, 200], svhn_extra=True,
                       eval_every=200),
    "paper-1202": dict(SHARED, dataset="cifar10", depth=1202, epochs=300, milestones=[150, 225],
                       warmup_epochs=10, warmup_lr=0.01, augment=True, valid_size=5000, valid_per_class=None,
                       svhn_extra=False, eval_every=0),
}


def print_config(capsys, *argv):
    assert train.main([*argv, "--print-config"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_each_recipe_prints_the_papers_settings(name, capsys, tmp_path):
    cfg = print_config(capsys, "--recipe", name, "--data-dir", str(tmp_path / "absent"))
    assert list(cfg) == [f.name for f in dataclasses.fields(train.Config)]  # the Config field names, in order
    assert {k: cfg[k] for k in PAPER[name]} == PAPER[name]
    assert cfg["recipe"] == name
    # untouched by a recipe: where the data is, the seed, the device, the run folder
    assert (cfg["data_dir"], cfg["seed"], cfg["device"]) == (str(tmp_path / "absent"), 0, "auto")


def test_lr_schedules_of_the_recipes():
    """lr 0.1, / 10 after epochs 250 and 375 (0-based epochs 250 and 375 are the first at the lower rate);
    SVHN after 30 and 35; 1202 layers: 0.01 for 10 epochs, then 0.1, / 10 at 150 and 225."""
    def lrs(name, epochs):
        r = recipes.recipe(name)
        return [round(train.lr_at_epoch(e, base_lr=r["lr"], epochs=r["epochs"], milestones=r["milestones"],
                                         warmup_epochs=r["warmup_epochs"], warmup_lr=r["warmup_lr"]), 6)
                for e in epochs]
    assert lrs("paper-cifar10", [0, 249, 250, 374, 375, 499]) == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert lrs("paper-svhn", [0, 29, 30, 34, 35, 49]) == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert lrs("paper-1202", [0, 9, 10, 149, 150, 224, 225, 299]) == [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_flags_beside_a_recipe_override_it(capsys):
    cfg = print_config(capsys, "--recipe", "paper-cifar10", "--depth", "20", "--lr", "0.05", "--no-augment",
                       "--shortcut", "avg", "--seed", "4")
    assert (cfg["depth"], cfg["lr"], cfg["augment"], cfg["shortcut"], cfg["seed"]) == (20, 0.05, False, "avg", 4)
    assert (cfg["epochs"], cfg["milestones"], cfg["valid_size"]) == (500, [250, 375], 5000)  # the rest: the recipe
    assert cfg["out"] == "runs/cifar10-d20-p0.5-s4"
    # --epochs moves the recipe's milestones with it; --milestones given wins
    assert print_config(capsys, "--recipe", "paper-cifar10", "--epochs", "100")["milestones"] == [50, 75]
    assert print_config(capsys, "--recipe", "paper-svhn", "--epochs", "10")["milestones"] == [6, 7]
    cfg = print_config(capsys, "--recipe", "paper-cifar10", "--epochs", "100", "--milestones", "10", "20")
    assert cfg["milestones"] == [10, 20]
    # switching off or on what a recipe set
    cfg = print_config(capsys, "--recipe", "paper-svhn", "--no-svhn-extra", "--valid-per-class", "400", "--augment")
    assert (cfg["svhn_extra"], cfg["valid_per_class"], cfg["valid_size"], cfg["augment"]) == (False, [400], 4000, True)
    # --valid-size beside a per-class recipe asks for a random split of that size
    cfg = print_config(capsys, "--recipe", "paper-svhn", "--valid-size", "1000")
    assert (cfg["valid_size"], cfg["valid_per_class"]) == (1000, None)
    # without a recipe nothing changes
    assert print_config(capsys)["recipe"] is None and print_config(capsys)["depth"] == train.Config().depth


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "paper-svhn", "--no-svhn-extra"], "--valid-per-class"),
    (["--recipe", "paper-svhn", "--valid-size", "100", "--valid-per-class", "400", "200"], "disagree"),
    (["--recipe", "paper-1202", "--epochs", "5"], "--warmup-epochs"),
    (["--svhn-extra"], "--svhn-extra needs --dataset svhn"),
    (["--eval-every", "-1"], "--eval-every"),
])
def test_impossible_combinations_are_one_clear_line(argv, message, capsys):
    assert train.main([*argv, "--print-config"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_print_config_loads_no_data_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def no_loading(*a, **k):
        raise AssertionError("--print-config loaded data")
    monkeypatch.setattr(data, "load_dataset", no_loading)
    out = tmp_path / "run"
    cfg = print_config(capsys, "--recipe", "paper-svhn", "--data-dir", str(tmp_path / "nothing-here"),
                       "--out", str(out))
    assert cfg["out"] == str(out) and not out.exists() and not (tmp_path / "nothing-here").exists()


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root, n_per_batch=40, seed=0)
    return str(root)


def tiny(root, out, *extra):
    return ["--data-dir", root, "--depth", "8", "--epochs", "1", "--batch-size", "16", "--valid-size", "40",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_recipe_with_resume_is_refused_and_print_config_shows_the_resumed_settings(fake_cifar, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny(fake_cifar, out, "--shortcut", "avg")) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out / "last.npz"), "--recipe", "paper-cifar10"]) == 1
    assert "--recipe cannot be used with --resume" in capsys.readouterr().err
    cfg = print_config(capsys, "--resume", str(out / "last.npz"), "--epochs", "3")
    assert (cfg["depth"], cfg["epochs"], cfg["shortcut"], cfg["batch_size"]) == (8, 3, "avg", 16)
    assert json.load(open(out / "config.json"))["epochs"] == 1  # printing resumed nothing


def test_shortcut_reaches_the_model(fake_cifar, tmp_path):
    for shortcut in ("subsample", "avg"):
        cfg = train.Config(dataset="cifar10", data_dir=fake_cifar, depth=8, batch_size=16, valid_size=40,
                           device="cpu", out=str(tmp_path), progress=False, shortcut=shortcut)
        net = train.Run(cfg, log=lambda *a: None).net
        assert net.downsample == shortcut
        assert {b.shortcut.downsample for b in net.blocks} == {shortcut}


# ---------------------------------------------------------------------------
# SVHN with extra, and the per-class validation split
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_svhn(tmp_path_factory):
    pytest.importorskip("scipy.io")
    root = tmp_path_factory.mktemp("svhn")
    write_fake_svhn(root, n_train=200, n_test=50, n_extra=300, seed=1)  # 20 / 30 images of each digit
    return root


def test_svhn_extra_is_appended_after_train(fake_svhn):
    x0, y0, xt0, yt0 = data.load_svhn(fake_svhn)
    x, y, xt, yt, k = data.load_dataset("svhn", fake_svhn, svhn_extra=True)
    assert (len(y0), len(y), len(yt), k) == (200, 500, 50, 10)
    assert np.array_equal(x[:200], x0) and np.array_equal(y[:200], y0) and np.array_equal(xt, xt0)
    assert x.dtype == np.uint8 and x.shape == (500, 3, 32, 32) and x.flags.c_contiguous
    files = data.svhn_file_of_each_image(fake_svhn, include_extra=True)
    assert files.tolist() == [0] * 200 + [1] * 300
    *_, read_files = data.load_dataset("svhn", fake_svhn, svhn_extra=True, with_files=True)
    assert np.array_equal(read_files, files)  # counted while reading: the same as from the headers
    assert data.load_dataset("svhn", fake_svhn, with_files=True)[-1].tolist() == [0] * 200
    assert np.bincount(y[files == 1], minlength=10).tolist() == [30] * 10


def test_svhn_extra_missing_says_where_and_what(tmp_path):
    pytest.importorskip("scipy.io")
    write_fake_svhn(tmp_path, n_train=20, n_test=10)
    with pytest.raises(data.DataNotFoundError, match=r"extra_32x32.mat missing.*extra_32x32.mat \(MD5"):
        data.load_dataset("svhn", tmp_path, svhn_extra=True)
    with pytest.raises(data.DataError, match="for SVHN"):
        data.load_dataset("cifar10", tmp_path, svhn_extra=True)


def test_stratified_split_holds_out_exact_counts_per_class_and_file(fake_svhn):
    x, y, _, _, _ = data.load_dataset("svhn", fake_svhn, svhn_extra=True)
    files = data.svhn_file_of_each_image(fake_svhn, include_extra=True)
    (xtr, ytr), (xva, yva) = data.stratified_split(x, y, [4, 2], files=files, seed=3)
    assert (len(yva), len(ytr)) == (60, 440)
    # which images went where: every image is in exactly one part, both parts in file order
    key = lambda a: [bytes(img) for img in a]  # noqa: E731
    pos = {b: i for i, b in enumerate(key(x))}
    valid_pos, train_pos = [pos[b] for b in key(xva)], [pos[b] for b in key(xtr)]
    assert sorted(valid_pos + train_pos) == list(range(500))
    assert valid_pos == sorted(valid_pos) and train_pos == sorted(train_pos)
    from_train, from_extra = files[valid_pos] == 0, files[valid_pos] == 1
    assert np.bincount(yva[from_train], minlength=10).tolist() == [4] * 10
    assert np.bincount(yva[from_extra], minlength=10).tolist() == [2] * 10
    # the seed decides the draw, reproducibly
    again = data.stratified_split(x, y, [4, 2], files=files, seed=3)[1][0]
    other = data.stratified_split(x, y, [4, 2], files=files, seed=4)[1][0]
    assert np.array_equal(again, xva) and not np.array_equal(other, xva)
    # one file (files=None): a class-balanced split
    (_, ytr1), (_, yva1) = data.stratified_split(x, y, [5], seed=0)
    assert np.bincount(yva1, minlength=10).tolist() == [5] * 10 and len(ytr1) == 450
    with pytest.raises(ValueError, match="fewer than the 31"):
        data.stratified_split(x, y, [4, 31], files=files)
    with pytest.raises(ValueError, match="2 files but per_class has 1"):
        data.stratified_split(x, y, [4], files=files)


def test_svhn_recipe_runs_end_to_end_with_eval_every(fake_svhn, tmp_path):
    """paper-svhn, shrunk: train + extra, 4 + 2 of each digit held out, no augmentation, a row every 5 steps."""
    out = tmp_path / "svhn"
    argv = ["--recipe", "paper-svhn", "--data-dir", str(fake_svhn), "--depth", "8", "--epochs", "2",
            "--batch-size", "16", "--valid-per-class", "4", "2", "--eval-every", "5", "--eval-batch-size", "100",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    assert train.main(argv) == 0
    cfg = json.load(open(out / "config.json"))
    assert (cfg["svhn_extra"], cfg["augment"], cfg["valid_size"], cfg["milestones"]) == (True, False, 60, [])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    steps = 440 // 16  # 27 steps per epoch
    # every 5th step, and each epoch's end (27, 54)
    assert [int(r["iteration"]) for r in rows] == [5, 10, 15, 20, 25, 27, 30, 35, 40, 45, 50, 54]
    assert [int(r["epoch"]) for r in rows] == [1] * 6 + [2] * 6
    assert int(rows[5]["iteration"]) == steps
    summary = json.load(open(out / "summary.json"))
    best = min(rows, key=lambda r: float(r["valid_error"]))
    assert summary["best_iteration"] == int(best["iteration"])
    assert summary["test_error"] == pytest.approx(float(best["test_error"]), abs=1e-6)
    assert "every --eval-every steps" in summary["test_error_rule"]
    assert summary["mean_epoch_seconds"] == pytest.approx(np.mean([float(rows[i]["epoch_seconds"]) for i in (5, 11)]),
                                                          rel=1e-5)
    _, meta = load_checkpoint(out / "best.npz")
    assert meta["best_valid"] == pytest.approx(float(best["valid_error"]), abs=1e-6)


# ---------------------------------------------------------------------------
# --eval-every: evaluation leaves training alone; resume keeps the rows
# ---------------------------------------------------------------------------


def final_weights(path):
    arrays, _ = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(("model/", "optim/"))}


def test_eval_every_changes_no_weight_and_resumes_with_its_rows(fake_cifar, tmp_path, monkeypatch):
    base = ["--depth", "8", "--batch-size", "16", "--seed", "2"]
    # 200 images - 40 held out = 160: 10 steps per epoch
    assert train.main(tiny(fake_cifar, tmp_path / "plain", *base, "--epochs", "2")) == 0
    assert train.main(tiny(fake_cifar, tmp_path / "every", *base, "--epochs", "2", "--eval-every", "3")) == 0
    a, b = final_weights(tmp_path / "plain" / "last.npz"), final_weights(tmp_path / "every" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    every = runs.read_metrics(str(tmp_path / "every" / "metrics.csv"))
    assert [int(r["iteration"]) for r in every] == [3, 6, 9, 10, 12, 15, 18, 20]
    plain = runs.read_metrics(str(tmp_path / "plain" / "metrics.csv"))
    assert [int(r["iteration"]) for r in plain] == [10, 20]
    assert [r["valid_error"] for r in runs.epoch_end_rows(every)] == [r["valid_error"] for r in plain]
    # Ctrl-C in step 14 (epoch 2, step 4), then --resume: the same rows as the straight run. Rows
    # count by iteration: step 12's row (this epoch, before the checkpoint) is kept, a row after the
    # checkpoint (as a run that crashed later would leave) is dropped.
    original, calls = train.Run.train_step, {"n": 0}

    def interrupting_step(self, idx):
        calls["n"] += 1
        if calls["n"] == 14:
            self.stop_requested = True
        return original(self, idx)

    monkeypatch.setattr(train.Run, "train_step", interrupting_step)
    out = tmp_path / "split"
    assert train.main(tiny(fake_cifar, out, *base, "--epochs", "2", "--eval-every", "3")) == 130
    monkeypatch.setattr(train.Run, "train_step", original)
    path = str(out / "metrics.csv")
    assert [int(r["iteration"]) for r in runs.read_metrics(path)] == [3, 6, 9, 10, 12]
    runs.write_metrics(path, runs.read_metrics(path) + [dict(every[5], valid_error=0.0)])  # iteration 15
    assert train.main(["--resume", str(out / "last.npz")]) == 0
    split = runs.read_metrics(path)
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in split] == \
           [{k: v for k, v in r.items() if k not in drop} for r in every]
