"""The trace: dropped blocks never appear; costs and memory follow the blocks executed."""
import numpy as np
import pytest

import minisd
from minisd import tracing as trace_module


def one_step(net, x, y):
    loss_fn = minisd.SoftmaxCrossEntropy()
    loss = loss_fn.forward(net.forward(x), y)
    net.backward(loss_fn.backward())
    return loss


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 4)


def test_dropped_blocks_never_appear(batch):
    net = minisd.ResNet(20, seed=0)
    gates = [True, False, True, True, False, False, True, False, True]
    net.set_gates(gates)
    with minisd.trace() as t:
        one_step(net, *batch)
    seen = {e.block for e in t.events if e.block is not None and ".branch." in e.layer}
    assert seen == {i for i, g in enumerate(gates) if g}
    rows = t.block_summary(net)
    assert [r["ran"] for r in rows] == gates
    for r in rows:
        assert (r["flops_skipped"] > 0) == (not r["ran"])
        assert (r["flops_run"] > r["flops_skipped"]) == r["ran"]
    # each open block: 5 branch layers + shortcut + relu, forward and backward
    for i, g in enumerate(gates):
        n = sum(e.block == i for e in t.events)
        assert n == (14 if g else 4)
    table = t.table(net)
    assert "closed" in table and "open" in table and "blocks run 5/9" in table


def test_flops_accounting_is_consistent(batch):
    """FLOPs skipped for a dropped block equal what that block costs when it runs."""
    net = minisd.ResNet(8, seed=0)
    net.set_gates([True, True, True])
    with minisd.trace() as t_open:
        one_step(net, *batch)
    net.set_gates([True, False, True])
    with minisd.trace() as t_drop:
        one_step(net, *batch)
    ran = t_open.block_summary(net)[1]
    skipped = t_drop.block_summary(net)[1]
    branch_flops = sum(e.flops for e in t_open.events if e.block == 1 and ".branch." in e.layer)
    assert skipped["flops_skipped"] == branch_flops
    assert ran["flops_run"] >= branch_flops


def test_cached_bytes_fall_as_blocks_are_dropped(batch):
    net = minisd.ResNet(20, seed=0)
    cached = []
    for n_open in (9, 6, 3, 0):
        net.set_gates([i < n_open for i in range(9)])
        with minisd.trace() as t:
            net.forward(batch[0])
        cached.append(t.bytes_held())
        net.clear_cache()
    assert cached == sorted(cached, reverse=True) and cached[0] > 2 * cached[-1]


def test_sample_mode_runs_every_branch(batch):
    net = minisd.ResNet(8, mode="sample", seed=0)
    net.sample_gates(np.random.default_rng(0), batch_size=4)
    with minisd.trace() as t:
        one_step(net, *batch)
    assert all(r["ran"] for r in t.block_summary(net))  # a mask saves no work
    assert "mask" in t.table(net)


def test_trace_is_off_by_default_and_does_not_nest(batch):
    assert trace_module._ACTIVE is None
    with minisd.trace():
        with pytest.raises(RuntimeError, match="already active"):
            with minisd.trace():
                pass
    assert trace_module._ACTIVE is None


def test_trace_inactive_after_exception():
    with pytest.raises(ZeroDivisionError):
        with minisd.trace():
            1 / 0
    assert trace_module._ACTIVE is None


def test_memory_held_counts_shared_arrays_once():
    """A ReLU's output is also the next convolution's input: one buffer, counted once."""
    rng = np.random.default_rng(0)
    seq = minisd.Sequential(minisd.Conv2d(3, 4, 3, padding=1, bias=False, rng=rng), minisd.ReLU(),
                            minisd.Conv2d(4, 4, 3, padding=1, bias=False, rng=rng))
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    with minisd.trace() as t:
        seq.forward(x)
    hidden = seq.layers[1].cache[1]  # the ReLU's output (a cache is (route, arrays))
    assert seq.layers[2].cache[1][1][0] is hidden  # a convolution's: (route, ("im2col", (x, ...)))
    assert sum(e.bytes_cached for e in t.events) == x.nbytes + 2 * hidden.nbytes  # weights left out
    assert t.bytes_held() == x.nbytes + hidden.nbytes
    assert minisd.tracing.held_nbytes(seq.modules()) == x.nbytes + hidden.nbytes
