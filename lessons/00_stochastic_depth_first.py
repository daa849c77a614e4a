"""Lesson 0 - Stochastic depth in the first minute: a residual MLP whose blocks are dropped at random.

What you will learn
  * a residual network is h <- h + f_l(h), block after block; stochastic depth gives each
    block a gate b_l, open with probability p_l, drawn once per mini-batch:
    h <- h + b_l f_l(h). A closed gate means f_l is NOT computed: one `if` in the forward
    pass and the same `if` in the backward pass (no compute, no gradient);
  * at test time every block runs, multiplied by p_l (its expected contribution);
  * the whole network, forward and hand-written backward, in a few dozen lines of NumPy
    (section 1 prints the count), gradient-checked against central differences;
  * the same network trained with and without the gates on a toy problem (three noisy
    spirals), from the same initial weights: which blocks ran at every step, the time, and
    the final train/test numbers of both - and which of the claims they support;
  * how to compare the training fit of the two fairly: each network evaluated as it was
    trained (the x p_l rule is for the gated one only) and after the learning rate has come
    down (before that, SGD's noise is larger than the difference).
  Figure: out/00_stochastic_depth_first_gates.png - which blocks ran at each of the first
  steps, the training loss of both networks during training, and the test error per seed.

Run
  python lessons/00_stochastic_depth_first.py
  python lessons/00_stochastic_depth_first.py --quick    # one seed: no conclusions about seeds
  (options: --out DIR, --seed N, --blocks N, --p-last P; this lesson runs on NumPy only)

Try this
  1. Make the network deeper (--blocks 32) and the last survival probability smaller
     (--p-last 0.2): how many blocks run per step on average, and what happens to the time
     per run and to the test error of both networks?
  2. Replace the `if` in `forward` by a multiplication, h = h + (1.0 if gate else 0.0) * f,
     and remove the `if` in `backward`. Check that the numbers of the gradient check do not
     change - and measure what the time per run does.
  3. Drop the factor p at test time (use c = 1 in eval mode): how much worse is the test
     error of the stochastic-depth network? (Lesson 9 asks the same of a ResNet.)
"""
# %% [markdown]
# # Lesson 0: stochastic depth, first
#
# A residual network adds, block after block, a learned correction to its hidden vector:
# h_l = h_{l-1} + f_l(h_{l-1}). Stochastic depth (Huang et al., 2016) trains it with blocks
# removed at random: for every mini-batch, block l survives with probability p_l (gate b_l = 1)
# or is skipped (b_l = 0), and then h_l = h_{l-1} + b_l f_l(h_{l-1}). A skipped block costs
# nothing: f_l is not computed, so there is nothing to differentiate either. At test time the
# whole network runs, each block scaled by p_l, since E[b_l f_l] = p_l f_l.
#
# Here f_l(h) = W2 ReLU(W1 h + b1) + b2 on vectors of `width` numbers; the stem is a linear
# layer and a ReLU, the head a linear layer and the softmax cross-entropy. (Lessons 1-5 build
# the convolutional ResNet of the paper the same way, with batch norm in every branch.)

# %%
import inspect
import time

import numpy as np

from minisd import numerical_gradient, relative_error
from _common import plt, section, setup, table


def extra(p):
    p.add_argument("--blocks", type=int, default=8, help="number of residual blocks (default 8)")
    p.add_argument("--p-last", type=float, default=0.5, help="survival probability of the last block (default 0.5)")


L = setup(__doc__, extra_args=extra)
if L.device != "cpu":
    print(f"note: this lesson runs on NumPy only; --device {L.device} is ignored")
if L.args.blocks < 1 or not 0 < L.args.p_last <= 1:
    raise SystemExit("error: --blocks must be >= 1 and --p-last in (0, 1]")
n_blocks, width, n_classes = L.args.blocks, 32, 3
n_train, n_test = 300, (1000 if L.quick else 4000)
steps, batch, lr = (300 if L.quick else 3000), 32, 0.01
drop_at, every = int(0.75 * steps), steps // 30  # lr / 10 from here on; a training-loss point every `every` steps
seeds = [L.seed] if L.quick else [L.seed + i for i in range(5)]
# the paper's linear decay: p_l = 1 - (l / L)(1 - p_L), from nearly 1 down to p_L
probs = [1 - (l + 1) / n_blocks * (1 - L.args.p_last) for l in range(n_blocks)]


# %% [markdown]
# ## 1. The network, forward and backward
#
# `params` is a dict of arrays. `forward` returns the logits and a cache; a skipped block
# puts `None` in the cache. `backward` walks the blocks in reverse and skips the same ones:
# a skipped block gets no entry in `grads` at all, so the SGD step below leaves it alone.
# (Exercises 01, 02 and 06 ask you to derive these backward passes yourself: try those first.)

# %%
def init(rng, d_in, width, n_blocks, n_classes):
    """He-initialised weights: W (out, in), b (out,); the blocks' last layers start small."""
    P = {"W_in": rng.standard_normal((width, d_in)) * np.sqrt(2 / d_in), "b_in": np.zeros(width)}
    for l in range(n_blocks):
        P[f"W1_{l}"], P[f"b1_{l}"] = rng.standard_normal((width, width)) * np.sqrt(2 / width), np.zeros(width)
        P[f"W2_{l}"], P[f"b2_{l}"] = rng.standard_normal((width, width)) * np.sqrt(0.25 / width), np.zeros(width)
    P["W_out"], P["b_out"] = rng.standard_normal((n_classes, width)) * np.sqrt(1 / width), np.zeros(n_classes)
    return P


def forward(P, x, gates, probs, training):
    """x (N, D) -> logits (N, K), cache. gates: one bool per block (used in training only)."""
    h = np.maximum(x @ P["W_in"].T + P["b_in"], 0)                     # stem: (N, width)
    cache = {"x": x, "h0": h, "blocks": []}
    for l, (gate, p) in enumerate(zip(gates, probs)):
        if training and not gate:                                      # dropped: f_l is not computed
            cache["blocks"].append(None)
            continue
        c = 1.0 if training else p                                     # test time: scaled by p_l
        a = h @ P[f"W1_{l}"].T + P[f"b1_{l}"]
        r = np.maximum(a, 0)
        cache["blocks"].append((h, a, r, c))
        h = h + c * (r @ P[f"W2_{l}"].T + P[f"b2_{l}"])                # h + c * f_l(h)
    cache["h"] = h
    return h @ P["W_out"].T + P["b_out"], cache


def backward(P, dlogits, cache):
    """dlogits (N, K) -> grads: a dict with an entry for every parameter that was used."""
    G = {"W_out": dlogits.T @ cache["h"], "b_out": dlogits.sum(0)}
    dh = dlogits @ P["W_out"]                                          # (N, width)
    for l in reversed(range(len(cache["blocks"]))):
        if cache["blocks"][l] is None:                                 # dropped: no work, no gradient
            continue                                                   # (dh passes by the identity)
        h, a, r, c = cache["blocks"][l]
        df = c * dh                                                    # h_out = h + c f(h)
        G[f"W2_{l}"], G[f"b2_{l}"] = df.T @ r, df.sum(0)
        da = (df @ P[f"W2_{l}"]) * (a > 0)
        G[f"W1_{l}"], G[f"b1_{l}"] = da.T @ h, da.sum(0)
        dh = dh + da @ P[f"W1_{l}"]                                    # identity + branch
    da = dh * (cache["h0"] > 0)
    G["W_in"], G["b_in"] = da.T @ cache["x"], da.sum(0)
    return G


def softmax_cross_entropy(logits, y):
    """Mean loss over N and its gradient (p - onehot(y)) / N."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    d = np.exp(log_p)
    d[np.arange(len(y)), y] -= 1
    return -log_p[np.arange(len(y)), y].mean(), d / len(y)


section("the network: forward and backward, by hand")
print("(exercises 01, 02 and 06 ask you to derive these backward passes yourself: try those first)\n")
for fn in (forward, backward):
    print(inspect.getsource(fn).rstrip())
lines = sum(len(inspect.getsource(fn).splitlines()) for fn in (init, forward, backward, softmax_cross_entropy))
print(f"\n(init, forward, backward and the loss: {lines} lines; {n_blocks} blocks of width {width}, "
      f"p_l = {' '.join(f'{p:.2f}' for p in probs)})")

# %% [markdown]
# ## 2. Is the backward right? Central differences in float64
#
# For a few parameters we compare `backward` with (L(w + h) - L(w - h)) / 2h, entry by entry
# (`minisd.numerical_gradient`), with all gates open, with two gates closed (the closed
# blocks must get no gradient, and the numerical one is exactly 0), and in eval mode (x p_l).

# %%
section("2. gradient check (float64)")
rng = np.random.default_rng(L.seed)
xg, yg = rng.standard_normal((6, 2)), rng.integers(0, n_classes, 6)
P = init(rng, 2, width, n_blocks, n_classes)
dlogits = rng.standard_normal((6, n_classes))   # a random upstream gradient: checks every path at full size
closed = sorted({n_blocks // 2, n_blocks - 1})
checked = ["W_in", "W1_0", "b1_0", f"W2_{n_blocks // 2}", f"W1_{n_blocks - 1}", "W_out", "b_out"]
rows, closed_ok = [], True
logits = rng.standard_normal((6, n_classes))
num = numerical_gradient(lambda: np.asarray(softmax_cross_entropy(logits, yg)[0]), logits)
worst = relative_error(softmax_cross_entropy(logits, yg)[1], num)
rows.append(["-", "the loss: dlogits", f"{worst:.1e}"])
for label, gates, training in (("all open", [True] * n_blocks, True),
                               (f"blocks {closed} closed", [l not in closed for l in range(n_blocks)], True),
                               ("eval mode (x p_l)", [True] * n_blocks, False)):
    G = backward(P, dlogits, forward(P, xg, gates, probs, training)[1])
    for name in checked:
        num = numerical_gradient(lambda: forward(P, xg, gates, probs, training)[0], P[name], dlogits)
        if name in G:
            err = relative_error(G[name], num)
            worst = max(worst, err)
            rows.append([label, name, f"{err:.1e}"])
        else:                          # a dropped block's parameter: no gradient was computed
            zero = not np.any(num)
            closed_ok = closed_ok and zero
            rows.append([label, name, "not computed; numerical gradient "
                         + ("exactly 0" if zero else f"max {np.abs(num).max():.1e}")])
table(["gates", "parameter", "relative error"], rows)
print(f"\nworst relative error {worst:.1e} (float64 central differences agree to ~1e-8 with a correct backward)")

# %% [markdown]
# ## 3. Training, with and without the gates
#
# Three noisy spirals in the plane: 300 training points, a large test set. For each seed both
# networks start from the same weights and see the same mini-batches; with stochastic depth
# every step draws the gates first. SGD with momentum 0.9, the learning rate divided by 10 for
# the last quarter of the steps (the paper divides it at 50% and 75%); a parameter without a
# gradient (a dropped block's) is not updated at all, as PyTorch does (the paper's code still
# applied momentum and weight decay to it; lesson 5b). Training fit and test error are
# measured in eval mode on the whole training set and on the test set: every block runs,
# each network as it was trained - the stochastic one x p_l, the constant one x 1 (it never
# saw a gate, so there is no expectation to take; section 5 shows what x p_l does to it).

# %%
def spirals(rng, n, n_classes=3, noise=0.5):
    """n points (n, 2) on n_classes spiral arms, angle noise ``noise``; labels (n,)."""
    y = rng.integers(0, n_classes, n)
    r = rng.uniform(0.05, 1.0, n)
    t = 4.0 * r + 2 * np.pi * y / n_classes + noise * rng.standard_normal(n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1), y


def train(P, x, y, gated, seed, scales, log=None):
    """SGD with momentum for ``steps`` steps. Returns (seconds, gates (steps, L), skipped_work,
    curve): ``curve`` is the eval-mode training loss (blocks x ``scales``) every ``every`` steps.

    The mini-batches depend on ``seed`` only, the gates on their own generator: with and
    without the gates, a network sees the same batches. ``seconds`` is the time of forward,
    backward and update only (not of the bookkeeping and printing below).
    """
    batches = np.random.default_rng(seed).integers(0, len(y), (steps, batch))
    drawn = np.random.default_rng(seed + 10_000).random((steps, n_blocks)) < np.array(probs)
    if not gated:
        drawn[:] = True
    V = {k: np.zeros_like(v) for k, v in P.items()}
    seconds, skipped_work, curve = 0.0, 0, []
    for s in range(steps):
        idx, gates = batches[s], list(drawn[s])
        t0 = time.perf_counter()
        logits, cache = forward(P, x[idx], gates, probs, training=True)
        G = backward(P, softmax_cross_entropy(logits, y[idx])[1], cache)
        for k, g in G.items():                  # only the parameters that were used
            V[k] = 0.9 * V[k] + g
            P[k] -= (lr if s < drop_at else lr / 10) * V[k]
        seconds += time.perf_counter() - t0
        # what a dropped block did this step: computed in forward? got a gradient?
        skipped_work += sum((cache["blocks"][l] is not None) + (f"W1_{l}" in G)
                            for l in range(n_blocks) if not gates[l])
        if log is not None and s < log:
            ran = "".join("#" if g else "." for g in gates)
            print(f"step {s + 1:3d}  blocks {ran}  ran {sum(gates)}/{n_blocks}  "
                  f"dropped {[l for l, g in enumerate(gates) if not g]}  gradients for blocks "
                  f"{sorted({int(k.split('_')[1]) for k in G if k.startswith('W1_')})}")
        if (s + 1) % every == 0:
            curve.append(evaluate(P, x, y, scales)[0])
    return seconds, drawn, skipped_work, np.array(curve)


def evaluate(P, x, y, scales):
    """Eval mode (every block, x scales[l]): (loss, error)."""
    logits, _ = forward(P, x, [True] * n_blocks, scales, training=False)
    return float(softmax_cross_entropy(logits, y)[0]), float(np.mean(logits.argmax(axis=1) != y))


section("3. training: blocks that ran (#) and were dropped (.), first seed")
data_rng = np.random.default_rng(1000 + L.seed)
x_train, y_train = spirals(data_rng, n_train)
x_test, y_test = spirals(data_rng, n_test)
results, all_gates, skipped_work = {"constant": [], "stochastic": []}, [], 0
for i, seed in enumerate(seeds):
    start = init(np.random.default_rng(seed), 2, width, n_blocks, n_classes)
    order = ["constant", "stochastic"] if i % 2 == 0 else ["stochastic", "constant"]  # alternate: fair timing
    for variant in order:
        P = {k: v.copy() for k, v in start.items()}
        scales = probs if variant == "stochastic" else [1.0] * n_blocks
        seconds, drawn, work, curve = train(P, x_train, y_train, variant == "stochastic", seed + 1, scales,
                                            log=10 if (i == 0 and variant == "stochastic") else None)
        results[variant].append(dict(seed=seed, seconds=seconds, blocks=drawn.sum(1).mean(), curve=curve,
                                     train=evaluate(P, x_train, y_train, scales),
                                     test=evaluate(P, x_test, y_test, scales),
                                     train_x_p=evaluate(P, x_train, y_train, probs)))  # for section 5
        if variant == "stochastic":
            all_gates.append(drawn)
            skipped_work += work
gates = np.concatenate(all_gates)
n_dropped = int((~gates).sum())
print(f"... {steps} steps per run, {len(seeds)} seed(s), both networks per seed")

section("per block: how often it ran with the gates")
table(["block", "p_l", "ran (fraction of steps)", "steps dropped", "forward or gradient on a dropped step"],
      [[l, probs[l], gates[:, l].mean(), int((~gates[:, l]).sum()), 0] for l in range(n_blocks)],
      ["{}", "{:.2f}", "{:.3f}", "{:,}", "{}"])
print(f"over all {n_dropped:,} dropped (step, block) pairs: {skipped_work} forward computations or gradients")

section("final numbers (eval mode: every block; stochastic x p_l, constant x 1)")
rows = []
for variant in ("constant", "stochastic"):
    for r in results[variant]:
        rows.append([variant, r["seed"], r["blocks"], r["seconds"], r["train"][0], 100 * r["train"][1],
                     r["test"][0], 100 * r["test"][1]])
table(["network", "seed", "blocks/step", "seconds", "train loss", "train err %", "test loss", "test err %"], rows,
      ["{}", "{}", "{:.2f}", "{:.2f}", "{:.3f}", "{:.1f}", "{:.3f}", "{:.1f}"])

# %% [markdown]
# ## 4. What the numbers show
#
# A claim about the two networks counts only when every seed's paired difference
# (stochastic minus constant, same weights and batches) has the same sign and the mean is
# more than two standard errors from 0, with at least 3 seeds; otherwise it is "not shown".

# %%
def per_seed_diff(key, index=None):
    """Per-seed differences stochastic - constant of results[...][key] (or of its [index])."""
    get = (lambda r: r[key]) if index is None else (lambda r: r[key][index])
    return np.array([get(s) - get(c) for s, c in zip(results["stochastic"], results["constant"])])


def verdict(d, claimed_sign):
    """'yes', 'no: the opposite' or 'not shown' for the claim that d has sign ``claimed_sign``."""
    if len(d) < 3:
        return "not shown (fewer than 3 seeds)"
    se = d.std(ddof=1) / np.sqrt(len(d))
    if np.all(np.sign(d) == np.sign(d.mean())) and abs(d.mean()) > 2 * se:
        return "yes" if np.sign(d.mean()) == claimed_sign else "no: the opposite holds"
    return "not shown"


def mean_se(d):
    return f"{d.mean():+.3g} (se {d.std(ddof=1) / np.sqrt(len(d)):.2g})" if len(d) > 1 else f"{d.mean():+.3g} (1 seed)"


# %% [markdown]
# ## 5. The training loss, measured fairly
#
# Two things can hide a regulariser's cost (or fake the opposite). The x p_l rule is the
# expectation over the gates: a network trained without gates has none, and scaling its
# blocks by p_l changes a function it never trained. And at a constant learning rate, SGD
# keeps moving the weights: the training loss swings from one checkpoint to the next, and the
# last step's value is partly luck. We measure both: the constant network evaluated x p_l as
# well, and the training loss at the last checkpoint before the learning rate drops.

# %%
section("5. the training loss, measured fairly")
k = drop_at // every - 1  # the last checkpoint before the drop (step (k + 1) * every)
d_wrong = np.array([s["train"][0] - c["train_x_p"][0] for s, c in zip(results["stochastic"], results["constant"])])
d_before = per_seed_diff("curve", k)
swing = lambda lo, hi: np.mean([np.ptp(r["curve"][lo:hi]) for v in results.values() for r in v])
swing_before, swing_end = swing(k - 4, k + 1), swing(-5, None)
c_x_1, c_x_p = (np.mean([r[key][0] for r in results["constant"]]) for key in ("train", "train_x_p"))
table(["training loss of the constant net", "mean over seeds"],
      [["evaluated as trained (x 1)", c_x_1], ["evaluated x p_l (a rule for gated training)", c_x_p]], ["{}", "{:.3f}"])
print(f"'stochastic depth fits less', compared wrongly (constant x p_l): stochastic - constant {mean_se(d_wrong)}: "
      f"{verdict(d_wrong, +1)}")
print(f"\nat step {(k + 1) * every} (just before lr / 10): stochastic - constant {mean_se(d_before)}: "
      f"{verdict(d_before, +1)};")
print(f"the training loss swings by {swing_before:.3f} (max - min over the last 5 checkpoints, mean over runs) "
      f"before the drop, by {swing_end:.3f} after it.")
if c_x_p > c_x_1:
    print(f"Scaled by p_l, the constant net's training loss rises from {c_x_1:.3f} to {c_x_p:.3f}: its blocks were "
          "trained to add f_l in full.\nx p_l is the expectation over gates it never had; evaluate it as trained.")
if swing_before > abs(d_before.mean()):
    print(f"Before the drop the loss swings ({swing_before:.3f}) more than the networks differ "
          f"({abs(d_before.mean()):.3f}): at a constant lr the last step's loss cannot tell which fits better.")

# %%
section("6. findings")
expected = sum(probs)
se_blocks = np.sqrt(sum(p * (1 - p) for p in probs) / len(gates))
mean_blocks = gates.sum(1).mean()
time_ratio = np.array([s["seconds"] / c["seconds"] for s, c in zip(results["stochastic"], results["constant"])])
d_test, d_train = 100 * per_seed_diff("test", 1), per_seed_diff("train", 0)
time_ok = len(time_ratio) >= 3 and bool(np.all(time_ratio < 1))
few = "not shown (fewer than 3 seeds)"
mechanics = [
    ("the hand-written backward is right (float64)", f"worst rel. error {worst:.1e}", "< 1e-6; dropped: exactly 0",
     worst < 1e-6 and closed_ok),
    ("a dropped block does no work: no forward, no gradient", f"{skipped_work} in {n_dropped:,} dropped pairs",
     "0, with something dropped", skipped_work == 0 and n_dropped > 0),
    ("blocks run per step average sum of p_l", f"{mean_blocks:.3f} vs {expected:.3f}", "within 3 se",
     abs(mean_blocks - expected) <= 3 * se_blocks),
]
test_range = "-".join(f"{100 * f([r['test'][1] for v in results.values() for r in v]):.1f}" for f in (min, max))
ratio, ran_share = np.median(time_ratio), mean_blocks / n_blocks
one_seed = "one seed has no spread to compare with: run without --quick (5 seeds)"
# each takeaway says what its verdict teaches, with the numbers beside it; a "yes" needs none
time_verdict = "yes" if time_ok else few if len(time_ratio) < 3 else "not shown"
time_note = one_seed if len(time_ratio) < 3 else (
    f"{ran_share:.2f} of the blocks ran, but not every run was faster (ratios {time_ratio.min():.2f}-"
    f"{time_ratio.max():.2f}): the stem, head and update run every step, and a shared machine's timings vary")
test_verdict = verdict(d_test, -1)
test_note = {"not shown": f"no difference beyond the seeds' spread (both reach {test_range}%): a regulariser can "
                          "only win where the plain net overfits or trains badly (lesson 13 tries a regime "
                          "built for that)",
             "no: the opposite holds": f"here it tested worse for every seed ({d_test.mean():+.2f} points): what a "
                                       "regulariser buys depends on the regime (lesson 13 tries one built for it)",
             }.get(test_verdict, one_seed)
train_verdict = verdict(d_train, +1)
train_note = {"not shown": f"each net evaluated as trained, after lr / 10 (the loss swings {swing_before:.3f} "
                           "before it): the regulariser's cost on the fit is within the seeds' spread here",
              "no: the opposite holds": f"the gated net fit its training set better for every seed "
                                        f"({d_train.mean():+.3f}): on this small problem dropping blocks cost no fit",
              }.get(train_verdict, one_seed)
claims = [
    ("stochastic depth trains faster per run", f"time ratio {ratio:.2f} (median)",
     "< 1 for every seed, >= 3 seeds", time_verdict, time_note),
    ("stochastic depth lowers the test error", f"{mean_se(d_test)} points", "paired, all seeds, > 2 se",
     test_verdict, test_note),
    ("stochastic depth fits the training set less (higher loss)", f"{mean_se(d_train)}", "paired, all seeds, > 2 se",
     train_verdict, train_note),
]
L.report_findings(mechanics=mechanics, claims=claims)

print()
if L.mechanics[1][3] == "yes":
    print(f"Dropped blocks were skipped: {n_dropped:,} times a block's gate was closed, and not once was its "
          "branch computed or its gradient formed.")
if time_ok:
    share = (f"more than the blocks' share, {ran_share:.2f}: the stem, head and update run every step"
             if ratio >= ran_share else f"less than the blocks' share, {ran_share:.2f}: more was saved than the "
             "skipping explains (timings on a shared machine vary)")
    print(f"With {mean_blocks:.2f} of {n_blocks} blocks per step, a run took {ratio:.2f} of the constant-depth "
          f"time (every seed faster),\n{share}.")
else:
    print(f"That skipping saves time per run: {time_verdict} (see the seconds per run above).")
opposites = {1: "stochastic depth raises the test error",
             2: "stochastic depth fits the training set more closely (lower loss)"}
for i, (claim, _, _, supported, _) in enumerate(L.claims[1:], 1):
    if supported == "yes":
        print(f"On this toy problem, {claim} (every seed agrees, beyond 2 standard errors).")
    elif supported.startswith("no:"):
        print(f"On this toy problem, the opposite: {opposites[i]} (every seed agrees, beyond 2 standard errors).")
    elif supported == few:
        print(f"Whether {claim}: not shown; {one_seed}.")
    else:
        print(f"Whether {claim}: not shown (the seeds disagree in sign, or the mean is within 2 standard errors).")
print(f"A toy problem with {n_blocks} blocks says little about the paper's claims, which are about 110-layer\n"
      "and deeper ResNets on images (lessons 7-11).")

# %% [markdown]
# ## 7. The figure: the gates of the first steps, the training loss, the test error per seed

# %%
pyplot = plt()
fig, axes = pyplot.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [2, 1.5, 1]})
shown = min(60, steps)
axes[0].imshow(all_gates[0][:shown].T, aspect="auto", cmap="Greys", vmin=-0.3, vmax=1, interpolation="nearest")
axes[0].set_xlabel("training step (first seed)")
axes[0].set_ylabel("block")
axes[0].set_title("blocks that ran (dark) and were dropped (light)")
checkpoints = every * np.arange(1, len(results["constant"][0]["curve"]) + 1)
for j, variant in enumerate(("constant", "stochastic")):
    for n, r in enumerate(results[variant]):
        axes[1].plot(checkpoints, r["curve"], color=f"C{j}", lw=0.8, label=variant if n == 0 else None)
    errs = [100 * r["test"][1] for r in results[variant]]
    axes[2].plot([j] * len(errs), errs, "o", color=f"C{j}", alpha=0.7)
    axes[2].plot([j - 0.2, j + 0.2], [np.mean(errs)] * 2, color=f"C{j}")
axes[1].axvline(drop_at, color="grey", ls=":", label="lr / 10")
axes[1].set_yscale("log")
axes[1].set_xlabel("training step")
axes[1].set_ylabel("training loss (eval mode, as trained)")
axes[1].set_title("training fit, every seed")
axes[1].legend(fontsize=8)
for c, s in zip(results["constant"], results["stochastic"]):
    axes[2].plot([0, 1], [100 * c["test"][1], 100 * s["test"][1]], color="grey", lw=0.5)
axes[2].set_xticks([0, 1], ["constant depth", "stochastic depth"])
axes[2].set_xlim(-0.5, 1.5)
axes[2].set_ylabel("test error %")
axes[2].set_title("per seed (lines: same seed)")
L.save_figure(fig, "gates.png")

# %%
L.try_this()
