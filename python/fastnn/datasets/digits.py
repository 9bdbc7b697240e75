"""The 8×8 handwritten digits (UCI, CC BY 4.0), shipped inside the package.

1,797 grayscale images of the digits 0-9, 8×8 pixels with values 0..16. See
``data/README.md`` for the source and licence.
"""

import gzip
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "data", "digits.csv.gz")
TEST_SIZE = 360  # a fixed 20 % split


def load_data(test_size=TEST_SIZE, seed=0):
    """Loads the digits with a fixed train/test split.

    Args:
        test_size: int, default 360 (20 %): samples held out for testing.
        seed: int, default 0: the split's shuffle (the same split every time).

    Returns:
        ((x_train, y_train), (x_test, y_test)): x of shape (n, 8, 8) and dtype uint8 with
        values 0..16, y of shape (n,) and dtype uint8 with labels 0..9.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, x_test.shape
        ((1437, 8, 8), (360, 8, 8))
    """
    with gzip.open(_PATH, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    if not 0 < test_size < len(x):
        raise ValueError(f"digits.load_data: 'test_size' must be in (0, {len(x)}), got {test_size}")
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    return (x[train], y[train]), (x[test], y[test])


__all__ = ["load_data"]
