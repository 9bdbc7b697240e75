"""Pooling layers (Keras names and arguments): MaxPooling1D/2D, AveragePooling1D/2D,
GlobalMaxPooling1D/2D, GlobalAveragePooling1D/2D, and the reshaping layers of small CNNs,
ZeroPadding2D and UpSampling2D.

Images are channels_last, (batch, height, width, channels), and sequences (batch, steps,
features), unless a layer has data_format="channels_first": (batch, channels, height, width)
and (batch, features, steps), run as channels_last between two transposes. Each layer's forward and backward is one kernel call (``fastnn.ops`` pooling,
cpp/include/fastnn/pool.hpp); none has weights. As in Keras, a layer built for one image size
takes others too (each call gets its own output shape).

Example:
    >>> import numpy as np
    >>> import fastnn
    >>> pool = fastnn.layers.MaxPooling2D(pool_size=2)
    >>> pool(np.zeros((8, 28, 28, 16), np.float32)).shape
    (8, 14, 14, 16)
"""

import numpy as np

from .. import ops
from ..ops.pool import normalize_padding2d, standardize_data_format, standardize_padding, standardize_tuple
from .base import Layer
from .conv import _AnySpatialSize, _DataFormat, _first_shape


def _pooled_size(size, pool, stride, padding, who, axis):
    """Output size along one axis (None stays None)."""
    if size is None:
        return None
    if padding == "same":
        return (size + stride - 1) // stride
    if pool > size:
        raise ValueError(f"{who}: with padding='valid' the pooling window must fit in the input: "
                         f"pool size {pool} is larger than the input's {axis} {size}; use a smaller "
                         "pool_size or padding='same'")
    return (size - pool) // stride + 1


def _check_rank(input_shape, rank, who, layout, channels_first=False):
    """`input_shape` is channels_last here; an error shows it in the layer's own format."""
    if len(input_shape) != rank:
        if channels_first:
            names = layout.strip("()").split(", ")
            layout = "(" + ", ".join([names[0], names[-1]] + names[1:-1]) + ")"
            input_shape = _first_shape(input_shape)
        raise ValueError(f"{who}: expects inputs with {rank} dimensions {layout}, got shape "
                         f"{tuple(input_shape)}")


class _Pooling(_DataFormat, _AnySpatialSize, Layer):
    """Shared by the max and average pooling layers (1-D and 2-D)."""

    _rank = 2  # spatial dimensions
    _max = True

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        self.pool_size = standardize_tuple(pool_size, self._rank, "pool_size", who)
        self.strides = standardize_tuple(strides, self._rank, "strides", who, allow_none=True) or self.pool_size
        self.padding = standardize_padding(padding, who)
        self.data_format = standardize_data_format(data_format, who)

    def _output_shape_last(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if self._rank == 1:
            _check_rank(input_shape, 3, who, "(batch, steps, features)", self._channels_first)
            steps = _pooled_size(input_shape[1], self.pool_size[0], self.strides[0], self.padding, who, "steps")
            return (input_shape[0], steps, input_shape[2])
        _check_rank(input_shape, 4, who, "(batch, height, width, channels)", self._channels_first)
        h = _pooled_size(input_shape[1], self.pool_size[0], self.strides[0], self.padding, who, "height")
        w = _pooled_size(input_shape[2], self.pool_size[1], self.strides[1], self.padding, who, "width")
        return (input_shape[0], h, w, input_shape[3])

    def _forward_last(self, x, training=False):
        if not self._max:
            return ops.average_pool(x, self.pool_size, self.strides, self.padding), (x.shape if training else None)
        if not training:
            return ops.max_pool(x, self.pool_size, self.strides, self.padding), None
        y, argmax = ops.max_pool_with_argmax(x, self.pool_size, self.strides, self.padding)
        return y, (x.shape, argmax)

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        if not need_input_grad:
            return None
        if self._max:
            shape, argmax = cache
            return ops.max_pool_backward(dy, argmax, shape, self.pool_size, self.strides, self.padding)
        return ops.average_pool_backward(dy, cache, self.pool_size, self.strides, self.padding)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding,
                   data_format=self.data_format)
        return cfg


class MaxPooling2D(_Pooling):
    """Max pooling over (height, width) windows of channels_last images.

    Args:
        pool_size: int or tuple of 2 ints, default (2, 2).
        strides: int, tuple of 2 ints, or None (default: pool_size).
        padding: "valid" (default) or "same" (TensorFlow's rule; padding never wins).
        data_format: "channels_last" (batch, height, width, channels) or "channels_first"
            (batch, channels, height, width); default None: "channels_last".
        **kwargs: name, dtype, input_shape.

    Input (batch, height, width, channels); output (batch, out_h, out_w, channels). The
    gradient of each window goes to its first maximum (row-major window order).
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(_Pooling):
    """Average pooling over (height, width) windows; 'same' padding is left out of the
    count (the JAX/TensorFlow result Keras documents; Keras' torch backend counts the
    padding it replicates from the edge, keras-team/keras#18452). Arguments as MaxPooling2D.

    Unlike Keras, where ``pool_size`` is required, fastnn defaults it to (2, 2) (the value
    MaxPooling2D defaults to in both).
    """

    _max = False

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling1D(_Pooling):
    """Max pooling over windows of steps: input (batch, steps, features).

    Args:
        pool_size: int, default 2. strides: int or None (default: pool_size).
        padding: "valid" (default) or "same".
        data_format: "channels_last" (batch, steps, features) or "channels_first" (batch,
            features, steps); default None: "channels_last".
    """

    _rank = 1

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(_Pooling):
    """Average pooling over windows of steps; 'same' padding is left out of the count (as
    AveragePooling2D, keras-team/keras#18452). Arguments as MaxPooling1D.

    Unlike Keras, where ``pool_size`` is required, fastnn defaults it to 2 (the value
    MaxPooling1D defaults to in both).
    """

    _rank = 1
    _max = False

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class _GlobalPooling(_DataFormat, _AnySpatialSize, Layer):
    """Shared by the global pooling layers: a max or mean over every position."""

    _rank = 2
    _max = True

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    def _output_shape_last(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        layout = "(batch, steps, features)" if self._rank == 1 else "(batch, height, width, channels)"
        _check_rank(input_shape, self._rank + 2, who, layout, self._channels_first)
        if any(d == 0 for d in input_shape[1:-1]):
            raise ValueError(f"{who}: the input has no positions to pool over (shape {tuple(input_shape)})")
        if self.keepdims:
            return (input_shape[0],) + (1,) * self._rank + (input_shape[-1],)
        return (input_shape[0], input_shape[-1])

    def _forward_last(self, x, training=False):
        if not self._max:
            return ops.global_average_pool(x, self.keepdims), (x.shape if training else None)
        if not training:
            return ops.global_max_pool(x, self.keepdims), None
        y, argmax = ops.global_max_pool_with_argmax(x, self.keepdims)
        return y, (x.shape, argmax)

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        if not need_input_grad:
            return None
        if self._max:
            shape, argmax = cache
            return ops.global_max_pool_backward(dy, argmax, shape)
        return ops.global_average_pool_backward(dy, cache)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(data_format=self.data_format, keepdims=self.keepdims)
        return cfg


class GlobalMaxPooling2D(_GlobalPooling):
    """Maximum over height and width, per channel: (batch, h, w, c) -> (batch, c). As in
    Keras 3, a mask is not used (the maximum is over every position).

    Args:
        data_format: "channels_last" (default; None means it) or "channels_first", inputs
            (batch, c, h, w).
        keepdims: bool, default False: keep the spatial axes with size 1, (batch, 1, 1, c)
            ((batch, c, 1, 1) channels_first).
    """


class GlobalAveragePooling2D(_GlobalPooling):
    """Mean over height and width, per channel: (batch, h, w, c) -> (batch, c).
    Arguments as GlobalMaxPooling2D."""

    _max = False


class GlobalMaxPooling1D(_GlobalPooling):
    """Maximum over steps, per feature: (batch, steps, f) -> (batch, f) (keepdims:
    (batch, 1, f)).

    A mask is not used, exactly as in Keras 3 (whose layer does not support masking): the
    maximum runs over every step, masked (padded) ones included, and the output has no mask.
    Use GlobalAveragePooling1D for a masked summary.

    Args:
        data_format: "channels_last" (default; None means it) or "channels_first", inputs
            (batch, f, steps).
        keepdims: bool, default False.
    """

    _rank = 1


class GlobalAveragePooling1D(_GlobalPooling):
    """Mean over steps, per feature: (batch, steps, f) -> (batch, f).

    With a mask (``Embedding(mask_zero=True)`` upstream, or ``layer(x, mask=m)``), the mean is
    over the unmasked steps only, as in Keras (a sequence with every step masked gives NaN, as
    Keras' 0/0); the output has no mask.
    """

    _rank = 1
    _max = False
    supports_masking = True
    _consumes_mask = True

    def _forward_last(self, x, training=False, mask=None):
        if mask is None:
            return super()._forward_last(x, training)
        mask = np.asarray(mask, bool)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"GlobalAveragePooling1D '{self.name}': the mask must have shape (batch, steps) = "
                             f"{x.shape[:2]}, got {mask.shape}")
        weights = mask.astype(x.dtype)[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = 1 / weights.sum(axis=1, keepdims=True)  # (batch, 1, 1)
        y = np.einsum("btf,bt->bf", x, weights[:, :, 0]) * scale[:, 0]
        if self.keepdims:
            y = y[:, None, :]
        return np.ascontiguousarray(y, dtype=x.dtype), (weights * scale if training else None)

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        if not isinstance(cache, np.ndarray):  # no mask: the kernel's backward
            return super()._backward_last(cache, dy, need_input_grad, accumulate)
        if not need_input_grad:
            return None
        share = cache  # (batch, steps, 1): mask / unmasked steps
        dy = dy.reshape(dy.shape[0], 1, dy.shape[-1])
        return np.ascontiguousarray(share * dy, dtype=dy.dtype)

    def compute_mask(self, inputs, mask=None):
        return None


class ZeroPadding2D(_DataFormat, _AnySpatialSize, Layer):
    """Adds rows and columns of zeros around each image (channels_last).

    Args:
        padding: int, tuple of 2 ints (symmetric height and width padding), or
            ((top, bottom), (left, right)); default (1, 1).
        data_format: "channels_last" (default; None means it) or "channels_first".
    """

    _size_arguments = ("padding",)

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = normalize_padding2d(padding, "ZeroPadding2D")
        self.data_format = standardize_data_format(data_format, "ZeroPadding2D")

    def _output_shape_last(self, input_shape):
        _check_rank(input_shape, 4, f"ZeroPadding2D '{self.name}'", "(batch, height, width, channels)",
                    self._channels_first)
        (top, bottom), (left, right) = self.padding
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], None if h is None else h + top + bottom,
                None if w is None else w + left + right, input_shape[3])

    def _forward_last(self, x, training=False):
        self._check_size(self._output_shape_last(x.shape), x)
        return ops.zero_pad2d(x, self.padding), None  # backward needs only the padding

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        return ops.zero_pad2d_backward(dy, self.padding) if need_input_grad else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(padding=self.padding, data_format=self.data_format)
        return cfg


class UpSampling2D(_DataFormat, _AnySpatialSize, Layer):
    """Upsamples images by integer factors: each pixel repeated size[0] × size[1] times
    ("nearest"), or Keras' bilinear resize ("bilinear").

    Bilinear follows ``keras.ops.image.resize(..., interpolation="bilinear", antialias=False)``:
    output pixel i reads the input at ``(i + 0.5) / size - 0.5`` (half-pixel centres), the two
    taps around it weighted linearly, taps outside the image dropped and the weights
    renormalised (so the edge rows and columns repeat the edge pixel). Its gradient is the
    adjoint of the same weights.

    Args:
        size: int or tuple of 2 ints, default (2, 2).
        data_format: "channels_last" (default; None means it) or "channels_first".
        interpolation: "nearest" (default) or "bilinear" (Keras' other choices, "bicubic",
            "lanczos3", "lanczos5", are not in fastnn).
    """

    _size_arguments = ("size",)

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = standardize_tuple(size, 2, "size", "UpSampling2D")
        self.data_format = standardize_data_format(data_format, "UpSampling2D")
        if not isinstance(interpolation, str) or interpolation.lower() not in ("nearest", "bilinear"):
            raise ValueError(f"UpSampling2D: interpolation={interpolation!r} is not supported; fastnn "
                             "has 'nearest' and 'bilinear'")  # Keras lower-cases it
        self.interpolation = interpolation.lower()

    def _output_shape_last(self, input_shape):
        _check_rank(input_shape, 4, f"UpSampling2D '{self.name}'", "(batch, height, width, channels)",
                    self._channels_first)
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], None if h is None else h * self.size[0],
                None if w is None else w * self.size[1], input_shape[3])

    def _forward_last(self, x, training=False):
        self._check_size(self._output_shape_last(x.shape), x)
        if self.interpolation == "bilinear":
            out_size = (x.shape[1] * self.size[0], x.shape[2] * self.size[1])
            y = ops.affine_transform(x, self._resize_transform(), "bilinear", "nearest",
                                           output_size=out_size)
            return y, (x.shape[1:3] if training else None)
        return ops.upsample2d(x, self.size), None  # backward needs only the size

    def _resize_transform(self):
        """The half-pixel resize as a warp: output (i, j) reads ((i + 0.5)/sh - 0.5, (j + 0.5)/sw - 0.5).
        Clamping the taps to the edge ("nearest" fill) is Keras' renormalised in-bounds weights."""
        sh, sw = self.size
        return np.array([1 / sw, 0, 0.5 / sw - 0.5, 0, 1 / sh, 0.5 / sh - 0.5, 0, 0])

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        if not need_input_grad:
            return None
        if self.interpolation == "bilinear":
            return ops.affine_transform_backward(dy, self._resize_transform(), cache, "bilinear", "nearest")
        return ops.upsample2d_backward(dy, self.size)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(size=self.size, data_format=self.data_format, interpolation=self.interpolation)
        return cfg


# Keras' short names for the same classes.
MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D = MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
