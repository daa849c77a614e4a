"""A dense block in shared storage: the memory-efficient DenseNet of Pleiss et al. (2017).

The readable dense layer (:class:`minisd.blocks.DenseLayer`) concatenates: layer i copies all
earlier maps into a new array and its batch norm keeps that array for the backward, so a
block of n layers holds 1 + 2 + ... + n inputs' worth of maps - memory quadratic in n.
Here (Pleiss, Chen, Huang, Li, van der Maaten, Weinberger, "Memory-Efficient Implementation of
DenseNets", 2017) the block keeps one buffer for all its feature maps: each layer writes its k
new maps into its slice, its input is a view of the channels before it (the concatenation costs
nothing), and the first batch norm and ReLU of every layer are recomputed in the backward
from the buffer instead of kept. The backward likewise uses one
gradient buffer: each layer adds its input's gradient into the channels before it. The layers whose
arithmetic runs here through functional (bn1, relu1, conv1) are reported to a trace with
:func:`minisd.tracing.call_as`, bn1 and relu1 twice: in the forward and "recompute"d in the backward.

Kept for the backward: the buffer (linear in n), and what each layer's small tail keeps
(with bottlenecks: the BN, ReLU and conv2 after the 4k-map conv1 output).
The same arithmetic as the readable path (its functions, in another order of additions):
tests/test_densenet.py checks them equal. Chosen by :func:`minisd.fast.switch.dense_storage`.
"""
from __future__ import annotations

from .. import functional as F
from ..backend import get_xp
from ..tracing import call_as  # a trace sees each layer's call here as if the layer made it


def block_forward(block, x):
    """The dense block ``block`` on x (N, C0, H, W) -> (N, C0 + n k, H, W), in one buffer.

    Returns ``(out, cache)``; ``out`` is the buffer itself, and the cache holds nothing else."""
    N, C0, H, W = x.shape
    buf = get_xp(x).empty((N, block.out_channels, H, W), dtype=x.dtype)
    buf[:, :C0] = x
    for layer in block.layers:
        C, k = layer.in_channels, layer.growth_rate
        r1, bn_cache = _relu_bn1(layer, buf[:, :C], "forward")  # not kept: recomputed in backward
        layer.bn1.update_running_stats(F, bn_cache, N * H * W)
        if layer.bottleneck:
            h, _ = call_as(layer.conv1, "forward", F.conv1x1_forward, r1, layer.conv1.params["weight"])  # not kept
            new = layer.conv2.forward(layer.relu2.forward(layer.bn2.forward(h)))  # these keep their caches
        else:
            new, _ = call_as(layer.conv1, "forward", F.conv2d_forward, r1, layer.conv1.params["weight"], None, 1, 1)
        buf[:, C:C + k] = new
    return buf, buf


def _relu_bn1(layer, x, phase):
    """relu(bn1(x)) in training mode, and bn1's cache: the same in forward and, again, in backward
    (``phase`` "recompute")."""
    bn1 = layer.bn1
    h, cache = call_as(bn1, phase, F.batchnorm_train_forward, x, bn1.params["weight"], bn1.params["bias"], bn1.eps)
    return call_as(layer.relu1, phase, F.relu_forward, h)[0], cache


def block_backward(block, dout, cache):
    """Backward of :func:`block_forward`: dx (N, C0, H, W); the layers' gradients are added."""
    buf = cache
    dbuf = dout.copy()  # one gradient buffer: channel c collects the gradient of every layer that read it
    for layer in reversed(block.layers):
        C, k = layer.in_channels, layer.growth_rate
        r1, bn_cache = _relu_bn1(layer, buf[:, :C], "recompute")  # from the buffer: the same input as forward
        dnew = dbuf[:, C:C + k]
        if layer.bottleneck:
            dh = layer.bn2.backward(layer.relu2.backward(layer.conv2.backward(dnew)))
            dr1, dw = call_as(layer.conv1, "backward", F.conv1x1_backward, dh, (r1, layer.conv1.params["weight"]))
        else:  # conv2d_forward's cache, rebuilt around the recomputed input
            dr1, dw, _ = call_as(layer.conv1, "backward", F.conv2d_backward, dnew,
                                 (r1, layer.conv1.params["weight"], False, 1, 1))
        layer.conv1.grads["weight"] += dw
        dr1 = call_as(layer.relu1, "backward", F.relu_backward, dr1, r1)
        dx, dgamma, dbeta = call_as(layer.bn1, "backward", F.batchnorm_train_backward, dr1, bn_cache)
        layer.bn1.grads["weight"] += dgamma
        layer.bn1.grads["bias"] += dbeta
        dbuf[:, :C] += dx  # the input's gradient joins what the later layers sent straight back
    return dbuf[:, :block.layers[0].in_channels]
