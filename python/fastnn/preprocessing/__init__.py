"""Preprocessing: the Normalization and Rescaling layers, one-hot labels, min-max scaling, padding.

``Normalization`` and ``Rescaling`` are the layers of ``fastnn.layers`` (put them first in
a model so it takes raw data); ``to_categorical`` is ``fastnn.utils.to_categorical``;
``min_max_scale`` rescales NumPy arrays; ``sequence.pad_sequences`` (also
``fastnn.preprocessing.pad_sequences`` and ``fastnn.utils.pad_sequences``) pads sequences to
one length, as Keras' ``keras.preprocessing.sequence.pad_sequences``. For splitting data use
scikit-learn's ``train_test_split``.
"""

import numpy as np

from .. import config
from ..layers.preprocessing import Normalization, Rescaling
from ..utils import to_categorical
from . import sequence
from .sequence import pad_sequences


def min_max_scale(x, feature_range=(0, 1), axis=0, data_min=None, data_max=None):
    """Scales each feature linearly into `feature_range` (scikit-learn's MinMaxScaler as a function).

    ``(x - data_min) / (data_max - data_min) * (high - low) + low``, as scikit-learn's
    ``MinMaxScaler``: the minimum and maximum are taken over `axis` (by default over the
    samples, one pair per feature). A constant feature (``data_max == data_min``) maps to
    ``low`` instead of dividing by zero. To scale test data with the training data's
    range, pass that range as data_min / data_max (values outside it land outside
    feature_range).

    Args:
        x: array-like, numeric.
        feature_range: (low, high), default (0, 1), low < high.
        axis: int, tuple of ints or None, default 0: the axes the minimum and maximum are
            taken over (None: all, one global pair).
        data_min: float or array, default None (x's minimum over `axis`): either the shape
            of the reduction (e.g. ``x_train.min(axis=0)``) or broadcastable to it with
            the reduced axes kept.
        data_max: as data_min, for the maximum.

    Returns:
        The scaled array, of x's shape; float dtype of x, or ``fastnn.config.floatx()``
        for integer input.

    Raises:
        ValueError: empty x without data_min / data_max, NaN or inf in the range,
            data_min > data_max, or a bad feature_range or axis.

    Example:
        >>> x_train = np.array([[1., 10.], [3., 10.], [5., 10.]])
        >>> min_max_scale(x_train)
        array([[0. , 0. ],
               [0.5, 0. ],
               [1. , 0. ]])
        >>> min_max_scale(np.array([[4., 10.]]), data_min=x_train.min(0), data_max=x_train.max(0))
        array([[0.75, 0.  ]])
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"min_max_scale: 'x' must be numeric, got an array of dtype {arr.dtype}")
    try:
        low, high = (float(v) for v in feature_range)
    except (TypeError, ValueError):
        raise ValueError(f"min_max_scale: 'feature_range' must be two numbers (low, high), got {feature_range!r}") \
            from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"min_max_scale: 'feature_range' must be finite with low < high, got {feature_range!r}")
    axes = _reduce_axes(axis, arr.ndim)
    keep_shape = tuple(1 if d in axes else n for d, n in enumerate(arr.shape))
    values = arr.astype(np.float64, copy=False)
    stats = []
    for name, given, reduce in (("data_min", data_min, np.min), ("data_max", data_max, np.max)):
        if given is None:
            if values.size == 0:
                raise ValueError("min_max_scale: 'x' is empty; pass data_min and data_max to scale it")
            stat = reduce(values, axis=axes, keepdims=True)
        else:
            stat = _as_stat(given, name, arr.shape, axes, keep_shape)
        if not np.all(np.isfinite(stat)):
            raise ValueError(f"min_max_scale: '{name}' contains NaN or inf" +
                             (" (x does)" if given is None else ""))
        stats.append(stat)
    lo, hi = stats
    if np.any(lo > hi):
        raise ValueError("min_max_scale: 'data_min' is greater than 'data_max' for some features")
    span = hi - lo
    span = np.where(span == 0, 1.0, span)  # constant features: map to low, no division by zero
    out = (values - lo) / span * (high - low) + low
    dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(config.floatx())
    return out.astype(dtype, copy=False)


def _reduce_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) else axis
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"min_max_scale: 'axis' must be an int, a tuple of ints or None, got {axis!r}") from None
    if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise TypeError(f"min_max_scale: 'axis' must be an int, a tuple of ints or None, got {axis!r}")
    if any(not -ndim <= a < ndim for a in items):
        raise ValueError(f"min_max_scale: 'axis' {axis!r} is out of range for an array with {ndim} dimensions")
    axes = tuple(sorted(int(a) % ndim for a in items))
    if len(set(axes)) != len(axes):
        raise ValueError(f"min_max_scale: 'axis' repeats an axis: {axis!r}")
    return axes


def _as_stat(value, name, shape, axes, keep_shape):
    """A given minimum / maximum in keepdims form (shape `keep_shape`)."""
    stat = np.asarray(value)
    if stat.dtype.kind not in "fiub":
        raise TypeError(f"min_max_scale: '{name}' must be numeric, got an array of dtype {stat.dtype}")
    stat = stat.astype(np.float64)
    reduced_shape = tuple(n for d, n in enumerate(shape) if d not in axes)
    if axes and stat.ndim and stat.shape == reduced_shape:
        stat = np.expand_dims(stat, axes)  # e.g. x_train.min(axis=0) for axis=0
    try:
        return np.broadcast_to(stat, keep_shape)
    except ValueError:
        raise ValueError(f"min_max_scale: '{name}' of shape {np.shape(value)} does not match the features "
                         f"{reduced_shape} of x (shape {shape}, reduced over axis {axes})") from None


__all__ = ["Normalization", "Rescaling", "to_categorical", "min_max_scale", "pad_sequences", "sequence"]
