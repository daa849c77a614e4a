"""The residual block with a stochastic-depth gate.

    H = ReLU(b * f(x) + shortcut(x))

f is the branch conv3x3 -> BN -> ReLU -> conv3x3 -> BN, the shortcut is the
parameter-free option A, and b is the gate: in training a Bernoulli draw with
P(b = 1) = survival_prob, made once per mini-batch (``ResNet.sample_gates``).

The heart of stochastic depth is one ``if``, the same in forward and backward
(the paper's code: "only compute convolutional output when gate is open"):

    forward:   if branch runs:  total = shortcut(x) + scale * f(x)
               else:            total = shortcut(x)            # f is not called
    backward:  if branch ran:   dx = shortcut'(dtotal) + f'(scale * dtotal)
               else:            dx = shortcut'(dtotal)         # f' is not called

A closed gate is not a multiplication by zero: the branch's layers are never
called, cache nothing, add nothing to their gradients, and their batch-norm
running statistics do not move. At test time every branch runs, scaled by
survival_prob (the paper's eq. 5), which is its expected contribution.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .backend import get_xp
from .fast import switch
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Module, ReLU, Sequential, Shortcut, grad_enabled

SCALES = ("test", "train")
MODES = ("batch", "sample")


class ResidualBlock(Module):
    """A CIFAR ResNet basic block whose branch can be dropped.

    forward: (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride))

    Attributes:
      gate (bool): in ``mode="batch"`` training, whether the branch runs for this mini-batch.
      survival_prob (float): p_l, the probability that the gate is open.
      scale: ``"test"`` (the paper): a surviving branch is added as is in training and
        multiplied by p_l at test time. ``"train"`` (inverted, as torchvision and timm):
        divided by p_l in training, as is at test time. Both have the same expectation.
      mode: ``"batch"`` (the paper): one gate per block per mini-batch, the only mode that
        can skip work. ``"sample"``: one draw per image (``mask``); the branch must then run
        on the whole batch and the dropped images are multiplied by zero. Nothing is saved.
      shortcut: how the option-A shortcut downsamples, ``"subsample"`` or ``"avg"``
        (see :class:`~minisd.layers.Shortcut`).
    """

    def __init__(self, in_channels, out_channels, stride=1, survival_prob=1.0, dtype=np.float32,
                 scale="test", mode="batch", rng=None, shortcut="subsample"):
        super().__init__()
        if not 0.0 < survival_prob <= 1.0:
            raise ValueError(f"ResidualBlock: survival_prob must be in (0, 1], got {survival_prob!r}")
        if scale not in SCALES:
            raise ValueError(f"ResidualBlock: scale must be one of {SCALES}, got {scale!r}")
        if mode not in MODES:
            raise ValueError(f"ResidualBlock: mode must be one of {MODES}, got {mode!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.survival_prob, self.scale, self.mode = survival_prob, scale, mode
        self.gate = True   # batch mode: does the branch run for this mini-batch?
        self.mask = None   # sample mode: (N,) bools, one draw per image
        rng = rng if rng is not None else np.random.default_rng()
        self.shortcut = Shortcut(in_channels, out_channels, stride, downsample=shortcut)
        self.branch = Sequential(
            Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype, rng=rng),
            BatchNorm2d(out_channels, dtype=dtype),
            ReLU(),
            Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False, dtype=dtype, rng=rng),
            BatchNorm2d(out_channels, dtype=dtype),
        )
        self.relu = ReLU()
        self.branch_ran = None  # what forward decided, so backward mirrors it exactly

    # -- the gate --------------------------------------------------------------

    def branch_runs(self) -> bool:
        """The branch runs at test time always, in training when the gate is open.

        In sample mode it always runs: a per-image mask cannot skip any work.
        """
        return (not self.training) or self.mode == "sample" or self.gate

    def scale_for_branch(self, xp, batch_size):
        """The factor the branch output is multiplied by before the sum.

        Training: 1 ("test" scale) or 1/p ("train" scale), times the mask in sample mode.
        Test: p ("test" scale) or 1 ("train" scale).
        Returns a Python float, or an (N, 1, 1, 1) array in sample mode.
        """
        p = self.survival_prob
        if not self.training:
            return p if self.scale == "test" else 1.0
        factor = 1.0 if self.scale == "test" else 1.0 / p
        if self.mode == "sample":
            if self.mask is None or len(self.mask) != batch_size:
                raise RuntimeError(f"{self._label()}: sample mode needs a mask of {batch_size} draws; "
                                   "call net.sample_gates(rng, batch_size) before forward")
            return xp.asarray(self.mask, dtype=self.branch[0].params["weight"].dtype).reshape(-1, 1, 1, 1) * factor
        return factor

    # -- forward and backward: one symmetric ``if`` -----------------------------

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        xp = get_xp(x)
        total = self.shortcut.forward(x)
        self.branch_ran = self.branch_runs()
        scale = None
        if self.branch_ran:
            scale = self.scale_for_branch(xp, x.shape[0])
            total = total + _scaled(self.branch.forward(x), scale)
        else:
            # Gate closed: the branch is not called. Drop anything it still
            # holds from an earlier call so a skipped block keeps no memory.
            self.branch.clear_cache()
        self._save_for_backward(scale)  # the branch's factor (the layers hold the arrays)
        return self.relu.forward(total)

    def backward(self, dout):
        self._check_backward()
        (scale,), self.cache = self.cache, None
        dtotal = self.relu.backward(dout)
        dx = self.shortcut.backward(dtotal)
        if self.branch_ran:
            dx = dx + self.branch.backward(_scaled(dtotal, scale))
        # else: gate was closed, the branch is not called: no work, no gradient.
        return dx

    # -- for the trace and the lessons ----------------------------------------

    @property
    def in_shape(self):
        """The shape of the last forward's input: its shortcut's (which always runs on it)."""
        return self.shortcut.in_shape

    def gate_label(self) -> str:
        """'open', 'closed', 'eval x0.50' or 'mask 61/128' for the trace table."""
        if not self.training:
            return f"eval x{self.scale_for_branch(np, 0):.2f}" if self.scale == "test" else "eval x1"
        if self.mode == "sample":
            return "none" if self.mask is None else f"mask {int(np.sum(self.mask))}/{len(self.mask)}"
        return "open" if self.gate else "closed"

    def branch_step_flops(self, in_shape) -> int:
        """Forward + backward FLOPs the branch costs for an input of ``in_shape``.

        Counted as the layers count themselves: conv 2*MACs (backward twice
        that), BN 4 per element (backward twice), ReLU 1 per element.
        """
        conv1, bn1, _, conv2, _ = self.branch.layers
        N, _, H, W = in_shape
        Ho, Wo = F.conv_output_size(H, 3, self.stride, 1), F.conv_output_size(W, 3, self.stride, 1)
        out_shape = (N, self.out_channels, Ho, Wo)
        elements = N * self.out_channels * Ho * Wo
        convs = (F.conv2d_flops(in_shape, conv1.params["weight"].shape, self.stride, 1)
                 + F.conv2d_flops(out_shape, conv2.params["weight"].shape, 1, 1))
        return 3 * convs + 3 * (2 * 4 * elements) + 2 * elements


def _scaled(x, factor):
    """x * factor, skipping the multiplication when the factor is exactly 1."""
    if isinstance(factor, float) and factor == 1.0:
        return x
    return x * factor


# ---------------------------------------------------------------------------
# DenseNet: the long-range connections made explicit
# ---------------------------------------------------------------------------
#
# Where stochastic depth makes a ResNet an implicit ensemble (a dropped block hands its input
# straight to a later one), a DenseNet wires those paths in: every layer of a dense block sees
# the concatenation of all earlier feature maps (Huang, Liu, van der Maaten, Weinberger, CVPR
# 2017; the authors' code: liuzhuang13/DenseNet, models/densenet.lua).


class DenseLayer(Module):
    """x -> cat(x, f(x)): the input first, then ``growth_rate`` new maps.

    f = BN -> ReLU -> conv3x3 (k maps), or with ``bottleneck`` BN -> ReLU -> conv1x1 (4k)
    -> BN -> ReLU -> conv3x3 (k): pre-activation, no convolution bias.
    forward: (N, in_channels, H, W) -> (N, in_channels + growth_rate, H, W)
    """

    def __init__(self, in_channels, growth_rate, bottleneck=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels, self.growth_rate, self.bottleneck = in_channels, growth_rate, bottleneck
        rng = rng if rng is not None else np.random.default_rng()
        width = 4 * growth_rate if bottleneck else growth_rate
        self.bn1, self.relu1 = BatchNorm2d(in_channels, dtype=dtype), ReLU()
        if bottleneck:
            self.conv1 = Conv2d(in_channels, width, 1, bias=False, dtype=dtype, rng=rng)
            self.bn2, self.relu2 = BatchNorm2d(width, dtype=dtype), ReLU()
            self.conv2 = Conv2d(width, growth_rate, 3, padding=1, bias=False, dtype=dtype, rng=rng)
        else:
            self.conv1 = Conv2d(in_channels, growth_rate, 3, padding=1, bias=False, dtype=dtype, rng=rng)
        self.new_maps = Sequential(*[m for _, m in self.named_children()])  # f, in forward order

    def named_children(self):
        for name in ("bn1", "relu1", "conv1", "bn2", "relu2", "conv2"):
            if name in vars(self):
                yield name, vars(self)[name]

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        new = self.new_maps.forward(x)
        out, channels = F.concat_forward(x, new)
        self._save_for_backward(channels)
        return out

    def backward(self, dout):
        self._check_backward()
        (channels,), self.cache = self.cache, None
        # A concatenation's gradient is a split. The new maps' channels go back through f; the
        # input's channels go straight back: they are the earlier layers' maps, so every earlier
        # layer receives the gradient of every later one through these direct paths.
        dx_direct, dnew = F.concat_backward(dout, channels)
        dx_through_f = self.new_maps.backward(dnew)
        return dx_direct + dx_through_f


class DenseBlock(Module):
    """``num_layers`` dense layers: (N, C, H, W) -> (N, C + num_layers * growth_rate, H, W)."""

    def __init__(self, in_channels, num_layers, growth_rate, bottleneck=True, dtype=np.float32, rng=None):
        super().__init__()
        self.layers = [DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck, dtype, rng)
                       for i in range(num_layers)]
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x):
        shared = switch.dense_storage() if self.training and grad_enabled() else None
        if shared is not None:  # the speed appendix: one buffer for all maps (minisd.fast.dense)
            out, cache = shared.block_forward(self, x)
            self._save_for_backward(shared, cache)
            return out
        self._save_for_backward(None, None)
        for layer in self.layers:  # the readable way: each layer concatenates
            x = layer.forward(x)
        return x

    def backward(self, dout):
        self._check_backward()
        (shared, cache), self.cache = self.cache, None
        if shared is not None:
            return shared.block_backward(self, dout, cache)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


class Transition(Module):
    """Between dense blocks: BN -> ReLU -> conv1x1 (C -> out_channels) -> 2x2 average pool."""

    def __init__(self, in_channels, out_channels, dtype=np.float32, rng=None):
        super().__init__()
        self.bn, self.relu = BatchNorm2d(in_channels, dtype=dtype), ReLU()
        self.conv = Conv2d(in_channels, out_channels, 1, bias=False, dtype=dtype, rng=rng)
        self.pool = AvgPool2d()
        self.out_channels = out_channels

    def forward(self, x):
        for m in (self.bn, self.relu, self.conv, self.pool):
            x = m.forward(x)
        return x

    def backward(self, dout):
        for m in (self.pool, self.conv, self.relu, self.bn):
            dout = m.backward(dout)
        return dout
