"""Lesson 9 - The implicit ensemble: the scaled test-time network vs its sampled sub-networks.

What you will learn
  * the paper's view of stochastic depth as training an ensemble of 2^L networks of
    different depths, sharing weights - and its test-time rule: run every block with its
    branch scaled by p_l, a cheap stand-in for averaging them all;
  * how to run ONE sampled sub-network at test time with minisd's API: batch norm in eval
    mode (running statistics), the blocks themselves in training mode (their gates decide);
  * the title's test, on real images, paired, over several training seeds: the scaled
    network (one pass) against the Monte-Carlo average of k sampled sub-networks' predictions
    (k passes, k = 1..K) and against the all-open network without scaling;
  * BN recalibration as the follow-up: recompute the running statistics of the scaled network
    (and of the all-open one) with forward passes over training images, and compare.

Run
  python lessons/09_implicit_ensemble.py
  python lessons/09_implicit_ensemble.py --quick
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --seeds S, --subnets K, --epochs E,
   --depth D, --train-images N)

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
# of the gate, and calls the result an ensemble of all those networks in one pass. Is it?
# The ensemble's own answer is the average of the sub-networks' predictions; we can estimate
# it by Monte Carlo - draw k gate vectors as training does, run each sub-network, average -
# and compare. We train a small network with stochastic depth several times (seeds), and
# pair every comparison within a seed: the same weights, the same test images.

# %%
import numpy as np

from minisd import BatchNorm2d, ResNet, no_grad, relative_error, to_numpy
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; quick: 2)")
    p.add_argument("--subnets", type=int, default=None, help="sampled sub-networks K (default 8; quick: 4)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 2; quick: 1)")
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 14; quick: 8)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 2500; quick: 256)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 14)
n_train = L.args.train_images or (256 if L.quick else 2500)
n_test = 200 if L.quick else None
epochs = L.args.epochs or (1 if L.quick else 2)
K = L.args.subnets or (4 if L.quick else 8)
seeds = [L.seed + i for i in range(L.args.seeds or (2 if L.quick else 3))]
batch_size = 32 if L.quick else 64
mechanics, claims = [], []  # the two findings tables (section 5)

# %% [markdown]
# ## 1. Train a network with stochastic depth, once per seed

# %%
section(f"1. training ResNet-{depth} with stochastic depth (linear, p_L = 0.5), {epochs} epochs, seeds {seeds}")
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train, n_test)
normalizer = Normalizer.fit(x_train)
x_train, y_train, x_test, y_test = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))
nets = {}
for seed in seeds:
    net = ResNet(depth, 10, p_last=0.5, seed=seed).to(L.device)
    opt = SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        opt.lr = lr_at_epoch(epoch, 0.1, epochs)
        r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size)
        print(f"  seed {seed} epoch {epoch + 1}/{epochs}: lr {opt.lr:<6g} loss {r['loss']:.3f}  "
              f"blocks {r['blocks']:.1f}  {r['seconds']:.1f} s", flush=True)
    nets[seed] = net
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


# a check on one block of the first seed's network: the mixed mode computes
# ReLU(shortcut(x) + branch_evalBN(x)) for an open gate, ReLU(shortcut(x)) for a closed one
net = nets[seeds[0]]
probe = normalizer.apply(x_test[:8])
net.eval()
with no_grad():
    h = net.relu.forward(net.bn1.forward(net.conv1.forward(probe)))
    block = net.blocks[0]
    full_scaled = block.forward(h)                                   # eval: p_l * branch
    by_hand = xp.maximum(block.shortcut.forward(h) + block.branch.forward(h), 0)
    block.training = True
    block.gate = True
    open_gate = block.forward(h)                                     # mixed mode, gate open
    block.gate = False
    closed_gate = block.forward(h)                                   # mixed mode, gate closed
    closed_by_hand = xp.maximum(block.shortcut.forward(h), 0)
net.open_all_gates()
net.train()
err_open = relative_error(open_gate, by_hand)
closed_equal = bool(xp.all(closed_gate == closed_by_hand))
print(f"block 0, gate open, BN in eval: equals ReLU(shortcut + branch) by hand? relative error {err_open:.0e}")
print(f"block 0, gate closed: equals ReLU(shortcut(x))? {closed_equal}")
diff = float(xp.abs(full_scaled - open_gate).mean() / xp.abs(open_gate).mean())
print(f"eval mode instead adds p_l = {block.survival_prob:.2f} x branch: it differs from the open-gate output "
      f"by {100 * diff:.0f}% (mean |difference| / mean |output|), as it should")
mechanics.append(("mixed mode, gate open: ReLU(shortcut + branch), BN in eval", f"{err_open:.0e}",
                  "relative error < 1e-5", err_open < 1e-5))
mechanics.append(("mixed mode, gate closed: ReLU(shortcut) exactly", str(closed_equal), "bit-equal", closed_equal))

# %% [markdown]
# ## 3. The scaled network against the ensemble it stands for
#
# For each trained network we compute, on the same test images:
#
# * (a) the scaled network: `net.eval()`, every branch times p_l - one forward pass;
# * (b) the all-open network without scaling: every branch times 1 - the ensemble's deepest
#   member, one pass;
# * (c) K sub-networks, gates drawn exactly as training draws them (`net.sample_gates`);
# * (d) the Monte-Carlo ensemble: the average of the first k sub-networks' softmax outputs,
#   k = 1..K (k passes). As k grows it approaches the average over all 2^L members.
#
# Every comparison is paired: the same weights (one seed) and the same test images, so only
# the images on which exactly one of the two is right count, and the standard error of an
# accuracy difference is sqrt(number of such images) / N. Over the seeds we pool them.
# The criteria, fixed before the run:
#
# * the ensemble is real: averaging K sub-networks beats one sampled sub-network (k = 1);
# * the scaled network is more than one member: it beats one sampled sub-network;
# * the paper's test-time rule: one pass of (a) is a stand-in for K passes, not worse than the
#   K-average by more than 2 points (pooled paired difference - 2 s.e. above -2 points; a
#   scaled network that is better passes too);
# * (b) is not the ensemble: the unscaled all-open network is below (a);
# * (a)'s predictions are nearer the K-average than a single sub-network's are (total-variation
#   distance between softmax outputs, every seed).
# "Every seed, and the pooled difference beyond 2 s.e." is the bar for each "beats".

# %%
section(f"3. the scaled network vs the average of k sampled sub-networks ({len(y_test)} {source} test images)")
y_np = to_numpy(y_test)
tv = lambda p, q: float(np.abs(p - q).sum(axis=1).mean() / 2)   # total variation, mean over images
per_seed = {}
for seed, net in nets.items():
    net.eval()
    p_scaled = probabilities(net, x_test)
    if seed == seeds[0]:                                           # minisd.step.evaluate: the same (a)
        err_check, _ = evaluate(net, x_test, y_test, normalizer)
        check = abs((1 - err_check) - float((p_scaled.argmax(axis=1) == y_np).mean()))
    set_subnetwork(net, [True] * nb)
    p_open = probabilities(net, x_test)
    gate_rng = np.random.default_rng(seed + 7)
    sub_probs, sub_depths = [], []
    for k in range(K):
        net.eval()
        gates = net.sample_gates(gate_rng)   # drawn as in training
        set_subnetwork(net, gates)
        sub_probs.append(probabilities(net, x_test))
        sub_depths.append(int(sum(gates)))
    net.open_all_gates()
    net.train()
    ensembles = np.cumsum(sub_probs, axis=0) / np.arange(1, K + 1)[:, None, None]   # (K, N, classes): k = 1..K
    right = dict(scaled=p_scaled.argmax(axis=1) == y_np, open=p_open.argmax(axis=1) == y_np,
                 one=sub_probs[0].argmax(axis=1) == y_np, ensemble=ensembles[-1].argmax(axis=1) == y_np)
    per_seed[seed] = dict(p_scaled=p_scaled, right=right, depths=sub_depths,
                          sub_acc=[float((p.argmax(axis=1) == y_np).mean()) for p in sub_probs],
                          ens_acc=[float((e.argmax(axis=1) == y_np).mean()) for e in ensembles],
                          tv_scaled=tv(p_scaled, ensembles[-1]), tv_open=tv(p_open, ensembles[-1]),
                          tv_single=float(np.mean([tv(p, ensembles[-1]) for p in sub_probs])))

acc = lambda r: 100 * float(r.mean())
rows = []
for seed, ps in per_seed.items():
    r = ps["right"]
    rows.append([seed, acc(r["scaled"]), acc(r["open"]), 100 * ps["sub_acc"][0], 100 * np.mean(ps["sub_acc"]),
                 f"{100 * min(ps['sub_acc']):.1f}-{100 * max(ps['sub_acc']):.1f}", acc(r["ensemble"]),
                 f"{np.mean(ps['depths']):.1f} ({min(ps['depths'])}-{max(ps['depths'])})"])
table(["seed", "(a) scaled", "(b) all open", "(c) k = 1", "(c) mean of K", "(c) worst-best", f"(d) average of {K}",
      "blocks in (c)"], rows, ["{}", "{:.1f}", "{:.1f}", "{:.1f}", "{:.1f}", "{}", "{:.1f}", "{}"])
print(f"(test accuracy, %; {nb} blocks; check: minisd.step.evaluate gives (a) of seed {seeds[0]} an accuracy of "
      f"{100 * (1 - err_check):.1f}%)")
mechanics.append((f"(a) computed here = minisd.step.evaluate (seed {seeds[0]})", f"{100 * (1 - err_check):.1f}%",
                  "equal accuracy", check < 1e-9))


def accuracy_difference(x, y):
    """x vs y, both 'right or wrong' per test image, per seed: differences (points) and the pooled d, s.e."""
    diffs = [100 * float(per_seed[s]["right"][x].mean() - per_seed[s]["right"][y].mean()) for s in seeds]
    flips = sum(int(np.sum(per_seed[s]["right"][x] != per_seed[s]["right"][y])) for s in seeds)
    se = 100 * np.sqrt(flips) / (len(seeds) * len(y_np))           # s.e. of the mean of the seeds' differences
    return diffs, float(np.mean(diffs)), float(se)


def judge(x, y):
    """'yes' if x beats y (above in every seed and pooled > 2 s.e.), 'no: the opposite holds' if y beats
    x by the same bar, else 'not shown'; and the number, as text."""
    diffs, d, se = accuracy_difference(x, y)
    word = ("yes" if min(diffs) > 0 and d > 2 * se else
            "no: the opposite holds" if max(diffs) < 0 and d < -2 * se else "not shown")
    return word, f"{d:+.1f} pts (s.e. {se:.1f}; seeds {', '.join(f'{v:+.1f}' for v in diffs)})", se


def claim_beats(claim, x, y, if_yes, if_opposite):
    """A claims row 'x beats y', with what each outcome teaches (unresolved: the noise, in numbers); returns
    the verdict."""
    word, number, se = judge(x, y)
    diffs, d, _ = accuracy_difference(x, y)
    if d > 2 * se or d < -2 * se:   # the pooled difference is clear, but not every seed goes its way
        other_way = sum(v * d < 0 for v in diffs)
        level = sum(v == 0 for v in diffs)
        unresolved = (f"pooled {d:+.1f} pts is beyond 2 s.e., but of {len(seeds)} seeds {other_way} "
                      f"{'goes' if other_way == 1 else 'go'} the other way"
                      + (f" and {level} show{'s' * (level == 1)} no difference" if level else "")
                      + ": more seeds would settle it")
    else:
        unresolved = (f"not resolved: within the noise of {len(seeds)} seeds x {len(y_np)} test images "
                      f"(s.e. {se:.1f} pts)")
    claims.append((claim, number, "> 0 every seed, pooled > 2 s.e.", word,
                   if_yes if word == "yes" else if_opposite if word.startswith("no:") else unresolved))
    return word

print("\npaired differences in test accuracy (points; pooled over the seeds, s.e. from the images that flip):")
comparisons = [("ensemble", "one", f"(d) average of {K} - (c) one sub-network"),
               ("scaled", "one", "(a) scaled - (c) one sub-network"),
               ("scaled", "ensemble", f"(a) scaled - (d) average of {K}"),
               ("open", "scaled", "(b) all open - (a) scaled")]
for x, y, name in comparisons:
    diffs, d, se = accuracy_difference(x, y)
    print(f"  {name:42s} {d:+5.1f} (s.e. {se:.1f})   per seed: {', '.join(f'{v:+.1f}' for v in diffs)}")
print("\nhow close are the predictions to the K-average? mean total-variation distance between softmax outputs:")
table(["seed", "(a) scaled", "(b) all open", "(c) a single sub-network (mean)"],
      [[s, ps["tv_scaled"], ps["tv_open"], ps["tv_single"]] for s, ps in per_seed.items()],
      ["{}", "{:.3f}", "{:.3f}", "{:.3f}"])

claim_beats(f"sampled sub-networks form an ensemble: the average of {K} beats one", "ensemble", "one",
            "the weight-sharing members disagree enough for their average to help",
            "averaging hurts: the members are too poorly trained for their errors to cancel")
claim_beats("the scaled network (eq. 5) beats one sampled sub-network", "scaled", "one",
            "one pass of the scaled network is worth more than one sampled member",
            "a single sampled member beats the scaled network: p_l x branch is a poor stand-in here")
# the paper's rule is a stand-in: one-sided, the scaled network may be better, not worse by more than 2 points
diffs, d, se = accuracy_difference("scaled", "ensemble")
if d - 2 * se > -2:
    word, teach = "yes", None
elif d + 2 * se < -2:
    word, teach = "no", (f"{K} sampled members beat the scaled network by more than 2 points: with a ReLU after "
                         "each sum, p_l x branch is not the members' average output (the Jensen gap, lesson 5b)")
else:
    word, teach = "not shown", (f"not resolved: {len(seeds)} seeds x {len(y_np)} test images leave an interval of "
                                f"+-{2 * se:.1f} points around {d:+.1f}, which reaches below the -2 points allowed")
claims.append((f"one scaled pass is not worse than the {K}-member average (the paper's test rule)",
               f"{d:+.1f} pts (s.e. {se:.1f}; seeds {', '.join(f'{v:+.1f}' for v in diffs)})",
               "pooled difference - 2 s.e. > -2 points", word, teach))
open_verdict = claim_beats("the unscaled all-open network is not the ensemble: the scaled one beats it", "scaled",
                           "open", "the later layers were fitted to branches present a fraction p_l of the time; "
                           "all at once is a configuration they rarely saw",
                           "the deepest member beats the scaled network: here the later layers cope with every "
                           "branch at once")
closer = [ps["tv_scaled"] < ps["tv_single"] for ps in per_seed.values()]
word = "yes" if all(closer) else "no: the opposite holds" if not any(closer) else "not shown"
claims.append(("the scaled network's predictions are nearer the ensemble's than one member's",
               f"TV {np.mean([ps['tv_scaled'] for ps in per_seed.values()]):.3f} vs "
               f"{np.mean([ps['tv_single'] for ps in per_seed.values()]):.3f}", "smaller in every seed", word,
               "in its predictions, not only its accuracy, the scaled network sits among the members, near their "
               "average" if word == "yes" else "a single member is as near the average as the scaled network: "
               "eq. 5 is not the centre of the ensemble here" if word.startswith("no:") else
               "which is nearer changes from seed to seed: no rule to learn at this scale"))
print("\nThe unscaled network (b) is one member of the ensemble: the deepest, all gates open. Its weights are the")
print("scaled network's, trained as much; what is rare is the configuration: all branches together ran on a")
print(f"fraction prod p_l = {float(np.prod(net.survival_probs)):.2f} of the training steps (expected). (a) adds each "
      "branch's")
print("expected contribution, p_l x branch; (b) adds every branch in full.")
if open_verdict == "yes":
    print("-> (b) tested worse than (a) in every seed: the layers above each block, and BN's running statistics,")
    print("   were fitted to branches present a fraction p_l of the time, and (b) departs from that.")
elif open_verdict.startswith("no:"):
    print("-> (b) tested better than (a) in every seed: here the later layers cope with every branch at once.")
else:
    _, d_open, se_open = accuracy_difference("scaled", "open")
    if abs(d_open) > 2 * se_open:
        print(f"-> pooled, (a) - (b) is {d_open:+.1f} points, beyond 2 s.e., but not every seed goes that way: a hint,")
        print("   not settled (more seeds would settle it).")
    else:
        print("-> (a) and (b) do not differ beyond the noise here: at this scale the rare configuration costs (b)")
        print("   nothing measurable.")

# %% [markdown]
# ## 4. Follow-up: BN recalibration of the scaled network
#
# The BN running statistics were averaged over training steps of *sampled* sub-networks,
# in which branch l was present a fraction p_l of the time. The scaled network (a) is none
# of them: every branch runs, times p_l, and by Jensen's inequality (lesson 5b) the
# activations after each ReLU differ from the sub-networks' average. So the statistics each
# BN layer normalises with at test time were measured on a different network.
# The fix costs a few forward passes and no training: reset every BN layer's running
# statistics, run training images (no augmentation, no gradient) through the network
# *as it will be tested* - BN in training mode, the blocks in eval mode (`block.training =
# False` on the block objects only: every branch runs, times p_l) - with BN momentum 1/k at
# batch k, which makes the running statistics the plain average over the batches; then
# evaluate. The same with every gate open and no scaling recalibrates (b).

# %%
n_recal = 256 if L.quick else 512
section(f"4. BN recalibration on {n_recal} training images: test accuracy before and after")


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


for seed, net in nets.items():
    trained_state = net.state_dict()              # copies: restored after this section
    right = per_seed[seed]["right"]
    recalibrate(net, "scaled", x_train[:n_recal])
    net.eval()
    right["scaled, recalibrated"] = probabilities(net, x_test).argmax(axis=1) == y_np
    net.load_state_dict(trained_state)
    recalibrate(net, "all open", x_train[:n_recal])
    set_subnetwork(net, [True] * nb)
    right["open, recalibrated"] = probabilities(net, x_test).argmax(axis=1) == y_np
    net.load_state_dict(trained_state)            # back to the trained statistics
    net.open_all_gates()
    net.train()

rows = []
for x, y, name in (("scaled, recalibrated", "scaled", "(a) scaled"), ("open, recalibrated", "open", "(b) all open")):
    diffs, d, se = accuracy_difference(x, y)
    before = np.mean([acc(per_seed[s]["right"][y]) for s in seeds])
    rows.append([name, before, before + d, f"{d:+.1f}", f"{se:.1f}", ", ".join(f"{v:+.1f}" for v in diffs)])
table(["network", "accuracy before (%)", "after (%)", "change (points)", "pooled s.e.", "per seed"], rows,
      ["{}", "{:.1f}", "{:.1f}", "{}", "{}", "{}"])
for x, y, name in (("scaled, recalibrated", "scaled", "the scaled network"),
                   ("open, recalibrated", "open", "the unscaled all-open network")):
    claim_beats(f"(follow-up) BN recalibration raises the accuracy of {name}", x, y,
                f"the running statistics gathered over sampled members do not fit {name}: recomputing them helps",
                f"{n_recal} images give worse statistics than the training run's average: recalibration costs")

# %% [markdown]
# ## 5. Figure and findings
#
# The figure draws the title's measurement, paired: for each seed the accuracy of the average
# of k sampled sub-networks minus the scaled network's (0: the scaled network), against k; and
# the single sub-networks' accuracy against their number of blocks.

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ks = np.arange(1, K + 1)
ax = axes[0]
for i, (seed, ps) in enumerate(per_seed.items()):
    base = ps["right"]["scaled"].mean()
    ax.plot(ks, 100 * (np.array(ps["ens_acc"]) - base), "o-", color=f"C{i}", alpha=0.7, ms=4,
            label=f"seed {seed}: average of k sub-networks")
    ax.plot([K + 0.6], [100 * (ps["right"]["open"].mean() - base)], "x", color=f"C{i}", ms=8,
            label="all open, no scaling" if i == 0 else None)
ax.axhline(0, color="k", lw=1, label="scaled network (one pass)")
ax.set_xlabel("sub-networks averaged, k (x: all open)")
ax.set_ylabel("accuracy - scaled network's (points)")
ax.set_title(f"ResNet-{depth}: the scaled network vs the Monte-Carlo ensemble")
ax.legend(fontsize=7)
ax = axes[1]
for i, (seed, ps) in enumerate(per_seed.items()):
    jitter = 0.08 * (i - (len(seeds) - 1) / 2)
    ax.scatter(np.array(ps["depths"]) + jitter, 100 * np.array(ps["sub_acc"]), color=f"C{i}", s=16,
               label=f"seed {seed}")
    ax.axhline(100 * ps["right"]["scaled"].mean(), color=f"C{i}", ls="--", lw=1)
ax.set_xticks(range(min(min(ps["depths"]) for ps in per_seed.values()),
                   max(max(ps["depths"]) for ps in per_seed.values()) + 1))
ax.set_xlabel("blocks in the sampled sub-network (dashed: scaled network)")
ax.set_ylabel("test accuracy (%)")
ax.set_title("single sub-networks")
ax.legend(fontsize=7)
for ax in axes:
    ax.grid(alpha=0.3)
L.save_figure(fig, "ensemble.png")

section("5. findings")
L.report_findings(mechanics=mechanics, claims=claims)

# %% [markdown]
# ## Summary
# * a sampled sub-network at test time = BN in eval mode + blocks in training mode + gates;
# * the Monte-Carlo ensemble (the average of k sampled sub-networks) is the paper's
#   "ensemble" made concrete, and the scaled network is tested against it, paired by seed;
# * without the p_l scaling the full network is only the ensemble's deepest member, a
#   configuration that ran on few training steps; section 3 says whether that cost it accuracy;
# * BN recalibration is the follow-up: whether the running statistics gathered over sampled
#   members fit the scaled network.

# %%
L.try_this()
