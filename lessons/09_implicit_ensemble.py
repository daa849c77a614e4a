"""Lesson 9 - The implicit ensemble: the scaled test-time network vs its sampled sub-networks.

What you will learn
  * the paper's view of stochastic depth as training an ensemble of 2^L networks of
    different depths, sharing weights - and its test-time rule: run every block with its
    branch scaled by p_l, a cheap approximation of averaging them all;
  * how to run ONE sampled sub-network at test time with minisd's API: batch norm in eval
    mode (running statistics), the blocks themselves in training mode (their gates decide);
  * test accuracy of (a) the scaled network, (b) the full network without scaling,
    (c) single sampled sub-networks, (d) the average of k sub-networks' predictions, k = 1..K;
  * BN recalibration: recompute the running statistics of the scaled network (and of the
    all-open one) with forward passes over training images, and compare the test error.

Run
  python lessons/09_implicit_ensemble.py            # 79 s on a busy 2-core CPU (2026-11-28);
                                                    # 136 s with BN recalibration, very busy (2026-12-02)
  python lessons/09_implicit_ensemble.py --quick    # ~10 s busy
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --subnets K, --epochs E, --depth D,
   --train-images N)

Try this
  1. Sub-networks here use the BN running statistics, which were averaged over all the
     sub-networks trained. Use batch statistics instead (net.train() for everything, gates
     set by hand) on batches of 500 test images: better or worse? Why is that "cheating"?
  2. Train with the uniform rule instead (ResNet(..., rule="uniform", p_last=p): every block
     survives with p). For the same expected depth as the linear rule, p must be the linear
     rule's mean survival probability, 1 - (1 - p_L)(L + 1)/(2L) for L blocks: 0.71 for this
     lesson's ResNet-14 (L = 6), 0.67 for the --quick ResNet-8 (L = 3); only for very deep
     nets does it approach 0.75 (section 1 prints it). Same expected depth, different
     ensemble: does the gap between the scaled network and the sub-networks change?
  3. The deepest member is the full network without scaling (b). Why can it be worse than the
     scaled network (a) although it contains every sub-network's layers? Would you expect the
     gap to grow for a ResNet-110 (54 blocks, about 14 of them dropped per step)?
"""
# %% [markdown]
# # Lesson 9: the implicit ensemble
#
# Every mini-batch trains a different sub-network: the blocks whose gates were open. With
# L blocks there are 2^L of them, all sharing weights. At test time the paper does not
# sample: it runs every block and multiplies its branch by p_l (eq. 5), the expected value
# of the gate. Is that a good stand-in for the average of the sub-networks' predictions?
# We train a small network with stochastic depth, then measure.

# %%
import numpy as np

from minisd import ResNet, no_grad, relative_error, to_numpy
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--subnets", type=int, default=None, help="sampled sub-networks K (default 16; quick: 4)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 6; quick: 2)")
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 14; quick: 8)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 2560; quick: 256)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 14)
n_train = L.args.train_images or (256 if L.quick else 2560)
n_test = 200 if L.quick else None
epochs = L.args.epochs or (2 if L.quick else 6)
K = L.args.subnets or (4 if L.quick else 16)
batch_size = 32 if L.quick else 64

# %% [markdown]
# ## 1. Train a network with stochastic depth

# %%
section(f"1. training ResNet-{depth} with stochastic depth (linear, p_L = 0.5), {epochs} epochs")
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train, n_test)
normalizer = Normalizer.fit(x_train)
x_train, y_train, x_test, y_test = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))
net = ResNet(depth, 10, p_last=0.5, seed=L.seed).to(L.device)
opt = SGD(net.parameters(), lr=0.1)
rng = np.random.default_rng(L.seed)
for epoch in range(epochs):
    opt.lr = lr_at_epoch(epoch, 0.1, epochs)
    r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size)
    print(f"  epoch {epoch + 1}/{epochs}: lr {opt.lr:<6g} loss {r['loss']:.3f}  blocks {r['blocks']:.1f}  "
          f"{r['seconds']:.1f} s", flush=True)
nb = len(net.blocks)
print("p_l:", " ".join(f"{p:.2f}" for p in net.survival_probs))
print(f"expected blocks per step {net.expected_blocks():.2f} of {nb}: a uniform rule with p = "
      f"{net.expected_blocks() / nb:.3f} would give the same expected depth")

# %% [markdown]
# ## 2. How to run one sub-network at test time
#
# Two switches decide what a `ResidualBlock` does: its own `training` flag (gate logic) and
# that of the layers inside its branch (batch norm: batch or running statistics).
#
# * `net.eval()` sets both to eval: every branch runs, scaled by p_l. That is (a).
# * `net.train()` sets both to train: the gates decide, but BN normalises with the test
#   batch's own statistics - not what the trained network does on one image.
# * What we want is mixed: **BN in eval mode, the blocks in training mode**. So: `net.eval()`,
#   then `block.training = True` on each block object only (not `block.train()`, which would
#   switch its BN layers back too), and `net.set_gates(gates)`. An open branch is then added
#   with factor 1 (as in training, scale="test"), a closed one is skipped entirely.

# %%
section("2. a sub-network in eval mode: BN running statistics + the block's gate")


def set_subnetwork(net, gates):
    """Eval mode for every layer (BN uses running statistics), but gate logic in every block."""
    net.eval()
    for block in net.blocks:
        block.training = True   # the block object only: its branch's BN layers stay in eval mode
    net.set_gates(gates)


def probabilities(net, x_uint8, batch=500):
    """Softmax predictions (NumPy, N x classes) of ``net`` as currently configured."""
    out = []
    with no_grad():  # nothing will be backpropagated: no layer keeps its input
        for i in range(0, len(x_uint8), batch):
            logits = net.forward(normalizer.apply(x_uint8[i:i + batch]))
            e = xp.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(to_numpy(e / e.sum(axis=1, keepdims=True)))
    return np.concatenate(out)


# a check on one block: the mixed mode computes ReLU(shortcut(x) + branch_evalBN(x)) for an open gate
probe = normalizer.apply(x_test[:8])
net.eval()
h = net.relu.forward(net.bn1.forward(net.conv1.forward(probe)))
block = net.blocks[0]
full_scaled = block.forward(h)                                   # eval: p_l * branch
by_hand = xp.maximum(block.shortcut.forward(h) + block.branch.forward(h), 0)
block.training = True
block.gate = True
open_gate = block.forward(h)                                     # mixed mode, gate open
block.gate = False
closed_gate = block.forward(h)                                   # mixed mode, gate closed
net.eval()
net.clear_cache()
print(f"block 0, gate open, BN in eval: equals ReLU(shortcut + branch) by hand? "
      f"relative error {relative_error(open_gate, by_hand):.0e}")
print(f"block 0, gate closed: equals ReLU(shortcut(x))? "
      f"{bool(xp.all(closed_gate == xp.maximum(block.shortcut.forward(h), 0)))}")
diff = float(xp.abs(full_scaled - open_gate).mean() / xp.abs(open_gate).mean())
print(f"eval mode instead adds p_l = {block.survival_prob:.2f} x branch: it differs from the open-gate output "
      f"by {100 * diff:.0f}% (mean |difference| / mean |output|), as it should")
net.clear_cache()

# %% [markdown]
# ## 3. The scaled network, the unscaled one, and K sampled sub-networks
#
# We draw K gate vectors exactly as training does (`net.sample_gates`), run each sub-network
# on the whole test set, and average the softmax outputs of the first k for k = 1..K.

# %%
section(f"3. test accuracy on {len(y_test)} {source} images")
y_np = to_numpy(y_test)
acc = lambda probs: float((probs.argmax(axis=1) == y_np).mean())

net.eval()
p_scaled = probabilities(net, x_test)
err_check, _ = evaluate(net, x_test, y_test, normalizer)  # minisd.step.evaluate: the same thing
set_subnetwork(net, [True] * nb)
p_unscaled = probabilities(net, x_test)

gate_rng = np.random.default_rng(L.seed + 7)
sub_probs, sub_depths = [], []
for k in range(K):
    net.eval()
    gates = net.sample_gates(gate_rng)   # drawn as in training
    set_subnetwork(net, gates)
    sub_probs.append(probabilities(net, x_test))
    sub_depths.append(int(sum(gates)))
net.train()  # back to normal for anything that follows
sub_acc = [acc(p) for p in sub_probs]
ens_acc = [acc(np.mean(sub_probs[:k], axis=0)) for k in range(1, K + 1)]

rows = [["(a) scaled network (eval: every branch x p_l)", f"{nb}", acc(p_scaled)],
        ["(b) full network, no scaling", f"{nb}", acc(p_unscaled)],
        [f"(c) single sub-networks: mean of {K}", f"{np.mean(sub_depths):.1f}", float(np.mean(sub_acc))],
        ["    worst / best single sub-network", f"{min(sub_depths)}-{max(sub_depths)}",
         f"{min(sub_acc):.3f} / {max(sub_acc):.3f}"],
        [f"(d) average of {K} sub-networks' predictions", f"{np.mean(sub_depths):.1f}", ens_acc[-1]]]
table(["model", "blocks", "test accuracy"], rows, ["{}", "{}", "{:.3f}"])
print(f"(check: minisd.step.evaluate gives the scaled network an error of {err_check:.3f}, "
      f"i.e. accuracy {1 - err_check:.3f})")
tv = lambda p, q: float(np.abs(p - q).sum(axis=1).mean() / 2)
print("\nhow close are the predictions? mean total-variation distance between softmax outputs:")
print(f"  scaled (a) vs ensemble (d): {tv(p_scaled, np.mean(sub_probs, axis=0)):.3f}   "
      f"unscaled (b) vs ensemble (d): {tv(p_unscaled, np.mean(sub_probs, axis=0)):.3f}   "
      f"a single sub-network vs (d): {np.mean([tv(p, np.mean(sub_probs, axis=0)) for p in sub_probs]):.3f}")
pts = lambda a, b: f"{100 * (a - b):+.1f} points"
print(f"\nensemble (d) vs a single sub-network (c):  {pts(ens_acc[-1], np.mean(sub_acc))}")
print(f"scaled network (a) vs ensemble (d):        {pts(acc(p_scaled), ens_acc[-1])}  "
      f"(one forward pass instead of {K})")
print(f"unscaled full network (b) vs scaled (a):   {pts(acc(p_unscaled), acc(p_scaled))}")
d_scaled = tv(p_scaled, np.mean(sub_probs, axis=0))
closest = d_scaled < min(tv(p_unscaled, np.mean(sub_probs, axis=0)),
                         np.mean([tv(p, np.mean(sub_probs, axis=0)) for p in sub_probs]))
p_all_open = float(np.prod(net.survival_probs))
print("\nThe paper's argument: training samples from an ensemble of sub-networks; averaging their")
print("predictions is the ensemble's answer, and the scaled network approximates that average in")
print(f"ONE pass - here its softmax outputs are {'the closest' if closest else 'NOT the closest'} to (d) of the "
      "three compared.")
print(f"The unscaled network (b) is one member of that ensemble: the deepest, all {nb} gates open. Its weights")
print("are the scaled network's weights, trained as much: block l's branch learned on every step it ran")
print("(a fraction p_l of them) and the rest of the network on every step. What is rare is the configuration:")
print(f"all {nb} branches together ran on a fraction prod p_l = {p_all_open:.2f} of the steps (expected).")
print("So the layers above each block, and BN's running statistics, were fitted to the mix of sub-networks,")
print("in which branch l is present a fraction p_l of the time. The scaled network (a) adds p_l x branch,")
print("that expected contribution; (b) adds every branch in full, a mix the later layers rarely saw.")
gap = acc(p_unscaled) - acc(p_scaled)
# the same test images for both: only the images on which exactly one of them is right count
right_a, right_b = p_scaled.argmax(axis=1) == y_np, p_unscaled.argmax(axis=1) == y_np
se_gap = float(np.sqrt(np.sum(right_a != right_b))) / len(y_np)   # standard error of the paired difference
print(f"(b) - (a) = {pts(acc(p_unscaled), acc(p_scaled))}; they disagree on {int(np.sum(right_a != right_b))} of "
      f"{len(y_np)} images, so its standard error is about {100 * se_gap:.1f} points.")
if gap < -2 * se_gap:
    print("Here (b) is below (a) by more than two standard errors of this test set (one training seed).")
elif gap < 0:
    print("Here (b) is below (a), but by less than two standard errors: this test set cannot tell them apart.")
else:
    print(f"Here (b) is not below (a): with {nb} blocks and short training the deepest member and the")
    print("scaled network differ little.")
spread = max(acc(p_scaled), acc(p_unscaled), ens_acc[-1]) - min(acc(p_scaled), acc(p_unscaled), ens_acc[-1])
if spread < 0.05:
    print(f"(a), (b) and (d) lie within {100 * spread:.1f} points of each other: on a small, briefly trained network")
    print("the distances between predictions show the structure more reliably than the accuracies.")
else:
    print(f"(a), (b) and (d) span {100 * spread:.1f} points of accuracy.")

# %% [markdown]
# ## 3b. BN recalibration of the scaled network
#
# The BN running statistics were averaged over training steps of *sampled* sub-networks,
# in which branch l was present a fraction p_l of the time. The scaled network (a) is none
# of them: every branch runs, times p_l, and by Jensen's inequality (lesson 5, 6b) the
# activations after each ReLU differ from the sub-networks' average. So the statistics each
# BN layer normalises with at test time were measured on a different network.
# The fix costs a few forward passes and no training: reset every BN layer's running
# statistics, run the training images (no augmentation, no gradient) through the network
# *as it will be tested* - BN in training mode, the blocks in eval mode (`block.training =
# False` on the block objects only: every branch runs, times p_l) - with BN momentum 1/k at
# batch k, which makes the running statistics the plain average over the batches; then
# evaluate. The same with every gate open and no scaling recalibrates (b).

# %%
section("3b. BN recalibration: test error before and after")
from minisd import BatchNorm2d  # noqa: E402  (the layer whose statistics we recompute)


def recalibrate(net, configuration, x_uint8, batch=64):
    """Recompute every BN layer's running statistics on ``x_uint8`` in ``configuration``.

    "scaled": blocks in eval mode (every branch x p_l); "all open": every gate open, factor 1.
    """
    bns = [m for m in net.modules() if isinstance(m, BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.running_mean[...] = 0.0
        bn.running_var[...] = 1.0
    net.train()                                   # BN: batch statistics, running averages updated
    if configuration == "scaled":
        for block in net.blocks:
            block.training = False                # the block object only: every branch, times p_l
    else:
        net.open_all_gates()
    with no_grad():
        for k, i in enumerate(range(0, len(x_uint8) - batch + 1, batch), start=1):
            for bn in bns:
                bn.momentum = 1.0 / k             # running = mean over the k batches so far
            net.forward(normalizer.apply(x_uint8[i:i + batch]))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    net.train()


trained_state = net.state_dict()                  # copies: restored after this section
right = {}
right["(a) before"] = p_scaled.argmax(axis=1) == y_np      # section 3's predictions
right["(b) before"] = p_unscaled.argmax(axis=1) == y_np
recalibrate(net, "scaled", x_train)
net.eval()
right["(a) after"] = probabilities(net, x_test).argmax(axis=1) == y_np
err_recal, _ = evaluate(net, x_test, y_test, normalizer)  # minisd.step.evaluate, the same network
net.load_state_dict(trained_state)
recalibrate(net, "all open", x_train)
set_subnetwork(net, [True] * nb)
right["(b) after"] = probabilities(net, x_test).argmax(axis=1) == y_np
net.load_state_dict(trained_state)                # back to the trained statistics
net.train()

n_recal = (len(y_train) // 64) * 64
rows, recal = [], {}
for model in ("(a)", "(b)"):
    before, after = right[f"{model} before"], right[f"{model} after"]
    diff = float(after.mean() - before.mean())                       # accuracy change
    se = float(np.sqrt(np.sum(before != after))) / len(y_np)         # paired standard error
    recal[model] = (diff, se)
    rows.append([f"{model} {'scaled' if model == '(a)' else 'all open, unscaled'}", 100 * (1 - before.mean()),
                 100 * (1 - after.mean()), f"{-100 * diff + 0.0:+.1f}", f"{100 * se:.1f}", int(np.sum(before != after))])
table(["network", "test error before (%)", "after recalibration (%)", "change (points)", "paired s.e.",
       "images that flip"], rows, ["{}", "{:.1f}", "{:.1f}", "{}", "{}", "{}"])
print(f"(recalibrated on {n_recal} training images in batches of 64; check: minisd.step.evaluate gives the "
      f"recalibrated (a) an error of {100 * err_recal:.1f}%)")
findings = []  # (claim, number, criterion, supported?)
for model, name in (("(a)", "the scaled network"), ("(b)", "the unscaled all-open network")):
    diff, se = recal[model]
    lower, higher = diff > 2 * se, diff < -2 * se
    verdict = True if lower else False if higher else "not shown"
    findings.append((f"BN recalibration lowers the test error of {name}", f"{-100 * diff + 0.0:+.1f} points (s.e. {100 * se:.1f})",
                     "error change < -2 paired s.e.", verdict))
    if lower:
        print(f"{model}: recalibration lowers {name}'s test error by {100 * diff:.1f} points, more than two "
              "paired standard errors (one training seed).")
    elif higher:
        print(f"{model}: recalibration RAISES {name}'s test error by {-100 * diff:.1f} points, more than two "
              "paired standard errors (one training seed).")
    else:
        print(f"{model}: an effect of recalibration on {name} is not shown: the change is within two paired "
              "standard errors.")

# %% [markdown]
# ## 4. Figure: accuracy vs ensemble size

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ks = np.arange(1, K + 1)
axes[0].plot(ks, 100 * np.array(ens_acc), "o-", label="average of k sampled sub-networks")
axes[0].axhline(100 * acc(p_scaled), color="C2", ls="--", label="scaled network (eval, one pass)")
axes[0].axhline(100 * acc(p_unscaled), color="C3", ls=":", label="full network, no scaling")
axes[0].axhline(100 * np.mean(sub_acc), color="C1", ls="-.", lw=1, label="single sub-network (mean)")
axes[0].set_xlabel("number of sub-networks averaged k")
axes[0].set_ylabel("test accuracy (%)")
axes[0].set_title(f"ResNet-{depth}, stochastic depth: the implicit ensemble")
axes[0].legend(fontsize=8)
axes[1].scatter(sub_depths, 100 * np.array(sub_acc), color="C1")
axes[1].axhline(100 * acc(p_scaled), color="C2", ls="--", label="scaled network")
axes[1].set_xticks(range(min(sub_depths), max(sub_depths) + 1))
axes[1].set_xlabel("blocks in the sampled sub-network")
axes[1].set_ylabel("test accuracy (%)")
axes[1].set_title("single sub-networks")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
L.save_figure(fig, "ensemble.png")

# %% [markdown]
# ## Summary
# * a sampled sub-network at test time = BN in eval mode + blocks in training mode + gates;
# * the scaled network approximates the average of the sub-networks in one pass;
# * without the p_l scaling the full network is only the ensemble's deepest member. Its
#   weights are the shared ones, trained on every step their block ran; what is rare is the
#   all-open configuration (a fraction prod p_l of the steps): the layers above were fitted
#   to branches present only a fraction p_l of the time. It is not the ensemble's average.

# %%
section("findings")
L.report_findings(findings)
L.try_this()
