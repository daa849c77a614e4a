"""Lesson 4 - The residual block, the option-A shortcut, and how the identity carries the gradient.

What you will learn
  * the block H = ReLU(f(x) + shortcut(x)) with branch f = conv-BN-ReLU-conv-BN;
  * the paper's parameter-free "option A" shortcut: keep every 2nd pixel, append zero
    channels (its backward is exercise 05, to do after this lesson); and the authors' later
    version (February 2017), which averages each 2x2 window instead
    (Shortcut(..., downsample="avg"), ResNet(shortcut="avg"), --shortcut avg);
  * why shortcuts matter: the gradient reaches a block's input by two paths, the shortcut and
    the branch (the block's backward is exercise 06). In both networks the gradient at the
    input is a product of one factor per block, so its size changes exponentially with depth;
    without shortcuts each factor is a whole block's Jacobian, with them it is (identity +
    the branch's Jacobian), much closer to 1. Measured for depths 8 ... 110: both grow, at
    very different rates;
  * why the plain network's gradient EXPLODES here, where the paper speaks of vanishing
    gradients: batch norm in training mode divides the gradient by the batch std of its
    input, sqrt(1 - 1/pi) = 0.83 behind a He-initialised convolution of ReLU outputs -
    derived, then measured layer by layer and against the same network with BN in eval mode.

Run
  python lessons/04_residual_block.py
  python lessons/04_residual_block.py --quick    # depths up to 32, one seed, small images
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
findings = []  # mechanics: (claim, number, criterion, supported?)
claims = []    # the paper's claims (and the ResNet premise it builds on): (..., supported?, what it teaches)

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

# What the shortcut sends back in the backward pass, and what becomes of the gradient that
# arrives at its zero channels, is exercise 05 (`python lessons/exercises/05_shortcut.py`):
# derive it there, after this lesson. Section 2 checks the whole block's backward, this
# shortcut included, against central differences.
avg = Shortcut(16, 32, stride=2, downsample="avg")
s_avg = avg.forward(x)
avg.clear_cache()
# the window's mean in float64; float32 may differ by the rounding of a 4-term sum and a division
window = x[:, :, :2, :2].astype(np.float64)
same = rounding_error_ratio(s_avg[:, :16, 0, 0], window.mean(axis=(2, 3)), abs(window).mean(axis=(2, 3)), 5) <= 1
small_avg = Shortcut(2, 4, stride=2, downsample="avg")
x64 = xp.asarray(rng.standard_normal((2, 2, 4, 4)))    # float64, for the gradient check
g64 = xp.asarray(rng.standard_normal((2, 4, 2, 2)))
small_avg.forward(x64)
avg_err = relative_error(small_avg.backward(g64), numerical_gradient(lambda: small_avg.forward(x64), x64, g64))
small_avg.clear_cache()
print(f"the 2017 version, downsample='avg': output pixel (0, 0) is the mean of the 2x2 window: "
      f"{same} (to float32 rounding); its backward matches central differences to {avg_err:.0e} (float64).")
findings.append(("downsample='avg': the window's mean; its backward = central differences",
                 f"{same}, {avg_err:.0e}", "mean to rounding, < 1e-6", bool(same) and avg_err < 1e-6))

# %% [markdown]
# ## 2. The block's backward, gradient-checked (float64)
#
# The gradient after the final ReLU goes back through both terms of the sum, the shortcut and
# the branch. How the two combine into dx is exercise 06 (`python lessons/exercises/06_gated_block.py`,
# with stochastic depth's gate): derive it there before reading ResidualBlock.backward. Here
# minisd's block is checked against central differences.

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
# its log-size is a SUM over layers: it grows (or shrinks) exponentially with depth. Here it
# grows - not the "vanishing gradients" the paper speaks of; section 5 derives and measures
# why, and what the paper means. With shortcuts a block maps g to g + f'(g): the factor per
# block is (identity + branch Jacobian). That is still a product over blocks - the size
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


def gradient_profile(kind, depth, seed, x, y, bn_training=True):
    """One forward/backward; returns mean |gradient| at the input of every block, top first,
    then at the image. The backward loop is ResNet.backward's, unrolled to look inside.
    ``bn_training=False`` (plain net only): batch norm in eval mode, on its running statistics."""
    loss_fn = SoftmaxCrossEntropy()
    if kind == "plain":
        parts = plain_net(depth, seed)
        for p in parts:
            p.train(bn_training)
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
per_layer_growth = lambda g: g ** (1 / (d1 - d0))
print(f"from depth {d0} to {d1}: plain x{g_plain:.2g} (x{per_layer_growth(g_plain):.3f} per added layer), "
      f"ResNet x{g_res:.2g} (x{per_layer_growth(g_res):.3f} per added layer).")
change_plain, change_res = abs(np.log(g_plain)), abs(np.log(g_res))
runs_away = change_plain > np.log(10) and change_plain > 2 * change_res
claims.append((f"without shortcuts the input gradient compounds faster (depth {d0} -> {d1}; the ResNet premise)",
               f"plain x{g_plain:.2g}, ResNet x{g_res:.2g}", "plain > 10x and > twice ResNet's log-change",
               runs_away, "the identity path keeps the gradient's size from being a product of whole blocks' gains"
               if runs_away else "with few depths, small images and one seed the effect can hide in noise"))
vanishes = "yes" if g_plain < 0.1 else "no: the opposite holds" if g_plain > 10 else "not shown"
claims.append((f"a deep plain net's gradient vanishes (the paper's 'vanishing gradients'; depth {d0} -> {d1})",
               f"plain x{g_plain:.2g}", "shrinks > 10x", vanishes,
               {"yes": "the gradient reaching the first layers shrinks with depth, as the paper says",
                "no: the opposite holds": "with He init and training-mode BN it explodes (section 5): what hurts a "
                                          "plain net is the compounding, in either direction",
                "not shown": "the plain net's gradient changed less than 10x over these depths"}[vanishes]))
if runs_away:
    print(f"The plain net's gradient {'grew' if g_plain > 1 else 'shrank'} by more than a factor of 10: a product of")
    print("per-layer gains compounds with depth.")
    if change_res > np.log(2):
        print(f"The ResNet's gradient {'grew' if g_res > 1 else 'shrank'} too (x{g_res:.2g}): "
              "it is also a product, of one")
        print("factor (identity + branch Jacobian) per block. But each of those factors is closer to 1,")
        print(f"so per added layer it changed by x{per_layer_growth(g_res):.3f} against the plain net's "
              f"x{per_layer_growth(g_plain):.3f}.")
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
claims.append((f"a ResNet block's gain is closer to 1 (ResNet-{depth}; the identity carries the gradient)",
               f"x{gain(prof['resnet']):.2f} vs plain x{gain(prof['plain']):.2f}", "|log gain| smaller", closer,
               "identity + branch Jacobian stays near 1 where a whole block's Jacobian does not" if closer else
               "at this depth and batch the plain blocks' gain was no further from 1 than the ResNet's"))

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

# %% [markdown]
# ## 5. Why the plain net's gradient explodes here, and what the paper means by vanishing
#
# Follow the gradient down one layer of the plain net. Going forward a layer is conv -> BN ->
# ReLU, so going backward the gradient passes ReLU, then BN, then the conv:
#
# * ReLU passes it where its input was > 0: about half the entries, so its size (the root of
#   the sum of squares) shrinks by about 1/sqrt(2) = 0.71;
# * the conv, He-initialised (weights of variance 2/fan_in, as in the paper's code), multiplies
#   it by about sqrt(2) = 1.41: He et al. chose that variance so that conv and ReLU together
#   keep the size of a signal - so far, nothing grows;
# * BN in training mode normalises with the batch's std sigma of its input, and its backward
#   multiplies the gradient by gamma / sigma (gamma = 1 at initialisation), then removes two
#   components of it (along the constant and along xhat), which changes its size little.
#
# So everything hangs on sigma, and sigma is not 1. BN's input is a conv of ReLU outputs a,
# whose mean is E[a] = 1/sqrt(2 pi) = 0.40, not 0, and E[a^2] = 1/2. He's variance gives the
# conv output a second moment of fan_in * (2/fan_in) * E[a^2] = 1, but part of it is a constant
# offset per channel: each filter's weights sum to a random number, times E[a]. Its square
# averages fan_in * (2/fan_in) * E[a]^2 = 1/pi. BN removes that offset and divides by what is
# left: sigma^2 = 1 - 1/pi, sigma = 0.826, so every BN multiplies the gradient by 1/sigma = 1.21.
# The forward signal does not grow (each BN re-normalises it); nothing re-normalises the
# gradient, and 100 layers make 1.21^100. With BN in eval mode (at initialisation its running
# statistics are mean 0, variance 1, so it divides by 1) the same network has no 1/sigma.
# (Yang et al., 2019, "A mean field theory of batch normalization", analyse this explosion
# of the gradient in batch-normalised networks in general.)
#
# What the paper means. Its introduction names, among the troubles of very deep networks,
# vanishing gradients (the gradient, multiplied layer after layer, reaches the first layers
# too small to train them) and diminishing feature reuse (the forward analogue: the input's
# features washed out by many multiplications), and lists careful initialisation and batch
# normalisation among the remedies in use. This plain net has both remedies, and the product
# overshoots upward instead. What carries over is the product: without shortcuts the gradient
# at the first layer is one factor per layer multiplied together, and any factor other than 1
# is raised to the power of the depth - below 1 it vanishes, above 1 it explodes. A residual
# block adds the identity to its factor, so part of the gradient passes every block
# unchanged whatever the branches do - and stochastic depth (lesson 5) relies on that when it
# removes branches.


# %%
def plain_layer_gains(depth, seed, x, y):
    """One forward/backward of the plain net (BN in training mode). Returns ({layer type: the
    geometric mean over the blocks' layers of |gradient out| / |gradient in|, whole-batch norms},
    the geometric mean over BN layers of their input's per-channel batch std, averaged over channels)."""
    parts = plain_net(depth, seed)
    stem, blocks, head = parts[0], parts[1:-1], parts[-1]
    layers = [layer for b in blocks for layer in b.layers]      # conv, BN, ReLU, conv, BN, ReLU, ...
    out = stem.forward(x)
    inputs = []
    for layer in layers:
        inputs.append(out)
        out = layer.forward(out)
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(head.forward(out), y)
    d = head.backward(loss_fn.backward())
    norm = lambda a: float(xp.sqrt(xp.sum(a.astype(np.float64) ** 2)))
    ratios, stds = {}, []
    for layer, inp in zip(reversed(layers), reversed(inputs)):
        d_in = layer.backward(d)
        ratios.setdefault(type(layer).__name__, []).append(norm(d_in) / norm(d))
        if isinstance(layer, BatchNorm2d):
            stds.append(float(xp.mean(xp.std(inp.astype(np.float64), axis=(0, 2, 3)))))
        d = d_in
    stem.clear_cache()
    geo = lambda v: float(np.exp(np.mean(np.log(v))))
    return {k: geo(v) for k, v in ratios.items()}, geo(stds)


section(f"5. one layer of the plain net, backward: the gain of each layer type (plain-{depth}, training mode)")
layer_gain, sigma = plain_layer_gains(depth, L.seed, xb, yb)
sigma_pred = np.sqrt(1 - 1 / np.pi)
conv_relu = layer_gain["Conv2d"] * layer_gain["ReLU"]
per_layer = conv_relu * layer_gain["BatchNorm2d"]
table(["layer (backward)", "gain in |gradient|", "expected"],
      [["ReLU", layer_gain["ReLU"], "1/sqrt(2) = 0.71: half the entries pass"],
       ["Conv2d (He init)", layer_gain["Conv2d"], "sqrt(2) = 1.41"],
       ["BatchNorm2d (training)", layer_gain["BatchNorm2d"], f"1/sigma = {1 / sigma:.3f} (sigma measured)"],
       ["one whole layer", per_layer, f"1/sqrt(1 - 1/pi) = {1 / sigma_pred:.3f}"]],
      ["{}", "{:.3f}", "{}"])
print(f"sigma, the batch std of a BN layer's input: {sigma:.3f}; derived: sqrt(1 - 1/pi) = {sigma_pred:.3f}")
bn_is_division = abs(layer_gain["BatchNorm2d"] * sigma - 1) < 0.05
sigma_as_derived = abs(sigma / sigma_pred - 1) < 0.05
he_keeps = 0.9 < conv_relu < 1.1
findings.append(("BN's backward (training mode) multiplies the gradient by ~1/sigma of its input",
                 f"x{layer_gain['BatchNorm2d']:.3f} vs 1/sigma = {1 / sigma:.3f}", "within 5%", bn_is_division))
findings.append(("sigma behind a He-initialised conv of ReLU outputs = sqrt(1 - 1/pi)",
                 f"{sigma:.3f} vs {sigma_pred:.3f}", "within 5%", sigma_as_derived))
findings.append(("conv and ReLU together keep the gradient's size (He init)",
                 f"x{layer_gain['Conv2d']:.2f} * x{layer_gain['ReLU']:.2f} = x{conv_relu:.2f}", "0.9 to 1.1", he_keeps))

section(f"5b. the same plain nets with BN in eval mode (no division by the batch std): depth {d0} -> {d1}")
evals = {}
for d in (d0, d1):
    vals = []
    for s in seeds:
        r = np.random.default_rng(1000 + s)             # the same batches as section 3
        xe = xp.asarray(r.standard_normal((n_img, 3, size, size)).astype(np.float32))
        ye = xp.asarray(r.integers(0, 10, n_img))
        vals.append(gradient_profile("plain", d, s, xe, ye, bn_training=False)[1])
    evals[d] = float(np.mean(vals))
g_eval = evals[d1] / evals[d0]
table(["BN mode", f"|dx| depth {d0}", f"|dx| depth {d1}", "growth", "per added layer"],
      [["training", results["plain", d0], results["plain", d1], g_plain, per_layer_growth(g_plain)],
       ["eval", evals[d0], evals[d1], g_eval, per_layer_growth(g_eval)]],
      ["{}", "{:.2e}", "{:.2e}", "x{:.2g}", "x{:.3f}"])
no_growth = g_eval < 1 < g_plain
if no_growth and bn_is_division and sigma_as_derived:
    print(f"Training-mode BN: x{per_layer_growth(g_plain):.3f} per added layer (one layer's gains above: "
          f"x{per_layer:.3f}); without the division by sigma (eval mode) the gradient shrinks instead, "
          f"x{per_layer_growth(g_eval):.3f} per layer: the explosion is BN's 1/sigma compounding.")
elif not no_growth:
    print("not shown: here the eval-mode network's gradient did not shrink while the training-mode one grew.")
findings.append(("without BN's division (eval mode) the plain net's gradient stops growing",
                 f"x{g_eval:.2g} vs training mode x{g_plain:.2g}", "eval < 1 < training", no_growth))

# %%
section("findings")
L.report_findings(mechanics=findings, claims=claims)

# %% [markdown]
# ## Summary
# * option A adds no parameters: subsample + zero channels;
# * with shortcuts, the gradient reaching a block is the gradient above it PLUS the branch's
#   contribution: one factor (identity + branch Jacobian) per block, close to 1. The size
#   still compounds with depth, but slowly (section 3 printed the rate per added layer);
#   without shortcuts each factor is a whole block's Jacobian and it runs away - here upward,
#   because BN in training mode multiplies the gradient by 1/sigma = 1/sqrt(1 - 1/pi) per
#   layer (section 5); the paper's "vanishing" is the same product with factors below 1;
# * stochastic depth (next lesson) relies on exactly this: a block with its branch removed
#   is still the identity (plus ReLU), so the network stays trainable when blocks vanish.
#
# Next, before lesson 5: exercise 05 (`python lessons/exercises/05_shortcut.py`), the option-A
# shortcut's backward, and exercise 06, the gated block of stochastic depth, which lesson 5
# then takes apart in minisd's own code.

# %%
L.try_this()
