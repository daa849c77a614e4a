"""Lesson 5b - Where p comes from: the test-time factor, two scalings under SGD, the Jensen gap, BN statistics.

What you will learn
  * test time: each branch is multiplied by p_l, because E[b f] = p f (checked on a block by
    hand, and over gate draws);
  * what the optimizer does to a dropped block's weights: the paper's Torch7 code still
    applies weight decay and momentum (a zero gradient), PyTorch skips them;
  * scale="test" (x p at test time, the paper) and scale="train" (x 1/p in training, the
    "inverted" scaling of torchvision/timm) are the same functions but not the same SGD
    (derived, and one step measured against the derivation);
  * the Jensen gap: after the block's ReLU the test-time block is not the average of the
    blocks trained, E[ReLU(x + b f)] >= ReLU(x + p f) (Monte Carlo on one block);
  * why a dropped block must be skipped, not multiplied by zero: its BN statistics would move.

Run
  python lessons/05b_where_p_comes_from.py
  python lessons/05b_where_p_comes_from.py --quick
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Build the net of section 1 with scale="train": in training a surviving branch is divided
     by p_l, at test time nothing is scaled. Check with net.blocks[-1].gate_label() in eval
     mode that the label becomes "eval x1", and redo the check of section 1 by hand.
  2. Run two training steps with the same gates closed: show that a dropped block's weights
     still change under SGD(dropped="paper") (weight decay, momentum) but not under "skip".
  3. Set p_demo = 0.9 and rerun section 4: how large is the Jensen gap now? Predict first:
     at p = 1 and at p = 0 the gap is exactly 0 (why?); where between them can it be largest?
"""
# %% [markdown]
# # Lesson 5b: where p comes from
#
# Lesson 5 showed that a dropped block does no work, and that at test time every branch runs,
# multiplied by its survival probability p_l. Here: why p_l, what else could be done, and
# what training does with a dropped block's weights and batch-norm statistics.

# %%
import numpy as np

import minisd
from minisd import ResidualBlock, ResNet, SoftmaxCrossEntropy, to_numpy
from minisd.optim import SGD
from _common import section, setup, table

L = setup(__doc__)
xp = L.xp
mechanics, claims = [], []

# %% [markdown]
# ## 1. Test time: every block, each branch scaled by p_l
#
# The gate b is a Bernoulli(p) draw, so for a fixed branch output f the expected
# contribution to the sum is  E[b f] = P(b = 1) f + P(b = 0) 0 = p f.  The test-time rule
# replaces the random b by its mean (the paper's eq. 5):
#     H_l = ReLU( p_l * f_l(H_{l-1}) + shortcut(H_{l-1}) ).
# We check it on the last block of a small ResNet in eval mode, by hand.

# %%
section("1. eval mode: the last block against ReLU(shortcut(x) + p_l branch(x))")
n_img, size = (4, 16) if L.quick else (8, 32)
net = ResNet(20, 10, p_last=0.5, rule="linear", seed=L.seed).to(L.device)
data_rng = np.random.default_rng(L.seed + 1)
x = xp.asarray(data_rng.standard_normal((n_img, 3, size, size)).astype(np.float32))
y = xp.asarray(data_rng.integers(0, 10, n_img))
net.eval()
block = net.blocks[-1]
with minisd.no_grad():
    h = net.relu.forward(net.bn1.forward(net.conv1.forward(x)))
    for b in net.blocks[:-1]:  # the input of the last block, in eval mode
        h = b.forward(h)
    out = block.forward(h)
    by_hand = xp.maximum(block.shortcut.forward(h) + block.survival_prob * block.branch.forward(h), 0)
eval_diff = float(xp.abs(out - by_hand).max())
print(f"last block (p_l = {block.survival_prob:.2f}, gate label {block.gate_label()!r}): "
      f"max difference {eval_diff:.1e}")
mechanics.append(("eval: a block computes ReLU(shortcut(x) + p_l branch(x))", f"{eval_diff:.1e}",
                  "== 0 (the same operations)", eval_diff == 0.0))
net.train()

p_demo = 0.5
draw_rng = np.random.default_rng(L.seed + 2)
n_draws = 2000 if L.quick else 20000
b_draws = draw_rng.random(n_draws) < p_demo
se_b = np.sqrt(p_demo * (1 - p_demo) / n_draws)
print(f"{n_draws} draws of b ~ Bernoulli({p_demo}): mean of b = {b_draws.mean():.4f} "
      f"(standard error {se_b:.4f}); so mean of b f = {b_draws.mean():.4f} f")
mechanics.append(("the mean of the gate draws is p", f"{b_draws.mean():.4f} vs {p_demo}", "within 4 s.e.",
                  abs(b_draws.mean() - p_demo) < 4 * se_b))

# %% [markdown]
# ## 2. And the optimizer? What SGD does to a dropped block's weights
#
# A dropped block got no gradient. What SGD does with its weights is a choice:
# * the paper's Torch7 code keeps all weights in one flat vector whose gradient was zeroed,
#   so `optim.sgd` sees a zero gradient and still applies weight decay and momentum
#   (minisd's `SGD(dropped="paper")`, the default);
# * PyTorch skips a parameter whose `.grad` is None: nothing changes (`dropped="skip"`).
# One training step with two blocks or more dropped, then one SGD step with each, from the
# same state. On the first step there is no momentum yet, so Nesterov's update of a zero
# gradient is lr (1 + momentum) wd w: weight decay alone moves the dropped weights.

# %%
section("2. one SGD step: what happens to the dropped weights")
gate_rng = np.random.default_rng(L.seed)
while sum(not g for g in net.sample_gates(gate_rng)) < 2:  # make sure something is dropped
    pass
net.zero_grad()
loss_fn = SoftmaxCrossEntropy()
loss_fn.forward(net.forward(x), y)
net.backward(loss_fn.backward())
state = net.state_dict()
inactive = set(net.inactive_parameter_names())
lr, momentum, wd = 0.1, 0.9, 1e-4
rows = []
for mode in ("paper", "skip"):
    net.load_state_dict(state)
    opt = SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd, nesterov=True, dropped=mode)
    opt.step(inactive=inactive)
    after = net.state_dict()
    move = lambda names: max(float(np.abs(to_numpy(after[n]) - to_numpy(state[n])).max()) for n in names)
    rows.append([mode, move([n for n, _, _ in net.parameters() if n not in inactive]), move(inactive)])
net.load_state_dict(state)
predicted = lr * (1 + momentum) * wd * max(float(np.abs(to_numpy(state[n])).max()) for n in inactive)
table(["SGD(dropped=...)", "max |change| of active weights", "max |change| of dropped weights"], rows,
      ["{}", "{:.2e}", "{:.2e}"])
print(f"{len(inactive)} dropped arrays; predicted for 'paper': lr (1 + momentum) wd max|w| = {predicted:.2e}")
paper_decays = abs(rows[0][2] - predicted) < 0.01 * predicted
skip_keeps = rows[1][2] == 0.0
mechanics += [("SGD(dropped='paper') decays a dropped block's weights", f"{rows[0][2]:.2e} vs {predicted:.2e}",
               "within 1% of lr (1 + m) wd max|w|", paper_decays),
              ("SGD(dropped='skip') leaves them exactly", f"{rows[1][2]:.1e}", "== 0", skip_keeps)]
if paper_decays and skip_keeps:
    print("'paper': dropped weights shrink by weight decay, as predicted (on later steps they also follow their")
    print("momentum); 'skip': they are left exactly as they were. The paper's numbers were obtained with 'paper'.")
else:
    print("not shown: the dropped weights did not move as predicted (see the findings table).")


# %% [markdown]
# ## 3. "test" vs "train" scaling: equal as functions, not under SGD
#
# There are two ways to put the factor in (`ResidualBlock(scale=...)`):
# * `scale="test"` (the paper): training adds b f, test adds p f;
# * `scale="train"` (inverted, torchvision/timm): training adds b f / p, test adds f.
# Both have E[training contribution] = test contribution. Better: they are the *same family
# of functions*. The branch ends in a BN layer, out = gamma * xhat + beta, so f / p is f with
# gamma/p and beta/p: a "train" block with (gamma_B, beta_B) equals a "test" block with
# gamma_A = gamma_B / p, beta_A = beta_B / p, in training and at test time, gate open or not.
#
# Write L_B(gamma_B) = L_A(gamma_B / p). Then dL/dgamma_B = (1/p) dL/dgamma_A, and one SGD
# step with weight decay on the "train" block, gamma_B <- gamma_B - lr (dL/dgamma_B + wd
# gamma_B), is in the "test" block's terms
#     gamma_A <- gamma_A - lr ( dL/dgamma_A / p**2  +  wd gamma_A ).
# So the two scalings train the same functions with different optimisers:
# * weight decay alone (a dropped block under `dropped="paper"`) is linear in the weights, so it
#   shrinks both by the same factor (on the first Nesterov step 1 - lr (1 + momentum) wd, as
#   section 2 derived): the equivalence survives it;
# * the gradient step on the last BN's gamma and beta is 1/p**2 larger for "train";
# * together: the penalty (wd/2) gamma_B**2 is (wd/2) p**2 gamma_A**2, so where gradient and
#   decay balance the "train" block's branch is regularised p**2 times less (4x at p = 0.5),
#   and the two settle at different weights. (And both start from gamma = 1, i.e. different
#   functions: the "train" block's initial branch counts 1/p as much.)
# Below: two blocks made equal (gamma_B = p gamma_A), one SGD step each on the same input and
# the same output gradient, momentum 0.9 and weight decay 1e-4 as in the paper.

# %%
def gate_block(scale, p, seed, mode="batch"):
    """One float64 ResidualBlock (16 -> 16 channels), the same weights for the same seed."""
    block = ResidualBlock(16, 16, survival_prob=p, dtype=np.float64, scale=scale, mode=mode,
                          rng=np.random.default_rng(seed)).to(L.device)
    block.assign_names()  # layer names "branch.0" ... for the trace
    return block


section("3. scale='test' vs scale='train': one SGD step from equal functions")
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
        dropped = [] if gate else ["branch." + n for n, _, _ in blk.branch.parameters()]
        SGD([("branch." + n, a, g) for n, a, g in blk.branch.parameters()], lr=lr, momentum=momentum,
            weight_decay=wd, nesterov=True, dropped="paper").step(inactive=dropped)
    gA, gB = A.branch[4].params["weight"], B.branch[4].params["weight"]
    d_gamma = float(xp.abs(gA - gB / p_demo).max())
    # predicted: the first Nesterov step moves by lr (1 + momentum) (grad + wd w), so the two differ by
    predicted = float(xp.abs(lr * (1 + momentum) * g_A * (1 / p_demo ** 2 - 1)).max()) if gate else 0.0
    A.gate = B.gate = True
    A.eval(), B.eval()
    after = float(xp.abs(A.forward(x6) - B.forward(x6)).max())
    rows.append([case, before, d_gamma, predicted, after])
table(["step", "max |out_A - out_B| before", "max |gamma_A - gamma_B/p| after", "predicted",
       "max |out_A - out_B| after (eval)"], rows, ["{}", "{:.1e}", "{:.2e}", "{:.2e}", "{:.1e}"])
print("predicted: lr (1 + momentum) |dL/dgamma_A| (1/p**2 - 1), the first Nesterov step of the derivation")
same_before = max(r[1] for r in rows) < 1e-10
wd_only_same = rows[1][2] < 1e-12 and rows[1][3] < 1e-10
open_same = rows[0][2] < 1e-12      # the gate-open step kept gamma_B = p gamma_A: equal SGD steps
grad_differs = rows[0][2] > 1e-9 and abs(rows[0][2] - rows[0][3]) < 1e-3 * rows[0][3]
mechanics += [("'test' and 'train' blocks are equal functions when gamma_B = p gamma_A",
               f"{max(r[1] for r in rows):.1e}", "max |difference| < 1e-10", same_before),
              ("a weight-decay-only step keeps them equal", f"{rows[1][2]:.1e}", "< 1e-12", wd_only_same),
              ("a gradient step makes them differ, as derived", f"{rows[0][2]:.2e} vs {rows[0][3]:.2e}",
               "> 1e-9, within 0.1% of predicted", grad_differs)]
if same_before and wd_only_same and grad_differs:
    print("Equal before the step; weight decay alone keeps them equal; the gradient step does not")
    print(f"(its gamma step is 1/p**2 = {1 / p_demo ** 2:.0f}x larger for 'train'): the same functions,")
    print("not the same training.")
else:
    print("not shown: the measured differences do not follow the derivation (see the table).")
if not same_before:
    equivalent = "not shown"
    why = "the two blocks were not equal functions to begin with (a bug in the set-up: see the mechanics)"
elif open_same and wd_only_same:
    equivalent, why = "yes", ""
elif grad_differs and wd_only_same:
    equivalent = "as functions only"
    why = (f"the gamma step differs by {rows[0][2]:.2e}, as derived: they train the same functions with different "
           "optimisers ('train' takes 1/p**2 larger gradient steps on the last BN and, by the derivation, is "
           "decayed p**2 less), so switching scheme changes the training, not only the bookkeeping")
else:
    equivalent = "not shown"
    why = ("the steps differ, but not as derived (see the table): the derivation or the code is wrong, and this "
           "run cannot say which")
claims.append(("scaling at test (the paper's x p) and at training (x 1/p) are equivalent",
               f"|gamma_A - gamma_B/p| {rows[0][2]:.1e} after a step", "equal functions; after a step < 1e-12",
               equivalent, why))

# %% [markdown]
# ## 4. The Jensen gap: E[ReLU(x + b f)] is not ReLU(x + p f)
#
# E[b f] = p f holds *before* the block's final ReLU. After it, the test-time block computes
# ReLU(x + p f), while the average of the blocks trained is E[ReLU(x + b f)] =
# p ReLU(x + f) + (1 - p) ReLU(x). ReLU is convex, so Jensen's inequality says
# E[ReLU(.)] >= ReLU(E[.]) element by element: the gap is zero where x and x + f have the
# same sign and positive where the branch flips it. One block, its branch's BN on its
# running statistics (so f is fixed), Monte Carlo over the gate.

# %%
def branch_eval_bn(block, gate):
    """The block's gate logic (training) but its branch's BN on running statistics (eval)."""
    block.eval()
    block.training = True   # the block object only, as lesson 9 does
    block.gate = gate


section("4. one block, Monte Carlo over b: E[ReLU(x + b f)] vs ReLU(x + p f)")
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
n_mc = 500 if L.quick else 4000
mc = np.mean([outs[bool(b)] for b in b_draws[:n_mc]], axis=0)
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
gap_shown = bool(gap.mean() > 3 * max(se_mean, 1e-12))
if jensen_ok and gap_shown:
    print(f"So the scaled block is not the average of the blocks trained: after the ReLU it is lower, by "
          f"{100 * rel:.1f}% of its mean here;")
    print("one block, random weights: lesson 9 measures what the scaled network does when trained.")
else:
    print("not shown: these numbers do not establish a gap (see the findings table).")
mechanics.append(("E[ReLU(x + b f)] >= ReLU(x + p f) everywhere (Jensen)",
                  f"min exact gap {float((exact - scaled).min()):.1e}", ">= 0, Monte Carlo within 4 s.e.", jensen_ok))
gap_below = bool(gap.mean() < -3 * max(se_mean, 1e-12))   # Jensen rules this out: it would be a bug
if not jensen_ok:
    mean_verdict = "not shown"
    why = "the Monte Carlo check of Jensen's inequality failed (see the mechanics): these numbers cannot be trusted"
elif gap_shown:
    mean_verdict = "before the ReLU only"
    why = (f"ReLU is convex: the scaled block is lower wherever the branch flips a sign ({100 * frac_pos:.0f}% "
           "of the elements here, random weights); lesson 9 measures what that does to a trained network")
elif gap_below:
    mean_verdict = "no: the scaled block is higher"
    why = "Jensen's inequality forbids this for one block: look for a bug in the Monte Carlo or the block"
else:
    mean_verdict, why = "yes", ""
claims.append(("the test-time block outputs the trained blocks' mean (eq. 5: E[b f] = p f)",
               f"after the ReLU {100 * rel:.1f}% lower ({gap.mean():.4f}, s.e. {se_mean:.1g})",
               "mean gap within 3 s.e. of 0", mean_verdict, why))

# %% [markdown]
# ## 5. Why a dropped block must not be a multiplication by zero: BN statistics
#
# Two identical blocks. One is skipped (gate closed). The other multiplies its branch by
# zero: `mode="sample"` with every image's mask False, exactly what per-image gates do to the
# dropped images. Their outputs are the same. But the second one *ran* its branch, so its
# BN layers updated their running mean and variance on a batch whose branch output was
# thrown away - statistics the block's test-time output will use although the block did
# not train on that batch. The skipped block's statistics do not move.

# %%
section("5. skipped vs multiplied by zero: outputs, work, BN running statistics")
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
    rows.append([name, calls, f"{sum(e.flops for e in tb.events) / 1e6:.1f}", f"{gmax:.1e}", moved])
same_out = float(xp.abs(outs6["skip"] - outs6["zero"]).max())
table(["block", "branch layer calls", "MFLOPs", "max |branch grad|", "max |BN running stat change|"], rows,
      ["{}", "{}", "{}", "{}", "{:.3g}"])
print(f"max |output difference| between the two: {same_out:.1e}")
moved_skip, moved_zero = rows[0][4], rows[1][4]
mechanics += [("a skipped block's BN running statistics do not move", f"{moved_skip:.3g}", "== 0", moved_skip == 0),
              ("a x0 block's BN running statistics move (same output)", f"{moved_zero:.3g}",
               "> 0 and outputs equal", moved_zero > 0 and same_out == 0)]
if moved_skip == 0 and moved_zero > 0 and same_out == 0:
    print("Same output, zero gradient in both; but the x0 block did all the branch work AND moved its BN")
    print("statistics (by momentum 0.1 toward this batch), on every step - including the ones it was dropped.")
else:
    print("not shown: the measured changes do not separate the two blocks (see the table).")

# %%
section("findings")
L.report_findings(mechanics=mechanics, claims=claims)

# %% [markdown]
# ## Summary
# * test: all branches, scaled by p_l = E[b_l]; "test" and "train" scaling are the same
#   functions but not the same SGD;
# * the optimizer may still decay a dropped block's weights (the paper's setting) or leave
#   them alone (PyTorch's);
# * after the ReLU the scaled block is not the average of the trained ones (Jensen). Lesson 9
#   asks whether the scaled network behaves like the average of the sub-networks trained;
# * a dropped block must be skipped, not multiplied by zero: x0 still moves BN statistics.

# %%
L.try_this()
