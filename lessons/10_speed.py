"""Lesson 10 - Speed: does dropping blocks make training faster? Time per step vs surviving blocks.

What you will learn
  * a training step's time is (nearly) a straight line in the number k of blocks that run:
    we set the gates to keep exactly k blocks and time forward + backward + SGD update;
  * FLOPs saved vs time saved: how close the measured saving comes to the FLOP count;
  * the expected saving of the paper's linear rule (p_L = 0.5) - predicted and measured
    with real sampled gates;
  * why dropping per IMAGE (mode="sample") saves nothing: every branch must still run on
    the whole batch, and the dropped images are merely multiplied by zero.

Run
  python lessons/10_speed.py            # ~23 s on a 2-core CPU
  python lessons/10_speed.py --quick    # ~2 s
  (options: --device gpu, --out DIR, --seed N, --depth D, --batch-size B)

Try this
  1. Run with --batch-size 8: the fixed part of a step (the intercept of the fit) becomes a
     larger share. How does that change the time saved by stochastic depth?
  2. Which blocks you keep matters a little: keep the first k blocks instead of a random
     subset (net.set_gates([i < k for i in range(nb)])). Are early blocks cheaper or dearer?
     Compare with the per-block FLOPs in lesson 6.
  3. Make sample mode save work: for one block, run the branch only on the images whose
     mask is 1 (x[mask]) and scatter the result back. What goes wrong with batch norm's
     statistics, and with the batch size that each branch sees?
"""
# %% [markdown]
# # Lesson 10: speed
#
# Stochastic depth promises faster training because a dropped block's branch is never
# computed (lesson 5). Lesson 6 counted ~25% fewer FLOPs in expectation for the linear rule.
# FLOPs are not seconds, though: every step also has fixed costs (the stem, shortcuts,
# ReLUs, the loss, the optimizer update of every weight, Python overhead). Here we time it.

# %%
import time

import numpy as np

import minisd
from minisd import ResNet, SoftmaxCrossEntropy, expected_blocks
from minisd.optim import SGD
from _common import plt, section, setup, table


def extra(p):
    p.add_argument("--depth", type=int, default=None, help="ResNet depth (default 56; quick: 20)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 64; quick: 16)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (20 if L.quick else 56)
batch = L.args.batch_size or (16 if L.quick else 64)
repeat = 1 if L.quick else 3

net = ResNet(depth, 10, p_last=0.5, seed=L.seed).to(L.device)
nb = len(net.blocks)
opt = SGD(net.parameters(), lr=0.01)
loss_fn = SoftmaxCrossEntropy()
rng = np.random.default_rng(L.seed)
x = xp.asarray(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
y = xp.asarray(rng.integers(0, 10, batch))
print(f"{net}\nbatch {batch} of 32x32 images; each time is the median of {repeat} steps after a warm-up step")


def train_step(model=net, optimizer=opt):
    """One full training step: forward, loss, backward, SGD update (dropped weights: 'paper')."""
    model.zero_grad()
    loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward())
    optimizer.step(inactive=model.inactive_parameter_names())


# %% [markdown]
# ## 1. Time per step vs number of surviving blocks
#
# For several k we pick k blocks at random (seeded), open exactly those gates with
# `net.set_gates`, trace one step to count the FLOPs executed, then time a few untraced steps.

# %%
section(f"1. time per training step vs surviving blocks (ResNet-{depth}, L = {nb})")
ks = sorted({0, nb // 3, 2 * nb // 3, nb}) if L.quick else sorted({0, nb // 5, 2 * nb // 5, 3 * nb // 5,
                                                                     4 * nb // 5, nb})
results = []
for k in ks:
    keep = set(rng.choice(nb, size=k, replace=False).tolist())
    net.set_gates([i in keep for i in range(nb)])
    with minisd.trace() as t:  # also serves as the warm-up step
        train_step()
    flops = sum(e.flops for e in t.events)
    if k == nb:  # every branch ran: keep each block's branch FLOPs (forward + backward) for section 2
        branch_flops = [sum(e.flops for e in t.events if e.block == i and ".branch." in e.layer) for i in range(nb)]
    seconds = L.timeit(train_step, repeat=repeat, warmup=0)
    results.append((k, seconds, flops))
full_s, full_f = results[-1][1], results[-1][2]
table(["blocks run k", "ms / step", "GFLOP / step", "time vs all", "FLOPs vs all"],
      [[k, 1e3 * s, f / 1e9, f"{100 * s / full_s:.0f}%", f"{100 * f / full_f:.0f}%"] for k, s, f in results],
      ["{}", "{:.0f}", "{:.2f}", "{}", "{}"])
kk = np.array([r[0] for r in results], float)
ss = np.array([r[1] for r in results])
slope, intercept = np.polyfit(kk, ss, 1)
print(f"\nstraight-line fit: time = {1e3 * intercept:.0f} ms + k x {1e3 * slope:.1f} ms")
print(f"the fixed part (k = 0: stem, shortcuts, ReLUs, head, loss, SGD on all weights) is "
      f"{100 * intercept / full_s:.0f}% of a full step; FLOP-wise it is "
      f"{100 * results[0][2] / full_f:.1f}%.")

# %% [markdown]
# ## 2. The linear rule: predicted and measured saving
#
# With p_L = 0.5, E[k] = (3L - 1)/4. The fit predicts the time of an average step; then we
# run real stochastic-depth steps (`net.sample_gates(rng)` before each) and average.
# The FLOPs saved are not exactly the share of blocks skipped: the blocks that start stages 2
# and 3 cost less, and the fixed part never shrinks. So we weight each block's traced branch
# FLOPs by its chance of being dropped, 1 - p_l.

# %%
section("2. stochastic depth (linear rule, p_L = 0.5) vs constant depth")
e_k = expected_blocks(nb, 0.5)
predicted = intercept + slope * e_k
n_sd = 3 if L.quick else 12
times, ks_drawn, flops_drawn = [], [], []
fixed_f = results[0][2]  # k = 0: everything but the branches
for _ in range(n_sd):
    gates = net.sample_gates(rng)
    ks_drawn.append(sum(gates))
    flops_drawn.append(fixed_f + sum(f for f, g in zip(branch_flops, gates) if g))
    L.sync()
    t0 = time.perf_counter()
    train_step()
    L.sync()
    times.append(time.perf_counter() - t0)
measured = float(np.mean(times))
table(["", "blocks", "ms / step", "saving vs constant depth"],
      [["constant depth (all gates open)", nb, 1e3 * full_s, "-"],
       ["linear rule, predicted by the fit", f"{e_k:.2f}", 1e3 * predicted, f"{100 * (1 - predicted / full_s):.0f}%"],
       ["  the fit at the blocks actually drawn", f"{np.mean(ks_drawn):.2f}",
        1e3 * (intercept + slope * np.mean(ks_drawn)),
        f"{100 * (1 - (intercept + slope * np.mean(ks_drawn)) / full_s):.0f}%"],
       [f"linear rule, measured ({n_sd} sampled steps)", f"{np.mean(ks_drawn):.2f}", 1e3 * measured,
        f"{100 * (1 - measured / full_s):.0f}%"]],
      ["{}", "{}", "{:.0f}", "{}"])
flop_save = sum((1 - p) * f for p, f in zip(net.survival_probs, branch_flops)) / full_f
save_fit, save_meas = 1 - predicted / full_s, 1 - measured / full_s
fixed_time, fixed_flops = intercept / full_s, fixed_f / full_f
print(f"expected saving of the linear rule: {100 * (1 - e_k / nb):.1f}% of the blocks, {100 * flop_save:.1f}% of a "
      f"step's FLOPs\n(each block's traced branch FLOPs x (1 - p_l), over the FLOPs of a full step).")
print(f"time saving: {100 * save_fit:.1f}% by the fit, {100 * save_meas:.1f}% measured over {n_sd} sampled steps.")
if save_fit < flop_save - 0.01:
    print(f"The fit's time saving is smaller than the FLOP saving: the fixed part is {100 * fixed_time:.0f}% of a")
    print(f"step's time but only {100 * fixed_flops:.1f}% of its FLOPs (the SGD update, element-wise layers and")
    print("Python overhead take time without doing many FLOPs).")
elif save_fit > flop_save + 0.01:
    print(f"The fit's time saving is LARGER than the FLOP saving (fixed part: {100 * fixed_time:.0f}% of the time,")
    print(f"{100 * fixed_flops:.1f}% of the FLOPs). Branches cost more time per FLOP than the rest here, or the")
    print("timings are noisy (likely with --quick: one step per point, small batches).")
else:
    print("The fit's time saving matches the FLOP saving to within a point.")
print("The measured steps scatter around the fit: each draws its own depth, and other work on the")
print("machine adds noise.")

# %% [markdown]
# ## 3. Per-image dropping saves nothing
#
# `mode="sample"` draws one gate per image. A block must then run its branch on the whole
# batch (other images need it) and multiply each image's branch output by its 0/1 mask:
# the same work as constant depth. We time it with sampled masks and with every mask all
# zeros (every image "drops" every block).

# %%
section("3. mode='sample' (one gate per image) vs mode='batch'")
net_s = ResNet(depth, 10, p_last=0.5, mode="sample", seed=L.seed).to(L.device)
opt_s = SGD(net_s.parameters(), lr=0.01)
net_s.sample_gates(rng, batch_size=batch)
with minisd.trace() as t:
    train_step(net_s, opt_s)
flops_s = sum(e.flops for e in t.events)
t_sample = L.timeit(lambda: train_step(net_s, opt_s), repeat=repeat, warmup=0)
kept = np.mean([b.mask.mean() for b in net_s.blocks])
for b in net_s.blocks:
    b.mask = np.zeros(batch, bool)
with minisd.trace() as t:  # traced again: the FLOPs with every mask all zeros
    train_step(net_s, opt_s)
flops_zero = sum(e.flops for e in t.events)
t_zero = L.timeit(lambda: train_step(net_s, opt_s), repeat=repeat, warmup=0)
table(["setting", "ms / step", "GFLOP / step", "time vs constant depth"],
      [["batch mode, all gates open", 1e3 * full_s, full_f / 1e9, "100%"],
       [f"sample mode, masks drawn ({100 * kept:.0f}% of images kept)", 1e3 * t_sample, flops_s / 1e9,
        f"{100 * t_sample / full_s:.0f}%"],
       ["sample mode, every mask all zeros", 1e3 * t_zero, flops_zero / 1e9, f"{100 * t_zero / full_s:.0f}%"],
       ["batch mode, linear rule (measured above)", 1e3 * measured, float(np.mean(flops_drawn)) / 1e9,
        f"{100 * measured / full_s:.0f}%"]],
      ["{}", "{:.0f}", "{:.2f}", "{}"])
print("(GFLOP of the linear-rule row: the mean over the sampled steps of the fixed part plus the branches")
print("that ran, from the traces of section 1.)")
if min(flops_s, flops_zero) >= 0.99 * full_f:
    print("Sample mode executes the FLOPs of the full network whatever the masks say: every branch runs on")
    print("the whole batch. It regularises (each image sees its own sub-network) but saves no work.")
else:
    print("Sample mode executed fewer FLOPs than the full network here - not what minisd's sample mode")
    print("should do (every branch runs on the whole batch); look at the trace.")
if min(t_sample, t_zero) > measured:
    print("In time, too, both sample-mode rows are slower than batch mode with the linear rule: only one gate")
    print("per mini-batch lets a whole branch be skipped - the paper's choice.")
else:
    print("In time the rows are not ordered as the FLOPs predict here: with --quick sizes (one step per")
    print("timing, small batches) noise from other work on the machine can be as large as the differences.")

# %% [markdown]
# ## 4. Figure

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
axes[0].plot(kk, 1e3 * ss, "o", label="measured (batch mode)")
axes[0].plot(kk, 1e3 * (intercept + slope * kk), "-", lw=1, label="straight-line fit")
axes[0].axhline(1e3 * t_sample, color="C3", ls="--", label="sample mode (any masks)")
axes[0].plot([np.mean(ks_drawn)], [1e3 * measured], "*", ms=12, color="C2", label="linear rule, sampled gates")
axes[0].set_xlabel("surviving blocks k")
axes[0].set_ylabel("ms per training step")
axes[0].set_title(f"ResNet-{depth}, batch {batch} ({L.device})")
ff = np.array([r[2] for r in results]) / full_f
axes[1].plot(100 * ff, 100 * ss / full_s, "o-", label="measured")
axes[1].plot([0, 100], [0, 100], "k:", lw=1, label="time = FLOPs")
axes[1].set_xlabel("FLOPs executed (% of constant depth)")
axes[1].set_ylabel("time (% of constant depth)")
axes[1].set_title("FLOPs saved vs time saved")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
L.save_figure(fig, "time_vs_blocks.png")

# %% [markdown]
# ## Summary
# * time per step is affine in the number of surviving blocks: a fixed part plus a cost per
#   block; stochastic depth removes ~25% of the per-block part;
# * only per-mini-batch gates save time; per-image masks cost as much as the full network.

# %%
L.try_this()
