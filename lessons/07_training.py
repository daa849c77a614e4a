"""Lesson 7 - Training a small ResNet on real CIFAR-10, with and without stochastic depth.

What you will learn
  * the whole training loop of the paper in a dozen lines: normalise, augment (shift +-4 px,
    flip), draw the gates, forward, loss, backward, SGD (Nesterov 0.9, weight decay 1e-4),
    learning rate 0.1 divided by 10 at 50% and 75% of the epochs;
  * both runs - constant depth (p_L = 1) and stochastic depth (linear rule, p_L = 0.5) -
    from the same initial weights, their error curves on one figure, and the time per epoch;
  * what a two-minute CPU run can and cannot show: the time saving is real; the accuracy
    gain of the paper needs its 500 epochs on 50,000 images.

Run
  python lessons/07_training.py            # ~59 s on a 2-core CPU
  python lessons/07_training.py --quick    # ~3 s (a couple of tiny epochs on a few hundred images)
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E, --train-images N)
  Real data: minisd.data.default_data_dir() or --data-dir; generated images otherwise (it says so).

Try this
  1. Run longer and deeper: --depth 32 --epochs 10 --train-images 5000 (10-15 minutes).
     Does the stochastic-depth run's test error catch up with, or pass, constant depth?
  2. Switch off augmentation (train_epoch(..., augment=False)): the training error falls much
     faster, the test error does not. Which of the two runs overfits more?
  3. The same experiment with the full command-line tool (checkpoints, metrics.csv, optional
     validation split), from the repository root:
       python -m minisd.train --data-dir ../shared/data --depth 20 --epochs 5 --limit-train 1280
         --valid-size 0 --p-last 1 --out runs/const     (and --p-last 0.5 --out runs/sd)
       python -m minisd.plot runs/const runs/sd -o runs/curves.png
"""
# %% [markdown]
# # Lesson 7: training with and without stochastic depth
#
# Everything so far was one step. Now we train. The data are the real CIFAR-10 images in
# the shared folder (a small subset of the official files: 5,170 training and 1,017 test
# images); the network is a ResNet-20 (9 blocks). The recipe is the paper's, scaled down.

# %%
import inspect

import numpy as np

from minisd import ResNet
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.train import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 20; quick: 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5; quick: 2)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 1280; quick: 256)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 20)
epochs = L.args.epochs or (2 if L.quick else 5)
n_train = L.args.train_images or (256 if L.quick else 1280)
n_test = 256 if L.quick else None
batch_size = 32 if L.quick else 64

# %% [markdown]
# ## 1. Data
#
# Images stay uint8 until a mini-batch is taken. The normaliser is fitted on the training
# images: it subtracts the mean image and divides by one scalar standard deviation.

# %%
section("1. data")
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train, n_test)
normalizer = Normalizer.fit(x_train)
print(normalizer)
counts = np.bincount(y_train, minlength=10)
print(f"training images per class: {counts.tolist()}")
x_train, y_train, x_test, y_test = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))

# %% [markdown]
# ## 2. The training loop
#
# `train_epoch` (in lessons/_common.py, shared with lessons 8 and 9) is the paper's loop,
# and the same steps as `Run.train_step` in minisd/train.py:

# %%
section("2. the loop (lessons/_common.py: train_epoch)")
src = inspect.getsource(train_epoch)
print(src[src.index("    for s in range(steps)"):src.index("    backend.synchronize(xp)\n    return")].rstrip())

# %% [markdown]
# ## 3. Two runs from the same initial weights
#
# Constant depth: p_L = 1, every gate always open. Stochastic depth: linear rule, p_L = 0.5.
# Same seed for the weights, the data order and the augmentation (the gates draw from the
# same generator, so the sequences part after the first step). After every epoch the test
# error is measured in eval mode (every block, branches scaled by p_l) with
# minisd.train.evaluate.

# %%
section(f"3. training ResNet-{depth}: {epochs} epochs of {len(y_train)} images, batch {batch_size}")
print(f"learning rate per epoch: {', '.join(f'{lr_at_epoch(e, 0.1, epochs):g}' for e in range(epochs))}")
if batch_size != 128:
    print(f"(batch {batch_size}, not the paper's 128: a small training set needs more steps per epoch)")
history = {}
for label, p_last in (("constant depth", 1.0), ("stochastic depth", 0.5)):
    net = ResNet(depth, 10, p_last=p_last, rule="linear", seed=L.seed).to(L.device)
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    rng = np.random.default_rng(L.seed)
    rows = []
    print(f"\n{label} (p_L = {p_last}; expected blocks per step {net.expected_blocks():.2f} of {len(net.blocks)})")
    for epoch in range(epochs):
        opt.lr = lr_at_epoch(epoch, base_lr=0.1, epochs=epochs)
        r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size)
        r["test_error"], r["test_loss"] = evaluate(net, x_test, y_test, normalizer)
        r["lr"] = opt.lr
        rows.append(r)
        print(f"  epoch {epoch + 1}/{epochs}: lr {opt.lr:.3g}  train loss {r['loss']:.3f}  train err "
              f"{r['error']:.3f}  test err {r['test_error']:.3f}  blocks {r['blocks']:.1f}  {r['seconds']:.1f} s",
              flush=True)
    history[label] = rows

# %% [markdown]
# ## 4. Results

# %%
section("4. results")
summary = []
for label, rows in history.items():
    summary.append([label, rows[-1]["error"], rows[-1]["test_error"], min(r["test_error"] for r in rows),
                    np.mean([r["blocks"] for r in rows]), np.median([r["seconds"] for r in rows])])
table(["run", "final train err", "final test err", "best test err", "blocks/step", "median s/epoch"], summary,
      ["{}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.2f}", "{:.1f}"])
t_const, t_sd = summary[0][-1], summary[1][-1]
blocks_const, blocks_sd = summary[0][4], summary[1][4]
loss_const, loss_sd = history["constant depth"][-1]["loss"], history["stochastic depth"][-1]["loss"]
print(f"\ndata: {source} images.")
print(f"blocks per step: {blocks_sd:.2f} of {len(net.blocks)} with stochastic depth "
      f"({100 * (1 - blocks_sd / blocks_const):.0f}% fewer); median time per epoch {t_sd:.1f} s vs {t_const:.1f} s.")
if t_sd < t_const:
    print(f"-> stochastic depth took {100 * (1 - t_sd / t_const):.0f}% less time per epoch: the skipped blocks do no work.")
    if 1 - t_sd / t_const < 1 - blocks_sd / blocks_const:
        print("   The time saving is smaller than the share of blocks skipped: the stem, the head and the data")
        print("   pipeline run in every step.")
    else:
        print("   The time saving is not smaller than the share of blocks skipped, although the stem, the head")
        print("   and the data pipeline run in every step: at these sizes timing noise is of that order.")
    print("   (Medians over the epochs, because other work on the machine adds noise.)")
else:
    print("-> stochastic depth was NOT faster here. At --quick sizes an epoch is a few dozen tiny steps, so the")
    print("   fixed costs (data, stem, head, Python) and noise from other work on the machine can hide the")
    print("   saving; run without --quick, or lesson 10 for a clean measurement.")
print(f"final training loss: {loss_sd:.3f} with stochastic depth vs {loss_const:.3f} with constant depth.")
if loss_sd > loss_const:
    print("-> stochastic depth fit the training set more slowly, as a regulariser should.")
else:
    print("-> the stochastic-depth run did NOT have the higher training loss here; in so few steps the")
    print("   two runs differ by little more than the noise of their (different) gate draws.")
print(f"At this scale ({epochs} epochs, {len(y_train)} images, one seed) do not read much into the test errors:")
print("the paper's gain from stochastic depth (lower test error) comes late in a run of 500 epochs.")

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
for i, (label, rows) in enumerate(history.items()):
    ep = np.arange(1, len(rows) + 1)
    axes[0].plot(ep, [100 * r["test_error"] for r in rows], "-o", color=f"C{i}", label=f"{label}: test")
    axes[0].plot(ep, [100 * r["error"] for r in rows], "--", color=f"C{i}", label=f"{label}: train (augmented)")
axes[0].set_xticks(np.arange(1, epochs + 1))
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("error (%)")
axes[0].set_title(f"ResNet-{depth} on {len(y_train)} {source} images")
axes[0].grid(alpha=0.3)
axes[0].legend(fontsize=8)
axes[1].bar(["constant\ndepth", "stochastic\ndepth"], [t_const, t_sd], color=["C0", "C1"])
axes[1].set_ylabel("seconds per epoch")
axes[1].set_title(f"time per epoch ({L.device})")
L.save_figure(fig, "curves.png")

# %% [markdown]
# ## Summary
# * the training loop is the paper's: the only stochastic-depth line is `net.sample_gates`;
# * each epoch costs less with stochastic depth, roughly in proportion to the blocks skipped
#   (a little less: the stem, the head and the data pipeline always run);
# * for the accuracy effect, see the paper's Figure 3 (500 epochs, 50,000 images, 110 layers).

# %%
L.try_this()
