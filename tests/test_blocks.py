"""The gated residual block: a closed gate does no work, in forward and in backward."""
import numpy as np
import pytest

import minisd
from minisd import functional as F
from gradcheck_utils import check_layer_gradients, randn

F64 = np.float64


def make_block(rng, cin=3, cout=3, stride=1, p=0.7, **kw):
    block = minisd.ResidualBlock(cin, cout, stride, survival_prob=p, dtype=F64, rng=rng, **kw)
    for bn in (block.branch[1], block.branch[4]):  # non-trivial BN affine parameters
        bn.params["weight"][...] = rng.standard_normal(cout)
        bn.params["bias"][...] = rng.standard_normal(cout)
    return block.assign_names()


class CallCounter:
    """Counts forward/backward calls of every branch layer (zeros are not proof)."""

    def __init__(self, monkeypatch, layers):
        self.calls = 0
        for layer in layers:
            for phase in ("forward", "backward"):
                original = getattr(layer, phase)

                def counted(*args, _original=original):
                    self.calls += 1
                    return _original(*args)
                monkeypatch.setattr(layer, phase, counted)


@pytest.mark.parametrize("cin,cout,stride", [(3, 3, 1), (2, 4, 2)])
@pytest.mark.parametrize("gate", [True, False])
def test_block_gradients_gate_open_and_closed(cin, cout, stride, gate, rng, device):
    xp = minisd.backend.xp_for(device)
    block = make_block(rng, cin, cout, stride).to(device)
    block.gate = gate
    check_layer_gradients(block, randn(rng, (3, cin, 5, 6), xp), rng)


@pytest.mark.parametrize("scale", ["test", "train"])
def test_block_gradients_eval_and_train_scale(scale, rng):
    block = make_block(rng, 2, 4, 2, p=0.6, scale=scale)
    check_layer_gradients(block, randn(rng, (2, 2, 6, 6)), rng)
    block.eval()
    block.branch[1].running_var[...] = rng.random(4) + 0.5
    check_layer_gradients(block, randn(rng, (2, 2, 6, 6)), rng)


def test_closed_gate_skips_the_branch_entirely(rng, monkeypatch):
    block = make_block(rng, 2, 4, 2)
    x = randn(rng, (3, 2, 6, 6))
    block.forward(x)
    block.backward(np.ones((3, 4, 3, 3)))  # one open step: gradients and stats now non-zero
    grads = {n: g.copy() for n, _, g in block.parameters()}
    stats = {k: v.copy() for k, v in block.state_dict().items() if "running" in k}

    counter = CallCounter(monkeypatch, block.branch.layers)
    block.gate = False
    out = block.forward(x)
    sc, _ = F.shortcut_forward(x, 4, 2)
    np.testing.assert_array_equal(out, np.maximum(sc, 0))               # output = ReLU(shortcut(x))
    assert all(layer.cache is None for layer in block.branch.layers)     # nothing cached
    dout = randn(rng, out.shape)
    dx = block.backward(dout)
    np.testing.assert_array_equal(dx, F.shortcut_backward(dout * (sc > 0), (x.shape, 2, "subsample")))
    assert counter.calls == 0                                            # branch never called
    for n, _, g in block.parameters():
        np.testing.assert_array_equal(g, grads[n])                       # gradients untouched
    for k, v in block.state_dict().items():
        if "running" in k:
            np.testing.assert_array_equal(v, stats[k])                   # BN statistics unchanged

    block.gate = True
    block.forward(x)
    assert counter.calls == len(block.branch.layers)                     # the counter does count


def test_backward_mirrors_forward_even_if_gate_changes(rng):
    """backward follows what forward did, not the gate's current value."""
    block = make_block(rng)
    x = randn(rng, (2, 3, 4, 4))
    block.gate = False
    out = block.forward(x)
    block.gate = True
    dx = block.backward(np.ones_like(out))
    np.testing.assert_array_equal(dx, (out > 0).astype(F64))


def test_eval_scales_branch_by_survival_prob(rng):
    block = make_block(rng, p=0.3)
    block.eval()
    x = randn(rng, (2, 3, 4, 4))
    out = block.forward(x)
    f = block.branch.forward(x)
    np.testing.assert_allclose(out, np.maximum(x + 0.3 * f, 0), rtol=1e-12)
    block.gate = False  # a closed gate is irrelevant at test time
    np.testing.assert_allclose(block.forward(x), out, rtol=1e-12)


def test_train_scale_divides_in_training(rng):
    block = make_block(rng, p=0.4, scale="train")
    x = randn(rng, (2, 3, 4, 4))
    out = block.forward(x)
    block.eval()
    for bn in (block.branch[1], block.branch[4]):
        bn.train()  # same batch statistics, to isolate the scaling
    f = block.branch.forward(x)
    np.testing.assert_allclose(out, np.maximum(x + f / 0.4, 0), rtol=1e-12)
    block.eval()
    np.testing.assert_allclose(block.forward(x), np.maximum(x + block.branch.forward(x), 0), rtol=1e-12)


@pytest.mark.parametrize("scale", ["test", "train"])
def test_scale_conventions_agree_in_expectation(scale, rng):
    """Averaged over seeded gate draws, the training sum equals the test-time sum.

    The block's pre-ReLU sum is captured from its final ReLU. The branch's BNs are
    kept in eval mode so the branch is the same function in training and at test.
    """
    p = 0.6
    block = make_block(rng, p=p, scale=scale)
    for bn in (block.branch[1], block.branch[4]):
        bn.running_var[...] = rng.random(3) + 0.5
    x = randn(rng, (2, 3, 4, 4))
    seen = []
    relu_forward = block.relu.forward
    block.relu.forward = lambda total: (seen.append(total), relu_forward(total))[1]

    block.eval()
    block.forward(x)
    test_time_sum = seen.pop()
    block.train()
    for bn in (block.branch[1], block.branch[4]):
        bn.eval()
    gate_rng = np.random.default_rng(0)
    draws = 4000
    for _ in range(draws):
        block.gate = bool(gate_rng.random() < p)
        block.forward(x)
    mean_train_sum = np.mean(seen, axis=0)
    f = block.branch.forward(x)
    # Monte Carlo error of the gate frequency is about sqrt(p(1-p)/draws) ~ 0.008
    err = np.abs(mean_train_sum - test_time_sum).max() / np.abs(f).max()
    assert err < 0.04, err
    # and the test really can fail: with the other convention's scaling it is far off
    wrong = test_time_sum + (1 - p) * f if scale == "test" else test_time_sum - (1 - p) * f
    assert np.abs(mean_train_sum - wrong).max() / np.abs(f).max() > 0.2


def test_sample_mode_runs_branch_and_masks(rng):
    block = make_block(rng, p=0.5, mode="sample")
    x = randn(rng, (4, 3, 4, 4))
    block.mask = np.array([True, False, True, False])
    out = block.forward(x)
    f = block.branch.forward(x)
    expected = np.maximum(x + f * block.mask[:, None, None, None], 0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    block.gate = False  # the batch gate means nothing in sample mode: work cannot be skipped
    assert block.branch_runs()
    check_layer_gradients(block, x, rng)
    block.mask = None
    with pytest.raises(RuntimeError, match="sample_gates"):
        block.forward(x)


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="survival_prob"):
        minisd.ResidualBlock(3, 3, survival_prob=0.0)
    with pytest.raises(ValueError, match="scale"):
        minisd.ResidualBlock(3, 3, scale="both")
    with pytest.raises(ValueError, match="mode"):
        minisd.ResidualBlock(3, 3, mode="pixel")
