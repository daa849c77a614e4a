"""The paper's CIFAR ResNet: survival rules, structure, whole-network gradients, state."""
import numpy as np
import pytest

import minisd
from minisd.model import survival_probabilities, expected_blocks
from reference_net import resnet_forward

F64 = np.float64
SMALL = dict(widths=(2, 3, 4), dtype=F64)  # tiny widths: every parameter can be checked numerically


def small_net(depth=8, p_last=0.5, seed=0, **kw):
    net = minisd.ResNet(depth, num_classes=3, p_last=p_last, seed=seed, **{**SMALL, **kw})
    rng = np.random.default_rng(seed + 1)
    for name, m in net.named_modules():  # random BN affine parameters, so nothing is trivially 0/1
        if isinstance(m, minisd.BatchNorm2d):
            m.params["weight"][...] = 1 + 0.3 * rng.standard_normal(m.num_features)
            m.params["bias"][...] = 0.3 * rng.standard_normal(m.num_features)
    return net


def loss_of(net, x, y):
    loss_fn = minisd.SoftmaxCrossEntropy()
    loss = loss_fn.forward(net.forward(x), y)
    return loss, loss_fn


# -- survival rules -------------------------------------------------------------

def test_linear_rule_values():
    p = survival_probabilities(4, 0.5, "linear")
    np.testing.assert_allclose(p, [0.875, 0.75, 0.625, 0.5])
    assert survival_probabilities(54, 0.5)[-1] == 0.5
    assert expected_blocks(54, 0.5) == pytest.approx((3 * 54 - 1) / 4) == pytest.approx(40.25)


def test_uniform_rule_and_p_last_one():
    assert survival_probabilities(5, 0.8, "uniform") == [0.8] * 5
    assert survival_probabilities(5, 1.0) == [1.0] * 5
    assert expected_blocks(10, 0.7, "uniform") == pytest.approx(7.0)


@pytest.mark.parametrize("depth,p_last,rule", [(20, 0.5, "linear"), (32, 0.8, "uniform"), (8, 1.0, "linear")])
def test_net_expected_blocks_is_the_sum_of_its_blocks_survival_probabilities(depth, p_last, rule):
    net = minisd.ResNet(depth, 10, p_last=p_last, rule=rule)
    assert net.expected_blocks() == expected_blocks(len(net.blocks), p_last, rule)
    assert net.expected_blocks() == pytest.approx(sum(b.survival_prob for b in net.blocks), rel=1e-15)


@pytest.mark.parametrize("args", [(0, 0.5, "linear"), (5, 0.0, "linear"), (5, 1.5, "linear"), (5, 0.5, "cubic")])
def test_bad_survival_arguments(args):
    with pytest.raises(ValueError):
        survival_probabilities(*args)


# -- structure --------------------------------------------------------------------

def test_resnet110_structure():
    net = minisd.ResNet(110)
    assert len(net.blocks) == 54
    assert [b.stride for b in net.blocks].count(2) == 2
    assert net.blocks[18].stride == 2 and net.blocks[36].stride == 2
    assert [b.out_channels for b in net.blocks[::18]] == [16, 32, 64]
    assert net.survival_probs[0] == pytest.approx(1 - 0.5 / 54) and net.survival_probs[-1] == 0.5
    # conv1 + bn1, stage 1, stage 2 (first block widens), stage 3, fc: the paper's "1.7M"
    expected = (432 + 32) + 18 * (2 * 2304 + 64) + (4608 + 9216 + 128) + 17 * (2 * 9216 + 128) \
        + (18432 + 36864 + 256) + 17 * (2 * 36864 + 256) + (640 + 10)
    assert net.num_parameters() == expected == 1_727_962


@pytest.mark.parametrize("depth", [7, 21, 0, "110", 2, True, 8.0])
def test_bad_depth_lists_valid_depths(depth):
    with pytest.raises(ValueError, match="depth must be 6N\\+2 .*20, 26, 32"):
        minisd.ResNet(depth)
    with pytest.raises(ValueError, match="6N\\+2") as e:
        minisd.model.check_depth(depth)
    assert "\n" not in str(e.value)


def test_check_depth_gives_the_blocks_per_stage():
    assert [minisd.model.check_depth(d) for d in (8, 20, 110, np.int64(1202))] == [1, 3, 18, 200]


def test_parameters_stable_order():
    names = [n for n, _, _ in minisd.ResNet(8).parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert names[3] == "blocks.0.branch.0.weight"
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert names == [n for n, _, _ in minisd.ResNet(8).parameters()]


def test_sample_gates_frequency():
    net = minisd.ResNet(20, p_last=0.5)
    rng = np.random.default_rng(0)
    draws = np.array([net.sample_gates(rng) for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(axis=0), net.survival_probs, atol=0.03)
    assert net.gates() == list(draws[-1])


# -- whole-network numerics -------------------------------------------------------

@pytest.mark.parametrize("gates", [[True, True, True], [True, False, True], [False, True, False], [False, False, False]])
def test_whole_network_gradients(gates):
    """float64 numerical gradient of every parameter and the input, BN in training mode."""
    net = small_net(8)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3, 6, 6))
    y = np.array([0, 2, 1])
    net.set_gates(gates)
    loss, loss_fn = loss_of(net, x, y)
    net.zero_grad()
    dx = net.backward(loss_fn.backward())
    f = lambda: loss_of(net, x, y)[0]
    assert minisd.relative_error(minisd.numerical_gradient(f, x), dx) < 1e-6
    for i, block in enumerate(net.blocks):
        if not gates[i]:  # a dropped block's gradients stay exactly zero
            assert all(not g.any() for _, _, g in block.parameters())
    for name, p, g in net.parameters():
        err = minisd.relative_error(minisd.numerical_gradient(f, p), g)
        assert err < 1e-6, (name, err)


def test_deeper_network_gradients_sampled():
    """A 3-stage, 2-block-per-stage network: every parameter array checked on a sample of entries."""
    net = small_net(14, p_last=0.5)
    net.set_gates([True, False, True, True, False, True])
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 3, 8, 8)), np.array([1, 2])
    loss, loss_fn = loss_of(net, x, y)
    net.zero_grad()
    net.backward(loss_fn.backward())
    for name, p, g in net.parameters():
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + 1e-5
            plus = float(loss_of(net, x, y)[0])
            flat[i] = old - 1e-5
            minus = float(loss_of(net, x, y)[0])
            flat[i] = old
            num = (plus - minus) / 2e-5
            assert abs(num - gflat[i]) <= 1e-6 * max(abs(num) + abs(gflat[i]), 1e-6), (name, i, num, gflat[i])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("scale,shortcut", [("test", "subsample"), ("train", "subsample"), ("test", "avg")])
def test_logits_equal_independent_implementation(training, scale, shortcut):
    net = minisd.ResNet(14, num_classes=5, p_last=0.5, dtype=F64, seed=3, scale=scale, shortcut=shortcut)
    rng = np.random.default_rng(0)
    sd = net.state_dict()
    for k in sd:
        if "running_var" in k:
            sd[k] = rng.random(sd[k].shape) + 0.5
        elif "running_mean" in k or k.endswith("bias"):
            sd[k] = 0.2 * rng.standard_normal(sd[k].shape)
    net.load_state_dict(sd)
    x = rng.standard_normal((3, 3, 8, 8))
    gates = [True, False, True, False, False, True]
    net.set_gates(gates)
    net.train(training)
    logits = net.forward(x)
    ref = resnet_forward(x, sd, 14, gates, net.survival_probs, training, scale, downsample=shortcut)
    assert minisd.relative_error(logits, ref) < 1e-10


def test_shortcut_option_reaches_every_block_and_bn_starts_at_one():
    net = minisd.ResNet(14, shortcut="avg", seed=0)
    assert {b.shortcut.downsample for b in net.blocks} == {"avg"} and net.downsample == "avg"
    plain = minisd.ResNet(14, seed=0)
    assert all(m.params["weight"].min() == 1 for m in plain.modules() if isinstance(m, minisd.BatchNorm2d))
    assert {b.shortcut.downsample for b in plain.blocks} == {"subsample"}


def test_batchnorm_uniform_weight_init():
    """Torch7 cudnn's gamma ~ U(0, 1), for the layer alone (no flag of the ResNet reaches it)."""
    gammas = minisd.BatchNorm2d(64, weight_init="uniform", rng=np.random.default_rng(0)).params["weight"]
    assert gammas.min() >= 0 and gammas.max() < 1 and len(np.unique(gammas)) == len(gammas)
    with pytest.raises(ValueError, match="weight_init"):
        minisd.BatchNorm2d(4, weight_init="zero")


def test_p_last_one_is_the_plain_resnet():
    sd_net = minisd.ResNet(14, p_last=1.0, dtype=F64, seed=1)
    plain = minisd.ResNet(14, p_last=0.5, dtype=F64, seed=1)
    plain.open_all_gates()
    sd_net.sample_gates(np.random.default_rng(0))
    assert all(sd_net.gates())  # p = 1: every gate opens
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    np.testing.assert_array_equal(sd_net.forward(x), plain.forward(x))  # training: identical
    sd_net.eval()
    ref = resnet_forward(x, sd_net.state_dict(), 14, [True] * 6, [1.0] * 6, training=False)
    assert minisd.relative_error(sd_net.forward(x), ref) < 1e-10  # eval: no scaling at p = 1


def test_state_dict_round_trip():
    a, b = minisd.ResNet(8, seed=0), minisd.ResNet(8, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    a.forward(x)  # move running statistics
    sd = a.state_dict()
    assert list(sd)[:5] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    b.load_state_dict(sd)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict({k: v for k, v in sd.items() if k != "fc.bias"})
    bad = dict(sd, **{"fc.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(bad)


def test_wrong_input_to_network():
    net = minisd.ResNet(8)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        net.forward(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        net.forward(np.zeros((2, 3, 8, 8)))


@pytest.mark.slow
def test_1202_layer_network_builds_and_steps():
    net = minisd.ResNet(1202, p_last=0.5, seed=0)
    assert len(net.blocks) == 600
    net.sample_gates(np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    loss, loss_fn = loss_of(net, x, np.array([1, 2]))
    net.backward(loss_fn.backward())
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g).all() for _, _, g in net.parameters())
