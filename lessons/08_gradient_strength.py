"""Lesson 8 - Gradient strength: how much gradient reaches the first layer, with and without stochastic depth.

What you will learn
  * the measurement behind the paper's Figure 7: the mean absolute gradient of the loss with
    respect to the weights of the FIRST convolutional layer, averaged over each epoch;
  * the paper's finding that with stochastic depth the gradient reaching the first layer
    stays larger (a mini-batch's network is shorter; the paper argues this counters vanishing
    gradients and "diminishing feature reuse") - and what a small CPU run shows of it;
  * how the learning-rate drops show up in the gradient (it shrinks as the loss flattens).

Run
  python lessons/08_gradient_strength.py            # ~44 s on a 2-core CPU
  python lessons/08_gradient_strength.py --quick    # ~2 s
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E, --train-images N)

Try this
  1. Measure the last block's first convolution instead of conv1 (net.blocks[-1].branch[0]):
     only count the steps where that block ran. Is the difference between the runs larger
     or smaller there? Why would the first layer be the one the paper looks at?
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
# gradient that reaches the first convolutional layer, epoch by epoch: with stochastic depth
# it is consistently larger, most visibly after each learning-rate drop. We repeat the
# measurement on a small scale: same data, same initial weights, two runs.

# %%
import numpy as np

from minisd import ResNet
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
# After every backward pass (before the SGD update) we read `net.conv1.grads["weight"]`,
# the gradient of the mini-batch loss with respect to the 16 x 3 x 3 x 3 weights of the
# first convolution, and record its mean absolute value. `train_epoch` calls our `on_step`
# at exactly that point. conv1 always runs - it is not inside a droppable block - so every
# step contributes, in both runs.

# %%
section(f"1. training ResNet-{depth} twice ({epochs} epochs of {len(y_train)} images, batch {batch_size})")
print(f"learning rate per epoch: {', '.join(f'{lr_at_epoch(e, 0.1, epochs):g}' for e in range(epochs))}")
history = {}
for label, p_last in (("constant depth", 1.0), ("stochastic depth", 0.5)):
    net = ResNet(depth, 10, p_last=p_last, seed=L.seed).to(L.device)
    opt = SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(L.seed)
    per_step, per_epoch, losses = [], [], []

    def on_step(net):
        per_step.append(float(xp.abs(net.conv1.grads["weight"]).mean()))

    for epoch in range(epochs):
        opt.lr = lr_at_epoch(epoch, 0.1, epochs)
        start = len(per_step)
        r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size, on_step=on_step)
        per_epoch.append(float(np.mean(per_step[start:])))
        losses.append(r["loss"])
        print(f"  {label:16s} epoch {epoch + 1}/{epochs}: lr {opt.lr:<6g} loss {r['loss']:.3f}  "
              f"mean |grad conv1| {per_epoch[-1]:.2e}  ({r['seconds']:.1f} s)", flush=True)
    history[label] = dict(per_step=per_step, per_epoch=per_epoch, loss=losses)

# %% [markdown]
# ## 2. Epoch by epoch

# %%
section("2. mean |gradient| of the first conv layer, per epoch")
c, s = history["constant depth"], history["stochastic depth"]
table(["epoch", "lr", "constant depth", "stochastic depth", "ratio SD / const"],
      [[e + 1, lr_at_epoch(e, 0.1, epochs), c["per_epoch"][e], s["per_epoch"][e], s["per_epoch"][e] / c["per_epoch"][e]]
       for e in range(epochs)], ["{}", "{:g}", "{:.2e}", "{:.2e}", "{:.2f}"])
half = epochs // 2
ratio = np.mean(s["per_epoch"][half:]) / np.mean(c["per_epoch"][half:])
loss_ratio = np.mean(s["loss"][half:]) / np.mean(c["loss"][half:])
print(f"\nsecond half of the run (epochs {half + 1}-{epochs}): stochastic-depth gradient / constant-depth "
      f"gradient = {ratio:.2f}; training loss ratio {loss_ratio:.2f} (data: {source}).")
if ratio > 1:
    print("As in the paper, the stochastic-depth run passed more gradient to the first layer in the second half.")
else:
    print("Here the stochastic-depth gradient is NOT larger - unlike the paper's ResNet-110 after 500 epochs.")
    print(f"A ResNet-{depth} trained for {len(c['per_step'])} steps has few blocks to drop and little time for the")
    print("two runs to part (--quick makes both smaller still); noise between the runs can decide the sign.")
if loss_ratio > 1 and ratio > 1:
    print(f"Read it with care: the stochastic-depth run also has the higher training loss (x{loss_ratio:.2f}), and a")
    print("larger loss alone means larger gradients - part of the difference may come from that.")
elif loss_ratio > 1:
    print(f"The stochastic-depth run has the higher training loss (x{loss_ratio:.2f}), which alone would make its")
    print("gradients larger - and still they are not.")
else:
    print(f"The stochastic-depth run does not have the higher training loss here (ratio {loss_ratio:.2f}), so the loss")
    print("does not explain the gradient ratio.")
print(f"The paper's curves come from a ResNet-110 over 500 epochs; this is a ResNet-{depth} over "
      f"{len(c['per_step'])} steps.")

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ep = np.arange(1, epochs + 1)
for i, (label, h) in enumerate(history.items()):
    axes[0].plot(ep, h["per_epoch"], "o-", color=f"C{i}", label=label)
    steps = np.arange(1, len(h["per_step"]) + 1) / (len(h["per_step"]) / epochs)
    axes[1].plot(steps, h["per_step"], color=f"C{i}", alpha=0.6, lw=0.8, label=label)
drops = [e for e in range(1, epochs) if lr_at_epoch(e, 0.1, epochs) < lr_at_epoch(e - 1, 0.1, epochs)]
for ax, offset in ((axes[0], 0.5), (axes[1], 0.0)):
    for d in drops:
        ax.axvline(d + offset, color="k", ls=":", lw=1)
axes[0].set_xticks(ep)
axes[0].set_xlabel("epoch (dotted: learning rate / 10)")
axes[0].set_ylabel("mean |dL/dW| of the first conv layer")
axes[0].set_title(f"Gradient strength per epoch, ResNet-{depth} (cf. paper Fig. 7)")
axes[1].set_xlabel("epoch (every step)")
axes[1].set_title("the same, step by step")
for ax in axes:
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
L.save_figure(fig, "gradient_strength.png")

# %% [markdown]
# ## Summary
# * one line of instrumentation - `xp.abs(net.conv1.grads["weight"]).mean()` after each
#   backward - reproduces the paper's Figure 7 measurement;
# * in the paper, the shorter networks of stochastic-depth training pass more gradient to the
#   first layer; whether a small, short run shows it is what section 2 printed. At test time
#   the full-depth network is used (lesson 9).

# %%
L.try_this()
