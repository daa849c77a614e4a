"""Lesson 5 - THE GATE: one training step of a stochastic-depth ResNet, traced block by block.

What you will learn
  * stochastic depth is one `if` in ResidualBlock.forward and the same `if` in backward;
  * a dropped block (gate closed) does NO work: its branch layers are never called in the
    forward or the backward pass, cache nothing, receive exactly zero gradient, and their
    batch-norm running statistics do not move - shown with minisd.trace() and by inspection;
  * what the optimizer then does to the dropped weights (the paper's Torch7 code vs PyTorch);
  * test time: every branch runs, scaled by its survival probability p_l.
  Figure: out/05_the_gate_blocks.png - per block, the MFLOPs run vs skipped and the forward
  and backward milliseconds of the traced step, dropped blocks marked.

Run
  python lessons/05_the_gate.py            # ~1 s on a 2-core CPU
  python lessons/05_the_gate.py --quick    # ~1 s
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
# ## Summary
# * training: `if gate` -> the branch runs; else only the shortcut, forward AND backward;
#   a dropped block costs nothing, keeps nothing and learns nothing this step;
# * the optimizer may still decay its weights (the paper's setting);
# * test: all branches, scaled by p_l. Lesson 9 asks whether that scaled network really
#   behaves like the average of the sub-networks trained.

# %%
L.try_this()
