import numpy as np
import pytest

import minisd
from minisd import backend


def test_get_xp_numpy_and_scalars():
    assert backend.get_xp(np.zeros(2)) is np
    assert backend.get_xp(np.zeros(2), None, 3, 2.5) is np
    assert backend.get_xp() is np


def test_resolve_device():
    assert backend.resolve_device("cpu") == "cpu"
    assert backend.resolve_device("auto") in ("cpu", "gpu")
    with pytest.raises(ValueError, match="unknown device"):
        backend.resolve_device("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="only meaningful without a GPU")
def test_gpu_without_cupy_says_how_to_install():
    with pytest.raises(RuntimeError, match="pip install cupy"):
        backend.resolve_device("gpu")
    assert backend.resolve_device("auto") == "cpu"


def test_to_device_round_trip(device):
    x = np.arange(6.0).reshape(2, 3)
    y = backend.to_device(x, device)
    assert backend.device_of(y) == device
    np.testing.assert_array_equal(backend.to_numpy(y), x)


def test_seeded_rng_repeats():
    a = backend.make_rng(7).random(5)
    b = backend.make_rng(7).random(5)
    np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_make_rng_is_a_host_generator_on_every_device(gpu_xp):
    """Gates and shuffles stay on the CPU: permutation and a savable state are needed (CuPy's
    Generator has neither), and the same seed draws the same numbers for either device."""
    rng = backend.make_rng(3)
    assert isinstance(rng, np.random.Generator)
    np.testing.assert_array_equal(rng.permutation(10), np.random.default_rng(3).permutation(10))
    state = rng.bit_generator.state
    first = rng.random(3)
    rng.bit_generator.state = state
    np.testing.assert_array_equal(rng.random(3), first)
    with pytest.raises(TypeError):
        backend.make_rng(0, "gpu")  # no device argument: the generator is the host's for every device


@pytest.mark.gpu
def test_mixed_devices_raise(gpu_xp):
    with pytest.raises(ValueError, match="different devices"):
        backend.get_xp(np.zeros(2), backend.to_device(np.zeros(2), "gpu"))


def test_synchronize_waits_on_the_gpu_only(standin):
    backend.synchronize(np)
    assert standin.counts().syncs == 0
    backend.synchronize(standin)
    assert standin.counts().syncs == 1


def test_relative_error_basics():
    a = np.array([1.0, 2.0, 0.0])
    assert minisd.relative_error(a, a) == 0.0
    assert minisd.relative_error(a, a + 1e-3) > 1e-4
    with pytest.raises(ValueError):
        minisd.relative_error(a, np.zeros(2))


def test_numerical_gradient_of_known_function():
    x = np.array([0.3, -1.2, 2.0])
    g = minisd.numerical_gradient(lambda: (x ** 3).sum(), x)
    assert minisd.relative_error(g, 3 * x ** 2) < 1e-8
