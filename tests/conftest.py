"""Shared fixtures: every test that takes ``xp`` or ``device`` runs on NumPy and on the GPU path.

The GPU path is real CuPy on a CUDA device when there is one, and otherwise the
NumPy-backed CuPy stand-in (tests/support/cupy_standin.py), so it never skips on a CPU-only CI.
``MINISD_TEST_STANDIN=1`` uses the stand-in even where a GPU is present. Tests on the
GPU path carry the ``gpu`` mark: ``pytest -m gpu`` runs just those.
"""
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minisd import backend

# The tests' helpers (the CuPy stand-in, the independent reference net, the gradient and
# float32 checks) live in tests/support/ and are imported by their module names.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

REAL_GPU = backend.gpu_available() and not os.environ.get("MINISD_TEST_STANDIN")


def use_gpu_path(monkeypatch):
    """Make ``device="gpu"`` work: real CuPy when present, else the stand-in. Returns the array module."""
    if REAL_GPU:
        return backend.xp_for("gpu")
    import cupy_standin
    cupy_standin.install(monkeypatch)
    cupy_standin.reset_counts()
    return cupy_standin


@pytest.fixture(params=["cpu", "gpu"])
def device(request, monkeypatch):
    """The device a test runs on: ``gpu`` is CuPy, or the stand-in without a GPU."""
    if request.param == "gpu":
        use_gpu_path(monkeypatch)
    return request.param


@pytest.fixture
def xp(device):
    return backend.xp_for(device)


@pytest.fixture
def standin(monkeypatch):
    """The CuPy stand-in installed as minisd's CuPy, counts reset (even on a GPU machine:
    counting launches and syncs needs it)."""
    import cupy_standin
    cupy_standin.install(monkeypatch)
    cupy_standin.reset_counts()
    return cupy_standin


@pytest.fixture
def gpu_xp(monkeypatch):
    """The array module of the GPU path (CuPy, or the stand-in without a GPU)."""
    return use_gpu_path(monkeypatch)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.hookimpl(tryfirst=True)  # before -m selects by mark
def pytest_collection_modifyitems(items):
    """Mark the ``device="gpu"`` instances of parametrised tests with ``gpu``."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and spec.params.get("device") == "gpu":
            item.add_marker(pytest.mark.gpu)


_REAL_URLOPEN = urllib.request.urlopen


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may reach the network (CI has none): only file: URLs may be opened.

    The training CLI downloads a missing data set by default; tests point it at local files.
    """
    def guarded(url, *args, **kwargs):
        target = getattr(url, "full_url", url)
        if not str(target).startswith("file:"):
            raise AssertionError(f"a test tried to reach the network: {target}")
        return _REAL_URLOPEN(url, *args, **kwargs)
    monkeypatch.setattr(urllib.request, "urlopen", guarded)
