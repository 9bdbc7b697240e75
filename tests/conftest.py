import os

import numpy as np
import pytest

import fastnn

try:  # the property suites (test_property_*.py); Hypothesis is in the test extra
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - without the test extra
    settings = None

if settings is not None:
    _QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    # "ci" (the default): a bounded, reproducible run of a few minutes (same examples every run).
    settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, database=None,
                              suppress_health_check=_QUIET, print_blob=True)
    # "thorough": many more, new examples each run (failures are replayed from .hypothesis/):
    #   FASTNN_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_property_ops.py tests/test_property_layers.py
    settings.register_profile("thorough", max_examples=1500, deadline=None, suppress_health_check=_QUIET,
                              print_blob=True)
    settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def threads():
    """Lets a test change the thread count and restores it afterwards."""
    before = fastnn.get_num_threads()
    yield fastnn.set_num_threads
    fastnn.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def digits():
    """The bundled 8x8 digits, flattened to 64 features in [0, 1]: ((x_train, y_train), (x_test, y_test))."""
    (x_train, y_train), (x_test, y_test) = fastnn.datasets.digits.load_data()
    x_train = x_train.reshape(len(x_train), -1).astype("float32") / 16
    x_test = x_test.reshape(len(x_test), -1).astype("float32") / 16
    return (x_train, y_train), (x_test, y_test)


@pytest.fixture
def float64():
    """Layers made inside the test default to float64 (gradient checks)."""
    fastnn.config.set_floatx("float64")
    yield
    fastnn.config.set_floatx("float32")


# The quick suite, ``python -m pytest -m quick tests``: the kernels' own tests (each against NumPy or
# finite differences, and bit-identical on 1 and 2 threads) and the instruction-set checks. It is what a
# built wheel is tested with at each level (.ci/quick, cibuildwheel), in a couple of minutes.
QUICK_FILES = {"test_isa.py", "test_config.py", "test_layernorm.py", "test_quantizers.py", "test_core_arguments.py",
               "test_size_arithmetic.py", "test_optimizers.py", "test_cnn_training.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in QUICK_FILES or item.path.name.startswith("test_ops_"):
            item.add_marker(pytest.mark.quick)
