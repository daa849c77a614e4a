"""Lesson 8 - Gradient strength: how much gradient reaches the first layer, with and without stochastic depth.

What you will learn
  * the measurement behind the paper's Figure 7: the mean absolute gradient of the loss with
    respect to the weights of "the first convolutional layer of the first ResBlock" - the
    first conv of net.blocks[0] - averaged over each epoch (and, as a second curve, the
    stem's conv, the very first layer of the network);
  * the paper's finding that with stochastic depth the gradient reaching the first layer
    stays larger (a mini-batch's network is shorter; the paper argues this counters vanishing
    gradients and "diminishing feature reuse") - and what a small CPU run shows of it;
  * how the learning-rate drops show up in the gradient (it shrinks as the loss flattens);
  * why two training runs of one seed cannot carry the claim (their weights and losses differ),
    and the paired measurement that can: the same weights and the same batch, the gradient
    with every block against the gradient of sampled shorter networks (several gate draws),
    and that gradient divided by the one arriving at the output, so a larger loss cannot
    explain it away.

Run
  python lessons/08_gradient_strength.py            # 152 s on a busy 2-core CPU (load 4, 2026-12-02)
  python lessons/08_gradient_strength.py --quick    # ~9 s busy
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E, --train-images N)

Try this
  1. Measure the last block's first convolution instead (net.blocks[-1].branch[0]), counting
     only the steps where that block ran, as section 1 does for block 1. Is the difference
     between the runs larger or smaller there? Why would the paper look at block 1?
  2. Repeat with --depth 32. On this tiny subset, lr 0.1 with batch 64 can blow up in the first
     epoch (loss above 4, then stuck near ln 10 = 2.30; PyTorch does the same) and the first-layer
     gradient collapses. Which run survives it? Then add warmup_epochs=1 to lr_at_epoch (He et
     al.'s cure for their deepest nets) and compare.
  3. The gradient printed is before weight decay (SGD adds weight_decay * w itself). Add
     it: how does the picture change, and which of the two terms dominates late in training?
"""
# %% [markdown]
# # Lesson 8: gradient strength at the first layer
#
# Huang et al. (Figure 7) plot, for ResNet-110 on CIFAR-10, the mean magnitude of the
# gradient that reaches "the first convolutional layer of the first ResBlock (l = 1)",
# epoch by epoch: with stochastic depth it is consistently larger, most visibly after each
# learning-rate drop. We repeat the measurement on a small scale: same data, same initial
# weights, two runs, one seed (section 2) - and then measure the claim itself, paired, at
# fixed weights (section 3).

# %%
import numpy as np

from minisd import ResNet, survival_probabilities
from minisd.layers import SoftmaxCrossEntropy
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 20; quick: 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 6; quick: 2)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 1024; quick: 192)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 20)
epochs = L.args.epochs or (2 if L.quick else 6)
n_train = L.args.train_images or (192 if L.quick else 1024)
batch_size = 32 if L.quick else 64

x_train, y_train, _, _, source = load_cifar10(L, n_train, 0)
normalizer = Normalizer.fit(x_train)
x_train, y_train = L.to_device(x_train), L.to_device(y_train)

# %% [markdown]
# ## 1. The measurement
#
# After every backward pass (before the SGD update) we read the gradient of the mini-batch
# loss with respect to the 16 x 16 x 3 x 3 weights of the first conv of block 1,
# `net.blocks[0].branch[0].grads["weight"]`, and record its mean absolute value.
# `train_epoch` calls our `on_step` at exactly that point. With stochastic depth block 1 is
# itself dropped now and then (p_1 = 1 - (1 - p_L)/L): on those steps its branch gets no
# gradient at all, so we leave them out - averaging in their zeros would measure the drop
# rate, not the gradient. We also record the stem's conv (`net.conv1`, 16 x 3 x 3 x 3), which
# is in no droppable block and runs on every step, as a second curve.

# %%
section(f"1. training ResNet-{depth} twice ({epochs} epochs of {len(y_train)} images, batch {batch_size})")
print(f"learning rate per epoch: {', '.join(f'{lr_at_epoch(e, 0.1, epochs):g}' for e in range(epochs))}")
history = {}
for label, p_last in (("constant depth", 1.0), ("stochastic depth", 0.5)):
    net = ResNet(depth, 10, p_last=p_last, seed=L.seed).to(L.device)
    opt = SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(L.seed)
    block1, stem = [], []   # per step: mean |grad| (block 1: None when it was dropped)

    def on_step(net):
        first = net.blocks[0]
        block1.append(float(xp.abs(first.branch[0].grads["weight"]).mean()) if first.branch_ran else None)
        stem.append(float(xp.abs(net.conv1.grads["weight"]).mean()))

    per_epoch, per_epoch_stem, losses, ran = [], [], [], []
    for epoch in range(epochs):
        opt.lr = lr_at_epoch(epoch, 0.1, epochs)
        start = len(stem)
        r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size, on_step=on_step)
        kept = [g for g in block1[start:] if g is not None]
        per_epoch.append(float(np.mean(kept)))
        per_epoch_stem.append(float(np.mean(stem[start:])))
        ran.append((len(kept), len(stem) - start))
        losses.append(r["loss"])
        print(f"  {label:16s} epoch {epoch + 1}/{epochs}: lr {opt.lr:<6g} loss {r['loss']:.3f}  "
              f"mean |grad| block 1 {per_epoch[-1]:.2e} (ran {len(kept)}/{len(stem) - start} steps), "
              f"stem {per_epoch_stem[-1]:.2e}  ({r['seconds']:.1f} s)", flush=True)
    history[label] = dict(block1=block1, stem=stem, per_epoch=per_epoch, per_epoch_stem=per_epoch_stem,
                          loss=losses, ran=ran, p1=net.survival_probs[0], net=net)

# %% [markdown]
# ## 2. Epoch by epoch

# %%
section("2. mean |gradient| of the first conv of block 1 (and of the stem), per epoch")
c, s = history["constant depth"], history["stochastic depth"]
table(["epoch", "lr", "block 1: const", "block 1: SD", "SD / const", "stem: const", "stem: SD", "SD / const"],
      [[e + 1, lr_at_epoch(e, 0.1, epochs), c["per_epoch"][e], s["per_epoch"][e], s["per_epoch"][e] / c["per_epoch"][e],
        c["per_epoch_stem"][e], s["per_epoch_stem"][e], s["per_epoch_stem"][e] / c["per_epoch_stem"][e]]
       for e in range(epochs)], ["{}", "{:g}", "{:.2e}", "{:.2e}", "{:.2f}", "{:.2e}", "{:.2e}", "{:.2f}"])
ran_sd = sum(k for k, _ in s["ran"]), sum(n for _, n in s["ran"])
print(f"with stochastic depth block 1 ran on {ran_sd[0]} of {ran_sd[1]} steps (p_1 = {s['p1']:.3f}); "
      "the other steps are left out of its mean.")
half = epochs // 2
later = range(half, epochs)
ratio = np.mean(s["per_epoch"][half:]) / np.mean(c["per_epoch"][half:])
ratio_stem = np.mean(s["per_epoch_stem"][half:]) / np.mean(c["per_epoch_stem"][half:])
larger = sum(s["per_epoch"][e] > c["per_epoch"][e] for e in later)
loss_ratio = np.mean(s["loss"][half:]) / np.mean(c["loss"][half:])
print(f"\nsecond half of the run (epochs {half + 1}-{epochs}): stochastic-depth gradient / constant-depth "
      f"gradient = {ratio:.2f} at block 1 (larger in {larger} of {len(later)} epochs), {ratio_stem:.2f} at the stem;")
print(f"training loss ratio {loss_ratio:.2f} (each run's own steps: with stochastic depth, sampled sub-networks;"
      f" data: {source}; one seed).")
findings = []  # (claim, number, criterion, supported?)
if ratio > 1 and larger == len(later):
    print("The stochastic-depth run passed more gradient to block 1 in every epoch of the second half, as in the")
    print("paper - but in one seed, and the two runs have different weights and different losses by then")
    print("(a larger loss alone makes larger gradients): a hint, not a measurement of the claim.")
elif ratio < 1 and larger == 0:
    print("The stochastic-depth run passed LESS gradient to block 1 in every epoch of the second half - unlike the")
    print("paper's ResNet-110 after 500 epochs; one seed, and different weights and losses by then.")
else:
    print("The two runs' block-1 gradients cross over in the second half: with one seed the sign is not settled.")
findings.append(("SD training run: larger block-1 gradient in the 2nd half (cf. Fig. 7)",
                 f"x{ratio:.2f}, larger in {larger}/{len(later)} epochs",
                 ">= 3 seeds, each larger in every epoch", "not shown"))
if abs(ratio_stem - 1) < 0.05:
    print(f"At the stem the two runs' gradients are within 5% of each other (x{ratio_stem:.2f}).")
elif (ratio - 1) * (ratio_stem - 1) > 0:
    print(f"The stem's gradient differs in the same direction (x{ratio_stem:.2f}).")
else:
    print(f"The stem's gradient differs in the other direction (x{ratio_stem:.2f}): which layer one measures matters.")

# %% [markdown]
# ## 3. The claim, paired: the same weights, the same batch, full vs sampled depth
#
# The curves above compare two networks that have drifted apart: different weights, different
# losses. The paper's argument is about depth: a shorter network passes more gradient back to
# its first layer. That can be measured directly. Take one set of weights and one mini-batch
# (not augmented, BN in training mode as in a step), and compute the gradient of block 1's
# first conv twice over: with every gate open (the full network), and with the gates of a
# linear-rule p_L = 0.5 draw (`survival_probabilities`, `net.set_gates`; block 1 kept open,
# its gradient is what we measure), for several draws. No update is made: the weights stay
# fixed, so every difference comes from the gates.
#
# A shorter network may also have a higher loss, and a larger loss alone sends a larger
# gradient into the network. So we also divide block 1's gradient by the mean |gradient| at
# the logits (what the loss sends in): if that share is larger too, the extra gradient comes
# from the shorter path, not from the loss. We do it at three sets of weights: the initial
# ones and those of the two trained runs.

# %%
n_batches, n_draws = (2, 4) if L.quick else (4, 8)
section(f"3. paired at fixed weights: {n_batches} batches x (full depth + {n_draws} gate draws)")


def block1_gradient(net, x, y, gates):
    """mean |dL/dW| of block 1's first conv, mean |dL/dlogits| and the loss, for these gates; no update."""
    net.set_gates(gates)
    loss_fn = SoftmaxCrossEntropy()
    loss = float(loss_fn.forward(net.forward(x), y))
    dlogits = loss_fn.backward()
    net.zero_grad()
    net.backward(dlogits)
    g1 = float(xp.abs(net.blocks[0].branch[0].grads["weight"]).mean())
    return g1, float(xp.abs(dlogits).mean()), loss


weights = [("initial weights", ResNet(depth, 10, p_last=0.5, seed=L.seed).to(L.device)),
           ("after constant-depth training", c["net"]), ("after stochastic-depth training", s["net"])]
probs = np.array(survival_probabilities(len(c["net"].blocks), 0.5, "linear"))
gate_rng = np.random.default_rng(L.seed + 7)
batch_rng = np.random.default_rng(L.seed + 8)
batches = [xp.asarray(batch_rng.choice(len(y_train), batch_size, replace=False)) for _ in range(n_batches)]
draws = []
for _ in range(n_draws):
    g = gate_rng.random(len(probs)) < probs
    g[0] = True  # block 1 runs: its gradient is the measurement
    draws.append(g)
paired, rows = {}, []
for name, net in weights:
    per_batch = []  # (gradient ratio, share ratio, loss ratio), sampled / full, per batch
    for idx in batches:
        x, y = normalizer.apply(x_train[idx], dtype=net.dtype), y_train[idx]
        g_full, head_full, loss_full = block1_gradient(net, x, y, [True] * len(probs))
        sampled = [block1_gradient(net, x, y, g) for g in draws]
        per_batch.append((np.mean([g for g, _, _ in sampled]) / g_full,
                          np.mean([g / h for g, h, _ in sampled]) / (g_full / head_full),
                          np.mean([l for _, _, l in sampled]) / loss_full,
                          sum(g > g_full for g, _, _ in sampled)))
    net.open_all_gates()
    paired[name] = np.array(per_batch)
    a = paired[name]
    rows.append([name, f"{np.mean([d.sum() for d in draws]):.1f} of {len(probs)}",
                 f"{a[:, 0].mean():.2f} ({a[:, 0].min():.2f}-{a[:, 0].max():.2f})", f"{int(a[:, 3].sum())}/{n_batches * n_draws}",
                 f"{a[:, 2].mean():.2f}", f"{a[:, 1].mean():.2f} ({a[:, 1].min():.2f}-{a[:, 1].max():.2f})"])
table(["weights", "blocks run (sampled)", "|grad| sampled/full (batches min-max)", "draws larger",
       "loss sampled/full", "|grad| / |dL/dlogits|: sampled/full"], rows)
print("(each ratio: the mean over the gate draws divided by the full network's value, on the same batch;")
print(f" mean over the {n_batches} batches, lowest-highest batch in brackets)")


def verdict(values):
    """'yes' if every paired ratio is above 1, 'no' if every one is below 1, else 'not shown'."""
    return "yes" if min(values) > 1 else "no" if max(values) < 1 else "not shown"


for name, _ in weights:
    a = paired[name]
    findings.append((f"sampled depth: more gradient at block 1 ({name.replace('after ', '')})",
                     f"x{a[:, 0].mean():.2f} ({a[:, 0].min():.2f}-{a[:, 0].max():.2f})",
                     f"> 1 on all {n_batches} batches", verdict(a[:, 0])))
share = np.concatenate([paired[name][:, 1] for name, _ in weights])
findings.append(("... and more per unit of gradient at the logits (not the loss alone)",
                 f"x{share.mean():.2f} ({share.min():.2f}-{share.max():.2f})",
                 f"> 1 on all {len(share)} (weights, batch) pairs", verdict(share)))
grad_all = np.concatenate([paired[name][:, 0] for name, _ in weights])
v, vs = verdict(grad_all), verdict(share)
if v == "yes" and vs == "yes":
    print("-> at every set of weights and on every batch, the sampled (shorter) networks passed more gradient to")
    print("   block 1 than the full network, and a larger share of what arrived at the logits: the paper's")
    print("   mechanism, measured paired. It is the gradient of one step; how it adds up over training is")
    print("   what section 2 (one seed) cannot settle.")
elif v == "yes":
    print("-> the sampled networks passed more gradient to block 1 on every batch, but not a larger share of the")
    print("   gradient at the logits everywhere: part or all of the difference may come from their larger loss.")
elif v == "no":
    print("-> the sampled networks passed LESS gradient to block 1 than the full network on every batch, at every")
    print("   set of weights: at this depth, the paper's mechanism is not seen.")
else:
    per_w = {name: verdict(paired[name][:, 0]) for name, _ in weights}
    said = {"yes": "more gradient on every batch", "no": "LESS gradient on every batch",
            "not shown": "more on some batches, less on others"}
    print("-> not the same direction everywhere; the sampled networks passed, at")
    for name, w in per_w.items():
        print(f"     {name}: {said[w]};")
    print(f"   so the paired measurement does not show the paper's effect at ResNet-{depth}"
          + (" (where it is clear, it is the opposite)." if "no" in per_w.values() and "yes" not in per_w.values()
             else "."))
print(f"The paper's curves come from a ResNet-110 over 500 epochs; this is a ResNet-{depth} over "
      f"{len(c['stem'])} steps.")

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ep = np.arange(1, epochs + 1)
for i, (label, h) in enumerate(history.items()):
    axes[0].plot(ep, h["per_epoch"], "o-", color=f"C{i}", label=f"{label}: block 1, first conv")
    axes[0].plot(ep, h["per_epoch_stem"], "s--", color=f"C{i}", alpha=0.6, label=f"{label}: stem conv")
    steps = np.arange(1, len(h["stem"]) + 1) / (len(h["stem"]) / epochs)
    kept = [(t, g) for t, g in zip(steps, h["block1"]) if g is not None]
    axes[1].plot([t for t, _ in kept], [g for _, g in kept], color=f"C{i}", alpha=0.6, lw=0.8, label=label)
drops = [e for e in range(1, epochs) if lr_at_epoch(e, 0.1, epochs) < lr_at_epoch(e - 1, 0.1, epochs)]
for ax, offset in ((axes[0], 0.5), (axes[1], 0.0)):
    for d in drops:
        ax.axvline(d + offset, color="k", ls=":", lw=1)
axes[0].set_xticks(ep)
axes[0].set_xlabel("epoch (dotted: learning rate / 10)")
axes[0].set_ylabel("mean |dL/dW|")
axes[0].set_title(f"Gradient strength per epoch, ResNet-{depth} (cf. paper Fig. 7)")
axes[1].set_xlabel("epoch (every step block 1 ran)")
axes[1].set_title("block 1's first conv, step by step")
for ax in axes:
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
L.save_figure(fig, "gradient_strength.png")

# %% [markdown]
# ## 4. Findings
#
# Each claim, the number behind it, the criterion it must meet, and whether it did here.

# %%
section("4. findings")
L.report_findings(findings)

# %% [markdown]
# ## Summary
# * one line of instrumentation - `xp.abs(net.blocks[0].branch[0].grads["weight"]).mean()`
#   after each backward, on the steps block 1 ran - is the paper's Figure 7 measurement;
# * in the paper, the shorter networks of stochastic-depth training pass more gradient to the
#   first layer; two runs of one seed cannot settle it (section 2), the same weights and
#   batch with and without the gates can (section 3). At test time the full-depth network
#   is used (lesson 9).

# %%
L.try_this()
