"""Lesson 2 - Convolution: from the naive loop to im2col + one matrix product, forward and backward.

What you will learn
  * the textbook convolution (one dot product per output pixel), minisd.functional.conv2d_naive_*;
  * im2col: unfold every k x k patch into a column, so the whole layer is ONE matrix product;
  * col2im, which folds columns back onto the image (overlapping patches add up), is the
    adjoint of im2col - the property that makes it the backward of im2col;
  * that both versions agree to rounding and that the im2col backward is right (float64
    gradient check). Deriving that backward is exercise 04, to do after this lesson;
  * how much faster im2col is than the loop, timed on this machine with BLAS on one thread.
    The CPU fast path the network runs outside `with minisd.reference():` is lesson 14's.

Run
  python lessons/02_convolution.py
  python lessons/02_convolution.py --quick    # fewer images and timing rounds
  (options: --device gpu, --reference, --out DIR, --seed N)

Try this
  1. Time the two versions at batch 128 (training's batch size) instead of 16: which gain
     shrinks more, the forward's or the backward's? Time the readable backward's pieces
     (F.im2col, the np.tensordot of its weight gradient, F.col2im) to see where it goes.
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
from threadpoolctl import threadpool_limits

import minisd
from minisd import Conv2d, numerical_gradient, relative_error, to_numpy
from minisd import functional as F
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
rng = np.random.default_rng(L.seed)
findings = []  # mechanics: (claim, number, criterion, supported?); this lesson tests no claim of the paper


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
# With cols = im2col(x) and out = W2 @ cols (W2 is the kernel as an F x (C k k) matrix), the
# backward is two more matrix products and one fold of columns back onto the image, col2im.
# Which products, and why the fold is right, is exercise 04 (`lessons/exercises/04_conv_im2col.py`):
# derive them there, after this lesson. Here we only check what the derivation rests on and
# what it must give.
#
# im2col is linear in x, and col2im is its adjoint (transpose): <im2col(x), c> = <x, col2im(c)>
# for all x and c. We check that identity first, then the im2col backward against the naive
# loop and against central differences (lesson 1).

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
# float32 (what training uses), a batch of 16 images (8 in quick mode). Both versions do the
# same multiply-adds. The loop makes Ho*Wo = 1024 small products, one per output pixel; the
# readable im2col version makes one large product per image, which BLAS runs at a far higher
# rate. We time the Conv2d layer itself: `layer.naive = True` for the loop, and inside
# `with minisd.reference():` for the readable im2col. (What training runs outside that block,
# the speed appendix, is timed against the readable version in lesson 14.)
#
# BLAS is pinned to ONE thread here (threadpoolctl's `threadpool_limits`, undone when the
# block ends), so that both versions run on the same single core and the comparison measures
# the algorithm. With BLAS's default threads on a machine whose other cores are busy, a thread
# that waits for a busy core stalls the whole product: on a shared 2-core machine we have seen
# that make the im2col version several times slower than the loop - numbers that say nothing
# about im2col. (With --device gpu the pin changes nothing: the GPU runs the products.)
# The two versions are timed in alternating rounds (each round keeps the fastest
# of 3 calls: other programs can only slow a call down); a version counts as faster only when
# it is faster in every round.
#
# Expect the backward to gain less than the forward: the readable backward unfolds x again
# (the forward keeps x only, not its 9 times larger columns), its weight gradient's
# np.tensordot first copies the columns into another order, and col2im folds the gradient
# back - copies, not products.

# %%
section("4. time: naive loop vs im2col (readable) (a Conv2d layer, float32, BLAS on one thread)")
batch = 8 if L.quick else 16
rounds = 3 if L.quick else 7
layer = Conv2d(16, 16, 3, padding=1, bias=False, rng=rng).to(L.device)
x = xp.asarray(rng.standard_normal((batch, 16, 32, 32)).astype(np.float32))
dout = xp.asarray(rng.standard_normal((batch, 16, 32, 32)).astype(np.float32))
flops = F.conv2d_flops(x.shape, layer.params["weight"].shape, 1, 1)
versions = {"naive loop": True, "im2col (readable)": False}


def time_once(naive, repeat=3):
    """(forward, backward) seconds in the readable mode: the fastest of ``repeat`` calls each,
    since another program taking the core can only make a call slower, never faster."""
    layer.naive = naive
    tf, tb = [], []
    with minisd.reference():
        for _ in range(repeat):
            tf.append(L.clock(lambda: layer.forward(x)))
            tb.append(L.clock(lambda: layer.backward(dout)))   # the backward of the forward just timed
    return min(tf), min(tb)


times = {name: [] for name in versions}
with threadpool_limits(limits=1, user_api="blas"):    # restored when the block ends
    for naive in versions.values():
        time_once(naive)                               # warm-up: first calls allocate
    for r in range(rounds):
        for name in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
            times[name].append(time_once(versions[name]))
layer.naive = False
medians = {name: np.median(np.array(t), axis=0) for name, t in times.items()}   # (forward, backward)
table(["version", "forward ms", "backward ms", "fwd GFLOP/s", "bwd GFLOP/s"],
      [[name, 1e3 * tf, 1e3 * tb, flops / tf / 1e9, 2 * flops / tb / 1e9] for name, (tf, tb) in medians.items()],
      ["{}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}"])
print(f"batch {batch} x 16 x 32 x 32, {flops / 1e6:.0f} MFLOP forward (backward: twice that); "
      f"medians of {rounds} rounds, each the fastest of 3 calls")
# per round: how many times as fast im2col was, forward and backward
ratios = np.array(times["naive loop"]) / np.array(times["im2col (readable)"])     # (rounds, 2)
faster, timing_claims = {}, []   # timings are claims, not mechanics: a "no" is a busy machine, not a bug
for i, what in enumerate(("forward", "backward")):
    lo, mid, hi = ratios[:, i].min(), np.median(ratios[:, i]), ratios[:, i].max()
    faster[what] = "yes" if lo > 1 else "no" if hi < 1 else "not shown"
    verdict = {"yes": "faster in every round",
               "no": "slower in every round: the opposite of what this section expects",
               "not shown": "not shown: slower in some rounds (other work on the machine makes timings noisy)"}
    print(f"  {what:8s}: im2col {mid:.2f}x as fast as the loop (rounds {lo:.2f}x to {hi:.2f}x): "
          f"{verdict[faster[what]]}")
    takeaway = {"yes": "",
                "no": "here the loop's small products won: the gain of one large product depends on the BLAS "
                      "library and the machine, so a speed claim holds only where it was measured",
                "not shown": "timings on a shared machine are noisy: a claim of speed needs every round to agree "
                             "(rerun on an idle machine, or with more rounds)"}[faster[what]]
    timing_claims.append((f"im2col is faster than the loop ({what}, 1 BLAS thread)",
                          f"{mid:.2f}x ({lo:.2f}-{hi:.2f}x)", f"> 1x in all {rounds} rounds", faster[what], takeaway))
if all(v == "yes" for v in faster.values()):
    print("One large product per image beats 1024 small ones, forward and backward, on the same single core.")
    if np.median(ratios[:, 1]) < np.median(ratios[:, 0]):
        print("The backward gains less than the forward, as expected above (Try this 1 looks at where its time goes).")

pyplot = plt()
fig, ax = pyplot.subplots(figsize=(6.5, 3.5))
pos, width = np.arange(2), 0.8 / len(times)
for i, (name, t) in enumerate(medians.items()):
    ax.bar(pos + (i - (len(medians) - 1) / 2) * width, [1e3 * v for v in t], width, label=name)
ax.set_xticks(pos, ["forward", "backward"])
ax.set_ylabel("milliseconds")
ax.set_yscale("log")
ax.set_title(f"3x3 conv, 16->16 channels, batch {batch} of 32x32 ({L.device}, 1 BLAS thread)")
ax.legend(fontsize=8)
L.save_figure(fig, "naive_vs_im2col.png")

# %%
section("findings")
L.report_findings(mechanics=findings, claims=timing_claims)

# %% [markdown]
# ## Summary
# * a convolution is a matrix product once the patches are laid out as columns;
# * its backward is two more matrix products and a col2im, the adjoint of im2col - derive
#   them in exercise 04 (`python lessons/exercises/04_conv_im2col.py`; `--hint` if stuck);
# * with BLAS on one thread, the one large product beats the loop's 1024 small ones (when the
#   findings say so): a comparison of algorithms needs the same hardware for both;
# * the readable im2col version is what runs inside `minisd.reference()` (`--reference`);
#   otherwise the network runs its tested twin, minisd/fast/cpu.py on the CPU
#   (minisd/fast/gpu.py on the GPU): the same numbers, faster - lesson 14, the speed
#   appendix, shows it;
# * minisd keeps the loop (`Conv2d.naive = True`) only to teach and to test the others.

# %%
L.try_this()
