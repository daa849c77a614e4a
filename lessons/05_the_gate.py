"""Lesson 5 - THE GATE: one training step of a stochastic-depth ResNet, traced block by block.

What you will learn
  * stochastic depth is one `if` in ResidualBlock.forward and the same `if` in backward;
  * a dropped block (gate closed) does NO work: its branch layers are never called in the
    forward or the backward pass, cache nothing, receive exactly zero gradient, and their
    batch-norm running statistics do not move - shown with minisd.trace() and by inspection;
  * what the dropped blocks save in this step: FLOPs, counted, and time, measured;
  * test time: the same `if`, now always true - every branch runs, scaled by p_l - and why
    the eval forward holds more memory than the training step, and what it need not hold.
  Figure: out/05_the_gate_blocks.png - per block, the MFLOPs run vs skipped and the forward
  and backward milliseconds of the traced step, dropped blocks marked.
  Next, lesson 5b: where the factor p_l comes from, and what SGD does to dropped weights.

Run
  python lessons/05_the_gate.py
  python lessons/05_the_gate.py --quick
  (options: --device gpu, --out DIR, --seed N)

Try this
  1. Build the net with mode="sample" (one gate per image), call
     net.sample_gates(rng, batch_size=len(y)) and trace the step again: which blocks run now,
     and how many FLOPs are skipped? (Lesson 10 times it.)
  2. Trace the step again with every gate open (net.set_gates([True] * len(net.blocks))):
     predict from section 5 how much more it holds for backward, then check.
  3. A dropped block still makes a few layer calls: in section 2's table its "MFLOP run" is
     small but not 0 (at the default size). Which calls? Name them from ResidualBlock.forward,
     count their FLOPs by hand and compare with that column.
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
# ![Stochastic depth drawn: a ResNet-32's gates over six mini-batches, an open, a closed and a
# test-time block](../docs/figures/stochastic_depth.png)
#
# (The figure, docs/figures/stochastic_depth.png, drawn by docs/figures/make_figures.py from
# real draws of `sample_gates`: blocks open and closed over six mini-batches; an open block,
# a closed one - its branch called neither forward nor backward - and the test-time block.)
#
# Multiplying by zero would save nothing. The point is that b_l = 0 means *f_l is not
# computed at all*, neither forward nor backward. Here is minisd's block, verbatim:

# %%
import inspect

import numpy as np

import minisd
from minisd import ResidualBlock, ResNet, SoftmaxCrossEntropy, to_numpy
from minisd.tracing import held_nbytes
from _common import plt, section, setup, table

L = setup(__doc__)
xp = L.xp

section("the symmetric `if` (minisd/blocks.py)")
for method in (ResidualBlock.branch_runs, ResidualBlock.forward, ResidualBlock.backward):
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
    rows.append([i, "on" if gates[i] else "OFF", fwd, bwd, cached[i], gmax, moved])
table(["block", "gate", "fwd calls", "bwd calls", "cached", "max |grad|", "BN running stats"],
      [[i, g, f, b, f"{c / 1024:.0f} KB", "0 (exactly)" if m == 0 else f"{m:.3g}", "moved" if mv else "unchanged"]
       for i, g, f, b, c, m, mv in rows])
off, on = [r for r in rows if r[1] == "OFF"], [r for r in rows if r[1] == "on"]
mechanics = [
    ("a dropped block's branch is not called, forward or backward", f"{sum(r[2] + r[3] for r in off)} calls "
     f"in {len(off)} blocks", "0", len(off) > 0 and all(r[2] == r[3] == 0 for r in off)),
    ("... caches nothing, gets a gradient of exactly 0, keeps its BN statistics",
     f"{sum(r[4] for r in off)} bytes, max |grad| {max(r[5] for r in off):.1g}", "0, 0.0, unchanged",
     all(r[4] == 0 and r[5] == 0.0 and not r[6] for r in off)),
    ("a running block calls its 5 branch layers both ways and moves its BN statistics",
     f"fwd {sorted({r[2] for r in on})}, bwd {sorted({r[3] for r in on})} calls", "5 and 5, moved",
     all(r[2] == r[3] == 5 and r[4] > 0 and r[6] for r in on)),
    ("net.inactive_parameter_names() lists the dropped branches' parameters",
     f"{len(net.inactive_parameter_names())} arrays", f"{len(off)} x 6 (2 conv weights, 2 BN gammas, 2 betas)",
     len(net.inactive_parameter_names()) == 6 * len(off)),
]
print("\nThe shortcut and the block's final ReLU run for every block: that is the identity path.")

# %% [markdown]
# ## 4. What the dropped blocks saved: the step as a figure
#
# `t.block_summary(net)` gives the numbers of the table in section 2 as one dict per block.
# Left: the FLOPs each block ran, and (hatched) those a dropped block would have cost.
# Right: the time its layers took. Dropped blocks are marked in red: they still run the
# shortcut and the final ReLU, a tiny cost next to two convolutions. (Whole runs are timed
# in lesson 10: one step's total on a shared machine is too noisy to compare.)

# %%
summary = t.block_summary(net)
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
idx = np.arange(len(summary))
skip_mf = [r["flops_skipped"] / 1e6 for r in summary]
axes[0].bar(idx, [r["flops_run"] / 1e6 for r in summary], color="C0", label="run")
hatched = [i for i, v in enumerate(skip_mf) if v > 0]
axes[0].bar(idx[hatched], [skip_mf[i] for i in hatched], color="none", edgecolor="C3", hatch="//",
            label="skipped (dropped)")
axes[0].set(ylabel="MFLOPs, forward + backward", title="FLOPs per block in this step")
axes[1].bar(idx - 0.2, [1e3 * r["forward_s"] for r in summary], 0.4, color="C0", label="forward")
axes[1].bar(idx + 0.2, [1e3 * r["backward_s"] for r in summary], 0.4, color="C1", label="backward")
axes[1].set(ylabel="milliseconds", title=f"time per block ({L.device})")
for ax in axes:
    ax.set_xticks(idx, [f"{r['block']}" if r["ran"] else f"{r['block']}\nOFF" for r in summary])
    for tick, r in zip(ax.get_xticklabels(), summary):
        if not r["ran"]:
            tick.set_color("C3")
    ax.set_xlabel("block (red OFF: dropped this step)")
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=2, loc="upper center")
L.save_figure(fig, "blocks.png")
section("4. what the dropped blocks saved in this step")
flops_run = sum(r["flops_run"] for r in summary)
flops_frac = flops_run / (flops_run + sum(r["flops_skipped"] for r in summary))
block_ms = {ran: [1e3 * (r["forward_s"] + r["backward_s"]) for r in summary if r["ran"] == ran]
            for ran in (True, False)}
ms_on, ms_off = np.median(block_ms[True]), np.median(block_ms[False])
print(f"FLOPs executed: {100 * flops_frac:.1f}% of the constant-depth step; time per block, forward + backward "
      f"(median): running {ms_on:.2f} ms, dropped {ms_off:.2f} ms ({100 * ms_off / ms_on:.1f}%)")
time_ok = ms_off < 0.1 * ms_on
slow_off = (f"a dropped block still took {100 * ms_off / ms_on:.0f}% of a running one's time here: its fixed "
            f"costs (Python, the shortcut, the ReLU) are not small next to two convolutions of {n_img} images of "
            f"{size}x{size}; the time follows the FLOPs only when convolutions dominate (lesson 10 times whole runs)")
claims = [("a dropped block saves its time (the paper: less training time)",
           f"{ms_off:.2f} vs {ms_on:.2f} ms per block; FLOPs x{flops_frac:.2f}",
           "median dropped < 10% of median running", time_ok, "" if time_ok else slow_off)]

# %% [markdown]
# ## 5. Test time: every block, each branch scaled by p_l
#
# In eval mode `branch_runs()` is always True: the same `if`, never false. Every branch runs,
# multiplied by p_l, its expected contribution (the paper's eq. 5; lesson 5b says why):
#     H_l = ReLU( p_l * f_l(H_{l-1}) + shortcut(H_{l-1}) ).
# We close every gate to show that eval mode ignores them, and trace one forward pass.

# %%
section("5. eval mode: a traced forward pass")
net.eval()
net.set_gates([False] * len(net.blocks))  # gates are ignored in eval mode: every block runs anyway
with minisd.trace() as t_eval:
    logits = net.forward(x)
print(t_eval.table(net))
n_ran = sum(r["ran"] for r in t_eval.block_summary(net))

# %% [markdown]
# It holds more for a backward than the training step did. `net.eval()` changes what the
# layers compute (BN on running statistics, branches x p_l), not whether they keep a cache;
# and every branch ran, the dropped ones too. So the difference should be what the eval
# trace holds only in the dropped blocks' branches (their input is held anyway, as the
# previous block's output), less the loss's cache. With nothing to backpropagate,
# `minisd.no_grad()` keeps no cache at all (minisd.step.evaluate runs inside it).

# %%
held_train, held_eval = t.bytes_held(), t_eval.bytes_held()
loss_bytes = t.bytes_held([e for e in t.events if e.kind == "SoftmaxCrossEntropy"])
only_dropped = held_eval - t_eval.bytes_held([e for e in t_eval.events
                                             if not (e.block in dropped and ".branch." in e.layer)])
rest = held_eval - (held_train - loss_bytes + only_dropped)
activation = n_img * 64 * (size // 4) ** 2 * np.dtype(net.dtype).itemsize  # the smallest: the last stage's
with minisd.no_grad(), minisd.trace() as t_ng:
    logits_ng = net.forward(x)
same = float(xp.abs(logits - logits_ng).max())
MB = 2 ** 20
table(["held for backward", "bytes"],
      [["the training step (section 2)", held_train], ["  - the loss's cache", -loss_bytes],
       [f"  + the branches of the {len(dropped)} blocks dropped in training", only_dropped],
       ["  = predicted for the eval forward", held_train - loss_bytes + only_dropped],
       ["the eval forward, traced", held_eval], ["the eval forward inside minisd.no_grad()", t_ng.bytes_held()]],
      ["{}", "{:,}"])
why = (": per-channel vectors (BN keeps the batch mean, variance and 1/std in training, the running mean and "
       "1/std in eval)" if rest else " (this device's BN keeps as many per-channel vectors in both modes)")
print(f"rest {rest:,} bytes{why};\none activation of the last stage is {activation:,} bytes.")
print(f"no_grad: the same logits (max difference {same:.1e}), {t_ng.bytes_held()} bytes held. "
      f"The traced eval forward kept {held_eval / MB:.1f} MB for a backward that never came.")
mechanics += [
    ("eval mode runs every branch, gates all closed", f"{n_ran}/{len(net.blocks)} blocks", "all",
     n_ran == len(net.blocks)),
    ("eval holds the step's memory + the dropped branches' caches - the loss's",
     f"{held_eval / MB:.2f} vs {(held_eval - rest) / MB:.2f} MB", "rest < one last-stage activation",
     abs(rest) < activation),
    ("eval inside no_grad holds nothing, same logits", f"{t_ng.bytes_held()} bytes, {same:.1e}", "0, 0.0",
     t_ng.bytes_held() == 0 and same == 0.0),
]
net.train()

# %%
section("findings")
L.report_findings(mechanics=mechanics, claims=claims)

# %% [markdown]
# ## Summary
# * training: `if gate` -> the branch runs; else only the shortcut, forward AND backward;
#   a dropped block costs nothing, keeps nothing and learns nothing this step;
# * test: the same `if`, always true: every branch, scaled by p_l; outside `no_grad` each
#   layer still keeps its cache, so evaluate inside `minisd.no_grad()`;
# * lesson 5b: why p_l (and the "inverted" 1/p_l of other libraries), what SGD does to a
#   dropped block's weights, and why a dropped block must be skipped, not multiplied by zero.

# %%
L.try_this()
