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
