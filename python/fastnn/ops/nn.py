"""Layer kernels (cpp/include/fastnn/{activation,dense,dropout}.hpp, PReLU in activation.hpp).

These are the calls fastnn's layers make; they are public for people who write their own
layers or training loops. The optimizer kernels are in ``optim.py``.
"""

import numpy as np

from .. import _core
from ._public_names import public_names

_ACTIVATIONS = dict(_core.activation_kinds)


_ACTIVATIONS[None] = _ACTIVATIONS["linear"]


def _call_dtype(*values):
    """The dtype the kernels compute in for these arguments, as fastnn._core decides it:
    float64 when one is a float64 ndarray, else float32 (a float32/float64 mix is the
    binding's to refuse)."""
    wide = any(isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize == 8 for v in values)
    return np.float64 if wide else np.float32


def _kind(activation, fn, name="activation"):
    """The kernel number of an activation name; ValueError naming the function `fn` and the
    argument `name` otherwise."""
    try:
        return _ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"{fn}: unknown activation {activation!r} for '{name}'; expected one of "
                         f"{sorted(k for k in _ACTIVATIONS if k is not None)} or None") from None


def activation_forward(x, activation, alpha=0.0):
    """``activation(x)``, elementwise (softmax: over the last axis).

    Args:
        x: array-like.
        activation: a kernel name: linear, relu, sigmoid, tanh, leaky_relu, elu, selu, gelu,
            gelu_tanh, softplus, swish, softmax.
        alpha: float, default 0: leaky_relu's slope or elu's scale.
    """
    return _core.activation_forward(x, _kind(activation, "activation_forward"), alpha)


def activation_needs_input(activation):
    """Whether ``activation_backward`` of this kernel needs the input x (besides the output y)."""
    return bool(_core.activation_needs_input(_kind(activation, "activation_needs_input")))


def activation_backward(dy, activation, y, x=None, alpha=0.0):
    """``dy * activation'(x)`` from the output y (and the input x where the derivative needs it:
    leaky_relu, elu, selu, gelu, gelu_tanh, softplus, swish)."""
    return _core.activation_backward(_kind(activation, "activation_backward"), alpha, x, y, dy)


def prelu(x, alpha):
    """Parametric ReLU: ``x`` where x > 0, ``alpha * x`` elsewhere, in one kernel call.

    Args:
        x: array (batch, ...), float32 or float64.
        alpha: the slopes, one per position of a sample: an array shaped like the trailing
            axes of x (usually ``x.shape[1:]``), of x's dtype.

    Returns:
        Array shaped like x.

    Example:
        >>> fastnn.ops.prelu(np.array([[-2.0, 3.0]]), np.array([0.1, 0.1]))
        array([[-0.2,  3. ]])
    """
    return _core.prelu_forward(x, alpha)


def prelu_backward(x, alpha, dy, dalpha=None, accumulate=False):
    """Backward of ``prelu``: the input's gradient and the slopes' gradient.

    Args:
        x, alpha: the forward's arguments.
        dy: array shaped like x, dL/dy.
        dalpha: optional array with alpha's values count (C-contiguous, alpha's dtype) that
            receives the slopes' gradient in place (e.g. a layer's ``variable.grad``);
            default None: a new array.
        accumulate: bool, default False: add the slopes' gradient to dalpha instead of
            overwriting it (only with a given dalpha).

    Returns:
        (dx shaped like x, dalpha).
    """
    if dalpha is None:  # a new array of the call's dtype
        dalpha, accumulate = np.zeros(np.shape(alpha), _call_dtype(x, alpha, dy)), False
    return _core.prelu_backward(x, alpha, dy, dalpha, accumulate), dalpha


def dense(x, w, b=None, activation=None, alpha=0.0, return_preactivation=False):
    """``activation(x @ w + b)`` over the last axis of x, in one kernel call.

    Returns y, or (y, z) with z = x @ w + b when `return_preactivation` (z is None for a
    linear activation, where it equals y).
    """
    with public_names("dense", "dense_forward", keep_z="return_preactivation"):
        y, z = _core.dense_forward(x, w, b, _kind(activation, "dense"), alpha, return_preactivation)
    return (y, z) if return_preactivation else y


def dense_backward(x, w, dy, y, dw, db=None, activation=None, z=None, alpha=0.0, accumulate=False,
                   need_dx=True):
    """Backward of ``dense``: writes dw (and db) in place, returns dx (None unless need_dx).

    Args:
        x, w: the forward inputs. y: the forward output. z: the pre-activation (needed for
            the activations listed in activation_backward).
        dy: dL/dy. dw, db: output arrays shaped like w and b (or None to skip them).
        accumulate: add into dw/db instead of overwriting.
    """
    return _core.dense_backward(x, w, z, y, dy, _kind(activation, "dense_backward"), alpha, dw, db, accumulate, need_dx)


def dropout(x, rate, seed):
    """Inverted dropout: each value kept with probability 1 - rate and scaled by 1/(1 - rate).

    The mask is a function of (seed, position) only.
    """
    return _core.dropout_forward(x, rate, seed)


def dropout_backward(dy, rate, seed):
    """Backward of ``dropout`` with the same rate and seed (the mask is regenerated)."""
    return _core.dropout_backward(dy, rate, seed)
