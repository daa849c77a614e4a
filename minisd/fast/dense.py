"""A dense block in shared storage: the memory-efficient DenseNet of Pleiss et al. (2017).

The readable dense layer (:class:`minisd.blocks.DenseLayer`) concatenates: layer i copies all
earlier maps into a new array and its batch norm keeps that array for the backward, so a
block of n layers holds 1 + 2 + ... + n inputs' worth of maps - memory quadratic in n.
Here (Pleiss, Chen, Huang, Li, van der Maaten, Weinberger, "Memory-Efficient Implementation of
DenseNets", 2017) the block keeps one buffer for all its feature maps: each layer writes its k
new maps into its slice, its input is a view of the channels before it (the concatenation costs
nothing), and the first batch norm and ReLU of every layer are recomputed in the backward
instead of kept, from the buffer and the batch statistics. The backward likewise uses one
gradient buffer: each layer adds its input's gradient into the channels before it.

Kept for the backward: the buffer (linear in n), each layer's batch mean and 1/std, and what
the layer's small tail keeps (with bottlenecks: the 4k-map conv1 output's BN, ReLU and conv2).
The same arithmetic as the readable path (its functions, in another order of additions):
tests/test_densenet.py checks them equal. Chosen by :func:`minisd.fast.switch.dense_storage`.
"""
from __future__ import annotations

from .. import functional as F
from ..backend import get_xp


def block_forward(block, x):
    """The dense block ``block`` on x (N, C0, H, W) -> (N, C0 + n k, H, W), in one buffer.

    Returns ``(out, cache)``; ``out`` is the buffer itself."""
    xp = get_xp(x)
    N, C0, H, W = x.shape
    buf = xp.empty((N, block.out_channels, H, W), dtype=x.dtype)
    buf[:, :C0] = x
    stats = []
    for layer in block.layers:
        C, k = layer.in_channels, layer.growth_rate
        bn1 = layer.bn1
        h, cache = F.batchnorm_train_forward(buf[:, :C], bn1.params["weight"], bn1.params["bias"], bn1.eps)
        m = N * H * W
        F.batchnorm_running_average(bn1.running_mean, cache.mean, bn1.momentum)
        F.batchnorm_running_average(bn1.running_var, cache.var, bn1.momentum, m / (m - 1))
        stats.append((cache.mean, cache.inv_std, cache.var))
        h = xp.maximum(h, 0)  # relu1: not kept
        if layer.bottleneck:
            h, _ = F.conv1x1_forward(h, layer.conv1.params["weight"])  # not kept: recomputed in backward
            new = layer.conv2.forward(layer.relu2.forward(layer.bn2.forward(h)))  # these keep their caches
        else:
            new, _ = F.conv2d_forward(h, layer.conv1.params["weight"], None, 1, 1)
        buf[:, C:C + k] = new
    return buf, (buf, stats)


def _recompute_relu1(layer, x, mean, inv_std):
    """relu(bn1(x)) of the forward, again, and its BN cache: from x and the batch statistics."""
    ch = (None, slice(None), None, None)
    xhat = (x - mean[ch]) * inv_std[ch]
    out = xhat * layer.bn1.params["weight"][ch] + layer.bn1.params["bias"][ch]
    return get_xp(x).maximum(out, 0), xhat


def block_backward(block, dout, cache):
    """Backward of :func:`block_forward`: dx (N, C0, H, W); the layers' gradients are added."""
    buf, stats = cache
    dbuf = dout.copy()  # one gradient buffer: channel c collects the gradient of every layer that read it
    for layer, (mean, inv_std, var) in zip(reversed(block.layers), reversed(stats)):
        C, k = layer.in_channels, layer.growth_rate
        x = buf[:, :C]
        r1, xhat = _recompute_relu1(layer, x, mean, inv_std)
        dnew = dbuf[:, C:C + k]
        if layer.bottleneck:
            dh = layer.bn2.backward(layer.relu2.backward(layer.conv2.backward(dnew)))
            dr1, dw = F.conv1x1_backward(dh, (r1, layer.conv1.params["weight"]))
        else:
            dr1, dw, _ = F.conv2d_backward(dnew, (r1, layer.conv1.params["weight"], False, 1, 1))
        layer.conv1.grads["weight"] += dw
        dh1 = F.relu_backward(dr1, r1)
        bn_cache = F.BatchNormCache(xhat, inv_std, layer.bn1.params["weight"], mean, var)
        dx, dgamma, dbeta = F.batchnorm_train_backward(dh1, bn_cache)
        layer.bn1.grads["weight"] += dgamma
        layer.bn1.grads["bias"] += dbeta
        dbuf[:, :C] += dx  # the input's gradient joins what the later layers sent straight back
    return dbuf[:, :block.layers[0].in_channels]
