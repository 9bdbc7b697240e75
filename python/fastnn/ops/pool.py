"""Pooling kernels (cpp/include/fastnn/pool.hpp): Keras 3's ``max_pool`` and
``average_pool``, global pooling, zero padding and nearest upsampling, with the backward
passes the layers use.

Images are NHWC, ``(batch, height, width, channels)``; 3-D inputs ``(batch, steps,
channels)`` pool along their steps (1-D pooling). Padding follows TensorFlow: ``"valid"``
keeps only whole windows; ``"same"`` gives ``ceil(size / stride)`` outputs and pads
``max((out - 1) * stride + pool - size, 0)`` positions, half before (rounded down) and the
rest after. Max pooling ignores the padding; average pooling divides by the number of
in-bounds positions.

Example:
    >>> import numpy as np
    >>> from fastnn import ops
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> ops.max_pool(x, 2)[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
"""

import numpy as np

from .. import _core

_MAX_INT = 2**63 - 1  # sizes are 64-bit in the kernels


def standardize_tuple(value, n, name, fn, allow_none=False):
    """A window argument as a tuple of n ints >= 1 (Keras' ``standardize_tuple``).

    Args:
        value: an int (repeated n times) or a sequence of n ints.
        n: int, the number of spatial axes.
        name: str, the argument's name for error messages (e.g. "pool_size").
        fn: str, the caller's name for error messages.
        allow_none: bool, default False: None is returned as None (e.g. strides that
            default to the pool size).

    Returns:
        tuple of n ints (or None).

    Raises:
        TypeError, ValueError: naming `fn` and `name`, for anything else.
    """
    if value is None and allow_none:
        return None
    if _standard(value, n, 1):  # already standard (a layer's attribute): the per-call path
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{fn}: '{name}' must be an int or a tuple of {n} ints, got {value!r}") from None
        if len(values) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                       for v in values):
            raise ValueError(f"{fn}: '{name}' must be an int or a tuple of {n} ints, got {value!r}")
        values = tuple(int(v) for v in values)
    if any(v < 1 or v > _MAX_INT for v in values):
        raise ValueError(f"{fn}: '{name}' must hold positive ints (at most 2**63 - 1), got {value!r}")
    return values


def _standard(value, n, low):
    """Whether value is already a tuple of n plain ints >= low."""
    if type(value) is not tuple or len(value) != n:
        return False
    for v in value:
        if type(v) is not int or v < low or v > _MAX_INT:
            return False
    return True


def standardize_padding(padding, fn):
    """A pooling padding argument, lower-cased: "valid" or "same" (ValueError naming `fn` otherwise)."""
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"{fn}: 'padding' must be 'valid' or 'same', got {padding!r}")
    return padding.lower()


def check_data_format(data_format, who):
    """ValueError unless data_format is None or 'channels_last' (fastnn images are NHWC)."""
    if data_format is None or data_format == "channels_last":
        return "channels_last"
    if data_format == "channels_first":
        raise ValueError(f"{who}: data_format='channels_first' is not supported: fastnn keeps images "
                         "channels_last, (batch, height, width, channels). Transpose the input, e.g. "
                         "x.transpose(0, 2, 3, 1), and use data_format='channels_last' (the default).")
    raise ValueError(f"{who}: 'data_format' must be 'channels_last' (or None), got {data_format!r}")


def standardize_data_format(data_format, who):
    """A layer's data_format: "channels_last" or "channels_first" (Keras lower-cases it).

    None means "channels_last": Keras reads ``keras.config.image_data_format()`` there, and
    fastnn has no such setting (its images are channels_last unless a layer says otherwise).

    Raises:
        ValueError: naming `who`, for any other value.
    """
    if data_format is None:
        return "channels_last"
    if isinstance(data_format, str) and data_format.lower() in ("channels_first", "channels_last"):
        return data_format.lower()
    raise ValueError(f"{who}: 'data_format' must be one of {{'channels_first', 'channels_last'}} or None, "
                     f"got {data_format!r}")


def _ndim(x):
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def _window(fn, ndim, pool_size, strides, padding):
    """(pool_h, pool_w, stride_h, stride_w, padding) for an input of `ndim` dimensions."""
    if ndim not in (3, 4):
        raise ValueError(f"{fn}: 'inputs' must have 3 dimensions (batch, steps, channels) or 4 "
                         f"(batch, height, width, channels), got {ndim}")
    spatial = ndim - 2
    pool = standardize_tuple(pool_size, spatial, "pool_size", fn)
    stride = standardize_tuple(strides, spatial, "strides", fn, allow_none=True) or pool
    padding = standardize_padding(padding, fn)
    if spatial == 1:
        return 1, pool[0], 1, stride[0], padding
    return pool[0], pool[1], stride[0], stride[1], padding


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Max pooling over windows of ``pool_size`` (Keras 3 ``keras.ops.max_pool``).

    Args:
        inputs: array (batch, height, width, channels), or (batch, steps, channels) for
            1-D pooling.
        pool_size: int, or a tuple of 2 ints (1 for 3-D inputs): the window.
        strides: int, tuple, or None (default: pool_size).
        padding: "valid" (default) or "same".
        data_format: None or "channels_last" (the only layout fastnn has).

    Returns:
        The window maxima, (batch, out_h, out_w, channels) or (batch, out_steps, channels).
        NaN propagates.
    """
    check_data_format(data_format, "max_pool")
    ph, pw, sh, sw, padding = _window("max_pool", _ndim(inputs), pool_size, strides, padding)
    return _core.max_pool(inputs, ph, pw, sh, sw, padding, False)


def max_pool_with_argmax(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """``max_pool`` that also returns where each maximum is, for ``max_pool_backward``.

    Returns:
        (outputs, argmax): argmax is an int32 array shaped like outputs holding the flat
        index ``h * width + w`` of the first maximum of each window (row-major window
        order) in its image and channel, as PyTorch's indices; ``h`` is 0 for 3-D inputs.
    """
    check_data_format(data_format, "max_pool_with_argmax")
    ph, pw, sh, sw, padding = _window("max_pool_with_argmax", _ndim(inputs), pool_size, strides, padding)
    return _core.max_pool(inputs, ph, pw, sh, sw, padding, True)


def _input_shape(input_shape, fn):
    """input_shape as a tuple (its values are checked by the kernel), or TypeError naming it."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, np.ndarray)):
        raise TypeError(f"{fn}: 'input_shape' must be a tuple of ints, got {input_shape!r}")
    return tuple(input_shape)


def max_pool_backward(dy, argmax, input_shape, pool_size, strides=None, padding="valid"):
    """Gradient of ``max_pool``: each window's dy goes to its first maximum.

    Args:
        dy: dL/d(outputs). argmax: from ``max_pool_with_argmax``.
        input_shape: the shape of the forward inputs. pool_size, strides, padding: as in
            the forward call.

    Returns:
        dL/d(inputs); gradients of overlapping windows add up (in a fixed order).
    """
    input_shape = _input_shape(input_shape, "max_pool_backward")
    ph, pw, sh, sw, padding = _window("max_pool_backward", len(input_shape), pool_size, strides, padding)
    return _core.max_pool_backward(dy, argmax, input_shape, ph, pw, sh, sw, padding)


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Average pooling (Keras 3 ``keras.ops.average_pool``): the mean of each window's
    in-bounds positions (padding is not counted).

    Args: as ``max_pool``.
    """
    check_data_format(data_format, "average_pool")
    ph, pw, sh, sw, padding = _window("average_pool", _ndim(inputs), pool_size, strides, padding)
    return _core.average_pool(inputs, ph, pw, sh, sw, padding)


def average_pool_backward(dy, input_shape, pool_size, strides=None, padding="valid"):
    """Gradient of ``average_pool``: each window's dy / count to each of its positions."""
    input_shape = _input_shape(input_shape, "average_pool_backward")
    ph, pw, sh, sw, padding = _window("average_pool_backward", len(input_shape), pool_size, strides,
                                      padding)
    return _core.average_pool_backward(dy, input_shape, ph, pw, sh, sw, padding)


def _keep(y, ndim, keepdims):
    return y.reshape((y.shape[0],) + (1,) * (ndim - 2) + (y.shape[1],)) if keepdims else y


def _flat_dy(dy, input_shape):
    """dy as (batch, channels): the keepdims shape is accepted too."""
    shape = tuple(input_shape)
    if len(shape) >= 3 and getattr(dy, "shape", None) == (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],):
        return dy.reshape(shape[0], shape[-1])
    return dy


def global_max_pool(inputs, keepdims=False):
    """Maximum over every position of each image (4-D) or sequence (3-D), per channel.

    Returns (batch, channels), or with keepdims (batch, 1, 1, channels) / (batch, 1, channels).
    """
    y = _core.global_max_pool(inputs, False)
    return _keep(y, _ndim(inputs), keepdims)


def global_max_pool_with_argmax(inputs, keepdims=False):
    """``global_max_pool`` and the int32 position (h * width + w, or the step) of each
    first maximum, shaped (batch, channels)."""
    y, argmax = _core.global_max_pool(inputs, True)
    return _keep(y, _ndim(inputs), keepdims), argmax


def global_max_pool_backward(dy, argmax, input_shape):
    """Gradient of ``global_max_pool``: dy to each first maximum, zero elsewhere."""
    input_shape = _input_shape(input_shape, "global_max_pool_backward")
    return _core.global_max_pool_backward(_flat_dy(dy, input_shape), argmax, input_shape)


def global_average_pool(inputs, keepdims=False):
    """Mean over every position of each image (4-D) or sequence (3-D), per channel."""
    y = _core.global_average_pool(inputs)
    return _keep(y, _ndim(inputs), keepdims)


def global_average_pool_backward(dy, input_shape):
    """Gradient of ``global_average_pool``: dy / positions, everywhere."""
    input_shape = _input_shape(input_shape, "global_average_pool_backward")
    return _core.global_average_pool_backward(_flat_dy(dy, input_shape), input_shape)


def normalize_padding2d(padding, who):
    """Keras ZeroPadding2D's padding: int, (sym_h, sym_w) or ((top, bottom), (left, right)).

    Args:
        padding: int >= 0, a tuple of 2 ints (symmetric height and width padding) or
            ((top, bottom), (left, right)).
        who: str, the caller's name for error messages.

    Returns:
        ((top, bottom), (left, right)), ints.

    Raises:
        ValueError: naming `who`, for anything else.
    """
    if type(padding) is tuple and len(padding) == 2 and _standard(padding[0], 2, 0) and _standard(padding[1], 2, 0):
        return padding  # already standard (a layer's attribute): the per-call path

    def nonneg(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= _MAX_INT

    error = ValueError(f"{who}: 'padding' must be an int >= 0, a tuple of 2 ints (symmetric height and width "
                       f"padding) or ((top, bottom), (left, right)), each at most 2**63 - 1, got {padding!r}")
    if nonneg(padding):
        return (int(padding),) * 2, (int(padding),) * 2
    try:
        parts = tuple(padding)
    except TypeError:
        raise error from None
    if len(parts) != 2:
        raise error
    out = []
    for part in parts:  # each axis: an int (symmetric) or a (before, after) pair, as Keras
        if nonneg(part):
            out.append((int(part),) * 2)
            continue
        try:
            pair = tuple(part)
        except TypeError:
            raise error from None
        if len(pair) != 2 or not all(nonneg(v) for v in pair):
            raise error
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def zero_pad2d(inputs, padding):
    """Zeros around each image of (batch, height, width, channels) (Keras ZeroPadding2D).

    Args:
        padding: int, (height, width) or ((top, bottom), (left, right)).
    """
    (top, bottom), (left, right) = normalize_padding2d(padding, "zero_pad2d")
    return _core.zero_pad2d(inputs, top, bottom, left, right)


def zero_pad2d_backward(dy, padding):
    """Gradient of ``zero_pad2d``: the interior of dy."""
    (top, bottom), (left, right) = normalize_padding2d(padding, "zero_pad2d_backward")
    return _core.zero_pad2d_backward(dy, top, bottom, left, right)


def upsample2d(inputs, size):
    """Nearest-neighbour upsampling of (batch, height, width, channels): each pixel
    repeated size[0] × size[1] times (Keras UpSampling2D, interpolation="nearest")."""
    sh, sw = standardize_tuple(size, 2, "size", "upsample2d")
    return _core.upsample2d(inputs, sh, sw)


def upsample2d_backward(dy, size):
    """Gradient of ``upsample2d``: the sum of each pixel's size[0] × size[1] block."""
    sh, sw = standardize_tuple(size, 2, "size", "upsample2d_backward")
    return _core.upsample2d_backward(dy, sh, sw)


def channels_to_last(inputs):
    """(batch, channels, *spatial) -> (batch, *spatial, channels), a new C-contiguous array.

    The channels_first layers run their NHWC kernels between this and ``channels_to_first``:
    one tiled C++ transpose (NumPy's strided copy of a 16 MB image batch took 10-23 ms, the
    tiled one about a tenth of that).
    """
    return _core.move_channels(inputs, True)


def channels_to_first(inputs):
    """(batch, *spatial, channels) -> (batch, channels, *spatial), a new C-contiguous array."""
    return _core.move_channels(inputs, False)
