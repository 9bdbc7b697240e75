"""Utilities: seeding, label encoding, sequence padding, training curves, model graphs, PyDataset."""

import numpy as np

from ..keras_tensor import is_keras_tensor
from .model_visualization import model_to_dot, plot_model
from .plotting import plot_history
from .py_dataset import PyDataset, Sequence
from .rng import set_random_seed
from ..data_adapters.batches import pack_x_y_sample_weight, unpack_x_y_sample_weight  # after .rng: they use it


def to_categorical(x, num_classes=None):
    """Converts integer class labels to one-hot rows (Keras' ``to_categorical``).

    Args:
        x: array-like of non-negative integer labels, any shape.
        num_classes: int, default None: ``max(x) + 1``.

    Returns:
        float32 array of shape ``x.shape + (num_classes,)`` (a trailing axis of size 1 in
        ``x`` is replaced).

    Raises:
        ValueError: labels that are negative, not integers, or >= num_classes.

    Example:
        >>> to_categorical([0, 2], 3)
        array([[1., 0., 0.],
               [0., 0., 1.]], dtype=float32)
    """
    labels = np.asarray(x)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.floor(labels), labels)):
            raise ValueError("to_categorical: 'x' must hold integer class labels")
    labels = labels.astype(np.int64)
    if labels.ndim and labels.shape[-1] == 1 and labels.ndim > 1:
        labels = labels[..., 0]
    if labels.size and labels.min() < 0:
        raise ValueError(f"to_categorical: labels must be >= 0, got {labels.min()}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"to_categorical: label {labels.max()} is not < num_classes={num_classes}")
    out = np.zeros(labels.shape + (num_classes,), np.float32)
    np.put_along_axis(out, labels[..., None], 1.0, axis=-1)
    return out


def __getattr__(name):
    # pad_sequences lives in fastnn.preprocessing.sequence (Keras exports it from both places);
    # imported on first use because fastnn.preprocessing itself imports this package.
    if name == "pad_sequences":
        from ..preprocessing.sequence import pad_sequences
        globals()["pad_sequences"] = pad_sequences
        return pad_sequences
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"pad_sequences"})


__all__ = ["PyDataset", "Sequence", "is_keras_tensor", "model_to_dot", "pack_x_y_sample_weight", "pad_sequences",
           "plot_history", "plot_model", "set_random_seed", "to_categorical", "unpack_x_y_sample_weight"]
