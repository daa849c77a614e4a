"""Memory held for backward by a DenseNet, readable concatenation vs shared storage.

    python benchmarks/densenet_memory.py                 # DenseNet-BC-100, k = 12, batch 64
    python benchmarks/densenet_memory.py --depth 40 --batch-size 16

After one training-mode forward, the bytes that the caches hold for the backward
(``minisd.tracing.held_nbytes``: each buffer once, parameters left out), cumulated over the
network in forward order and printed after every 4th dense layer, for the readable
concatenation (``minisd.reference()``: each layer keeps its concatenated input) and for shared
storage (``minisd/fast/dense.py``: one buffer per dense block). Also the time of one training
step of each, measured in this run (the readable one also runs the readable convolutions).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time

import numpy as np

import minisd
from minisd import tracing


def curve(net):
    """[(dense layer index from 1, MiB held by everything up to and including it)]."""
    seen, points, i = [], [], 0
    for stage in net.stages():
        if isinstance(stage, minisd.DenseBlock):
            seen.append(stage)  # its shared buffer, if any
            for layer in stage.layers:
                i += 1
                seen += layer.modules()
                points.append((i, tracing.held_nbytes(seen) / 2 ** 20))
        else:
            seen += stage.modules()
    return points, tracing.held_nbytes(net.modules()) / 2 ** 20


def measure(depth, growth, batch, readable):
    net = minisd.DenseNet(depth, growth, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn = minisd.SoftmaxCrossEntropy()
    with minisd.reference() if readable else contextlib.nullcontext():
        t0 = time.perf_counter()
        logits = net.forward(x)
        points, total = curve(net)
        loss_fn.forward(logits, y)
        net.zero_grad()
        net.backward(loss_fn.backward())
        seconds = time.perf_counter() - t0
    return points, total, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--growth-rate", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    print(f"DenseNet-BC-{args.depth}, k = {args.growth_rate}, batch {args.batch_size}, float32; "
          f"{platform.machine()}, NumPy {np.__version__}")
    (rp, rtotal, rs), (sp, stotal, ss) = (measure(args.depth, args.growth_rate, args.batch_size, r) for r in (True, False))
    print(f"{'layer':>5}  {'readable MiB':>12}  {'shared MiB':>10}")
    for (i, r), (_, s) in zip(rp, sp):
        if i % 4 == 0 or i == len(rp):
            print(f"{i:>5}  {r:>12.0f}  {s:>10.0f}")
    print(f"whole network held after the forward: readable {rtotal:.0f} MiB, shared {stotal:.0f} MiB "
          f"({rtotal / stotal:.1f}x less)")
    print(f"one training step: readable (minisd.reference()) {rs:.2f} s, shared storage {ss:.2f} s")


if __name__ == "__main__":
    main()
