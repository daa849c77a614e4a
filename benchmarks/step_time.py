"""Time a training step of the paper's CIFAR ResNet: minisd vs PyTorch, constant vs stochastic depth.

    python benchmarks/step_time.py                          # ResNet-20 and ResNet-110, batch 128, CPU
    python benchmarks/step_time.py --depth 20 --steps 9     # one depth, more steps
    python benchmarks/step_time.py --device gpu             # CuPy (and PyTorch on CUDA, if present)

For each depth (float32, random 32x32 images, the paper's SGD):

1. minisd, constant depth: forward (with the loss), backward (with zero_grad
   before it), optimizer step and the whole step, medians over ``--steps`` steps
   after ``--warmup`` steps;
   time per layer type from one traced step; peak memory of a step and the
   bytes the layers hold for the backward pass.
2. Stochastic depth (p_L 0.5, linear) on ``--steps`` seeded gate draws, the
   same draws for minisd and PyTorch. All timed steps are interleaved (for
   each draw: minisd constant, minisd draw, PyTorch constant, PyTorch draw,
   ...) so that a noisy machine slows every column alike. The printed ratio
   is mean(stochastic) / mean(constant) over those steps, beside the FLOP
   ratio of the same draws and the ratio of bytes held for backward.
3. When PyTorch is importable: the same network (benchmarks/torch_resnet.py) in
   the default and channels_last memory formats, same thread count, same
   measurements; the ratios minisd / PyTorch. On the GPU (CUDA), PyTorch runs in
   plain fp32: TF32 is switched off for cuDNN and matmul, as minisd has none.
4. The plain-loop ratio (issue 11): one minisd network, a plain training loop
   with the gates re-sampled every step, ``--plain-steps`` constant-depth and
   stochastic steps interleaved, each timed whole (one device sync at its end);
   mean(stochastic) / mean(constant) beside the fraction of blocks that ran.
   Goal: at most that fraction + 0.03.

On the GPU, peak memory is the CuPy pool's total after ``free_all_blocks()``
and one step (the pool keeps what a step needed), and PyTorch's
``max_memory_allocated()`` after ``reset_peak_memory_stats()``.

Every number comes from this one run: compare ratios, not absolute times
from different runs (machines are noisy). PyTorch is optional; without it the
PyTorch rows are skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np

import minisd
from minisd import SoftmaxCrossEntropy, backend
from minisd.fast import threads as parallel
from minisd.model import ResNet
from minisd.optim import SGD
from minisd.tracing import held_nbytes

HERE = Path(__file__).resolve().parent

# The targets (CPU, 2 cores): see README "Performance".
TARGET_VS_TORCH = 1.5       # minisd step / PyTorch's best step (ResNet-20)
TARGET_SD_RATIO = 0.80      # stochastic / constant step time (ResNet-110)
PLAIN_LOOP_SLACK = 0.03     # plain loop: stochastic / constant <= fraction of blocks run + this


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--depth", type=int, nargs="+", default=[20, 110], help="6N+2 depths (default: 20 110)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("--steps", type=int, default=7, help="timed steps per measurement (>= 5 recommended)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--plain-steps", type=int, default=None,
                   help="step pairs of the plain-loop ratio (default: --steps; 0 skips it)")
    p.add_argument("--p-last", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="minisd and PyTorch threads (default: minisd's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# minisd
# ---------------------------------------------------------------------------


class TimedStep:
    """A training step in three phases (forward with the loss, zero_grad and backward, optimizer update).

    Subclasses provide ``net`` (with ``set_gates``), ``forward``, ``backward``, ``update`` and ``sync``.
    """

    def timed_step(self, gates):
        """Seconds of (forward, backward, update) for one step with these gates."""
        self.net.set_gates(gates)
        times = []
        for phase in (self.forward, self.backward, self.update):
            self.sync()
            t0 = time.perf_counter()
            phase()
            self.sync()
            times.append(time.perf_counter() - t0)
        return times


class MinisdStep(TimedStep):
    """One training step of a minisd ResNet."""

    def __init__(self, depth, p_last, batch, device, seed):
        self.xp = backend.xp_for(device)
        self.net = ResNet(depth, 10, p_last=p_last, seed=seed).to(device)
        self.net.train()
        self.opt = SGD(self.net.parameters(), lr=0.01)  # small lr: weights stay sane for many steps
        self.loss_fn = SoftmaxCrossEntropy()
        rng = np.random.default_rng(seed)
        self.x = self.xp.asarray(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
        self.y = self.xp.asarray(rng.integers(0, 10, batch))

    def sync(self):
        backend.synchronize(self.xp)

    def forward(self):
        return self.loss_fn.forward(self.net.forward(self.x), self.y)

    def backward(self):
        self.net.zero_grad()
        self.net.backward(self.loss_fn.backward())

    def update(self):
        self.opt.step(inactive=self.net.inactive_parameter_names())

    def bytes_held_for_backward(self, gates):
        """Memory the layer caches hold for backward after the forward pass, each buffer once."""
        self.net.set_gates(gates)
        self.forward()
        held = held_nbytes(self.net.modules())
        self.backward()
        return held

    def step_flops(self, gates):
        """FLOPs of one forward + backward with these gates, from a trace."""
        self.net.set_gates(gates)
        with minisd.trace() as t:
            self.forward()
            self.backward()
        return sum(e.flops for e in t.events), t

    def plain_step(self, gates):
        """Seconds of one whole step with these gates, as a training loop runs it: no wait
        between the phases, one at the end (so the clock reads finished work)."""
        self.net.set_gates(gates)
        t0 = time.perf_counter()
        self.forward()
        self.backward()
        self.update()
        self.sync()
        return time.perf_counter() - t0

    def peak_memory(self, gates):
        """Peak bytes allocated during one step (NumPy: tracemalloc; CuPy: the pool's total)."""
        self.net.set_gates(gates)
        if self.xp is np:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            self.forward(); self.backward(); self.update()
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            return peak
        pool = self.xp.get_default_memory_pool()
        self.sync()
        pool.free_all_blocks()  # else the pool still holds what earlier, larger steps needed
        self.forward(); self.backward(); self.update()
        self.sync()
        return pool.total_bytes()


def trace_off_overhead_per_call(n=200_000):
    """Seconds that the @traced wrapper adds to one layer call when no trace is active."""
    from minisd.tracing import traced

    class Plain:
        def forward(self, x):
            return x

    class Wrapped:
        @traced
        def forward(self, x):
            return x

    def per_call(obj):
        f = obj.forward
        t0 = time.perf_counter()
        for _ in range(n):
            f(None)
        return (time.perf_counter() - t0) / n

    return max(0.0, min(per_call(Wrapped()) for _ in range(3)) - min(per_call(Plain()) for _ in range(3)))


def per_layer_type(trace):
    """{layer class: [forward s, backward s]} of a traced step."""
    out = defaultdict(lambda: [0.0, 0.0])
    for e in trace.events:
        out[e.kind][0 if e.phase == "forward" else 1] += e.seconds
    return out


# ---------------------------------------------------------------------------
# PyTorch (optional)
# ---------------------------------------------------------------------------


def load_torch(device="cpu"):
    """PyTorch and benchmarks/torch_resnet.py, or (None, None) when PyTorch cannot run on ``device``."""
    try:
        import torch
    except ImportError:
        return None, None
    if device == "gpu":
        if not torch.cuda.is_available():
            return None, None
        # fp32 against fp32: no TF32 in cuDNN's convolutions or in matrix products
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    spec = importlib.util.spec_from_file_location("torch_resnet", HERE / "torch_resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return torch, module


class TorchStep(TimedStep):
    """The same step in PyTorch eager mode (autograd, torch.optim.SGD)."""

    def __init__(self, torch, torch_resnet, depth, p_last, batch, device, seed, channels_last):
        self.torch = torch
        self.device = "cuda" if device == "gpu" else "cpu"
        torch.manual_seed(seed)
        self.net = torch_resnet.TorchResNet(depth, 10, p_last=p_last, channels_last=channels_last).to(self.device)
        self.net.train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True)
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)).to(self.device)
        self.y = torch.from_numpy(rng.integers(0, 10, batch)).to(self.device)
        self.loss = None

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def forward(self):
        self.loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)

    def backward(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss.backward()

    def update(self):
        self.opt.step()

    def peak_memory(self, gates):
        if self.device != "cuda":
            return None
        self.net.set_gates(gates)
        self.torch.cuda.reset_peak_memory_stats()
        self.forward(); self.backward(); self.update()
        self.sync()
        return self.torch.cuda.max_memory_allocated()


# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------


def measure(steps, all_open, draws, warmup):
    """Interleave everything: for each draw, each implementation runs a constant-depth
    step, then that draw. A machine that slows down for a while slows every column alike.

    steps: {name: TimedStep}. Returns {name: (constant, stochastic)}, each a list of
    [forward, backward, update] seconds.
    """
    for _ in range(warmup):
        for step in steps.values():
            step.timed_step(all_open)
            step.timed_step(draws[0])
    series = {name: ([], []) for name in steps}
    for gates in draws:
        for name, step in steps.items():
            series[name][0].append(step.timed_step(all_open))
            series[name][1].append(step.timed_step(gates))
    return series


def plain_loop_ratio(ms, pairs, warmup, seed):
    """mean(stochastic) / mean(constant) step time in a plain training loop, and the mean
    fraction of blocks run: gates re-sampled every step, a constant-depth step and a
    stochastic step interleaved, each timed whole (issue 11, item 7)."""
    rng = np.random.default_rng(seed)
    all_open = [True] * len(ms.net.blocks)
    for _ in range(warmup):
        ms.plain_step(all_open)
        ms.plain_step(ms.net.sample_gates(rng))
    constant, stochastic, ran = [], [], []
    for _ in range(pairs):
        constant.append(ms.plain_step(all_open))
        gates = ms.net.sample_gates(rng)
        ran.append(sum(gates) / len(gates))
        stochastic.append(ms.plain_step(gates))
    return statistics.fmean(stochastic) / statistics.fmean(constant), statistics.fmean(ran)


def summarize(series):
    """Medians of forward, backward, update and whole step; mean of the whole step."""
    fwd, bwd, upd = (statistics.median(s[i] for s in series) for i in range(3))
    whole = [sum(s) for s in series]
    return dict(forward=fwd, backward=bwd, update=upd, step=statistics.median(whole),
                step_mean=statistics.fmean(whole))


def fmt_ms(s):
    return "-" if s is None else f"{1e3 * s:8.1f}"


def fmt_mb(b):
    return "-" if b is None else f"{b / 2**20:7.1f}"


def print_table(head, rows):
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def run_depth(depth, args, device, torch, torch_resnet):
    print(f"\n=== ResNet-{depth}, batch {args.batch_size}, float32, {device} ===")
    ms = MinisdStep(depth, args.p_last, args.batch_size, device, args.seed)
    nb = len(ms.net.blocks)
    all_open = [True] * nb
    rng = np.random.default_rng(args.seed + 1000 * depth)
    draws = [ms.net.sample_gates(rng) for _ in range(args.steps)]
    blocks_run = [sum(g) for g in draws]
    print(f"{nb} blocks; stochastic depth p_L {args.p_last} linear: expected {ms.net.expected_blocks():.2f} "
          f"blocks per step; the {len(draws)} seeded draws run {blocks_run} (mean {np.mean(blocks_run):.2f})")

    # untimed measurements first: FLOPs and memory
    flops_full, _ = ms.step_flops(all_open)
    flop_ratio = statistics.fmean(ms.step_flops(g)[0] for g in draws) / flops_full
    held_full = ms.bytes_held_for_backward(all_open)
    held_ratio = statistics.fmean(ms.bytes_held_for_backward(g) for g in draws) / held_full
    block_ratio = float(np.mean(blocks_run)) / nb
    peak_full, peak_sd = ms.peak_memory(all_open), statistics.fmean(ms.peak_memory(g) for g in draws)

    steps = {"minisd": ms}
    if torch is not None:
        for name, cl in (("torch default", False), ("torch channels_last", True)):
            steps[name] = TorchStep(torch, torch_resnet, depth, args.p_last, args.batch_size, device, args.seed, cl)
    series = measure(steps, all_open, draws, args.warmup)
    peaks = {name: (ts.peak_memory(all_open),
                    None if ts.device == "cpu" else statistics.fmean(ts.peak_memory(g) for g in draws))
             for name, ts in steps.items() if name != "minisd"}
    peaks["minisd"] = (peak_full, peak_sd)
    results = {name: (summarize(c), summarize(s), *peaks[name]) for name, (c, s) in series.items()}
    # per layer type after the warm-up (a first step also pays for first-touch page faults)
    traces = [ms.step_flops(all_open)[1] for _ in range(3)]
    by_kind = [per_layer_type(t) for t in traces]
    kinds = {k: [statistics.median(b[k][i] for b in by_kind) for i in (0, 1)] for k in by_kind[0]}
    trace_full = traces[0]

    print(f"\nmedians of {args.steps} steps after {args.warmup} warm-up (ms); 'SD step' is the mean over the draws")
    rows = []
    for name, (cst, sd, pk, pk_sd) in results.items():
        rows.append([name, fmt_ms(cst["forward"]), fmt_ms(cst["backward"]), fmt_ms(cst["update"]),
                     fmt_ms(cst["step"]), fmt_ms(sd["step_mean"]), f"{sd['step_mean'] / cst['step_mean']:.3f}",
                     fmt_mb(pk), fmt_mb(pk_sd)])
    print_table(["", "forward", "backward", "optim", "step", "SD step", "SD/const", "peak MB", "SD peak MB"], rows)

    print(f"\nstochastic / constant depth on the same draws: FLOPs {flop_ratio:.3f}, blocks run {block_ratio:.3f}, "
          f"bytes held for backward {held_ratio:.3f} ({held_full / 2**20:.1f} MB at constant depth)")

    total = sum(f + b for f, b in kinds.values())
    print("\nminisd time per layer type, medians of 3 traced constant-depth steps (forward + backward, no optimizer):")
    print_table(["layer", "forward ms", "backward ms", "share"],
                [[k, fmt_ms(f), fmt_ms(b), f"{100 * (f + b) / total:5.1f}%"]
                 for k, (f, b) in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))])

    calls = len(trace_full.events)
    overhead = calls * trace_off_overhead_per_call()
    print(f"\ntrace off: {calls} layer calls per step x the wrapper's cost = {1e6 * overhead:.0f} us, "
          f"{100 * overhead / results['minisd'][0]['step']:.3f}% of a step")

    m_const, m_sd = results["minisd"][0], results["minisd"][1]
    sd_ratio = m_sd["step_mean"] / m_const["step_mean"]
    print()
    if torch is not None:
        best_name = min((n for n in results if n.startswith("torch")), key=lambda n: results[n][0]["step"])
        best = results[best_name][0]["step"]
        vs = m_const["step"] / best
        print(f"minisd step / PyTorch's best ({best_name}): {vs:.2f}x"
              + (f"   target <= {TARGET_VS_TORCH}x: {'met' if vs <= TARGET_VS_TORCH else 'NOT met'}"
                 if device == "cpu" and depth == 20 else ""))
        for n in results:
            if n.startswith("torch"):
                print(f"{n}: stochastic / constant step time {results[n][1]['step_mean'] / results[n][0]['step_mean']:.3f}")
    print(f"minisd: stochastic / constant step time {sd_ratio:.3f} (FLOP ratio {flop_ratio:.3f})"
          + (f"   target <= {TARGET_SD_RATIO}: {'met' if sd_ratio <= TARGET_SD_RATIO else 'NOT met'}"
             if depth == 110 else ""))
    pairs = args.steps if args.plain_steps is None else args.plain_steps
    if pairs > 0:
        ratio, ran = plain_loop_ratio(ms, pairs, args.warmup, args.seed + 7 * depth)
        goal = ran + PLAIN_LOOP_SLACK
        print(f"minisd plain loop ({pairs} step pairs, gates re-sampled every step): stochastic / constant "
              f"{ratio:.3f}, blocks run {ran:.3f} of all   goal <= {goal:.3f}: {'met' if ratio <= goal else 'NOT met'}")


def main(argv=None):
    args = parse_args(argv)
    parallel.tune_process()  # a benchmark owns its process: BLAS on one thread, freed memory kept
    device = backend.resolve_device(args.device)
    if args.threads:
        parallel.set_num_threads(args.threads)
    threads = parallel.get_num_threads()
    torch, torch_resnet = (None, None) if args.no_torch else load_torch(device)
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"minisd {minisd.__version__}, NumPy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()} with {os.cpu_count()} CPUs; minisd threads {threads}")
    if device == "gpu":
        cp = backend.xp_for("gpu")
        print(f"CuPy {cp.__version__}, {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    if torch is not None:
        print(f"PyTorch {torch.__version__} (threads {torch.get_num_threads()})"
              + (f", {torch.cuda.get_device_name(0)}, TF32 off (cudnn {torch.backends.cudnn.allow_tf32}, "
                 f"matmul {torch.backends.cuda.matmul.allow_tf32})" if device == "gpu" else ""))
    else:
        print("PyTorch: " + ("skipped (--no-torch)" if args.no_torch else
                             "no CUDA device for PyTorch" if device == "gpu" and importlib.util.find_spec("torch")
                             else "not importable") + ", its rows are skipped")
    for depth in args.depth:
        run_depth(depth, args, device, torch, torch_resnet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
