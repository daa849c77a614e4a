"""benchmarks/gpu_check.sh, the one-command GPU check, runs end to end as a dry run on the
CuPy stand-in (tiny sizes, CPU only, about 20 s): every stage, its log and the summary."""
import os
import shutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minisd.data.fake import write_fake_cifar10

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STAGES = ["env", "counts", "tests", "step_time", "train", "resume"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_check(args, out, timeout=300):
    """The script as the suite runs it: with this interpreter ($PYTHON), and - as when pytest is started
    as venv/bin/python with no venv activated - a python3 and a python without minisd's requirements
    first on PATH, which the script must never reach for."""
    wrong = Path(out).parent / "wrong-python"
    wrong.mkdir(parents=True, exist_ok=True)
    for name in ("python3", "python"):
        (wrong / name).write_text("#!/bin/sh\necho 'the python3 on PATH, not the one running the tests' >&2\nexit 97\n")
        (wrong / name).chmod(0o755)
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "PATH": os.pathsep.join([str(wrong), os.environ.get("PATH", "")])}
    env.pop("GPU_CHECK_DRY_RUN", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_dry_run_runs_every_stage(tmp_path):
    data = tmp_path / "data"
    write_fake_cifar10(data, n_per_batch=40, seed=0)
    proc = run_check(["--dry-run", str(data)], tmp_path / "out")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    logs = tmp_path / "out" / "gpu_check"
    summary = (logs / "summary.txt").read_text()
    assert "dry run: 1" in summary
    for i, stage in enumerate(STAGES, 1):
        log = logs / f"{i:02d}_{stage}.log"
        assert log.exists(), stage
        assert any(line.split()[:2] == [stage, "ok"] for line in summary.splitlines()), summary
    assert "CuPy stand-in" in (logs / "01_env.log").read_text()
    assert "launches" in (logs / "02_counts.log").read_text()
    assert "1 passed" in (logs / "03_tests.log").read_text()
    assert not any("not the one running the tests" in p.read_text() for p in logs.iterdir())
    assert "plain loop" in (logs / "04_step_time.log").read_text()
    assert "epoch 2/2" in (logs / "05_train.log").read_text()
    assert "epoch 3/3" in (logs / "06_resume.log").read_text()


def test_bad_data_dir_and_help(tmp_path):
    proc = run_check(["--dry-run", str(tmp_path)], tmp_path / "out", timeout=30)
    assert proc.returncode == 2 and "cifar-10-batches-py not found" in proc.stderr
    proc = run_check(["--help"], tmp_path / "out", timeout=30)
    assert proc.returncode == 2 and "--dry-run" in proc.stdout


def test_the_suite_starts_no_python_from_path():
    """Tests, benchmarks and lessons start Python as sys.executable (shell scripts: $PYTHON, which the
    tests set to it): never a bare python or python3, which may be another interpreter without minisd's
    requirements."""
    bare_in_python = re.compile(r"""(run|Popen|call|check_output|system)\(\s*\[?\s*["']python3?[\s"']""")
    bare_in_shell = re.compile(r"(^|[;&|(`]|\$\()\s*(timeout\s+\S+\s+)?python3?\s")  # a command: python3 -m ...
    found = []
    for folder in ("tests", "benchmarks", "lessons", ".ci"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py" and bare_in_python.search(path.read_text()):
                found.append(str(path.relative_to(ROOT)))
            if path.suffix == ".sh":
                code = [l for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
                found += [f"{path.relative_to(ROOT)}: {l.strip()}" for l in code if bare_in_shell.search(l)
                          and "PYTHON=" not in l]
    assert found == []
