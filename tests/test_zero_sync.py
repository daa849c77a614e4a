"""The training loop never waits for the GPU inside a step: losses and error counts are read in batches."""
import numpy as np
import pytest

from minisd import layers, train
from minisd.fake_data import write_fake_cifar10

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=40, seed=0)
    return str(root)


def make_run(root, out, **kw):
    cfg = dict(dataset="cifar10", data_dir=root, depth=8, epochs=1, batch_size=16, valid_size=40, seed=3,
               device="gpu", out=str(out), progress=False, eval_batch_size=64)
    cfg.update(kw)
    run = train.Run(train.Config(**cfg), log=lambda *a: None)
    return run


def test_an_epoch_waits_only_to_read_every_few_steps(fake_root, tmp_path, standin, monkeypatch):
    monkeypatch.setattr(train, "READ_EVERY", 3)
    run = make_run(fake_root, tmp_path)
    assert run.steps_per_epoch == 10
    with standin.counting() as c:
        run.train_epoch()
    # reads after steps 3, 6, 9 and at the end (10): two copies to the host each; then one synchronise
    where = {site.split(" ")[-1]: n for site, n in c.sync_sites.items()}
    assert where == {"(to_numpy)": 4 * 2, "(synchronize)": 1}, c.summary()
    s = run.epoch_sums
    assert s["seen"] == 160 and 0 <= s["wrong"] <= 160 and s["loss"] > 0 and s["steps"] == 10


def test_the_same_sums_as_reading_every_step(fake_root, tmp_path, standin, monkeypatch):
    """Reading in batches changes when the host looks, not what it adds up (the CPU reads every step)."""
    run_gpu = make_run(fake_root, tmp_path / "g")
    run_gpu.train_epoch()
    run_cpu = make_run(fake_root, tmp_path / "c", device="cpu")
    run_cpu.train_epoch()
    for key in ("loss", "wrong", "seen", "blocks", "steps"):
        assert run_gpu.epoch_sums[key] == pytest.approx(run_cpu.epoch_sums[key], rel=1e-5), key


def test_a_nan_loss_names_its_step_and_epoch(fake_root, tmp_path, standin, monkeypatch):
    monkeypatch.setattr(train, "READ_EVERY", 4)
    calls = {"n": 0}
    original = layers.SoftmaxCrossEntropy.forward

    def nan_from_step_2(self, logits, labels):
        calls["n"] += 1
        return original(self, logits * np.nan if calls["n"] >= 2 else logits, labels)

    monkeypatch.setattr(layers.SoftmaxCrossEntropy, "forward", nan_from_step_2)
    run = make_run(fake_root, tmp_path)
    with pytest.raises(train.TrainingError, match="loss became nan at epoch 1, step 2;"):
        run.train_epoch()
    assert run.step_in_epoch == 4  # found when the first four steps were read
