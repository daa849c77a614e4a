"""Every lesson runs end to end in --quick mode and prints its "Try this" exercises.

Each lesson (lessons/NN_*.py) is run as a script in a subprocess, exactly as a student would
run it, with its figures written to a temporary folder. The test id is the lesson's file
name, so a failure says which lesson broke; its output is shown in the failure message.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]*_*.py"))  # 05b follows 05


# 00 ... 14, and 05b (where p comes from) after 05; each is run below by its file name
NUMBERS = sorted([f"{i:02d}" for i in range(0, 15)] + ["05b"])


def test_lessons_exist():
    found = sorted(p.name.split("_", 1)[0] for p in LESSONS)
    assert found == NUMBERS, f"expected lessons {NUMBERS}, found {[p.name for p in LESSONS]}"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_quick(lesson, tmp_path):
    # this checkout's minisd, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(lesson), "--quick", "--out", str(tmp_path)],
                          cwd=lesson.parent, capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    tail = output[-4000:]
    assert proc.returncode == 0, f"{lesson.name} exited with {proc.returncode}:\n{tail}"
    assert "Try this" in proc.stdout, f"{lesson.name} did not print its 'Try this' section:\n{tail}"
    assert "Traceback" not in output, f"{lesson.name} printed a traceback:\n{tail}"
    # its record, what lessons/tables.py builds the READMEs' tables from
    record = json.loads((tmp_path / f"{lesson.stem}.json").read_text())
    assert record["name"] == lesson.stem and record["mode"] == "quick" and record["seconds"] > 0
    assert record["mechanics"] or record["claims"], f"{lesson.name} ended without a findings table"
    assert all(len(row) == 4 and row[3] for row in record["mechanics"])
    # a claim not supported carries its takeaway: what the "no" teaches
    assert all(len(row) == 5 and row[3] and (row[3] == "yes" or row[4]) for row in record["claims"])
    assert "supported?" in proc.stdout
