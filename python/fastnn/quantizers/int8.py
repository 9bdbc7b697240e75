"""int8 products for quantized inference (cpp/include/fastnn/qgemm.hpp).

A weight matrix is packed once (``pack_int8``) into the layout the kernels read; products
then run on the fastest path this CPU has, chosen at run time: AVX-512 VNNI, AVX2 or plain
C++ (``int8_path``). All paths give the same integers, exactly (int32 accumulation for
k ≤ 65536).
"""

import numpy as np

from .. import _core
from ..ops.nn import _kind


class PackedInt8:
    """An int8 (k, n) matrix packed for int8 products: build it with ``pack_int8``.

    Attributes:
        k, n: the matrix's shape.
        packed: the packed bytes (int8); col_sums: its column sums (int32).
    """

    __slots__ = ("packed", "col_sums", "k", "n")

    def __init__(self, packed, col_sums, k, n):
        self.packed, self.col_sums, self.k, self.n = packed, col_sums, int(k), int(n)

    @property
    def shape(self):
        return (self.k, self.n)

    def __repr__(self):
        return f"<PackedInt8 shape=({self.k}, {self.n})>"


def _int8_matrix(value, fn, name):
    """value as a C-contiguous int8 2-D array with values in [-127, 127]; named errors."""
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise TypeError(f"{fn}: '{name}' must hold integers in [-127, 127] (int8), got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{fn}: '{name}' must be 2-D, got shape {array.shape}")
    if array.size and (array.min() < -127 or array.max() > 127):
        raise ValueError(f"{fn}: '{name}' must hold values in [-127, 127] (symmetric int8), got "
                         f"[{array.min()}, {array.max()}]")
    return np.ascontiguousarray(array, dtype=np.int8)


def pack_int8(b):
    """Packs an int8 (k, n) matrix (values in [-127, 127]) for ``int8_matmul`` / ``int8_dense``.

    Args:
        b: array-like of integers, shape (k, n), k ≤ 65536.

    Returns:
        a PackedInt8.
    """
    matrix = _int8_matrix(b, "pack_int8", "b")
    packed, col_sums = _core.int8_pack(matrix)
    return PackedInt8(packed, col_sums, *matrix.shape)


def _packed(b, fn):
    if isinstance(b, PackedInt8):
        return b
    try:
        return pack_int8(b)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("pack_int8", fn)) from None


def int8_matmul(a, b):
    """``a @ b`` of int8 matrices, exactly, in int32.

    Args:
        a: array-like of integers in [-127, 127], shape (m, k).
        b: a PackedInt8 of shape (k, n), or an int8 (k, n) array-like (packed here).

    Returns:
        int32 array (m, n).
    """
    b = _packed(b, "int8_matmul")
    a = _int8_matrix(a, "int8_matmul", "a")
    if a.shape[1] != b.k:
        raise ValueError(f"int8_matmul: 'a' has {a.shape[1]} columns (shape {a.shape}) but 'b' has {b.k} rows")
    return _core.int8_matmul(a, b.packed, b.col_sums, b.n)


def int8_dense(x, kernel, kernel_scale, bias=None, activation=None):
    """The quantized Dense: x quantized per row (``abs_max_quantize(x, axis=-1)``), then
    ``activation(int8(x) @ kernel / (x_scale · kernel_scale) + bias)``, fused in one call.

    Args:
        x: float array-like (..., k).
        kernel: a PackedInt8 (k, n) (``pack_int8`` of the int8 kernel).
        kernel_scale: float (n,): the kernel's per-output-channel scales, Keras' convention
            (the int8 values are the float weights times the scale).
        bias: None (default) or float (n,).
        activation: None (default) or an activation name of ``fastnn.ops.dense``.

    Returns:
        float32 array (..., n).
    """
    fn = "int8_dense"
    if not isinstance(kernel, PackedInt8):
        raise TypeError(f"{fn}: 'kernel' must be a PackedInt8 (fastnn.quantizers.pack_int8), got "
                        f"{type(kernel).__name__}")
    x = np.asarray(x)
    if x.dtype.kind not in "fiub" or x.ndim < 1:
        raise TypeError(f"{fn}: 'x' must be a float array with at least 1 axis, got {x.dtype} of shape {x.shape}")
    if x.shape[-1] != kernel.k:
        raise ValueError(f"{fn}: 'x' has {x.shape[-1]} features (shape {x.shape}) but 'kernel' expects {kernel.k}")
    scale = np.ascontiguousarray(kernel_scale, dtype=np.float32).reshape(-1)
    if scale.shape != (kernel.n,):
        raise ValueError(f"{fn}: 'kernel_scale' must have {kernel.n} values, got shape {np.shape(kernel_scale)}")
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        if bias.shape != (kernel.n,):
            raise ValueError(f"{fn}: 'bias' must have {kernel.n} values, got shape {np.shape(bias)}")
    rows = np.ascontiguousarray(x.reshape(-1, kernel.k), dtype=np.float32)
    y = _core.int8_dense(rows, kernel.packed, kernel.col_sums, kernel.n, scale, bias, _kind(activation, fn))
    return y.reshape(x.shape[:-1] + (kernel.n,))


# Convolutions whose patches are shorter stay float under model.quantize (layers/conv.py).
MIN_CONV_PATCH = 64

_GEOMETRY = {}  # (input shape, kernel geometry) -> (pads, output spatial shape, row and tap offsets)


def _conv_geometry(shape, itemsize, sizes, steps, dilations, padding, fn):
    """The padding, output shape and gather offsets of a convolution (cached per shape)."""
    key = (shape, itemsize, sizes, steps, dilations, padding)
    found = _GEOMETRY.get(key)
    if found is not None:
        return found
    rank = len(sizes)
    pads, out = [(0, 0)], []
    for size, k, s, d in zip(shape[1:-1], sizes, steps, dilations):
        span = (k - 1) * d + 1
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal" and rank == 1:
            pads.append((span - 1, 0))
        elif padding == "same":
            total = max((-(-size // s) - 1) * s + span - size, 0)
            pads.append((total // 2, total - total // 2))
        else:
            raise ValueError(f"{fn}: 'padding' must be 'valid', 'same' or (1 spatial axis) 'causal', got {padding!r}")
        out.append(max((size + sum(pads[-1]) - span) // s + 1, 0))
    pads.append((0, 0))
    padded = [s + a + b for s, (a, b) in zip(shape, pads)]
    element = np.cumprod([1] + padded[:0:-1])[::-1].astype(np.int64)  # C-order strides, in elements
    grid = np.meshgrid(*[np.arange(o, dtype=np.int64) * s * e for o, s, e in zip(out, steps, element[1:-1])],
                       indexing="ij")
    positions = sum(grid).reshape(-1) if out else np.zeros(1, np.int64)
    rows = np.ascontiguousarray((np.arange(shape[0], dtype=np.int64)[:, None] * element[0]
                                 + positions[None, :]).reshape(-1))
    taps = np.meshgrid(*[np.arange(k, dtype=np.int64) * d * e for k, d, e in zip(sizes, dilations, element[1:-1])],
                       indexing="ij")
    taps = np.ascontiguousarray(sum(taps).reshape(-1))
    if len(_GEOMETRY) > 32:
        _GEOMETRY.clear()
    found = _GEOMETRY[key] = (pads, tuple(out), rows, taps)
    return found


def int8_conv(x, kernel, kernel_scale, kernel_size, strides=1, padding="valid", dilation_rate=1, bias=None,
              activation=None):
    """The quantized convolution of a channels_last input: each output position's patch
    quantized as one row (``abs_max_quantize(patch, axis=-1)``), then ``int8_dense``'s
    product, dequantization, bias and activation; the patches are gathered from the input
    in the kernel, never formed.

    Args:
        x: float array (batch, *spatial, channels), 1 or 2 spatial axes.
        kernel: a PackedInt8 of the kernel reshaped to (prod(kernel_size)·channels, filters)
            (Keras' (k1, k2, in, filters) order).
        kernel_scale: float (filters,).
        kernel_size, strides, dilation_rate: ints or tuples, one per spatial axis.
        padding: "valid" (default), "same" (TensorFlow's rule: the odd pixel after) or
            "causal" (1 spatial axis).
        bias: None (default) or float (filters,). activation: as in int8_dense.

    Returns:
        float32 array (batch, *output spatial, filters).
    """
    fn = "int8_conv"
    x = np.asarray(x, dtype=np.float32)
    rank = x.ndim - 2
    if rank not in (1, 2):
        raise ValueError(f"{fn}: 'x' must be (batch, *spatial, channels) with 1 or 2 spatial axes, got shape {x.shape}")

    def per_axis(value, name):
        values = (value,) * rank if isinstance(value, (int, np.integer)) else tuple(value)
        if len(values) != rank or any(int(v) < 1 for v in values):
            raise ValueError(f"{fn}: '{name}' must be {rank} ints >= 1, got {value!r}")
        return tuple(int(v) for v in values)

    sizes, steps, dilations = per_axis(kernel_size, "kernel_size"), per_axis(strides, "strides"), \
        per_axis(dilation_rate, "dilation_rate")
    channels = x.shape[-1]
    if not isinstance(kernel, PackedInt8) or kernel.k != int(np.prod(sizes)) * channels:
        raise ValueError(f"{fn}: 'kernel' must be a PackedInt8 of ({int(np.prod(sizes)) * channels}, filters), got "
                         f"{kernel!r}")
    pads, out, rows, taps = _conv_geometry(x.shape, x.itemsize, sizes, steps, dilations, padding, fn)
    xp = np.ascontiguousarray(np.pad(x, pads) if any(p != (0, 0) for p in pads) else x)
    scale = np.ascontiguousarray(kernel_scale, dtype=np.float32).reshape(-1)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    if rows.size == 0 or channels == 0:
        return np.zeros((x.shape[0], *out, kernel.n), np.float32) + (0 if bias is None else bias)
    y = _core.int8_conv(xp, rows, taps, channels, kernel.packed, kernel.col_sums, kernel.n,
                        scale, bias, _kind(activation, fn))
    return y.reshape((x.shape[0], *out, kernel.n))


def int8_path():
    """The path int8 products use: "vnni" (AVX-512 VNNI), "avx2" or "scalar"."""
    return _core.int8_path()


def int8_best_path():
    """The fastest int8 path this CPU runs (what int8_path uses unless set_int8_path chose)."""
    return _core.int8_best_path()


def set_int8_path(path):
    """Forces the int8 path ("vnni", "avx2" or "scalar"; the CPU must support it).

    The paths give identical results; this exists to compare their speed and to test them.

    Args:
        path: str.

    Raises:
        ValueError: an unknown path, or one this CPU cannot run.
    """
    if not isinstance(path, str):
        raise TypeError(f"set_int8_path: 'path' must be a str, got {type(path).__name__}")
    _core.set_int8_path(path)
