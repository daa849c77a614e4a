"""Lesson 8 - Gradient strength: how much gradient reaches the first layer, with and without stochastic depth.

What you will learn
  * the measurement behind the paper's Figure 7: the mean absolute gradient of the loss with
    respect to the weights of "the first convolutional layer of the first ResBlock" - the
    first conv of net.blocks[0] - averaged over each epoch (and, as a second curve, the
    stem's conv, the very first layer of the network);
  * why two training runs of one seed cannot carry the claim (their weights and losses differ);
  * the mechanism the paper's argument rests on, measured: the gradient reaching block 1 is a
    sum over 2^L paths, one per choice of "shortcut or branch" at each block. Multiplying every
    branch's backward by t turns that sum into a polynomial in t, and three backward passes
    give the mean and spread of the number of branches on the gradient's paths - against a
    prediction derived here from each block's gain, at depths 20, 56 and 110, with and without
    dropped blocks;
  * the paired test of Figure 7: the same weights and the same batch, the gradient with every
    block against the gradient of sampled shorter networks - and what section 3 predicts for
    it: in a batch-normalised ResNet each open branch adds gradient, so a shorter network may
    pass less, not more.

Run
  python lessons/08_gradient_strength.py
  python lessons/08_gradient_strength.py --quick
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E, --train-images N)

Try this
  1. Section 3 measures at initialisation. Train a ResNet-56 for one epoch (train_epoch, as in
     section 1) and measure its paths again with path_lengths: do the branches' gains eps_l
     (and their shares q_l) grow as the branches learn, and do the paths get longer or shorter?
  2. The model of section 3 predicts the number of branches on a path from the gains alone.
     Predict, before you run it, the mean path length of a ResNet-110 with the uniform rule at
     p = 0.5 (ResNet(110, rule="uniform", p_last=0.5) and its sample_gates), then measure it.
  3. The gradient printed in section 1 is before weight decay (SGD adds weight_decay * w
     itself). Add it: how does the picture change, and which of the two terms dominates late
     in training?
"""
# %% [markdown]
# # Lesson 8: gradient strength at the first layer
#
# Huang et al. (Figure 7) plot, for ResNet-110 on CIFAR-10, the mean magnitude of the
# gradient that reaches "the first convolutional layer of the first ResBlock (l = 1)",
# epoch by epoch: with stochastic depth it is consistently larger, most visibly after each
# learning-rate drop. Their argument: a mini-batch trains a shorter network, and in a shorter
# network the gradient crosses fewer layers on its way down. We repeat the measurement on a
# small scale (sections 1-2), then look at the mechanism itself - the paths the gradient takes
# through the blocks (section 3) - and finally test the claim paired, at fixed weights
# (section 4).

# %%
import numpy as np

from minisd import ResNet, relative_error, survival_probabilities
from minisd.layers import SoftmaxCrossEntropy
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 20; quick: 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5; quick: 2)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 768; quick: 192)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 20)
epochs = L.args.epochs or (2 if L.quick else 5)
n_train = L.args.train_images or (192 if L.quick else 768)
batch_size = 32 if L.quick else 64

x_train, y_train, _, _, source = load_cifar10(L, n_train, 0)
normalizer = Normalizer.fit(x_train)
x_train, y_train = L.to_device(x_train), L.to_device(y_train)
mechanics, claims = [], []  # the two findings tables (section 5)

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
# a mechanics check: block 1's gate opened on a fraction p_1 of the steps, within 3 binomial s.e.
se_ran = np.sqrt(s["p1"] * (1 - s["p1"]) / ran_sd[1])
mechanics.append(("block 1's gate opens on a fraction p_1 of the steps",
                  f"{ran_sd[0] / ran_sd[1]:.3f} vs {s['p1']:.3f}",
                  "within 3 binomial s.e.", abs(ran_sd[0] / ran_sd[1] - s["p1"]) <= 3 * se_ran))
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
if ratio > 1 and larger == len(later):
    print("The stochastic-depth run passed more gradient to block 1 in every epoch of the second half, as in the")
    print("paper - but in one seed, and the two runs have different weights and different losses by then")
    print("(a larger loss alone makes larger gradients): a hint, not a measurement of the claim.")
elif ratio < 1 and larger == 0:
    print("The stochastic-depth run passed LESS gradient to block 1 in every epoch of the second half - unlike the")
    print("paper's ResNet-110 after 500 epochs; one seed, and different weights and losses by then.")
else:
    print("The two runs' block-1 gradients cross over in the second half: with one seed the sign is not settled.")
claims.append(("SD training run: larger block-1 gradient in the 2nd half (Fig. 7)",
                f"x{ratio:.2f}, larger in {larger}/{len(later)} epochs", ">= 3 seeds, each larger in every epoch",
                "not shown", "one seed of two drifting runs (different weights, different losses) cannot carry "
                "it: section 4 measures the claim paired"))

# %% [markdown]
# ## 3. How the gradient reaches block 1: the paths through the blocks
#
# A block computes `ReLU(shortcut(x) + branch(x))`. Its backward (blocks.py) hands the gradient
# `u` arriving at its output back to its input as the sum of two parts,
#
#     dx = shortcut'(ReLU'(u))  +  branch'(ReLU'(u))        "shortcut part" + "branch part".
#
# Unroll this over L blocks: the gradient at block 1's input is a sum of 2^L terms, one for
# each way of choosing, at every block, the shortcut part or the branch part - one **path**
# per choice (Veit et al. 2016, "Residual networks behave like ensembles of relatively shallow
# networks"). A path that chooses k branches crosses 2k convolutions; the one path with k = 0
# is the identity (shortcuts only). Whether the gradient "vanishes" is a question about the
# paths that carry it.
#
# **Counting branches with one number t.** Multiply every branch part by t in the backward
# (the forward stays as it was, so every ReLU mask and BN statistic is fixed, and everything in
# the backward is linear in the gradient). A path with k branches is then multiplied by t^k,
# so the gradient at block 1's input is a polynomial in t:
#
#     g(t) = G_0 + t G_1 + t^2 G_2 + ... + t^L G_L,     G = g(1) the true gradient,
#
# where G_k sums the paths with k branches. Project on G: phi(t) = <G, g(t)> / <G, G>
# = sum_k c_k t^k, with c_k = <G, G_k> / |G|^2 the share of the gradient that paths with k
# branches carry (the shares add up to phi(1) = 1). So phi is the generating function of "the
# number of branches on the gradient's path", and its derivatives at t = 1 give
#
#     mean  m = phi'(1),      variance = phi''(1) + m - m^2,
#
# measured with three backward passes, at t = 1 - h, 1 and 1 + h (central differences; phi
# is a polynomial, so h = 0.02 is accurate to a few hundredths of a branch).
#
# **A prediction from the blocks' gains.** At block l call eps_l = |branch part| / |shortcut
# part| the branch's gain, measured in the same backward pass. If the two parts point in unrelated
# directions (the model's one assumption), block l multiplies the gradient's squared norm by
# (1 + eps_l^2), a fraction q_l = eps_l^2 / (1 + eps_l^2) of which came through its branch -
# independently of the other blocks. The number of branches on a path is then a sum of
# independent coin flips, one per block, with probabilities q_l:
#
#     mean = sum_l q_l,     variance = sum_l q_l (1 - q_l),       a closed gate: q_l = 0.
#
# Two things follow. Counting paths (every path equal) would give half the blocks that run;
# the gradient's paths are as long as the gains make them. With batch norm the gains should
# fall with depth: block l's branch normalises an input that has summed l - 1 branches before
# it, so its gain eps_l should shrink roughly like 1/sqrt(l) (the table below prints
# l x eps_l^2, level if it does), and the mean would then grow far slower than L. And dropping
# a block removes its q_l from the sum: **a sampled network's gradient should cross fewer
# branches** - the short paths the paper's argument rests on. We measure both at
# initialisation (cheap: no training) and on the two trained networks of section 1; the
# findings say whether the paths are short and whether dropping shortens them.

# %%
path_depths = (8, 14, 20) if L.quick else (20, 56, 110)
n_path_draws = 2 if L.quick else 4
path_batch = 8 if L.quick else 16
h = 0.02                                   # the step of the central differences in t


def sq(a):
    """|a|^2, summed in float64."""
    return float((xp.asarray(a, dtype=xp.float64) ** 2).sum())


def backward_by_hand(net, dlogits, t):
    """ResNet.backward written out (model.py, blocks.py), every branch's backward multiplied by t.

    Needs a forward just before. dlogits: (N, classes). Returns the gradient at block 1's input
    (N, 16, 32, 32), the gradient at the image (N, 3, 32, 32), |gradient|^2 at the last block's
    output, and eps2: eps_l^2 = |branch part|^2 / |shortcut part|^2 per block (0 for a closed gate).
    """
    dout = net.pool.backward(net.fc.backward(dlogits))
    top = sq(dout)
    eps2 = []
    for block in reversed(net.blocks):
        (scale,), block.cache = block.cache, None     # the factor its forward saved (1 in training)
        dtotal = block.relu.backward(dout)
        d_shortcut = block.shortcut.backward(dtotal)
        if block.branch_ran:
            d_branch = block.branch.backward(scale * dtotal)
            eps2.append(sq(d_branch) / sq(d_shortcut))
            dout = d_shortcut + t * d_branch
        else:                                         # closed gate: no branch, no path through it
            eps2.append(0.0)
            dout = d_shortcut
    d_image = net.conv1.backward(net.bn1.backward(net.relu.backward(dout)))
    return dout, d_image, top, np.array(eps2[::-1])


def gradient_at_t(net, x, y, t):
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(net.forward(x), y)
    return backward_by_hand(net, loss_fn.backward(), t)


def path_lengths(net, gates, x, y):
    """Mean and s.d. of the number of branches on the gradient's paths, measured and predicted."""
    net.set_gates(gates)
    G, _, top, eps2 = gradient_at_t(net, x, y, 1.0)
    G64 = xp.asarray(G, dtype=xp.float64)
    phi = {1.0: 1.0}
    for t in (1 + h, 1 - h):
        g_t = gradient_at_t(net, x, y, t)[0]
        phi[t] = float((G64 * g_t).sum()) / sq(G)
    mean = (phi[1 + h] - phi[1 - h]) / (2 * h)
    second = (phi[1 + h] - 2 * phi[1.0] + phi[1 - h]) / h ** 2      # phi''(1) = E[k (k - 1)]
    q = eps2 / (1 + eps2)                                        # the share through each branch
    net.open_all_gates()
    return dict(blocks=int(sum(gates)), n=len(gates), mean=mean,
                sd=float(np.sqrt(max(second + mean - mean ** 2, 0))),
                pred_mean=float(q.sum()), pred_sd=float(np.sqrt((q * (1 - q)).sum())), q=q, eps2=eps2,
                norm=np.sqrt(sq(G)), down=np.sqrt(sq(G) / top))


section(f"3. the gradient's paths: branches crossed, on {path_batch} training images")
x_path = normalizer.apply(x_train[:path_batch])
y_path = y_train[:path_batch]

# first, that the backward written out is net.backward (t = 1): the same gradient at the image
check_net = ResNet(path_depths[0], 10, p_last=0.5, seed=L.seed).to(L.device)
_, d_by_hand, _, _ = gradient_at_t(check_net, x_path, y_path, 1.0)
loss_fn = SoftmaxCrossEntropy()
loss_fn.forward(check_net.forward(x_path), y_path)
err_by_hand = relative_error(d_by_hand, check_net.backward(loss_fn.backward()))
print(f"backward_by_hand(t = 1) vs net.backward, gradient at the image (ResNet-{path_depths[0]}): "
      f"relative error {err_by_hand:.1e}")
mechanics.append(("the backward written out (t = 1) is net.backward", f"{err_by_hand:.1e}",
                  "relative error < 1e-5 (float32)", err_by_hand < 1e-5))

gate_rng = np.random.default_rng(L.seed + 11)
results = {}   # depth -> {"open": ..., "draws": [...]} at initialisation
rows = []


def add_rows(name, res, draws):
    """Table rows: the all-open network, then its sampled draws (counting paths: half the blocks that run)."""
    rows.append([name, f"{res['blocks']} of {res['n']} (all)", f"{res['mean']:.2f} +- {res['sd']:.2f}",
                 f"{res['pred_mean']:.2f} +- {res['pred_sd']:.2f}", f"{res['blocks'] / 2:.1f}", "1.00"])
    for d in draws:
        rows.append(["    a sampled draw", f"{d['blocks']} of {d['n']}", f"{d['mean']:.2f} +- {d['sd']:.2f}",
                     f"{d['pred_mean']:.2f} +- {d['pred_sd']:.2f}", f"{d['blocks'] / 2:.1f}",
                     f"{d['norm'] / res['norm']:.2f}"])


for d in path_depths:
    net = ResNet(d, 10, p_last=0.5, seed=L.seed).to(L.device)
    all_open = path_lengths(net, [True] * len(net.blocks), x_path, y_path)
    draws = [path_lengths(net, net.sample_gates(gate_rng), x_path, y_path) for _ in range(n_path_draws)]
    results[d] = dict(open=all_open, draws=draws, p=np.array(net.survival_probs))
    add_rows(f"ResNet-{d}, initial weights", all_open, draws)
trained = {}
for label in ("constant depth", "stochastic depth"):
    net = history[label]["net"]
    trained[label] = path_lengths(net, [True] * len(net.blocks), x_path, y_path)
    add_rows(f"ResNet-{depth} after {label} training", trained[label], [])
table(["network", "blocks run", "branches on a path: measured", "predicted (sum q_l)", "blocks run / 2 (counting)",
       "|grad at block 1| / all open"], rows)
print(f"(measured: mean +- s.d. from phi'(1) and phi''(1), h = {h}; predicted: from the gains eps_l of the same "
      "backward pass; sampled draws: linear rule, p_L = 0.5)")
deep = results[path_depths[-1]]
ls = [l for l in (1, 2, 4, 8, 16, 32, 64) if l <= deep["open"]["n"]] + [deep["open"]["n"]]
ls = sorted(set(ls))
print(f"\nResNet-{path_depths[-1]} at initialisation, the branch's gain eps_l at block l (if eps_l falls like "
      "1/sqrt(l), l x eps_l^2 stays level):")
table(["block l"] + [str(l) for l in ls],
      [["eps_l^2"] + [f"{deep['open']['eps2'][l - 1]:.3f}" for l in ls],
       ["l x eps_l^2"] + [f"{l * deep['open']['eps2'][l - 1]:.2f}" for l in ls],
       ["q_l (share via its branch)"] + [f"{deep['open']['q'][l - 1]:.3f}" for l in ls]])

# the expected mean over gate draws, from the all-open gains: sum p_l q_l
for d in path_depths:
    r = results[d]
    expect = float((r["p"] * r["open"]["q"]).sum())
    print(f"ResNet-{d}: all open {r['open']['mean']:.2f} branches; sampled draws "
          f"{np.mean([x['mean'] for x in r['draws']]):.2f} on average (the all-open gains predict "
          f"sum p_l q_l = {expect:.2f} over gate draws)")

# the findings: the paper's argument (dropping shortens the paths), Veit et al.'s (they are short),
# and this section's model (the gains predict the mean); criteria fixed with the lesson's text
shorter = [(d, x["mean"] < results[d]["open"]["mean"]) for d in path_depths for x in results[d]["draws"]]
n_shorter = sum(ok for _, ok in shorter)
claims.append(("dropping blocks shortens the gradient's paths (the paper's argument)",
               f"{n_shorter} of {len(shorter)} draws shorter; e.g. ResNet-{path_depths[-1]} "
               f"{deep['open']['mean']:.1f} -> {np.mean([x['mean'] for x in deep['draws']]):.1f} branches",
               "mean branches on a path: every sampled draw below all-open, every depth (init)",
               n_shorter == len(shorter),
               "each dropped block takes its q_l off the mean: the short paths the paper's argument rests on"
               if n_shorter == len(shorter) else "a draw that drops only blocks of tiny share q_l can leave the "
               "mean where it was: the shortening is the sum of q_l over the dropped blocks"))
top = deep["open"]
short = top["mean"] + 2 * top["sd"] < top["n"] / 2
claims.append((f"the gradient's paths are short (Veit et al.: ~5-17 of 54 blocks in ResNet-110)",
               f"ResNet-{path_depths[-1]}: {top['mean']:.1f} +- {top['sd']:.1f} of {top['n']} blocks",
               "mean + 2 s.d. < L/2, all open, deepest net (init)", short,
               "the gains fall with depth, so most of a deep ResNet's branches are on few of the paths "
               "that carry its gradient" if short else
               f"with {top['n']} blocks the gains do not fall far enough below 1 for short paths: "
               "they are a property of deep ResNets (compare the depths in section 3)"))
everything = [r["open"] for r in results.values()] + [x for r in results.values() for x in r["draws"]] + \
    list(trained.values())
worst = max(abs(x["mean"] / x["pred_mean"] - 1) for x in everything)
claims.append(("(derived here) the gains predict the mean: branches on a path = sum q_l",
               f"worst {100 * worst:.0f}% off, over {len(everything)} networks",
               "within 15% for every network measured (init, draws, trained)", worst < 0.15,
               "a block's gain, measured locally, tells how the whole gradient splits over path lengths"
               if worst < 0.15 else "the branch and shortcut parts are not unrelated directions here: the "
               "model's one assumption fails, and the cross terms carry part of the gradient"))

# %% [markdown]
# ## 4. Figure 7, paired: the same weights, the same batch, full vs sampled depth
#
# The curves of section 2 compare two networks that have drifted apart: different weights,
# different losses. The paper's claim is about depth: a shorter network passes more gradient
# back to its first layer. That can be measured directly. Take one set of weights and one
# mini-batch (not augmented, BN in training mode as in a step), and compute the gradient of
# block 1's first conv twice over: with every gate open (the full network), and with the
# gates of a linear-rule p_L = 0.5 draw (`survival_probabilities`, `net.set_gates`; block 1
# kept open, its gradient is what we measure), for several draws. No update is made: the
# weights stay fixed, so every difference comes from the gates.
#
# A shorter network may also have a higher loss, and a larger loss alone sends a larger
# gradient into the network. So we also divide block 1's gradient by the mean |gradient| at
# the logits (what the loss sends in): if that share is larger too, the extra gradient comes
# from the shorter path, not from the loss. We do it at three sets of weights: the initial
# ones and those of the two trained runs.
#
# Section 3 already tells what to expect. Every open branch multiplies the gradient's squared
# norm by about (1 + eps_l^2) > 1: in a batch-normalised ResNet the paths through the branches
# *add* gradient, they do not lose it - see its last column, the sampled draws' gradient at
# block 1 against the all-open network's. A network that drops blocks has fewer of those
# paths. The paper's effect needs a gradient that fades on its way down, which is what its
# ResNet-110 after hundreds of epochs may have and a freshly initialised one does not.

# %%
n_batches, n_draws = (2, 4) if L.quick else (3, 6)
section(f"4. Figure 7 paired, at fixed weights: {n_batches} batches x (full depth + {n_draws} gate draws)")


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


init_net = ResNet(depth, 10, p_last=0.5, seed=L.seed).to(L.device)
weights = [("initial weights", init_net), ("after constant-depth training", c["net"]),
           ("after stochastic-depth training", s["net"])]
# how the gradient's size changes from the last block's output down to block 1's input (all open)
down = {"initial weights": path_lengths(init_net, [True] * len(init_net.blocks), x_path, y_path)["down"],
        "after constant-depth training": trained["constant depth"]["down"],
        "after stochastic-depth training": trained["stochastic depth"]["down"]}
probs = np.array(survival_probabilities(len(c["net"].blocks), 0.5, "linear"))
draw_rng = np.random.default_rng(L.seed + 7)
batch_rng = np.random.default_rng(L.seed + 8)
batches = [xp.asarray(batch_rng.choice(len(y_train), batch_size, replace=False)) for _ in range(n_batches)]
draws = []
for _ in range(n_draws):
    g = draw_rng.random(len(probs)) < probs
    g[0] = True  # block 1 runs: its gradient is the measurement
    draws.append(g)
sampled_vs_full, rows = {}, []  # weights -> per batch: sampled / full ratios
for name, net in weights:
    per_batch = []  # (gradient ratio, share ratio, loss ratio, draws larger), sampled / full, per batch
    for idx in batches:
        x, y = normalizer.apply(x_train[idx], dtype=net.dtype), y_train[idx]
        g_full, head_full, loss_full = block1_gradient(net, x, y, [True] * len(probs))
        sampled = [block1_gradient(net, x, y, g) for g in draws]
        per_batch.append((np.mean([g for g, _, _ in sampled]) / g_full,
                          np.mean([g / head for g, head, _ in sampled]) / (g_full / head_full),
                          np.mean([l for _, _, l in sampled]) / loss_full,
                          sum(g > g_full for g, _, _ in sampled)))
    net.open_all_gates()
    sampled_vs_full[name] = np.array(per_batch)
    a = sampled_vs_full[name]
    rows.append([name, f"{np.mean([d.sum() for d in draws]):.1f} of {len(probs)}",
                 f"{a[:, 0].mean():.2f} ({a[:, 0].min():.2f}-{a[:, 0].max():.2f})",
                 f"{int(a[:, 3].sum())}/{n_batches * n_draws}",
                 f"{a[:, 2].mean():.2f}", f"{a[:, 1].mean():.2f} ({a[:, 1].min():.2f}-{a[:, 1].max():.2f})",
                 f"x{down[name]:.2f}"])
table(["weights", "blocks run (sampled)", "|grad| sampled/full (batches min-max)", "draws larger",
       "loss sampled/full", "|grad| / |dL/dlogits|: sampled/full", "full: last block -> block 1"], rows)
print("(each ratio: the mean over the gate draws divided by the full network's value, on the same batch;")
print(f" mean over the {n_batches} batches, lowest-highest batch in brackets; last column: |gradient| at block 1's")
print(" input / at the last block's output, all open, from section 3's backward)")


def verdict(values):
    """'yes' if every paired ratio is above 1, 'no' if every one is below 1, else 'not shown'."""
    return "yes" if min(values) > 1 else "no" if max(values) < 1 else "not shown"


def why_not(name):
    """The takeaway of a Figure-7 row that is not supported, from the numbers of sections 3 and 4."""
    if down[name] > 1:
        return (f"the gradient GROWS x{down[name]:.1f} on its way down to block 1 here: nothing vanishes for a "
                "shorter network to restore, and each open branch adds paths (section 3)")
    return (f"the gradient shrinks (x{down[name]:.2f}) on its way down, yet the sampled networks do not pass "
            "more: at this depth and length of training the paper's gap is not there")


for name, _ in weights:
    a = sampled_vs_full[name]
    v = verdict(a[:, 0])
    claims.append((f"Fig. 7 paired: sampled depth passes more gradient to block 1 ({name.replace('after ', '')})",
                   f"x{a[:, 0].mean():.2f} ({a[:, 0].min():.2f}-{a[:, 0].max():.2f})",
                   f"> 1 on all {n_batches} batches", v, None if v == "yes" else why_not(name)))
share = np.concatenate([sampled_vs_full[name][:, 1] for name, _ in weights])
vs = verdict(share)
claims.append(("... and more per unit of gradient at the logits (not the loss alone)",
               f"x{share.mean():.2f} ({share.min():.2f}-{share.max():.2f})",
               f"> 1 on all {len(share)} (weights, batch) pairs", vs,
               None if vs == "yes" else "dividing by the gradient the loss sends in does not turn it around: "
               "the difference is the paths, not the loss" if vs == "no" else "per unit of the loss's "
               "gradient the sign changes between batches or weights: nothing is settled at this scale"))
grad_all = np.concatenate([sampled_vs_full[name][:, 0] for name, _ in weights])
v = verdict(grad_all)
if v == "yes" and vs == "yes":
    print("-> at every set of weights and on every batch, the sampled (shorter) networks passed more gradient to")
    print("   block 1 than the full network, and a larger share of what arrived at the logits: the paper's")
    print("   effect, measured paired.")
elif v == "yes":
    print("-> the sampled networks passed more gradient to block 1 on every batch, at every set of weights, but")
    print("   not a larger share of what arrived at the logits on every batch: their larger loss may explain the")
    print("   extra gradient, not their shorter paths. Not the paper's effect, measured paired.")
elif v == "no":
    print("-> the sampled networks passed LESS gradient to block 1 than the full network on every batch, at every")
    print("   set of weights. Section 3's model says why: each open branch adds paths that add gradient.")
else:
    said = {"yes": "more gradient on every batch", "no": "LESS gradient on every batch",
            "not shown": "more on some batches, less on others"}
    print("-> not the same direction everywhere; the sampled networks passed, at")
    for name, _ in weights:
        print(f"     {name}: {said[verdict(sampled_vs_full[name][:, 0])]} (gradient x{down[name]:.2f} from the "
              "last block down to block 1, all open);")
    print(f"   so the paired measurement does not show the paper's effect at ResNet-{depth}.")
print(f"The paper's curves come from a ResNet-110 over 500 epochs; this is a ResNet-{depth} over "
      f"{len(c['stem'])} steps.")

# %% [markdown]
# ## 5. The figure and the findings
#
# The figure draws section 3: the mean number of branches on the gradient's paths against the
# number of blocks, all open and sampled, beside the model's prediction and beside L/2 (what
# counting paths would give); and, for the deepest network, the model's whole distribution.

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ns = np.array([results[d]["open"]["n"] for d in path_depths])
ax.plot(ns, ns / 2, "k:", label="L/2: every path counted alike (all open)")
ax.errorbar(ns, [results[d]["open"]["mean"] for d in path_depths], [results[d]["open"]["sd"] for d in path_depths],
            fmt="o", color="C0", capsize=3, label="all open: measured (mean +- s.d.)")
ax.plot(ns, [results[d]["open"]["pred_mean"] for d in path_depths], "-", color="C0", alpha=0.5,
        label="all open: predicted, sum q_l")
for i, d in enumerate(path_depths):
    dr = results[d]["draws"]
    ax.plot([x["blocks"] for x in dr], [x["mean"] for x in dr], "s", color="C1", ms=5,
            label="sampled draws: measured (at blocks run)" if i == 0 else None)
ax.set_xlabel("residual blocks in the network (L)")
ax.set_ylabel("branches on the gradient's path")
ax.set_title("How many branches the gradient crosses (initialisation)")
ax.legend(fontsize=8)
ax = axes[1]


def coin_sum(q):
    """Distribution of a sum of independent coin flips with probabilities q: P(k), k = 0..len(q)."""
    dist = np.array([1.0])
    for ql in q:
        dist = np.convolve(dist, [1 - ql, ql])
    return dist


n_deep = deep["open"]["n"]
ks = np.arange(n_deep + 1)
ax.plot(ks, coin_sum(np.full(n_deep, 0.5)), "k:", label="share of the paths (all counted alike)")
ax.plot(ks, coin_sum(deep["open"]["q"]), "-", color="C0", label="all open (model)")
ax.plot(ks, coin_sum(deep["p"] * deep["open"]["q"]), "-", color="C1", label="gates drawn, p_L = 0.5 (model)")
ax.axvline(deep["open"]["mean"], color="C0", ls="--", lw=1, label="measured means")
ax.axvline(np.mean([x["mean"] for x in deep["draws"]]), color="C1", ls="--", lw=1)
ax.set_xlabel("k, branches on a path")
ax.set_ylabel("share of the gradient")
ax.set_title(f"ResNet-{path_depths[-1]}: branches on the gradient's paths")
ax.legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
L.save_figure(fig, "gradient_paths.png")

section("5. findings")
L.report_findings(mechanics=mechanics, claims=claims)

# %% [markdown]
# ## Summary
# * one line of instrumentation - `xp.abs(net.blocks[0].branch[0].grads["weight"]).mean()`
#   after each backward, on the steps block 1 ran - is the paper's Figure 7 measurement; two
#   runs of one seed cannot settle it (section 2);
# * the gradient at block 1 is a sum over paths; multiplying the branches' backward by t counts
#   the branches on them, and three backward passes give their mean and spread; the branches'
#   gains eps_l predict both (section 3). Its findings say whether, at these depths, the paths
#   that carry the gradient are short and whether dropping blocks makes them shorter;
# * shorter need not mean larger: in a batch-normalised ResNet every open branch multiplies the
#   gradient's squared norm by about 1 + eps_l^2, so the paper's effect needs a gradient that
#   fades on its way down. Section 4 measures it paired, at fixed weights; its findings say
#   whether the sampled networks passed more gradient to block 1. At test time the full-depth
#   network is used (lesson 9).

# %%
L.try_this()
