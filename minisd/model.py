"""The paper's CIFAR ResNet with stochastic depth, its survival rules, and the CIFAR DenseNet.

    conv3x3(16) -> BN -> ReLU -> [N blocks, 16 ch] -> [N blocks, 32 ch, first with stride 2]
    -> [N blocks, 64 ch, first with stride 2] -> global average pool -> linear

Depth = 6N + 2 (two convs per block, plus the first conv and the linear
layer): 20, 32, 44, 56, 110 (the paper), ..., 1202. :class:`DenseNet` is the authors'
extension (Huang et al., CVPR 2017): the long-range paths wired in.
"""
from __future__ import annotations

import math

import numpy as np

from .blocks import DenseBlock, ResidualBlock, Transition
from .layers import BatchNorm2d, Conv2d, GlobalAvgPool, Linear, Module, ReLU

RULES = ("linear", "uniform")


def survival_probabilities(num_blocks: int, p_last: float, rule: str = "linear") -> list[float]:
    """p_l for blocks l = 1..L.

    ``linear`` (the paper's default): p_l = 1 - (l / L) (1 - p_L), from nearly 1
    for the first block down to p_L for the last; the input is always kept.
    ``uniform``: p_l = p_L for every block.
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if not 0.0 < p_last <= 1.0:
        raise ValueError(f"p_last must be in (0, 1], got {p_last!r}")
    if rule == "linear":
        return [1.0 - (l / num_blocks) * (1.0 - p_last) for l in range(1, num_blocks + 1)]
    if rule == "uniform":
        return [float(p_last)] * num_blocks
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def expected_blocks(num_blocks: int, p_last: float, rule: str = "linear") -> float:
    """E[number of blocks that run] = sum of p_l. Linear, p_L = 0.5: (3L - 1) / 4."""
    return float(sum(survival_probabilities(num_blocks, p_last, rule)))


def check_depth(depth) -> int:
    """The blocks per stage N of a ResNet of ``depth`` = 6N + 2 layers; one ``ValueError`` line otherwise.

    The one home of the depth rule: :class:`ResNet` and the command lines call it.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6N+2 with N >= 1 (8, 14, 20, 26, 32, ..., 56, 110, ..., 1202), "
                         f"got {depth!r}")
    return (int(depth) - 2) // 6


class ResNet(Module):
    """CIFAR ResNet of ``depth`` = 6N+2 layers with stochastic depth.

    forward: (N, 3, H, W) float -> logits (N, num_classes); backward: dlogits -> dx.
    ``blocks`` is the list of the 3N residual blocks in order; block l (1-based)
    has survival probability p_l from :func:`survival_probabilities`.
    ``p_last=1`` gives the plain ResNet. ``seed`` makes the initial weights reproducible.
    ``shortcut``: ``"subsample"`` (the paper's 2016 runs, default) or ``"avg"`` (the
    authors' 2017 code), see :class:`~minisd.layers.Shortcut`.
    """

    def __init__(self, depth=110, num_classes=10, p_last=0.5, rule="linear", dtype=np.float32,
                 scale="test", mode="batch", in_channels=3, widths=(16, 32, 64), seed=None,
                 shortcut="subsample"):
        super().__init__()
        n = check_depth(depth)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.depth, self.num_classes, self.p_last, self.rule = depth, num_classes, p_last, rule
        self.downsample = shortcut  # how the shortcuts downsample: "subsample" or "avg"
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        probs = survival_probabilities(3 * n, p_last, rule)

        self.conv1 = Conv2d(in_channels, widths[0], 3, padding=1, bias=False, dtype=dtype, rng=rng)
        self.bn1 = BatchNorm2d(widths[0], dtype=dtype)
        self.relu = ReLU()
        blocks, channels = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResidualBlock(channels, width, stride, probs[len(blocks)], dtype=dtype,
                                            scale=scale, mode=mode, rng=rng, shortcut=shortcut))
                channels = width
        self.blocks = blocks
        self.pool = GlobalAvgPool()
        self.fc = Linear(channels, num_classes, dtype=dtype, rng=rng)
        self.assign_names()
        self.flatten_parameters()  # one flat weight array, one flat gradient: one SGD update, one zero_grad

    @property
    def survival_probs(self) -> list[float]:
        return [b.survival_prob for b in self.blocks]

    def expected_blocks(self) -> float:
        """E[number of blocks that run per step] for this network: :func:`expected_blocks`."""
        return expected_blocks(len(self.blocks), self.p_last, self.rule)

    def sample_gates(self, rng, batch_size=None):
        """Draw each block's gate: open with probability p_l (one draw per mini-batch).

        ``rng`` is a NumPy Generator (gates are decided on the CPU). In sample mode
        each block draws ``batch_size`` per-image values instead.
        Returns the gates as a list of bools (batch mode) or masks (sample mode).
        """
        drawn = []
        for block in self.blocks:
            if block.mode == "sample":
                if batch_size is None:
                    raise ValueError("sample mode draws one gate per image: pass batch_size")
                block.mask = rng.random(batch_size) < block.survival_prob
                drawn.append(block.mask)
            else:
                block.gate = bool(rng.random() < block.survival_prob)
                drawn.append(block.gate)
        return drawn

    def set_gates(self, gates):
        """Set every block's gate from a sequence of bools (for tests and lessons)."""
        gates = list(gates)
        if len(gates) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} gates, got {len(gates)}")
        for block, g in zip(self.blocks, gates):
            block.gate = bool(g)

    def open_all_gates(self):
        self.set_gates([True] * len(self.blocks))

    def gates(self) -> list[bool]:
        return [b.gate for b in self.blocks]

    def forward(self, x):
        self._check_input(x, 4, self.conv1.in_channels, like=self.conv1.params["weight"])
        out = self.relu.forward(self.bn1.forward(self.conv1.forward(x)))
        for block in self.blocks:
            out = block.forward(out)
        return self.fc.forward(self.pool.forward(out))

    def backward(self, dlogits):
        dout = self.pool.backward(self.fc.backward(dlogits))
        for block in reversed(self.blocks):
            dout = block.backward(dout)
        return self.conv1.backward(self.bn1.backward(self.relu.backward(dout)))

    def inactive_parameter_names(self) -> list[str]:
        """Names of the parameters that got no gradient in the last backward.

        These are the branch parameters of blocks whose gate was closed. The
        optimizer uses the list to decide what happens to a dropped block's
        weights (see :class:`minisd.optim.SGD`).
        """
        names = []
        for i, block in enumerate(self.blocks):
            if block.branch_ran is False:
                names += [f"blocks.{i}.{n}" for n, _, _ in block.parameters()]
        return names

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p, _ in self.parameters()))

    def __repr__(self):
        return (f"ResNet(depth={self.depth}, blocks={len(self.blocks)}, num_classes={self.num_classes}, "
                f"p_last={self.p_last}, rule={self.rule!r}, params={self.num_parameters():,})")


def check_densenet_depth(depth, bottleneck=True) -> int:
    """Layers per dense block n of a CIFAR DenseNet of ``depth``: (depth - 4) / 6 with bottlenecks
    (two convolutions a layer), (depth - 4) / 3 without; one ``ValueError`` line otherwise."""
    per = 6 if bottleneck else 3
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 4 + per or (depth - 4) % per:
        kind = "DenseNet-BC (bottleneck)" if bottleneck else "DenseNet without bottlenecks"
        raise ValueError(f"depth must be {per}n+4 with n >= 1 for a {kind} (e.g. {4 + per * 16}), got {depth!r}")
    return (int(depth) - 4) // per


class DenseNet(Module):
    """The CIFAR DenseNet (Huang, Liu, van der Maaten, Weinberger, CVPR 2017).

        conv3x3 (2k channels with bottlenecks, 16 without) -> dense block -> transition
        -> dense block -> transition -> dense block -> BN -> ReLU -> global average pool -> linear

    A dense layer adds ``growth_rate`` (k) maps to its input (:class:`~minisd.blocks.DenseLayer`);
    a transition compresses to floor(compression * C) channels and halves the size
    (:class:`~minisd.blocks.Transition`). ``bottleneck=True, compression=0.5`` is DenseNet-BC;
    the paper's plain DenseNet is ``bottleneck=False, compression=1``. No convolution has a bias.
    (The authors' code starts with 2k channels in both kinds; this follows the paper's text.)
    forward: (N, 3, 32, 32) -> logits (N, num_classes). Every layer runs every step: there are
    no gates (``sample_gates`` says so), so the training loop treats it like a constant-depth net.
    """

    def __init__(self, depth=100, growth_rate=12, bottleneck=True, compression=0.5, num_classes=10,
                 dtype=np.float32, rng=None):
        super().__init__()
        n = check_densenet_depth(depth, bottleneck)
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        if growth_rate < 1 or num_classes < 1:
            raise ValueError(f"growth_rate and num_classes must be >= 1, got {growth_rate}, {num_classes}")
        self.depth, self.growth_rate, self.bottleneck, self.compression = depth, growth_rate, bottleneck, compression
        self.num_classes, self.dtype = num_classes, np.dtype(dtype)
        rng = rng if rng is not None else np.random.default_rng()
        channels = 2 * growth_rate if bottleneck else 16
        self.conv1 = Conv2d(3, channels, 3, padding=1, bias=False, dtype=dtype, rng=rng)
        for stage in (1, 2, 3):  # attributes in forward order: parameters() follows it
            block = DenseBlock(channels, n, growth_rate, bottleneck, dtype, rng)
            setattr(self, f"block{stage}", block)
            channels = block.out_channels
            if stage < 3:
                trans = Transition(channels, int(math.floor(compression * channels)), dtype, rng)
                setattr(self, f"trans{stage}", trans)
                channels = trans.out_channels
        self.bn, self.relu, self.pool = BatchNorm2d(channels, dtype=dtype), ReLU(), GlobalAvgPool()
        self.fc = Linear(channels, num_classes, dtype=dtype, rng=rng)
        self._init_as_the_authors(rng)
        self.assign_names()
        self.flatten_parameters()

    def _init_as_the_authors(self, rng):
        """The initialisation of the authors' ``models/densenet.lua`` ("following ResNet"): every
        convolution's weight ~ N(0, 2 / (k * k * out_channels)), fan-out (where :class:`Conv2d`
        draws with fan-in, as the stochastic-depth code does), and the linear layer's bias zero
        (its weight keeps Torch's uniform +-1/sqrt(in)); batch norm 1 and 0, as everywhere."""
        for m in self.modules():
            if isinstance(m, Conv2d):
                w = m.params["weight"]
                out_channels, _, kh, kw = w.shape
                w[...] = rng.standard_normal(w.shape) * math.sqrt(2.0 / (kh * kw * out_channels))
        self.fc.params["bias"][...] = 0

    def stages(self):
        return [self.conv1, self.block1, self.trans1, self.block2, self.trans2, self.block3,
                self.bn, self.relu, self.pool, self.fc]

    def forward(self, x):
        self._check_input(x, 4, 3, like=self.conv1.params["weight"])
        for m in self.stages():
            x = m.forward(x)
        return x

    def backward(self, dlogits):
        for m in reversed(self.stages()):
            dlogits = m.backward(dlogits)
        return dlogits

    # -- what the training loop asks of a network --------------------------------

    @property
    def blocks(self):
        """The dense layers, in order (they all run)."""
        return self.block1.layers + self.block2.layers + self.block3.layers

    def sample_gates(self, rng, batch_size=None):
        """No gates: every layer runs (nothing is drawn from ``rng``). Returns one open gate per layer."""
        return [True] * len(self.blocks)

    def expected_blocks(self) -> float:
        return float(len(self.blocks))

    def inactive_parameter_names(self) -> list[str]:
        return []

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p, _ in self.parameters()))

    def __repr__(self):
        kind = "DenseNet-BC" if self.bottleneck else "DenseNet"
        return (f"{kind}(depth={self.depth}, growth_rate={self.growth_rate}, compression={self.compression}, "
                f"num_classes={self.num_classes}, params={self.num_parameters():,})")
