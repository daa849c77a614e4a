"""lessons/make_notebooks.py: the notebooks in lessons/notebooks/ are the lessons' and exercises'
cells, and a notebook runs top to bottom in a kernel (lessons 00 and 05, exercise 01, quick mode).

Needs the notebook extra (``pip install -e '.[notebooks]'``, which CI installs); without it these skip.
"""
import sys
from pathlib import Path

import pytest

import importlib.util

for name in ("jupytext", "nbformat", "nbclient"):
    pytest.importorskip(name)
if importlib.util.find_spec("ipykernel") is None:  # found, not imported: this process is no kernel
    pytest.skip("ipykernel is not installed (pip install -e '.[notebooks]')", allow_module_level=True)

import nbformat  # noqa: E402

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
sys.path.insert(0, str(LESSONS))
import make_notebooks as mk  # noqa: E402

CELL_TIMEOUT = 600  # seconds; each of these notebooks runs in seconds in quick mode


def script(prefix, exercise=False):
    folder = LESSONS / "exercises" if exercise else LESSONS
    (found,) = folder.glob(f"{prefix}_*.py")
    return found


def test_every_lesson_and_exercise_has_a_notebook_with_its_cells():
    """Fails when a lesson changed and its notebook was not made again: python lessons/make_notebooks.py."""
    problems = [line for s in mk.scripts() for line in mk.differences(s)]
    problems += [f"{p}: no script makes it" for p in mk.strays()]
    assert not problems, "\n".join(problems + ["regenerate: python lessons/make_notebooks.py [--only NN]"])


def test_a_changed_or_missing_cell_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(mk, "NOTEBOOKS", tmp_path)
    lesson = script("00")
    assert mk.differences(lesson) == [f"{mk.notebook_path(lesson)}: missing"]
    nb = mk.build(lesson, "--quick")
    nbformat.write(nb, mk.notebook_path(lesson))
    assert mk.differences(lesson) == []
    code = next(c for c in nb.cells[2:] if c.cell_type == "code")
    code.source += "\nprint('an edit made in the notebook, not in the script')"
    nbformat.write(nb, mk.notebook_path(lesson))
    assert "differs" in " ".join(mk.differences(lesson))
    nb.cells.pop()
    nb.cells[-1:] = []
    nbformat.write(nb, mk.notebook_path(lesson))
    assert "differs" in " ".join(mk.differences(lesson))


def test_cells_come_from_the_script():
    """Prose cells are the ``# %% [markdown]`` cells, code cells the code; the docstring leads."""
    lesson = script("05")
    cells = mk.cells_of(lesson, "")
    text = lesson.read_text()
    assert cells[0][0] == "code" and "MINISD_LESSON_NAME" in cells[0][1] and "README" in cells[0][1]
    assert cells[1][0] == "markdown" and cells[1][1].startswith("**Lesson 5")
    markdown = text.count("# %% [markdown]")
    assert sum(kind == "markdown" for kind, _ in cells[2:]) == markdown
    # the figure's link, right beside the .py (../docs/), is right from lessons/notebooks/ too
    assert "](../docs/figures/stochastic_depth.png)" in text
    assert any("](../../docs/figures/stochastic_depth.png)" in source for _, source in cells)
    assert len(cells) - 2 == text.count("\n# %%")
    for kind, source in cells[2:]:
        if kind == "code":
            assert source.strip() in text


def run(script_path, flags):
    nb = mk.build(script_path, flags)
    return mk.execute(nb, mk.notebook_path(script_path).parent, CELL_TIMEOUT)


def outputs(nb, kind):
    return [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == kind]


@pytest.mark.parametrize("prefix", ["00", "05"])
def test_a_lesson_runs_as_a_notebook(prefix, tmp_path):
    lesson = script(prefix)
    nb = run(lesson, f"--quick --out {tmp_path}")
    printed = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert not outputs(nb, "error")
    # the flags and the name reached setup() through the environment, not the kernel's argv
    assert printed.lstrip().startswith(f"{lesson.stem}: device ") and "quick sizes" in printed
    assert (tmp_path / f"{lesson.stem}.json").exists(), "try_this wrote the record under the lesson's name"
    assert "Try this" in printed, "the docstring (its 'Try this') reached setup() from the file"
    figures = printed.count("[figure saved:")
    shown = [o for o in outputs(nb, "display_data") if "image/png" in o.get("data", {})]
    assert figures >= 1 and len(shown) == figures, "every saved figure is shown in the notebook"


def test_an_exercise_runs_as_a_notebook():
    nb = run(script("01", exercise=True), "")
    printed = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "cases pass" in printed and "not written yet" in printed  # the stubs, as shipped
    assert not outputs(nb, "error"), "in a kernel the checks return their status: the notebook runs to its end"
    assert "fill in the stubs above" in printed and "/work/" not in printed and "site-packages" not in printed
