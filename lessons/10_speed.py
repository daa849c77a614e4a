"""Lesson 10 - Speed: does dropping blocks make training faster? Time per step vs surviving blocks.

What you will learn
  * a training step's time is (nearly) a straight line in the number k of blocks that run:
    we set the gates to keep exactly k blocks and time forward + backward + SGD update,
    several rounds in alternating order, and fit a line (with its R^2 and its spread);
  * FLOPs saved vs time saved: the fit's prediction for the paper's linear rule (p_L = 0.5)
    against the fit for constant depth, compared with the FLOP count; then real sampled steps;
  * whether dropping per IMAGE with a mask (minisd's mode="sample", torchvision's "row" mode)
    saves anything: every branch still runs on the whole batch and the dropped images are
    multiplied by zero - and whether running a branch on the kept images only saves work,
    at a cost to batch norm. Each claim is a paired ratio per round, with its range.

Run
  python lessons/10_speed.py            # run it on a quiet machine: it times things
  python lessons/10_speed.py --quick
  (options: --device gpu, --out DIR, --seed N, --depth D, --batch-size B, --rounds R)

Try this
  1. Run with --batch-size 8: the fixed part of a step (the intercept of the fit) becomes a
     larger share. How does that change the time saved by stochastic depth?
  2. Which blocks you keep matters a little: keep the first k blocks instead of a random
     subset (net.set_gates([i < k for i in range(nb)])). Are early blocks cheaper or dearer?
     Compare with the per-block FLOPs in lesson 6.
  3. Section 4 ran one branch on its kept images only. Write a ResidualBlock whose forward
     does that for every block (x[mask] in, scatter the result back; the same in backward)
     and train lesson 7's network with it. How do its BN running statistics differ from
     batch mode's, and what batch size does each branch see?
"""
# %% [markdown]
# # Lesson 10: speed
#
# Stochastic depth promises faster training because a dropped block's branch is never
# computed (lesson 5). Lesson 6 counted ~25% fewer FLOPs in expectation for the linear rule.
# FLOPs are not seconds, though: every step also has fixed costs (the stem, shortcuts,
# ReLUs, the loss, the optimizer update of every weight, Python overhead). Here we time it.
#
# Timing on a shared machine: other programs slow some steps down. So every setting is
# timed several times, in rounds that run all settings one after the other (in reverse
# order every second round, `L.interleaved`), and we report medians, the spread over the
# rounds, and ratios of two settings within each round (`paired`). Lesson 14, the speed
# appendix, explains this method and shows why it matters.

# %%
import numpy as np

import minisd
from minisd import ResNet, SoftmaxCrossEntropy, expected_blocks
from minisd.optim import SGD
from _common import paired, plt, section, setup, spread, table


def extra(p):
    p.add_argument("--depth", type=int, default=None, help="ResNet depth (default 56; quick: 20)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 64; quick: 16)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds per setting (default 5; quick: 5)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (20 if L.quick else 56)
batch = L.args.batch_size or (16 if L.quick else 64)
rounds = L.args.rounds or 5

net = ResNet(depth, 10, p_last=0.5, seed=L.seed).to(L.device)
nb = len(net.blocks)
opt = SGD(net.parameters(), lr=0.01)
loss_fn = SoftmaxCrossEntropy()
rng = np.random.default_rng(L.seed)
x = xp.asarray(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
y = xp.asarray(rng.integers(0, 10, batch))
print(f"{net}\nbatch {batch} of 32x32 images; every setting timed in {rounds} rounds after a warm-up step")
mechanics = []  # what the code does, checked: (claim, number, criterion, supported?)
claims = []  # the paper's claim that dropping blocks saves time, tried here: (..., what it teaches)
NOISE = "timing on a shared machine: rerun it quiet (the load average is in the record) before reading a 'no'"


def train_step(model=net, optimizer=opt):
    """One full training step: forward, loss, backward, SGD update (dropped weights: 'paper')."""
    model.zero_grad()
    loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward())
    optimizer.step(inactive=model.inactive_parameter_names())


# %% [markdown]
# ## 1. Time per step vs number of surviving blocks
#
# For several k we pick k blocks at random (seeded) and open exactly those gates with
# `net.set_gates`; one traced step per k counts the FLOPs executed (and warms up), then the
# rounds time untraced steps. A straight line through the medians gives the fixed part
# (intercept) and the cost of one block (slope); R^2 says how straight the line is, and a
# line fitted to each round alone shows how much the slope moves from round to round.

# %%
section(f"1. time per training step vs surviving blocks (ResNet-{depth}, L = {nb})")
ks = sorted({0, nb // 4, nb // 2, 3 * nb // 4, nb}) if L.quick else sorted({0, nb // 5, 2 * nb // 5, 3 * nb // 5,
                                                                              4 * nb // 5, nb})
gates_for = {}
flops = {}
for k in ks:
    keep = set(rng.choice(nb, size=k, replace=False).tolist())
    gates_for[k] = [i in keep for i in range(nb)]
    net.set_gates(gates_for[k])
    with minisd.trace() as t:  # also serves as the warm-up step
        train_step()
    flops[k] = sum(e.flops for e in t.events)
    if k == nb:  # every branch ran: keep each block's branch FLOPs (forward + backward) for section 2
        branch_flops = [sum(e.flops for e in t.events if e.block == i and ".branch." in e.layer) for i in range(nb)]


def step_with(k):
    def run():
        net.set_gates(gates_for[k])
        train_step()
    return run


times = L.interleaved({k: step_with(k) for k in ks}, rounds)
med = {k: float(np.median(times[k])) for k in ks}
kk = np.array(ks, float)
ss = np.array([med[k] for k in ks])
slope, intercept = np.polyfit(kk, ss, 1)
fit = lambda k, a=intercept, b=slope: a + b * k
r2 = 1 - np.sum((ss - fit(kk)) ** 2) / np.sum((ss - ss.mean()) ** 2)
round_fits = [np.polyfit(kk, [times[k][r] for k in ks], 1) for r in range(rounds)]  # (slope, intercept) per round
full_fit, full_f = fit(nb), flops[nb]
table(["blocks run k", "ms / step (median)", f"min-max of {rounds}", "fit", "GFLOP / step", "FLOPs vs all"],
      [[k, 1e3 * med[k], spread(times[k]), 1e3 * fit(k), flops[k] / 1e9, f"{100 * flops[k] / full_f:.0f}%"]
       for k in ks], ["{}", "{:.0f}", "{}", "{:.0f}", "{:.2f}", "{}"])
slopes = [1e3 * b for b, _ in round_fits]
print(f"\nstraight-line fit through the medians: time = {1e3 * intercept:.0f} ms + k x {1e3 * slope:.1f} ms, "
      f"R^2 = {r2:.3f}")
print(f"the slope fitted to each round alone: median {np.median(slopes):.1f} ms per block, "
      f"range {min(slopes):.1f}-{max(slopes):.1f}")
print(f"the fixed part (k = 0: stem, shortcuts, ReLUs, head, loss, SGD on all weights) is "
      f"{100 * intercept / full_fit:.0f}% of the fit's full step; FLOP-wise it is {100 * flops[0] / full_f:.1f}%.")
if r2 > 0.95:
    print(f"R^2 = {r2:.3f}: the time per step is close to a straight line in k.")
else:
    print(f"R^2 = {r2:.3f} is low: the medians scatter around the line (other work on the machine, or too few")
    print("rounds); the savings below inherit that noise. Rerun with more --rounds.")
claims.append(("step time is a straight line in the blocks run", f"R^2 = {r2:.3f}", "> 0.95", r2 > 0.95,
               "a skipped block saves a fixed time only when nothing else competes for the cores; " + NOISE))

# %% [markdown]
# ## 2. The linear rule: predicted and measured saving
#
# With p_L = 0.5, E[k] = (3L - 1)/4. The saving predicted by the fit is one point of the line
# against another: 1 - fit(E[k]) / fit(L). (Dividing by a separately measured full step
# would mix the fit's error with one measurement's noise.) Its spread comes from the
# per-round fits. The FLOPs saved are not exactly the share of blocks skipped: the blocks
# that start stages 2 and 3 cost less, and the fixed part never shrinks. So we weight each
# block's traced branch FLOPs by its chance of being dropped, 1 - p_l.
#
# Then real stochastic-depth steps (`net.sample_gates(rng)` before each), each timed right
# after an all-open step, so both see the same machine.

# %%
section("2. stochastic depth (linear rule, p_L = 0.5) vs constant depth")
e_k = expected_blocks(nb, 0.5)
save_fit = 1 - fit(e_k) / fit(nb)
save_rounds = [1 - (a + b * e_k) / (a + b * nb) for b, a in round_fits]
flop_save = sum((1 - p) * f for p, f in zip(net.survival_probs, branch_flops)) / full_f
n_sd = 8 if L.quick else 12
sampled, full, ks_drawn = [], [], []
for _ in range(n_sd):
    net.open_all_gates()
    full.append(L.clock(train_step))
    ks_drawn.append(sum(net.sample_gates(rng)))
    sampled.append(L.clock(train_step))
pair_saves = [1 - s_ / f_ for s_, f_ in zip(sampled, full)]          # one saving per (all-open, sampled) pair
q1, q3 = np.percentile(pair_saves, [25, 75])                        # the middle half of the pairs' savings
line_saves = [1 - fit(k) / fit(nb) for k in ks_drawn]               # what the line says for the same draws
save_meas, save_line = float(np.median(pair_saves)), float(np.median(line_saves))
table(["", "blocks", "ms / step", "saving vs constant depth"],
      [["constant depth, fit at k = L", nb, 1e3 * fit(nb), "-"],
       ["linear rule, fit at E[k]", f"{e_k:.2f}", 1e3 * fit(e_k),
        f"{100 * save_fit:.1f}% (per-round fits: {100 * min(save_rounds):.1f}-{100 * max(save_rounds):.1f}%)"],
       ["expected FLOP saving", "", "", f"{100 * flop_save:.1f}%"],
       [f"constant depth, measured ({n_sd} steps)", nb, 1e3 * np.median(full), "-"],
       [f"linear rule, measured ({n_sd} sampled steps)", f"{np.mean(ks_drawn):.2f}", 1e3 * np.median(sampled),
        f"{100 * save_meas:.1f}% (median of {n_sd} pairs; range {100 * min(pair_saves):.0f}-"
        f"{100 * max(pair_saves):.0f}%)"]],
      ["{}", "{}", "{:.0f}", "{}"])
print(f"expected saving of the linear rule: {100 * (1 - e_k / nb):.1f}% of the blocks, {100 * flop_save:.1f}% of a "
      f"step's FLOPs\n(each block's traced branch FLOPs x (1 - p_l), over the FLOPs of a full step).")
fixed_time, fixed_flops = intercept / fit(nb), flops[0] / full_f
if min(save_rounds) <= flop_save <= max(save_rounds):
    below_flops = "not shown"
    print(f"The fit's time saving ({100 * save_fit:.1f}%) matches the FLOP saving ({100 * flop_save:.1f}%) within "
          "the spread of the per-round fits.")
elif flop_save > max(save_rounds):
    below_flops = "yes"
    print("The fit's time saving is smaller than the FLOP saving in every round: the fixed part is "
          f"{100 * fixed_time:.0f}%")
    print(f"of a step's time but only {100 * fixed_flops:.1f}% of its FLOPs (the SGD update, element-wise layers and")
    print("Python overhead take time without doing many FLOPs).")
else:
    below_flops = "no: the opposite holds"
    print("The fit's time saving is LARGER than the FLOP saving in every round (fixed part: "
          f"{100 * fixed_time:.0f}% of")
    print(f"the time, {100 * fixed_flops:.1f}% of the FLOPs): here the branches cost more time per FLOP than the rest.")
claims.append(("the line's time saving is below the FLOP saving",
               f"{100 * save_fit:.1f}% ({100 * min(save_rounds):.1f}-{100 * max(save_rounds):.1f}%) vs "
               f"{100 * flop_save:.1f}%", "FLOP saving above every round's fit", below_flops,
               "the FLOP saving lies within the per-round fits' spread: the fixed part's share of the time cannot "
               "be told from its share of the FLOPs here; " + NOISE if below_flops == "not shown" else
               "here the branches cost more time per FLOP than the fixed part; " + NOISE))
print(f"Sampled steps against their all-open neighbours: median saving {100 * save_meas:.1f}% (middle half of the "
      f"{n_sd} pairs {100 * q1:.0f} to {100 * q3:.0f}%);\nthe line predicts {100 * save_line:.1f}% for the depths "
      "drawn.")
line_holds = q1 <= save_line <= q3
if line_holds:
    print("That lies within the middle half of the pairs' savings: the sampled steps save what the line predicts,")
    print("though single steps scatter widely.")
else:
    print(f"That lies outside the middle half of the pairs' savings: the sampled steps saved "
          f"{'less' if save_line > q3 else 'more'} than the line")
    print("predicts. Which blocks a draw keeps matters (next section), or the machine's load changed between the")
    print("measurements (rerun with more --rounds before drawing a conclusion).")
claims.append(("sampled steps save what the line predicts for their draws",
               f"{100 * save_meas:.1f}% (middle half {100 * q1:.0f} to {100 * q3:.0f}%) vs {100 * save_line:.1f}%",
               f"line within the interquartile range of the {n_sd} pairs", line_holds,
               f"the sampled steps saved {'less' if save_line > q3 else 'more'} than the line predicts: blocks differ "
               "in cost by stage, so which blocks a draw keeps matters, not only how many; " + NOISE))

# %% [markdown]
# ### Do all blocks cost the same time?
#
# The line treats every block alike: its k open blocks were picked at random. But with the
# same FLOPs, a first-stage block (16 channels, 32x32) moves four times as many activations
# through batch norm and ReLU as a third-stage block (64 channels, 8x8), and its 16-row
# matrix products may run slower. The linear rule keeps the first blocks most often; if they
# are dearer, it keeps more than its share of the time. Weighting each block by its own
# traced time gives the expected saving of the rule; the trace below measures it.

# %%
net.open_all_gates()
with minisd.trace() as t:
    train_step()
block_time = np.array([sum(e.seconds for e in t.events if e.block == i and ".branch." in e.layer)
                       for i in range(nb)])
stage_means = [1e3 * part.mean() for part in np.array_split(block_time, 3)]
print("branch time per block (traced, forward + backward): "
      + ", ".join(f"stage {i + 1} {m:.1f} ms" for i, m in enumerate(stage_means)))
share_kept = sum(p * tb for p, tb in zip(net.survival_probs, block_time)) / block_time.sum()
print(f"the linear rule keeps {100 * e_k / nb:.0f}% of the blocks but, weighted by their time, "
      f"{100 * share_kept:.0f}% of the branch time")
step_traced = sum(e.seconds for e in t.events)
save_weighted = (1 - share_kept) * block_time.sum() / step_traced
print(f"so the expected saving, time-weighted, is {100 * save_weighted:.1f}% of a step (the line: "
      f"{100 * save_fit:.1f}% at E[k]; measured pairs: median {100 * save_meas:.1f}%)")
stage1_dearer = stage_means[0] > 1.2 * stage_means[2]
dearer_first = stage1_dearer and save_weighted < save_fit
if dearer_first:
    print("first-stage blocks cost more than third-stage ones and the rule keeps them most: weighted by time,")
    print("the rule saves less than the share of blocks it drops.")
elif stage1_dearer:
    print("first-stage blocks cost more than third-stage ones, yet weighted by time the rule saves no less than")
    print("the line says: here the dearer early blocks do not lower the saving.")
else:
    print("the stages cost about the same here (stage 1 within 1.2x stage 3): the block weighting changes little.")
claims.append(("first-stage blocks cost more time, so the time-weighted saving is below the line's",
               f"stage 1 {stage_means[0]:.1f} vs stage 3 {stage_means[2]:.1f} ms; {100 * save_weighted:.1f}% vs "
               f"{100 * save_fit:.1f}%", "stage 1 > 1.2x stage 3, weighted < line", dearer_first,
               "the dearer early blocks do not lower the expected saving here: the line's estimate holds; " + NOISE
               if stage1_dearer else
               "where the stages cost alike, linear decay's keeping of early blocks costs nothing extra; " + NOISE))

# %% [markdown]
# ## 3. Does per-image dropping with a mask save anything?
#
# `mode="sample"` draws one gate per image. A block then runs its branch on the whole batch
# (other images need it) and multiplies each image's branch output by its 0/1 mask: the same
# FLOPs as constant depth. torchvision's `stochastic_depth(..., mode="row")` does the same.
# We time it with sampled masks and with every mask all zeros (every image "drops" every
# block), in rounds with batch mode (all gates open, and the linear rule's sampled gates).
# Every comparison is a ratio of two steps timed in the same round, so a slow spell of the
# machine hits both; we report the median ratio and its range over the rounds.

# %%
section("3. mode='sample' (one gate per image, a mask) vs mode='batch'")
net_s = ResNet(depth, 10, p_last=0.5, mode="sample", seed=L.seed).to(L.device)
opt_s = SGD(net_s.parameters(), lr=0.01)
net_s.sample_gates(rng, batch_size=batch)
masks = [b.mask.copy() for b in net_s.blocks]
kept = np.mean([m.mean() for m in masks])
with minisd.trace() as t:
    train_step(net_s, opt_s)
flops_s = sum(e.flops for e in t.events)
for b in net_s.blocks:
    b.mask = np.zeros(batch, bool)
with minisd.trace() as t:  # traced again: the FLOPs with every mask all zeros
    train_step(net_s, opt_s)
flops_zero = sum(e.flops for e in t.events)
net.sample_gates(rng)
with minisd.trace() as t:
    train_step()
flops_sd = sum(e.flops for e in t.events)


def with_masks(ms):
    def run():
        for b, m in zip(net_s.blocks, ms):
            b.mask = m
        train_step(net_s, opt_s)
    return run


def batch_all_open():
    net.open_all_gates()
    train_step()


def batch_linear_rule():
    net.sample_gates(rng)
    train_step()


zeros = [np.zeros(batch, bool)] * nb
settings = {"batch mode, all gates open": batch_all_open,
            f"sample mode, masks drawn ({100 * kept:.0f}% of images kept)": with_masks(masks),
            "sample mode, every mask all zeros": with_masks(zeros),
            "batch mode, linear rule (sampled gates)": batch_linear_rule}
t3 = L.interleaved(settings, rounds)
names = list(settings)
m3 = {n: float(np.median(t3[n])) for n in names}
base = m3[names[0]]
vs_open = {n: paired(t3[n], t3[names[0]]) for n in names}
table(["setting", "ms / step (median)", f"min-max of {rounds}", "GFLOP / step", "time vs all open, paired"],
      [[n, 1e3 * m3[n], spread(t3[n]), f / 1e9, vs_open[n][1] if n != names[0] else "100%"]
       for n, f in zip(names, [full_f, flops_s, flops_zero, flops_sd])],
      ["{}", "{:.0f}", "{}", "{:.2f}", "{}"])
print("(GFLOP of the linear-rule row: one traced step with one draw of the gates; time vs all open: the")
print(f"median of the {rounds} per-round ratios, and their range.)")
same_flops = min(flops_s, flops_zero) >= 0.99 * full_f
if same_flops:
    print("Sample mode executes the FLOPs of the full network whatever the masks say: every branch runs on")
    print("the whole batch. It regularises (each image sees its own sub-network) but saves no work.")
else:
    print("Sample mode executed fewer FLOPs than the full network here - not what minisd's sample mode")
    print("should do (every branch runs on the whole batch); look at the trace.")
mechanics.append(("a masked (sample-mode) step executes the full network's FLOPs",
                  f"{100 * min(flops_s, flops_zero) / full_f:.0f}% of all-open", ">= 99%", same_flops))
masked = [min(a, b) for a, b in zip(t3[names[1]], t3[names[2]])]  # the cheaper sample-mode row, per round
ratios_open, text_open = paired(masked, t3[names[0]])
# "saves no time": the median masked step takes at least 95% of an all-open one; a saving counts
# only when the median is below 95% and every round is below 100%
if np.median(ratios_open) >= 0.95:
    no_time_saved = "yes"
    print(f"In time, a masked step took {text_open} of an all-open step: the median is within 5% of it, no saving.")
    print("Multiplying by zero still does the work: only skipping a call saves time.")
elif max(ratios_open) < 1:
    no_time_saved = "no"
    print(f"In time, a masked step took {text_open} of an all-open step, less in every round: a saving the FLOPs")
    print("do not explain (multiplying by a mask of zeros is no cheaper); likely memory traffic or the machine.")
else:
    no_time_saved = "not shown"
    print(f"In time, a masked step took {text_open} of an all-open step: a median below 95%, but not less in every")
    print("round: the rounds scatter too widely to tell (rerun it quiet, or with more --rounds).")
claims.append(("a masked step saves no time against all gates open", text_open,
               "median >= 95% (no: median < 95% and every round < 100%)", no_time_saved,
               "a masked step was faster in every round although it does the same FLOPs: memory traffic or the "
               "machine, not skipped work; " + NOISE if no_time_saved == "no" else
               "the median is below 95% but not every round: the rounds scatter too widely to tell; " + NOISE))
ratios_rule, text_rule = paired(masked, t3[names[3]])
if min(ratios_rule) > 1:
    print(f"Against batch mode with the linear rule a masked step took {text_rule}: slower in all {rounds} rounds;")
    print("with a mask, only a gate per mini-batch lets a whole branch be skipped.")
elif max(ratios_rule) < 1:
    print(f"Against batch mode with the linear rule a masked step took {text_rule}: FASTER in every round, although")
    print("it runs every branch; noise from other work on the machine is the likely cause (rerun it quiet).")
else:
    print(f"Against batch mode with the linear rule a masked step took {text_rule}: not slower in every round;")
    print("at these sizes noise from other work on the machine is as large as the difference.")
claims.append(("a masked step is slower than batch mode's linear rule", text_rule, "> 100% in every round",
               "yes" if min(ratios_rule) > 1 else "no: the opposite holds" if max(ratios_rule) < 1 else "not shown",
               NOISE))

# %% [markdown]
# ## 4. Per-image dropping that does save work: the branch on the kept images only
#
# A mask is not the only way to drop per image. A block can gather the images whose gate is
# open, run its branch on those alone, and scatter the result back (the shortcut still runs
# on every image). Then the branch's work shrinks with the number of images kept. The cost:
# batch norm inside the branch normalises with the mean and variance of the kept images only
# - a smaller batch, a different one in every block and every step - so its statistics are
# noisier, and the running statistics average over batches of varying size.
# We time one branch (block 2, 16 channels at 32 x 32), forward and backward, on the whole
# batch and on the images of one draw with p = 0.5.

# %%
section("4. one branch on the whole batch vs on the kept images only")
block = net.blocks[1]
c_in = block.in_channels
h = xp.asarray(rng.standard_normal((batch, c_in, 32, 32)).astype(np.float32))
mask = rng.random(batch) < 0.5
if mask.sum() == 0:
    mask[0] = True
idx = xp.asarray(np.flatnonzero(mask))


def branch_on(images):
    def run():
        out = block.branch.forward(images)
        block.branch.backward(xp.ones_like(out))
    return run


def branch_kept_scattered():
    out = xp.zeros((batch, block.out_channels, 32, 32), dtype=h.dtype)
    out[idx] = block.branch.forward(h[idx])   # gather, run, scatter back
    block.branch.backward(xp.ones_like(out[idx]))


branch_on(h)()  # warm-up of both sizes
branch_kept_scattered()
t4 = L.interleaved({"whole batch": branch_on(h), "kept images only": branch_kept_scattered}, rounds)
m_all, m_kept = float(np.median(t4["whole batch"])), float(np.median(t4["kept images only"]))
share = mask.mean()
ratios_kept, text_kept = paired(t4["kept images only"], t4["whole batch"])
table(["branch of block 2 (forward + backward)", "images", "ms (median)", f"min-max of {rounds}",
       "time vs whole batch, paired"],
      [["whole batch (what a mask costs)", batch, 1e3 * m_all, spread(t4["whole batch"]), "100%"],
       ["kept images only, scattered back", int(mask.sum()), 1e3 * m_kept, spread(t4["kept images only"]), text_kept]],
      ["{}", "{}", "{:.1f}", "{}", "{}"])
faster = sum(r < 1 for r in ratios_kept)
saves = faster == rounds and float(np.median(ratios_kept)) < 0.9
claims.append((f"a branch on the {100 * share:.0f}% kept images only is faster", text_kept,
               "< 90% median, < 100% every round", saves,
               "gathering the kept images costs copies; the saving needs a large enough share dropped; " + NOISE))
if saves:
    print(f"The branch on the {100 * share:.0f}% of images kept took {text_kept} of the time, faster in all "
          f"{rounds} rounds: per-image")
    print("dropping does save work when the dropped images are left out rather than multiplied by zero - at the")
    print("cost to batch norm described above. The paper's per-mini-batch gate saves the whole branch and keeps")
    print("every batch-norm batch whole.")
else:
    print(f"The branch on the kept images was not clearly faster here ({text_kept} of the time, faster in "
          f"{faster} of {rounds} rounds):")
    print("at this batch size the fixed costs of a layer call and timing noise are as large as the work saved.")
    print("Try --batch-size 128.")

# %% [markdown]
# ## 5. Figure

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
for k in ks:
    axes[0].plot([k] * rounds, 1e3 * np.array(times[k]), ".", color="C0", alpha=0.4)
axes[0].plot(kk, 1e3 * ss, "o", color="C0", label=f"median of {rounds} rounds (batch mode)")
axes[0].plot(kk, 1e3 * fit(kk), "-", lw=1, color="C0", label=f"straight-line fit (R^2 = {r2:.3f})")
axes[0].axhline(1e3 * m3[names[1]], color="C3", ls="--", label="sample mode, masks drawn (median, section 3)")
axes[0].plot(ks_drawn, 1e3 * np.array(sampled), "*", ms=8, color="C2", label="linear rule, sampled gates")
axes[0].set_xlabel("surviving blocks k")
axes[0].set_ylabel("ms per training step")
axes[0].set_title(f"ResNet-{depth}, batch {batch} ({L.device})")
ff = np.array([flops[k] for k in ks]) / full_f
axes[1].plot(100 * ff, 100 * ss / fit(nb), "o-", label="measured (median)")
axes[1].plot([0, 100], [0, 100], "k:", lw=1, label="time = FLOPs")
axes[1].set_xlabel("FLOPs executed (% of constant depth)")
axes[1].set_ylabel("time (% of the fit at k = L)")
axes[1].set_title("FLOPs saved vs time saved")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
L.save_figure(fig, "time_vs_blocks.png")

# %%
section("findings")
L.report_findings(mechanics, claims)

# %% [markdown]
# ## Summary
# * time per step is modelled as affine in the number of surviving blocks: a fixed part plus a
#   cost per block (R^2 and the per-round slopes above say how close it comes); the linear
#   rule removes about a quarter of the per-block part;
# * per-image masks (mode="sample", torchvision's "row") execute the full network's FLOPs
#   (section 3 printed what that cost in time, paired per round); running a branch on its
#   kept images only can save work, but changes what batch norm sees;
#   one gate per mini-batch - the paper's - skips whole branches and keeps BN's batch whole.

# %%
L.try_this()
