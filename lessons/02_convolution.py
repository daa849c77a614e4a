"""Lesson 2 - Convolution: from the naive loop to im2col + one matrix product, forward and backward.

What you will learn
  * the textbook convolution (one dot product per output pixel), minisd.functional.conv2d_naive_*;
  * im2col: unfold every k x k patch into a column, so the whole layer is ONE matrix product;
  * the backward pass: dW = dout @ cols^T, dcols = W^T @ dout, dx = col2im(dcols), and why
    col2im (summing overlapping patches back) is exactly the adjoint of im2col;
  * that both versions agree to rounding, that the backward is right (float64 gradient
    check), and how much faster im2col is than the loop (timed on this machine). The CPU
    fast path the network runs outside `with minisd.reference():` is lesson 14's subject.

Run
  python lessons/02_convolution.py            # ~2 s on a 2-core CPU
  python lessons/02_convolution.py --quick    # ~1 s
  (options: --device gpu, --reference, --out DIR, --seed N)

Try this
  1. Time the two versions on 8x8 images (the last stage of the CIFAR ResNet) instead of
     32x32: the naive loop has 16x fewer pixels to visit. Does the speed-up shrink? Why?
  2. im2col's columns are k*k = 9 times larger than the input. Compute that memory for a
     batch of 128 images of 16 x 32 x 32 in float32, and read conv2d_forward's docstring
     to see why minisd does not cache the columns for the backward pass.
  3. Set layer.naive = True on one Conv2d of a ResNet-20 (net.blocks[0].branch[0]) and
     time a training step as lesson 10 does: how much of the step is that one layer?
"""
# %% [markdown]
# # Lesson 2: convolution, naive and fast
#
# A 3x3 convolution with C input and F output channels computes, for every image n, output
# channel f and pixel (i, j), the dot product of the F x C x 3 x 3 kernel with the 3 x 3
# patch of the (zero-padded) input around (i, j). minisd has this twice:
# `conv2d_naive_forward/backward` (a loop over output pixels, obviously right) and
# `conv2d_forward/backward` (im2col + one matrix product for the whole batch), both in
# minisd/functional.py. The network runs the second inside
# `with minisd.reference():`; otherwise its fast twin, in minisd/fast/cpu.py on the CPU
# (minisd/fast/gpu.py on the GPU).

# %%
import numpy as np

import minisd
from minisd import Conv2d, numerical_gradient, relative_error, to_numpy
from minisd import functional as F
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
rng = np.random.default_rng(L.seed)
findings = []  # (claim, number, criterion, supported?)


def randn(*shape, dtype=np.float64):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


# %% [markdown]
# ## 1. im2col on a tiny image
#
# One 4 x 4 image with values 0..15, a 3 x 3 kernel, no padding: there are 2 x 2 output
# pixels, so im2col makes 4 columns of 9 values - each column is the patch one output pixel
# sees. The convolution is then (F x 9) @ (9 x 4): every output pixel at once.

# %%
section("1. im2col: every 3x3 patch becomes a column")
tiny = xp.arange(16, dtype=xp.float64).reshape(1, 1, 4, 4)
print("image:\n", to_numpy(tiny[0, 0]).astype(int))
cols = F.im2col(tiny, 3, stride=1, padding=0)
print(f"im2col -> shape {tuple(cols.shape)} (images, C*k*k, output pixels); the columns:")
print(to_numpy(cols[0]).astype(int))
print("Column 0 is the top-left patch (0 1 2 / 4 5 6 / 8 9 10), column 3 the bottom-right one.")
w_tiny = xp.ones((1, 1, 3, 3))
print("a 3x3 kernel of ones, as a matrix product, gives the patch sums:",
      to_numpy(w_tiny.reshape(1, 9) @ cols[0]).astype(int).tolist(),
      "= naive:", to_numpy(F.conv2d_naive_forward(tiny, w_tiny, None)[0]).astype(int).ravel().tolist())

# %% [markdown]
# ## 2. Forward: the im2col version equals the loop
#
# A small batch, padding 1 (the "same" 3x3 convolution of the ResNet) and stride 2 (the
# first convolution of stages 2 and 3). float64, so the difference is pure rounding.

# %%
section("2. forward: naive loop vs im2col, float64")
rows = []
for stride in (1, 2):
    x, w, b = randn(4, 3, 8, 8), randn(5, 3, 3, 3), randn(5)
    slow, _ = F.conv2d_naive_forward(x, w, b, stride, 1)
    unfolded, _ = F.conv2d_forward(x, w, b, stride, 1)
    rows.append([stride, str(tuple(x.shape)), str(tuple(unfolded.shape)), relative_error(slow, unfolded)])
table(["stride", "input", "output", "relative error"], rows, ["{}", "{}", "{}", "{:.1e}"])
worst_forward = max(r[3] for r in rows)
findings.append(("im2col + one matrix product = the naive loop (forward)", f"{worst_forward:.1e}", "< 1e-12",
                 worst_forward < 1e-12))

# %% [markdown]
# ## 3. Backward
#
# With cols = im2col(x) and out = W2 @ cols (W2 is the kernel as an F x (C k k) matrix):
#
#     dW2   = sum over images of dout @ cols^T      (every patch, weighted by its output's gradient)
#     dcols = W2^T @ dout                           (every patch's share of the gradient)
#     dx    = col2im(dcols)                         (patches overlap: their shares add up)
#
# col2im is the adjoint (transpose) of im2col: <im2col(x), c> = <x, col2im(c)> for all x, c.
# That identity *is* the chain rule for a linear map, so we check it first.
#
# Then the im2col backward against the naive loop and against central differences (lesson 1).

# %%
section("3a. col2im is the adjoint of im2col")
rows = []
for stride in (1, 2):
    x = randn(2, 3, 6, 6)
    cols = F.im2col(x, 3, stride, 1)
    c = randn(*cols.shape)
    back = F.col2im(c, x.shape, 3, stride, 1)
    rows.append([stride, abs(float((cols * c).sum()) - float((x * back).sum())), float(abs((cols * c).sum()))])
table(["stride", "|<im2col x,c> - <x,col2im c>|", "|<im2col x,c>|"], rows, ["{}", "{:.1e}", "{:.1e}"])
worst = max(r[1] for r in rows)
print(f"largest difference: {worst:.1e} - " + ("rounding only (float64): col2im is the adjoint of im2col."
      if worst < 1e-9 else "MORE than rounding: something is wrong."))
findings.append(("col2im is the adjoint of im2col", f"{worst:.1e}", "< 1e-9", worst < 1e-9))


section("3b. backward: im2col vs naive loop vs numerical (float64)")
rows = []
for stride, c_in, c_out in ((1, 3, 4), (1, 4, 4), (2, 3, 4)):
    x, w, b = randn(2, c_in, 6, 6), randn(c_out, c_in, 3, 3), randn(c_out)
    out, cache = F.conv2d_forward(x, w, b, stride, 1)
    dout = randn(*out.shape)
    naive = F.conv2d_naive_backward(dout, F.conv2d_naive_forward(x, w, b, stride, 1)[1])
    f = lambda: F.conv2d_forward(x, w, b, stride, 1)[0]
    num = [numerical_gradient(f, a, dout) for a in (x, w, b)]
    for name, g, naive_g, num_g in zip(("dx", "dweight", "dbias"), F.conv2d_backward(dout, cache), naive, num):
        rows.append([stride, f"{c_in} -> {c_out}", name, relative_error(g, naive_g), relative_error(g, num_g)])
table(["stride", "channels", "gradient", "vs naive", "vs numerical"], rows, ["{}", "{}", "{}", "{:.1e}", "{:.1e}"])
vs_naive, vs_num = max(r[3] for r in rows), max(r[4] for r in rows)
print(f"worst: vs naive {vs_naive:.1e}, vs numerical {vs_num:.1e}.")
if vs_naive < 1e-10 and vs_num < 1e-6:
    print("im2col's backward = naive to rounding, and both match central differences: the backward is right.")
else:
    print("LARGER than rounding / finite-difference error: the backward is wrong.")
findings.append(("the im2col backward = the naive loop", f"{vs_naive:.1e}", "< 1e-10",
                 vs_naive < 1e-10))
findings.append(("... and = central differences", f"{vs_num:.1e}", "< 1e-6", vs_num < 1e-6))

# %% [markdown]
# ## 4. How much faster?
#
# The shape of the first stage of the CIFAR ResNet: 16 -> 16 channels, 32 x 32 pixels, in
# float32 (what training uses). The loop does Ho*Wo = 1024 small products; the readable
# im2col version does one large product for the whole batch, which BLAS runs near the
# machine's peak. We time the Conv2d layer itself: `layer.naive = True` for the loop, and
# inside `with minisd.reference():` for the readable im2col. (What training runs outside
# that block, the speed appendix, is timed against the readable version in lesson 14.)

# %%
section("4. time: naive loop vs im2col (readable) (a Conv2d layer, float32)")
batch = 16 if L.quick else 128
layer = Conv2d(16, 16, 3, padding=1, bias=False, rng=rng).to(L.device)
x = xp.asarray(rng.standard_normal((batch, 16, 32, 32)).astype(np.float32))
dout = xp.asarray(rng.standard_normal((batch, 16, 32, 32)).astype(np.float32))
flops = F.conv2d_flops(x.shape, layer.params["weight"].shape, 1, 1)


def fwd():
    layer.forward(x)
    layer.cache = None


def fwd_bwd():
    layer.forward(x)
    layer.backward(dout)


def time_version(naive):
    """(forward, backward) seconds, medians of 3, in the readable mode."""
    layer.naive = naive
    with minisd.reference():
        tf = L.timeit(fwd, repeat=3)
        tb = L.timeit(fwd_bwd, repeat=3) - tf
    return tf, tb


rows, times = [], {}
for name, naive in {"naive loop": True, "im2col (readable)": False}.items():
    times[name] = tf, tb = time_version(naive)
    rows.append([name, 1e3 * tf, 1e3 * tb, flops / tf / 1e9, 2 * flops / tb / 1e9])
layer.naive = False
table(["version", "forward ms", "backward ms", "fwd GFLOP/s", "bwd GFLOP/s"], rows,
      ["{}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}"])
print(f"batch {batch} x 16 x 32 x 32, {flops / 1e6:.0f} MFLOP forward (backward: twice that).")
loop, im2col = times["naive loop"], times["im2col (readable)"]
speedups = [loop[0] / im2col[0], loop[1] / im2col[1]]
print(f"im2col vs the loop: forward {speedups[0]:.1f}x, backward {speedups[1]:.1f}x as fast (medians, one run)")
# a speed-up counts only when it is clear of timing noise (medians of 3): more than 1.2x here
findings.append(("im2col is faster than the loop (forward, backward)", f"{speedups[0]:.1f}x, {speedups[1]:.1f}x",
                 "> 1.2x both (one run)", min(speedups) > 1.2))

pyplot = plt()
fig, ax = pyplot.subplots(figsize=(6.5, 3.5))
pos, width = np.arange(2), 0.8 / len(times)
for i, (name, t) in enumerate(times.items()):
    ax.bar(pos + (i - (len(times) - 1) / 2) * width, [1e3 * v for v in t], width, label=name)
ax.set_xticks(pos, ["forward", "backward"])
ax.set_ylabel("milliseconds")
ax.set_yscale("log")
ax.set_title(f"3x3 conv, 16->16 channels, batch {batch} of 32x32 ({L.device})")
ax.legend(fontsize=8)
L.save_figure(fig, "naive_vs_im2col.png")

# %%
section("findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * a convolution is a matrix product once the patches are laid out as columns;
# * its backward is two more matrix products and a col2im, the adjoint of im2col;
# * the readable im2col version is what runs inside `minisd.reference()` (`--reference`);
#   otherwise the network runs its tested twin, minisd/fast/cpu.py on the CPU (fast_gpu.py
#   on the GPU): the same numbers, faster - lesson 14, the speed appendix, shows it;
# * minisd keeps the loop (`Conv2d.naive = True`) only to teach and to test the others.

# %%
L.try_this()
