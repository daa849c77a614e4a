"""The lesson tables of README.md and lessons/README.md are generated from the recorded runs
in lessons/results/ (python lessons/tables.py), never typed by hand."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lesson_tables", ROOT / "lessons" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_every_lesson_has_a_recorded_default_and_quick_run():
    rows = tables.records()  # raises RecordError naming the missing or malformed file
    assert [f.name for f, _, _ in rows] == [p.name for p in sorted((ROOT / "lessons").glob(tables.LESSON_GLOB))]
    for f, default, quick in rows:
        assert (default["name"], default["mode"], quick["mode"]) == (f.stem, "default", "quick")
        assert default["mechanics"] or default["claims"], f"{f.name}: its recorded run has no findings"


def test_the_readmes_tables_are_what_the_records_give():
    rows = tables.records()
    for kind, path in tables.READMES.items():
        text = path.read_text()
        assert tables.rewrite(text, tables.render(kind, rows), path.name) == text, \
            f"{path.name}'s lesson table differs from lessons/results/: run python lessons/tables.py"
    assert tables.main(["--check"]) == 0


def test_the_tables_carry_the_recorded_numbers():
    rows = tables.records()
    course = tables.render("course", rows)
    for f, default, quick in rows:
        assert f"[{tables._title(default)}]({f.name})" in course
        assert tables._seconds(default) in course and tables._seconds(quick) in course
        for claim, number, *_ in default["mechanics"] + default["claims"]:
            assert f"{claim} ({number};" in course


def test_a_malformed_or_missing_record_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "07_training.json"
    bad.write_text("{not json")
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    with pytest.raises(tables.RecordError, match="not a lesson record"):
        tables.read_record(bad)
    bad.write_text(json.dumps({"name": "07_training"}))
    with pytest.raises(tables.RecordError, match="lacks"):
        tables.read_record(bad)
    with pytest.raises(tables.RecordError, match="missing: run python lessons/tables.py --run 08"):
        tables.read_record(tmp_path / "08_gradient_strength.json")


def test_rewrite_needs_one_pair_of_markers():
    with pytest.raises(tables.RecordError, match="exactly one pair of markers"):
        tables.rewrite("no markers here", "x", "README.md")
    text = f"a\n{tables.BEGIN}\nold\n{tables.END}\nb"
    assert tables.rewrite(text, "new", "README.md") == "a\nnew\nb"
