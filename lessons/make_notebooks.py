"""Turn every lesson and exercise into an executed Jupyter notebook in lessons/notebooks/.

    python lessons/make_notebooks.py               # all of them, each run at its default settings
    python lessons/make_notebooks.py --quick       # run with --quick instead (tiny sizes, minutes for all)
    python lessons/make_notebooks.py --only 05 12  # those whose names start with 05 or 12 (05b too)
    python lessons/make_notebooks.py --check       # are the notebooks' cells the scripts' cells? runs nothing

The .py files stay the one source. jupytext reads a lesson's ``# %%`` cells (``# %% [markdown]``
cells are prose), the module docstring becomes the first prose cell, and the generator puts one
code cell in front: the notebook's settings - the lesson's name and flags
($MINISD_LESSON_NAME, $MINISD_LESSON_ARGS: lessons/_common.py's setup() reads them in a kernel),
where the lessons' helpers are, and how to install minisd if it is missing. nbclient then runs
the notebook in a fresh kernel started in the notebook's folder, and the printed output and
the figures are stored in it. lessons/NN_name.py becomes lessons/notebooks/NN_name.ipynb.

Exercises (lessons/exercises/NN_name.py, no ``# %%`` cells) are cut into three code cells -
the stubs to write, the checks, the line that runs them - and become
lessons/notebooks/exercises/NN_name.ipynb, run on the stubs as they stand (the checks say
"not written yet"). In a kernel the checks return their status instead of exiting
(lessons/exercises/_check.py), so the notebook runs to its end.

Needs the notebook extra: ``pip install -e '.[notebooks]'`` (jupytext, nbclient, nbformat, ipykernel).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import os
import sys
import time
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
NOTEBOOKS = LESSONS / "notebooks"
INSTALL = ("minisd is not installed: run the README's first line in a clone of the repository "
           "(pip install -r requirements.txt && pip install -e .), then restart the kernel")


def scripts(only=()):
    """The lessons, then the exercises, whose file names start with one of ``only`` (all if empty)."""
    found = sorted(LESSONS.glob("[0-9][0-9]*_*.py")) + sorted((LESSONS / "exercises").glob("[0-9][0-9]_*.py"))
    return [s for s in found if not only or s.name.startswith(tuple(only))]


def is_exercise(script):
    return script.parent.name == "exercises"


def notebook_path(script):
    """lessons/NN_name.py -> lessons/notebooks/NN_name.ipynb; exercises -> lessons/notebooks/exercises/."""
    return NOTEBOOKS / ("exercises" if is_exercise(script) else "") / f"{script.stem}.ipynb"


def settings_cell(script, flags):
    """The code of the first cell: what the notebook needs before the lesson's own first line."""
    rel = Path(os.path.relpath(script, notebook_path(script).parent)).as_posix()
    lines = [f"# This notebook is made from {script.relative_to(ROOT).as_posix()} by lessons/make_notebooks.py: "
             "edit the .py, not this.",
             "import os, sys",
             ""]
    if is_exercise(script):  # the exercise's checks read their command line and file, as a script's
        lines += ["import shlex",
                  f"__file__ = os.path.abspath({rel!r})  # the checks find the solution from here",
                  f"sys.argv = [__file__, *shlex.split({flags!r})]  # the checks' flags: --hint, --solution, -v",
                  "sys.path.insert(0, os.path.dirname(__file__))  # lessons/exercises/_check.py"]
    else:
        lines += [f"os.environ['MINISD_LESSON_NAME'] = {script.stem!r}  # names the lesson's figures and record",
                  f"os.environ['MINISD_LESSON_ARGS'] = {flags!r}  # its flags: '--quick' for tiny sizes, "
                  "'--device cpu'; --help lists them",
                  f"sys.path.insert(0, os.path.abspath({Path(rel).parent.as_posix()!r}))  # lessons/_common.py"]
    lines += ["try:",
              "    import minisd",
              "except ImportError:",
              f"    raise ImportError({INSTALL!r}) from None"]
    return "\n".join(lines)


def docstring_markdown(doc):
    """The module docstring as prose: its first line in bold, the rest as it is laid out in the file."""
    first, _, rest = doc.strip().partition("\n")
    return f"**{first.strip()}**" + (f"\n\n```text\n{rest.strip(chr(10))}\n```" if rest.strip() else "")


def cells_of(script, flags):
    """``[(cell_type, source)]`` of the notebook made from ``script`` (nothing executed). A lesson's
    markdown links to ``../docs/`` (right beside the .py) are written ``../../docs/`` (right from
    lessons/notebooks/)."""
    import jupytext

    text = script.read_text(encoding="utf-8")
    if "\n# %%" not in text:  # an exercise: cut before the checks' banner and before the line that runs them
        lines = text.splitlines()
        cut = [next(i for i, ln in enumerate(lines) if ln.startswith("# ----")),
               next(i for i, ln in enumerate(lines) if ln.startswith("if __name__ == "))]
        for i in reversed(cut):
            lines.insert(i, "# %%")
        text = "\n".join(lines) + "\n"
    nb = jupytext.reads(text, fmt="py:percent")
    module = ast.parse(script.read_text(encoding="utf-8"))
    doc = ast.get_docstring(module)
    out = [("code", settings_cell(script, flags))]
    for i, cell in enumerate(nb.cells):
        source = cell.source
        if i == 0 and doc is not None and cell.cell_type == "code":  # the docstring, then any code after it
            out.append(("markdown", docstring_markdown(doc)))
            source = "\n".join(source.splitlines()[module.body[0].end_lineno:]).strip("\n")
            if not source:
                continue
        if cell.cell_type == "markdown":
            source = source.replace("](../docs/", "](../../docs/")
        out.append((cell.cell_type, source))
    return out


def build(script, flags):
    """An nbformat notebook from ``script``, not executed; cell ids are their positions (stable diffs)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for i, (kind, source) in enumerate(cells_of(script, flags)):
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        cell.id = f"cell-{i}"
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["minisd"] = {"source": script.relative_to(ROOT).as_posix(), "flags": flags}
    return nb


def execute(nb, folder, timeout):
    """Run ``nb`` in a fresh kernel whose working folder is ``folder``; the outputs land in ``nb``."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def flags_for(script, quick):
    return "--quick" if quick and not is_exercise(script) else ""


def shown(path):
    """``path`` from the repository's root when it is inside it (as messages print it)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def differences(script):
    """What differs between the notebook of ``script`` and the script: a list of lines, empty when in sync."""
    import nbformat

    path = notebook_path(script)
    if not path.exists():
        return [f"{shown(path)}: missing"]
    nb = nbformat.read(path, as_version=4)
    flags = nb.metadata.get("minisd", {}).get("flags", "")
    want = cells_of(script, flags)
    have = [(c.cell_type, c.source) for c in nb.cells]
    if want == have:
        return []
    first = next((i for i, (w, h) in enumerate(zip(want, have)) if w != h), min(len(want), len(have)))
    return [f"{shown(path)}: cell {first} differs from {shown(script)} "
            f"({len(have)} cells, the script makes {len(want)})"]


def strays():
    """Notebooks whose script is gone (a lesson renamed or removed)."""
    made = {notebook_path(s) for s in scripts()}
    return [p for p in sorted(NOTEBOOKS.rglob("*.ipynb")) if p not in made and ".ipynb_checkpoints" not in p.parts]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", default=(), metavar="NN", help="only the files whose names start so")
    p.add_argument("--quick", action="store_true", help="run the lessons with --quick (the exercises as always)")
    p.add_argument("--check", action="store_true",
                   help="compare each notebook's cells with its script's, run nothing; exit 1 if any differ")
    p.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    args = p.parse_args(argv)
    chosen = scripts(args.only)
    if not chosen:
        p.error(f"no lesson or exercise starts with {' or '.join(args.only)}")
    if args.check:
        problems = [line for s in chosen for line in differences(s)]
        problems += [] if args.only else [f"{shown(s)}: no script makes it" for s in strays()]
        print("\n".join(problems) if problems else f"{len(chosen)} notebooks match their scripts")
        if problems:
            print("regenerate with: python lessons/make_notebooks.py [--only NN ...]")
        return 1 if problems else 0

    import nbformat
    from nbclient.exceptions import CellExecutionError

    failed, t_all = [], time.perf_counter()
    for script in chosen:
        path = notebook_path(script)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = flags_for(script, args.quick)
        nb = build(script, flags)
        t0 = time.perf_counter()
        try:
            execute(nb, path.parent, args.timeout)
        except CellExecutionError as e:  # keep the old notebook; say which cell failed
            failed.append(script.name)
            print(f"FAILED {shown(script)}: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
            continue
        seconds = time.perf_counter() - t0
        nb.metadata["minisd"].update(executed=datetime.date.today().isoformat(), seconds=round(seconds, 1))
        nbformat.write(nb, path)
        print(f"{shown(path)}: {len(nb.cells)} cells, ran in {seconds:.0f} s"
              + (f" ({flags})" if flags else ""), flush=True)
    print(f"{len(chosen) - len(failed)} of {len(chosen)} notebooks written in {time.perf_counter() - t_all:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
