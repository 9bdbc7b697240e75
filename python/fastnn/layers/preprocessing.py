"""Preprocessing layers: Normalization (learned with adapt) and Rescaling.

Both are ordinary layers: they sit at the start of a model, so that the model takes raw
data, and their backward passes the gradient through (a model's first layer skips it).
Their backward needs nothing from the forward pass, so they keep no cache.
"""

import numpy as np

from .. import config
from .base import Layer

_ADAPT_CHUNK = 1 << 22  # values per adapt step when no batch_size is given (32 MB in float64)


def _as_axes(axis, who):
    """axis as a tuple of ints (None -> ())."""
    if axis is None:
        return ()
    items = (axis,) if isinstance(axis, (int, np.integer)) else axis
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{who}: 'axis' must be an int, a tuple of ints or None, got {axis!r}") from None
    if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise TypeError(f"{who}: 'axis' must be an int, a tuple of ints or None, got {axis!r}")
    return tuple(int(a) for a in items)


def _numeric(value, who, what, kinds="fiub"):
    """value as an array of one of the dtype kinds (default: floats, ints, bools)."""
    try:
        arr = np.asarray(value)
    except ValueError:  # NumPy's "inhomogeneous shape": nested sequences of different lengths
        raise ValueError(f"{who}: '{what}' must be a number or a rectangular array of numbers, got "
                         f"{value!r:.200}") from None
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{who}: '{what}' must be numeric{'' if 'b' in kinds else ' (not bool)'}, got an array of "
                        f"dtype {arr.dtype}")
    return arr


class Normalization(Layer):
    """Normalizes inputs feature-wise: ``(x - mean) / sqrt(variance)`` (Keras' Normalization).

    The mean and variance are either given or learned from data with ``adapt()`` (the
    population variance). Learned ones are non-trainable weights, as in Keras 3:
    ``[mean, variance, count]`` with mean and variance of the kept axes' shape (``()``
    for ``axis=None``) and ``count`` of shape ``()``, which Keras keeps only to read older
    files (adapt leaves it at 0). So ``set_weights(keras_layer.get_weights())`` works,
    the values are saved and restored with the model's weights and the optimizer never
    changes them. (count is stored in the layer's float dtype, not Keras' int, because
    one flat buffer holds all of a model's weights.) The output is
    ``(x - mean) / maximum(sqrt(variance), epsilon)`` with ``fastnn.config.epsilon()``
    (1e-7, Keras' floor), so a constant feature maps to 0 instead of dividing by zero.

    Args:
        axis: int, tuple of ints or None, default -1: the axes that keep a separate mean
            and variance per index (the others, always including the batch axis, are
            averaged over). -1: one per feature of the last axis; ``(1, 2)`` on images
            (n, 28, 28): one per pixel; None: one scalar mean and variance. The kept axes
            must have a known size.
        mean: float or array, default None: a fixed mean, broadcast to the kept axes
            (aligned from the right). Give both mean and variance, or neither and call
            ``adapt()``. Fixed values live in the layer's config, not in its weights.
        variance: float or array, default None: the fixed variance (>= 0), as `mean`.
        invert: bool, default False: apply the inverse, ``mean + x * sqrt(variance)``
            (turns normalized values back into the original scale).
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    The input's mask (e.g. an ``Embedding(mask_zero=True)``'s) passes through, as in Keras.

    Example:
        >>> import numpy as np
        >>> layer = fastnn.layers.Normalization(axis=-1)
        >>> layer.adapt(np.array([[0., 7., 4.], [2., 9., 6.], [0., 7., 4.], [2., 9., 6.]]))
        >>> layer(np.array([[0., 7., 4.]]))
        array([[-1., -1., -1.]], dtype=float32)
    """

    supports_masking = True  # the input's mask passes through (Keras)

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        who = f"Normalization '{self.name}'"
        self.axis = _as_axes(axis, who)
        if len(set(self.axis)) != len(self.axis):
            raise ValueError(f"{who}: 'axis' repeats an axis: {axis!r}")
        if (mean is None) != (variance is None):
            raise ValueError(f"{who}: give both 'mean' and 'variance', or neither (and call adapt()); "
                             f"got mean={mean!r}, variance={variance!r}")
        self.input_mean = self.input_variance = None
        if mean is not None:
            m = _numeric(mean, who, "mean", "fiu").astype(np.float64)
            v = _numeric(variance, who, "variance", "fiu").astype(np.float64)
            if m.shape != v.shape:
                raise ValueError(f"{who}: 'mean' and 'variance' must have the same shape, got {m.shape} and "
                                 f"{v.shape}")
            if m.ndim > len(self.axis):
                raise ValueError(f"{who}: 'mean' has {m.ndim} dimensions but 'axis' keeps {len(self.axis)} "
                                 f"({self.axis}); give one value per index of the kept axes")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
                raise ValueError(f"{who}: 'mean' and 'variance' must be finite, got mean={mean!r}, "
                                 f"variance={variance!r}")
            if np.any(v < 0):
                raise ValueError(f"{who}: 'variance' must be >= 0, got {v.min()}")
            self.input_mean, self.input_variance = m, v
        self.invert = bool(invert)
        self.adapt_mean = self.adapt_variance = None  # Variables, after build (adapt case)
        self._fixed = None  # (mean, variance) in the broadcast shape, for given values
        self._keep_axis = self._reduce_axis = self._broadcast_shape = None

    # ---- build -----------------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        who = f"Normalization '{self.name}'"
        ndim = len(input_shape)
        if any(a < -ndim or a >= ndim for a in self.axis):
            raise ValueError(f"{who}: 'axis' {self.axis} is out of range for inputs of shape {input_shape} "
                             f"({ndim} axes)")
        if len({a % ndim for a in self.axis}) != len(self.axis):  # e.g. (-1, 2) for 3 axes
            raise ValueError(f"{who}: 'axis' {self.axis} repeats an axis of inputs of shape {input_shape} "
                             f"({ndim} axes)")
        for a in sorted(a % ndim for a in self.axis):
            if input_shape[a] is None:
                hint = (" (the batch axis: for inputs without feature axes use axis=None)" if a == 0 else "")
                raise ValueError(f"{who}: axis {a} is kept (axis={self.axis}) but its size is unknown in the "
                                 f"input shape {input_shape}{hint}")
        return tuple(input_shape)

    def build(self, input_shape):
        who = f"Normalization '{self.name}'"
        self.compute_output_shape(input_shape)
        ndim = len(input_shape)
        keep = tuple(sorted(a % ndim for a in self.axis))
        self._keep_axis = keep
        self._reduce_axis = tuple(d for d in range(ndim) if d not in keep)
        self._broadcast_shape = tuple(input_shape[d] if d in keep else 1 for d in range(ndim))
        stats_shape = tuple(input_shape[d] for d in keep)
        if self.input_mean is None:
            # Keras' weights: mean and variance of the kept axes' shape (() for axis=None), and
            # count, shape (), which Keras 3 keeps only to load older files (adapt leaves it 0).
            self.adapt_mean = self.add_weight(shape=stats_shape, initializer="zeros", trainable=False, name="mean")
            self.adapt_variance = self.add_weight(shape=stats_shape, initializer="ones", trainable=False,
                                                  name="variance")
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
        else:
            expanded = [1] * ndim  # Keras: the given values align with the kept axes from the right
            for i in range(1, self.input_mean.ndim + 1):
                expanded[keep[-i]] = self.input_mean.shape[-i]
            try:
                fixed = tuple(np.ascontiguousarray(np.broadcast_to(v.reshape(expanded), self._broadcast_shape),
                                                   dtype=self._dtype)
                              for v in (self.input_mean, self.input_variance))
            except ValueError:
                raise ValueError(f"{who}: 'mean' of shape {self.input_mean.shape} does not broadcast to the "
                                 f"kept axes {keep} of the input shape {input_shape} (sizes {stats_shape})") from None
            self._fixed = fixed

    # ---- the statistics --------------------------------------------------------------------------
    def _stats(self):
        """(mean, variance) in the broadcast shape (views of the weights, or the fixed values)."""
        if self._fixed is not None:
            return self._fixed
        return (self.adapt_mean.value.reshape(self._broadcast_shape),
                self.adapt_variance.value.reshape(self._broadcast_shape))

    @property
    def mean(self):
        """The mean in the broadcast shape (a copy), or None before the layer is built."""
        return None if not self.built else self._stats()[0].copy()

    @property
    def variance(self):
        """The variance in the broadcast shape (a copy), or None before the layer is built."""
        return None if not self.built else self._stats()[1].copy()

    def adapt(self, data, batch_size=None):
        """Computes the mean and variance of `data` and stores them in the layer's weights.

        Replaces earlier values (it does not accumulate across calls). The statistics are
        computed in float64, batch by batch with an exact merge (Chan et al.), so the
        result does not depend on the batching up to rounding.

        Args:
            data: array of shape (n, ...) (nested lists of numbers are converted to one
                array), or, as in Keras, a list of arrays or an iterator / generator /
                PyDataset yielding batches (or (x, y) tuples, whose x is used).
            batch_size: int, default None: rows per step for an array (None: steps of
                about 4M values). Only bounds memory.

        Raises:
            ValueError: a layer given mean and variance, data whose kept axes differ from
                the layer's, empty data, or NaN / inf.

        Example:
            >>> layer = fastnn.layers.Normalization(axis=None)
            >>> layer.adapt(np.array([1., 2., 3., 4., 5.]))
            >>> layer(np.array([1., 2., 3.]))
            array([-1.4142135 , -0.70710677,  0.        ], dtype=float32)
        """
        who = f"Normalization '{self.name}'.adapt"
        if self.input_mean is not None:
            raise ValueError(f"{who}: this layer was given 'mean' and 'variance'; create it without them to "
                             f"learn them with adapt()")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size <= 0):
            raise ValueError(f"{who}: 'batch_size' must be a positive int or None, got {batch_size!r}")
        total = 0
        mean = m2 = None
        for batch in self._batches(data, batch_size, who):
            count = int(np.prod([batch.shape[d] for d in self._reduce_axis], dtype=np.int64))
            if count == 0:
                continue
            batch = batch.astype(np.float64, copy=False)
            if not np.isfinite(batch).all():
                raise ValueError(f"{who}: 'data' contains NaN or inf")
            b_mean = batch.mean(axis=self._reduce_axis, keepdims=True)
            b_m2 = np.square(batch - b_mean).sum(axis=self._reduce_axis, keepdims=True)
            if mean is None:
                total, mean, m2 = count, b_mean, b_m2
                continue
            delta = b_mean - mean
            new_total = total + count
            mean = mean + delta * (count / new_total)
            m2 = m2 + b_m2 + np.square(delta) * (total * count / new_total)
            total = new_total
        if mean is None:
            raise ValueError(f"{who}: 'data' is empty")
        weight_shape = self.adapt_mean.shape
        self.adapt_mean.assign(mean.reshape(weight_shape))
        self.adapt_variance.assign((m2 / total).reshape(weight_shape))
        # count is left as it is: Keras 3's adapt does not update it either

    def _batches(self, data, batch_size, who):
        """Yields the data as float-able arrays, building the layer (or checking it) on the first."""
        # Keras: a list of arrays is a list of batches (layer.adapt([x1, x2])); fastnn also takes
        # nested lists of numbers as one array.
        batches = isinstance(data, (list, tuple)) and len(data) > 0 and all(hasattr(b, "shape") for b in data)
        if not batches and (isinstance(data, (np.ndarray, list, tuple)) or not hasattr(data, "__iter__")):
            arr = _numeric(data, who, "data")
            self._check_adapt_shape(arr.shape, who)
            step = batch_size or max(1, _ADAPT_CHUNK // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
            for start in range(0, len(arr), step):
                yield arr[start:start + step]
            return
        for item in data:
            if isinstance(item, tuple):
                item = item[0]
            arr = _numeric(item, who, "data")
            self._check_adapt_shape(arr.shape, who)
            yield arr

    def _check_adapt_shape(self, shape, who):
        if len(shape) == 0:
            raise ValueError(f"{who}: 'data' needs a batch axis, got a scalar")
        if not self.built:
            self.ensure_built(shape)
            return
        if len(shape) != len(self.input_shape) or any(shape[d] != self.input_shape[d] for d in self._keep_axis):
            raise ValueError(f"{who}: the layer was built for inputs of shape {self.input_shape} (kept axes "
                             f"{self._keep_axis}), got data of shape {tuple(shape)}")

    def _std(self, variance):
        """sqrt(variance), floored at fastnn.config.epsilon() (Keras' floor)."""
        return np.maximum(np.sqrt(variance), np.asarray(config.epsilon(), variance.dtype))

    # ---- the contract ----------------------------------------------------------------------------
    def forward(self, x, training=False):
        mean, variance = self._stats()
        std = self._std(variance)
        if self.invert:
            y = x * std
            y += mean
        else:
            y = x - mean
            y /= std
        return y, None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if not need_input_grad:
            return None
        std = self._std(self._stats()[1])
        return dy * std if self.invert else dy / std

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, invert=self.invert,
                   mean=None if self.input_mean is None else self.input_mean.tolist(),
                   variance=None if self.input_variance is None else self.input_variance.tolist())
        return cfg


class Rescaling(Layer):
    """Multiplies inputs by `scale` and adds `offset`: ``x * scale + offset`` (Keras' Rescaling).

    Typical use: pixel values 0..255 to [0, 1] with ``scale=1/255``, or to [-1, 1] with
    ``scale=1/127.5, offset=-1``. No weights; backward multiplies the gradient by `scale`.
    The input's mask (e.g. an ``Embedding(mask_zero=True)``'s) passes through, as in Keras.

    Args:
        scale: float, or an array broadcast over the trailing axes (e.g. one value per
            channel).
        offset: float or array, default 0.0, as `scale`.
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    Example:
        >>> layer = fastnn.layers.Rescaling(1 / 255)
        >>> layer(np.array([[0, 255]], dtype=np.uint8))
        array([[0., 1.]], dtype=float32)
    """

    supports_masking = True  # the input's mask passes through (Keras)

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        who = f"Rescaling '{self.name}'"
        arrays = []
        for what, value in (("scale", scale), ("offset", offset)):
            arr = _numeric(value, who, what, "fiu").astype(np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{who}: '{what}' must be finite, got {value!r}")
            arrays.append(arr)
        self._scale64, self._offset64 = arrays
        # Keep what was given (Keras' attributes), as plain Python values for the config.
        self.scale = self._scale64.tolist()
        self.offset = self._offset64.tolist()
        self._scale = self._scale64.astype(self._dtype)
        self._offset = self._offset64.astype(self._dtype)

    def build(self, input_shape):
        return self.compute_output_shape(input_shape)  # validates the shape before the layer counts as built

    def compute_output_shape(self, input_shape):
        for what, arr in (("scale", self._scale64), ("offset", self._offset64)):
            if arr.ndim >= len(input_shape) and arr.ndim > 0:
                raise ValueError(f"Rescaling '{self.name}': '{what}' of shape {arr.shape} must broadcast over the "
                                 f"sample axes of the input {input_shape}, so it needs fewer than "
                                 f"{len(input_shape)} dimensions")
            for size, dim in zip(reversed(arr.shape), reversed(input_shape)):
                if size != 1 and dim is not None and size != dim:
                    raise ValueError(f"Rescaling '{self.name}': '{what}' of shape {arr.shape} does not broadcast "
                                     f"to the input shape {input_shape}")
        return tuple(input_shape)

    def forward(self, x, training=False):
        y = x * self._scale
        if y.shape != x.shape:
            raise ValueError(f"Rescaling '{self.name}': 'scale' of shape {self._scale.shape} does not broadcast "
                             f"to the input shape {x.shape}")
        if self._offset.ndim or self._offset != 0:
            y += self._offset
        return y, None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy * self._scale if need_input_grad else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(scale=self.scale, offset=self.offset)
        return cfg
