"""Lesson 6 - Survival rules: linear decay vs uniform, expected depth, and the depths actually sampled.

What you will learn
  * the paper's linear decay rule p_l = 1 - (l / L)(1 - p_L) and the uniform rule p_l = p_L;
  * the expected number of surviving blocks, E = sum_l p_l, which for linear decay with
    p_L = 0.5 is (3L - 1) / 4 - e.g. 40.25 of the 54 blocks of a ResNet-110;
  * how much work that saves in expectation (FLOPs), and how much the depth varies from one
    mini-batch to the next: a histogram of sampled depths from net.sample_gates.

Run
  python lessons/06_survival_rules.py
  python lessons/06_survival_rules.py --quick
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Derive (3L - 1)/4 by hand: sum over l = 1..L of 1 - l/(2L). Then find the p_L for which
     the linear rule keeps on average half of the blocks. (Solution: the cell after section 1.)
  2. The paper's ResNet-1202 (L = 600) with p_L = 0.5: what are the mean and the standard
     deviation of its depth? Is the std larger or smaller relative to the mean than for
     ResNet-110? Why (hint: a sum of independent Bernoulli variables)?
  3. Invent a rule of your own (e.g. p_l decaying linearly only in the last stage) and
     compute its expected FLOP saving with the per-block FLOPs of section 3.
"""
# %% [markdown]
# # Lesson 6: survival rules
#
# Each residual block l = 1..L survives a mini-batch with probability p_l. The paper's rule
# decays linearly from p_0 = 1 (the input is always kept) to p_L for the last block:
#
#     p_l = 1 - (l / L) (1 - p_L),     p_L = 0.5 in all of the paper's experiments.
#
# The reasoning: early blocks extract low-level features that every later block uses, so
# they should almost always be present. The uniform rule p_l = p_L is the alternative the
# paper compares against (its Figure 8); it finds linear decay the more robust choice.

# %%
import numpy as np

import minisd
from minisd import ResNet, SoftmaxCrossEntropy, expected_blocks, survival_probabilities
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp
findings = []  # (claim, number, criterion, supported?)

# %% [markdown]
# ## 1. The probabilities and the expected depth

# %%
section("1. survival probabilities and expected number of blocks (linear, p_L = 0.5)")
rows = []
for depth in (20, 32, 56, 110, 1202):
    nb = 3 * ((depth - 2) // 6)
    p = survival_probabilities(nb, 0.5, "linear")
    mid = nb // 2  # block l = floor(L/2), 1-based: p[mid - 1]
    rows.append([f"ResNet-{depth}", nb, p[0], f"{mid}", p[mid - 1], p[-1], expected_blocks(nb, 0.5, "linear"),
                 (3 * nb - 1) / 4, expected_blocks(nb, 0.5, "uniform")])
table(["network", "L", "p_1", "middle block l", "p_l there", "p_L", "E[blocks]", "(3L-1)/4", "uniform 0.5"], rows,
      ["{}", "{}", "{:.3f}", "{}", "{:.3f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.1f}"])
print("'middle block l' = floor(L/2); 'p_l there' is its survival probability (1 - 1/4 = 0.75 exactly for even L, 0.75 + 1/(4L) for odd L).")
worst = max(abs(r[6] - r[7]) for r in rows)
print(f"E[blocks] = sum of p_l, computed by minisd.expected_blocks; largest |E[blocks] - (3L-1)/4|: {worst:.1e}.")

# %% [markdown]
# ### The derivation (the solution of "Try this" 1)
#
# With p_L = 1/2 the rule is p_l = 1 - (l/L)(1/2) = 1 - l/(2L). Sum over l = 1..L:
#
#     E[blocks] = sum_l p_l = L - (1/(2L)) sum_{l=1}^{L} l
#               = L - (1/(2L)) L(L+1)/2
#               = L - (L+1)/4
#               = (3L - 1)/4.
#
# ResNet-110 (L = 54): (162 - 1)/4 = 40.25 blocks. For a general p_L the same steps give
# E = L - (1 - p_L)(L+1)/2. Half of the blocks on average, E = L/2, needs
# (1 - p_L)(L+1)/2 = L/2, i.e. p_L = 1/(L+1): for L = 54, p_L = 1/55 = 0.018 - the linear
# rule can hardly go below 3/4 of the depth without nearly always dropping the last blocks.
# Below: both formulas against minisd.expected_blocks for every L from 1 to 200.

# %%
section("1b. the derivation checked against minisd.expected_blocks, L = 1..200")
Ls = range(1, 201)
err_34 = max(abs(expected_blocks(n, 0.5, "linear") - (3 * n - 1) / 4) for n in Ls)
err_half = max(abs(expected_blocks(n, 1 / (n + 1), "linear") - n / 2) for n in Ls)
table(["formula", "checked for", "largest |minisd - formula|"],
      [["E = (3L - 1)/4 at p_L = 0.5", "L = 1..200", err_34],
       ["E = L/2 at p_L = 1/(L+1)", "L = 1..200", err_half]], ["{}", "{}", "{:.1e}"])
findings.append(("E[blocks] = (3L - 1)/4 for linear, p_L = 0.5", f"{err_34:.1e}",
                 "|expected_blocks - formula| < 1e-9, L = 1..200", err_34 < 1e-9))
findings.append(("p_L = 1/(L+1) keeps half the blocks on average", f"{err_half:.1e}",
                 "|expected_blocks - L/2| < 1e-9, L = 1..200", err_half < 1e-9))
print("ResNet-110: (3 * 54 - 1)/4 = 40.25 =", expected_blocks(54, 0.5, "linear"))

nb = 54  # ResNet-110
target = expected_blocks(nb, 0.5, "linear")
p_uniform = target / nb
print(f"\nA uniform rule with the same expected depth as linear/0.5 on ResNet-110 needs "
      f"p_L = {target:.2f}/{nb} = {p_uniform:.3f}.")

# %% [markdown]
# ## 2. Sampled depths: what the network actually trains with
#
# `net.sample_gates(rng)` draws every gate once per mini-batch. The number of surviving
# blocks is a sum of independent Bernoulli(p_l) variables: mean sum p_l, variance
# sum p_l (1 - p_l). We draw many mini-batches' gates for a ResNet-110 under three rules.

# %%
section("2. sampled number of surviving blocks, ResNet-110 (L = 54)")
draws = 1000 if L.quick else 20000
rng = np.random.default_rng(L.seed)
rules = [("linear, p_L=0.5", dict(p_last=0.5, rule="linear")),
         (f"uniform, p={p_uniform:.3f}", dict(p_last=p_uniform, rule="uniform")),
         ("uniform, p=0.5", dict(p_last=0.5, rule="uniform"))]
samples, rows, per_block = {}, [], {}
for label, kw in rules:
    net = ResNet(110, 10, seed=L.seed, **kw)
    gates = np.array([net.sample_gates(rng) for _ in range(draws)])  # (draws, 54) bools
    depth_run = gates.sum(axis=1)
    samples[label] = depth_run
    per_block[label] = gates.mean(axis=0)
    p = np.array(net.survival_probs)
    rows.append([label, p.sum(), depth_run.mean(), np.sqrt((p * (1 - p)).sum()), depth_run.std(),
                 depth_run.min(), depth_run.max()])
table(["rule", "E[blocks]", "sampled mean", "theory std", "sampled std", "min", "max"], rows,
      ["{}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{}", "{}"])
err = np.abs(per_block["linear, p_L=0.5"] - np.array(survival_probabilities(54, 0.5))).max()
print(f"({draws} draws each; the per-block survival frequencies match p_l to within {err:.3f})")
lin, uni = rows[0], rows[1]
se_std = lambda r: r[4] / np.sqrt(2 * (draws - 1))  # standard error of a sample std (about normal)
less = lin[4] + 2 * se_std(lin) < uni[4] - 2 * se_std(uni)
findings.append(("sampled mean depth = E[blocks] (linear, p_L = 0.5)", f"{lin[2]:.2f} vs {lin[1]:.2f}",
                 "within 3 standard errors", bool(abs(lin[2] - lin[1]) < 3 * lin[3] / np.sqrt(draws))))
findings.append(("same mean: linear varies less than uniform", f"std {lin[4]:.2f} vs {uni[4]:.2f}",
                 "apart by > 2 s.e. each", bool(less)))
if less:
    print("With the same mean, the linear rule varies a little less: its p_l near 1 hardly ever drop.")
else:
    print("not shown: at this number of draws the two rules' spreads are not told apart.")

# %% [markdown]
# ## 3. Expected work saved
#
# Not every block costs the same: the first block of stages 2 and 3 has a stride-2 conv.
# `block.branch_step_flops(shape)` counts what one block's branch costs in a training step
# (forward + backward). With these we can compute the expected FLOPs of a training step
# under each rule exactly, including the parts that always run (stem, shortcuts, head).

# %%
section("3. expected FLOPs of a training step (batch 128, 32x32), ResNet-110")
net = ResNet(110, 10, p_last=0.5, seed=L.seed)
net.eval()
net.forward(np.zeros((1, 3, 32, 32), np.float32))  # records every block's input shape
net.clear_cache()
branch = np.array([b.branch_step_flops((128,) + tuple(b.in_shape[1:])) for b in net.blocks], dtype=float)
print(f"branch FLOPs per block: {branch.min() / 1e9:.2f} G (stride-2 blocks) to {branch.max() / 1e9:.2f} G; "
      f"all {len(branch)} branches: {branch.sum() / 1e9:.1f} GFLOP per step")
rows = []
for label, kw in rules:
    p = np.array(survival_probabilities(54, kw["p_last"], kw["rule"]))
    rows.append([label, (p * branch).sum() / 1e9, 100 * (1 - (p * branch).sum() / branch.sum())])
table(["rule", "expected branch GFLOP/step", "saved vs constant depth"], rows, ["{}", "{:.1f}", "{:.1f}%"])
print("Linear decay saves ~25% of the branch work in expectation (the paper reports ~25% less training time).")

# what always runs: one traced step with every gate open, on 4 images (FLOPs scale with the batch)
net.train()
net.open_all_gates()
loss_fn = SoftmaxCrossEntropy()
with minisd.trace() as t:
    loss_fn.forward(net.forward(np.zeros((4, 3, 32, 32), np.float32)), np.zeros(4, int))
    net.backward(loss_fn.backward())
net.clear_cache()
in_branch = sum(e.flops for e in t.events if ".branch." in e.layer)
rest = sum(e.flops for e in t.events) - in_branch
print(f"The rest (stem, shortcuts, each block's ReLU, pooling, classifier) always runs: "
      f"{100 * rest / (rest + in_branch):.2f}% of a step's FLOPs (traced).")

# %% [markdown]
# ## 4. Figures: p_l, and the distribution of sampled depths

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
l = np.arange(1, 55)
for label, kw in rules:
    axes[0].plot(l, survival_probabilities(54, kw["p_last"], kw["rule"]), label=label)
axes[0].plot(l, per_block["linear, p_L=0.5"], ".", ms=4, color="C0", alpha=0.6, label="linear: sampled frequency")
axes[0].set_xlabel("block l")
axes[0].set_ylabel("survival probability p_l")
axes[0].set_ylim(0, 1.05)
axes[0].set_title("ResNet-110 (L = 54)")
axes[0].legend(fontsize=8)
bins = np.arange(0, 56) - 0.5
for label, _ in rules:
    axes[1].hist(samples[label], bins=bins, alpha=0.55, label=label)
axes[1].axvline((3 * 54 - 1) / 4, color="k", ls=":", lw=1)
axes[1].set_xlabel("number of surviving blocks in a mini-batch")
axes[1].set_ylabel(f"count ({draws} draws)")
axes[1].set_title("Sampled depths (dotted: (3L-1)/4 = 40.25)")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
L.save_figure(fig, "survival.png")

# %%
section("findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * linear decay, p_L = 0.5: E[blocks] = (3L - 1)/4, ~75% of the blocks, ~25% less work;
# * the depth of a ResNet-110 in training is 40 +- 3 blocks, every mini-batch different;
# * lesson 10 checks whether the FLOPs saved turn into time saved.

# %%
L.try_this()
