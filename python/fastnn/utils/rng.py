"""fastnn's random state: one global NumPy generator, reseeded by set_random_seed.

Everything random in fastnn draws from here (initial weights, shuffling, dropout masks'
seeds) unless it was given a seed of its own, so one call makes a run reproducible.
"""

import random

import numpy as np

_generator = np.random.default_rng()


def global_generator():
    """The generator used when no seed is given."""
    return _generator


def set_random_seed(seed):
    """Makes fastnn's randomness (and Python's and NumPy's legacy global one) deterministic.

    After ``set_random_seed(s)``, building and training the same model on the same data
    gives bit-identical weights, with any thread count.

    Args:
        seed: a non-negative int.

    Raises:
        TypeError: seed is not an int.
        ValueError: seed is negative.

    Example:
        >>> import fastnn
        >>> fastnn.utils.set_random_seed(42)
    """
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"set_random_seed: 'seed' must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"set_random_seed: 'seed' must be >= 0, got {seed}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _generator = np.random.default_rng(int(seed))


def generator_for(seed=None):
    """A generator of its own for an explicit seed, else the global one."""
    if seed is None:
        return _generator
    return np.random.default_rng(int(seed))


def draw_seed(generator=None):
    """A fresh 63-bit seed for a kernel's counter-based generator (e.g. a dropout mask)."""
    return int((generator or _generator).integers(0, 2**63 - 1))
