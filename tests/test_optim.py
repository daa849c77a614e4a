"""SGD against hand calculations and torch.optim.SGD; dropped blocks; resuming; the lr schedule."""
import io

import numpy as np
import pytest

import minisd
from minisd import backend
from minisd.model import ResNet
from minisd.optim import SGD, lr_at_epoch

# ---------------------------------------------------------------------------
# the update rule, by hand
# ---------------------------------------------------------------------------

# One weight w0 = 1, gradients 2, -1, 0.5 on three steps, lr 0.1. Each row is
# (w, buf) after that step, worked out from
#   d = g + wd*w;  buf = d (first step) or m*buf + d;  d = d + m*buf (nesterov) or buf;  w -= lr*d
GRADS = [2.0, -1.0, 0.5]
HAND = {
    # m = 0.5, wd = 0.1, nesterov
    #  1: d = 2 + 0.1         = 2.1      buf = 2.1                      d = 2.1 + 1.05 = 3.15          w = 1 - 0.315 = 0.685
    #  2: d = -1 + 0.0685     = -0.9315  buf = 1.05 - 0.9315 = 0.1185   d = -0.9315 + 0.05925 = -0.87225 w = 0.685 + 0.087225
    #  3: d = 0.5 + 0.0772225 = 0.5772225 buf = 0.05925 + 0.5772225      d = 0.5772225 + 0.31823625      w = 0.772225 - 0.089545875
    "nesterov": (dict(momentum=0.5, weight_decay=0.1, nesterov=True),
                 [(0.685, 2.1), (0.772225, 0.1185), (0.682679125, 0.6364725)]),
    # m = 0.5, wd = 0.1, plain momentum: w -= lr * buf
    #  1: d = 2.1       buf = 2.1                      w = 1 - 0.21 = 0.79
    #  2: d = -0.921    buf = 1.05 - 0.921 = 0.129     w = 0.79 - 0.0129 = 0.7771
    #  3: d = 0.57771   buf = 0.0645 + 0.57771         w = 0.7771 - 0.064221 = 0.712879
    "plain": (dict(momentum=0.5, weight_decay=0.1, nesterov=False),
              [(0.79, 2.1), (0.7771, 0.129), (0.712879, 0.64221)]),
    # m = 0: w -= lr * (g + wd*w), no buffer
    #  1: w = 1 - 0.1*2.1 = 0.79   2: w = 0.79 + 0.1*0.921 = 0.8821   3: w = 0.8821 - 0.1*0.58821 = 0.823279
    "no momentum": (dict(momentum=0.0, weight_decay=0.1, nesterov=False),
                    [(0.79, None), (0.8821, None), (0.823279, None)]),
    # wd = 0, m = 0.5, nesterov
    #  1: buf = 2, d = 3, w = 0.7   2: buf = 1 - 1 = 0, d = -1, w = 0.8   3: buf = 0.5, d = 0.75, w = 0.725
    "no weight decay": (dict(momentum=0.5, weight_decay=0.0, nesterov=True),
                        [(0.7, 2.0), (0.8, 0.0), (0.725, 0.5)]),
}


@pytest.mark.parametrize("case", list(HAND))
def test_update_matches_hand_calculation(case, xp):
    kwargs, expected = HAND[case]
    w, g = xp.ones(1), xp.zeros(1)
    opt = SGD([("w", w, g)], lr=0.1, **kwargs)
    for grad, (w_want, buf_want) in zip(GRADS, expected):
        g[...] = grad
        opt.step()
        assert float(w[0]) == pytest.approx(w_want, rel=1e-12)
        if buf_want is None:
            assert opt.buffers["w"] is None
        else:
            assert float(opt.buffers["w"][0]) == pytest.approx(buf_want, rel=1e-12, abs=1e-15)
        assert float(g[0]) == grad  # the gradient is read, never written


def test_matches_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(4, 3, 3, 3), (4,), (5, 4)]
    for momentum, nesterov, wd in [(0.9, True, 1e-4), (0.9, False, 1e-2), (0.0, False, 1e-3)]:
        init = [rng.standard_normal(s) for s in shapes]
        ours = [("p%d" % i, a.copy(), np.zeros_like(a)) for i, a in enumerate(init)]
        theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in init]
        opt = SGD(ours, lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
        topt = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
        for step in range(6):
            if step == 3:  # the schedule changes lr between epochs
                opt.lr = 0.01
                for group in topt.param_groups:
                    group["lr"] = 0.01
            for (_, _, g), t in zip(ours, theirs):
                g[...] = rng.standard_normal(g.shape)
                t.grad = torch.from_numpy(g.copy())
            opt.step()
            topt.step()
        for (name, p, _), t in zip(ours, theirs):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-13, atol=1e-15)
            if momentum:
                np.testing.assert_allclose(opt.buffers[name], topt.state[t]["momentum_buffer"].numpy(),
                                           rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------
# dropped blocks
# ---------------------------------------------------------------------------


def _three_params(xp, seed=0):
    rng = np.random.default_rng(seed)
    return [(name, xp.asarray(rng.standard_normal(shape)), xp.asarray(rng.standard_normal(shape)))
            for name, shape in [("a.weight", (3, 2)), ("b.weight", (2, 2)), ("b.bias", (2,))]]


def test_dropped_paper_moves_exactly_like_a_zero_gradient(xp):
    """'paper': an inactive param gets weight decay and momentum, as a zero grad would (Torch7)."""
    told, zeroed = _three_params(xp), _three_params(xp)
    opt_told = SGD(told, lr=0.1, dropped="paper")
    opt_zeroed = SGD(zeroed, lr=0.1, dropped="paper")
    opt_told.step()  # a normal step first, so the momentum buffers are non-zero
    opt_zeroed.step()
    before = told[1][1].copy()
    for name, _, g in zeroed:
        if name.startswith("b."):
            g[...] = 0
    # the dropped block's grad buffers may hold anything: "paper" reads them as zero
    opt_told.step(inactive=["b.weight", "b.bias"])
    opt_zeroed.step()
    for (name, p, _), (_, q, _) in zip(told, zeroed):
        assert xp.array_equal(p, q), name
        assert xp.array_equal(opt_told.buffers[name], opt_zeroed.buffers[name]), name
        assert opt_told.steps[name] == 2
    assert not xp.array_equal(told[1][1], before)  # it moved


def test_dropped_skip_leaves_param_and_buffer_untouched(xp):
    """'skip': an inactive param, its buffer and step count are bit-identical (PyTorch, grad None)."""
    params = _three_params(xp)
    opt = SGD(params, lr=0.1, dropped="skip")
    opt.step()
    snapshot = {name: (p.copy(), opt.buffers[name].copy()) for name, p, _ in params}
    opt.step(inactive=["b.weight", "b.bias"])
    for name, p, _ in params:
        p0, buf0 = snapshot[name]
        same = xp.array_equal(p, p0) and xp.array_equal(opt.buffers[name], buf0)
        assert same == name.startswith("b."), name
    assert opt.steps == {"a.weight": 2, "b.weight": 1, "b.bias": 1}
    assert opt.num_steps == 2


def test_skip_on_first_step_defers_the_buffer(xp):
    params = _three_params(xp)
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.0, dropped="skip")
    opt.step(inactive=["a.weight"])
    assert opt.buffers["a.weight"] is None and opt.steps["a.weight"] == 0
    opt.step()
    assert xp.array_equal(opt.buffers["a.weight"], params[0][2])  # buf = d on its first update


def test_dropped_and_inactive_are_validated():
    params = _three_params(np)
    with pytest.raises(ValueError, match="dropped must be one of"):
        SGD(params, lr=0.1, dropped="torch")
    with pytest.raises(ValueError, match="not parameters"):
        SGD(params, lr=0.1).step(inactive=["c.weight"])
    with pytest.raises(ValueError, match="unique"):
        SGD(params + params[:1], lr=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        SGD(params, lr=-0.1)


@pytest.mark.parametrize("dropped", ["paper", "skip"])
def test_with_a_resnet_whose_middle_block_is_dropped(dropped, xp, device):
    net = ResNet(depth=8, num_classes=3, seed=0).to(device)
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, dropped=dropped)
    net.set_gates([True, False, True])
    net.forward(x)
    net.zero_grad()
    net.backward(xp.ones((2, 3), dtype=np.float32))
    inactive = net.inactive_parameter_names()
    assert inactive and all(n.startswith("blocks.1.") for n in inactive)
    before = {name: p.copy() for name, p, _ in net.parameters()}
    opt.step(inactive=inactive)
    for name, p, _ in net.parameters():
        if name not in inactive:
            continue
        if dropped == "skip":
            assert xp.array_equal(p, before[name]), name
        else:  # first step, zero grad: d = wd*w, buf = d, d += 0.9*buf, so w -= 0.1 * 1.9 * 1e-4 * w
            # in float64 on the float32 weights; float32 rounds ~6 times (wd * w, the buffer,
            # Nesterov's sum, * lr, the subtraction), each relative to at most |w|
            w = backend.to_numpy(before[name]).astype(np.float64)
            ratio = minisd.gradcheck.rounding_error_ratio(backend.to_numpy(p), w * (1 - 0.1 * 1.9 * 1e-4), np.abs(w), 6)
            assert ratio <= 1, (name, ratio)
    conv = inactive[0]  # the dropped block's first conv weight: non-zero, so weight decay moves it
    assert xp.array_equal(dict((n, p) for n, p, _ in net.parameters())[conv], before[conv]) == (dropped == "skip")


# ---------------------------------------------------------------------------
# one flat array: one update for all parameters (Module.flatten_parameters)
# ---------------------------------------------------------------------------


def _resnet_with_grads(xp, seed=0):
    net = ResNet(depth=14, num_classes=3, seed=seed).to("cpu" if xp is np else "gpu")
    rng = np.random.default_rng(seed)
    for _, _, g in net.parameters():
        g[...] = xp.asarray(rng.standard_normal(g.shape).astype(np.float32))
    return net


@pytest.mark.parametrize("dropped", ["paper", "skip"])
@pytest.mark.parametrize("kwargs", [dict(), dict(nesterov=False), dict(momentum=0.0), dict(weight_decay=0.0)])
def test_flat_update_equals_one_update_per_parameter(dropped, kwargs, xp):
    """A flattened ResNet is one group; every step, inactive runs included, is bit-identical
    to updating each parameter on its own (copies of the arrays: no flat layout to find)."""
    net = _resnet_with_grads(xp)
    flat = SGD(net.parameters(), lr=0.1, dropped=dropped, **kwargs)
    copies = [(n, p.copy(), g.copy()) for n, p, g in net.parameters()]
    alone = SGD(copies, lr=0.1, dropped=dropped, **kwargs)
    assert len(flat._flat.groups) == 1 and flat._one_by_one == []   # the layout handed over: one group
    assert alone._flat is None and len(alone._one_by_one) == len(copies)
    blocks = [n for n, _, _ in copies if n.startswith(("blocks.1.", "blocks.2.", "blocks.5."))]
    for inactive in ([], blocks, blocks[:3], []):
        flat.step(inactive=inactive)
        alone.step(inactive=inactive)
        flat.lr = alone.lr = 0.05
    for (name, p, _), (_, q, _) in zip(net.parameters(), copies):
        assert xp.array_equal(p, q), name
        if flat.buffers[name] is None:
            assert alone.buffers[name] is None, name
        else:
            assert flat.buffers[name].shape == p.shape and xp.array_equal(flat.buffers[name], alone.buffers[name]), name
    assert flat.steps == alone.steps
    assert backend.to_numpy(next(net.parameters())[2]).any()  # the gradients are only read


def test_flatten_keeps_values_and_makes_views(xp):
    net = ResNet(depth=8, num_classes=3, seed=0)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    net.to("cpu" if xp is np else "gpu")
    assert len(net._flat.groups) == 1
    flat_params, flat_grads = net._flat.groups[0].params, net._flat.groups[0].grads
    assert flat_params.size == net.num_parameters()
    for name, p, g in net.parameters():
        assert p.base is flat_params and g.base is flat_grads, name
    for k, v in net.state_dict().items():
        assert np.array_equal(backend.to_numpy(v), before[k]), k
    for _, _, g in net.parameters():
        g += 1
    net.zero_grad()
    assert not flat_grads.any()
    net.conv1.grads["weight"] = xp.ones_like(net.conv1.grads["weight"])  # a new array by hand: noticed
    net.zero_grad()
    assert not net.conv1.grads["weight"].any()


def test_flat_sgd_and_zero_grad_are_one_kernel(standin):
    """On the GPU path: zero_grad one fill; a step one kernel, plus one per run of dropped parameters."""
    net = ResNet(depth=14, num_classes=3, seed=0).to("gpu")
    opt = SGD(net.parameters(), lr=0.1)
    with standin.counting() as c:
        net.zero_grad()
    assert c.launches == 1
    with standin.counting() as c:
        opt.step()
    assert (c.launches, c.syncs) == (1, 0)
    inactive = [n for n, _, _ in net.parameters() if n.startswith(("blocks.1.", "blocks.3."))]
    with standin.counting() as c:
        opt.step(inactive=inactive)   # active, dropped, active, dropped, active
    assert c.launches == 5
    skip = SGD(net.parameters(), lr=0.1, dropped="skip")
    with standin.counting() as c:
        skip.step(inactive=inactive)
    assert c.launches == 3


def test_to_refuses_to_strand_an_optimizer_on_flat_views(monkeypatch):
    net = ResNet(depth=8, num_classes=3, seed=0)
    opt = SGD(net.parameters(), 0.1)
    assert net.to("cpu") is net and net.conv1.params["weight"].base is opt._flat.groups[0].group.params  # not moved
    monkeypatch.setattr("minisd.layers.resolve_device", lambda device: "gpu")
    with pytest.raises(RuntimeError, match="optimizer was built"):
        net.to("gpu")


# ---------------------------------------------------------------------------
# saving and resuming
# ---------------------------------------------------------------------------


def _through_npz(state):
    """Save to an in-memory .npz and read back without pickle, as a checkpoint would."""
    f = io.BytesIO()
    np.savez(f, **{k: backend.to_numpy(v) for k, v in state.items()})
    f.seek(0)
    with np.load(f, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("dropped", ["paper", "skip"])
def test_resume_is_bit_exact(dropped, xp):
    rng = np.random.default_rng(1)
    grads = [[rng.standard_normal(g.shape).astype(np.float32) for _, _, g in _three_params(np)] for _ in range(3)]
    inactive = [["b.weight", "b.bias"], [], ["a.weight"]]  # b has no buffer yet after step 1 under "skip"

    def make():
        params = [(n, p.astype(np.float32), g.astype(np.float32)) for n, p, g in _three_params(xp)]
        return params, SGD(params, lr=0.1, dropped=dropped)

    def run(params, opt, steps):
        for s in steps:
            for (_, _, g), new in zip(params, grads[s]):
                g[...] = xp.asarray(new)
            opt.lr = 0.1 if s < 2 else 0.01
            opt.step(inactive=inactive[s])

    straight, opt = make()
    run(straight, opt, [0, 1, 2])

    first, opt1 = make()
    run(first, opt1, [0])
    saved = _through_npz(opt1.state_dict())
    weights = {n: backend.to_numpy(p) for n, p, _ in first}
    resumed, opt2 = make()
    for n, p, _ in resumed:
        p[...] = xp.asarray(weights[n])
    opt2.load_state_dict(saved)
    run(resumed, opt2, [1, 2])

    for (name, p, _), (_, q, _) in zip(straight, resumed):
        assert xp.array_equal(p, q), name
        assert xp.array_equal(opt.buffers[name], opt2.buffers[name]), name
        assert backend.get_xp(opt2.buffers[name]) is xp and opt2.buffers[name].dtype == np.float32
    assert opt.steps == opt2.steps and opt.num_steps == opt2.num_steps == 3 and opt2.lr == opt.lr


def test_state_dict_key_format_and_checks():
    params = [("layer/1.weight", np.ones(2), np.ones(2)), ("fc.bias", np.ones(1), np.ones(1))]
    opt = SGD(params, lr=0.1)
    opt.step()
    state = opt.state_dict()
    assert set(state) == {"lr", "num_steps", "step/layer%2F1.weight", "step/fc.bias",
                          "momentum_buffer/layer%2F1.weight", "momentum_buffer/fc.bias"}
    assert all(isinstance(v, (int, float, np.ndarray)) for v in state.values())
    state["momentum_buffer/fc.bias"][...] = 7  # a copy: the optimizer is unaffected
    assert opt.buffers["fc.bias"][0] != 7

    fresh = SGD(params, lr=0.1)
    with pytest.raises(KeyError, match="unexpected"):
        fresh.load_state_dict({**state, "momentum_buffer/other": np.ones(1)})
    with pytest.raises(KeyError, match="momentum_buffer/fc.bias"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "momentum_buffer/fc.bias"})
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict({**state, "momentum_buffer/fc.bias": np.ones(3)})
    assert fresh.num_steps == 0 and fresh.buffers["fc.bias"] is None  # nothing changed
    fresh.load_state_dict(_through_npz(state))
    assert fresh.num_steps == 1 and fresh.buffers["fc.bias"][0] == 7


# ---------------------------------------------------------------------------
# the learning-rate schedule
# ---------------------------------------------------------------------------


def decay_epochs(**kwargs):
    """The epochs at which lr_at_epoch lowers the rate."""
    lr = [lr_at_epoch(e, **kwargs) for e in range(kwargs["epochs"])]
    return [e for e in range(1, len(lr)) if lr[e] < lr[e - 1]]


def test_paper_schedule_for_500_epochs():
    got = [lr_at_epoch(e, base_lr=0.1, epochs=500) for e in (0, 249, 250, 374, 375, 499)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)
    assert decay_epochs(epochs=500) == [250, 375]


def test_default_milestones_are_exact_fractions_for_odd_epochs():
    # epoch >= 0.5 * 7 = 3.5 -> 4;  epoch >= 0.75 * 7 = 5.25 -> 6
    assert decay_epochs(epochs=7) == [4, 6]
    assert decay_epochs(epochs=4) == [2, 3]   # exactly 50% and 75%
    assert [lr_at_epoch(e, epochs=7) for e in range(7)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-12)


def test_explicit_milestones_and_gamma():
    lr = [lr_at_epoch(e, base_lr=0.2, epochs=10, milestones=[3, 8], gamma=0.5) for e in range(10)]
    assert lr == pytest.approx([0.2] * 3 + [0.1] * 5 + [0.05] * 2)
    assert lr_at_epoch(9, epochs=10, milestones=[]) == 0.1  # no milestones: constant


def test_past_the_last_epoch_the_last_rate_holds():
    assert lr_at_epoch(10, epochs=8) == lr_at_epoch(7, epochs=8) == pytest.approx(0.001)


def test_schedule_is_deterministic_arithmetic():
    """The rate is base_lr times gamma, once per milestone passed, in that order (bit-exact resume relies on it)."""
    assert lr_at_epoch(499, base_lr=0.1, epochs=500) == 0.1 * 0.1 * 0.1


def test_warmup():
    # the 1202-layer run: 0.01 first, then the usual schedule (warm-up epochs count towards the total)
    lr = [lr_at_epoch(e, epochs=8, warmup_epochs=2, warmup_lr=0.01) for e in range(8)]
    assert lr == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(epoch=-1), dict(epoch=1.5), dict(epochs=0), dict(epochs=-5),
    dict(milestones=[375, 250]), dict(milestones=[250, 250]), dict(milestones=[-1]), dict(milestones=[500]),
    dict(milestones=[0.5, 0.75]), dict(base_lr=0.0), dict(gamma=-0.1),
    dict(warmup_epochs=-1), dict(warmup_epochs=501), dict(warmup_epochs=2, warmup_lr=0.0),
])
def test_schedule_rejects_bad_input(kwargs):
    kwargs = {"epoch": 0, **kwargs}
    with pytest.raises(ValueError):
        lr_at_epoch(**kwargs)
