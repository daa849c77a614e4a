"""The DenseNet extension (issue 19): its new functions, its layers and the whole network.

Every new forward/backward pair of functional.py has a float64 gradient check; the dense
layer, a transition and small DenseNets (BC and plain) are checked whole; the parameter
counts are the paper's Table 2; the GPU path equals NumPy to 1e-10 in float64.
"""
import numpy as np
import pytest

import minisd
from minisd import backend, functional as F
from minisd.optim import SGD

TOL = 1e-6  # float64 central differences against the analytic gradient


def randn(rng, *shape):
    return rng.standard_normal(shape)


# -- the new functions ---------------------------------------------------------------


def test_concat_forward_and_its_split_backward(rng):
    x, new = randn(rng, 2, 3, 4, 5), randn(rng, 2, 2, 4, 5)
    out, cache = F.concat_forward(x, new)
    assert out.shape == (2, 5, 4, 5)
    assert np.array_equal(out[:, :3], x) and np.array_equal(out[:, 3:], new)  # the input first
    dout = randn(rng, *out.shape)
    dx, dnew = F.concat_backward(dout, cache)
    f = lambda: F.concat_forward(x, new)[0]  # noqa: E731
    assert minisd.relative_error(minisd.numerical_gradient(f, x, dout), dx) < TOL
    assert minisd.relative_error(minisd.numerical_gradient(f, new, dout), dnew) < TOL


def test_avg_pool_2x2(rng):
    x = randn(rng, 2, 3, 6, 4)
    out, cache = F.avg_pool_forward(x)
    assert out.shape == (2, 3, 3, 2)
    assert np.isclose(out[1, 2, 1, 0], x[1, 2, 2:4, 0:2].mean(), rtol=1e-15)
    dout = randn(rng, *out.shape)
    dx = F.avg_pool_backward(dout, cache)
    assert minisd.relative_error(minisd.numerical_gradient(lambda: F.avg_pool_forward(x)[0], x, dout), dx) < TOL
    with pytest.raises(ValueError, match="even"):
        F.avg_pool_forward(randn(rng, 1, 1, 5, 4))


def test_conv1x1_is_a_matrix_product_and_equals_the_im2col_convolution(rng):
    x, w = randn(rng, 3, 4, 5, 6), randn(rng, 7, 4, 1, 1)
    out, cache = F.conv1x1_forward(x, w)
    ref, ref_cache = F.conv2d_forward(x, w, None, 1, 0)
    assert minisd.relative_error(out, ref) < 1e-12
    assert np.allclose(out[2, :, 3, 4], w[:, :, 0, 0] @ x[2, :, 3, 4], rtol=1e-13)  # pixel by pixel
    dout = randn(rng, *out.shape)
    dx, dw = F.conv1x1_backward(dout, cache)
    rdx, rdw, _ = F.conv2d_backward(dout, ref_cache)
    assert minisd.relative_error(dx, rdx) < 1e-12 and minisd.relative_error(dw, rdw) < 1e-12
    f = lambda: F.conv1x1_forward(x, w)[0]  # noqa: E731
    assert minisd.relative_error(minisd.numerical_gradient(f, x, dout), dx) < TOL
    assert minisd.relative_error(minisd.numerical_gradient(f, w, dout), dw) < TOL


def test_a_1x1_conv2d_layer_runs_the_matrix_product(rng):
    conv = minisd.Conv2d(4, 6, 1, bias=False, dtype=np.float64, rng=rng)
    assert conv.is_matrix_product()
    assert not minisd.Conv2d(4, 6, 1, bias=True, dtype=np.float64).is_matrix_product()
    x = randn(rng, 2, 4, 3, 3)
    conv.forward(x)
    assert conv.cache[1][0] == "1x1"


# -- layers and the network -------------------------------------------------------------


def _check_module(module, x, rng):
    """Input and every parameter gradient of ``module`` (BN in training mode) against central differences."""
    out = module.forward(x)
    dout = randn(rng, *out.shape)
    module.zero_grad()
    dx = module.backward(dout)
    f = lambda: module.forward(x)  # noqa: E731
    errors = {"x": minisd.relative_error(minisd.numerical_gradient(f, x, dout), dx)}
    for name, p, g in module.parameters():
        errors[name] = minisd.relative_error(minisd.numerical_gradient(f, p, dout), g)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])
    return errors


@pytest.mark.parametrize("bottleneck", [True, False])
def test_dense_layer_gradients(bottleneck, rng):
    layer = minisd.DenseLayer(3, 2, bottleneck=bottleneck, dtype=np.float64, rng=rng)
    x = randn(rng, 3, 3, 4, 4)
    out = layer.forward(x)
    assert out.shape == (3, 5, 4, 4) and np.array_equal(out[:, :3], x)  # the input passes on unchanged
    errors = _check_module(layer, x, rng)
    assert len(errors) == 1 + (6 if bottleneck else 3)


def test_transition_gradients(rng):
    t = minisd.Transition(4, 2, dtype=np.float64, rng=rng)
    assert t.forward(randn(rng, 2, 4, 4, 6)).shape == (2, 2, 2, 3)
    _check_module(t, randn(rng, 2, 4, 4, 6), rng)


@pytest.mark.slow
@pytest.mark.parametrize("bottleneck, depth", [(True, 10), (False, 7)])
def test_whole_densenet_gradients(bottleneck, depth):
    """A small DenseNet (one layer a block), loss included: the input and every parameter."""
    rng = np.random.default_rng(3)
    net = minisd.DenseNet(depth, growth_rate=2, bottleneck=bottleneck, num_classes=3, dtype=np.float64, rng=rng)
    x, y = randn(rng, 2, 3, 8, 8), np.array([0, 2])
    loss_fn = minisd.SoftmaxCrossEntropy()
    loss_fn.forward(net.forward(x), y)
    net.zero_grad()
    dx = net.backward(loss_fn.backward())
    f = lambda: loss_fn.forward(net.forward(x), y)  # noqa: E731
    assert minisd.relative_error(minisd.numerical_gradient(f, x), dx) < TOL
    for name, p, g in net.parameters():
        assert minisd.relative_error(minisd.numerical_gradient(f, p), g) < TOL, name


@pytest.mark.parametrize("kwargs, count, paper", [
    (dict(depth=100, growth_rate=12), 769_162, "0.8M"),                                   # DenseNet-BC, L=100, k=12
    (dict(depth=40, growth_rate=12, bottleneck=False, compression=1.0), 1_019_722, "1.0M"),  # DenseNet, L=40, k=12
    (dict(depth=250, growth_rate=24), 15_324_406, "15.3M"),                               # DenseNet-BC, L=250, k=24
])
def test_parameter_counts_are_the_papers_table_2(kwargs, count, paper):
    net = minisd.DenseNet(**kwargs)
    assert net.num_parameters() == count
    assert f"{count / 1e6:.1f}M" == paper


def test_names_order_and_state_dict():
    net = minisd.DenseNet(16, growth_rate=4)
    names = [n for n, _, _ in net.parameters()]
    assert names[:4] == ["conv1.weight", "block1.layers.0.bn1.weight", "block1.layers.0.bn1.bias",
                         "block1.layers.0.conv1.weight"]
    assert names[-4:] == ["bn.weight", "bn.bias", "fc.weight", "fc.bias"]
    assert not any(n.endswith("conv1.bias") or n.endswith("conv2.bias") or n.endswith("conv.bias") for n in names)
    state = net.state_dict()
    assert "trans1.bn.running_mean" in state and "block3.layers.1.bn2.running_var" in state
    assert len(net.blocks) == 6 and net.sample_gates(np.random.default_rng(0)) == [True] * 6


@pytest.mark.parametrize("depth, bottleneck", [(101, True), (99, True), (41, False), (4, False), (True, True)])
def test_other_depths_are_refused_with_one_line(depth, bottleneck):
    with pytest.raises(ValueError, match="depth must be") as e:
        minisd.DenseNet(depth, bottleneck=bottleneck)
    assert "\n" not in str(e.value)


def test_no_grad_keeps_no_cache_in_a_densenet(rng):
    net = minisd.DenseNet(16, growth_rate=4)
    with minisd.no_grad():
        net.forward(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    assert all(m.cache is None for m in net.modules())


@pytest.mark.gpu
def test_densenet_step_on_the_gpu_path_equals_numpy(gpu_xp):
    """Two SGD steps of a DenseNet-BC on NumPy and on the GPU path, float64: every number to 1e-10."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 16, 16)), rng.integers(0, 10, 4)
    results = {}
    for device in ("cpu", "gpu"):
        net = minisd.DenseNet(16, growth_rate=4, dtype=np.float64, rng=np.random.default_rng(1)).to(device)
        opt = SGD(net.parameters(), lr=0.1)
        loss_fn = minisd.SoftmaxCrossEntropy()
        xd, yd = backend.to_device(x, device), backend.to_device(y, device)
        for _ in range(2):
            logits = net.forward(xd)
            loss = loss_fn.forward(logits, yd)
            net.zero_grad()
            net.backward(loss_fn.backward())
            opt.step()
        assert backend.device_of(logits) == device
        results[device] = dict(logits=logits, loss=loss, **{f"grad {n}": g for n, _, g in net.parameters()},
                               **{f"state {k}": v for k, v in net.state_dict().items()})
    worst = max((minisd.relative_error(np.asarray(results["cpu"][k]), backend.to_numpy(results["gpu"][k])), k)
                for k in results["cpu"])
    assert worst[0] < 1e-10, worst


# -- training: python -m minisd.train --arch densenet ------------------------------------


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    from minisd.data.fake import write_fake_cifar10
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=16, seed=0, n_test=16)
    return str(root)


def _tiny(root, out, *extra):
    return ["--arch", "densenet", "--depth", "10", "--growth-rate", "4", "--data-dir", root, "--batch-size", "16",
            "--valid-size", "16", "--seed", "2", "--device", "cpu", "--out", str(out), "--no-progress", *extra]


def test_train_cli_trains_a_densenet_and_resumes_bit_exactly(fake_root, tmp_path, capsys):
    from minisd import train
    from minisd.tools.checkpoint import load_checkpoint
    assert train.main(_tiny(fake_root, tmp_path / "straight", "--epochs", "2")) == 0
    assert "DenseNet-BC(depth=10" in capsys.readouterr().out
    assert train.main(_tiny(fake_root, tmp_path / "split", "--epochs", "1")) == 0
    assert train.main(["--resume", str(tmp_path / "split" / "last.npz"), "--epochs", "2", "--no-progress"]) == 0
    a, ma = load_checkpoint(tmp_path / "straight" / "last.npz")
    b, mb = load_checkpoint(tmp_path / "split" / "last.npz")
    assert a.keys() == b.keys() and any(k.startswith("model/block1.layers.0.") for k in a)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert ma["config"]["arch"] == mb["config"]["arch"] == "densenet"


@pytest.mark.parametrize("args, message", [
    (["--growth-rate", "12"], "--growth-rate is a DenseNet flag"),
    (["--arch", "densenet", "--p-last", "0.5"], "--p-last is a flag of the ResNet"),
    (["--arch", "densenet", "--shortcut", "avg"], "--shortcut is a flag of the ResNet"),
    (["--arch", "densenet", "--depth", "110"], "6n+4"),
    (["--arch", "densenet", "--no-bottleneck", "--depth", "42"], "3n+4"),
    (["--arch", "densenet", "--compression", "0"], "--compression"),
])
def test_flags_of_the_other_architecture_are_refused_with_one_line(args, message, tmp_path, capsys):
    from minisd import train
    assert train.main(args + ["--out", str(tmp_path / "r"), "--print-config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_the_densenet_recipe_is_the_papers(capsys):
    import json
    from minisd import train
    assert train.main(["--recipe", "paper-densenet-bc-100", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert {k: cfg[k] for k in ("arch", "depth", "growth_rate", "bottleneck", "compression", "batch_size", "epochs",
                                "lr", "milestones", "momentum", "nesterov", "weight_decay")} == dict(
        arch="densenet", depth=100, growth_rate=12, bottleneck=True, compression=0.5, batch_size=64, epochs=300,
        lr=0.1, milestones=[150, 225], momentum=0.9, nesterov=True, weight_decay=1e-4)


def test_a_resnet_checkpoint_does_not_resume_as_a_densenet(fake_root, tmp_path, capsys):
    from minisd import train
    out = tmp_path / "resnet"
    assert train.main(["--depth", "8", "--data-dir", fake_root, "--batch-size", "16", "--valid-size", "16",
                       "--epochs", "1", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out / "last.npz"), "--arch", "densenet", "--depth", "10",
                       "--epochs", "2", "--out", str(tmp_path / "other")]) == 1
    assert "the checkpoint is a resnet" in capsys.readouterr().err


@pytest.mark.gpu
def test_train_cli_trains_a_densenet_on_the_gpu_path(fake_root, tmp_path):
    """--device gpu: on CuPy where there is a GPU, else through the stand-in (tests/support/run_with_standin.py)."""
    import subprocess
    import sys
    from pathlib import Path
    import conftest
    here = Path(__file__).resolve().parent
    launcher = [] if conftest.REAL_GPU else [str(here / "support" / "run_with_standin.py")]
    args = _tiny(fake_root, tmp_path / "gpu", "--epochs", "1")
    args[args.index("--device") + 1] = "gpu"
    r = subprocess.run([sys.executable, *launcher, "-m", "minisd.train", *args], capture_output=True, text=True,
                       cwd=here.parent, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert "device gpu" in r.stdout and (tmp_path / "gpu" / "summary.json").exists()


# -- shared storage (minisd/fast/dense.py) against the readable concatenation ----------------


def _step_results(net, x, y):
    loss_fn = minisd.SoftmaxCrossEntropy()
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    net.zero_grad()
    dx = net.backward(loss_fn.backward())
    return dict(logits=logits, loss=np.asarray(loss), dx=dx, **{f"grad {n}": g.copy() for n, _, g in net.parameters()},
                **{f"state {k}": v for k, v in net.state_dict().items()})


@pytest.mark.parametrize("bottleneck, depth", [(True, 16), (False, 10)])
def test_shared_storage_equals_the_readable_concatenation(bottleneck, depth):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 3, 8, 8)), np.array([1, 0, 2])
    make = lambda: minisd.DenseNet(depth, 3, bottleneck, 0.5, num_classes=3, dtype=np.float64,  # noqa: E731
                                   rng=np.random.default_rng(9))
    shared = make()
    fast = _step_results(shared, x, y)
    assert shared.block1.cache is None  # (freed by the backward)
    readable = make()
    with minisd.reference():
        ref = _step_results(readable, x, y)
    for k in ref:
        assert minisd.relative_error(fast[k], ref[k]) < 1e-10, k


def test_shared_storage_holds_memory_linear_in_the_layers_readable_quadratic():
    """Bytes held for backward after a forward, per dense block of n layers: the readable
    concatenation keeps every layer's input (sum over i of (C0 + i k) maps); shared storage
    one buffer of C0 + n k maps, plus a constant per layer."""
    from minisd import tracing
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)

    def held(n, reference):
        net = minisd.DenseNet(6 * n + 4, 12, rng=np.random.default_rng(0))
        with (minisd.reference() if reference else _nothing()):
            net.forward(x)
        return tracing.held_nbytes(m for layer in net.block1.layers for m in layer.modules()) + \
            tracing.held_nbytes([net.block1])

    readable = [held(n, True) for n in (4, 8, 16)]
    shared = [held(n, False) for n in (4, 8, 16)]
    # doubling n: readable memory grows by more than 2x (quadratic term), shared by at most 2x (linear)
    assert readable[2] / readable[1] > 2.5 and readable[1] / readable[0] > 2.3
    assert shared[2] / shared[1] <= 2.05 and shared[1] / shared[0] <= 2.05
    assert shared[2] < readable[2] / 2


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("bottleneck, depth", [(True, 16), (False, 10)])
def test_a_trace_sees_every_layer_call_of_the_shared_storage_block(bottleneck, depth):
    """Shared storage runs bn1, relu1 and conv1 through minisd.functional, not through the
    layers; the trace must still see each call (tracing.call_as): the same forward and backward
    calls and FLOPs as the readable concatenation, plus bn1 and relu1 recomputed in backward."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 3, 8, 8)), np.array([1, 0, 2])

    def traced_step(reference):
        net = minisd.DenseNet(depth, 3, bottleneck, 0.5, num_classes=3, dtype=np.float64,
                              rng=np.random.default_rng(9))
        with (minisd.reference() if reference else _nothing()), minisd.trace() as t:
            _step_results(net, x, y)
        return t.events

    fast, readable = traced_step(False), traced_step(True)
    calls = lambda events, phases: sorted((e.layer, e.phase, e.flops) for e in events  # noqa: E731
                                          if e.phase in phases)
    assert calls(fast, ("forward", "backward")) == calls(readable, ("forward", "backward"))
    n_layers = (depth - 4) // (6 if bottleneck else 3) * 3
    recomputed = [e for e in fast if e.phase == "recompute"]
    assert len(recomputed) == 2 * n_layers and {e.kind for e in recomputed} == {"BatchNorm2d", "ReLU"}
    assert all(e.layer.endswith((".bn1", ".relu1")) and e.bytes_cached == 0 for e in recomputed)
    assert all(e.flops > 0 for e in recomputed) and not any(e.phase == "recompute" for e in readable)


def test_call_as_refuses_an_unknown_phase():
    from minisd import tracing
    with pytest.raises(ValueError, match="phase must be"):
        tracing.call_as(minisd.ReLU(), "sideways", lambda a: a, np.ones(2))


def test_initialised_as_the_authors_densenet_lua():
    """models/densenet.lua: conv weights N(0, 2 / (k k out_channels)) (fan-out, not Conv2d's
    fan-in), the linear bias zero, BN weight 1 and bias 0."""
    net = minisd.DenseNet(40, 12, bottleneck=False, compression=1.0, rng=np.random.default_rng(0))
    convs = [m for m in net.modules() if isinstance(m, minisd.Conv2d)]
    assert len(convs) == 1 + 36 + 2
    for conv in convs:
        w = conv.params["weight"]
        out_channels, in_channels, kh, kw = w.shape
        fan_out, fan_in = kh * kw * out_channels, kh * kw * in_channels
        # the sample std of w.size normals is within 5 standard errors (1/sqrt(2 size)) of the true one
        assert abs(w.std() / np.sqrt(2 / fan_out) - 1) < 5 / np.sqrt(2 * w.size), conv.name
        if fan_in != fan_out:  # fan-in would be a different std (by at least sqrt(16/12) here)
            assert abs(w.std() / np.sqrt(2 / fan_in) - 1) > 5 / np.sqrt(2 * w.size), conv.name
    assert not net.fc.params["bias"].any()
    bns = [m for m in net.modules() if isinstance(m, minisd.BatchNorm2d)]
    assert all((m.params["weight"] == 1).all() and not m.params["bias"].any() for m in bns)
