"""Matrix products (kernel: cpp/include/fastnn/gemm.hpp)."""

import numpy as np

from .. import _core
from ..autodiff import Tensor, is_traced, unbroadcast, value_of
from ..operation import symbolic


@symbolic
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
    if is_traced(a, b):
        return _traced_matmul(a, b, transpose_a, transpose_b)
    return _core.matmul(a, b, transpose_a, transpose_b, out, accumulate)


def _traced_matmul(a, b, transpose_a, transpose_b):
    """matmul on autodiff tensors: dA = dC·Bᵀ, dB = Aᵀ·dC (batch axes summed back, 1-D axes dropped)."""
    av, bv = np.asarray(value_of(a)), np.asarray(value_of(b))
    out = _core.matmul(av, bv, transpose_a, transpose_b, None, False)
    a2 = av[None, :] if av.ndim == 1 else (np.swapaxes(av, -1, -2) if transpose_a else av)
    b2 = bv[:, None] if bv.ndim == 1 else (np.swapaxes(bv, -1, -2) if transpose_b else bv)

    def as_product(g):  # g with the axes 1-D operands dropped put back
        g = np.asarray(g)
        if av.ndim == 1:
            g = np.expand_dims(g, -2)
        if bv.ndim == 1:
            g = np.expand_dims(g, -1)
        return g

    def grad_a(g):
        da = _core.matmul(as_product(g), b2, False, True, None, False)
        if av.ndim == 1:
            return unbroadcast(da, (1,) + av.shape).reshape(av.shape)
        da = unbroadcast(da, a2.shape)
        return np.swapaxes(da, -1, -2) if transpose_a else da

    def grad_b(g):
        db = _core.matmul(a2, as_product(g), True, False, None, False)
        if bv.ndim == 1:
            return unbroadcast(db, bv.shape + (1,)).reshape(bv.shape)
        db = unbroadcast(db, b2.shape)
        return np.swapaxes(db, -1, -2) if transpose_b else db

    parents = tuple((p, fn) for p, fn in ((a, grad_a), (b, grad_b)) if isinstance(p, Tensor))
    return Tensor(out, parents)


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
