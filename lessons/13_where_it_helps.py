"""Lesson 13 - Where stochastic depth helps: a regulariser's signature, at laptop scale.

What you will learn
  * why the earlier lessons did not see stochastic depth help: their runs were short (a few
    hundred SGD steps) on augmented images, where a network has no time to over-fit and a
    regulariser has nothing to cure;
  * a regime where it should help, found by a planned search (benchmarks/RESULTS.md, "Where
    stochastic depth helps"): few training images, no augmentation, enough steps for a
    constant-depth network to learn its training set by heart;
  * the signature of a regulariser: the constant-depth network fits its training images
    better (lower training error, full network in eval mode), stochastic depth keeps a
    higher training error and gets the lower test error - a smaller gap between the two;
  * a fair protocol: both arms take the same number of SGD steps from the same initial
    weights, data order and seeds; a gain counts when every paired difference has the same
    sign, and "beyond the seed spread" only when every stochastic-depth seed is below every
    constant-depth seed.

Run
  python lessons/13_where_it_helps.py           # ResNet-8, 320 images, 400 steps, p_L 0.8, 3 seeds
  python lessons/13_where_it_helps.py --quick   # tiny: checks the lesson runs (trains too little to show anything)
  python lessons/13_where_it_helps.py --full    # the recorded long run: ResNet-20, 960 images, 60 epochs
                  # of batch 64 (900 steps), 3 seeds (RESULTS.md: 6 runs, 25.5 min, 2 at a time on 2 cores)
  (options: --depth D, --train-images N, --epochs E, --batch-size B, --seeds K, --p-last P,
   --device gpu, --out DIR, --seed N, --data-dir DIR)
  Data: real CIFAR-10 from --data-dir, else $MINISD_DATA, else ./data; else the sample shipped with
  minisd (2,500 training images; it says so). --full wants 960 images: the sample has them.

The recorded long run (benchmarks/RESULTS.md, 2026-12-02, 2-core AMD EPYC, minisd itself,
`python -m minisd.sweep` with the settings of --full): test error 58.3% (56.3-59.5) at constant
depth, 54.0% (52.5-55.3) with p_L = 0.5; paired by seed -2.1, -7.0, -3.8 points; training
error 0% against 13-23% (sampled sub-networks). --full runs the same experiment in this script.
The default is a smaller cousin chosen to fit in 3 minutes on 2 cores; it is weaker. Recorded the same day
(RESULTS.md): ResNet-8 at p_L 0.8, paired test-error differences -4.8, -1.7, -0.7 points
(seeds 0-2, 2 threads); with one thread the same seeds give -2.9, -1.4, -0.4 (the thread count
changes the order of BLAS sums, and training amplifies it), and seeds 3-5 +0.6, -1.9, -2.3: a
direction, not a margin; at p_L 0.5 three blocks are dropped too often (eval training error
29%) and nothing is gained.

Try this
  1. Switch augmentation on (--augment): the constant-depth network can no longer learn its
     images by heart in this many steps. Does the gain survive, shrink, or turn into a loss?
     (Recorded with --full's settings and augmentation, RESULTS.md candidate 4: constant depth
     49.0% (46.4-51.2) at 10-15% training error, p_L 0.5 52.7% (51.3-53.6); paired +6.7,
     +1.9, +2.4 points.)
  2. --full --p-last 0.8: a milder regulariser on ResNet-20 (recorded: 53.8% (51.3-56.3), paired
     -2.5, -3.2, -7.8 points). Between p_L = 0.5 and 1, where is the test error lowest?
  3. Give both arms 5x the images (--train-images 1600): does the gap between training and
     test error shrink for constant depth, and with it the gain from stochastic depth?
"""
# %% [markdown]
# # Lesson 13: where stochastic depth helps
#
# The paper's headline is that stochastic depth *generalises better*: a ResNet-110 on
# CIFAR-10 drops from 6.41% to 5.25% test error. It gets there over ~195,000 SGD steps on
# 45,000 augmented images. The runs of lessons 7 and 11 are a hundred times shorter, and
# they do not show that gain: it is a regulariser, and a regulariser only helps a network
# that over-fits. So here we make one over-fit on purpose - few images, no augmentation,
# many passes over them - and train it with and without stochastic depth.

# %%
import numpy as np

from minisd import ResNet, to_numpy
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch

FULL = dict(depth=20, train_images=960, epochs=60, batch_size=64, p_last=0.5)  # the recorded long run
DEFAULT = dict(depth=8, train_images=320, epochs=40, batch_size=32, p_last=0.8)  # 3 blocks: a milder p_L
QUICK = dict(depth=8, train_images=64, epochs=3, batch_size=32, p_last=0.8)


def extra(p):
    add_data_dir(p)
    p.add_argument("--full", action="store_true", help="the recorded long run (%s)" % FULL)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2")
    p.add_argument("--train-images", type=int, default=None, help="the first N training images")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm: L.seed, L.seed + 1, ... (default 3)")
    p.add_argument("--p-last", type=float, default=None,
                   help="p_L of the stochastic-depth arm, linear rule (default 0.8; --full: 0.5)")
    p.add_argument("--augment", action="store_true", help="translate and flip, as the paper (off here)")


L = setup(__doc__, extra)
size = FULL if L.args.full else QUICK if L.quick else DEFAULT
depth, n_train = L.args.depth or size["depth"], L.args.train_images or size["train_images"]
epochs, batch_size = L.args.epochs or size["epochs"], L.args.batch_size or size["batch_size"]
seeds = [L.seed + i for i in range(max(1, L.args.seeds))]
p_last = L.args.p_last if L.args.p_last is not None else size["p_last"]
augment = L.args.augment
evals = sorted({max(1, round(epochs * i / 4)) for i in range(1, 5)})  # the epochs after which we evaluate

# %% [markdown]
# ## 1. Data: few images, all of the test set
#
# The training set is the first `n_train` images of the real CIFAR-10 copy (or of the sample
# shipped with minisd); the test set is all its test images (more of them, less noise).

# %%
section("1. data")
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train, 128 if L.quick else None)
normalizer = Normalizer.fit(x_train)
x_train, y_train, x_test, y_test = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))
steps = epochs * (len(y_train) // batch_size)
print(f"ResNet-{depth}, {epochs} epochs of batch {batch_size}: {steps} SGD steps per run, "
      f"{'with' if augment else 'no'} augmentation; seeds {', '.join(map(str, seeds))}")
drops = [e + 1 for e in range(1, epochs) if lr_at_epoch(e, 0.1, epochs) < lr_at_epoch(e - 1, 0.1, epochs)]
print(f"learning rate 0.1, divided by 10 from epochs {' and '.join(map(str, drops))} (lr_at_epoch); "
      f"Nesterov momentum 0.9; weight decay 1e-4")

# %% [markdown]
# ## 2. Two arms, the same steps
#
# For each seed: a constant-depth ResNet (p_L = 1) and a stochastic-depth one (linear rule;
# p_L = 0.8 for the 3 blocks of the default ResNet-8, 0.5 for the 9 of --full's ResNet-20)
# with the same initial weights, trained on the same images in the same order for
# the same number of steps. At a few epochs along the way each network is evaluated in eval
# mode (every block, branches scaled by p_l) on *all* its training images and on the test set:
# the training error of the full network, the thing that is tested - not the error of the
# sampled sub-networks that the training steps see.

# %%
section(f"2. training: {len(seeds)} seeds x 2 arms")
arms = (("constant depth", 1.0), (f"stochastic depth, p_L {p_last:g}", p_last))
runs = []
for seed in seeds:
    for label, p in arms:
        net = ResNet(depth, 10, p_last=p, rule="linear", seed=seed).to(L.device)
        opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
        run = dict(seed=seed, label=label, p_last=p, curve=[], seconds=0.0, batch_errors=[],
                   initial=[to_numpy(w).copy() for _, w, _ in net.parameters()])  # checked in section 3
        rng = np.random.default_rng(seed)  # the data order (and gates) of this seed
        for epoch in range(epochs):
            opt.lr = lr_at_epoch(epoch, base_lr=0.1, epochs=epochs)
            r = train_epoch(net, opt, x_train, y_train, normalizer, rng, batch_size, augment=augment)
            run["seconds"] += r["seconds"]
            run["batch_errors"].append(r["error"])
            if epoch + 1 in evals:
                train_err, _ = evaluate(net, x_train, y_train, normalizer)
                test_err, _ = evaluate(net, x_test, y_test, normalizer)
                run["curve"].append((epoch + 1, train_err, test_err))
        runs.append(run)
        _, train_err, test_err = run["curve"][-1]
        print(f"  seed {seed}, {label:24s}: train error {100 * train_err:5.1f}%  test error {100 * test_err:5.1f}%  "
              f"(sub-networks, last epoch: {100 * run['batch_errors'][-1]:5.1f}%)  {run['seconds']:.0f} s", flush=True)

# %% [markdown]
# ## 3. The signature of a regulariser
#
# Per seed, the two arms are paired: same weights at the start, same images, same order.
# A paired difference removes what the seed does to both; the spread between seeds says how
# much a single number could move by chance.

# %%
section("3. results")
const = [r for r in runs if r["p_last"] == 1.0]
sd = [r for r in runs if r["p_last"] != 1.0]
final = lambda rs, i: [r["curve"][-1][i] for r in rs]  # noqa: E731  (i: 1 train error, 2 test error)
pct = lambda v: (f"{100 * np.mean(v):.1f}%"  # noqa: E731
                 + (f" ({100 * min(v):.1f}-{100 * max(v):.1f})" if len(v) > 1 else ""))
rows = [[label, pct(final(rs, 1)), pct(final(rs, 2)), pct([b - a for a, b in zip(final(rs, 1), final(rs, 2))]),
         f"{np.mean([r['seconds'] for r in rs]):.0f} s"] for (label, _), rs in zip(arms, (const, sd))]
table(["arm", "train error (eval)", "test error", "gap (test - train)", "time per run"], rows)
print(f"(mean over {len(seeds)} seeds, lowest-highest in brackets; error of the full network in eval mode)")
d_test = [b - a for a, b in zip(final(const, 2), final(sd, 2))]
d_train = [b - a for a, b in zip(final(const, 1), final(sd, 1))]
print(f"paired by seed, stochastic - constant: test error {', '.join(f'{100 * d:+.1f}' for d in d_test)} points; "
      f"train error {', '.join(f'{100 * d:+.1f}' for d in d_train)} points")

# the pairing itself, checked: for each seed the two arms that were trained started from the very
# same weights (each run kept a copy of its initial parameters)
same_start = [len(a["initial"]) == len(b["initial"]) and all(np.array_equal(u, v) for u, v in
                                                            zip(a["initial"], b["initial"]))
              for a, b in zip(const, sd)]
mechanics = [("both arms of a seed start from the same weights",
              f"{sum(same_start)} of {len(seeds)} seeds, {len(const[0]['initial'])} arrays each",
              "every array equal, every seed", all(same_start))]
claims = []  # (claim, number, criterion, supported?, what it teaches)
enough_seeds = len(seeds) >= 3
fits_better = enough_seeds and all(d > 0 for d in d_train)
fits_worse = enough_seeds and all(d < 0 for d in d_train)
claims.append(("constant depth fits its training images better (lower eval train error)",
               f"paired {100 * np.mean(d_train):+.1f} pts", "SD above const for every seed (>= 3)",
               "yes" if fits_better else "no: the opposite holds" if fits_worse else "not shown",
               "a regulariser's first cost is fit: where SD does not fit worse, it has not regularised yet"))
over_fits = min(final(const, 2)) - max(final(const, 1)) > 0.2
claims.append(("constant depth over-fits: test error far above its training error",
               f"gap {100 * np.mean(final(const, 2)) - 100 * np.mean(final(const, 1)):.1f} pts",
               "every seed's gap > 20 pts", "yes" if over_fits else "no",
               "without over-fitting there is nothing for a regulariser to cure: expect no gain below"))
lower = enough_seeds and all(d < 0 for d in d_test)
higher = enough_seeds and all(d > 0 for d in d_test)
beyond = enough_seeds and max(final(sd, 2)) < min(final(const, 2))
cure = ("" if over_fits else "; constant depth did not over-fit much, so there was little to cure")
claims.append(("stochastic depth lowers the test error (paired by seed)", f"{100 * np.mean(d_test):+.1f} pts",
               "SD below const for every seed (>= 3)", "yes" if lower else "no" if higher else "not shown",
               f"stochastic depth tested worse for every seed: its cost in fit outweighed its regularisation in "
               f"this run{cure} (a milder p_L or more steps: --full, --p-last)" if higher else
               "fewer than 3 seeds give no direction: --seeds 3 or more" if not enough_seeds else
               f"the paired differences are not all of one sign (0 is neither): a short run on few images "
               f"decides little{cure}; more seeds and steps (--full) decide more"))
claims.append(("... beyond the seed spread", f"{pct(final(sd, 2))} vs {pct(final(const, 2))}",
               "every SD seed below every const seed", "yes" if beyond else "not shown",
               "the gain is a direction, not a margin: the seed alone moves the test error by as much, so one run "
               "per arm would prove nothing" if lower else
               "there is no gain for every seed (the row above), so none beyond the seed spread"))
if not enough_seeds:
    print("-> fewer than 3 seeds: no conclusion about the direction (--seeds 3 or more).")
elif lower and fits_better:
    print("-> the regulariser's signature: constant depth fits the training images better and tests worse;")
    print("   stochastic depth keeps a higher training error and gets a lower test error for every seed"
          + (", beyond the spread between seeds." if beyond else
             " (the ranges over seeds overlap: a direction, not yet a margin)."))
elif lower:
    print("-> stochastic depth tested better for every seed, but did not fit worse for every seed: a lower test")
    print("   error without the regulariser's full signature.")
elif all(d > 0 for d in d_test):
    print("-> stochastic depth tested WORSE for every seed here: this regime does not show the gain.")
elif all(d == 0 for d in d_test):
    print("-> every paired difference is 0: both arms test the same here; no difference shown.")
elif min(d_test) < 0 < max(d_test):
    print("-> the paired differences change sign between seeds: no difference in test error shown.")
else:
    print("-> some seeds show no difference (0.0 points) and the others one direction: no difference shown.")
if not over_fits:
    print("   (constant depth did not over-fit by much: with little over-fitting a regulariser has little to cure.)")
if min(final(const, 2) + final(sd, 2)) > 0.8:
    print("   (every test error is above 80%, near chance (90%): these networks trained too little to show"
          f"{' anything: --quick only checks that the lesson runs' if L.quick else ' anything'}.)")

# %% [markdown]
# Why it can work here and not in lessons 7 and 11 (the findings below say whether it did):
# constant depth drives the training error of its few images towards zero and memorises them
# - nothing in the data tells it which features generalise. Stochastic depth trains a
# different sub-network at every step (an implicit ensemble, lesson 9): no single chain of
# blocks sees every step, so the network that is tested - every block, branches scaled by
# p_l, the paper's stand-in for the ensemble (lesson 9 measures how good a stand-in) - should
# fit the images less and generalise better. With augmentation or many more images, the data
# themselves regularise and the gap should close.

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4), sharey=True)
for i, ((label, _), rs) in enumerate(zip(arms, (const, sd))):
    ep = [e for e, _, _ in rs[0]["curve"]]
    for ax, col, what in ((axes[0], 1, "train error (eval)"), (axes[1], 2, "test error")):
        c = 100 * np.array([[row[col] for row in r["curve"]] for r in rs])  # (seeds, evaluations)
        ax.plot(ep, c.mean(axis=0), "-o", color=f"C{i}", ms=3, label=label)
        ax.fill_between(ep, c.min(axis=0), c.max(axis=0), color=f"C{i}", alpha=0.2, lw=0)
        ax.set_title(f"{what}: mean, band lowest-highest of {len(seeds)} seeds", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
axes[0].set_ylabel("error (%)")
axes[0].legend(fontsize=8)
fig.suptitle(f"ResNet-{depth}, {len(y_train)} {source} images, {'augmented' if augment else 'no augmentation'}, "
             f"{steps} steps per run", fontsize=10)
L.save_figure(fig, "errors.png")

# %%
section("4. findings")
L.report_findings(mechanics, claims)

# %% [markdown]
# ## Summary
# * stochastic depth is a regulariser: it can help only where a network over-fits - few
#   images, no augmentation, many passes - and the findings above say whether it did here;
# * its signature is a higher training error and a lower test error than constant depth for
#   the same steps; judge it per seed (paired) and against the spread between seeds;
# * at the paper's scale (110 layers, 45,000 augmented images, 500 epochs) the gain comes late
#   in a long run (its Figure 3), on a network deep enough to over-fit even augmented data.

# %%
L.try_this()
