"""minisd: Deep Networks with Stochastic Depth, from scratch, with manual backprop.

Data flows one way: data -> model -> loss -> backward -> optimizer -> metrics.
"""
from .backend import get_xp, gpu_available, make_rng, resolve_device, to_device, to_numpy
from .gradcheck import numerical_gradient, relative_error
from .layers import (AvgPool2d, BatchNorm2d, Conv2d, GlobalAvgPool, Linear, Module, ReLU, Sequential,
                     Shortcut, SoftmaxCrossEntropy, no_grad)
from .blocks import DenseBlock, DenseLayer, ResidualBlock, Transition
from .model import DenseNet, ResNet, expected_blocks, survival_probabilities
from .optim import SGD
from .fast.switch import reference
from .tracing import trace

__version__ = "0.1.0"
