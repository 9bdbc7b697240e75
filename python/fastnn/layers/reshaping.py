"""Shape layers (Keras names and arguments): Permute, RepeatVector, Cropping1D, Cropping2D.

(Flatten and Reshape are in core.py; ZeroPadding2D and UpSampling2D in pooling.py.) None has
weights; forward is a view or one copy, backward its adjoint.
"""

import numpy as np

from ..ops.pool import standardize_data_format
from . import _validation
from .base import Layer
from .conv import _DataFormat, _first_shape


def _int_pairs(value, count, what, who):
    """`count` (before, after) pairs of ints >= 0 from an int, a pair, or `count` pairs."""
    def as_int(v):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{who}: '{what}' must hold ints >= 0, got {value!r}")
        return int(v)

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return ((as_int(value),) * 2,) * count
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{who}: '{what}' must be an int or a tuple, got {value!r}")
    if count == 1 and len(value) == 2 and not isinstance(value[0], (list, tuple)):
        return ((as_int(value[0]), as_int(value[1])),)
    # one entry per axis: an int (symmetric) or a (before, after) pair, mixed as Keras allows
    if len(value) == count and all(not isinstance(v, (list, tuple)) or len(v) == 2 for v in value):
        return tuple((as_int(v[0]), as_int(v[1])) if isinstance(v, (list, tuple)) else (as_int(v), as_int(v))
                     for v in value)
    raise ValueError(f"{who}: '{what}' must be an int, {count} ints or {count} pairs of ints, got {value!r}")


class Permute(Layer):
    """Permutes the axes of each sample: ``Permute((2, 1))`` swaps the two axes after the batch.

    Args:
        dims: tuple of ints: a permutation of 1..rank-1 (the batch axis stays first).
        **kwargs: name, dtype, trainable, input_shape.
    """

    supports_masking = False  # (Keras 3: a permuted input's mask would not fit it; it is dropped)

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        try:
            dims_tuple = tuple(dims)
        except TypeError:
            raise TypeError(f"Permute: 'dims' must be a tuple of ints, got {dims!r}") from None
        if isinstance(dims, (str, bytes)) or not all(_validation.is_int(d) for d in dims_tuple):
            raise TypeError(f"Permute: 'dims' must be a tuple of ints, got {dims!r}")
        self.dims = tuple(int(d) for d in dims_tuple)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute: 'dims' must be a permutation of 1..{len(self.dims)} (the batch axis 0 "
                             f"stays first), got {dims!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != len(self.dims) + 1:
            raise ValueError(f"Permute '{self.name}': dims {self.dims} permute {len(self.dims)} axes but the input "
                             f"{input_shape} has {len(input_shape) - 1} after the batch axis")
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def _output_dtype(self, input_dtype):
        return input_dtype

    def forward(self, x, training=False):
        return np.ascontiguousarray(np.transpose(x, (0,) + self.dims)), None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return np.ascontiguousarray(np.transpose(dy, np.argsort((0,) + self.dims)))

    def get_config(self):
        cfg = super().get_config()
        cfg["dims"] = self.dims
        return cfg


class RepeatVector(Layer):
    """Repeats each input vector `n` times: (batch, features) -> (batch, n, features).

    Args:
        n: int > 0, the number of repetitions.
        **kwargs: name, dtype, trainable, input_shape.
    """

    _size_arguments = ("n",)

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _validation.integer(n, "n", "RepeatVector", minimum=1)  # TypeError / ValueError, as Keras

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"RepeatVector '{self.name}': expects 2-D input (batch, features), got {input_shape}")
        return (input_shape[0], self.n, input_shape[1])

    def forward(self, x, training=False):
        self._check_size((x.shape[0], self.n, x.shape[1]), x)
        return np.repeat(x[:, None, :], self.n, axis=1), None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy.sum(axis=1)

    def get_config(self):
        cfg = super().get_config()
        cfg["n"] = self.n
        return cfg


class _Cropping(_DataFormat, Layer):
    """Shared by Cropping1D and Cropping2D: drops `cropping` positions at each end of the spatial axes."""

    _rank = 1

    def _output_shape_last(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != self._rank + 2:
            layout = "(batch, steps, features)" if self._rank == 1 else "(batch, height, width, channels)"
            if self._channels_first:
                layout, input_shape = "(batch, channels, height, width)", _first_shape(input_shape)
            raise ValueError(f"{who}: expects {self._rank + 2}-D input {layout}, got {input_shape}")
        out = list(input_shape)
        for axis, (before, after) in enumerate(self.cropping, 1):
            size = input_shape[axis]
            if size is not None:
                if before + after >= size:
                    raise ValueError(f"{who}: cropping {(before, after)} leaves nothing of axis {axis} of size {size} "
                                     f"(input {input_shape})")
                out[axis] = size - before - after
        return tuple(out)

    def _slices(self, shape):
        return (slice(None),) + tuple(slice(b, shape[axis] - a) for axis, (b, a) in enumerate(self.cropping, 1))

    def _forward_last(self, x, training=False):
        self._output_shape_last((None,) + x.shape[1:])
        return np.ascontiguousarray(x[self._slices(x.shape)]), (x.shape if training else None)

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        dx = np.zeros(cache, dy.dtype)
        dx[self._slices(cache)] = dy
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg["cropping"] = self.cropping
        return cfg


class Cropping1D(_Cropping):
    """Crops steps at the start and end of sequences: (batch, steps, features).

    Args:
        cropping: int or (start, end), default (1, 1).
        **kwargs: name, dtype, trainable, input_shape.
    """

    _rank = 1

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = _int_pairs(cropping, 1, "cropping", "Cropping1D")

    def get_config(self):
        cfg = super().get_config()
        cfg["cropping"] = self.cropping[0]
        return cfg


class Cropping2D(_Cropping):
    """Crops rows and columns at the edges of images: (batch, height, width, channels).

    Args:
        cropping: int, (symmetric height, symmetric width), or ((top, bottom), (left, right));
            default ((0, 0), (0, 0)).
        data_format: "channels_last" (default; None means it) or "channels_first", images
            (batch, channels, height, width).
        **kwargs: name, dtype, trainable, input_shape.
    """

    _rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _int_pairs(cropping, 2, "cropping", "Cropping2D")
        self.data_format = standardize_data_format(data_format, "Cropping2D")

    def get_config(self):
        cfg = super().get_config()
        cfg["data_format"] = self.data_format
        return cfg
