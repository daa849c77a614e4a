"""An independent PyTorch version of the paper's CIFAR ResNet with stochastic depth.

Written from Huang et al. (2016), "Deep Networks with Stochastic Depth", and
He et al. (2016), not from minisd's code: it is the yardstick the tests hold
minisd's hand-written forward and backward passes against, the baseline of
the speed benchmark, and the network of the PyTorch peer training run.
PyTorch is *not* a dependency of minisd; only this folder and the tests that
skip without it import it.

The network (depth = 6n + 2):

    conv3x3(3 -> 16) -> BN -> ReLU
    -> n blocks of 16 channels -> n blocks of 32 (the first one strided)
    -> n blocks of 64 (the first one strided) -> global average pool -> linear

Each block is  H_l = ReLU(b_l * f_l(H_{l-1}) + id(H_{l-1}))  with
f_l = conv3x3 -> BN -> ReLU -> conv3x3 -> BN (convolutions without bias) and
id the parameter-free "option A" shortcut: keep every stride-th pixel, then
append zero channels after the existing ones. The gate b_l is one Bernoulli
draw per mini-batch with P(b_l = 1) = p_l = 1 - (l / L) (1 - p_L) ("linear")
or p_L ("uniform").

Gate semantics (eq. 2-5 of the paper):
  training, gate closed : H = ReLU(id(x))                 (f is not evaluated at all,
                                                           its BN statistics do not move)
  training, gate open   : H = ReLU(id(x) + f(x))          scale "test"  (the paper)
                          H = ReLU(id(x) + f(x) / p_l)    scale "train" (inverted)
  training, per image   : H = ReLU(id(x) + m * f(x)) with m an (N,) 0/1 mask (``block.mask``;
                          f runs on the whole batch, BN statistics included), / p_l for "train"
  eval                  : H = ReLU(id(x) + p_l * f(x))    scale "test"
                          H = ReLU(id(x) + f(x))          scale "train"

Parameter names here are this module's own (``stem.conv``, ``stages...``
would hide the block index, so blocks are a flat list ``blocks.i`` with
``conv_a``, ``bn_a``, ``conv_b``, ``bn_b``); :func:`minisd_name` maps them to
minisd's ``state_dict`` names, and :func:`load_from_minisd` copies a minisd
state into a :class:`TorchResNet`.

Import it without touching ``sys.path``::

    spec = importlib.util.spec_from_file_location("torch_resnet", "benchmarks/torch_resnet.py")
    torch_resnet = importlib.util.module_from_spec(spec); spec.loader.exec_module(torch_resnet)
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F


def survival_probs(num_blocks: int, p_last: float, rule: str = "linear") -> list:
    """p_l for l = 1..L: linear decay from the input (p_0 = 1) to p_L, or uniform p_L."""
    if rule == "linear":
        return [1.0 - (l / num_blocks) * (1.0 - p_last) for l in range(1, num_blocks + 1)]
    if rule == "uniform":
        return [float(p_last)] * num_blocks
    raise ValueError(f"unknown survival rule {rule!r}")


def option_a_shortcut(x: torch.Tensor, out_channels: int, stride: int, downsample: str = "subsample") -> torch.Tensor:
    """Identity, or: downsample by ``stride`` and append zero channels (He et al.'s option A).

    ``downsample``: "subsample" keeps every stride-th pixel (the paper's runs); "avg" averages
    each stride x stride window (the authors' 2017 code; partial windows at an odd border
    average the pixels they have).
    """
    if stride != 1 and downsample == "avg":
        x = F.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
    elif stride != 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra:
        # F.pad's last pair pads dim 1 (channels): (0 before, extra after)
        x = F.pad(x, (0, 0, 0, 0, 0, extra))
    return x


class StochasticBlock(nn.Module):
    """Basic residual block whose residual branch is skipped when ``gate`` is False (training only)."""

    def __init__(self, cin: int, cout: int, stride: int, p: float, scale: str = "test"):
        super().__init__()
        if scale not in ("test", "train"):
            raise ValueError(f"scale must be 'test' or 'train', got {scale!r}")
        self.cout, self.stride, self.p, self.scale = cout, stride, float(p), scale
        self.gate = True
        self.mask = None  # per-image mode: (N,) bools; the branch then runs on the whole batch
        self.conv_a = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv_b = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def residual(self, x):
        return self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x)))))

    def forward(self, x):
        skip = option_a_shortcut(x, self.cout, self.stride)
        if self.training:
            if self.mask is not None:  # one draw per image: nothing can be skipped
                r = self.residual(x) * torch.as_tensor(self.mask, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
            elif not self.gate:
                return F.relu(skip)
            else:
                r = self.residual(x)
            return F.relu(skip + (r if self.scale == "test" else r / self.p))
        r = self.residual(x)
        return F.relu(skip + (self.p * r if self.scale == "test" else r))


class TorchResNet(nn.Module):
    """CIFAR ResNet of ``depth`` = 6n + 2 layers with stochastic depth (batch-wise gates).

    ``blocks[i].gate`` decides whether block i's branch runs in training mode;
    :meth:`set_gates` / :meth:`sample_gates` set them all. With
    ``channels_last=True`` the weights and every input use the NHWC memory layout.
    """

    def __init__(self, depth: int = 110, num_classes: int = 10, p_last: float = 0.5,
                 rule: str = "linear", scale: str = "test", channels_last: bool = False,
                 widths=(16, 32, 64), in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        probs = survival_probs(3 * n, p_last, rule)
        self.depth, self.p_last, self.rule, self.scale = depth, p_last, rule, scale
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5, momentum=0.1)
        blocks, cin = [], widths[0]
        for s, w in enumerate(widths):
            for j in range(n):
                blocks.append(StochasticBlock(cin, w, 2 if (s > 0 and j == 0) else 1,
                                              probs[len(blocks)], scale))
                cin = w
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, num_classes)
        # initialisation of the paper's (fb.resnet.torch) code: He normal, fan_out
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / k))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.channels_last = False
        if channels_last:
            self.use_channels_last()

    def use_channels_last(self, on: bool = True):
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def set_gates(self, gates):
        gates = list(gates)
        if len(gates) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} gates, got {len(gates)}")
        for b, g in zip(self.blocks, gates):
            b.gate = bool(g)

    def sample_gates(self, generator: torch.Generator | None = None):
        """One Bernoulli draw per block: open with probability p_l. Returns the gates."""
        u = torch.rand(len(self.blocks), generator=generator)
        gates = [bool(u[i] < b.p) for i, b in enumerate(self.blocks)]
        self.set_gates(gates)
        return gates

    def set_masks(self, masks):
        """Per-image mode: one (N,) 0/1 mask per block (``None`` entries: back to the batch gate)."""
        masks = list(masks)
        if len(masks) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} masks, got {len(masks)}")
        for b, m in zip(self.blocks, masks):
            b.mask = m

    def gates(self):
        return [b.gate for b in self.blocks]

    @property
    def survival_probs(self):
        return [b.p for b in self.blocks]

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = F.relu(self.bn1(self.conv1(x)))
        for b in self.blocks:
            h = b(h)
        return self.fc(h.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------
# names: this module's <-> minisd's state_dict
# ---------------------------------------------------------------------------

_BRANCH_INDEX = {"conv_a": "0", "bn_a": "1", "conv_b": "3", "bn_b": "4"}
_BRANCH_NAME = {v: k for k, v in _BRANCH_INDEX.items()}
_SKIP = ("num_batches_tracked",)


def minisd_name(torch_name: str) -> str:
    """``blocks.3.conv_a.weight`` -> ``blocks.3.branch.0.weight``; stem and fc names are shared."""
    m = re.fullmatch(r"blocks\.(\d+)\.(conv_a|bn_a|conv_b|bn_b)\.(\w+)", torch_name)
    if m:
        return f"blocks.{m.group(1)}.branch.{_BRANCH_INDEX[m.group(2)]}.{m.group(3)}"
    return torch_name


def torch_name(minisd_key: str) -> str:
    """The inverse of :func:`minisd_name`."""
    m = re.fullmatch(r"blocks\.(\d+)\.branch\.(\d)\.(\w+)", minisd_key)
    if m:
        return f"blocks.{m.group(1)}.{_BRANCH_NAME[m.group(2)]}.{m.group(3)}"
    return minisd_key


def load_from_minisd(net: TorchResNet, state: dict, strict: bool = True) -> TorchResNet:
    """Copy minisd ``state_dict`` arrays (parameters and BN running stats) into ``net`` by name.

    Values are cast to each tensor's dtype and keep its memory format. With
    ``strict``, every tensor of ``net`` (except ``num_batches_tracked``) must be
    filled and every key of ``state`` used, with matching shapes.
    """
    own = {k: v for k, v in net.state_dict(keep_vars=True).items() if not k.endswith(_SKIP)}
    wanted = {minisd_name(k): k for k in own}
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in wanted]
    if strict and (missing or unexpected):
        raise KeyError(f"minisd state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for mkey, tkey in wanted.items():
            if mkey not in state:
                continue
            dst = own[tkey]
            src = torch.as_tensor(state[mkey])
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"{mkey}: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))
    return net


def minisd_state(net: TorchResNet) -> dict:
    """``net``'s parameters and buffers as NumPy arrays under minisd's names."""
    return {minisd_name(k): v.detach().cpu().numpy().copy()
            for k, v in net.state_dict().items() if not k.endswith(_SKIP)}


def minisd_grads(net: TorchResNet) -> dict:
    """``{minisd name: gradient as NumPy}`` (``None`` for a parameter that got no gradient)."""
    return {minisd_name(k): (None if p.grad is None else p.grad.detach().cpu().numpy().copy())
            for k, p in net.named_parameters()}
