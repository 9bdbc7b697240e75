"""fastnn.utils: to_categorical and set_random_seed."""

import numpy as np
import pytest

import fastnn
from fastnn.utils import set_random_seed, to_categorical


def test_to_categorical_matches_an_identity_lookup():
    labels = np.array([[0], [3], [1], [3]])
    out = to_categorical(labels, 5)
    np.testing.assert_array_equal(out, np.eye(5, dtype=np.float32)[[0, 3, 1, 3]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(to_categorical([2, 0]), [[0, 0, 1], [1, 0, 0]])
    assert to_categorical(np.zeros((2, 3), int), 4).shape == (2, 3, 4)
    assert to_categorical(np.array([1.0, 2.0]), 3).shape == (2, 3)


@pytest.mark.parametrize("labels,num_classes,message", [
    ([0, -1], None, "must be >= 0"), ([0, 3], 3, "is not < num_classes=3"), ([0.5], 2, "integer class labels"),
])
def test_to_categorical_rejects_bad_labels(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        to_categorical(labels, num_classes)


def test_set_random_seed_makes_initialisation_and_shuffling_repeat():
    def draw():
        set_random_seed(123)
        layer = fastnn.layers.Dense(4)
        layer.ensure_built((None, 3))
        return layer.get_weights()[0], fastnn.utils.rng.global_generator().permutation(10)

    (w1, p1), (w2, p2) = draw(), draw()
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(p1, p2)
    set_random_seed(124)
    layer = fastnn.layers.Dense(4)
    layer.ensure_built((None, 3))
    assert not np.array_equal(layer.get_weights()[0], w1)


@pytest.mark.parametrize("seed,error", [(-1, ValueError), (1.5, TypeError), ("1", TypeError), (True, TypeError)])
def test_set_random_seed_rejects_bad_seeds(seed, error):
    with pytest.raises(error, match="seed"):
        set_random_seed(seed)
