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
