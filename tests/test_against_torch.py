"""minisd against PyTorch autograd, in float64: every layer, then the whole gated ResNet.

PyTorch is not a dependency of minisd: this whole file is skipped without it.
There is no float32 comparison here: float32 agreement needs a bound that follows from the
arithmetic, and PyTorch's CPU convolutions may pick Winograd or other algorithms whose error
has no such bound. minisd's own float32 results are checked against float64, layer by layer
and on every path, in tests/test_layers.py (bounds in tests/float32_bounds.py).
The network side uses ``benchmarks/torch_resnet.py``, a separate PyTorch
implementation written from the paper (loaded by path, no ``sys.path`` edits).
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
import torch.nn.functional as TF  # noqa: E402

from minisd import (BatchNorm2d, Conv2d, GlobalAvgPool, Linear, ReLU, ResNet, Shortcut,  # noqa: E402
                    SoftmaxCrossEntropy, relative_error)

LAYER_TOL = 1e-10
NET_TOL = 1e-9


def _load_benchmark(name):
    """benchmarks/NAME.py, imported by path (no sys.path edits)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"minisd_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tr = _load_benchmark("torch_resnet")


def T(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def N(t):
    return t.detach().numpy()


def close(a, b, tol, what=""):
    err = relative_error(np.asarray(a), np.asarray(b))
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"
    return err


# ---------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------

CONV_CASES = [
    # (N, C, H, W, F, k, stride, padding, bias)
    (2, 3, 8, 8, 4, 3, 1, 1, True),
    (2, 3, 8, 8, 4, 3, 1, 1, False),
    (2, 3, 9, 7, 5, 3, 2, 1, False),   # strided, odd and non-square
    (2, 3, 8, 6, 5, 3, 2, 1, True),
    (3, 4, 7, 9, 2, 3, 1, 0, True),    # no padding
    (3, 4, 7, 9, 2, 3, 2, 0, False),
    (2, 5, 6, 5, 3, 1, 1, 0, True),    # 1x1
    (2, 5, 6, 5, 3, 1, 2, 0, False),   # 1x1 strided (the shortcut of option B)
    (2, 2, 5, 5, 3, 1, 1, 1, True),    # 1x1 with padding
    (1, 3, 5, 8, 4, 3, 1, 1, True),    # batch of one
    (1, 3, 5, 8, 4, 3, 2, 1, False),
    (11, 3, 6, 6, 4, 3, 1, 1, False),  # more images than one im2col chunk
    (11, 3, 6, 6, 4, 3, 2, 1, True),
    (2, 3, 9, 8, 4, 5, 1, 2, False),   # 5x5 "same": the transposed-convolution dx path
    (2, 3, 9, 8, 4, 5, 2, 2, True),
    (2, 3, 5, 6, 2, 3, 1, 2, True),    # over-padded: stride 1 but not "same"
    (2, 4, 5, 5, 3, 1, 2, 1, False),   # 1x1, strided, padded
]


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}C{}_{}x{}_F{}_k{}s{}p{}_{}".format(
    *c[:8], "bias" if c[8] else "nobias"))
def test_conv2d(case, naive, rng):
    n, c, h, w, f, k, s, p, bias = case
    conv = Conv2d(c, f, k, stride=s, padding=p, bias=bias, dtype=np.float64, rng=rng)
    conv.naive = naive
    if bias:
        conv.params["bias"][...] = rng.standard_normal(f)
    x = rng.standard_normal((n, c, h, w))
    out = conv.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = conv.backward(dout)

    xt, wt = T(x, True), T(conv.params["weight"], True)
    bt = T(conv.params["bias"], True) if bias else None
    ot = TF.conv2d(xt, wt, bt, stride=s, padding=p)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")
    close(conv.grads["weight"], N(wt.grad), LAYER_TOL, "dweight")
    if bias:
        close(conv.grads["bias"], N(bt.grad), LAYER_TOL, "dbias")


def test_conv2d_padding_buffer_reuse(rng):
    """Two convolutions whose inputs are padded to the same 8x8 shape with different paddings."""
    a = Conv2d(3, 4, 3, padding=1, bias=False, dtype=np.float64, rng=rng)  # 6x6 input, padding 1
    b = Conv2d(3, 4, 5, padding=2, bias=False, dtype=np.float64, rng=rng)  # 4x4 input, padding 2
    a.forward(rng.standard_normal((2, 3, 6, 6)))
    a.clear_cache()
    x = rng.standard_normal((2, 3, 4, 4))
    out = b.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = b.backward(dout)
    xt, wt = T(x, True), T(b.params["weight"], True)
    ot = TF.conv2d(xt, wt, padding=2)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")
    close(b.grads["weight"], N(wt.grad), LAYER_TOL, "dweight")


def _bn_pair(rng, c):
    bn = BatchNorm2d(c, dtype=np.float64)
    bn.params["weight"][...] = rng.uniform(0.5, 1.5, c)
    bn.params["bias"][...] = rng.standard_normal(c)
    tbn = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
        tbn.weight.copy_(T(bn.params["weight"]))
        tbn.bias.copy_(T(bn.params["bias"]))
    return bn, tbn


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (1, 2, 3, 3), (20, 3, 4, 4), (4, 5, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_train(shape, rng):
    """Several training steps: outputs, all gradients and the running statistics after each."""
    c = shape[1]
    bn, tbn = _bn_pair(rng, c)
    tbn.train()
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        out = bn.forward(x)
        dout = rng.standard_normal(shape)
        bn.zero_grad()
        dx = bn.backward(dout)
        xt = T(x, True)
        tbn.zero_grad()
        ot = tbn(xt)
        (ot * T(dout)).sum().backward()
        close(out, N(ot), LAYER_TOL, f"step {step} output")
        close(dx, N(xt.grad), LAYER_TOL, f"step {step} dx")
        close(bn.grads["weight"], N(tbn.weight.grad), LAYER_TOL, f"step {step} dweight")
        close(bn.grads["bias"], N(tbn.bias.grad), LAYER_TOL, f"step {step} dbias")
        close(bn.running_mean, N(tbn.running_mean), LAYER_TOL, f"step {step} running_mean")
        close(bn.running_var, N(tbn.running_var), LAYER_TOL, f"step {step} running_var")


def test_batchnorm_eval(rng):
    """Eval mode uses the running statistics (here left by two training steps) as constants."""
    shape = (3, 4, 5, 5)
    bn, tbn = _bn_pair(rng, 4)
    for _ in range(2):
        x = rng.standard_normal(shape) * 2 + 1
        bn.forward(x)
        bn.clear_cache()
        with torch.no_grad():
            tbn(T(x))
    bn.eval()
    tbn.eval()
    x = rng.standard_normal(shape)
    out = bn.forward(x)
    dout = rng.standard_normal(shape)
    dx = bn.backward(dout)
    xt = T(x, True)
    ot = tbn(xt)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")
    close(bn.grads["weight"], N(tbn.weight.grad), LAYER_TOL, "dweight")
    close(bn.grads["bias"], N(tbn.bias.grad), LAYER_TOL, "dbias")
    # eval mode must not move the statistics
    close(bn.running_mean, N(tbn.running_mean), LAYER_TOL, "running_mean")
    close(bn.running_var, N(tbn.running_var), LAYER_TOL, "running_var")


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (20, 2, 3, 3), (5, 7)], ids=lambda s: "x".join(map(str, s)))
def test_relu(shape, rng):
    x = rng.standard_normal(shape)
    relu = ReLU()
    out = relu.forward(x)
    dout = rng.standard_normal(shape)
    dx = relu.backward(dout)
    xt = T(x, True)
    ot = torch.relu(xt)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")


def test_global_avg_pool(rng):
    x = rng.standard_normal((3, 4, 5, 7))
    pool = GlobalAvgPool()
    out = pool.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = pool.backward(dout)
    xt = T(x, True)
    ot = TF.adaptive_avg_pool2d(xt, 1).flatten(1)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n", [1, 6])
def test_linear(bias, n, rng):
    lin = Linear(7, 4, bias=bias, dtype=np.float64, rng=rng)
    x = rng.standard_normal((n, 7))
    out = lin.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = lin.backward(dout)
    xt, wt = T(x, True), T(lin.params["weight"], True)
    bt = T(lin.params["bias"], True) if bias else None
    ot = TF.linear(xt, wt, bt)
    (ot * T(dout)).sum().backward()
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")
    close(lin.grads["weight"], N(wt.grad), LAYER_TOL, "dweight")
    if bias:
        close(lin.grads["bias"], N(bt.grad), LAYER_TOL, "dbias")


@pytest.mark.parametrize("dout_scale", [None, 2.5])
@pytest.mark.parametrize("n,k,spread", [(6, 10, 1.0), (1, 3, 1.0), (5, 4, 300.0)])
def test_softmax_cross_entropy(n, k, spread, dout_scale, rng):
    logits = rng.standard_normal((n, k)) * spread  # spread 300: exp would overflow unshifted
    labels = rng.integers(0, k, n)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, labels)
    dlogits = loss_fn.backward() if dout_scale is None else loss_fn.backward(dout_scale)
    lt = T(logits, True)
    lt_loss = TF.cross_entropy(lt, torch.as_tensor(labels))
    (lt_loss * (1.0 if dout_scale is None else dout_scale)).backward()
    close(loss, N(lt_loss), LAYER_TOL, "loss")
    close(dlogits, N(lt.grad), LAYER_TOL, "dlogits")


@pytest.mark.parametrize("cin,cout,stride,h,w", [(4, 4, 1, 5, 5), (3, 6, 2, 8, 8), (3, 8, 2, 7, 9),
                                                  (2, 2, 2, 6, 5), (2, 5, 1, 4, 3)])
def test_shortcut_avg(cin, cout, stride, h, w, rng):
    """Option A with the authors' 2017 2x2 average (ceil mode: a cut window averages what it has)."""
    x = rng.standard_normal((3, cin, h, w))
    sc = Shortcut(cin, cout, stride, downsample="avg")
    out = sc.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = sc.backward(dout)
    xt = T(x, True)
    ot = tr.option_a_shortcut(xt, cout, stride, "avg")
    (ot * T(dout)).sum().backward()
    assert out.shape == tuple(ot.shape)
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")


@pytest.mark.parametrize("cin,cout,stride,h,w", [(4, 4, 1, 5, 5), (3, 6, 2, 8, 8), (3, 8, 2, 7, 9),
                                                  (2, 2, 2, 6, 5), (2, 5, 1, 4, 3)])
def test_shortcut(cin, cout, stride, h, w, rng):
    """Option A: subsample, then zero channels appended after the existing ones."""
    x = rng.standard_normal((3, cin, h, w))
    sc = Shortcut(cin, cout, stride)
    out = sc.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = sc.backward(dout)
    xt = T(x, True)
    y = xt[:, :, ::stride, ::stride]
    ot = torch.cat([y, torch.zeros((3, cout - cin) + tuple(y.shape[2:]), dtype=torch.float64)], dim=1)
    (ot * T(dout)).sum().backward()
    assert out.shape == tuple(ot.shape)
    close(out, N(ot), LAYER_TOL, "output")
    close(dx, N(xt.grad), LAYER_TOL, "dx")
    assert np.all(out[:, cin:] == 0)
    close(N(ot), N(tr.option_a_shortcut(T(x), cout, stride)), LAYER_TOL, "benchmarks shortcut")


# ---------------------------------------------------------------------------
# the whole network
# ---------------------------------------------------------------------------


def _nets(depth, scale, seed=0, p_last=0.5, rule="linear", mode="batch"):
    """A minisd ResNet with randomised BN parameters and statistics, and its PyTorch twin."""
    net = ResNet(depth, num_classes=10, p_last=p_last, rule=rule, dtype=np.float64, scale=scale, seed=seed,
                 mode=mode)
    rng = np.random.default_rng(seed + 100)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith(".weight") and v.ndim == 1:      # BN gamma
            state[k] = rng.uniform(0.5, 1.5, v.shape)
        elif k.endswith(".bias") and k != "fc.bias":   # BN beta
            state[k] = 0.3 * rng.standard_normal(v.shape)
        elif k.endswith("running_mean"):
            state[k] = 0.2 * rng.standard_normal(v.shape)
        elif k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape)
    net.load_state_dict(state)
    tnet = tr.TorchResNet(depth, num_classes=10, p_last=p_last, rule=rule, scale=scale).double()
    tr.load_from_minisd(tnet, net.state_dict())
    np.testing.assert_allclose(tnet.survival_probs, net.survival_probs, rtol=0, atol=1e-15)
    return net, tnet


def _batch(seed=1, n=4, hw=8):
    rng = np.random.default_rng(seed)
    h, w = (hw, hw) if np.isscalar(hw) else hw
    return rng.standard_normal((n, 3, h, w)), rng.integers(0, 10, n)


def _patterns(num_blocks):
    """All open, all closed, and some in between: first, last, each stage's downsampling block."""
    n = num_blocks // 3
    pats = {"open": [True] * num_blocks, "closed": [False] * num_blocks}
    alt = [i % 2 == 0 for i in range(num_blocks)]
    pats["alternate"] = alt
    pats["alternate_inv"] = [not g for g in alt]
    pats["down_closed"] = [i not in (n, 2 * n) for i in range(num_blocks)]
    pats["first_last_closed"] = [i not in (0, num_blocks - 1) for i in range(num_blocks)]
    return pats


def _train_step(net, tnet, gates, x, y, zero=True):
    """One forward/backward on both nets with ``gates``; returns the minisd results and torch's."""
    net.train()
    net.set_gates(gates)
    if zero:
        net.zero_grad()
    loss_fn = SoftmaxCrossEntropy()
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    dx = net.backward(loss_fn.backward())

    tnet.train()
    tnet.set_gates(gates)
    if zero:
        tnet.zero_grad(set_to_none=True)
    xt = T(x, True)
    lt = tnet(xt)
    tloss = TF.cross_entropy(lt, torch.as_tensor(y))
    tloss.backward()
    return (logits, loss, dx), (N(lt), N(tloss), N(xt.grad))


def _compare_grads(net, tnet, gates, tol):
    tgrads = tr.minisd_grads(tnet)
    names = [name for name, _, _ in net.parameters()]
    assert sorted(names) == sorted(tgrads), "parameter names differ"
    worst = 0.0
    for name, _, g in net.parameters():
        tg = tgrads[name]
        if tg is None:  # the branch of a closed block: torch never touched it
            block = int(name.split(".")[1])
            assert name.startswith("blocks.") and not gates[block], f"{name}: no torch gradient"
            assert np.all(g == 0), f"{name}: closed block got a minisd gradient"
            continue
        worst = max(worst, close(g, tg, tol, f"grad {name}"))
    return worst


def _compare_state(net, tnet, tol):
    tstate = tr.minisd_state(tnet)
    mstate = net.state_dict()
    assert sorted(tstate) == sorted(mstate)
    for k, v in mstate.items():
        close(v, tstate[k], tol, f"state {k}")


@pytest.mark.parametrize("scale", ["test", "train"])
@pytest.mark.parametrize("depth", [8, 14])
def test_resnet_training_step(depth, scale):
    """Logits, loss, every parameter gradient, the input gradient and BN statistics, per gate pattern."""
    net, tnet = _nets(depth, scale)
    x, y = _batch()
    for pname, gates in _patterns(len(net.blocks)).items():
        net0 = net.state_dict()  # running stats move each step: keep both nets in step
        (logits, loss, dx), (tlogits, tloss, tdx) = _train_step(net, tnet, gates, x, y)
        close(logits, tlogits, NET_TOL, f"{pname}: logits")
        close(loss, tloss, NET_TOL, f"{pname}: loss")
        close(dx, tdx, NET_TOL, f"{pname}: dx")
        _compare_grads(net, tnet, gates, NET_TOL)
        _compare_state(net, tnet, NET_TOL)
        # a closed block's BN statistics must not have moved
        after = net.state_dict()
        for i, g in enumerate(gates):
            if not g:
                for k in after:
                    if k.startswith(f"blocks.{i}.") and "running" in k:
                        assert np.array_equal(after[k], net0[k]), f"{pname}: {k} moved with its gate closed"


@pytest.mark.parametrize("n,hw", [(3, (9, 7)), (1, (8, 8)), (2, (11, 11))], ids=["3x9x7", "1x8x8", "2x11x11"])
def test_resnet_odd_shapes(n, hw):
    """Odd and non-square images (strided convs and shortcuts both give ceil(H/2)), a batch of one."""
    net, tnet = _nets(8, "test", seed=7)
    x, y = _batch(seed=4, n=n, hw=hw)
    for gates in ([True] * 3, [False, True, False], [True, False, True]):
        (logits, loss, dx), (tlogits, tloss, tdx) = _train_step(net, tnet, gates, x, y)
        close(logits, tlogits, NET_TOL, "logits")
        close(loss, tloss, NET_TOL, "loss")
        close(dx, tdx, NET_TOL, "dx")
        _compare_grads(net, tnet, gates, NET_TOL)
        _compare_state(net, tnet, NET_TOL)
    net.eval(), tnet.eval()
    close(net.forward(x), N(tnet(T(x))), NET_TOL, "eval logits")


@pytest.mark.parametrize("scale", ["test", "train"])
def test_resnet_sample_mode(scale):
    """Per-image masks: the branch runs on the whole batch, dropped images are multiplied by 0."""
    net, tnet = _nets(14, scale, seed=8, mode="sample")
    x, y = _batch(seed=5, n=5)
    mrng = np.random.default_rng(9)
    for step in range(3):
        masks = [mrng.random(len(y)) < p for p in net.survival_probs]
        if step == 0:
            masks[1][:] = False          # a block dropped for every image
            masks[2][:] = True
        for b, m in zip(net.blocks, masks):
            b.mask = m
        tnet.set_masks(masks)
        (logits, loss, dx), (tlogits, tloss, tdx) = _train_step(net, tnet, [True] * len(masks), x, y)
        close(logits, tlogits, NET_TOL, "logits")
        close(loss, tloss, NET_TOL, "loss")
        close(dx, tdx, NET_TOL, "dx")
        _compare_grads(net, tnet, [True] * len(masks), NET_TOL)
        _compare_state(net, tnet, NET_TOL)
    net.eval(), tnet.eval()
    close(net.forward(x), N(tnet(T(x))), NET_TOL, "eval logits")


def test_resnet_gradients_accumulate():
    """Two backward passes without zero_grad add up in both (different gates each time)."""
    net, tnet = _nets(14, "test", seed=3)
    pats = _patterns(len(net.blocks))
    net.zero_grad()
    tnet.zero_grad(set_to_none=True)
    for i, pname in enumerate(["alternate", "down_closed"]):
        x, y = _batch(seed=10 + i)
        _train_step(net, tnet, pats[pname], x, y, zero=False)
    # a parameter closed in both steps has no torch gradient; open in either: the sum
    both_closed = [not (a or b) for a, b in zip(pats["alternate"], pats["down_closed"])]
    _compare_grads(net, tnet, [not c for c in both_closed], NET_TOL)
    _compare_state(net, tnet, NET_TOL)


@pytest.mark.parametrize("scale", ["test", "train"])
@pytest.mark.parametrize("depth", [8, 14])
def test_resnet_eval(depth, scale):
    """Eval: every branch runs, scaled by p_l ("test") or not ("train"); gates are ignored.

    The backward pass in eval mode (BN as a fixed affine map) is compared too.
    """
    net, tnet = _nets(depth, scale)
    x, y = _batch(seed=2)
    # a training step first, so the running statistics are not the loaded ones only
    _train_step(net, tnet, _patterns(len(net.blocks))["alternate"], x, y)
    for gates in ([False] * len(net.blocks), [True] * len(net.blocks)):
        net.set_gates(gates)
        tnet.set_gates(gates)
        net.eval()
        tnet.eval()
        net.zero_grad()
        tnet.zero_grad(set_to_none=True)
        loss_fn = SoftmaxCrossEntropy()
        logits = net.forward(x)
        loss = loss_fn.forward(logits, y)
        dx = net.backward(loss_fn.backward())
        xt = T(x, True)
        lt = tnet(xt)
        tloss = TF.cross_entropy(lt, torch.as_tensor(y))
        tloss.backward()
        close(logits, N(lt), NET_TOL, "eval logits")
        close(loss, N(tloss), NET_TOL, "eval loss")
        close(dx, N(xt.grad), NET_TOL, "eval dx")
        _compare_grads(net, tnet, [True] * len(net.blocks), NET_TOL)
        _compare_state(net, tnet, NET_TOL)  # eval moves nothing


def test_resnet_eval_scale_matters():
    """With p_L < 1 the two scale conventions give different eval logits: the test sees the scaling."""
    x, _ = _batch()
    a, ta = _nets(8, "test")
    b, tb = _nets(8, "train")
    a.eval(), b.eval(), ta.eval(), tb.eval()
    la, lb = a.forward(x), b.forward(x)
    assert relative_error(la, lb) > 1e-3
    close(lb, N(tb(T(x))), NET_TOL, "train-scale eval logits")


def test_resnet_uniform_rule_and_plain():
    net, tnet = _nets(8, "test", p_last=0.8, rule="uniform")
    net2, tnet2 = _nets(8, "test", p_last=1.0)
    x, y = _batch()
    for m, t in ((net, tnet), (net2, tnet2)):
        (logits, _, dx), (tlogits, _, tdx) = _train_step(m, t, [True, False, True], x, y)
        close(logits, tlogits, NET_TOL, "logits")
        close(dx, tdx, NET_TOL, "dx")
        m.eval(), t.eval()
        close(m.forward(x), N(t(T(x))), NET_TOL, "eval logits")


# ---------------------------------------------------------------------------
# the PyTorch twin itself
# ---------------------------------------------------------------------------


def test_torch_resnet_channels_last_matches():
    net, tnet = _nets(8, "test")
    tcl = tr.TorchResNet(8, num_classes=10, p_last=0.5, channels_last=True).double()
    tr.load_from_minisd(tcl, net.state_dict())
    assert tcl.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = _batch()
    for m in (tnet, tcl):
        m.set_gates([True, False, True])
    xa, xb = T(x, True), T(x, True)
    la, lb = tnet(xa), tcl(xb)
    TF.cross_entropy(la, torch.as_tensor(y)).backward()
    TF.cross_entropy(lb, torch.as_tensor(y)).backward()
    close(N(la), N(lb), NET_TOL, "logits")
    close(N(xa.grad), N(xb.grad), NET_TOL, "dx")
    ga, gb = tr.minisd_grads(tnet), tr.minisd_grads(tcl)
    for k in ga:
        assert (ga[k] is None) == (gb[k] is None)
        if ga[k] is not None:
            close(ga[k], gb[k], NET_TOL, k)


def test_torch_resnet_names_round_trip():
    net, tnet = _nets(14, "test")
    state = net.state_dict()
    assert list(tr.minisd_state(tnet)) == list(state)  # same names, same order
    for k in state:
        assert tr.minisd_name(tr.torch_name(k)) == k
    bad = dict(state)
    bad.pop("fc.bias")
    with pytest.raises(KeyError):
        tr.load_from_minisd(tnet, bad)
    bad = dict(state, extra=np.zeros(1))
    with pytest.raises(KeyError):
        tr.load_from_minisd(tnet, bad)


def test_torch_resnet_closed_gate_skips_branch():
    """A closed gate in training never calls the branch (no BN update, no gradient)."""
    tnet = tr.TorchResNet(8, num_classes=10, p_last=0.5).double()
    calls = []
    tnet.blocks[1].conv_a.register_forward_hook(lambda *a: calls.append(1))
    tnet.set_gates([True, False, True])
    tnet(T(_batch()[0]))
    assert calls == []
    tnet.eval()
    tnet(T(_batch()[0]))
    assert calls == [1]


# ---------------------------------------------------------------------------
# DenseNet (issue 19): minisd's hand-written network against the authors' architecture in PyTorch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(depth=16, growth_rate=4, bottleneck=True, compression=0.5),
                                    dict(depth=10, growth_rate=3, bottleneck=False, compression=1.0)])
def test_densenet_equals_pytorch_float64(kwargs):
    """Training logits, loss, input and every parameter gradient, BN running statistics, eval logits."""
    from minisd import DenseNet
    td = _load_benchmark("torch_densenet")
    rng = np.random.default_rng(11)
    net = DenseNet(num_classes=10, dtype=np.float64, rng=rng, **kwargs)
    for m in net.modules():  # gamma and beta away from 1 and 0, so that they matter
        if isinstance(m, BatchNorm2d):
            m.params["weight"][...] = rng.uniform(0.5, 1.5, m.num_features)
            m.params["bias"][...] = rng.standard_normal(m.num_features) * 0.1
    tnet = td.load_from_minisd(td.TorchDenseNet(num_classes=10, **kwargs).double(), net.state_dict())
    x, y = rng.standard_normal((4, 3, 16, 16)), rng.integers(0, 10, 4)
    loss_fn = SoftmaxCrossEntropy()
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    net.zero_grad()
    dx = net.backward(loss_fn.backward())
    tx = T(x, grad=True)
    tl = tnet(tx)
    tloss = TF.cross_entropy(tl, torch.as_tensor(y))
    tloss.backward()
    close(logits, N(tl), NET_TOL, "training logits")
    assert abs(float(loss) - float(tloss.detach())) < 1e-12
    close(dx, N(tx.grad), NET_TOL, "dx")
    tparams = dict(tnet.named_parameters())
    for name, _, g in net.parameters():
        close(g, N(tparams[name].grad), NET_TOL, f"grad {name}")
    tstate = tnet.state_dict()
    for k, v in net.state_dict().items():
        close(v, N(tstate[k]), NET_TOL, f"state {k}")
    net.eval(), tnet.eval()
    close(net.forward(x), N(tnet(T(x))), NET_TOL, "eval logits")
