"""An execution trace: see which layers ran, what they cost and what they kept.

Usage::

    with minisd.trace() as t:
        logits = net.forward(x)
        loss = loss_fn.forward(logits, y)
        net.backward(loss_fn.backward())
    print(t.table(net))      # one row per residual block: ran or skipped
    t.events                 # every layer call, in order

Every leaf layer's ``forward`` and ``backward`` carry the ``@traced``
decorator. With no trace active it adds a global lookup, an ``if`` and, in a
forward, the input's shape to a call (well under a microsecond, against
milliseconds of array work); inside
``with trace()`` it times the call and records the layer's name, the phase, the
FLOPs and the bytes its cache holds.

Timing on the GPU: CuPy returns before its kernels have run, so a host clock
around a call would measure only the launches. Each call is bracketed by two
CUDA events instead, recorded into the stream without waiting; the trace reads
their elapsed times once, when it ends (one synchronisation for the whole
trace, none per call, so the traced step runs as queued as an untraced one).
An event pair measures the device's timeline between the two points: the
kernels of the call, plus any time the GPU sat idle waiting for the host to
launch them. The device is found from the call's arrays, else the layer's
parameters, else its cache (``SoftmaxCrossEntropy.backward()`` takes no array).

A dropped block's branch layers are simply never called, so they never appear
in ``events``: the table shows it.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from .backend import get_xp

_ACTIVE = None  # the Trace being recorded, or None


@dataclass
class Event:
    """One call of one layer."""
    layer: str          # dotted name, e.g. "blocks.3.branch.0"
    kind: str           # class name, e.g. "Conv2d"
    phase: str          # "forward", "backward", or "recompute" (a forward again, in the backward)
    seconds: float
    flops: int
    bytes_cached: int   # what the layer holds for backward after this call (parameters left out)
    buffers: tuple = ()  # (buffer id, bytes) of each array it holds: to count shared arrays once

    @property
    def block(self):
        """Index of the residual block this layer belongs to, or None."""
        parts = self.layer.split(".")
        if len(parts) > 1 and parts[0] == "blocks":
            return int(parts[1])
        return None


def cache_nbytes(cache, params=None) -> int:
    """Bytes of the arrays inside one layer cache (tuples are searched).

    ``params``: a layer's parameter dict; its arrays are left out (a cache may
    refer to the weights, which are held anyway and cost nothing extra).
    """
    return sum(a.nbytes for a in _cached_arrays(cache, params))


def held_nbytes(layers) -> int:
    """Memory that the caches of ``layers`` hold for backward, each buffer counted once.

    Layers share arrays: a ReLU keeps its output and the convolution after it
    keeps the same array as its input. Summing :func:`cache_nbytes` over
    layers would count it twice; this counts the memory really held
    (parameters left out).
    """
    return sum(dict(b for m in layers for b in _buffers(m.cache, m.params)).values())


def _cached_arrays(cache, params=None):
    if cache is None:
        return []
    if isinstance(cache, (tuple, list)):
        return [a for c in cache for a in _cached_arrays(c, params)]
    if not (hasattr(cache, "nbytes") and hasattr(cache, "shape")):
        return []
    if params and any(cache is p for p in params.values()):
        return []
    return [cache]


def _buffers(cache, params=None):
    """(id of the array that owns the memory, its bytes) for each array in a cache."""
    out = []
    for a in _cached_arrays(cache, params):
        owner = a
        while getattr(owner, "base", None) is not None and hasattr(owner.base, "nbytes"):
            owner = owner.base  # a view keeps its whole base array alive
        out.append((id(owner), int(owner.nbytes)))
    return out


def traced(method):
    """Decorate a leaf layer's ``forward`` or ``backward`` so a trace can see it.

    A ``forward`` also records the shape of its input as ``layer.in_shape``
    (what :meth:`minisd.layers.Module.flops` counts from), so the layer
    itself keeps no bookkeeping for the trace.
    """
    phase = method.__name__
    forward = phase == "forward"

    @functools.wraps(method)
    def wrapper(layer, *args):
        if forward:
            layer.in_shape = getattr(args[0], "shape", None)
        if _ACTIVE is None:  # the common case: no trace, almost no cost
            return method(layer, *args)
        return _ACTIVE.record(layer, phase, method, args)

    return wrapper


def call_as(layer, phase, fn, *args):
    """``fn(*args)``, seen by a trace as a call of ``layer`` that keeps nothing.

    For code that runs a layer's arithmetic with :mod:`minisd.functional` itself instead of
    calling the layer (the shared-storage dense block, :mod:`minisd.fast.dense`), so that a
    trace still sees every call, its time and its FLOPs. ``phase``: ``"forward"``,
    ``"backward"``, or ``"recompute"`` (a forward run again during the backward, to save
    memory: forward FLOPs, counted apart). ``args[0]`` of a forward or recompute is the
    layer's input, whose shape the FLOPs are counted from.
    """
    if phase not in ("forward", "backward", "recompute"):
        raise ValueError(f"phase must be 'forward', 'backward' or 'recompute', got {phase!r}")
    if phase != "backward":
        layer.in_shape = tuple(args[0].shape)
    if _ACTIVE is None:
        return fn(*args)
    return _ACTIVE.record(layer, phase, lambda _layer, *a: fn(*a), args, keeps_cache=False)


def _array_module(layer, args):
    """NumPy or CuPy for one layer call: from its arrays, else the layer's parameters, else its cache."""
    for group in (args, tuple(layer.params.values()), _cached_arrays(layer.cache)):
        arrays = [a for a in group if hasattr(a, "shape") and hasattr(a, "dtype")]
        if arrays:
            return get_xp(*arrays)
    return np


class Trace:
    """The events of a traced region; see :func:`trace`."""

    def __init__(self):
        self._events: list[Event] = []
        self._pending = []  # (event, start, end, xp): GPU calls whose times are not read yet

    @property
    def events(self) -> list[Event]:
        """Every layer call so far, in order (GPU times are read, with one wait, on first access)."""
        self._read_gpu_times()
        return self._events

    def record(self, layer, phase, method, args, keeps_cache=True):
        xp = _array_module(layer, args)
        if xp is np:
            t0 = time.perf_counter()
            out = method(layer, *args)
            seconds = time.perf_counter() - t0
        else:  # CUDA events, recorded without waiting; read in _read_gpu_times
            start, end = xp.cuda.Event(), xp.cuda.Event()
            start.record()
            out = method(layer, *args)
            end.record()
            seconds = 0.0
        flops = layer.flops() * (layer.backward_flops_factor if phase == "backward" else 1)
        cached = cache_nbytes(layer.cache, layer.params) if keeps_cache else 0
        held = tuple(_buffers(layer.cache, layer.params)) if keeps_cache and phase == "forward" else ()
        event = Event(layer.name or type(layer).__name__, type(layer).__name__, phase, seconds, int(flops),
                      cached, held)
        self._events.append(event)
        if xp is not np:
            self._pending.append((event, start, end, xp))
        return out

    def _read_gpu_times(self):
        """Fill in the seconds of the GPU calls: wait once for the last one, then read every pair."""
        if not self._pending:
            return
        self._pending[-1][2].synchronize()  # the stream runs in order: every earlier event is done too
        for event, start, end, xp in self._pending:
            event.seconds = xp.cuda.get_elapsed_time(start, end) / 1e3
        self._pending.clear()

    # -- summaries -----------------------------------------------------------

    def bytes_held(self, events=None) -> int:
        """Memory held for backward by the forward calls among ``events`` (default: all),
        each buffer counted once (see :func:`held_nbytes`)."""
        events = self.events if events is None else events
        return sum(dict(b for e in events if e.phase == "forward" for b in e.buffers).values())

    def block_summary(self, net):
        """Per residual block of ``net``: a dict with what ran and what it cost.

        Keys: block, survival_prob, gate, ran, forward_s, backward_s,
        flops_run, flops_skipped, bytes_cached. A block "ran" when any of its
        branch layers was called; ``flops_skipped`` is the forward + backward
        FLOPs its branch would have cost had it run.
        """
        rows = []
        for i, block in enumerate(net.blocks):
            ev = [e for e in self.events if e.block == i]
            branch = [e for e in ev if ".branch." in e.layer]
            ran = bool(branch)
            fwd = sum(e.seconds for e in ev if e.phase == "forward")
            bwd = sum(e.seconds for e in ev if e.phase == "backward")
            run = sum(e.flops for e in ev)
            skipped = 0
            if not ran and block.in_shape is not None:
                skipped = block.branch_step_flops(block.in_shape)
            cached = self.bytes_held(ev)
            rows.append(dict(block=i, survival_prob=block.survival_prob, gate=block.gate_label(),
                             ran=ran, forward_s=fwd, backward_s=bwd, flops_run=run,
                             flops_skipped=skipped, bytes_cached=cached))
        return rows

    def table(self, net) -> str:
        """The per-block table as text, with the step's totals at the bottom."""
        rows = self.block_summary(net)
        head = (f"{'block':>5} {'p_l':>5} {'gate':>12} {'fwd ms':>8} {'bwd ms':>8} "
                f"{'MFLOP run':>10} {'MFLOP skip':>10} {'KB cached':>10}")
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(f"{r['block']:>5} {r['survival_prob']:>5.2f} {r['gate']:>12} "
                         f"{1e3 * r['forward_s']:>8.2f} {1e3 * r['backward_s']:>8.2f} "
                         f"{r['flops_run'] / 1e6:>10.1f} {r['flops_skipped'] / 1e6:>10.1f} "
                         f"{r['bytes_cached'] / 1024:>10.0f}")
        run_all = sum(e.flops for e in self.events)
        skipped = sum(r["flops_skipped"] for r in rows)
        full = run_all + skipped
        n_ran = sum(r["ran"] for r in rows)
        secs = sum(e.seconds for e in self.events)
        lines.append("-" * len(head))
        lines.append(f"blocks run {n_ran}/{len(rows)}; layer calls {len(self.events)}; "
                     f"time in layers {1e3 * secs:.1f} ms; held for backward "
                     f"{self.bytes_held() / 2**20:.1f} MB")
        if full:
            lines.append(f"FLOPs executed {run_all / 1e9:.3f} G of {full / 1e9:.3f} G for the "
                         f"constant-depth network ({100 * run_all / full:.1f}%)")
        return "\n".join(lines)


class trace:
    """Context manager that records every layer call made inside it."""

    def __enter__(self) -> Trace:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a minisd trace is already active; traces do not nest")
        self._trace = _ACTIVE = Trace()
        return self._trace

    def __exit__(self, *exc):
        global _ACTIVE
        _ACTIVE = None
        if exc[0] is None:  # after an error, leave the times unread rather than mask it
            self._trace._read_gpu_times()
        return False
