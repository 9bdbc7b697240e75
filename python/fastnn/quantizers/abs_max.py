"""Keras 3's abs-max quantization: symmetric int8 with one scale per slice."""

import numpy as np

from .. import _core
from ..config import epsilon as _epsilon


def abs_max_quantize(inputs, axis, value_range=(-127, 127), dtype="int8", epsilon=None):
    """Quantizes `inputs` symmetrically, one scale per slice along `axis` (Keras 3's formula).

    ``scale = value_range[1] / (max(|inputs|, axis, keepdims=True) + epsilon)`` and
    ``values = clip(round(inputs · scale), *value_range)`` (round half to even); the float
    values are ``values / scale`` again. A slice holding NaN or inf gets scale NaN.

    Args:
        inputs: array-like of floats.
        axis: int or tuple of ints, the axes a scale spans (Keras: the input axis of a
            kernel for per-output-channel scales, -1 for per-row activation scales).
        value_range: (low, high), default (-127, 127).
        dtype: "int8" (default): the values' dtype.
        epsilon: float or None (default: ``fastnn.config.epsilon()``, 1e-7).

    Returns:
        (values, scale): values of `dtype` shaped like `inputs`, scale float32 with `axis`
        kept as size 1.

    Example:
        >>> q, scale = fastnn.quantizers.abs_max_quantize(np.array([[0.5, -1.0]]), axis=-1)
        >>> q
        array([[  64, -127]], dtype=int8)
    """
    if dtype != "int8":
        raise ValueError(f"abs_max_quantize: 'dtype' must be 'int8', got {dtype!r}")
    try:
        low, high = (int(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"abs_max_quantize: 'value_range' must be two ints, got {value_range!r}") from None
    if not -128 <= low < high <= 127:
        raise ValueError(f"abs_max_quantize: 'value_range' must lie in [-128, 127] with low < high, got {value_range!r}")
    x = np.asarray(inputs)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"abs_max_quantize: 'inputs' must hold numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    eps = np.float32(_epsilon() if epsilon is None else epsilon)
    axes = tuple(a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))) if x.ndim else ()
    if (axes == (x.ndim - 1,) and x.ndim >= 1 and low == -127 and high == 127 and eps == np.float32(1e-7)
            and x.size):
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        q, scale = _core.int8_quantize_rows(rows)  # the kernel the quantized layers use
        return q.reshape(x.shape), scale.reshape(x.shape[:-1] + (1,))
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max(np.abs(x), axis=axes, keepdims=True) if x.size else np.zeros([1 if i in axes else s for i, s
                                                                                     in enumerate(x.shape)], np.float32)
        scale = (np.float32(high) / (top.astype(np.float32) + eps)).astype(np.float32)
        scale = np.where(np.isfinite(top), scale, np.float32(np.nan)).astype(np.float32)
        values = np.clip(np.rint(x * scale), low, high)
    values = np.where(np.isfinite(values), values, 0).astype(np.int8)
    return values, scale


class AbsMaxQuantizer:
    """``abs_max_quantize`` as an object (Keras 3's quantizer class).

    Args:
        axis: int or tuple of ints (see abs_max_quantize).
        value_range: default (-127, 127).
        epsilon: default None (``fastnn.config.epsilon()``).
        output_dtype: "int8" (default).
    """

    def __init__(self, axis, value_range=(-127, 127), epsilon=None, output_dtype="int8"):
        self.axis, self.value_range, self.epsilon, self.output_dtype = axis, tuple(value_range), epsilon, output_dtype

    def __call__(self, x):
        return abs_max_quantize(x, self.axis, self.value_range, self.output_dtype, self.epsilon)

    def get_config(self):
        return {"axis": self.axis, "value_range": self.value_range, "epsilon": self.epsilon,
                "output_dtype": self.output_dtype}
