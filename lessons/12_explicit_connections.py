"""Lesson 12 - EXPLICIT CONNECTIONS: from stochastic depth's implicit long paths to DenseNet's wired ones.

What you will learn
  * a dropped block hands its input straight to a later one: stochastic depth trains an
    implicit ensemble with long-range paths. A DenseNet (Huang, Liu, van der Maaten,
    Weinberger, CVPR 2017) wires those paths in: every layer of a dense block sees the
    concatenation of all earlier maps;
  * the dense layer's backward: the concatenation's gradient is a split, one part goes back
    through the layer, the other straight back to every earlier layer (traced below);
  * parameters and FLOPs of DenseNet-BC against ResNets (the papers' errors beside them);
  * memory: naive concatenation keeps every layer's input - quadratic in the layers of a
    block; shared storage (Pleiss et al. 2017, minisd/fast/dense.py) is linear;
  * a short side-by-side run on CIFAR-10 at (about) equal parameters: a small DenseNet-BC
    against ResNet-8 with and without stochastic depth, over seeds - and what it can't show.
  Figure: out/12_explicit_connections_memory.png (bytes held vs dense layer, both storages).

Run
  python lessons/12_explicit_connections.py
  python lessons/12_explicit_connections.py --quick  # a few seconds (tiny sizes, one seed)
  (options: --data-dir DIR, --device gpu, --out DIR, --seed N)

Try this
  1. In section 1, send a gradient into the first layer's new maps only: which layers' inputs
     receive it, and why does none reach the later layers?
  2. Double the layers of a block in section 3 and predict both memory figures before running.
  3. Train longer (--epochs 30 with --full-size) and see whether the ranking of section 4 holds
     beyond the seed spread.
"""
# %% [markdown]
# # Lesson 12: explicit connections
#
# A dense layer computes k new feature maps from everything before it and appends them:
#
#     x_{l+1} = cat(x_l, f_l(x_l)),   f = BN -> ReLU -> conv1x1 (4k) -> BN -> ReLU -> conv3x3 (k)
#
# ![A dense block: every layer reads the maps of every layer before it; the stack of maps grows
# by k per layer](../docs/figures/dense_block.png)
#
# (docs/figures/dense_block.png, drawn by docs/figures/make_figures.py from minisd.DenseNet.)
#
# Its backward, verbatim from minisd/blocks.py:

# %%
import inspect
import time

import numpy as np

import minisd
from minisd import DenseLayer, DenseNet, ResNet
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from minisd.tracing import held_nbytes
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs of section 4 (default: 4; --quick: 1)")
    p.add_argument("--full-size", action="store_true", help="section 4 on 5,000 images instead of 960 (the full CIFAR-10; the sample has 2,500)")


L = setup(__doc__, extra)
xp = L.xp
findings = []  # what the code does, checked: (claim, number, criterion, supported?)

section("the dense layer's forward and backward (minisd/blocks.py)")
for method in (DenseLayer.forward, DenseLayer.backward):
    print(inspect.getsource(method).rstrip())

# %% [markdown]
# ## 1. Where the concatenation's gradient goes
#
# A block of 3 layers; a gradient arrives at the block's output. Layer 3 splits it: its own
# k maps' part goes back through f_3, the rest (the channels of x, layers 1-2's maps and the
# block input) passes straight to layer 2, which splits again, and so on. So the block's input
# receives the gradient of every layer through a direct path, plus each layer's f.

# %%
section("1. a gradient through a block of 3 dense layers")
rng = np.random.default_rng(L.seed)
block = minisd.DenseBlock(4, 3, growth_rate=2, bottleneck=True, dtype=np.float64, rng=rng).to(L.device)
x = xp.asarray(rng.standard_normal((2, 4, 6, 6)))
with minisd.reference():  # layer by layer, as the readable code concatenates
    out = block.forward(x)
    dout = xp.zeros_like(out)
    dout[:, -2:] = 1.0  # a gradient on the LAST layer's new maps only
    rows = []
    d = dout
    for i, layer in reversed(list(enumerate(block.layers, 1))):
        C = layer.in_channels
        d_direct, d_new = d[:, :C], d[:, C:]
        d = layer.backward(d)
        through_f = d - d_direct
        rows.append([i, f"{C} + {layer.growth_rate}", f"{float(abs(d_new).sum()):.2f}",
                     f"{float(abs(d_direct).sum()):.2f}", f"{float(abs(through_f).sum()):.3f}"])
table(["layer", "input + new channels", "|grad| of its new maps", "|grad| passed straight on",
       "|grad| added through its f"], rows)
reached = float(abs(d).sum())
print(f"the block input's gradient: {reached:.3f} in all. Only layer 3's maps were given a gradient, yet "
      "layers 2 and 1 receive one for their maps ('new maps' column): layer 3's f reads them, so its backward "
      "sends them a gradient, which then goes back through their own f and, unchanged, on to the channels before.")
findings.append(("a gradient on the last layer's maps reaches the block input", f"{reached:.3f}", "> 0",
                 reached > 0))

# %% [markdown]
# ## 2. Parameters and FLOPs
#
# FLOPs of one 32x32 image's forward, counted by minisd.trace() (each layer counts itself),
# beside the errors the papers report on CIFAR-10 with augmentation (C10+): they are the
# papers' numbers, not measured here.

# %%
section("2. parameters and forward FLOPs per image (CIFAR-10, 32x32)")
models = [("ResNet-110 (constant depth)", lambda: ResNet(110), "6.41% (SD paper, Table 1)"),
          ("ResNet-110, stochastic depth", lambda: ResNet(110), "5.25% (SD paper, Table 1)"),
          ("DenseNet-BC-100, k=12", lambda: DenseNet(100, 12), "4.51% (DenseNet paper, Table 2)")]
if L.quick:
    models = [("ResNet-20", lambda: ResNet(20), "-"), ("DenseNet-BC-16, k=4", lambda: DenseNet(16, 4), "-")]
rows = []
image = np.zeros((1, 3, 32, 32), np.float32)
for name, make, paper in models:
    net = make()
    with minisd.reference(), minisd.trace() as t:  # every layer called: every FLOP counted
        net.eval()
        net.forward(image)
    flops = sum(e.flops for e in t.events if e.phase == "forward")
    rows.append([name, f"{net.num_parameters() / 1e6:.2f} M", f"{flops / 1e6:.0f} M", paper])
table(["network", "parameters", "forward FLOPs", "C10+ error (paper)"], rows)
if not L.quick:
    print("(stochastic depth runs E[blocks] of the ResNet per training step; at test time every block.)")

# %% [markdown]
# ## 3. Memory held for the backward: naive concatenation vs shared storage
#
# After one training forward, what the caches keep for the backward, cumulated layer by layer
# (minisd.tracing.held_nbytes). The readable layer keeps its concatenated input in its batch
# norm: layer i holds C0 + i k maps, a block of n layers ~ n^2 k / 2. Shared storage keeps one
# buffer of C0 + n k maps per block and recomputes the first BN and ReLU in the backward.

# %%
section("3. bytes held for backward vs dense layer")
depth, k, batch = (16, 4, 4) if L.quick else (100, 12, 16)
curves = {}
for storage in ("readable", "shared"):
    net = DenseNet(depth, k, rng=np.random.default_rng(L.seed)).to(L.device)
    xb = xp.asarray(np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32))
    if storage == "readable":
        with minisd.reference():
            net.forward(xb)
    else:
        net.forward(xb)
    seen, points = [], []
    for stage in net.stages():
        if isinstance(stage, minisd.DenseBlock):
            seen.append(stage)
            for layer in stage.layers:
                seen += layer.modules()
                points.append(held_nbytes(seen) / 2 ** 20)
        else:
            seen += stage.modules()
    curves[storage] = points
    net.clear_cache()
n = len(curves["readable"]) // 3
rows = [[i, f"{curves['readable'][i - 1]:.1f}", f"{curves['shared'][i - 1]:.1f}"]
        for i in sorted({1, n // 2, n, n + n // 2, 2 * n, 3 * n})]
table(["dense layer", "readable MiB", "shared MiB"], rows)
print(f"DenseNet-BC-{depth}, k={k}, batch {batch}: after the whole forward readable "
      f"{curves['readable'][-1]:.0f} MiB, shared {curves['shared'][-1]:.0f} MiB")
ratio = curves["readable"][-1] / curves["shared"][-1]
findings.append(("shared storage holds less memory for backward", f"{ratio:.1f}x less", "ratio > 1", ratio > 1))
inc_r = [b - a for a, b in zip(curves["readable"][:n - 1], curves["readable"][1:n])]
inc_s = [b - a for a, b in zip(curves["shared"][:n - 1], curves["shared"][1:n])]
if n < 4:
    quadratic = linear = "not shown (blocks of fewer than 4 layers)"
else:
    quadratic = inc_r[-1] > 1.5 * inc_r[0]   # each readable layer keeps more than the one before
    linear = max(inc_s) <= 1.01 * min(inc_s) + 1e-9  # each shared layer adds the same
findings.append(("readable: each layer of block 1 keeps more than the last (quadratic)",
                 f"{inc_r[0]:.2f} -> {inc_r[-1]:.2f} MiB", "last > 1.5 x first", quadratic))
findings.append(("shared: each layer of block 1 adds the same (linear)",
                 f"{min(inc_s):.2f}-{max(inc_s):.2f} MiB", "equal to 1%", linear))
fig, ax = plt().subplots(figsize=(6.5, 4))
ax.plot(range(1, len(curves["readable"]) + 1), curves["readable"], "o-", ms=3, label="readable concatenation")
ax.plot(range(1, len(curves["shared"]) + 1), curves["shared"], "s-", ms=3, label="shared storage (fast/dense.py)")
ax.set_xlabel("dense layer (forward order)")
ax.set_ylabel("MiB held for backward (cumulative)")
ax.set_title(f"DenseNet-BC-{depth}, k={k}, batch {batch}")
ax.legend()
L.save_figure(fig, "memory.png")

# %% [markdown]
# ## 4. A short side-by-side run at about equal parameters
#
# DenseNet-BC-22 (k=12, 72 K parameters) against ResNet-8 (75 K) with constant depth and
# with stochastic depth (p_L = 0.5), the same images, epochs and schedule, several seeds.
# Short runs on a laptop: the numbers show the spread as much as the networks.

# %%
section("4. CIFAR-10: DenseNet-BC vs ResNet at about equal parameters")
n_train = 128 if L.quick else (5000 if L.args.full_size else 960)
epochs = L.args.epochs or (1 if L.quick else 4)
seeds = [L.seed] if L.quick else [L.seed, L.seed + 1, L.seed + 2]
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train=n_train, n_test=200 if L.quick else 1000)
normalizer = Normalizer.fit(x_train).to(L.device)
xtr, ytr, xte, yte = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))
variants = {"DenseNet-BC": lambda s: DenseNet(10 if L.quick else 22, 4 if L.quick else 12, rng=np.random.default_rng(s)),
            "ResNet-8": lambda s: ResNet(8, p_last=1.0, seed=s),
            "ResNet-8 + SD": lambda s: ResNet(8, p_last=0.5, seed=s)}
results = {name: [] for name in variants}
for seed in seeds:
    for name, make in variants.items():
        net = make(seed).to(L.device)
        opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for epoch in range(epochs):
            opt.lr = lr_at_epoch(epoch, base_lr=0.1, epochs=epochs)
            train_epoch(net, opt, xtr, ytr, normalizer, rng, batch_size=64)
        train_err, _ = evaluate(net, xtr, ytr, normalizer)  # eval mode, the fixed training set
        test_err, _ = evaluate(net, xte, yte, normalizer)
        results[name].append((train_err, test_err, time.perf_counter() - t0))
rows = []
for name, rs in results.items():
    tr, te, sec = (np.array([r[i] for r in rs]) for i in range(3))
    rows.append([name, f"{100 * tr.mean():.1f} ({100 * tr.min():.1f}-{100 * tr.max():.1f})",
                 f"{100 * te.mean():.1f} ({100 * te.min():.1f}-{100 * te.max():.1f})", f"{sec.mean():.1f}"])
table(["network", "train error % (eval mode): mean (min-max)", "test error %", "s per run"], rows)
print(f"({source}, {n_train} training images, {epochs} epochs, batch 64, {len(seeds)} seed(s).)")
dense = np.array([r[1] for r in results["DenseNet-BC"]])
best_resnet = min(("ResNet-8", "ResNet-8 + SD"), key=lambda n: np.mean([r[1] for r in results[n]]))
resnet = np.array([r[1] for r in results[best_resnet]])
if len(seeds) < 3:
    verdict, number = "not shown (fewer than 3 seeds)", f"{100 * (dense.mean() - resnet.mean()):+.1f} points"
else:
    separated = bool(dense.max() < resnet.min())
    verdict = separated
    number = f"{100 * dense.mean():.1f}% vs {100 * resnet.mean():.1f}%"
claims = [(f"DenseNet-BC has lower test error than {best_resnet} here (the DenseNet paper's claim)", number,
           "every DenseNet seed below every ResNet seed", verdict,
           "a few epochs on a thousand images rank architectures by how fast they start, not where they end")]
if verdict is True:
    print(f"Here the DenseNet-BC's test error is below {best_resnet}'s for every seed.")
else:
    print(f"Here the DenseNet-BC is not shown better than {best_resnet}: the seeds' ranges overlap "
          "(or too few seeds) - a short run on few images cannot show the papers' gap.")

# %%
section("findings")
L.report_findings(findings, claims)
L.try_this()
