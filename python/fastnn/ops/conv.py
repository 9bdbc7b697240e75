"""Convolutions (kernel: cpp/include/fastnn/conv.hpp): NHWC inputs, (kh, kw, in, out) kernels."""

import numpy as np

from .. import _core
from .nn import _call_dtype, _kind
from ._public_names import public_names


def _pair(value, name, rank):
    """`value` (an int or `rank` ints) as a tuple; the ranges are checked by the kernel."""
    import numbers

    def integral(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if integral(value):
        value = (value,) * rank
    if not isinstance(value, (tuple, list)) or not all(integral(v) for v in value):
        raise TypeError(f"conv: '{name}' must be an int or a tuple of {rank} ints, got {value!r}")
    if len(value) != rank:
        raise ValueError(f"conv: '{name}' must be an int or {rank} ints, got {tuple(value)}")
    return tuple(int(v) for v in value)


def _array(value, dtype):
    """An array-like as an ndarray for the views below. Floats from a list take the call's
    dtype: a float64 ndarray made here would decide the call's dtype, which a list must not."""
    if value is None or isinstance(value, np.ndarray):
        return value
    a = np.asarray(value)
    return a.astype(dtype) if a.dtype.kind == "f" else a


def _as_2d(inputs, kernel, strides, dilation_rate, padding, dtype):
    """1-D convolutions run as 2-D ones over a height-1 image (views, no copies)."""
    x, w = np.asarray(_array(inputs, dtype)), np.asarray(_array(kernel, dtype))
    if x.ndim == 3:
        s, d = _pair(strides, "strides", 1), _pair(dilation_rate, "dilation_rate", 1)
        return x[:, None], (w[None] if w.ndim == 3 else w), (1, s[0]), (1, d[0]), True
    if x.ndim != 4:
        raise ValueError(f"conv: 'inputs' must be 3-D (batch, steps, channels) or 4-D (batch, height, "
                         f"width, channels), got shape {x.shape}")
    if padding == "causal":
        raise ValueError("conv: padding='causal' is for 1-D convolutions (3-D inputs) only")
    return x, w, _pair(strides, "strides", 2), _pair(dilation_rate, "dilation_rate", 2), False


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1, bias=None,
         activation=None, alpha=0.0, return_preactivation=False):
    """N-D convolution (1-D or 2-D), Keras 3's ``ops.conv`` plus a fused bias and activation.

    Args:
        inputs: (batch, steps, channels) or (batch, height, width, channels).
        kernel: (k, in / groups, out) or (kh, kw, in / groups, out): as in Keras, a kernel
            whose input axis is a divisor of the channels makes a grouped convolution with
            groups = in / kernel.shape[-2] (out must be divisible by it).
        strides: int or tuple, default 1.
        padding: "valid" (default), "same" (TensorFlow's rule) or, for 1-D, "causal".
        data_format: None or "channels_last" (the only layout).
        dilation_rate: int or tuple, default 1.
        bias: optional (out,) array added to every output pixel.
        activation: optional kernel name (relu, sigmoid, ...), applied in the same call.
        return_preactivation: also return conv + bias before the activation.

    Returns:
        (batch, out_steps, out) or (batch, out_h, out_w, out); with return_preactivation,
        (y, z) where z is None for a linear activation.
    """
    if data_format not in (None, "channels_last"):
        raise ValueError(f"conv: only data_format='channels_last' (NHWC) is supported, got {data_format!r}")
    x, w, s, d, one_d = _as_2d(inputs, kernel, strides, dilation_rate, padding, _call_dtype(inputs, kernel, bias))
    with public_names("conv", "conv2d_forward", x="inputs", w="kernel", b="bias", keep_z="return_preactivation"):
        y, z = _core.conv2d_forward(x, w, bias, s, d, padding, _kind(activation, "conv"), alpha,
                                    return_preactivation)
    if one_d:
        y = y[:, 0]
        z = None if z is None else z[:, 0]
    return (y, z) if return_preactivation else y


def conv_backward(inputs, kernel, dy, y, dw, db=None, strides=1, padding="valid", dilation_rate=1,
                  activation=None, z=None, alpha=0.0, accumulate=False, need_dx=True):
    """Backward of ``conv``: writes dw (and db) in place, returns dx (None unless need_dx)."""
    dtype = _call_dtype(inputs, kernel, dy, y, z, dw, db)
    x, w, s, d, one_d = _as_2d(inputs, kernel, strides, dilation_rate, padding, dtype)
    if one_d:  # (batch, steps, filters) as (batch, 1, steps, filters); anything else is the binding's to refuse
        def row(v):
            v = _array(v, dtype)
            return v[:, None] if isinstance(v, np.ndarray) and v.ndim >= 1 else v

        dy, y, z = row(dy), row(y), row(z)
        if isinstance(dw, np.ndarray) and np.ndim(kernel) == 3:
            dw = dw[None]
    with public_names("conv_backward", "conv2d_backward", x="inputs", w="kernel"):
        dx = _core.conv2d_backward(x, w, z, y, dy, s, d, padding, _kind(activation, "conv_backward"), alpha, dw,
                                   db, accumulate, need_dx)
    return dx[:, 0] if (one_d and dx is not None) else dx
