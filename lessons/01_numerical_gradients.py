"""Lesson 1 - Numerical vs analytic gradients: how every backward pass in minisd is checked.

What you will learn
  * the central difference (f(x+h) - f(x-h)) / 2h, and why it beats the one-sided one;
  * how to compare two gradients: the relative error of minisd.relative_error;
  * why the step h can be neither large (truncation error) nor tiny (rounding error);
  * why every gradient check runs in float64: in float32 the same check fails.

Run
  python lessons/01_numerical_gradients.py
  python lessons/01_numerical_gradients.py --quick    # smaller sizes and fewer steps h
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Check ReLU near its kink: relu = minisd.ReLU(), x = xp.array([1e-7, -1e-7, 0.5]),
     numerical_gradient(lambda: relu.forward(x), x) against relu.backward(xp.ones(3)) after a
     forward. With h = 1e-5 the two points next to 0 disagree badly. Why is that not a bug?
  2. Change h in the float64 Linear check to 1e-2 and to 1e-9: which error term (h^2 or
     eps/h) dominates each time? Does the best h you found match sqrt(eps) ~ 1e-8 for the
     one-sided difference, or eps^(1/3) ~ 1e-5 for the central one?
  3. Introduce a bug on purpose: in a copy of linear_backward return dout.T @ x * 1.01.
     How large is the relative error now, and how does it compare with the float32 "noise"?
"""
# %% [markdown]
# # Lesson 1: numerical vs analytic gradients
#
# minisd has no autograd: every layer's `backward` is written by hand. A hand-written
# derivative is easy to get subtly wrong, so each one is checked against a number we can
# compute without any calculus: nudge one input, see how the output moves.

# %%
import numpy as np

from minisd import Linear, SoftmaxCrossEntropy, numerical_gradient, relative_error
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
findings = []  # mechanics: (claim, number, criterion, supported?); this lesson tests no claim of the paper

# %% [markdown]
# ## 1. One-sided vs central differences
#
# For f(x) = sum(x * tanh(x)) the derivative is known exactly: tanh(x) + x (1 - tanh(x)^2).
# The one-sided difference (f(x+h) - f(x)) / h has an error proportional to h; the central
# difference (f(x+h) - f(x-h)) / 2h, which `minisd.numerical_gradient` uses, has an error
# proportional to h^2 (the even terms of the Taylor series cancel).
# The one-sided version below is written here only to be compared.

# %%
section("1. one-sided vs central differences on f(x) = sum(x tanh x)")
x = xp.asarray(np.random.default_rng(L.seed).standard_normal(5))
f = lambda: (x * xp.tanh(x)).sum()
exact = xp.tanh(x) + x * (1 - xp.tanh(x) ** 2)


def one_sided(f, x, h):
    """(f(x + h e_i) - f(x)) / h: the naive estimate, for comparison only."""
    g, base = xp.zeros_like(x), float(f())
    for i in range(x.size):
        old = float(x[i])
        x[i] = old + h
        g[i] = (float(f()) - base) / h
        x[i] = old
    return g


rows = []
for h in (1e-1, 1e-2, 1e-3, 1e-4):
    e1 = relative_error(one_sided(f, x, h), exact)
    e2 = relative_error(numerical_gradient(f, x, h=h), exact)
    rows.append([h, e1, e2])
table(["h", "one-sided error", "central error"], rows, ["{:.0e}", "{:.1e}", "{:.1e}"])
# how much each error falls per 10x smaller h (median over the steps of the table)
fall_one, fall_central = (float(np.median([a[i] / b[i] for a, b in zip(rows, rows[1:])])) for i in (1, 2))
print(f"Each 10x smaller h: the one-sided error falls {fall_one:.0f}x, the central one {fall_central:.0f}x (medians).")
order_one, order_central = 5 <= fall_one <= 20, 50 <= fall_central <= 200
if order_one and order_central:
    print("~10x is order h, ~100x order h^2: the even terms of the Taylor series cancel in the central one.")
else:
    print("not shown: these falls are not the ~10x and ~100x of orders h and h^2 (rounding already?).")
findings.append(("the one-sided error is of order h", f"falls {fall_one:.0f}x per 10x h", "5x to 20x", order_one))
findings.append(("the central error is of order h^2", f"falls {fall_central:.0f}x per 10x h", "50x to 200x",
                 order_central))

# %% [markdown]
# ## 2. Comparing two gradients: the relative error
#
# An absolute difference of 1e-6 is tiny for a gradient of size 1 and huge for one of
# size 1e-8. So we compare |a - b| / (|a| + |b|), element by element, and report the worst.
# A floor in the denominator stops an element whose true value is 0 (numerically 1e-12)
# from counting as 100% wrong. Rough scale in float64: < 1e-6 correct, > 1e-3 a bug.

# %%
section("2. relative error: |a - b| / (|a| + |b|), worst element")
a = xp.asarray([1.0, 2.0, 3.0])
for b, what in ((a * (1 + 1e-9), "same up to rounding"), (a + xp.asarray([0, 0, 1e-3]), "one entry off by 1e-3"),
                (-a, "opposite sign")):
    print(f"  {what:24s}: relative_error = {relative_error(a, b):.1e}")

# %% [markdown]
# ## 3. A real layer: Linear + softmax cross-entropy, in float64
#
# The scalar is the loss. `layer.backward` gives the analytic gradients of the weight, the
# bias and the input; `numerical_gradient(f, array)` nudges each entry of that array in
# place and re-runs the forward pass `f`.

# %%
section("3. Linear + SoftmaxCrossEntropy, analytic vs numerical (float64, h = 1e-5)")
n, d, k = (4, 6, 3) if L.quick else (8, 20, 10)


def build(dtype):
    """The same layer and data (same seed) in ``dtype``; runs forward and backward once."""
    rng = np.random.default_rng(L.seed + 1)
    layer = Linear(d, k, dtype=dtype, rng=np.random.default_rng(L.seed)).to(L.device)
    x = xp.asarray(rng.standard_normal((n, d)).astype(dtype))
    y = xp.asarray(rng.integers(0, k, n))
    loss_fn = SoftmaxCrossEntropy()
    loss = lambda: loss_fn.forward(layer.forward(x), y)
    loss()
    layer.zero_grad()
    dx = layer.backward(loss_fn.backward())
    return layer, x, loss, dx


layer, x64, loss64, dx64 = build(np.float64)
rows = [["input x", relative_error(numerical_gradient(loss64, x64), dx64)]]
for key in ("weight", "bias"):
    rows.append([key, relative_error(numerical_gradient(loss64, layer.params[key]), layer.grads[key])])
table(["gradient of", "relative error"], rows, ["{}", "{:.1e}"])
worst = max(r[1] for r in rows)
if worst < 1e-6:
    print("All below 1e-6: the hand-written backward of Linear and of the softmax loss is right.")
else:
    print(f"The worst error, {worst:.1e}, is above 1e-6: one of these backward passes looks wrong.")
findings.append(("Linear + softmax backward match central differences (float64)", f"{worst:.1e}", "< 1e-6",
                 worst < 1e-6))

# %% [markdown]
# ## 4. The choice of h, and why float32 fails
#
# Two errors compete. Truncation: the central difference is off by ~h^2 f'''/6.
# Rounding: f is only known to ~eps |f| (machine epsilon eps = 2.2e-16 in float64, 1.2e-7 in
# float32), and dividing by 2h amplifies that to ~eps/h. Their sum is smallest near
# h ~ eps^(1/3): ~6e-6 in float64, ~5e-3 in float32 - and even there the float32 error stays
# orders of magnitude above float64's.
# (A relative error of exactly 1 means some entry came out 0, or with the wrong sign.)
# Worse: x + h itself is rounded. For h < eps * |x| the nudge vanishes and the numerical
# gradient is exactly 0 (relative error 1).

# %%
section("4. relative error of the weight gradient against h, float64 vs float32")
layer32, x32, loss32, _ = build(np.float32)
hs = [1e-1, 1e-3, 1e-5, 1e-7, 1e-9] if L.quick else [10.0 ** -e for e in range(1, 13)]
rows, err64, err32 = [], [], []
for h in hs:
    e64 = relative_error(numerical_gradient(loss64, layer.params["weight"], h=h), layer.grads["weight"])
    e32 = relative_error(numerical_gradient(loss32, layer32.params["weight"], h=h), layer32.grads["weight"])
    err64.append(e64)
    err32.append(e32)
    rows.append([h, e64, e32])
table(["h", "float64 error", "float32 error"], rows, ["{:.0e}", "{:.1e}", "{:.1e}"])
best = int(np.argmin(err64))
print(f"float64: best h = {hs[best]:.0e} (error {err64[best]:.1e}); minisd's default h = 1e-5.")
float32_useless = min(err32) > 100 * min(err64) and min(err32) > 1e-4
if float32_useless:
    # a backward whose gradient is off by c% has relative error ~ c/200: bugs below 200 * best % hide in it
    print(f"float32: the best it can do is {min(err32):.1e} (float64: {min(err64):.1e}). A backward whose gradient")
    print(f"is off by less than ~{200 * min(err32):.2g}% gives no larger an error: "
          "it cannot be told from a correct one.")
    print("So every gradient check in minisd's tests (and in these lessons) runs in float64;")
    print("training itself runs in float32, where that precision is plenty.")
else:
    print(f"not shown: float32's best error here, {min(err32):.1e}, is close to float64's.")
findings.append(("float64's best h lies near eps^(1/3) ~ 6e-6", f"{hs[best]:.0e}", "1e-7 to 1e-4",
                 1e-7 <= hs[best] <= 1e-4))
findings.append(("float32 cannot check a gradient finely (bugs under 0.02% hide)",
                 f"best {min(err32):.1e} vs {min(err64):.1e}", "> 100x float64's and > 1e-4", float32_useless))

pyplot = plt()
fig, ax = pyplot.subplots(figsize=(6, 4))
ax.loglog(hs, err64, "o-", label="float64")
ax.loglog(hs, err32, "s-", label="float32")
ax.set_xlabel("step h")
ax.set_ylabel("relative error (worst element)")
ax.set_title("Central differences: truncation vs rounding")
ax.invert_xaxis()
ax.grid(True, which="both", alpha=0.3)
ax.legend()
L.save_figure(fig, "error_vs_h.png")

# %%
section("findings")
L.report_findings(mechanics=findings)

# %% [markdown]
# ## Summary
# * central differences, h = 1e-5, float64, relative error below ~1e-6: that is the test
#   every backward in minisd passes (tests/test_layers.py, tests/test_model.py);
# * in float32 the same check is blunt (a gradient wrong by a fraction of a percent passes it) -
#   use float64 for checking, float32 for training.
#
# Next, write two backward passes yourself and check them this way: exercises 01 (ReLU) and
# 02 (the linear layer and the softmax loss), `python lessons/exercises/01_relu.py`.

# %%
L.try_this()
