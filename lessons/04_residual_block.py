"""Lesson 4 - The residual block, the option-A shortcut, and how the identity carries the gradient.

What you will learn
  * the block H = ReLU(f(x) + shortcut(x)) with branch f = conv-BN-ReLU-conv-BN;
  * the paper's parameter-free "option A" shortcut: keep every 2nd pixel, append zero
    channels - and its backward (the gradient of the kept entries passes straight through);
    and the authors' later version (February 2017), which averages each 2x2 window instead
    (Shortcut(..., downsample="avg"), ResNet(shortcut="avg"), --shortcut avg);
  * why shortcuts matter: dx = shortcut'(g) + f'(g). In both networks the gradient at the
    input is a product of one factor per block, so its size changes exponentially with depth;
    without shortcuts each factor is a whole block's Jacobian, with them it is (identity +
    the branch's Jacobian), much closer to 1. Measured for depths 8 ... 110: both grow, at
    very different rates.

Run
  python lessons/04_residual_block.py            # 15 s on a busy 2-core CPU (2026-11-28)
  python lessons/04_residual_block.py --quick    # ~2 s
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. The profile plot shows the gradient per block at initialisation. Train both 56-layer
     networks for 20 steps (lesson 7's loop) and plot it again: does the plain net recover?
  2. Remove the ReLU after the addition (compute shortcut(x) + f(x) by hand, as in section 1),
     so the identity path carries the gradient untouched. (This is one ingredient of He et
     al.'s 2016 "pre-activation" ResNet, which also moves BN and ReLU in front of each conv.)
     How does the gradient ratio change?
  3. Option B uses a learned 1x1 convolution (stride 2) for the shortcut of the first block
     of a stage. Build one with minisd.Conv2d(16, 32, 1, stride=2) and count the parameters
     it adds to a ResNet-110; what does it do to the "clean" identity path of the gradient?
"""
# %% [markdown]
# # Lesson 4: the residual block
#
# The CIFAR ResNet is a stem (conv-BN-ReLU), 3 stages of N residual blocks (16, 32, 64
# channels; stages 2 and 3 start with a stride-2 block), global average pooling and a linear
# layer: depth 6N + 2. Each block computes
#
#     H(x) = ReLU( f(x) + shortcut(x) ),    f = conv3x3 -> BN -> ReLU -> conv3x3 -> BN.

# %%
import numpy as np

from minisd import (BatchNorm2d, Conv2d, GlobalAvgPool, Linear, ReLU, ResidualBlock, ResNet, Sequential, Shortcut,
                    SoftmaxCrossEntropy, numerical_gradient, relative_error)
from minisd.gradcheck import rounding_error_ratio
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
rng = np.random.default_rng(L.seed)
findings = []  # (claim, number, criterion, supported?)

# %% [markdown]
# ## 1. A block that changes shape, and its option-A shortcut
#
# The first block of stage 2 maps 16 channels at 32x32 to 32 channels at 16x16. Its branch
# uses a stride-2 convolution. The shortcut has no parameters: it keeps every second pixel
# (the paper's 1x1 average pooling with stride 2) and appends 16 channels of zeros.
# That is what the paper's 2016 results used. In February 2017 the authors changed their
# code to a 2x2 average ("Average pooling should be done in stride by stride window");
# minisd has both: `downsample="subsample"` (the default) and `downsample="avg"`.

# %%
section("1. ResidualBlock(16 -> 32, stride 2) and its shortcut")
block = ResidualBlock(16, 32, stride=2, rng=rng).to(L.device)
x = xp.asarray(rng.standard_normal((2, 16, 32, 32)).astype(np.float32))
s = block.shortcut.forward(x)
block.shortcut.cache = None
print(f"input {tuple(x.shape)} -> shortcut {tuple(s.shape)}, branch parameters "
      f"{sum(p.size for _, p, _ in block.branch.parameters()):,}, shortcut parameters "
      f"{sum(p.size for _, p, _ in block.shortcut.parameters())}")
subsampled, zeros = bool(xp.all(s[:, :16] == x[:, :, ::2, ::2])), bool(xp.all(s[:, 16:] == 0))
print(f"shortcut channels 0-15 equal x[:, :, ::2, ::2]: {subsampled}; channels 16-31 are all zero: {zeros}")
n_shortcut = sum(p.size for _, p, _ in block.shortcut.parameters())
findings.append(("option A: every 2nd pixel, zero channels, no parameters",
                 f"{subsampled}, {zeros}, {n_shortcut} parameters", "exact", subsampled and zeros and n_shortcut == 0))

out = block.forward(x)
block.clear_cache()
by_hand = xp.maximum(block.shortcut.forward(x) + block.branch.forward(x), 0)
block.clear_cache()
by_hand_err = relative_error(out, by_hand)
print(f"block.forward(x) = ReLU(shortcut(x) + branch(x)) computed by hand: relative error "
      f"{by_hand_err:.0e} (BN in training mode; both calls see the same batch)")
# float32: one rounding of the sum and of each layer; the layers are the same calls, so far below 1e-5
findings.append(("block.forward = ReLU(shortcut + branch)", f"{by_hand_err:.0e}", "< 1e-5 (float32)",
                 by_hand_err < 1e-5))

g = xp.ones(s.shape, dtype=s.dtype)
block.shortcut.forward(x)
dx_short = block.shortcut.backward(g)
print(f"shortcut backward of a gradient of ones: {int(dx_short.sum())} of the {dx_short.size} input "
      f"entries get 1 (the kept pixels: 1 in 4), the rest 0; the zero channels send nothing back.")
picked = int((dx_short == 1).sum()) == dx_short.size // 4 and int((dx_short == 0).sum()) == 3 * dx_short.size // 4
findings.append(("its backward: 1 to the kept pixels, 0 elsewhere", f"{int(dx_short.sum())} of {dx_short.size}",
                 "exactly 1 in 4", picked))
avg = Shortcut(16, 32, stride=2, downsample="avg")
s_avg = avg.forward(x)
dx_avg = avg.backward(g)
# the window's mean in float64; float32 may differ by the rounding of a 4-term sum and a division
window = x[:, :, :2, :2].astype(np.float64)
same = rounding_error_ratio(s_avg[:, :16, 0, 0], window.mean(axis=(2, 3)), abs(window).mean(axis=(2, 3)), 5) <= 1
print(f"the 2017 version, downsample='avg': output pixel (0, 0) is the mean of the 2x2 window: "
      f"{same} (to float32 rounding); its backward gives every input entry 1/4 "
      f"(min {float(dx_avg.min()):.2f}, max {float(dx_avg.max()):.2f}): the gradient is shared, not picked.")
shared = float(dx_avg.min()) == float(dx_avg.max()) == 0.25
findings.append(("downsample='avg': the window's mean; its backward 1/4 to each", f"{same}, {float(dx_avg.min()):.2f}"
                 f"-{float(dx_avg.max()):.2f}", "mean to rounding, all 0.25", bool(same) and shared))

# %% [markdown]
# ## 2. The block's backward, gradient-checked (float64)
#
#     dx = shortcut'(g) + f'(g),   g = dout * (H > 0)   (the gradient after the final ReLU)

# %%
section("2. gradient check of a ResidualBlock (float64, h = 1e-5)")
small = ResidualBlock(2, 4, stride=2, dtype=np.float64, rng=rng).to(L.device)
x = xp.asarray(rng.standard_normal((2, 2, 6, 6)))
dout = xp.asarray(rng.standard_normal(small.forward(x).shape))
small.zero_grad()
dx = small.backward(dout)
f = lambda: small.forward(x)
rows = [["dx", relative_error(dx, numerical_gradient(f, x, dout))]]
for name, p, grad in small.parameters():
    if name.endswith("weight") and ("branch.0" in name or "branch.3" in name or "branch.4" in name):
        rows.append([name, relative_error(grad, numerical_gradient(f, p, dout))])
small.clear_cache()
table(["gradient", "relative error"], rows, ["{}", "{:.1e}"])
worst = max(r[1] for r in rows)
print(("all below 1e-6: the block's backward is right." if worst < 1e-6 else
       f"the worst error, {worst:.1e}, is above 1e-6: the block's backward looks wrong."))
findings.append(("the block's backward (dx, weights) = central differences", f"{worst:.1e}", "< 1e-6", worst < 1e-6))

# %% [markdown]
# ## 3. Gradient at the input vs depth, with and without shortcuts
#
# The "plain" network below is built from the same minisd layers in the same order, with the
# same initialisation - only the shortcuts are missing (each block is conv-BN-ReLU-conv-BN-
# ReLU). We feed one random batch (training mode) with random labels, run one backward pass
# and measure the mean |gradient| reaching the input image, averaged over a few seeds.
#
# Without shortcuts the backward pass multiplies the gradient by one Jacobian per layer, so
# its log-size is a SUM over layers: it grows (or shrinks) exponentially with depth. With
# batch norm at initialisation it grows - a known effect (Yang et al., 2019, "A mean field
# theory of batch normalization"); without BN, or with other initialisations, it may shrink
# instead: either way it compounds. With shortcuts a block maps g to g + f'(g): the factor
# per block is (identity + branch Jacobian). That is still a product over blocks - the size
# still compounds - but each factor is close to 1, so it compounds far more slowly. The
# table reports both as a growth per added layer.


# %%
def plain_net(depth, seed, widths=(16, 32, 64)):
    """The ResNet's layers without the shortcuts: a list of Sequential "blocks"."""
    r = np.random.default_rng(seed)
    n = (depth - 2) // 6
    stem = Sequential(Conv2d(3, widths[0], 3, padding=1, bias=False, rng=r), BatchNorm2d(widths[0]), ReLU())
    blocks, c = [], widths[0]
    for stage, w in enumerate(widths):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(Sequential(Conv2d(c, w, 3, stride=stride, padding=1, bias=False, rng=r), BatchNorm2d(w),
                                     ReLU(), Conv2d(w, w, 3, padding=1, bias=False, rng=r), BatchNorm2d(w), ReLU()))
            c = w
    head = Sequential(GlobalAvgPool(), Linear(c, 10, rng=r))
    return [m.to(L.device) for m in [stem] + blocks + [head]]


def gradient_profile(kind, depth, seed, x, y):
    """One forward/backward; returns mean |gradient| at the input of every block, top first,
    then at the image. The backward loop is ResNet.backward's, unrolled to look inside."""
    loss_fn = SoftmaxCrossEntropy()
    if kind == "plain":
        parts = plain_net(depth, seed)
        out = x
        for p in parts:
            out = p.forward(out)
        loss_fn.forward(out, y)
        dout = parts[-1].backward(loss_fn.backward())
        sizes = []
        for p in reversed(parts[1:-1]):
            dout = p.backward(dout)
            sizes.append(float(xp.abs(dout).mean()))
        dx = parts[0].backward(dout)
    else:
        net = ResNet(depth, 10, p_last=1.0, seed=seed).to(L.device)
        loss_fn.forward(net.forward(x), y)
        dout = net.pool.backward(net.fc.backward(loss_fn.backward()))
        sizes = []
        for block in reversed(net.blocks):
            dout = block.backward(dout)
            sizes.append(float(xp.abs(dout).mean()))
        dx = net.conv1.backward(net.bn1.backward(net.relu.backward(dout)))
    return sizes, float(xp.abs(dx).mean())


section("3. mean |dL/dx| at the input image vs depth (one random batch, training mode)")
depths = [8, 20, 32] if L.quick else [8, 14, 20, 32, 44, 56, 110]
seeds = [L.seed] if L.quick else [L.seed, L.seed + 1, L.seed + 2]
n_img, size = (4, 16) if L.quick else (16, 32)
results = {}
for depth in depths:
    for kind in ("plain", "resnet"):
        vals = []
        for s in seeds:
            r = np.random.default_rng(1000 + s)
            xb = xp.asarray(r.standard_normal((n_img, 3, size, size)).astype(np.float32))
            yb = xp.asarray(r.integers(0, 10, n_img))
            vals.append(gradient_profile(kind, depth, s, xb, yb)[1])
        results[kind, depth] = float(np.mean(vals))
rows = [[d, results["plain", d], results["resnet", d], results["plain", d] / results["resnet", d]] for d in depths]
table(["depth", "plain |dx|", "ResNet |dx|", "plain / ResNet"], rows, ["{}", "{:.2e}", "{:.2e}", "{:.3g}"])
d0, d1 = depths[0], depths[-1]
g_plain, g_res = results["plain", d1] / results["plain", d0], results["resnet", d1] / results["resnet", d0]
per_layer = lambda g: g ** (1 / (d1 - d0))
print(f"from depth {d0} to {d1}: plain x{g_plain:.2g} (x{per_layer(g_plain):.3f} per added layer), "
      f"ResNet x{g_res:.2g} (x{per_layer(g_res):.3f} per added layer).")
change_plain, change_res = abs(np.log(g_plain)), abs(np.log(g_res))
runs_away = change_plain > np.log(10) and change_plain > 2 * change_res
findings.append((f"without shortcuts the input gradient compounds faster (depth {d0} -> {d1})",
                 f"plain x{g_plain:.2g}, ResNet x{g_res:.2g}", "plain > 10x and > twice ResNet's log-change",
                 runs_away))
if runs_away:
    print(f"The plain net's gradient {'grew' if g_plain > 1 else 'shrank'} by more than a factor of 10: a product of")
    print("per-layer gains compounds with depth.")
    if change_res > np.log(2):
        print(f"The ResNet's gradient {'grew' if g_res > 1 else 'shrank'} too (x{g_res:.2g}): it is also a product, of one")
        print("factor (identity + branch Jacobian) per block. But each of those factors is closer to 1,")
        print(f"so per added layer it changed by x{per_layer(g_res):.3f} against the plain net's x{per_layer(g_plain):.3f}.")
    else:
        print(f"The ResNet's gradient changed by less than a factor of 2 (x{g_res:.2g}): each block's factor,")
        print("identity + branch Jacobian, is close to 1.")
else:
    print("Here the plain net's gradient did NOT run away much faster than the ResNet's. With few depths,")
    print("small images and one seed (as in --quick) the effect can be hidden by noise; run without --quick")
    print("(depths up to 110, three seeds) to see it.")

# %% [markdown]
# ## 4. Inside one deep network: the gradient block by block
#
# Same measurement, but at the input of every block of one network (depth 56; 20 in quick
# mode), from the top (block L) down to block 1. On a log scale a product of equal factors
# is a straight line.

# %%
section("4. mean |gradient| at each block's input, top to bottom")
depth = 20 if L.quick else 56
r = np.random.default_rng(1000 + L.seed)
xb = xp.asarray(r.standard_normal((n_img, 3, size, size)).astype(np.float32))
yb = xp.asarray(r.integers(0, 10, n_img))
prof = {kind: gradient_profile(kind, depth, L.seed, xb, yb)[0] for kind in ("plain", "resnet")}
nb = len(prof["plain"])
show = sorted({0, nb // 3, 2 * nb // 3, nb - 1})
table(["block (from top)", "plain", "ResNet"],
      [[f"{nb - i} ({i + 1} of {nb} passed)", prof["plain"][i], prof["resnet"][i]] for i in show],
      ["{}", "{:.2e}", "{:.2e}"])
gain = lambda v: (v[-1] / v[0]) ** (1 / (len(v) - 1))
print(f"average gain per block going down: plain x{gain(prof['plain']):.2f}, ResNet x{gain(prof['resnet']):.2f}")
closer = abs(np.log(gain(prof["resnet"]))) < abs(np.log(gain(prof["plain"])))
findings.append((f"a ResNet block's gain is closer to 1 (ResNet-{depth})",
                 f"x{gain(prof['resnet']):.2f} vs plain x{gain(prof['plain']):.2f}", "|log gain| smaller", closer))

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
axes[0].semilogy(depths, [results["plain", d] for d in depths], "o-", label="plain (no shortcuts)")
axes[0].semilogy(depths, [results["resnet", d] for d in depths], "s-", label="ResNet (option-A shortcuts)")
axes[0].set_xlabel("depth (layers)")
axes[0].set_ylabel("mean |dL/dx| at the input image")
axes[0].set_title("Gradient at the input vs depth (initialisation)")
blocks_axis = np.arange(nb, 0, -1)
axes[1].semilogy(blocks_axis, prof["plain"], "o-", ms=3, label="plain")
axes[1].semilogy(blocks_axis, prof["resnet"], "s-", ms=3, label="ResNet")
axes[1].invert_xaxis()
axes[1].set_xlabel("block (backward pass runs right to left: from block L to block 1)")
axes[1].set_ylabel("mean |gradient| at the block's input")
axes[1].set_title(f"Inside a {depth}-layer network")
for ax in axes:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
L.save_figure(fig, "gradient_vs_depth.png")

# %%
section("findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * option A adds no parameters: subsample + zero channels; its backward is a copy;
# * with shortcuts, the gradient reaching a block is the gradient above it PLUS the branch's
#   contribution: one factor (identity + branch Jacobian) per block, close to 1. The size
#   still compounds with depth, but slowly (section 3 printed the rate per added layer);
#   without shortcuts each factor is a whole block's Jacobian and it runs away;
# * stochastic depth (next lesson) relies on exactly this: a block with its branch removed
#   is still the identity (plus ReLU), so the network stays trainable when blocks vanish.

# %%
L.try_this()
