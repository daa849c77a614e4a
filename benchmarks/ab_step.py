"""A/B: the training step of two versions of minisd, interleaved in one process.

    git worktree add /tmp/minisd-before <commit>          # the version to compare with
    python benchmarks/ab_step.py /tmp/minisd-before        # B = this checkout
    python benchmarks/ab_step.py OLD_TREE NEW_TREE --depth 20 110 --steps 9

Each tree's ``minisd`` package is imported under its own name (``minisd_a``,
``minisd_b``; the package uses relative imports only), so both live in one
process. For each depth: the same seeded network, batch and gate draws in
both; steps alternate A, B, A, B, ... so that a noisy machine slows both
alike; the script prints the median step of each and the ratio B / A, for
constant depth and for stochastic depth (p_L 0.5, linear, one fresh draw per
step pair), and the median and quartiles of the ratios of neighbouring A and B steps
(a slow spell of the machine hits both steps of a pair). Use it to show that a change costs no speed: compare the ratio
with 1, not absolute times from different runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_minisd(tree, alias):
    """Import ``tree/minisd`` as the package ``alias``."""
    init = Path(tree).resolve() / "minisd" / "__init__.py"
    if not init.exists():
        raise SystemExit(f"error: no minisd package in {tree} (expected {init})")
    spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


class Stepper:
    """One ResNet of one minisd version, and a function that runs one timed training step."""

    def __init__(self, md, depth, batch, seed=0):
        from importlib import import_module
        optim = import_module(md.__name__ + ".optim")
        self.net = md.ResNet(depth=depth, p_last=0.5, seed=seed)
        self.opt = optim.SGD(self.net.parameters(), 0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
        self.loss_fn = md.SoftmaxCrossEntropy()
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        self.y = rng.integers(0, 10, batch)

    def step(self, gates):
        self.net.set_gates(gates)
        t0 = time.perf_counter()
        self.loss_fn.forward(self.net.forward(self.x), self.y)
        self.net.zero_grad()
        self.net.backward(self.loss_fn.backward())
        self.opt.step(inactive=self.net.inactive_parameter_names())
        return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tree_a", help="a checkout holding minisd/ (the baseline)")
    p.add_argument("tree_b", nargs="?", default=str(HERE.parent), help="the other checkout (default: this one)")
    p.add_argument("--depth", type=int, nargs="+", default=[20, 110])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=7, help="timed step pairs per measurement")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    a, b = load_minisd(args.tree_a, "minisd_a"), load_minisd(args.tree_b, "minisd_b")
    for md in (a, b):  # each owns this process as its command line would (trees before tune_process: no-op)
        getattr(importlib.import_module(md.__name__ + ".fast.threads"), "tune_process", lambda: None)()
    threads = importlib.import_module(b.__name__ + ".fast.threads").get_num_threads()
    print(f"A = {args.tree_a}\nB = {args.tree_b}\n{platform.processor() or platform.machine()}, "
          f"NumPy {np.__version__}, minisd threads {threads}; batch {args.batch_size}, float32")
    print(f"{'depth':>5}  {'gates':<10} {'A median':>10} {'B median':>10} {'B / A':>7} {'pairs B/A':>9}  "
          f"{'quartiles':>11}")
    for depth in args.depth:
        sa, sb = Stepper(a, depth, args.batch_size), Stepper(b, depth, args.batch_size)
        n = len(sa.net.blocks)
        draw = np.random.default_rng(1)
        for label in ("constant", "stochastic"):
            times = {"A": [], "B": []}
            for i in range(args.warmup + args.steps):
                gates = [True] * n if label == "constant" else list(draw.random(n) < np.array(sa.net.survival_probs))
                order = (("A", sa), ("B", sb)) if i % 2 == 0 else (("B", sb), ("A", sa))
                for name, s in order:
                    t = s.step(gates)
                    if i >= args.warmup:
                        times[name].append(t)
            ma, mb = statistics.median(times["A"]), statistics.median(times["B"])
            pairs = sorted(tb / ta for ta, tb in zip(times["A"], times["B"]))  # neighbours in time
            q1, q3 = pairs[len(pairs) // 4], pairs[(3 * len(pairs)) // 4]
            print(f"{depth:>5}  {label:<10} {1e3 * ma:>8.0f}ms {1e3 * mb:>8.0f}ms {mb / ma:>7.3f} "
                  f"{statistics.median(pairs):>8.3f}  {q1:.3f}-{q3:.3f}", flush=True)


if __name__ == "__main__":
    main()
