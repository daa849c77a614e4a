"""minisd.step.train_step: the one training step that minisd.train and the lessons share."""
import sys
from pathlib import Path

import numpy as np
import pytest

import minisd
from minisd import step, train
from minisd.step import augment_batch
from minisd.data import Normalizer

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def small_problem(xp, mode="batch", seed=0):
    """A ResNet-8 (3 blocks, p_L 0.5), its SGD and a batch of 8 uint8 images, float64."""
    gen = np.random.default_rng(seed)
    x = gen.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    y = gen.integers(0, 10, size=8)
    net = minisd.ResNet(8, 10, p_last=0.5, dtype=np.float64, mode=mode, seed=seed)
    net.to("cpu" if xp is np else "gpu")
    opt = minisd.SGD(net.parameters(), lr=0.1)
    return net, opt, xp.asarray(x), xp.asarray(y), Normalizer.fit(x)


def weights(net):
    return {k: minisd.to_numpy(v).copy() for k, v in net.state_dict().items()}


def test_step_is_the_paper_recipe_in_this_order(xp):
    """Same weights and RNG state as the recipe written out by hand: augmentation draws first, then gates."""
    net_a, opt_a, x, y, norm = small_problem(xp)
    net_b, opt_b, *_ = small_problem(xp)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        step.train_step(net_a, opt_a, x, y, norm, rng_a)

        xb = augment_batch(norm.apply(x, dtype=np.float64), rng_b)
        net_b.sample_gates(rng_b, batch_size=len(y))
        loss_fn = minisd.SoftmaxCrossEntropy()
        loss_fn.forward(net_b.forward(xb), y)
        net_b.zero_grad()
        net_b.backward(loss_fn.backward())
        opt_b.step(inactive=net_b.inactive_parameter_names())
    assert rng_a.bit_generator.state == rng_b.bit_generator.state
    a, b = weights(net_a), weights(net_b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_step_returns_device_scalars_and_the_blocks_run(xp):
    net, opt, x, y, norm = small_problem(xp)
    loss, wrong, blocks = step.train_step(net, opt, x, y, norm, np.random.default_rng(1))
    # 0-d arrays on the network's device (NumPy may give its 0-d scalars): the step never waits
    assert minisd.get_xp(loss) is xp and loss.shape == () and loss.dtype == np.float64
    assert minisd.get_xp(wrong) is xp and wrong.shape == () and wrong.dtype.kind in "iu"
    assert 0 <= int(wrong) <= len(y) and float(loss) > 0
    assert isinstance(blocks, float)
    assert blocks == sum(1 for b in net.blocks if b.gate)


def test_blocks_in_sample_mode_is_the_mean_over_images():
    net, opt, x, y, norm = small_problem(np, mode="sample")
    _, _, blocks = step.train_step(net, opt, x, y, norm, np.random.default_rng(2))
    assert blocks == pytest.approx(sum(float(np.mean(b.mask)) for b in net.blocks))
    assert 0 < blocks < 3 and blocks != round(blocks)  # fractional: images disagree


def test_after_backward_sees_the_gradients_before_the_update():
    net, opt, x, y, norm = small_problem(np)
    seen = {}

    def look(n):
        seen["grad"] = n.conv1.grads["weight"].copy()
        seen["weight"] = n.conv1.params["weight"].copy()

    before = net.conv1.params["weight"].copy()
    step.train_step(net, opt, x, y, norm, np.random.default_rng(3), after_backward=look)
    assert np.abs(seen["grad"]).sum() > 0                      # backward has run
    np.testing.assert_array_equal(seen["weight"], before)      # the update has not
    assert not np.array_equal(net.conv1.params["weight"], before)  # and it ran afterwards


def test_without_augmentation_the_rng_serves_only_the_gates():
    net, opt, x, y, norm = small_problem(np)
    rng, gates_only = np.random.default_rng(4), np.random.default_rng(4)
    step.train_step(net, opt, x, y, norm, rng, augment=False)
    for b in net.blocks:
        gates_only.random()  # one draw per block, batch mode
    assert rng.bit_generator.state == gates_only.bit_generator.state


def test_train_and_the_lessons_call_this_step(monkeypatch, tmp_path):
    """Run.train_step and lessons/_common.train_epoch both go through minisd.step.train_step."""
    calls = []
    original = step.train_step

    def counting(*args, **kwargs):
        calls.append(kwargs.get("after_backward"))
        return original(*args, **kwargs)

    monkeypatch.setattr(step, "train_step", counting)
    monkeypatch.syspath_prepend(str(LESSONS))
    sys.modules.pop("_common", None)
    import _common  # noqa: E402  (imported now, so it binds the patched function)

    net, opt, x, y, norm = small_problem(np)
    hook = lambda n: None  # noqa: E731
    r = _common.train_epoch(net, opt, x, y, norm, np.random.default_rng(5), batch_size=4, on_step=hook)
    assert calls == [hook, hook] and r["blocks"] <= 3
    sys.modules.pop("_common", None)

    from minisd.data.fake import write_fake_cifar10
    write_fake_cifar10(tmp_path / "data", n_per_batch=8, n_test=8)
    cfg = train.Config(data_dir=str(tmp_path / "data"), depth=8, epochs=1, batch_size=8, valid_size=0,
                       device="cpu", out=str(tmp_path / "run"), progress=False)
    train.train(cfg, log=lambda *a: None)
    assert len(calls) == 2 + 5  # 40 images, batches of 8
