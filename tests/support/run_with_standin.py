"""Run a program with the CuPy stand-in (tests/support/cupy_standin.py) installed as minisd's CuPy.

    python tests/support/run_with_standin.py -m minisd.train --device gpu ...
    python tests/support/run_with_standin.py lessons/05_the_gate.py --quick --device gpu
    python tests/support/run_with_standin.py benchmarks/step_time.py --device gpu --depth 8 ...
    python tests/support/run_with_standin.py -c "import cupy; print(cupy.__version__)"

The target runs as ``python -m MODULE``, ``python -c CODE`` or ``python SCRIPT`` would run it (``runpy``,
``sys.argv`` and ``sys.path[0]`` set alike), with ``device="gpu"`` served by the
NumPy-backed stand-in. At exit one line of counts (launches, syncs, uploads) goes to
stderr; with ``CUPY_STANDIN_COUNTS=FILE`` they are also written to FILE as JSON,
sites included.
"""
import atexit
import json
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # tests/support -> the checkout


def _report():
    import cupy_standin
    c = cupy_standin.counts()
    print(f"[cupy stand-in] launches {c.launches}, syncs {c.syncs}, uploads {c.uploads}", file=sys.stderr)
    path = os.environ.get("CUPY_STANDIN_COUNTS")
    if path:
        with open(path, "w") as f:
            json.dump({k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(c).items()}, f, indent=1)


def main(argv):
    if not argv or argv[0] in ("-h", "--help") or (argv[0] in ("-m", "-c") and len(argv) < 2):
        print(__doc__)
        return 2
    sys.path.insert(0, HERE)  # cupy_standin
    if ROOT not in sys.path:  # this checkout's minisd, installed or not
        sys.path.insert(1, ROOT)
    import cupy_standin
    cupy_standin.install()
    atexit.register(_report)
    if argv[0] == "-c":
        sys.argv = ["-c"] + argv[2:]
        sys.path[0] = ""
        sys.path.insert(1, HERE)
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    elif argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        sys.path[0] = os.getcwd()  # as `python -m` does
        sys.path.insert(1, HERE)
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        path = os.path.abspath(argv[0])
        sys.argv = [argv[0]] + argv[1:]
        sys.path[0] = os.path.dirname(path)  # as `python SCRIPT` does (lessons import _common)
        sys.path.insert(1, HERE)
        runpy.run_path(path, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
