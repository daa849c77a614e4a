"""Lesson 14 (appendix) - The speed appendix: the CPU fast path, and how the lessons time things.

What you will learn
  * the one switch, minisd/fast/switch.py: every layer asks `choose(x)` which code runs it -
    the readable minisd/functional.py inside `with minisd.reference():`, otherwise the fast
    twin for the array's device - and tags its cache with the answer, so its backward runs
    the twin of the forward that really ran;
  * the CPU twins of im2col and col2im (minisd/fast/cpu.py): the same matrices from a few
    long copies instead of many short ones, tested equal to the readable pair;
  * the fast convolution backward: at stride 1 with as many input as output channels, dx is
    a convolution of dout with the flipped kernel - no col2im at all - checked against the
    naive loop and central differences;
  * how every timing in these lessons is taken (lessons 2, 10, 12): wait for the device,
    take medians, run the settings in interleaved rounds, and compare two settings by their
    ratio within each round, with its range.

Run
  python lessons/14_speed_appendix.py
  python lessons/14_speed_appendix.py --quick
  (options: --out DIR, --seed N, --rounds R; the CPU fast path is NumPy's, so this lesson
  runs on NumPy whatever --device says)

Try this
  1. Read fast_cpu.im2col_fast and functional.im2col side by side. Which loop of the readable
     version became one long copy, and why is the fast one only for "phase-aligned" shapes?
  2. In section 4, time the two versions one after the other (all of A, then all of B) while
     another program loads the machine (e.g. lesson 7 in a second terminal). How far apart
     are the ratio of medians and the paired ratio now?
  3. Set MINISD_NUM_THREADS=1 and run again: how much of the fast path's gain was threads?
"""
# %% [markdown]
# # Lesson 14 (appendix): the speed appendix
#
# Lessons 1-13 read the readable code, minisd/functional.py. Outside
# `with minisd.reference():` the network runs faster twins of the same functions: this
# appendix shows where the choice is made, checks that the twins compute the same numbers,
# and explains how the lessons measure time.

# %%
import numpy as np

import minisd
from minisd import Conv2d, numerical_gradient, relative_error
from minisd import functional as F
from minisd.fast import cpu as fast_cpu, switch
from _common import paired, section, setup, spread, table


def extra(p):
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7; quick: 5)")


L = setup(__doc__, extra)
rng = np.random.default_rng(L.seed)
rounds = L.args.rounds or (5 if L.quick else 7)
findings = []  # (claim, number, criterion, supported?)


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# %% [markdown]
# ## 1. One switch
#
# `switch.choose(x)` returns a module: `functional` inside `minisd.reference()`, else
# `fast.cpu` for a NumPy array and `fast.gpu` for a CuPy one. The three modules have the same
# function names, so a layer writes `impl.conv2d_forward(...)` and stores `impl` in its cache
# (cs231n's way: the cache says what made it). Its backward takes `impl` back out and calls
# `impl.conv2d_backward`: no look-up, and no way to mix the two paths.

# %%
section("1. which code runs a Conv2d: the switch and the cache's tag")
layer = Conv2d(3, 4, 3, padding=1, bias=False, dtype=np.float64, rng=rng)
x = randn(2, 3, 8, 8)
out = layer.forward(x)
tag = switch.name_of(layer.cache[0])  # the cache is (impl, arrays): impl is the tag
dx = layer.backward(np.ones_like(out))
with minisd.reference():
    out_ref = layer.forward(x)
    tag_ref = switch.name_of(layer.cache[0])
    dx_ref = layer.backward(np.ones_like(out_ref))
rows = [["default", tag], ["inside minisd.reference()", tag_ref]]
table(["mode", "the cache's tag (the module the forward ran on)"], rows)
twin_err = max(relative_error(out, out_ref), relative_error(dx, dx_ref))
print(f"forward and dx of the two routes agree to {twin_err:.0e} (float64)")
try:
    layer.forward(x)
    with minisd.reference():
        layer.backward(np.ones_like(out))
    mixed = "no error"
except RuntimeError as e:
    mixed = str(e)
    layer.cache = None
print(f"a backward in the other mode: {mixed}")
findings.append(("NumPy outside reference() runs fast_cpu, inside the readable code", f"{tag}, {tag_ref}",
                 "fast_cpu, readable", (tag, tag_ref) == ("fast_cpu", "readable")))
findings.append(("the two routes compute the same layer", f"{twin_err:.0e}", "< 1e-12", twin_err < 1e-12))
findings.append(("a backward in the other mode is refused", mixed[:40] + "...", "a RuntimeError",
                 mixed != "no error"))

# %% [markdown]
# ## 2. im2col_fast and col2im_fast: the same matrices, fewer and longer copies
#
# Every convolution of the CIFAR networks is "phase-aligned": the output is the input
# subsampled by the stride (32x32 -> 32x32 at stride 1, -> 16x16 at stride 2). For those,
# the CPU twins build each of the k*k shifted copies with one long slice assignment per
# kernel offset over the whole chunk of images. They must equal the readable pair, and be
# adjoint like it: <im2col(x), c> = <x, col2im(c)>.

# %%
section("2. the fast pair equals the readable pair, and is adjoint (float64)")
rows = []
for stride in (1, 2):
    x = randn(2, 3, 6, 6)
    cols = F.im2col(x, 3, stride, 1)
    c = randn(*cols.shape)
    back = F.col2im(c, x.shape, 3, stride, 1)
    cols_fast = fast_cpu.im2col_fast(x, 3, stride, 1).copy()            # copy: it returns a reused buffer
    back_fast = fast_cpu.col2im_fast(c.copy(), x.shape, 3, stride, 1)   # copy: it uses its input as scratch
    adj_fast = abs(float((cols_fast * c).sum()) - float((x * back_fast).sum()))
    rows.append([stride, float(np.abs(cols_fast - cols).max()), float(np.abs(back_fast - back).max()), adj_fast])
table(["stride", "max|im2col_fast - im2col|", "max|col2im_fast - col2im|", "|<im2col_fast x,c> - <x,col2im_fast c>|"],
      rows, ["{}", "{:.1e}", "{:.1e}", "{:.1e}"])
worst = max(max(r[1:]) for r in rows)
print(f"largest entry: {worst:.1e} - " + ("rounding only: the fast pair builds the same matrices." if worst < 1e-9
                                          else "MORE than rounding: something is wrong."))
findings.append(("im2col_fast / col2im_fast = the readable pair, adjoint", f"{worst:.1e}", "< 1e-9", worst < 1e-9))

# %% [markdown]
# ## 3. The fast backward: three routes to dx
#
# fast_cpu.conv2d_backward handles three cases apart:
# * stride 1, 3 -> 4 channels (like the first layer), and stride 2: dx = col2im_fast(dcols);
# * stride 1, 4 -> 4 channels (every convolution inside a stage): no col2im. dx is a
#   convolution of dout with the kernel flipped in space and with in/out channels swapped
#   (the "transposed convolution"), and dweight is read off the same unfold of dout - one
#   unfold per chunk instead of two. It needs as many input as output channels, or more.
# The readable version (and so the GPU) always uses col2im. Each is checked against the
# naive loop and against central differences (lesson 1).


# %%
def fast_dx_route(stride, c_in, c_out):
    """Which formula fast_cpu.conv2d_backward uses for dx (every case here is phase-aligned)."""
    return "flipped kernel" if stride == 1 and c_out <= c_in else "col2im_fast"


section("3. fast backward vs naive loop vs numerical (float64)")
rows = []
for stride, c_in, c_out in ((1, 3, 4), (1, 4, 4), (2, 3, 4)):
    x, w, b = randn(2, c_in, 6, 6), randn(c_out, c_in, 3, 3), randn(c_out)
    out, cache = fast_cpu.conv2d_forward(x, w, b, stride, 1)
    dout = randn(*out.shape)
    naive = F.conv2d_naive_backward(dout, F.conv2d_naive_forward(x, w, b, stride, 1)[1])
    f = lambda: F.conv2d_forward(x, w, b, stride, 1)[0]
    num = [numerical_gradient(f, a, dout) for a in (x, w, b)]
    for name, g, naive_g, num_g in zip(("dx", "dweight", "dbias"), fast_cpu.conv2d_backward(dout, cache), naive, num):
        rows.append([stride, f"{c_in} -> {c_out}", name, fast_dx_route(stride, c_in, c_out) if name == "dx" else "",
                     relative_error(g, naive_g), relative_error(g, num_g)])
table(["stride", "channels", "gradient", "dx via", "vs naive", "vs numerical"], rows,
      ["{}", "{}", "{}", "{}", "{:.1e}", "{:.1e}"])
vs_naive, vs_num = max(r[4] for r in rows), max(r[5] for r in rows)
if vs_naive < 1e-10 and vs_num < 1e-6:
    print("every route = naive to rounding, and matches central differences: the flipped kernel is dx.")
else:
    print("LARGER than rounding / finite-difference error: one of the fast backward routes is wrong.")
findings.append(("every fast backward route = the naive loop", f"{vs_naive:.1e}", "< 1e-10", vs_naive < 1e-10))
findings.append(("... and = central differences", f"{vs_num:.1e}", "< 1e-6", vs_num < 1e-6))

# %% [markdown]
# ## 4. How the lessons time things
#
# A measurement on a shared laptop is noisy: other programs, the clock speed, the caches.
# The lessons' rules (in lessons/_common.py):
# * **wait for the device** before reading the clock (`L.sync()`): a GPU runs asynchronously,
#   so without it we would time the launch, not the work (on the CPU it does nothing);
# * **medians, not means**: one slow step (a page fault, another program) moves a mean, not
#   a median;
# * **interleaved rounds** (`L.interleaved`): every setting once per round, the order
#   reversed every second round, so a slow spell of the machine hits all settings alike;
# * **paired ratios** (`paired`): compare two settings by their ratio *within* each round,
#   and report the median and the range of those ratios - the range says whether the
#   difference is larger than the noise.
# Below: a Conv2d layer of the first CIFAR stage (16 -> 16 channels, 32x32, float32), forward
# and backward, readable vs fast, timed both ways: all of one, then all of the other ("one
# after the other"), and interleaved.

# %%
section("4. readable vs fast Conv2d: medians one after the other, and paired ratios in rounds")
batch = 16 if L.quick else 64
conv = Conv2d(16, 16, 3, padding=1, bias=False, rng=rng)
x = randn(batch, 16, 32, 32, dtype=np.float32)
dout = randn(batch, 16, 32, 32, dtype=np.float32)


def fwd_bwd():
    conv.forward(x)
    conv.backward(dout)


def readable():
    with minisd.reference():
        fwd_bwd()


settings = {"readable (functional.py)": readable, "fast (fast/cpu.py)": fwd_bwd}
for fn in settings.values():
    fn()  # warm-up: first calls allocate buffers and start threads
after = {name: [L.clock(fn) for _ in range(rounds)] for name, fn in settings.items()}
t = L.interleaved(settings, rounds)
names = list(settings)
ratios, text = paired(t[names[1]], t[names[0]])
seq_ratio = float(np.median(after[names[1]]) / np.median(after[names[0]]))
table(["version", "one after the other: median ms", "interleaved: median ms", f"min-max of {rounds}"],
      [[n, 1e3 * np.median(after[n]), 1e3 * np.median(t[n]), spread(t[n])] for n in names],
      ["{}", "{:.1f}", "{:.1f}", "{}"])
print(f"fast / readable: ratio of medians, one after the other {100 * seq_ratio:.0f}%; paired per round {text}")
faster = max(ratios) < 1
if faster:
    print(f"The fast twin was faster in every one of the {rounds} rounds: a difference larger than the noise.")
else:
    print("not shown: in some round the fast twin was not faster; the machine's noise is as large as the gain.")
findings.append(("the CPU fast path is faster than the readable code (a Conv2d, fwd + bwd)", text,
                 "< 100% in every round", faster))

# %%
section("findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * one switch decides: readable code inside `minisd.reference()`, the device's fast twin
#   otherwise; the cache carries the choice to the backward;
# * the CPU twins are the same functions, tested equal to the readable ones here and in
#   tests/test_fast_cpu.py; the GPU twins likewise in tests/test_fast_gpu.py;
# * a speed claim in these lessons is a paired ratio per round, with its range.

# %%
L.try_this()
