"""Where the stochastic-depth saving goes: the plain-loop time ratio, explained block by block.

    python benchmarks/sd_ratio.py                      # ResNet-110, batch 128, p_L 0.5 linear, CPU
    python benchmarks/sd_ratio.py --depth 56 --steps 12

1. A plain loop, as training runs it: gates re-sampled every step, a constant-depth step
   and a stochastic step interleaved, mean times. Prints stochastic / constant beside the
   fraction of blocks that ran.
2. Why the ratio is above that fraction: one traced constant-depth step gives each block's
   branch time (forward + backward). The blocks do not cost the same: with equal FLOPs, a
   first-stage block (16 channels, 32x32) takes longer than a third-stage one (64 channels,
   8x8): four times the elements for batch norm and ReLU, and 16-row matrix products that
   BLAS runs slower. Linear decay keeps the first blocks most often, so the expected share
   of branch TIME that runs, sum(p_l t_l) / sum(t_l), is above the share of blocks,
   mean(p_l). The script prints both, the step ratio they predict (the rest of the step -
   stem, outer ReLUs, pooling, loss, optimizer - taken as fixed), and what is left over:
   the cost of a dropped block itself (its output ReLU, forward and backward).

Compare ratios within one run only (machines are noisy).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import minisd
from minisd.optim import SGD


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=110)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--p-last", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=8, help="step pairs timed (after 2 warm-up pairs)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    net = minisd.ResNet(depth=args.depth, p_last=args.p_last, seed=0)
    opt = SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    loss_fn = minisd.SoftmaxCrossEntropy()
    x = rng.standard_normal((args.batch_size, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    L = len(net.blocks)

    def step(gates):
        net.set_gates(gates)
        t0 = time.perf_counter()
        loss_fn.forward(net.forward(x), y)
        net.zero_grad()
        net.backward(loss_fn.backward())
        opt.step(inactive=net.inactive_parameter_names())
        return time.perf_counter() - t0

    print(f"ResNet-{args.depth}, batch {args.batch_size}, p_L {args.p_last} linear, float32; "
          f"{platform.processor() or platform.machine()}, NumPy {np.__version__}, "
          f"minisd threads {minisd.fast.threads.get_num_threads()}")
    for _ in range(2):
        step([True] * L)
        step(net.sample_gates(rng))

    # the branch time of every block, from one traced all-open step
    net.set_gates([True] * L)
    t_total = time.perf_counter()
    with minisd.trace() as t:
        loss_fn.forward(net.forward(x), y)
        net.zero_grad()
        net.backward(loss_fn.backward())
    t_total = time.perf_counter() - t_total
    branch = np.zeros(L)
    for e in t.events:
        if e.block is not None and ".branch." in e.layer:
            branch[e.block] += e.seconds
    stages = np.array_split(branch, 3)
    print("branch time per block, forward + backward (traced): "
          + ", ".join(f"stage {i + 1} {1e3 * s.mean():.0f} ms" for i, s in enumerate(stages)))

    constant, stochastic, ran, ran_time = [], [], [], []
    for _ in range(args.steps):
        constant.append(step([True] * L))
        gates = net.sample_gates(rng)
        ran.append(np.mean(gates))
        ran_time.append(float(np.dot(gates, branch) / branch.sum()))
        stochastic.append(step(gates))
    tc, ts = float(np.mean(constant)), float(np.mean(stochastic))
    probs = np.array(net.survival_probs)
    share_blocks, share_time = float(np.mean(ran)), float((probs * branch).sum() / branch.sum())
    drawn_time = float(np.mean(ran_time))  # the same, for the gates actually drawn
    # everything but the branches (share of the traced step, optimizer not included): fixed
    rest = 1.0 - branch.sum() / t_total
    predicted = rest + (1.0 - rest) * drawn_time
    print(f"plain loop, means of {args.steps} interleaved steps: constant {tc:.3f} s, stochastic {ts:.3f} s")
    print(f"  stochastic / constant            {ts / tc:.3f}")
    print(f"  fraction of blocks run           {share_blocks:.3f}  (expected sum(p_l)/L = {probs.mean():.3f})")
    print(f"  expected fraction of branch time {share_time:.3f}  (sum(p_l t_l) / sum(t_l); "
          f"{drawn_time:.3f} for these draws)")
    print(f"  predicted step ratio             {predicted:.3f}  (branch time scaled, the rest of "
          f"the step, {100 * rest:.0f}%, fixed)")
    print(f"  left over                        {ts / tc - predicted:+.3f}  (a dropped block's own cost, "
          "and noise)")


if __name__ == "__main__":
    main()
