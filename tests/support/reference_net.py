"""An independent NumPy forward pass of the paper's CIFAR ResNet, from its definition.

Written without minisd's layers or functional module (no im2col, no caches),
reading weights by name from a minisd ``state_dict``. Used to check the
network's logits for fixed gate patterns in training and eval mode.
"""
import numpy as np


def conv3x3(x, w, stride):
    N, C, H, W = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    out = np.zeros((N, w.shape[0], Ho, Wo))
    for a in range(3):
        for b in range(3):
            patch = xpad[:, :, a:a + stride * (Ho - 1) + 1:stride, b:b + stride * (Wo - 1) + 1:stride]
            out += np.einsum("nchw,fc->nfhw", patch, w[:, :, a, b])
    return out


def batchnorm(x, sd, prefix, training, eps=1e-5):
    gamma, beta = sd[prefix + ".weight"], sd[prefix + ".bias"]
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    else:
        mean, var = sd[prefix + ".running_mean"], sd[prefix + ".running_var"]
    xhat = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps)
    return gamma[:, None, None] * xhat + beta[:, None, None]


def relu(x):
    return np.where(x > 0, x, 0.0)


def shortcut(x, out_channels, stride, downsample="subsample"):
    if downsample == "subsample" or stride == 1:
        y = x[:, :, ::stride, ::stride]
    else:  # mean of each stride x stride window (these tests use even sizes)
        N, C, H, W = x.shape
        y = x.reshape(N, C, H // stride, stride, W // stride, stride).mean(axis=(3, 5))
    pad = np.zeros((y.shape[0], out_channels - y.shape[1]) + y.shape[2:])
    return np.concatenate([y, pad], axis=1)


def resnet_forward(x, sd, depth, gates, survival_probs, training, scale="test", widths=(16, 32, 64),
                   downsample="subsample"):
    """Logits of the CIFAR ResNet for a fixed gate pattern.

    training: closed gate -> relu(shortcut); open -> relu(shortcut + f) (or f / p for scale "train").
    eval:     relu(shortcut + p * f)   (or + f for scale "train").
    """
    n = (depth - 2) // 6
    out = relu(batchnorm(conv3x3(x, sd["conv1.weight"], 1), sd, "bn1", training))
    i = 0
    for stage, width in enumerate(widths):
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            pre = f"blocks.{i}.branch"
            s = shortcut(out, width, stride, downsample)
            p = survival_probs[i]
            if training and not gates[i]:
                out = relu(s)
            else:
                f = relu(batchnorm(conv3x3(out, sd[pre + ".0.weight"], stride), sd, pre + ".1", training))
                f = batchnorm(conv3x3(f, sd[pre + ".3.weight"], 1), sd, pre + ".4", training)
                if training:
                    factor = 1.0 if scale == "test" else 1.0 / p
                else:
                    factor = p if scale == "test" else 1.0
                out = relu(s + factor * f)
            i += 1
    pooled = out.mean(axis=(2, 3))
    return pooled @ sd["fc.weight"].T + sd["fc.bias"]
