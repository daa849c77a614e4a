"""Lesson 5 - THE GATE: one training step of a stochastic-depth ResNet, traced block by block.

What you will learn
  * stochastic depth is one `if` in ResidualBlock.forward and the same `if` in backward;
  * a dropped block (gate closed) does NO work: its branch layers are never called in the
    forward or the backward pass, cache nothing, receive exactly zero gradient, and their
    batch-norm running statistics do not move - shown with minisd.trace() and by inspection;
  * what the optimizer then does to the dropped weights (the paper's Torch7 code vs PyTorch);
  * test time: every branch runs, scaled by its survival probability p_l;
  * where p comes from: E[b f] = p f; scale="test" (x p at test time) and scale="train"
    (x 1/p in training) are the same functions but not the same SGD (derived and measured);
    the Jensen gap E[ReLU(x + b f)] >= ReLU(x + p f), by Monte Carlo on one block; and why a
    dropped block must be skipped, not multiplied by zero (its BN statistics would move).
  Figure: out/05_the_gate_blocks.png - per block, the MFLOPs run vs skipped and the forward
  and backward milliseconds of the traced step, dropped blocks marked.

Run
  python lessons/05_the_gate.py            # ~3 s on a 2-core CPU
  python lessons/05_the_gate.py --quick    # ~2 s
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Build the net with mode="sample" (one gate per image), call
     net.sample_gates(rng, batch_size=len(y)) and trace the step again: which blocks run now,
     and how many FLOPs are skipped? (Lesson 10 times it.)
  2. Build it with scale="train" (the "inverted" scaling of torchvision/timm): in training a
     surviving branch is divided by p_l, at test time nothing is scaled. Check with the eval
     table that the gate label becomes "eval x1", and explain why both are equivalent in
     expectation.
  3. Run two training steps with the same gates closed: show that a dropped block's weights
     still change under SGD(dropped="paper") (weight decay, momentum) but not under "skip".
"""
# %% [markdown]
# # Lesson 5: the gate
#
# Stochastic depth (Huang et al., 2016) trains a deep ResNet whose blocks are randomly
# removed: for every mini-batch, block l survives with probability p_l (the gate b_l = 1)
# or is dropped (b_l = 0), and then
#
#     H_l = ReLU( b_l * f_l(H_{l-1}) + shortcut(H_{l-1}) ).
#
# Multiplying by zero would save nothing. The point is that b_l = 0 means *f_l is not
# computed at all*, neither forward nor backward. Here is minisd's block, verbatim:

# %%
import inspect

import numpy as np

import minisd
from minisd import ResidualBlock, ResNet, SoftmaxCrossEntropy, to_numpy
from minisd.optim import SGD
from minisd.tracing import held_nbytes
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp

section("the symmetric `if` (minisd/blocks.py)")
for method in (ResidualBlock.forward, ResidualBlock.backward):
    print(inspect.getsource(method).rstrip())

# %% [markdown]
# ## 1. A network and one draw of the gates
#
# A ResNet with the paper's linear decay rule: p_l = 1 - l/L (1 - p_L), p_L = 0.5.
# `net.sample_gates(rng)` draws one Bernoulli(p_l) per block for this mini-batch.

# %%
section("1. the network and this step's gates")
depth = 20 if L.quick else 32
n_img, size = (4, 16) if L.quick else (32, 32)
net = ResNet(depth, 10, p_last=0.5, rule="linear", seed=L.seed).to(L.device)
print(net)
rng = np.random.default_rng(L.seed)
gates = net.sample_gates(rng)
while sum(not g for g in gates) < 2:  # make sure this demonstration drops something
    gates = net.sample_gates(rng)
print("p_l  :", " ".join(f"{p:.2f}" for p in net.survival_probs))
print("gate :", " ".join("  on" if g else " OFF" for g in gates))
dropped = [i for i, g in enumerate(gates) if not g]
print(f"{len(gates) - len(dropped)} of {len(gates)} blocks run this step; dropped: {dropped} "
      f"(expected number running: {net.expected_blocks():.2f})")

data_rng = np.random.default_rng(L.seed + 1)
x = xp.asarray(data_rng.standard_normal((n_img, 3, size, size)).astype(np.float32))
y = xp.asarray(data_rng.integers(0, 10, n_img))

# %% [markdown]
# ## 2. One training step under `minisd.trace()`
#
# Before the step we zero every gradient and copy every batch-norm running statistic. We
# run the forward pass, look at what every block's branch holds for the backward pass
# (its cache), then run the backward pass - all inside a trace, which records every call of
# every layer with its time, FLOPs and cached bytes.

# %%
section("2. one traced training step")
net.train()
net.zero_grad()
bn_before = {name: a.copy() for name, a in net.state_dict().items() if "running" in name}
loss_fn = SoftmaxCrossEntropy()
with minisd.trace() as t:
    loss = loss_fn.forward(net.forward(x), y)
    cached = [held_nbytes(b.branch.modules()) for b in net.blocks]  # memory kept for backward
    net.backward(loss_fn.backward())
print(f"loss {float(loss):.4f}\n")
print(t.table(net))

# %% [markdown]
# ## 3. Proof, block by block
#
# For every block: how many times its branch layers were called (forward / backward), how
# many bytes the branch cached for backward after the forward pass, the largest |gradient|
# of any branch parameter, and whether its BN running statistics changed.

# %%
section("3. what each block did (branch layers only)")
rows = []
for i, block in enumerate(net.blocks):
    prefix = f"blocks.{i}.branch."
    fwd = sum(1 for e in t.events if e.layer.startswith(prefix) and e.phase == "forward")
    bwd = sum(1 for e in t.events if e.layer.startswith(prefix) and e.phase == "backward")
    gmax = max(float(xp.abs(g).max()) for _, _, g in block.branch.parameters())
    moved = any(not np.array_equal(to_numpy(a), to_numpy(bn_before[k]))
                for k, a in net.state_dict().items() if k.startswith(prefix) and "running" in k)
    rows.append([i, "on" if gates[i] else "OFF", fwd, bwd, f"{cached[i] / 1024:.0f} KB",
                 "0 (exactly)" if gmax == 0.0 else f"{gmax:.3g}",
                 "moved" if moved else "unchanged"])
table(["block", "gate", "fwd calls", "bwd calls", "cached", "max |grad|", "BN running stats"], rows,
      ["{}", "{}", "{}", "{}", "{}", "{}", "{}"])
ok = all((r[2] == 0 and r[3] == 0 and r[4] == "0 KB" and r[5] == "0 (exactly)" and r[6] == "unchanged") == (r[1] == "OFF")
         for r in rows)
print(f"\nEvery dropped block: 0 calls, 0 bytes, gradient exactly 0.0, statistics untouched: {ok}")
print("Every running block: 5 branch layers forward and backward (conv, BN, ReLU, conv, BN).")
print("The shortcut and the block's final ReLU run for every block: that is the identity path.")
print(f"net.inactive_parameter_names(): {len(net.inactive_parameter_names())} parameters "
      f"(the {len(dropped)} dropped branches x 6 arrays: 2 conv weights + 2 BN gammas + 2 BN betas)")

# %% [markdown]
# ## 3b. The same step as a figure
#
# `t.block_summary(net)` gives the numbers of the table in section 2 as one dict per block.
# Left: the FLOPs each block ran, and (hatched) those a dropped block would have cost.
# Right: the time its layers took. Dropped blocks are marked in red: they still run the
# shortcut and the final ReLU, a tiny cost next to two convolutions.

# %%
summary = t.block_summary(net)
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
idx = np.arange(len(summary))
run_mf = [r["flops_run"] / 1e6 for r in summary]
skip_mf = [r["flops_skipped"] / 1e6 for r in summary]
axes[0].bar(idx, run_mf, color="C0", label="run")
off = [i for i, v in enumerate(skip_mf) if v > 0]
axes[0].bar(idx[off], [skip_mf[i] for i in off], color="none", edgecolor="C3", hatch="//", label="skipped (dropped)")
axes[0].set_ylabel("MFLOPs, forward + backward")
axes[0].set_title("FLOPs per block in this step")
axes[1].bar(idx - 0.2, [1e3 * r["forward_s"] for r in summary], 0.4, color="C0", label="forward")
axes[1].bar(idx + 0.2, [1e3 * r["backward_s"] for r in summary], 0.4, color="C1", label="backward")
axes[1].set_ylabel("milliseconds")
axes[1].set_title(f"time per block ({L.device})")
for ax in axes:
    ax.set_xticks(idx, [f"{r['block']}" if r["ran"] else f"{r['block']}\nOFF" for r in summary])
    for tick, r in zip(ax.get_xticklabels(), summary):
        if not r["ran"]:
            tick.set_color("C3")
    ax.set_xlabel("block (red OFF: dropped this step)")
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
L.save_figure(fig, "blocks.png")

# %% [markdown]
# ## 4. And the optimizer?
#
# A dropped block got no gradient. What SGD does with its weights is a choice:
# * the paper's Torch7 code keeps all weights in one flat vector whose gradient was zeroed,
#   so `optim.sgd` sees a zero gradient and still applies weight decay and momentum
#   (minisd's `SGD(dropped="paper")`, the default);
# * PyTorch skips a parameter whose `.grad` is None: nothing changes (`dropped="skip"`).
#
# We apply one step with each, from the same state, and measure how far the weights move.
# (On the very first step there is no momentum yet; weight decay alone moves them.)

# %%
section("4. one SGD step: what happens to the dropped weights")
state = net.state_dict()
inactive = set(net.inactive_parameter_names())
rows = []
for mode in ("paper", "skip"):
    net.load_state_dict(state)
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True, dropped=mode)
    opt.step(inactive=inactive)
    after = net.state_dict()
    move = lambda names: max(float(np.abs(to_numpy(after[n]) - to_numpy(state[n])).max()) for n in names)
    active = [n for n, _, _ in net.parameters() if n not in inactive]
    rows.append([mode, move(active), move(inactive)])
net.load_state_dict(state)
table(["SGD(dropped=...)", "max |change| of active weights", "max |change| of dropped weights"], rows,
      ["{}", "{:.2e}", "{:.2e}"])
print("'paper': dropped weights shrink by weight decay - here lr * (1 + momentum) * weight_decay * w, the")
print("         first Nesterov step; 1.9e-5 for a BN gamma of 1 - and later also follow their momentum;")
print("'skip': they are left exactly as they were. The paper's numbers were obtained with 'paper'.")

# %% [markdown]
# ## 5. Test time: every block, each branch scaled by p_l
#
# In training, block l's branch is present a fraction p_l of the time. At test time the
# whole network runs, and each branch is multiplied by p_l - its expected contribution
# (the paper's eq. 5):   H_l = ReLU( p_l * f_l(H_{l-1}) + shortcut(H_{l-1}) ).

# %%
section("5. eval mode: a traced forward pass")
net.eval()
net.set_gates([False] * len(net.blocks))  # gates are ignored in eval mode: every block runs anyway
with minisd.trace() as t_eval:
    logits = net.forward(x)
print(t_eval.table(net))

block = net.blocks[-1]
h = net.relu.forward(net.bn1.forward(net.conv1.forward(x)))
for b in net.blocks[:-1]:  # the input of the last block, in eval mode
    h = b.forward(h)
out = block.forward(h)
by_hand = xp.maximum(block.shortcut.forward(h) + block.survival_prob * block.branch.forward(h), 0)
net.clear_cache()
print(f"\nlast block (p_l = {block.survival_prob:.2f}) in eval mode vs ReLU(shortcut(x) + p_l * branch(x)) "
      f"by hand: max difference {float(xp.abs(out - by_hand).max()):.1e}")
net.train()

# %% [markdown]
# ## 6. Where p comes from
#
# The gate b is a Bernoulli(p) draw, so for a fixed branch output f the expected
# contribution to the sum is
#
#     E[b f] = P(b = 1) * f + P(b = 0) * 0 = p f.
#
# That is all the test-time rule uses: replace the random b by its mean. There are two
# ways to put the factor in (`ResidualBlock(scale=...)`):
#
# * `scale="test"` (the paper): training adds b f, test adds p f;
# * `scale="train"` (inverted, torchvision/timm): training adds b f / p, test adds f.
#
# Both have E[training contribution] = test contribution. Better: they are the *same
# family of functions*. The branch ends in a BN layer, out = gamma * xhat + beta, so
# f / p is f with gamma/p and beta/p. A "train"-scaled block with (gamma_B, beta_B) equals a
# "test"-scaled block with gamma_A = gamma_B / p, beta_A = beta_B / p, in training and at
# test time, gate open or closed. Section 6a checks that to rounding error.

# %%
section("6. E[b f] = p f, measured over gate draws")
findings = []  # (claim, number, criterion, supported?)
p_demo = 0.5
draw_rng = np.random.default_rng(L.seed + 2)
n_draws = 2000 if L.quick else 20000
b_draws = draw_rng.random(n_draws) < p_demo
print(f"{n_draws} draws of b ~ Bernoulli({p_demo}): mean of b = {b_draws.mean():.4f} "
      f"(standard error {np.sqrt(p_demo * (1 - p_demo) / n_draws):.4f}); so mean of b f = {b_draws.mean():.4f} f")


def gate_block(scale, p, seed, mode="batch"):
    """One float64 ResidualBlock (16 -> 16 channels), the same weights for the same seed."""
    block = ResidualBlock(16, 16, survival_prob=p, dtype=np.float64, scale=scale, mode=mode,
                          rng=np.random.default_rng(seed)).to(L.device)
    block.assign_names()  # layer names "branch.0" ... for the trace
    return block


def branch_eval_bn(block, gate):
    """The block's gate logic (training) but its branch's BN on running statistics (eval)."""
    block.eval()
    block.training = True   # the block object only, as lesson 9 does
    block.gate = gate


# %% [markdown]
# ## 6a. "test" vs "train" scaling: equal as functions, not under SGD
#
# Write L_B(gamma_B) = L_A(gamma_B / p) for the loss of the two equivalent blocks. Then
# dL/dgamma_B = (1/p) dL/dgamma_A, and one SGD step with weight decay wd on the "train"
# block, gamma_B <- gamma_B - lr (dL/dgamma_B + wd gamma_B), is in the "test" block's terms
#
#     gamma_A <- gamma_A - lr ( dL/dgamma_A / p**2  +  wd gamma_A ).
#
# So the two scalings train the same functions with different optimisers:
# * weight decay alone (a zero gradient: a dropped block under `dropped="paper"`) shrinks
#   both by the same factor (1 - lr wd): the equivalence survives it;
# * the gradient step on the last BN's gamma and beta is 1/p**2 larger for "train";
# * together: the weight-decay penalty (wd/2) gamma_B**2 is (wd/2) p**2 gamma_A**2, so where
#   gradient and decay balance (dL/dgamma_A = -p**2 wd gamma_A instead of -wd gamma_A) the
#   "train" block's branch is regularised p**2 times less (4x less at p = 0.5), and the two
#   settle at different weights. (And both start from gamma = 1, i.e. different functions:
#   the "train" block's initial branch counts 1/p as much.)
# Below: two blocks made equal (gamma_B = p gamma_A), one SGD step each on the same input and
# the same output gradient, momentum 0.9 and weight decay 1e-4 as in the paper.

# %%
section("6a. scale='test' vs scale='train': one SGD step from equal functions")
lr, wd = 0.1, 1e-4
x6 = xp.asarray(np.random.default_rng(L.seed + 3).standard_normal((8, 16, 8, 8)))
d6 = xp.asarray(np.random.default_rng(L.seed + 4).standard_normal((8, 16, 8, 8)) / x6.size)  # a mean loss's size
rows = []
for case, gate in (("gate open: gradient + weight decay", True), ("gate closed: weight decay only", False)):
    A, B = gate_block("test", p_demo, L.seed), gate_block("train", p_demo, L.seed)
    for key in ("weight", "bias"):            # gamma_B = p gamma_A, beta_B = p beta_A
        B.branch[4].params[key][...] = p_demo * A.branch[4].params[key]
    A.gate = B.gate = gate
    before = float(xp.abs(A.forward(x6) - B.forward(x6)).max())
    g_A = None
    for blk in (A, B):                       # one training step, the same dout
        blk.zero_grad()
        blk.forward(x6)
        blk.backward(d6)
        if blk is A:
            g_A = A.branch[4].grads["weight"].copy()  # dL/dgamma_A
        inactive = [] if gate else [n for n, _, _ in blk.branch.parameters()]
        SGD([("branch." + n, a, g) for n, a, g in blk.branch.parameters()], lr=lr, momentum=0.9,
            weight_decay=wd, nesterov=True, dropped="paper").step(
            inactive=["branch." + n for n in inactive])
    gA, gB = A.branch[4].params["weight"], B.branch[4].params["weight"]
    d_gamma = float(xp.abs(gA - gB / p_demo).max())
    # predicted: the first Nesterov step moves by lr (1 + momentum) (grad + wd w), so the two differ by
    predicted = float(xp.abs(lr * (1 + 0.9) * g_A * (1 / p_demo ** 2 - 1)).max()) if gate else 0.0
    A.gate = B.gate = True
    A.eval(), B.eval()
    after = float(xp.abs(A.forward(x6) - B.forward(x6)).max())
    rows.append([case, before, d_gamma, predicted, after])
table(["step", "max |out_A - out_B| before", "max |gamma_A - gamma_B/p| after", "predicted",
       "max |out_A - out_B| after (eval)"], rows, ["{}", "{:.1e}", "{:.2e}", "{:.2e}", "{:.1e}"])
print("predicted: lr (1 + momentum) |dL/dgamma_A| (1/p**2 - 1), the first Nesterov step of the derivation")
same_before = max(r[1] for r in rows) < 1e-10
wd_only_same = rows[1][2] < 1e-12 and rows[1][3] < 1e-10
grad_differs = rows[0][2] > 1e-9 and abs(rows[0][2] - rows[0][3]) < 1e-3 * rows[0][3]
findings.append(("'test' and 'train' blocks are equal functions when gamma_B = p gamma_A",
                 f"{max(r[1] for r in rows):.1e}", "max |difference| < 1e-10", same_before))
findings.append(("a weight-decay-only step keeps them equal", f"{rows[1][2]:.1e}", "< 1e-12", wd_only_same))
findings.append(("a gradient step makes them differ, as derived", f"{rows[0][2]:.2e} vs {rows[0][3]:.2e}",
                 "> 1e-9, within 0.1% of predicted", grad_differs))
if same_before and wd_only_same and grad_differs:
    print("Equal before the step; weight decay alone keeps them equal; the gradient step does not")
    print(f"(its gamma step is 1/p**2 = {1 / p_demo ** 2:.0f}x larger for 'train'): equal in expectation,")
    print("not the same training.")
else:
    print("not shown: the measured differences do not follow the derivation (see the table).")

# %% [markdown]
# ## 6b. The Jensen gap: E[ReLU(x + b f)] is not ReLU(x + p f)
#
# E[b f] = p f holds *before* the block's final ReLU. After it, the test-time block computes
# ReLU(x + p f), while the average of the blocks trained is E[ReLU(x + b f)] =
# p ReLU(x + f) + (1 - p) ReLU(x). ReLU is convex, so Jensen's inequality says
# E[ReLU(.)] >= ReLU(E[.]) element by element: the gap is zero where x and x + f have the
# same sign and positive where the branch flips it. One block, its branch's BN on its
# running statistics (so f is fixed), Monte Carlo over the gate.

# %%
section("6b. one block, Monte Carlo over b: E[ReLU(x + b f)] vs ReLU(x + p f)")
blk = gate_block("test", p_demo, L.seed)
xj = xp.asarray(np.random.default_rng(L.seed + 5).standard_normal((8, 16, 8, 8)))
with minisd.no_grad():
    for _ in range(20):                      # let the branch's BN running statistics settle on xj
        blk.train()
        blk.gate = True
        blk.forward(xj)
    outs = {}
    for gate in (True, False):
        branch_eval_bn(blk, gate)
        outs[gate] = to_numpy(blk.forward(xj))   # ReLU(x + f) and ReLU(x)
    blk.eval()
    scaled = to_numpy(blk.forward(xj))           # ReLU(x + p f): the test-time block
mc = np.mean([outs[bool(b)] for b in b_draws[:500 if L.quick else 4000]], axis=0)
n_mc = 500 if L.quick else 4000
exact = p_demo * outs[True] + (1 - p_demo) * outs[False]
gap = mc - scaled
se = np.sqrt(p_demo * (1 - p_demo) / n_mc) * np.abs(outs[True] - outs[False])  # per element
rows = [["Monte Carlo mean of ReLU(x + b f)", f"{n_mc} draws", float(mc.mean())],
        ["exact  p ReLU(x + f) + (1 - p) ReLU(x)", "", float(exact.mean())],
        ["test-time block  ReLU(x + p f)", "eval mode", float(scaled.mean())],
        ["gap (Monte Carlo - test-time)", "", float(gap.mean())]]
table(["quantity (mean over all elements)", "how", "value"], rows, ["{}", "{}", "{:.4f}"])
frac_pos = float(np.mean(exact - scaled > 1e-12))
worst_below = float(np.max((scaled - mc) / np.maximum(se, 1e-12)))
rel = float(gap.mean() / scaled.mean())
# one gate for the whole batch: the Monte Carlo errors of all elements move together
se_mean = float(np.sqrt(p_demo * (1 - p_demo) / n_mc) * abs(np.mean(outs[True] - outs[False])))
print(f"elements with a positive exact gap: {100 * frac_pos:.1f}%; mean gap / mean test-time output: "
      f"{100 * rel:.1f}%; largest Monte Carlo shortfall below ReLU(x + p f): {worst_below:.1f} standard errors")
jensen_ok = bool(np.all(exact - scaled >= -1e-12)) and worst_below < 4
gap_shown = gap.mean() > 3 * max(se_mean, 1e-12)
findings.append(("E[ReLU(x + b f)] >= ReLU(x + p f) everywhere (Jensen)", f"min exact gap {float((exact - scaled).min()):.1e}",
                 ">= 0, Monte Carlo within 4 s.e.", jensen_ok))
findings.append(("the test-time block underestimates the trained blocks' mean output", f"{100 * rel:.1f}%",
                 "mean gap > 3 s.e.", bool(gap_shown)))
if jensen_ok and gap_shown:
    print(f"So the scaled block is not the average of the blocks trained: after the ReLU it is lower, by "
          f"{100 * rel:.1f}% of its mean here;")
    print("one block, random weights: lesson 9 measures what the scaled network does when trained.")
else:
    print("not shown: these numbers do not establish a gap (see the findings table).")

# %% [markdown]
# ## 6c. Why a dropped block must not be a multiplication by zero: BN statistics
#
# Two identical blocks. One is skipped (gate closed). The other multiplies its branch by
# zero: `mode="sample"` with every image's mask False, exactly what per-image gates do to the
# dropped images. Their outputs are the same. But the second one *ran* its branch, so its
# BN layers updated their running mean and variance on a batch whose branch output was
# thrown away - statistics the block's test-time output will use although the block did
# not train on that batch. The skipped block's statistics do not move.

# %%
section("6c. skipped vs multiplied by zero: outputs, work, BN running statistics")
skip = gate_block("test", p_demo, L.seed)
zero = gate_block("test", p_demo, L.seed, mode="sample")
skip.gate = False
zero.mask = np.zeros(len(x6), bool)
stats0 = {n: [to_numpy(b.branch[i].running_mean).copy() for i in (1, 4)]
          + [to_numpy(b.branch[i].running_var).copy() for i in (1, 4)] for n, b in (("skip", skip), ("zero", zero))}
rows, outs6 = [], {}
for name, b in (("skipped (gate closed)", skip), ("x 0 (sample mode, all masks False)", zero)):
    key = "skip" if b is skip else "zero"
    b.zero_grad()
    with minisd.trace() as tb:
        outs6[key] = b.forward(x6)
        b.backward(d6)
    now = [to_numpy(b.branch[i].running_mean) for i in (1, 4)] + [to_numpy(b.branch[i].running_var) for i in (1, 4)]
    moved = max(float(np.abs(a - c).max()) for a, c in zip(now, stats0[key]))
    gmax = max(float(xp.abs(g).max()) for _, _, g in b.branch.parameters())
    calls = sum(1 for e in tb.events if e.layer.startswith("branch."))
    rows.append([name, calls, f"{sum(e.flops for e in tb.events) / 1e6:.1f}", f"{gmax:.1e}", f"{moved:.3g}"])
same_out = float(xp.abs(outs6["skip"] - outs6["zero"]).max())
table(["block", "branch layer calls", "MFLOPs", "max |branch grad|", "max |BN running stat change|"], rows)
print(f"max |output difference| between the two: {same_out:.1e}")
moved_zero, moved_skip = float(rows[1][4]), float(rows[0][4])
findings.append(("a skipped block's BN running statistics do not move", f"{moved_skip:.3g}", "== 0", moved_skip == 0))
findings.append(("a x0 block's BN running statistics move (same output)", f"{moved_zero:.3g}",
                 "> 0 and outputs equal", moved_zero > 0 and same_out == 0))
if moved_skip == 0 and moved_zero > 0 and same_out == 0:
    print("Same output, zero gradient in both; but the x0 block did all the branch work AND moved its BN")
    print("statistics (by momentum 0.1 toward this batch), on every step - including the ones it was dropped.")
else:
    print("not shown: the measured changes do not separate the two blocks (see the table).")

# %%
section("findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * training: `if gate` -> the branch runs; else only the shortcut, forward AND backward;
#   a dropped block costs nothing, keeps nothing and learns nothing this step;
# * the optimizer may still decay its weights (the paper's setting);
# * test: all branches, scaled by p_l = E[b_l]: "test" and "train" scaling are the same
#   functions but not the same SGD; after the ReLU the scaled block is not the average of the
#   trained ones (Jensen). Lesson 9 asks whether the scaled network really behaves like the
#   average of the sub-networks trained, and recalibrates its BN statistics;
# * a dropped block must be skipped, not multiplied by zero: x0 still moves BN statistics.

# %%
L.try_this()
