"""fastnn's random state: one global NumPy generator, reseeded by set_random_seed.

Everything random in fastnn draws from here (initial weights, shuffling, dropout masks'
seeds) unless it was given a seed of its own, so one call makes a run reproducible.
"""

import random

import numpy as np

_generator = np.random.default_rng()
# Data-parallel training (fastnn.distribution): the processes' generators stay in lockstep (the
# same shuffles), while the numbers a kernel draws (dropout masks, augmentation) differ by
# process: seeds are mixed with this stream number, the process's rank. None: one process.
_stream = None
_GOLDEN = 0x9E3779B97F4A7C15


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
    """A fresh 63-bit seed for a kernel's counter-based generator (e.g. a dropout mask); in
    data-parallel training, a different one on each process."""
    seed = int((generator or _generator).integers(0, 2**63 - 1))
    if _stream is not None:
        seed = (seed + (_stream + 1) * _GOLDEN) % (2**63 - 1)
    return seed


def process_generator(generator=None):
    """The generator a layer draws random numbers from (augmentation): `generator` (default
    the global one) itself, or in data-parallel training a fresh one seeded by
    ``draw_seed(generator)``, so that each process draws its own numbers while `generator`
    advances by one draw on every process whatever its share of the batch."""
    generator = generator or _generator
    return generator if _stream is None else np.random.default_rng(draw_seed(generator))


def set_process_stream(stream):
    """Data-parallel training: mix `stream` (the rank) into drawn seeds; None to stop."""
    global _stream
    _stream = None if stream is None else int(stream)


def generator_state():
    """The global generator's state (JSON-able), to give other processes the same shuffles."""
    return _generator.bit_generator.state


def set_generator_state(state):
    """Sets the global generator to `state` (from generator_state) in place."""
    if state["bit_generator"] != type(_generator.bit_generator).__name__:
        raise ValueError(f"set_generator_state: a {state['bit_generator']} state, the generator is a "
                         f"{type(_generator.bit_generator).__name__}")
    _generator.bit_generator.state = state
