"""The speed benchmark runs end to end (tiny sizes, no timing asserted: speed is checked by
running benchmarks/step_time.py itself, never by timed unit tests)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_step_time_benchmark_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--depth", "8",
                           "--batch-size", "4", "--steps", "2", "--warmup", "1", "--no-torch"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's minisd
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for expected in ("=== ResNet-8", "SD/const", "Conv2d", "stochastic / constant step time", "trace off"):
        assert expected in out, f"missing {expected!r} in:\n{out}"


def test_densenet_memory_benchmark_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "densenet_memory.py"), "--depth", "16",
                           "--growth-rate", "4", "--batch-size", "2"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "readable MiB" in proc.stdout and "x less" in proc.stdout and "one training step" in proc.stdout
