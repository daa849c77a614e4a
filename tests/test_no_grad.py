"""``with minisd.no_grad():`` keeps no cache anywhere, gives the same outputs, and refuses a backward."""
import threading

import numpy as np
import pytest

import minisd
from minisd import backend
from minisd.layers import grad_enabled
from minisd.tracing import held_nbytes


def _resnet20_and_batch(device, xp, batch=4):
    net = minisd.ResNet(20, dtype=np.float64, seed=0).to(device)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch, 3, 16, 16)))
    y = xp.asarray(rng.integers(0, 10, batch))
    return net, x, y


def _caches(net):
    """Every module whose cache holds anything, and the bytes they hold for backward."""
    return [name for name, m in net.named_modules() if m.cache is not None], held_nbytes(net.modules())


@pytest.mark.parametrize("training", [False, True])
def test_a_resnet20_forward_keeps_no_cache_and_the_same_output(training, device, xp):
    net, x, y = _resnet20_and_batch(device, xp)
    net.train(training)
    net.open_all_gates()
    outside = net.forward(x)
    kept, held = _caches(net)
    assert kept and held > 0  # outside the block the layers do keep their caches
    with minisd.no_grad():
        inside = net.forward(x)
    assert _caches(net) == ([], 0)  # no array held for backward, in any layer or block
    if not training:  # in training the forward moved the BN statistics: compare in eval mode only
        assert xp.array_equal(inside, outside)
    assert backend.get_xp(inside) is xp


def test_the_same_logits_and_running_statistics_as_outside(device, xp):
    """In training mode batch norm still updates its running statistics inside the block."""
    a, x, _ = _resnet20_and_batch(device, xp)
    b, _, _ = _resnet20_and_batch(device, xp)
    gates = [i % 3 != 1 for i in range(len(a.blocks))]
    a.set_gates(gates)
    b.set_gates(gates)
    out_a = a.forward(x)
    with minisd.no_grad():
        out_b = b.forward(x)
    assert xp.array_equal(out_a, out_b)
    for (name, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert xp.array_equal(va, vb), name


def test_a_backward_inside_fails_with_one_line(device, xp):
    net, x, y = _resnet20_and_batch(device, xp)
    loss_fn = minisd.SoftmaxCrossEntropy()
    with minisd.no_grad():
        loss_fn.forward(net.forward(x), y)
        assert loss_fn.cache is None
        with pytest.raises(RuntimeError, match=r"inside minisd\.no_grad\(\)") as e:
            loss_fn.backward()
        assert "\n" not in str(e.value)
        with pytest.raises(RuntimeError, match=r"inside minisd\.no_grad\(\)"):
            net.backward(xp.ones((4, 10)))
    # outside, the forward made inside left nothing to go back through
    with pytest.raises(RuntimeError, match=r"forward ran inside minisd\.no_grad\(\)"):
        net.backward(xp.ones((4, 10)))


def test_after_the_block_a_training_step_works_again(device, xp):
    net, x, y = _resnet20_and_batch(device, xp)
    loss_fn = minisd.SoftmaxCrossEntropy()
    with minisd.no_grad():
        net.forward(x)
    net.zero_grad()
    loss_fn.forward(net.forward(x), y)
    dx = net.backward(loss_fn.backward())
    assert dx.shape == x.shape and float(xp.abs(net.conv1.grads["weight"]).sum()) > 0


def test_the_trace_sees_nothing_held(device, xp):
    net, x, _ = _resnet20_and_batch(device, xp)
    net.eval()
    with minisd.trace() as t:
        net.forward(x)
    held = t.bytes_held()
    net.clear_cache()
    with minisd.no_grad(), minisd.trace() as t:
        net.forward(x)
    assert held > 0 and t.bytes_held() == 0 and len(t.events) > 0


def test_nesting_and_threads():
    seen = {}
    assert grad_enabled()
    with minisd.no_grad():
        with minisd.no_grad():
            assert not grad_enabled()
        assert not grad_enabled()  # leaving the inner block keeps the outer one
        t = threading.Thread(target=lambda: seen.update(other=grad_enabled()))
        t.start()
        t.join()
        seen["this"] = grad_enabled()
    assert grad_enabled()
    assert seen == {"this": False, "other": True}


def test_no_grad_leaves_even_after_an_error():
    with pytest.raises(ValueError):
        with minisd.no_grad():
            minisd.ReLU().forward(np.ones(2))
            raise ValueError
    assert grad_enabled()
