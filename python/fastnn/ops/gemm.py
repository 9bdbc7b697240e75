"""Matrix products (kernel: cpp/include/fastnn/gemm.hpp)."""

from .. import _core


def matmul(a, b, transpose_a=False, transpose_b=False, *, out=None, accumulate=False):
    """Matrix product of ``a`` and ``b``, optionally transposed: ``op(a) @ op(b)``.

    Follows ``numpy.matmul``: 1-D operands are a row (``a``) or a column (``b``) and that
    axis is dropped from the result; leading (batch) axes broadcast.

    Args:
        a: array-like of shape ``(..., m, k)``, or ``(..., k, m)`` with ``transpose_a``.
        b: array-like of shape ``(..., k, n)``, or ``(..., n, k)`` with ``transpose_b``.
        transpose_a: bool, default False. Use the transpose of the last two axes of ``a``.
        transpose_b: bool, default False. Use the transpose of the last two axes of ``b``.
        out: optional ndarray of the result's shape and dtype, C-contiguous, writeable,
            not sharing memory with ``a`` or ``b``. The result is written into it and
            ``out`` itself is returned.
        accumulate: bool, default False. Add the product into ``out`` (``out += a @ b``)
            instead of overwriting it; requires ``out``. Used to accumulate gradients.

    Returns:
        ndarray of shape ``(..., m, n)`` and the call's dtype (float32 or float64).

    Raises:
        TypeError: non-numeric input, or float32 mixed with float64.
        ValueError: 0-d input, inner dimensions that disagree, batch axes that do not
            broadcast, or an unusable ``out``.

    Example:
        >>> import numpy as np
        >>> from fastnn import ops
        >>> x = np.arange(6, dtype=np.float32).reshape(2, 3)
        >>> ops.matmul(x, x, transpose_b=True)
        array([[ 5., 14.],
               [14., 50.]], dtype=float32)
    """
    return _core.matmul(a, b, transpose_a, transpose_b, out, accumulate)


def linear(x, w, b=None):
    """Affine map over the last axis, the Dense forward pass: ``x @ w + b``.

    The bias is added inside the product kernel (no second pass over the output).

    Args:
        x: array-like of shape ``(..., in_features)``.
        w: array-like of shape ``(in_features, units)`` (Keras' Dense kernel layout).
        b: optional array-like of shape ``(units,)``. Default None (no bias).

    Returns:
        ndarray of shape ``(..., units)``.

    Raises:
        TypeError: non-numeric input, or float32 mixed with float64.
        ValueError: ``w`` not 2-D, ``x.shape[-1] != w.shape[0]``, or ``b`` not ``(units,)``.

    Example:
        >>> import numpy as np
        >>> from fastnn import ops
        >>> ops.linear(np.ones((4, 3), np.float32), np.ones((3, 2), np.float32), np.array([1, 2], np.float32))
        array([[4., 5.],
               [4., 5.],
               [4., 5.],
               [4., 5.]], dtype=float32)
    """
    return _core.linear(x, w, b)
