"""Lesson 3 - Batch normalisation: forward, backward (gradient-checked), training vs eval statistics.

What you will learn
  * what BatchNorm2d computes: per channel, (x - batch mean) / batch std, then gamma * . + beta;
  * its backward, and why the "obvious" gradient gamma / std * dout is wrong (the mean and
    the variance depend on every input too) - checked against central differences. The
    right formula is yours to derive: exercise 03, after this lesson;
  * the running mean and variance: how they converge during training (momentum 0.1), why
    the variance is the unbiased one, and why eval mode uses them instead of the batch's.

Run
  python lessons/03_batch_norm.py
  python lessons/03_batch_norm.py --quick    # smaller batches, fewer steps
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Change momentum to 0.01 (BatchNorm2d(C, momentum=0.01)): how many steps until the
     running mean is within 1% of the true one? Compare with 1 - (1 - momentum)^t.
  2. Train-mode output of one image depends on the other images in its batch. Make the
     batch size 2 and measure how much image 0's output moves when image 1 changes.
  3. Multiply x by 10 and run forward and backward again: the output does not change, but
     dx shrinks 10x. Why? What does this scale invariance mean for the convolution weights
     in front of a BN layer, and for weight decay on them?
"""
# %% [markdown]
# # Lesson 3: batch normalisation
#
# Every residual branch of the CIFAR ResNet is conv -> BN -> ReLU -> conv -> BN. In training,
# BN normalises each channel with the mean and variance of the current mini-batch (over N, H
# and W) and then applies a learned scale gamma (`weight`) and shift beta (`bias`):
#
#     xhat = (x - mean) / sqrt(var + eps),     out = gamma * xhat + beta.

# %%
import numpy as np

from minisd import BatchNorm2d, numerical_gradient, relative_error, to_numpy
from minisd import functional as F
from minisd.fast import switch as route
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
rng = np.random.default_rng(L.seed)
C = 4
true_mean = np.array([3.0, -1.0, 0.0, 10.0])
true_std = np.array([2.0, 0.5, 1.0, 4.0])
findings = []  # mechanics: (claim, number, criterion, supported?); this lesson tests no claim of the paper


def batch(n, h=8, dtype=np.float64):
    """n images of C channels whose channel c ~ Normal(true_mean[c], true_std[c])."""
    x = rng.standard_normal((n, C, h, h)) * true_std[None, :, None, None] + true_mean[None, :, None, None]
    return xp.asarray(x.astype(dtype))


def channel_stats(a):
    a = to_numpy(a)
    return a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))


# %% [markdown]
# ## 1. Forward: every channel comes out with mean 0 and std 1 (then gamma, beta)

# %%
section("1. forward in training mode")
bn = BatchNorm2d(C, dtype=np.float64).to(L.device)
x = batch(16)
out = bn.forward(x)
bn.cache = None
(mi, si), (mo, so) = channel_stats(x), channel_stats(out)
table(["channel", "input mean", "input std", "output mean", "output std"],
      [[c, mi[c], si[c], mo[c], so[c]] for c in range(C)], ["{}", "{:.3f}", "{:.3f}", "{:.1e}", "{:.4f}"])
# std slightly below 1: xhat divides by sqrt(var + eps), eps = 1e-5, not by sqrt(var)
off_mean, off_std = float(np.abs(mo).max()), float(np.abs(so - 1).max())
findings.append(("training-mode output: every channel mean 0, std 1", f"|mean| {off_mean:.0e}, |std-1| {off_std:.0e}",
                 "< 1e-12 and < 1e-3", off_mean < 1e-12 and off_std < 1e-3))
bn.params["weight"][...] = 2.0
bn.params["bias"][...] = 0.5
mo, so = channel_stats(bn.forward(x))
bn.cache = None
print(f"with gamma = 2, beta = 0.5: output means {np.round(mo, 3)}, stds {np.round(so, 3)}")

# %% [markdown]
# ## 2. Backward
#
# If mean and var were constants, dx would be gamma / sqrt(var + eps) * dout. But they are
# functions of every x in the channel: x_j reaches the loss directly, through the mean and
# through the variance, and the backward needs a term for each path. Deriving those terms is
# exercise 03 (`python lessons/exercises/03_batchnorm.py`), to do after this lesson; the
# worked solution is in lessons/solutions/03_batchnorm.py. Here we check the layer's backward
# (with random gamma, beta) against central differences, and show that the "constant
# statistics" shortcut fails the same check.

# %%
section("2. backward: analytic vs numerical (float64, h = 1e-5)")
bn = BatchNorm2d(C, dtype=np.float64).to(L.device)
bn.params["weight"][...] = xp.asarray(rng.uniform(0.5, 2.0, C))
bn.params["bias"][...] = xp.asarray(rng.standard_normal(C))
x = batch(2 if L.quick else 4, h=3 if L.quick else 4)
out = bn.forward(x)
dout = xp.asarray(rng.standard_normal(out.shape))
inv_std = 1.0 / xp.sqrt(x.var(axis=(0, 2, 3)) + bn.eps)  # the batch's statistics, per channel
gamma = bn.params["weight"]
naive_dx = dout * (gamma * inv_std)[None, :, None, None]
bn.zero_grad()
dx = bn.backward(dout)


def f():
    y = bn.forward(x)
    bn.cache = None
    return y


rm, rv = bn.running_mean.copy(), bn.running_var.copy()
rows = [["dx (BatchNorm2d.backward)", relative_error(dx, numerical_gradient(f, x, dout))],
        ["dx if mean/var were constants", relative_error(naive_dx, numerical_gradient(f, x, dout))]]
for key in ("weight", "bias"):
    rows.append([f"d{key} ({'gamma' if key == 'weight' else 'beta'})", relative_error(bn.grads[key], numerical_gradient(f, bn.params[key], dout))])
bn.running_mean[...], bn.running_var[...] = rm, rv  # the checks ran many forwards; undo their statistics
table(["gradient", "relative error"], rows, ["{}", "{:.1e}"])
full_err, naive_err = max(rows[0][1], rows[2][1], rows[3][1]), rows[1][1]
if full_err < 1e-6 and naive_err > 1e-2:
    print(f"The layer's backward matches to {full_err:.0e}; forgetting that the statistics depend on x is off by "
          f"{naive_err:.0e}.")
else:
    print("not shown: these errors do not separate the layer's backward from the shortcut.")
findings.append(("BN backward (dx, dgamma, dbeta) = central differences", f"{full_err:.1e}", "< 1e-6", full_err < 1e-6))
findings.append(("dx with constant statistics is wrong", f"{naive_err:.1e}", "> 1e-2", naive_err > 1e-2))
dx_sums = to_numpy(dx.sum(axis=(0, 2, 3)))
print(f"sum of dx over N, H, W per channel: {np.round(dx_sums, 12)} "
      "(why it must be 0, for any dout: exercise 03, question 3)")
findings.append(("dx sums to 0 over each channel", f"{np.abs(dx_sums).max():.0e}", "< 1e-10",
                 np.abs(dx_sums).max() < 1e-10))

ref, cache_ref = F.batchnorm_train_forward(x, bn.params["weight"], bn.params["bias"], bn.eps)
path = {"fast_cpu": "the fast CPU path, minisd/fast/cpu.py", "fast_gpu": "the fast GPU path, minisd/fast/gpu.py",
        "readable": "the readable code itself"}[route.name_of(route.choose(x))]
twins = max(relative_error(f(), ref), relative_error(dx, F.batchnorm_train_backward(dout, cache_ref)[0]))
print(f"the layer (here: {path}) vs the readable functional.py: forward and backward agree to {twins:.0e}")
findings.append((f"the layer ({route.name_of(route.choose(x))}) = readable functional.py", f"{twins:.0e}", "< 1e-12",
                 twins < 1e-12))

# %% [markdown]
# ## 3. Running statistics: what eval mode uses
#
# At test time a prediction must not depend on which other images share the batch, so BN
# uses fixed statistics: running averages updated at every training forward,
#
#     running = (1 - momentum) * running + momentum * batch statistic,   momentum = 0.1,
#
# starting from mean 0 and variance 1. The variance stored is the unbiased m/(m-1) * var
# (as PyTorch does). After t steps the starting value still has weight 0.9^t: the gap to
# the true statistics halves every ~7 steps (0.9^7 = 0.48) and is 0.5% after 50 steps.

# %%
section("3. running mean and variance during training (batches from fixed distributions)")
bn = BatchNorm2d(C).to(L.device)  # float32, as in training
steps = 30 if L.quick else 100
n_batch = 8 if L.quick else 32
history_mean, history_var, gaps = [], [], []
probe = batch(n_batch, dtype=np.float32)
for t in range(1, steps + 1):
    bn.train()
    bn.forward(batch(n_batch, dtype=np.float32))
    bn.cache = None
    history_mean.append(to_numpy(bn.running_mean).copy())
    history_var.append(to_numpy(bn.running_var).copy())
    bn.eval()  # how far is eval output from train output on a fresh batch?
    e = bn.forward(probe)
    bn.train()
    tr = bn.forward(probe)
    bn.running_mean[...] = xp.asarray(history_mean[-1])  # undo this probe's update
    bn.running_var[...] = xp.asarray(history_var[-1])
    bn.cache = None
    gaps.append(float(xp.abs(e - tr).mean()))

rows = []
for t in sorted({1, 5, 10, 20, 30, 50, steps} & set(range(1, steps + 1))):
    m, v = history_mean[t - 1], history_var[t - 1]
    rows.append([t, np.abs(m - true_mean).max(), np.abs(v / true_std ** 2 - 1).max(), 0.9 ** t, gaps[t - 1]])
table(["step", "max |mean err|", "max var rel err", "0.9^t", "|eval - train| out"], rows,
      ["{}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.3f}"])
print(f"true means {true_mean}, true variances {true_std ** 2}")
mean_err = [float(np.abs(m - true_mean).max()) for m in history_mean]
converged = mean_err[-1] < 0.1 * mean_err[0] and gaps[-1] < 0.1 * gaps[0]
if converged:
    print("The gap falls like 0.9^t until batch noise is all that is left; from then on eval mode")
    print("gives (nearly) what training mode gives - without looking at the rest of the batch.")
else:
    print("not shown: after these steps the running statistics are not yet close to the true ones.")
findings.append(("the running statistics converge (step 1 -> last)",
                 f"mean err {mean_err[0]:.2f} -> {mean_err[-1]:.2f}, gap {gaps[0]:.2f} -> {gaps[-1]:.2f}",
                 "both fall > 10x", converged))

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(10, 3.8))
hm, hv = np.array(history_mean), np.array(history_var)
for c in range(C):
    line, = axes[0].plot(range(1, steps + 1), hm[:, c], label=f"channel {c}")
    axes[0].axhline(true_mean[c], color=line.get_color(), ls=":", lw=1)
    axes[1].plot(range(1, steps + 1), hv[:, c] / true_std[c] ** 2, color=line.get_color())
axes[0].set_title("running_mean (dotted: true mean)")
axes[1].set_title("running_var / true variance")
axes[1].axhline(1.0, color="k", ls=":", lw=1)
for ax in axes:
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
L.save_figure(fig, "running_stats.png")

# %% [markdown]
# ## 4. Why eval mode exists: one image, two answers in training mode

# %%
section("4. training mode mixes the batch; eval mode does not")
x = batch(4, dtype=np.float32)
x2 = x.copy()
x2[1:] = batch(3, dtype=np.float32)  # same image 0, different companions
rm, rv = bn.running_mean.copy(), bn.running_var.copy()
change = {}
for mode in ("train", "eval"):
    bn.train(mode == "train")
    a, b = bn.forward(x)[0], bn.forward(x2)[0]
    bn.cache = None
    change[mode] = float(xp.abs(a - b).mean())
    print(f"  {mode:5s} mode: image 0's output changes by {change[mode]:.4f} "
          f"(mean |difference|) when the other 3 images change")
bn.running_mean[...], bn.running_var[...] = rm, rv
findings.append(("an image's output depends on its batch in training mode only",
                 f"train {change['train']:.4f}, eval {change['eval']:.0e}", "> 0 and == 0",
                 change["train"] > 0 and change["eval"] == 0))

# %%
section("findings")
L.report_findings(mechanics=findings)

# %% [markdown]
# ## Summary
# * BN's backward has two correction terms because the batch statistics depend on the input -
#   derive them in exercise 03 (`python lessons/exercises/03_batchnorm.py`; `--hint` if stuck);
# * training uses the batch's statistics, eval the running averages (unbiased variance);
# * lesson 5 shows that a dropped residual branch does not touch its BN running statistics,
#   and lesson 9 uses these eval statistics inside sampled sub-networks.

# %%
L.try_this()
