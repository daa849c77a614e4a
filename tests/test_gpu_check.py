"""benchmarks/gpu_check.sh, the one-command GPU check, runs end to end as a dry run on the
CuPy stand-in (tiny sizes, CPU only, about 20 s): every stage, its log and the summary."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minisd.data.fake import write_fake_cifar10

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STAGES = ["env", "counts", "tests", "step_time", "train", "resume"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_check(args, out, timeout=300):
    env = {**os.environ, "OUT": str(out)}
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
    assert "plain loop" in (logs / "04_step_time.log").read_text()
    assert "epoch 2/2" in (logs / "05_train.log").read_text()
    assert "epoch 3/3" in (logs / "06_resume.log").read_text()


def test_bad_data_dir_and_help(tmp_path):
    proc = run_check(["--dry-run", str(tmp_path)], tmp_path / "out", timeout=30)
    assert proc.returncode == 2 and "cifar-10-batches-py not found" in proc.stderr
    proc = run_check(["--help"], tmp_path / "out", timeout=30)
    assert proc.returncode == 2 and "--dry-run" in proc.stdout
