"""The checking machinery shared by the exercises. Nothing to learn here: read an exercise instead.

An exercise file holds stub functions and, below them, two lines that fetch its cases and run
them. The cases live apart, in ``_cases/NN_name.py``, because they hold what a wrong answer
looks like and the hints: an exercise (and its notebook) must not show them before they are
asked for. A cases module reads:

    cases = Cases("relu_forward", "relu_backward")     # the functions the learner writes

    @cases.case("a random input", hints=["the first nudge", "a bigger one", ...])
    def _(impl, check):
        x, dout = check.rng.standard_normal((2, 3, 4, 4)), ...  # each case has its own seeded rng
        out, cache = impl.relu_forward(x)               # impl: the learner's functions
        check.close("out", out, want)                   # one comparison, recorded
        check.close("dx", impl.relu_backward(dout, cache), check.numgrad(f, x, dout))

and the exercise file ends with

    cases = cases_for(__file__)
    if __name__ == "__main__":
        cases.main(globals())

``python NN_name.py`` runs every case on the functions written in the exercise file itself and
prints one line per case: "ok", "WRONG", "not written yet" (a stub raised NotImplementedError)
or "ERROR" (the code raised something else). Under the FIRST case that is not ok it prints what
is wrong (each comparison, and the mistake it recognises, in words: a missing term, a factor
such as 1.429 = 1/0.7, a transpose); later cases often fail for the same reason, so their
details are not shown (``-v`` shows every comparison). No hint is printed unless asked:
``python NN_name.py --hint`` shows the first hint for the first case that fails, ``--hint 2``
the second, and so on, each a bigger step towards the answer. ``--solution`` runs the same
cases on the same names taken from ``lessons/solutions/NN_name.py``. The exit status is 0 only
when every case is ok.

Gradients are compared with ``minisd.relative_error`` against ``minisd.numerical_gradient``
(central differences) in float64, where the two agree to ~1e-8 for correct code.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import minisd

EXERCISES = Path(__file__).resolve().parent
CASES = EXERCISES / "_cases"     # one module per exercise, same name: its cases, mistakes and hints
SOLUTIONS = EXERCISES.parent / "solutions"
NOT_WRITTEN = "not written yet"

GRAD_TOL = 1e-6      # analytic vs central differences in float64: ~1e-8 when right
EXACT_TOL = 1e-10    # the same quantity computed two ways in float64 (forward vs minisd)


class Failed(Exception):
    """Stops a case early when a later check would make no sense (e.g. a wrong shape)."""


class Check:
    """Collects the comparisons of one case: each adds a line to ``lines``; ``ok`` is False once one fails."""

    def __init__(self, seed=0):
        self.lines, self.ok = [], True
        self.rng = np.random.default_rng(seed)  # each case draws its own inputs: the same every run

    def _record(self, ok, text):
        self.lines.append(("ok   " if ok else "WRONG") + " " + text)
        self.ok = self.ok and ok
        return ok

    def close(self, what, got, want, tol=GRAD_TOL, mistakes=None):
        """``got`` equals ``want`` to relative error ``tol`` (minisd.relative_error).

        ``mistakes``: {description: array} of what a common wrong answer would give; if
        ``got`` matches one of them, its description is printed. Returns True when it passes.
        """
        got_arr = np.asarray(got, dtype=np.float64) if got is not None else None
        want = np.asarray(want, dtype=np.float64)
        if got_arr is None or got_arr.shape != want.shape:
            shape = "None" if got_arr is None else str(got_arr.shape)
            turned = got_arr is not None and got_arr.ndim > 1 and got_arr.shape == want.shape[::-1]
            return self._record(False, f"{what}: shape {shape}, should be {want.shape}"
                                + (" (yours is transposed)" if turned else ""))
        if not np.all(np.isfinite(got_arr)):
            return self._record(False, f"{what}: contains nan or inf")
        err = minisd.relative_error(got_arr, want)
        if err <= tol:
            return self._record(True, f"{what}: relative error {err:.1e} (< {tol:.0e})")
        text = f"{what}: relative error {err:.1e} (should be < {tol:.0e})"
        for description, wrong in (mistakes or {}).items():
            wrong = np.asarray(wrong, dtype=np.float64)
            if wrong.shape == want.shape and minisd.relative_error(got_arr, wrong) <= tol:
                text += f"\n        it equals {description}"
                break
        else:
            text += _diagnose(got_arr, want)
        return self._record(False, text)

    def exact(self, what, got, want):
        """``got`` equals ``want`` exactly (same shape, every entry): for "exactly zero" and counts."""
        got_arr, want_arr = np.asarray(got), np.asarray(want)
        ok = got_arr.shape == want_arr.shape and bool(np.all(got_arr == want_arr))
        if ok:
            return self._record(True, f"{what}: exactly as it must be")
        if got_arr.shape != want_arr.shape:
            return self._record(False, f"{what}: shape {got_arr.shape}, should be {want_arr.shape}")
        if got_arr.size <= 4:
            return self._record(False, f"{what}: {got_arr.tolist()}, should be {want_arr.tolist()}")
        bad = int(np.sum(got_arr != want_arr))
        return self._record(False, f"{what}: {bad} of {got_arr.size} entries differ (largest |difference| "
                                   f"{float(np.max(np.abs(got_arr.astype(float) - want_arr.astype(float)))):.2e})")

    def small(self, what, got, atol, detail=""):
        """Every entry of ``got`` is at most ``atol`` in size (for what must be zero up to rounding).

        ``detail``: a line printed when it fails (what a nonzero value means)."""
        worst = float(np.max(np.abs(np.asarray(got, dtype=np.float64)))) if np.size(got) else 0.0
        ok = worst <= atol
        return self._record(ok, f"{what}: largest |entry| {worst:.1e} ({'<' if ok else 'should be <'} {atol:.0e})"
                                + ("" if ok or not detail else f"\n        {detail}"))

    def true(self, what, condition, detail=""):
        """A yes/no property (e.g. "the input was not modified"); ``detail`` is printed when it fails."""
        return self._record(bool(condition), what + ("" if condition else f": no. {detail}".rstrip(": .")))

    def shape(self, what, got, want_shape):
        """``got`` has shape ``want_shape``; stops the case when not (later checks would be noise)."""
        got_shape = tuple(np.shape(got)) if got is not None else None
        if got_shape != tuple(want_shape):
            self._record(False, f"{what}: shape {got_shape}, should be {tuple(want_shape)}")
            raise Failed
        return True

    @staticmethod
    def numgrad(f, x, dout=None, h=1e-5):
        """Central differences of ``sum(f() * dout)`` with respect to ``x`` (float64, perturbed in place).

        ``h``: the step; smaller than the default where x varies on a scale not far above 1e-5.
        """
        if x.dtype != np.float64:
            raise TypeError("gradient checks run in float64")
        return minisd.numerical_gradient(f, x, dout, h=h)


def _diagnose(got, want):
    """One extra line for the common shapes of a wrong answer: zero, sign, a constant factor."""
    if not np.any(got):
        return "\n        yours is all zeros"
    if not np.any(want):
        return "\n        it should be all zeros"
    factor = float(np.sum(got * want) / np.sum(want * want))   # the best c in got ~ c * want
    if abs(factor - 1) > 1e-3 and minisd.relative_error(got, factor * want) < 1e-6:
        if abs(factor + 1) < 1e-6:
            return "\n        yours is the right answer with the sign flipped"
        inverse = 1 / factor   # 1.429 reads better as 1/0.7: a division where a product belongs, or the reverse
        as_ratio = (f" = 1/{round(inverse, 2):g}" if abs(inverse - round(inverse, 2)) < 1e-4 * abs(inverse)
                    and abs(factor - round(factor, 2)) > 1e-4 * abs(factor) else "")
        return f"\n        yours is {factor:.4g}{as_ratio} x the right answer (a factor missing or extra)"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and minisd.relative_error(got, want.T) < 1e-6:
        return "\n        yours is the transpose of the right answer"
    return ""


class Cases:
    """The cases of one exercise, and the ``main`` that runs them."""

    def __init__(self, *function_names):
        self.function_names = function_names
        self.cases = []

    def case(self, title, hints):
        """Decorator: ``fn(impl, check)`` is one case. ``hints``: a list of strings, from a nudge
        to (the last) nearly the answer, shown one at a time with ``--hint N`` when this case
        is the first that fails. A single string is one hint."""
        hints = [hints] if isinstance(hints, str) else list(hints)
        if not hints:
            raise ValueError(f"case {title!r} has no hint")

        def register(fn):
            self.cases.append((title, hints, fn))
            return fn
        return register

    def run(self, impl, echo=print, verbose=False):
        """Run every case on ``impl`` (an object with the functions as attributes).

        Prints one line per case, and under the first case that is not ok its comparisons and
        messages (``verbose``: those of every case). Returns a list of (title, status, lines)
        with status "ok", "wrong", "not written yet" or "error", and lines the comparisons and
        messages of the case (all of them, whether printed or not).
        """
        results, shown = [], False
        width = max(len(t) for t, _, _ in self.cases)
        for i, (title, _, fn) in enumerate(self.cases, 1):
            check, status, extra = Check(seed=i), "ok", []
            t0 = time.perf_counter()
            try:
                fn(impl, check)
            except Failed:
                pass
            except NotImplementedError as e:
                status = NOT_WRITTEN
                extra = [f"{_raised_in(e)} raises NotImplementedError: {str(e) or NOT_WRITTEN}"]
            except Exception as e:  # the learner's code crashed: say where
                status = "error"
                extra = [f"{type(e).__name__}: {e}", f"at {_raised_in(e, where=True)}"]
            if status == "ok" and not check.ok:
                status = "wrong"
            label = {"ok": "ok", "wrong": "WRONG", NOT_WRITTEN: NOT_WRITTEN, "error": "ERROR"}[status]
            first = status != "ok" and not shown
            echo(f"[{i}/{len(self.cases)}] {title.ljust(width)}  {label}  ({time.perf_counter() - t0:.2f} s)"
                 + ("   <- the first that fails" if first else ""))
            lines = check.lines + extra
            if first or verbose:
                for line in lines:
                    echo("      " + line.replace("\n", "\n      "))
            shown = shown or first
            results.append((title, status, lines))
        return results

    def first_failure(self, results):
        """The (number from 1, title) of the first case in ``results`` that is not ok, or None."""
        for i, (title, status, _) in enumerate(results, 1):
            if status != "ok":
                return i, title
        return None

    def hint(self, number, n):
        """Hint ``n`` (from 1) of case ``number`` (from 1), or None when it has no such hint."""
        hints = self.cases[number - 1][1]
        return hints[n - 1] if 1 <= n <= len(hints) else None

    def main(self, module_globals, argv=None):
        """The command line of an exercise: check the exercise file's functions, or --solution's;
        with --hint N, print hint N for the first case that fails instead of the checks."""
        exercise = Path(module_globals["__file__"]).resolve()
        p = argparse.ArgumentParser(description=(module_globals.get("__doc__") or "").strip().splitlines()[0])
        p.add_argument("--solution", action="store_true",
                       help=f"check the worked solution in lessons/solutions/{exercise.name} instead")
        p.add_argument("--hint", type=int, nargs="?", const=1, metavar="N",
                       help="print hint N (default 1) for the first case that fails, and nothing else")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="print every comparison of every case, not only those of the first that fails")
        args = p.parse_args(argv)
        if args.solution:
            source = SOLUTIONS / exercise.name
            impl = load_functions(source, self.function_names)
        else:
            source = exercise
            impl = SimpleNamespace(**{n: module_globals[n] for n in self.function_names})
        if args.hint is not None:
            return _finish(self._print_hint(impl, args.hint, exercise))
        print(f"{exercise.stem}: checking {', '.join(self.function_names)} from {_short(source)}")
        t0 = time.perf_counter()
        results = self.run(impl, verbose=args.verbose)
        counts = {s: sum(1 for _, st, _ in results if st == s) for s in ("ok", "wrong", NOT_WRITTEN, "error")}
        print(f"\n{counts['ok']} of {len(results)} cases pass"
              + "".join(f", {n} {s}" for s, n in counts.items() if s != "ok" and n)
              + f" ({time.perf_counter() - t0:.1f} s).")
        if counts["ok"] == len(results):
            print("All cases pass." + ("" if args.solution else
                                       f" Compare with lessons/solutions/{exercise.name}."))
        else:
            number, _ = self.first_failure(results)
            stubs, ask = (("the stubs above", "put --hint in the first cell's flags and run all: it") if _in_notebook()
                          else (f"the stubs in {_short(exercise)}", f"python {_short(exercise)} --hint"))
            if counts[NOT_WRITTEN]:
                print(f"Some functions are {NOT_WRITTEN}: fill in {stubs} "
                      f"(or run with --solution to see the worked solution pass).")
            print(f"Work on case {number} first: later cases often fail for the same reason. Stuck? "
                  f"{ask} shows a hint for it (--hint 2 the next; {len(self.cases[number - 1][1])} in all).")
        return _finish(0 if counts["ok"] == len(results) else 1)

    def _print_hint(self, impl, n, exercise):
        """Print hint ``n`` for the first case that fails on ``impl``; returns the exit status:
        0 when a hint (or "nothing fails") was printed, 2 when there is no hint ``n``."""
        results = self.run(impl, echo=lambda line: None)
        failure = self.first_failure(results)
        if failure is None:
            print(f"{exercise.stem}: every case passes: no hint needed.")
            return 0
        number, title = failure
        text, total = self.hint(number, n), len(self.cases[number - 1][1])
        if text is None:  # one line: there is nothing more to reveal
            print(f"No hint {n}: case {number} ({title}) has hints 1 to {total}; the worked solution is "
                  f"lessons/solutions/{exercise.name} (--solution checks it).")
            return 2
        print(f"Hint {n} of {total} for case {number}, the first that fails ({title}):")
        print("  " + text)
        if n < total:
            print(f"(--hint {n + 1} for the next one)")
        return 0


def load_functions(path, names):
    """The functions ``names`` of the Python file ``path``, as attributes of one object."""
    spec = importlib.util.spec_from_file_location(f"solution_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise SystemExit(f"{path} lacks {missing}")
    return SimpleNamespace(**{n: getattr(module, n) for n in names})


def cases_for(exercise):
    """The ``Cases`` of the exercise file ``exercise``, from ``_cases/`` beside it (same file name)."""
    path = CASES / Path(exercise).name
    spec = importlib.util.spec_from_file_location(f"cases_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cases


def load_exercise(path):
    """Import an exercise file (names starting with a digit cannot be imported by name)."""
    if str(EXERCISES) not in sys.path:
        sys.path.insert(0, str(EXERCISES))
    spec = importlib.util.spec_from_file_location(f"exercise_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raised_in(e, where=False):
    """The learner's function (and, with ``where``, the file and line) where ``e`` was raised: the
    last frame outside the checks (this module, _cases/) and outside numpy, minisd and Python's
    own modules - a notebook's cells included, whose file is the kernel's."""
    checks = (Path(__file__).resolve(), CASES)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not any(c == Path(f.filename).resolve() or c in Path(f.filename).resolve().parents for c in checks)]
    libraries = (Path(np.__file__).resolve().parent, Path(minisd.__file__).resolve().parent,
                 Path(traceback.__file__).resolve().parent)   # numpy, minisd, the standard library
    ours = [f for f in frames if not any(lib in Path(f.filename).resolve().parents for lib in libraries)]
    if not frames:
        return "?"
    f = (ours or frames)[-1]
    return f"{_short(f.filename)}:{f.lineno} ({f.name}): {f.line}" if where else f.name


def _in_notebook():
    """True in a Jupyter kernel (IPython's shell has a kernel), not when ipykernel is merely imported."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _finish(status):
    """Exit with ``status`` (0: all pass) from the command line; in a notebook kernel the checks
    report and return it, so the notebook runs on."""
    if _in_notebook():
        return status
    sys.exit(status)


def _short(path):
    """A path relative to the current folder when it is below it, else to the repository
    (a notebook runs in lessons/notebooks/exercises/: no machine's folders in its output)."""
    path = Path(path).resolve()
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)
