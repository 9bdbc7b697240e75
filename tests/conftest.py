import numpy as np
import pytest

import fastnn


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
