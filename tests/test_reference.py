"""``with minisd.reference():`` runs the readable code alone, gives the fast path's numbers,
and a layer's backward always mirrors the route its forward took."""
import threading

import numpy as np
import pytest

import minisd
from minisd import backend, functional
from minisd.fast import cpu as fast_cpu, gpu as fast_gpu, switch as route, threads as parallel


def _training_step(net, x, y):
    """Logits, loss, input gradient and every parameter gradient of one training step."""
    loss_fn = minisd.SoftmaxCrossEntropy()
    net.zero_grad()
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    dx = net.backward(loss_fn.backward())
    grads = {name: g.copy() for name, _, g in net.parameters()}
    return logits, float(loss), dx, grads


def _resnet_and_batch(depth=20, batch=6):
    net = minisd.ResNet(depth=depth, dtype=np.float64, seed=3)
    net.set_gates([i % 3 != 1 for i in range(len(net.blocks))])  # fixed gates: some blocks dropped
    rng = np.random.default_rng(0)
    return net, rng.standard_normal((batch, 3, 32, 32)), rng.integers(0, 10, batch)


def test_whole_training_step_equal_in_both_modes():
    net, x, y = _resnet_and_batch()
    fast = _training_step(net, x, y)
    with minisd.reference():
        ref = _training_step(net, x, y)
    assert minisd.relative_error(fast[0], ref[0]) <= 1e-10
    assert abs(fast[1] - ref[1]) <= 1e-10 * abs(ref[1])
    assert minisd.relative_error(fast[2], ref[2]) <= 1e-10
    assert fast[3].keys() == ref[3].keys()
    for name in ref[3]:
        assert minisd.relative_error(fast[3][name], ref[3][name]) <= 1e-10, name
    assert any(np.abs(g).max() > 0 for g in ref[3].values())


def test_reference_mode_never_enters_the_fast_module_nor_starts_a_thread(monkeypatch):
    net, x, y = _resnet_and_batch(depth=8, batch=4)
    fast_names = [name for name in dir(fast_cpu)
                  if getattr(getattr(fast_cpu, name), "__module__", None) == "minisd.fast.cpu"
                  and callable(getattr(fast_cpu, name))]
    assert "conv2d_forward" in fast_names and "batchnorm_train_backward" in fast_names

    def forbidden(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} ran inside minisd.reference()")
        return fail

    with monkeypatch.context() as m:
        for name in fast_names:
            m.setattr(fast_cpu, name, forbidden(f"fast_cpu.{name}"))
        m.setattr(parallel, "for_each_chunk", forbidden("a thread-pool chunk"))
        m.setattr(parallel, "_get_pool", forbidden("the thread pool"))
        with minisd.reference():
            _training_step(net, x, y)

    # outside the block the fast module does run (so the check above can fail)
    calls = []
    original = fast_cpu.conv2d_forward
    monkeypatch.setattr(fast_cpu, "conv2d_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    _training_step(net, x, y)
    assert calls


def test_choose_and_nesting():
    x = np.zeros((1, 1, 2, 2))
    assert route.choose(x) is fast_cpu and not route.in_reference_mode()
    with minisd.reference():
        assert route.choose(x) is functional
        with minisd.reference():
            assert route.in_reference_mode()
        assert route.in_reference_mode()  # leaving the inner block keeps the outer one
    assert route.choose(x) is fast_cpu


@pytest.mark.gpu
def test_choose_on_the_gpu_path(gpu_xp):
    """Three modules: fast_gpu for CuPy arrays, fast_cpu for NumPy, functional inside reference()."""
    x = gpu_xp.zeros((1, 1, 2, 2))
    assert route.choose(x) is fast_gpu and route.name_of(fast_gpu) == "fast_gpu"
    assert set(route.ROUTES.values()) == {functional, fast_cpu, fast_gpu}
    with minisd.reference():
        assert route.choose(x) is functional
    assert route.choose(np.zeros(1)) is fast_cpu


@pytest.mark.gpu
def test_reference_mode_on_the_gpu_path_never_enters_fast_gpu(gpu_xp, monkeypatch):
    """Inside reference() CuPy runs the readable functions; outside, fast_gpu's; the step agrees."""
    net, x, y = _resnet_and_batch(depth=8, batch=4)
    net.to("gpu")
    x, y = backend.to_device(x, "gpu"), backend.to_device(y, "gpu")
    own = [name for name in dir(fast_gpu) if getattr(getattr(fast_gpu, name), "__module__", None) == "minisd.fast.gpu"
           and callable(getattr(fast_gpu, name)) and not name.startswith("_")]
    assert {"conv2d_forward", "batchnorm_train_backward", "relu_backward"} <= set(own)
    with monkeypatch.context() as m:
        for name in own:
            m.setattr(fast_gpu, name, lambda *a, _name=name, **k: pytest.fail(f"fast_gpu.{_name} ran in reference()"))
        with minisd.reference():
            ref = _training_step(net, x, y)
    fast = _training_step(net, x, y)
    assert minisd.relative_error(backend.to_numpy(fast[0]), backend.to_numpy(ref[0])) <= 1e-10
    for name in ref[3]:
        assert minisd.relative_error(backend.to_numpy(fast[3][name]), backend.to_numpy(ref[3][name])) <= 1e-10, name


@pytest.mark.gpu
def test_backward_on_the_other_device_raises_one_clear_error(gpu_xp):
    conv = minisd.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=np.random.default_rng(0)).to("gpu")
    out = conv.forward(gpu_xp.ones((2, 2, 4, 4)))
    with pytest.raises(RuntimeError, match="forward ran on the fast_gpu path but the backward is called on the "
                                           "fast_cpu path"):
        conv.backward(np.ones(out.shape))


def test_reference_mode_is_per_thread():
    seen = {}
    with minisd.reference():
        t = threading.Thread(target=lambda: seen.update(other=route.in_reference_mode()))
        t.start()
        t.join()
        seen["this"] = route.in_reference_mode()
    assert seen == {"this": True, "other": False}


def test_backward_in_the_other_mode_raises_one_clear_error():
    conv = minisd.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    out = conv.forward(x)  # fast path
    with minisd.reference():
        with pytest.raises(RuntimeError, match="forward ran on the fast_cpu path but the backward"):
            conv.backward(np.ones_like(out))
    with minisd.reference():
        out = conv.forward(x)
    with pytest.raises(RuntimeError, match="forward ran on the readable path"):
        conv.backward(np.ones_like(out))


def test_the_loss_backward_checks_its_mode_without_an_array(device, xp):
    """The loss is given no gradient array: its cache's tag alone says where the forward ran."""
    loss_fn = minisd.SoftmaxCrossEntropy()
    logits, labels = xp.asarray(np.eye(3)[:2]), xp.asarray(np.array([0, 2]))
    loss_fn.forward(logits, labels)
    assert loss_fn.cache[0] is route.choose(logits)  # the cache carries its route
    with minisd.reference():
        with pytest.raises(RuntimeError, match=f"forward ran on the fast_{device} path but the backward is called "
                                               "on the readable path"):
            loss_fn.backward()
    with minisd.reference():
        loss_fn.forward(logits, labels)
    with pytest.raises(RuntimeError, match="forward ran on the readable path but the backward is called on the fast"):
        loss_fn.backward()
    loss_fn.forward(logits, labels)
    assert backend.get_xp(loss_fn.backward()) is xp


def test_unknown_route_in_a_cache_raises():
    relu = minisd.ReLU()
    out = relu.forward(np.ones((2, 3, 2, 2)))
    relu.cache = ("not-a-route", relu.cache[1])
    with pytest.raises(RuntimeError, match="unknown route"):
        relu.backward(np.ones_like(out))


def test_train_cli_reference_flag_runs_the_readable_code_only(tmp_path, monkeypatch):
    from minisd import train
    from minisd.tools.checkpoint import load_checkpoint
    from minisd.data.fake import write_fake_cifar10
    write_fake_cifar10(tmp_path / "data", n_per_batch=20, seed=0, n_test=20)
    common = ["--data-dir", str(tmp_path / "data"), "--depth", "8", "--epochs", "1", "--batch-size", "25",
              "--valid-size", "0", "--dtype", "float64", "--device", "cpu", "--no-progress"]
    assert train.main(common + ["--out", str(tmp_path / "fast")]) == 0
    with monkeypatch.context() as m:  # with --reference the fast module must not run at all
        for name in ("conv2d_forward", "conv2d_backward", "batchnorm_train_forward", "relu_forward"):
            m.setattr(fast_cpu, name, lambda *a, **k: pytest.fail("fast_cpu ran under --reference"))
        assert train.main(common + ["--out", str(tmp_path / "ref"), "--reference"]) == 0
    assert not route.in_reference_mode()  # the switch is off again after the run
    fast, _ = load_checkpoint(tmp_path / "fast" / "last.npz")
    ref, meta = load_checkpoint(tmp_path / "ref" / "last.npz")
    assert meta["config"]["reference"] is True
    weights = [k for k in fast if k.startswith("model/")]
    assert weights and all(minisd.relative_error(fast[k], ref[k]) < 1e-8 for k in weights)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ["02_convolution.py", "05_the_gate.py"])
def test_lessons_take_reference(lesson, tmp_path):
    """Every lesson takes --reference (lessons/_common.setup); these two run with it and say so."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, lesson, "--quick", "--reference", "--out", str(tmp_path)],
                          cwd=root / "lessons", capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "the readable code only (--reference)" in proc.stdout
