"""Lesson 7 - Training a small ResNet on real CIFAR-10, with and without stochastic depth.

What you will learn
  * the whole training loop of the paper in a dozen lines: normalise, augment (shift +-4 px,
    flip), draw the gates, forward, loss, backward, SGD (Nesterov 0.9, weight decay 1e-4),
    learning rate 0.1 divided by 10 at 50% and 75% of the epochs;
  * both runs - constant depth (p_L = 1) and stochastic depth (linear rule, p_L = 0.5) -
    from the same initial weights, for two seeds, their error curves on one figure, and the
    time per epoch (both warmed up, epochs timed in alternating order);
  * what a two-minute CPU run can and cannot show: the time saving is measured; a difference
    in loss or error counts only where it is larger than the spread between seeds, and the
    accuracy gain of the paper needs its 500 epochs on 45,000 images (CIFAR-10's 50,000 less the
    5,000 it holds out for validation: `--recipe paper-cifar10`);
  * training fit compared fairly: the full network in eval mode on a fixed subset of the
    training images (minisd.step.evaluate), not the sampled sub-networks' training loss.

Run
  python lessons/07_training.py            # run times: lessons/README.md
  python lessons/07_training.py --quick    # a couple of tiny epochs on a few hundred images
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E, --train-images N,
   --seeds K)
  Data: real CIFAR-10 from --data-dir, else $MINISD_DATA, else ./data; else the sample shipped with
  minisd (2,500 training and 1,000 test images); it says which.

Try this
  1. Run longer and deeper: --depth 32 --epochs 10 --train-images 2500 (all of the sample; 15-30
     minutes on 2 cores; with the full CIFAR-10 in ./data, --train-images 5000 or more).
     Does the stochastic-depth run's test error catch up with, or pass, constant depth -
     by more than the spread between the seeds? (--seeds 3 for a better idea of the spread.)
  2. Switch off augmentation (train_epoch(..., augment=False)): the training error falls much
     faster, the test error does not. Which of the two runs overfits more?
  3. The same experiment with the full command-line tool (checkpoints, metrics.csv, optional
     validation split), from the repository root:
       python -m minisd.train --dataset cifar10-sample --depth 20 --epochs 5 --limit-train 1280
         --valid-size 0 --p-last 1 --out runs/const     (and --p-last 0.5 --out runs/sd)
       python -m minisd.plot runs/const runs/sd -o runs/curves.png
"""
# %% [markdown]
# # Lesson 7: training with and without stochastic depth
#
# Everything so far was one step. Now we train. The data are real CIFAR-10 images: the full
# set where you have it (./data, --data-dir or $MINISD_DATA), else the sample shipped with
# minisd (the first 2,500 training and 1,000 test images of the official files); the network
# is a ResNet-20 (9 blocks). The recipe is the paper's, scaled down.

# %%
import inspect

import numpy as np

import minisd.step
from minisd import ResNet, survival_probabilities
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 20; quick: 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5; quick: 2)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 1024; quick: 256)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per variant: L.seed, L.seed + 1, ... (default 2)")


L = setup(__doc__, extra)
xp = L.xp
depth = L.args.depth or (8 if L.quick else 20)
epochs = L.args.epochs or (2 if L.quick else 5)
n_train = L.args.train_images or (256 if L.quick else 1024)
seeds = [L.seed + i for i in range(max(1, L.args.seeds))]
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
n_fit = min(len(y_train), 128 if L.quick else 512)
x_fit, y_fit = x_train[:n_fit], y_train[:n_fit]  # a fixed training subset: how well the full network fits

# %% [markdown]
# ## 2. The training loop
#
# `train_epoch` (in lessons/_common.py, shared with lessons 8, 9 and 11) shuffles the images
# once per epoch and calls `minisd.step.train_step` on each mini-batch - the same step that
# `python -m minisd.train` runs. Here is that step, without its docstring. The one line that
# makes it stochastic depth is `net.sample_gates(...)`: with p_L = 1 every gate is open and
# it is the plain ResNet's step.

# %%
section("2. the step (minisd/step.py: train_step)")
src = inspect.getsource(minisd.step.train_step)
body = src.split('"""')
print(body[0].rstrip() + "\n" + body[2].strip("\n").rstrip())
print("\nthe stochastic-depth line:\n" + next(line for line in src.splitlines() if "net.sample_gates(" in line))

# %% [markdown]
# ## 3. Two runs from the same initial weights, for each seed
#
# Constant depth: p_L = 1, every gate always open. Stochastic depth: linear rule, p_L = 0.5.
# For each seed both runs get the same initial weights, data order and augmentation (the
# gates draw from the same generator, so the sequences part after the first step). After
# every epoch the test error is measured in eval mode (every block, branches scaled by p_l)
# with minisd.step.evaluate.
#
# Timing fairly: the first steps of a process are slow (memory is allocated, thread pools
# start), so a throwaway network of each kind takes a few steps first. Then all runs advance
# one epoch at a time, in alternating order (constant depth first in odd epochs, stochastic
# depth first in even ones), so a slow spell of the machine does not always hit the same run.
# With several seeds, a difference between the variants means something only if it is
# larger than the differences between seeds.
#
# How well a run fits its training images is measured the same way, after the last epoch:
# the full network in eval mode on a fixed subset of the training images (the first
# `n_fit`, not augmented). The training loss that `train_epoch` reports is not comparable
# between the variants: with stochastic depth each step's loss is that of a sampled,
# shorter sub-network on an augmented batch, not the network that is tested.

# %%
section(f"3. training ResNet-{depth}: {epochs} epochs of {len(y_train)} images, batch {batch_size}, "
        f"seeds {', '.join(map(str, seeds))}")
print(f"learning rate per epoch: {', '.join(f'{lr_at_epoch(e, 0.1, epochs):g}' for e in range(epochs))}")
if batch_size != 128:
    print(f"(batch {batch_size}, not the paper's 128: a small training set needs more steps per epoch)")
variants = (("constant depth", 1.0), ("stochastic depth", 0.5))
for label, p_last in variants:  # warm-up: a throwaway network of each kind, 3 steps
    warm = ResNet(depth, 10, p_last=p_last, seed=L.seed + 1000).to(L.device)
    train_epoch(warm, SGD(warm.parameters(), lr=0.1), x_train[:3 * batch_size], y_train[:3 * batch_size],
                normalizer, np.random.default_rng(0), batch_size)
runs = []  # one per (seed, variant): the network, its optimiser, its generator, its epochs
for seed in seeds:
    for label, p_last in variants:
        net = ResNet(depth, 10, p_last=p_last, rule="linear", seed=seed).to(L.device)
        runs.append(dict(seed=seed, label=label, net=net, rng=np.random.default_rng(seed), rows=[],
                         opt=SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)))
print(f"expected blocks per step: {runs[0]['net'].expected_blocks():.2f} (constant depth), "
      f"{runs[1]['net'].expected_blocks():.2f} (stochastic depth) of {len(runs[0]['net'].blocks)}")
for epoch in range(epochs):
    order = runs if epoch % 2 == 0 else [r for pair in zip(runs[1::2], runs[0::2]) for r in pair]
    for run in order:
        run["opt"].lr = lr_at_epoch(epoch, base_lr=0.1, epochs=epochs)
        r = train_epoch(run["net"], run["opt"], x_train, y_train, normalizer, run["rng"], batch_size)
        r["test_error"], r["test_loss"] = evaluate(run["net"], x_test, y_test, normalizer)
        if epoch == epochs - 1:  # the full network, eval mode, on the fixed training subset
            r["fit_error"], r["fit_loss"] = evaluate(run["net"], x_fit, y_fit, normalizer)
        run["rows"].append(r)
        print(f"  epoch {epoch + 1}/{epochs}, seed {run['seed']}, {run['label']:16s}: lr {run['opt'].lr:<5g} "
              f"train loss {r['loss']:.3f}  train err {r['error']:.3f}  test err {r['test_error']:.3f}  "
              f"blocks {r['blocks']:.1f}  {r['seconds']:.1f} s", flush=True)

# %% [markdown]
# ## 4. Results

# %%
section("4. results")
claims = []  # the paper's claims at this scale: (claim, number, criterion, supported?, what it teaches)
by = {label: [r for r in runs if r["label"] == label] for label, _ in variants}
rng_text = lambda v, fmt="{:.3f}": fmt.format(np.mean(v)) + (f" ({fmt.format(min(v))}-{fmt.format(max(v))})"
                                                              if len(v) > 1 else "")
final = lambda label, key: [r["rows"][-1][key] for r in by[label]]
summary = [[label, rng_text(final(label, "loss")), rng_text(final(label, "fit_loss")),
            rng_text(final(label, "fit_error")), rng_text(final(label, "test_error")),
            float(np.mean([x["blocks"] for r in by[label] for x in r["rows"]])),
            float(np.median([x["seconds"] for r in by[label] for x in r["rows"]]))] for label, _ in variants]
table(["run", "last-epoch train loss (sub-nets)", f"train loss (eval, {n_fit} img)", "train err (eval)",
       "final test err", "blocks/step", "median s/epoch"], summary,
      ["{}", "{}", "{}", "{}", "{}", "{:.2f}", "{:.1f}"])
print(f"(mean over {len(seeds)} seed{'s' * (len(seeds) > 1)}"
      + (", lowest-highest in brackets)" if len(seeds) > 1 else ")"))
print("(the first loss column is the mean over the last epoch's steps, each of a sampled sub-network on an")
print(f" augmented batch; the next two are the full network in eval mode on the first {n_fit} training images)")
const, sd = by["constant depth"], by["stochastic depth"]
blocks_const, blocks_sd = summary[0][5], summary[1][5]
ratios = [b["seconds"] / a["seconds"] for rc, rs in zip(const, sd) for a, b in zip(rc["rows"], rs["rows"])]
print(f"\ndata: {source} images.")
print(f"blocks per step: {blocks_sd:.2f} of {len(runs[0]['net'].blocks)} with stochastic depth "
      f"({100 * (1 - blocks_sd / blocks_const):.0f}% fewer).")
print(f"time per epoch, stochastic / constant depth, same seed and epoch: median {np.median(ratios):.2f}, "
      f"range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} pairs.")
steps_per_epoch = len(y_train) // batch_size
if max(ratios) < 1:
    print(f"-> stochastic depth took {100 * (1 - np.median(ratios)):.0f}% less time per epoch (median), and less in "
          "every one of the pairs:")
    print("   the skipped blocks do no work.")
    if 1 - np.median(ratios) < 1 - blocks_sd / blocks_const:
        print("   The saving is smaller than the share of blocks skipped: the stem, the head and the data pipeline")
        print("   run in every step.")
    else:
        print("   The saving is not smaller than the share of blocks skipped, although the stem, the head and the")
        print("   data pipeline run in every step: at these sizes timing noise is of that order.")
elif min(ratios) > 1:
    print(f"-> stochastic depth was SLOWER in every pair. An epoch here is {steps_per_epoch} steps of batch "
          f"{batch_size}, so the")
    print("   fixed costs (data, stem, head, Python) and noise from other work on the machine can hide the")
    print("   saving; " + ("run without --quick, or " if L.quick else "") + "lesson 10 measures it cleanly.")
else:
    print(f"-> stochastic depth was faster in {sum(r < 1 for r in ratios)} of {len(ratios)} pairs, not in all: at "
          "these sizes the fixed costs")
    print("   (data, stem, head, Python) and noise from other work on the machine are of the order of the saving;")
    print("   lesson 10 measures it cleanly.")
# What the code must do: the stochastic-depth runs ran sum of p_l blocks per step on average, within
# 3 standard errors (a step's count has variance sum of p_l (1 - p_l)).
p_l = survival_probabilities(len(runs[0]["net"].blocks), 0.5)
n_steps = len(sd) * epochs * (len(y_train) // batch_size)
se_blocks = np.sqrt(sum(q * (1 - q) for q in p_l) / n_steps)
mechanics = [("blocks run per step average sum of p_l (stochastic depth)", f"{blocks_sd:.2f} vs {sum(p_l):.2f}",
              "within 3 standard errors", abs(blocks_sd - sum(p_l)) <= 3 * se_blocks),
             ("constant depth runs every block in every step", f"{blocks_const:.2f} of {len(p_l)}", "all",
              blocks_const == len(p_l))]
time_verdict = "yes" if max(ratios) < 1 else "no" if min(ratios) > 1 else "not shown"
claims.append(("an epoch takes less time with stochastic depth", f"median ratio {np.median(ratios):.2f}",
               f"< 1 in all {len(ratios)} pairs", time_verdict,
               f"slower in every pair: in epochs of {steps_per_epoch} steps the fixed costs (data, stem, head, "
               "Python) and other work on the machine outweigh the saving (lesson 10 measures it cleanly)"
               if time_verdict == "no" else
               f"faster in only {sum(r < 1 for r in ratios)} of {len(ratios)} pairs: the saving is of the order of the "
               "fixed costs and the machine's noise here (lesson 10 measures it cleanly)"))

fit_c, fit_s = final("constant depth", "fit_loss"), final("stochastic depth", "fit_loss")
diffs = [b - a for a, b in zip(fit_c, fit_s)]  # per seed: same initial weights and data order
print(f"\ntraining fit, full network in eval mode on {n_fit} training images, loss per seed: constant "
      f"{', '.join(f'{v:.3f}' for v in fit_c)}; stochastic {', '.join(f'{v:.3f}' for v in fit_s)}.")
if len(seeds) > 1 and min(fit_s) > max(fit_c):
    fit_verdict = "yes"
    print("-> stochastic depth fit the training images worse for every seed, beyond the spread between seeds:")
    print(f"   in these {epochs} epochs each step trained a shorter network ({blocks_sd:.2f} of "
          f"{len(runs[0]['net'].blocks)} blocks), and the full network is not what was trained.")
elif len(seeds) > 1 and max(fit_s) < min(fit_c):
    fit_verdict = "no"
    print("-> stochastic depth fit the training images BETTER for every seed, beyond the spread between seeds.")
else:
    fit_verdict = "not shown"
    print(f"-> stochastic depth had the higher loss for {sum(d > 0 for d in diffs)} of {len(seeds)} seed(s); the "
          "ranges over seeds overlap")
    print("   (or there is one seed), so these runs do not show a difference in how well they fit.")
fit_takeaways = {
    "no": "stochastic depth fit BETTER for every seed: early in training dropping blocks need not slow the fit "
          "of the full network",
    "not shown": f"in {epochs} epochs the shorter sub-networks fit about as well: any cost of dropping is not "
                 "larger than the spread between seeds" if len(seeds) > 1 else
                 "one seed gives no spread to judge a difference by: --seeds 2 or more"}
claims.append(("stochastic depth fits the training images more slowly (eval loss, fixed subset)",
               f"SD - const {np.mean(diffs):+.3f}", "every SD seed above every const seed", fit_verdict,
               fit_takeaways.get(fit_verdict)))

err_c, err_s = final("constant depth", "test_error"), final("stochastic depth", "test_error")
if len(seeds) > 1 and (min(err_s) > max(err_c) or max(err_s) < min(err_c)):
    better = "constant" if min(err_s) > max(err_c) else "stochastic"
    err_verdict = "yes" if better == "stochastic" else "no"
    print(f"Final test error: {better} depth was lower for every seed ({rng_text(err_c)} vs {rng_text(err_s)}).")
elif len(seeds) > 1:
    err_verdict = "not shown"
    print(f"Final test error: the ranges over seeds overlap ({rng_text(err_c)} vs {rng_text(err_s)}): "
          "no difference shown.")
else:
    err_verdict = "not shown"
    print(f"Final test error: {err_c[0]:.3f} vs {err_s[0]:.3f}; with one seed there is no spread to judge the "
          "difference by (--seeds 2 or more).")
# how much constant depth over-fits: a regulariser has something to cure only where the test error is well
# above the training error (the full network in eval mode on n_fit training images)
gap = float(np.mean(err_c) - np.mean(final("constant depth", "fit_error")))
over_fit_text = (f"constant depth's test error is {100 * gap:.1f} points above its training error (eval), "
                 + ("little over-fitting for a regulariser to cure" if gap < 0.1 else "so it over-fits"))
err_takeaways = {
    "no": f"constant depth tested better for every seed; {over_fit_text} (lesson 13: where it helps)",
    "not shown": ("the difference is within the spread between seeds" if len(seeds) > 1 else
                  "one seed gives no spread to judge the difference by")
                 + f"; {over_fit_text} (lesson 13: where it helps)"}
claims.append(("stochastic depth lowers the test error (the paper's claim)",
               f"{100 * np.mean(err_s):.1f}% vs {100 * np.mean(err_c):.1f}%", "every SD seed below every const seed",
               err_verdict, err_takeaways.get(err_verdict)))
if len(seeds) == 2:
    print("(With 2 seeds, 'beyond the spread between seeds' is a weak test: read such a line as a hint; "
          "--seeds 3 or more.)")
print(f"Over-fitting: {over_fit_text}.")
if err_verdict == "yes":
    print("-> stochastic depth tested better for every seed even at this scale; more seeds and epochs would")
    print("   show whether it is a margin (lesson 11 and python -m minisd.sweep vary p_L).")
else:
    print(f"-> at this scale ({epochs} epochs, {len(y_train)} augmented images) the paper's gain is not shown. A")
    print("   regulariser helps a network that over-fits; lesson 13 trains one that does (few images, no")
    print("   augmentation, many passes); lesson 11 and python -m minisd.sweep show how the error depends on p_L.")

pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
ep = np.arange(1, epochs + 1)
for i, (label, _) in enumerate(variants):
    for key, style, what in (("test_error", "-o", "test"), ("error", "--", "train batches, as trained")):
        curves = 100 * np.array([[r[key] for r in run["rows"]] for run in by[label]])  # (seeds, epochs)
        axes[0].plot(ep, curves.mean(axis=0), style, color=f"C{i}", ms=4, lw=1.5 if key == "test_error" else 1,
                     label=f"{label}: {what}")
        if len(seeds) > 1:  # the band: lowest to highest seed (fainter for the training batches)
            axes[0].fill_between(ep, curves.min(axis=0), curves.max(axis=0), color=f"C{i}", lw=0,
                                 alpha=0.2 if key == "test_error" else 0.07)
axes[0].set_xticks(ep)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("error (%)")
band = f"mean over {len(seeds)} seeds, band: lowest-highest" if len(seeds) > 1 else "one seed"
axes[0].set_title(f"ResNet-{depth} on {len(y_train)} {source} images ({band})", fontsize=9)
axes[0].grid(alpha=0.3)
axes[0].legend(fontsize=7)
times = [[x["seconds"] for r in by[label] for x in r["rows"]] for label, _ in variants]
axes[1].boxplot(times)
axes[1].set_xticks([1, 2], ["constant\ndepth", "stochastic\ndepth"])
axes[1].set_ylabel("seconds per epoch")
axes[1].set_title(f"time per epoch ({L.device}, all epochs and seeds)")
L.save_figure(fig, "curves.png")

# %% [markdown]
# ## 5. Findings
#
# Each claim, the number behind it, the criterion it must meet, and whether it did here.

# %%
section("5. findings")
L.report_findings(mechanics, claims)

# %% [markdown]
# ## Summary
# * the training loop is the paper's: the only stochastic-depth line is `net.sample_gates`;
# * with both runs warmed up and timed in alternating order, the time per epoch is compared
#   pair by pair; the saving to expect is a little below the share of blocks skipped (the
#   stem, the head and the data pipeline always run), and it counts only in every pair;
# * differences in loss or error between the variants count only beyond the spread between
#   seeds, and training fit is the full network's eval-mode loss on a fixed training subset;
#   for the accuracy effect, see the paper's Figure 3 (500 epochs, 45,000 images,
#   110 layers), lesson 11, and lesson 13 (a regime where it shows at laptop scale).

# %%
L.try_this()
