"""Shared fixtures: every test that takes ``xp`` runs on NumPy and, when present, CuPy."""
import numpy as np
import pytest

from minisd import backend


@pytest.fixture(params=["cpu", "gpu"])
def device(request):
    """The device a test runs on; ``gpu`` skips cleanly without CuPy or a CUDA device."""
    if request.param == "gpu" and not backend.gpu_available():
        pytest.skip("CuPy or a CUDA device is not available")
    return request.param


@pytest.fixture
def xp(device):
    return backend.xp_for(device)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
