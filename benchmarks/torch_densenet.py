"""An independent PyTorch version of the CIFAR DenseNet (Huang, Liu, van der Maaten, Weinberger,
"Densely Connected Convolutional Networks", CVPR 2017), written from the paper and the authors'
Torch code (liuzhuang13/DenseNet, models/densenet.lua), not from minisd's: the yardstick the
tests hold minisd's hand-written DenseNet against. PyTorch is not a dependency of minisd.

    conv3x3(3 -> 2k with bottlenecks, 16 without), no bias
    3 dense blocks of n layers, joined by transitions: BN -> ReLU -> conv1x1 (C -> floor(theta C)) -> avgpool 2x2
    BN -> ReLU -> global average pool -> linear

A dense layer is BN -> ReLU -> conv3x3 (k maps), or with bottlenecks BN -> ReLU -> conv1x1 (4k)
-> BN -> ReLU -> conv3x3 (k); its output is cat(input, new maps) along the channels (the input
first, as densenet.lua's nn.Concat(2) of nn.Identity and the layer). n = (depth - 4) / 6 with
bottlenecks, (depth - 4) / 3 without. The module names equal minisd's state_dict names
(conv1, block1.layers.0.bn1, ..., trans1.conv, ..., bn, fc), so ``load_state_dict`` of a minisd
state (plus PyTorch's num_batches_tracked) is a plain copy.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DenseLayer(nn.Module):
    def __init__(self, channels, growth_rate, bottleneck):
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv1 = nn.Conv2d(channels, 4 * growth_rate, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(4 * growth_rate)
            self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)
        else:
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv1 = nn.Conv2d(channels, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        if self.bottleneck:
            h = self.conv2(F.relu(self.bn2(h)))
        return torch.cat([x, h], dim=1)


class DenseBlock(nn.Module):
    def __init__(self, channels, n, growth_rate, bottleneck):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(channels + i * growth_rate, growth_rate, bottleneck) for i in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Transition(nn.Module):
    def __init__(self, channels, out_channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, out_channels, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class TorchDenseNet(nn.Module):
    def __init__(self, depth=100, growth_rate=12, bottleneck=True, compression=0.5, num_classes=10):
        super().__init__()
        n = (depth - 4) // (6 if bottleneck else 3)
        c = 2 * growth_rate if bottleneck else 16
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        for stage in (1, 2, 3):
            setattr(self, f"block{stage}", DenseBlock(c, n, growth_rate, bottleneck))
            c += n * growth_rate
            if stage < 3:
                out = int(math.floor(compression * c))
                setattr(self, f"trans{stage}", Transition(c, out))
                c = out
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        x = self.block3(x)
        x = F.relu(self.bn(x))
        return self.fc(x.mean(dim=(2, 3)))


def load_from_minisd(net, state):
    """Copy a minisd DenseNet ``state_dict`` (NumPy arrays) into ``net`` (same names)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"minisd state lacks {missing[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(torch.as_tensor(v, dtype=own[k].dtype))
    return net
