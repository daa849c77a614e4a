"""Helpers shared by the lessons: command line, output folder, device, timing, tables, data.

Nothing here teaches anything; it keeps each lesson about its subject. Every
lesson starts with

    L = setup(__doc__)            # parses --quick, --device, --out, --seed, --data-dir
    xp = L.xp                     # numpy on the CPU, cupy on the GPU

and ends with ``L.try_this()``, which prints the "Try this" section of the
lesson's own docstring (so the exercises are written once).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import minisd
from minisd import backend
from minisd.step import train_step

LESSONS_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = LESSONS_DIR / "out"


class Lesson:
    """What a lesson needs to know about how it was started."""

    def __init__(self, doc, args, device, name):
        self.doc, self.args, self.device, self.name = doc or "", args, device, name
        self.quick = args.quick
        self.seed = args.seed
        self.xp = backend.xp_for(device)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t_start = time.perf_counter()

    # -- arrays ------------------------------------------------------------------

    def to_device(self, a):
        return backend.to_device(a, self.device)

    def sync(self):
        """Wait for the GPU (no-op on the CPU): call before reading a clock."""
        backend.synchronize(self.xp)

    # -- timing (the method: lesson 14, the speed appendix) ---------------------------

    def clock(self, fn):
        """Wall time of one call of ``fn()``, in seconds; waits for the GPU before reading the
        clock, both times (a GPU runs asynchronously: without it we would time the launch)."""
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def interleaved(self, settings, rounds):
        """Time every setting once per round, the order reversed every second round, so that a
        slow spell of the machine hits all settings alike. ``settings``: {name: fn}.
        Returns {name: [seconds per round]}."""
        names = list(settings)
        times = {n: [] for n in names}
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                times[n].append(self.clock(settings[n]))
        return times

    # -- output ----------------------------------------------------------------------

    def path(self, filename):
        """A file in the output folder, named after the lesson: out/05_the_gate_<filename>."""
        return self.out / f"{self.name}_{filename}"

    def save_figure(self, fig, filename):
        p = self.path(filename)
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        import matplotlib.pyplot as plt
        plt.close(fig)
        print(f"[figure saved: {p}]")
        if in_notebook():  # in a notebook: show it below the cell too
            from IPython.display import Image, display
            display(Image(filename=str(p)))
        return p

    def report_findings(self, mechanics=(), claims=()):
        """Print the lesson's two findings tables and keep them for the record :meth:`try_this` writes.

        ``mechanics``: what the code must do, checked on the numbers just measured: rows
        ``(claim, number, criterion, supported)``. A "no" here is a bug in minisd.
        ``claims``: the paper's claims (and predictions the lesson derives) tried at this lesson's
        scale: rows ``(claim, number, criterion, supported, takeaway)``; ``takeaway`` is one line
        on what the result teaches, required when the claim is not supported (a "no" at laptop
        scale still teaches something: say what), left out of the record when it is.
        ``supported``: True/False or a word such as "yes", "no", "not shown".
        """
        def word(v):  # NumPy's bool_ too: a comparison of arrays is not a Python bool
            return v if isinstance(v, str) else "yes" if v else "no"
        self.mechanics = [[str(c), str(n), str(k), word(ok)] for c, n, k, ok in mechanics]
        # a takeaway says what a "no" or "not shown" teaches: it is kept for those rows only
        self.claims = [[str(c), str(n), str(k), word(ok), str(t or "") if word(ok) != "yes" else ""]
                       for c, n, k, ok, t in claims]
        missing = [c for c, _, _, ok, t in self.claims if ok != "yes" and not t]
        if missing:
            raise ValueError(f"a claim not supported needs its takeaway: {missing}")
        if self.mechanics:
            print("\nWhat the code does (mechanics, checked):")
            table(list(FINDINGS_HEADERS), self.mechanics)
        if self.claims:
            print("\nClaims tried at this scale (the paper's, and predictions derived in the lesson):")
            table(list(FINDINGS_HEADERS), [row[:4] for row in self.claims])
            for claim, _, _, ok, takeaway in self.claims:
                if takeaway:  # what a "no" or "not shown" teaches
                    print(textwrap.fill(f"* {claim} ({ok}): {takeaway}", width=100,
                                        initial_indent="  ", subsequent_indent="    "))

    def try_this(self):
        """Print the 'Try this' section of the lesson's docstring and the run time, and write
        the lesson's record, ``<out>/<name>.json`` (see :func:`write_record`)."""
        text = self.doc.split("Try this", 1)
        print("\n" + "=" * 72)
        print("Try this" + (text[1].rstrip() if len(text) > 1 else ":\n  (no exercises)"))
        print("=" * 72)
        seconds = time.perf_counter() - self.t_start
        path = write_record(self, seconds)
        print(f"(lesson ran in {seconds:.1f} s; outputs in {self.out}; record {path.name})")


FINDINGS_HEADERS = ("claim", "number", "criterion", "supported?")


def in_notebook():
    """True when this code runs in a Jupyter kernel (IPython's shell has a kernel), not when a
    module has merely imported ipykernel (a test runner may have)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def write_record(L: Lesson, seconds):
    """What one run of a lesson found, as JSON in ``<out>/<name>.json``: the lesson's name and
    title, the mode (default or quick), device, wall-clock seconds, the two findings tables
    (``mechanics``: 4-column rows; ``claims``: 5-column rows, the last the takeaway), the date,
    the machine and its load average at the end (other work on the machine slows a run). ``python lessons/tables.py`` builds the READMEs' lesson tables from these."""
    import datetime
    import json
    import platform
    record = dict(name=L.name, title=L.doc.strip().splitlines()[0] if L.doc.strip() else L.name,
                  mode="quick" if L.quick else "default", device=L.device,
                  reference=bool(getattr(L.args, "reference", False)), argv=sys.argv[1:],
                  seconds=round(seconds, 1), mechanics=getattr(L, "mechanics", []),
                  claims=getattr(L, "claims", []),
                  date=datetime.date.today().isoformat(), load=round(os.getloadavg()[0], 1),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}")
    path = L.out / f"{L.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def plt():
    """matplotlib.pyplot with the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def setup(doc, extra_args=None, argv=None) -> Lesson:
    """Parse the common flags and return a :class:`Lesson`.

    ``--device gpu`` without CuPy or a GPU stops here with the backend's message.
    In a notebook (an ipykernel kernel, whose own argv is not the lesson's flags; see
    lessons/make_notebooks.py): the flags come from $MINISD_LESSON_ARGS (e.g. "--quick"),
    the lesson's name from $MINISD_LESSON_NAME and its docstring from its file (IPython's
    ``__doc__`` is not the lesson's); ``--device`` defaults to ``auto`` (the GPU when CuPy
    finds one) and ``--out`` is written relative to the notebook's folder. Run as a script,
    the process is the lesson's own: minisd tunes BLAS and the allocator for good
    (:func:`minisd.fast.threads.tune_process`), which it never does in someone's kernel.
    """
    import shlex
    from minisd.fast import threads

    in_kernel = in_notebook() and argv is None
    if in_kernel:
        name = os.environ.get("MINISD_LESSON_NAME", "lesson")
        argv = shlex.split(os.environ.get("MINISD_LESSON_ARGS", ""))
        script = LESSONS_DIR / f"{name}.py"
        if script.exists():
            import ast
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or doc
    else:
        name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0].endswith(".py") else "lesson"
        threads.tune_process()
    first_line = (doc or "").strip().splitlines()[0] if doc else ""
    p = argparse.ArgumentParser(description=first_line, epilog="See the docstring at the top of the file.")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a few seconds (what the test suite runs)")
    p.add_argument("--device", choices=backend.DEVICES, default="cpu",
                   help="cpu (default), gpu (needs CuPy and a CUDA device) or auto")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="folder for figures and files (default: lessons/out, ignored by git)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--reference", action="store_true",
                   help="run every layer on the readable code of minisd/functional.py only "
                        "(minisd.reference()), never the CPU fast path: slower, the same numbers")
    if extra_args is not None:
        extra_args(p)
    if in_kernel:  # the GPU when there is one; paths that read the same on any machine
        p.set_defaults(device="auto", out=os.path.relpath(DEFAULT_OUT))
    args = p.parse_args(argv)
    try:
        device = backend.resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    L = Lesson(doc, args, device, name)
    mode = "quick" if args.quick else "default"
    if args.reference:  # for the rest of the lesson (this thread): kept open, closed at exit
        L.reference_mode = contextlib.ExitStack()
        L.reference_mode.enter_context(minisd.reference())
    code = ("the readable code only (--reference)" if args.reference else
            "the CPU fast path (minisd/fast/cpu.py; --reference for the readable code)" if device == "cpu" else
            "the GPU fast path (minisd/fast/gpu.py; --reference for the readable code)")
    print(f"{name}: device {device}, {mode} sizes, {code}, outputs in {L.out}")
    return L


def add_data_dir(p):
    """Add --data-dir and --fake-data (for the lessons that read CIFAR-10)."""
    p.add_argument("--data-dir", default=None,
                   help="folder holding CIFAR-10 (cifar-10-batches-py/ or the official tarball); default: "
                        "$MINISD_DATA if set, else ./data; with no CIFAR-10 there, the real sample shipped "
                        "with minisd (2,500 training, 1,000 test images)")
    p.add_argument("--fake-data", action="store_true",
                   help="train on GENERATED stand-in images instead (for tests: they say nothing about CIFAR-10)")


# ---------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------


def spread(seconds):
    """'min-max' of a list of seconds, in ms."""
    return f"{1e3 * min(seconds):.0f}-{1e3 * max(seconds):.0f}"


def paired(a, b):
    """Per-round ratios ``a[r] / b[r]`` of two settings timed in the same rounds, and their
    text: 'median% (min-max%)'. The range says whether a difference is larger than the noise."""
    ratios = [x / y for x, y in zip(a, b)]
    return ratios, f"{100 * np.median(ratios):.0f}% ({100 * min(ratios):.0f}-{100 * max(ratios):.0f}%)"


def section(title):
    """A visible heading in the printed output."""
    print(f"\n--- {title} " + "-" * max(0, 66 - len(title)))


def table(headers, rows, formats=None):
    """Print ``rows`` (lists) under ``headers`` as an aligned text table.

    ``formats``: one format spec per column ("{:.3f}", "{:,}", ...); default str().
    """
    formats = formats or ["{}"] * len(headers)
    cells = [[fmt.format(v) if not isinstance(v, str) else v for fmt, v in zip(formats, r)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    text = [bool(rows) and all(isinstance(r[i], str) for r in rows) for i in range(len(headers))]
    align = lambda v, w, left: v.ljust(w) if left else v.rjust(w)
    print("  ".join(align(h, w, t) for h, w, t in zip(headers, widths, text)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(align(v, w, t) for v, w, t in zip(c, widths, text)).rstrip())


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


FULL_SET_HINT = ("for the full set (50,000 images, 163 MB): python -c \"from minisd.data.files import download; "
                 "download('cifar10', 'data')\" from the folder you run the lessons in, or --data-dir DIR")


def load_cifar10(L: Lesson, n_train=None, n_test=None):
    """CIFAR-10 as uint8 (N, 3, 32, 32) images and int64 labels: the first ``n_train``/``n_test``.

    Where from, by minisd's one rule (:func:`minisd.data.default_data_dir`): ``--data-dir`` if
    given, else ``$MINISD_DATA``, else ``./data``; when that folder holds no CIFAR-10 (and
    was not named), the real sample shipped with minisd (2,500 training and 1,000 test images),
    with one line saying so. Generated stand-in images only with ``--fake-data``. A lesson that
    asks for more images than the source holds gets all there are, and one line says so.
    Returns (x_train, y_train, x_test, y_test, source) as NumPy arrays; ``source`` names the data
    in a few words: "real CIFAR-10", "real CIFAR-10 (sample)" or "GENERATED stand-in".
    """
    from minisd import data
    from minisd.data import fake as fake_data

    given = getattr(L.args, "data_dir", None)
    root = data.default_data_dir(given)
    shown = root if root.is_absolute() else f"./{root}"
    if getattr(L.args, "fake_data", False):
        with tempfile.TemporaryDirectory(prefix="minisd-fake-cifar10-") as tmp:
            per_batch = max(100, -(-(n_train or 500) // 5))
            fake_data.write_fake_cifar10(tmp, n_per_batch=per_batch, seed=L.seed, n_test=max(100, n_test or 500))
            x_train, y_train, x_test, y_test = data.load_cifar10(tmp)
        source, where = "GENERATED stand-in", "--fake-data: numbers on them say nothing about CIFAR-10"
    else:
        try:
            x_train, y_train, x_test, y_test = data.load_cifar10(root)
            source, where = "real CIFAR-10", f"from {shown}"  # the full set or a copy
        except data.DataNotFoundError:
            if given is not None or os.environ.get("MINISD_DATA"):  # a folder the learner named: say so
                sys.exit(f"error: no CIFAR-10 in {shown} ({'--data-dir' if given is not None else '$MINISD_DATA'}); "
                         f"leave it out to use the sample shipped with minisd")
            x_train, y_train, x_test, y_test, _ = data.load_dataset("cifar10-sample")
            source, where = "real CIFAR-10 (sample)", "shipped with minisd"
            print(f"data: no CIFAR-10 in {shown}: using the real sample shipped with minisd "
                  f"({len(y_train):,} training, {len(y_test):,} test images); {FULL_SET_HINT}")
        except data.DataError as e:
            sys.exit(f"error: {e}")
    for what, n, have in (("training", n_train, len(y_train)), ("test", n_test, len(y_test))):
        if n is not None and n > have:
            holder = "the sample" if source.endswith("(sample)") else shown
            print(f"data: this lesson asks for {n:,} {what} images; {holder} holds {have:,}: using "
                  f"those" + (f" ({FULL_SET_HINT})" if source.endswith("(sample)") else ""))
    if n_train is not None:
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    if n_test is not None:
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    print(f"data: {source}, {where}; {len(y_train)} training and {len(y_test)} test images")
    return x_train, y_train, x_test, y_test, source


# ---------------------------------------------------------------------------
# training (lessons 7, 8, 9 and 11)
# ---------------------------------------------------------------------------


def train_epoch(net, opt, x_uint8, y, normalizer, rng, batch_size, augment=True, on_step=None):
    """One epoch of the paper's training loop: shuffle, then ``minisd.step.train_step`` per mini-batch.

    The step is the one ``python -m minisd.train`` runs (normalise, augment, draw the gates,
    forward, loss, backward, SGD update); read it in minisd/step.py.
    x_uint8 (N, 3, 32, 32) and y (N,) on the network's device; the last partial batch is dropped.
    ``on_step(net)`` is called after each backward pass, before the SGD update (lesson 8 reads
    the gradients there). Returns a dict: loss, error (on the augmented training batches),
    seconds, blocks (mean number of blocks that ran per step).
    A loss that is not finite (nan, inf) stops the lesson with one line, as minisd.train does.
    """
    xp = backend.get_xp(x_uint8)
    perm = rng.permutation(len(y))                  # a new order of the images every epoch
    steps = len(y) // batch_size
    total_loss, wrong, blocks = 0.0, 0, 0
    backend.synchronize(xp)
    t0 = time.perf_counter()
    for s in range(steps):
        idx = xp.asarray(perm[s * batch_size:(s + 1) * batch_size])
        loss, step_wrong, step_blocks = train_step(net, opt, x_uint8[idx], y[idx], normalizer, rng,
                                                   augment=augment, after_backward=on_step)
        loss = float(loss)                          # a GPU run waits here for the step
        if not math.isfinite(loss):                 # diverged: stop, as minisd.train does
            raise SystemExit(f"error: training loss became {loss} at step {s + 1} of {steps}; "
                             "stopped. Try a lower learning rate (or lr_at_epoch(..., warmup_epochs=1)).")
        total_loss += loss
        wrong += int(step_wrong)
        blocks += step_blocks
    backend.synchronize(xp)
    return dict(loss=total_loss / steps, error=wrong / (steps * batch_size),
                seconds=time.perf_counter() - t0, blocks=blocks / steps)
