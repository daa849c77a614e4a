"""Lesson 11 - The paper's Figure 8 at laptop scale: test error and time per epoch against p_L.

What you will learn
  * the paper's only hyper-parameter, p_L (the survival probability of the last block), swept
    over 0.2, 0.5, 0.8 and 1 (constant depth) for the linear and the uniform rule;
  * how the expected depth E[blocks] = sum of p_l sets the time per epoch: the paper reports
    that linear decay with p_L = 0.2 trains 40% faster;
  * how the test error moves with p_L at this scale, with the spread over seeds beside every
    number - and why it cannot show the paper's result, which needs depth and a long schedule;
  * training fit compared fairly: the full network in eval mode on a fixed subset of the
    training images, not the sampled sub-networks' training loss; and a run at chance
    (about 90% error, as --quick is) says so instead of reading anything into p_L.

Scale: this is NOT the paper's experiment. The paper: ResNet-110 (54 blocks), 500 epochs
of 45,000 CIFAR-10 images, batch 128. Here by default: ResNet-20 (9 blocks), 3 epochs of
512 real CIFAR-10 training images (48 steps of batch 32), 2 seeds per setting, and up to
1,000 test images - 14 short runs. --quick: ResNet-8 (3 blocks), 1 epoch of 64 images in
batches of 16, 200 test images. Data: --data-dir, else $MINISD_DATA, else ./data, else the
real sample shipped with minisd (it says which).

Run
  python lessons/11_survival_sweep.py            # the lessons README lists its run time
  python lessons/11_survival_sweep.py --quick
  (options: --device gpu, --out DIR, --seed N, --data-dir DIR, --depth D, --epochs E,
   --train-images N, --seeds K, --no-augment)

Try this
  1. Run without augmentation (--no-augment, the paper's setting for SVHN). Measured with
     PyTorch on 5,170 CIFAR-10 images, ResNet-20 / 30 epochs: with augmentation p_L = 0.5 loses about
     10 points to constant depth; without it the two tie within the seed spread. What do
     your 3 epochs show?
  2. The real experiment is a grid of full training runs, one folder each, resumable:
       python -m minisd.sweep --out runs/fig8 --depth 20 --epochs 30 --seed 0 1
         --dataset cifar10-sample --valid-size 0     (the sample: hours on a CPU; a GPU helps)
     Leave out --dataset cifar10-sample for the full CIFAR-10 (downloaded into ./data, 163 MB).
       python -m minisd.sweep --plot runs/fig8
     Add --depth 20 56 110 for the paper's heat map (Figure 8, right).
  3. For a ResNet-110 (L = 54), which p_L makes the linear rule keep on average 60% of the
     blocks (the paper's "40% faster")? And the uniform rule? (Lesson 6's formula.)
"""
# %% [markdown]
# # Lesson 11: the survival probability p_L
#
# Everything so far used the paper's p_L = 0.5 with linear decay. Section 5 of the paper
# ("Hyper-parameter sensitivity", Figure 8) varies p_L for both rules:
#
#     linear:   p_l = 1 - (l / L)(1 - p_L)      uniform:  p_l = p_L for every block
#
# and finds for ResNet-110 on CIFAR-10: both rules beat constant depth when p_L is chosen
# well; linear decay is better than uniform at every p_L; linear is robust for p_L from
# about 0.4 to 0.8; and even p_L = 0.2 with linear decay stays competitive while training
# 40% faster. The heat map (Figure 8, right) adds that deeper networks profit from a lower
# p_L, while shallow ones only bear mild dropping.
#
# We run the same grid at a scale a laptop finishes in minutes, and read it for what it can
# show: the time, certainly; the error, only where it beats the spread over seeds.

# %%
import numpy as np

from minisd import ResNet, expected_blocks, survival_probabilities
from minisd.data import Normalizer
from minisd.optim import SGD, lr_at_epoch
from minisd.step import evaluate
from _common import add_data_dir, load_cifar10, plt, section, setup, table, train_epoch


def extra(p):
    add_data_dir(p)
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6N+2 (default 20; quick: 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 3; quick: 1)")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 512; quick: 64)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per setting: L.seed, L.seed + 1, ... (default 2)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no translation or flips")


L = setup(__doc__, extra)
depth = L.args.depth or (8 if L.quick else 20)
epochs = L.args.epochs or (1 if L.quick else 3)
n_train = L.args.train_images or (64 if L.quick else 512)
n_test = 200 if L.quick else None
batch_size = 16 if L.quick else 32
seeds = [L.seed + i for i in range(max(1, L.args.seeds))]
P_LAST = (0.2, 0.5, 0.8)
RULES = ("linear", "uniform")

# %% [markdown]
# ## 1. The grid and its expected depths
#
# p_L = 1 is constant depth whatever the rule, so the grid has 3 x 2 + 1 = 7 settings.
# E[blocks] = sum of p_l is the expected number of blocks that run in a step; the time per
# epoch should follow it (the stem, the head and the data pipeline always run).

# %%
section(f"1. the grid: ResNet-{depth}, p_L in {list(P_LAST) + [1.0]}, rules {RULES}")
settings = [("constant", 1.0)] + [(rule, p) for p in P_LAST[::-1] for rule in RULES]
nb = (depth - 2) // 2
table(["rule", "p_L", "E[blocks]", "share of the L blocks"],
      [[rule, p, expected_blocks(nb, p, "linear" if rule == "constant" else rule),
        f"{100 * expected_blocks(nb, p, 'linear' if rule == 'constant' else rule) / nb:.0f}%"]
       for rule, p in settings], ["{}", "{:g}", "{:.2f}", "{}"])
print(f"(L = {nb} blocks. For the paper's ResNet-110, L = 54, linear p_L = 0.2 keeps "
      f"{100 * expected_blocks(54, 0.2) / 54:.0f}% of the blocks on average.)")

# %% [markdown]
# ## 2. Training all runs side by side
#
# One run per setting and seed, each from the seed's initial weights, data order and
# augmentation. Every run is the paper's recipe (SGD, Nesterov 0.9, weight decay 1e-4,
# lr 0.1 divided by 10 at 50% and 75% of the epochs), scaled down. So that the times per
# epoch compare fairly, a throwaway network warms the process up first, and then all runs
# advance one epoch at a time, in an order that is reversed every other epoch. The test
# error is measured once, after the last epoch, in eval mode (branches scaled by p_l) - and
# so is the fit to the training images: the same full network in eval mode on a fixed subset
# of them (the first `n_fit`, not augmented). The loss `train_epoch` reports would not do:
# with p_L < 1 it is the loss of sampled, shorter sub-networks on augmented batches.

# %%
section(f"2. training {len(settings) * len(seeds)} runs: {epochs} epoch(s) of {n_train} images, batch {batch_size}, "
        f"seeds {', '.join(map(str, seeds))}")
x_train, y_train, x_test, y_test, source = load_cifar10(L, n_train, n_test)
normalizer = Normalizer.fit(x_train)
x_train, y_train, x_test, y_test = (L.to_device(a) for a in (x_train, y_train, x_test, y_test))
n_fit = min(len(y_train), 256)
x_fit, y_fit = x_train[:n_fit], y_train[:n_fit]  # a fixed training subset: how well the full network fits
print(f"augmentation: {'translation +-4 px and flips' if L.args.augment else 'none (--no-augment)'}; "
      f"learning rate per epoch: {', '.join(f'{lr_at_epoch(e, 0.1, epochs):g}' for e in range(epochs))}")
warm = ResNet(depth, 10, p_last=1.0, seed=L.seed + 1000).to(L.device)  # warm-up: 3 untimed steps
train_epoch(warm, SGD(warm.parameters(), lr=0.1), x_train[:3 * batch_size], y_train[:3 * batch_size],
            normalizer, np.random.default_rng(0), batch_size)
runs = []
for seed in seeds:
    for rule, p in settings:
        net = ResNet(depth, 10, p_last=p, rule="linear" if rule == "constant" else rule, seed=seed).to(L.device)
        runs.append(dict(rule=rule, p=p, seed=seed, net=net, rng=np.random.default_rng(seed), seconds=[],
                         opt=SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)))
for epoch in range(epochs):
    for run in (runs if epoch % 2 == 0 else runs[::-1]):
        run["opt"].lr = lr_at_epoch(epoch, 0.1, epochs)
        r = train_epoch(run["net"], run["opt"], x_train, y_train, normalizer, run["rng"], batch_size,
                        augment=L.args.augment)
        run["seconds"].append(r["seconds"])
        run.setdefault("blocks", []).append(r["blocks"])  # mean blocks that ran per step, this epoch
        run["loss"], run["train_error"] = r["loss"], r["error"]
    print(f"  epoch {epoch + 1}/{epochs}: all {len(runs)} runs done "
          f"({sum(r['seconds'][-1] for r in runs):.0f} s of training)", flush=True)
for run in runs:
    run["test_error"], _ = evaluate(run["net"], x_test, y_test, normalizer)
    run["fit_error"], run["fit_loss"] = evaluate(run["net"], x_fit, y_fit, normalizer)
    print(f"  seed {run['seed']}, {run['rule']:8s} p_L {run['p']:g}: last-epoch train loss (sub-networks) "
          f"{run['loss']:.3f}, train loss in eval mode ({n_fit} images) {run['fit_loss']:.3f}, "
          f"test error {100 * run['test_error']:.1f}%")

# %% [markdown]
# ## 3. Results
#
# Test error: the mean over seeds, with the lowest and highest seed beside it. Time per
# epoch: each run's epoch divided by the constant-depth run's epoch of the same seed and
# number (timed close together), the median over those pairs.

# %%
section("3. test error and time per epoch against p_L")
const = {r["seed"]: r for r in runs if r["rule"] == "constant"}
res = {}
for rule, p in settings:
    rs = [r for r in runs if (r["rule"], r["p"]) == (rule, p)]
    ratios = [a / b for r in rs for a, b in zip(r["seconds"], const[r["seed"]]["seconds"])]
    errs = [r["test_error"] for r in rs]
    res[rule, p] = dict(errs=errs, err=float(np.mean(errs)), ratio=float(np.median(ratios)), ratios=ratios,
                        loss=float(np.mean([r["fit_loss"] for r in rs])),
                        fit_losses={r["seed"]: r["fit_loss"] for r in rs},
                        share=expected_blocks(nb, p, "linear" if rule == "constant" else rule) / nb)
span = lambda v: f"{100 * min(v):.1f}-{100 * max(v):.1f}" if len(v) > 1 else "-"
table(["rule", "p_L", "E[blocks] / L", "train loss (eval)", "test error %", "seeds min-max", "time / constant",
       "pairs min-max"],
      [[rule, p, f"{100 * v['share']:.0f}%", v["loss"], 100 * v["err"], span(v["errs"]), f"{100 * v['ratio']:.0f}%",
        f"{100 * min(v['ratios']):.0f}-{100 * max(v['ratios']):.0f}%"] for (rule, p), v in res.items()],
      ["{}", "{:g}", "{}", "{:.3f}", "{:.1f}", "{}", "{}", "{}"])
n_te = len(y_test)
e0 = res["constant", 1.0]["err"]
print(f"(one test set of {n_te} images: an error near {100 * e0:.0f}% has a standard error of about "
      f"{100 * np.sqrt(e0 * (1 - e0) / n_te):.1f} points by itself; the seeds add the spread of training.)")
print(f"(train loss (eval): the full network in eval mode on the first {n_fit} training images, mean over seeds)")

# %% [markdown]
# ## 4. What these numbers show
#
# Every sentence below is printed only when the numbers above support it. An error
# difference counts when the ranges over seeds do not overlap.

# %%
section("4. what these numbers show (at this scale)")
# What the code must do, whatever the scale: each setting ran, on average, the expected number
# of blocks per step, sum of p_l; a step's count has variance sum of p_l (1 - p_l), so over
# n steps the mean lies within 3 standard errors sqrt(var / n) of it (or a gate is wrong).
steps_per_epoch = len(y_train) // batch_size
worst = 0.0
for rule, p in settings:
    ps_l = survival_probabilities(nb, p, "linear" if rule == "constant" else rule)
    rs = [r for r in runs if (r["rule"], r["p"]) == (rule, p)]
    n_steps = len(rs) * epochs * steps_per_epoch
    se = np.sqrt(sum(q * (1 - q) for q in ps_l) / n_steps)
    gap = abs(np.mean([b for r in rs for b in r["blocks"]]) - sum(ps_l))
    worst = max(worst, gap / se if se > 0 else (0.0 if gap < 1e-9 else np.inf))
mechanics = [("blocks run per step average sum of p_l, every setting", f"worst {worst:.1f} s.e.",
              "within 3 standard errors", worst <= 3)]
claims = []  # (claim, number, criterion, supported?, what it teaches)
mean_err = float(np.mean([r["test_error"] for r in runs]))
at_chance = abs(mean_err - 0.9) < 0.05  # 10 classes: guessing is 90% wrong
if at_chance:
    print(f"NOTE: the runs are at chance: mean test error {100 * mean_err:.1f}%, within 5 points of the 90% of")
    print(f"      guessing among 10 classes ({epochs} epoch(s) of {n_train} images{', --quick' if L.quick else ''}). "
          "The errors below show nothing about p_L;")
    print("      only the times do. Run without --quick (or with more epochs and images) for the error.")
claims.append(("the runs learn (test error below the 90% of chance)", f"{100 * mean_err:.1f}% (mean of all runs)",
               "more than 5 points below 90%", "no" if at_chance else "yes" if mean_err < 0.85 else "not shown",
               "a run at chance says nothing about p_L: train longer (more epochs and images) first"))
# (at_chance is |error - 90%| < 5 points, so "not shown" is an error more than 5 points ABOVE chance)
shares = np.array([v["share"] for v in res.values()])
ratios = np.array([v["ratio"] for v in res.values()])
r_time = float(np.corrcoef(shares, ratios)[0, 1])
lin02 = res["linear", 0.2]
print(f"time per epoch against the expected share of blocks: correlation {r_time:.2f} over the {len(res)} settings.")
claims.append(("the time per epoch follows the expected depth", f"correlation {r_time:.2f}", "> 0.9 (no: < 0)",
               "yes" if r_time > 0.9 else "no" if r_time < 0 else "not shown",
               "at these sizes fixed costs and other work on the machine hide the saving (lesson 10 measures it)"))
if r_time > 0.9:
    print("-> the time per epoch follows the expected depth: fewer expected blocks, shorter epochs.")
else:
    print("-> the time per epoch does NOT follow the expected depth closely here: at these sizes the fixed costs")
    print("   and noise from other work on the machine are as large as the differences (lesson 10 measures it).")
print(f"linear rule, p_L = 0.2: time per epoch {100 * lin02['ratio']:.0f}% of constant depth's (pairs "
      f"{100 * min(lin02['ratios']):.0f}-{100 * max(lin02['ratios']):.0f}%) for {100 * lin02['share']:.0f}% of the "
      "blocks;\nthe paper: 60% of the time (40% saved) for ResNet-110.")
fast_verdict = "yes" if max(lin02["ratios"]) < 1 else "no" if min(lin02["ratios"]) > 1 else "not shown"
claims.append(("linear p_L = 0.2 trains faster than constant depth (paper: 40% faster)",
               f"{100 * lin02['ratio']:.0f}% of the time", f"< 100% in all {len(lin02['ratios'])} pairs",
               fast_verdict, "slower in every pair: at these sizes the fixed costs and other work on the machine "
               "outweigh the saving (lesson 10 measures it)" if fast_verdict == "no" else
               "faster in some pairs only: a saving smaller than the timing noise of a shared machine does not show "
               "in a few epochs"))

const_errs = res["constant", 1.0]["errs"]
above, below, same = [], [], []
for (rule, p), v in res.items():
    if rule == "constant":
        continue
    if len(seeds) > 1 and min(v["errs"]) > max(const_errs):
        above.append(f"{rule} {p:g}")
    elif len(seeds) > 1 and max(v["errs"]) < min(const_errs):
        below.append(f"{rule} {p:g}")
    else:
        same.append(f"{rule} {p:g}")
wins = []
if at_chance:
    print("test error: not read - the runs are at chance (see the note above).")
elif len(seeds) < 2:
    print("one seed per setting: no spread, so no error difference is claimed (use --seeds 2 or more).")
else:
    print(f"test error against constant depth ({100 * np.mean(const_errs):.1f}%, seeds {span(const_errs)}), beyond "
          f"the spread of {len(seeds)} seeds:")
    print(f"  higher: {', '.join(above) or 'none'};  lower: {', '.join(below) or 'none'};  "
          f"within the spread: {', '.join(same) or 'none'}.")
    for p in P_LAST:
        a, b = res["linear", p]["errs"], res["uniform", p]["errs"]
        if min(b) > max(a):
            wins.append(f"p_L {p:g}: linear lower")
        elif min(a) > max(b):
            wins.append(f"p_L {p:g}: uniform lower")
    print(f"linear vs uniform at the same p_L, beyond the spread: {'; '.join(wins) or 'no difference at any p_L'}.")
    if above and not below:
        print(f"-> at this scale dropping blocks cost accuracy in {len(above)} of {len(above) + len(same)} settings "
              "beyond the seed spread, and gained in none.")
    elif below:
        print(f"-> {len(below)} setting(s) beat constant depth beyond the seed spread even at this scale.")
    else:
        print("-> at this scale no setting differs from constant depth by more than the spread between seeds.")
    print(f"   ({len(seeds)} seeds are few: a range over {len(seeds)} runs is a weak measure of the spread.)")
ok = not at_chance and len(seeds) > 1
beats_verdict = "yes" if ok and below else "no" if ok and above and not below else "not shown"
lin_wins = [w for w in wins if "linear lower" in w]
uni_wins = [w for w in wins if "uniform lower" in w]
rules_verdict = ("yes" if ok and len(lin_wins) == len(P_LAST) else "no" if ok and uni_wins else "not shown")
not_read = ("the runs are at chance: train longer first" if at_chance else
            "one seed per setting gives no spread to judge by: --seeds 2 or more" if len(seeds) < 2 else None)
c_loss = res["constant", 1.0]["loss"]
c_fit = res["constant", 1.0]["fit_losses"]
sd_keys = [k for k in res if k[0] != "constant"]
diffs = [res[k]["fit_losses"][sd] - c_fit[sd] for k in sd_keys for sd in seeds]  # paired: same seed
print(f"training fit, full network in eval mode on {n_fit} training images (loss, mean over seeds): constant depth "
      f"{c_loss:.3f}; stochastic depth {min(res[k]['loss'] for k in sd_keys):.3f}-"
      f"{max(res[k]['loss'] for k in sd_keys):.3f};")
print(f"stochastic minus constant, same seed: {min(diffs):+.3f} to {max(diffs):+.3f} over {len(diffs)} pairs.")
if at_chance:
    fit_verdict = "not shown"
    print("-> at chance the training fit says nothing either.")
elif min(diffs) > 0:
    fit_verdict = "yes"
    print("-> every stochastic-depth setting fit the training images worse than constant depth, seed by seed: in so")
    print("   few steps, dropping blocks slows the fitting of the training images down.")
elif max(diffs) < 0:
    fit_verdict = "no"
    print("-> every stochastic-depth setting fit the training images BETTER than constant depth, seed by seed.")
else:
    fit_verdict = "not shown"
    print("-> the differences go both ways: these runs do not show dropping blocks slowing the fit down.")
fit_takeaway = {"no": "dropping blocks sped the fit of the training images up here, seed by seed: early in "
                      "training shorter sub-networks need not learn more slowly",
                "not shown": "a run at chance says nothing about the fit either" if at_chance else
                             "the paired differences go both ways: in these few epochs the shorter sub-networks "
                             "fit about as fast as the full network"}.get(fit_verdict)
claims.append(("dropping blocks slows the fit of the training images", f"{np.mean(diffs):+.3f} (SD - const)",
               f"> 0 in all {len(diffs)} seed pairs", fit_verdict, fit_takeaway))
# what the error claims teach depends on the fit: a slower fit explains a cost in test error
fit_clause = {"yes": "the sub-networks also fit the training images more slowly (the fit row below)",
              "no": "although they fit the training images faster (the fit row below)",
              "not shown": "while the fit of the training images does not differ clearly (the fit row below)"
              }[fit_verdict]
beats_takeaway = not_read or {
    "no": f"dropping blocks cost test accuracy beyond the seed spread, {fit_clause}: a regulariser cannot help "
          "a network that has not fit its training images yet (lesson 13: where it helps)",
    "not shown": f"no setting differs from constant depth beyond the spread of {len(seeds)} seeds, {fit_clause}: "
                 "a regulariser has little to cure in a few epochs (lesson 13: where it helps)"}.get(beats_verdict)
claims.insert(-1, ("some setting beats constant depth's test error (paper)", f"{len(below)} of {len(res) - 1} settings",
                   "ranges over seeds apart", beats_verdict, beats_takeaway))
claims.insert(-1, ("linear beats uniform at every p_L (paper)", f"{len(lin_wins)} of {len(P_LAST)} p_L",
                   "ranges over seeds apart at each", rules_verdict, not_read or (
                       f"uniform was lower at {len(uni_wins)} p_L: with {nb} blocks the two rules differ little, and "
                       f"{len(seeds)} seeds of {epochs} epochs can put either ahead" if rules_verdict == "no" else
                       f"linear was lower at {len(lin_wins)} of {len(P_LAST)} p_L: with {nb} blocks the two rules "
                       f"differ little, and {len(seeds)} seeds of {epochs} epochs cannot separate them")))
print("The paper, at full scale (ResNet-110, 500 epochs, 45,000 images): both rules beat constant depth for a")
print("well-chosen p_L, linear beats uniform at every p_L, linear is robust for p_L of about 0.4-0.8, and p_L = 0.2")
print("(linear) stays competitive while training 40% faster.")
c_train = np.mean([const[s]["fit_error"] for s in seeds])
print(f"Constant depth here: training error {100 * c_train:.1f}% (eval mode, {n_fit} training images), test error "
      f"{100 * np.mean(const_errs):.1f}%.")
if at_chance:
    print("-> at chance: it fits neither.")
elif c_train > 0.3:
    print(f"-> it is still UNDER-fitting: {100 * c_train:.0f}% of its training images are wrong, so a gap to the test")
    print("   error is not over-fitting yet. A regulariser has nothing to cure until the network can fit its")
    print("   training images (lesson 13 makes one over-fit on purpose: few images, no augmentation, many passes).")
elif c_train < np.mean(const_errs) - 0.1:
    print("-> it fits its training images well and tests clearly worse: it over-fits, and a regulariser such as")
    print("   stochastic depth could reduce that - with more epochs, stochastic depth may catch up.")
else:
    print("-> it fits its training images about as well as the test images: little over-fitting to reduce.")

# %% [markdown]
# ## 5. Figure: the paper's Figure 8 (left), and the time per epoch

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
ps = list(P_LAST) + [1.0]
for i, (rule, marker, ls) in enumerate((("linear", "o", "-"), ("uniform", "s", "--"))):
    vals = [res[rule, p] if p < 1 else res["constant", 1.0] for p in ps]
    mean = [100 * v["err"] for v in vals]
    axes[0].errorbar(ps, mean, yerr=[[m - 100 * min(v["errs"]) for m, v in zip(mean, vals)],
                                     [100 * max(v["errs"]) - m for m, v in zip(mean, vals)]],
                     marker=marker, ls=ls, capsize=3, color=f"C{i}", label=f"{rule} decay" if rule == "linear"
                     else "uniform")
    axes[1].plot(ps, [100 * v["ratio"] for v in vals], marker=marker, ls=ls, color=f"C{i}",
                 label=f"{rule}: time per epoch")
    axes[1].plot(ps, [100 * v["share"] for v in vals], marker=marker, ls=":", color=f"C{i}", alpha=0.5,
                 label=f"{rule}: E[blocks] / L")
axes[0].set_xlabel("p_L")
axes[0].set_ylabel("test error (%)")
axes[0].set_title(f"ResNet-{depth}, {epochs} epoch(s) of {n_train} images ({len(seeds)} seeds: mean, min-max)")
axes[1].set_xlabel("p_L")
axes[1].set_ylabel("% of constant depth")
axes[1].set_title("time per epoch and expected depth")
for ax in axes:
    ax.set_xticks(ps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
L.save_figure(fig, "error_vs_p_last.png")

# %% [markdown]
# ## 6. Findings
#
# Each claim, the number behind it, the criterion it must meet, and whether it did here.

# %%
section("6. findings")
L.report_findings(mechanics, claims)

# %% [markdown]
# ## Summary
# * p_L sets the expected depth, and the expected depth sets the time per epoch;
# * whether a lower p_L also lowers the test error depends on the scale: the paper finds it
#   for ResNet-110 after 500 epochs; a few epochs of a ResNet-20 mostly show the cost of
#   dropping blocks, or nothing beyond the spread between seeds;
# * `python -m minisd.sweep` runs the real grid (one resumable run folder per point) and
#   draws Figure 8 from it, the heat map over depth included.

# %%
L.try_this()
