"""Activation functions (Keras names and defaults), each one call into the C++ kernel.

Layers take an activation by name (``'relu'``), by function (``fastnn.activations.relu``)
or as any callable written with ``fastnn.ops`` math, whose derivative is then derived
automatically.
"""

import functools

import numpy as np

from . import ops


def _apply(x, name, alpha=0.0):
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return ops.activation_forward(x, name, alpha)


def linear(x):
    """Identity: ``linear(x) = x``."""
    return np.asarray(x)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit: ``max(x, 0)``.

    Args:
        x: array-like.
        negative_slope: float, default 0. Slope below the threshold.
        max_value: float or None, default None. Upper saturation.
        threshold: float, default 0. Values below it are cut (or scaled by negative_slope).
    """
    if max_value is None and threshold == 0.0:
        return _apply(x, "leaky_relu", negative_slope) if negative_slope else _apply(x, "relu")
    x = np.asarray(x)
    x = x.astype(x.dtype if x.dtype in (np.float32, np.float64) else np.float32)
    y = np.where(x > threshold, x, negative_slope * (x - threshold))  # strict, as Keras
    return y if max_value is None else np.minimum(y, max_value)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``."""
    return _apply(x, "sigmoid")


def tanh(x):
    """Hyperbolic tangent."""
    return _apply(x, "tanh")


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis`` (default: the last), computed stably."""
    x = np.asarray(x)
    if axis in (-1, x.ndim - 1):
        return _apply(x, "softmax")
    return np.moveaxis(_apply(np.ascontiguousarray(np.moveaxis(x, axis, -1)), "softmax"), -1, axis)


def leaky_relu(x, negative_slope=0.2):
    """``x`` for x > 0, ``negative_slope * x`` otherwise (default slope 0.2, as Keras)."""
    return _apply(x, "leaky_relu", negative_slope)


def elu(x, alpha=1.0):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise."""
    return _apply(x, "elu", alpha)


def selu(x):
    """Scaled ELU with the self-normalising constants (scale 1.0507, alpha 1.6733)."""
    return _apply(x, "selu")


def gelu(x, approximate=False):
    """Gaussian error linear unit ``x·Φ(x)``; ``approximate=True`` uses the tanh form."""
    return _apply(x, "gelu_tanh" if approximate else "gelu")


def softplus(x):
    """``log(1 + exp(x))``, without overflow."""
    return _apply(x, "softplus")


def swish(x):
    """``x * sigmoid(x)`` (also called SiLU)."""
    return _apply(x, "swish")


silu = swish


# ---- activations computed with NumPy, each with its derivative written out --------------------
# They are cheap elementwise passes (or one reduction along an axis), so NumPy runs them at
# memory speed; an explicit derivative avoids tracing the autodiff tape at every step.

def _float(x):
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _sigmoid(x):
    # exp(-log(1 + exp(-x))): no overflow for large |x|
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)


def _softplus(x):
    return np.logaddexp(0, x).astype(x.dtype, copy=False)


def _check_threshold(value, arg, who):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{who}: '{arg}' must be a number, got {value!r}")
    return float(value)


def relu6(x):
    """ReLU capped at 6: ``min(max(x, 0), 6)``.

    Args:
        x: array-like.
    """
    return np.clip(_float(x), 0, 6)


def _relu6_grad(x, y, dy):
    return dy * ((x > 0) & (x < 6))


def celu(x, alpha=1.0):
    """Continuously differentiable ELU: ``x`` for x >= 0, ``alpha * (exp(x / alpha) - 1)`` below.

    Args:
        x: array-like.
        alpha: float, default 1.0. The scale of the negative part.
    """
    x = _float(x)
    return (np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0) / alpha)).astype(x.dtype, copy=False)


def _celu_grad(x, y, dy, alpha=1.0):
    return dy * np.where(x > 0, 1, np.exp(np.minimum(x, 0) / alpha))


def softsign(x):
    """``x / (abs(x) + 1)``.

    Args:
        x: array-like.
    """
    x = _float(x)
    return x / (np.abs(x) + 1)


def _softsign_grad(x, y, dy):
    return dy / np.square(np.abs(x) + 1)


def squareplus(x, b=4):
    """``(x + sqrt(x**2 + b)) / 2``, a smooth ReLU.

    Args:
        x: array-like.
        b: float, default 4. Smoothness (larger: smoother near 0).
    """
    x = _float(x)
    return ((x + np.sqrt(np.square(x) + b)) / 2).astype(x.dtype, copy=False)


def _squareplus_grad(x, y, dy, b=4):
    return dy * (1 + x / np.sqrt(np.square(x) + b)) / 2


def soft_shrink(x, threshold=0.5):
    """``x - threshold`` above threshold, ``x + threshold`` below -threshold, 0 between.

    Args:
        x: array-like.
        threshold: float, default 0.5.
    """
    x = _float(x)
    t = _check_threshold(threshold, "threshold", "soft_shrink")
    return np.where(x > t, x - t, np.where(x < -t, x + t, 0)).astype(x.dtype, copy=False)


def _soft_shrink_grad(x, y, dy, threshold=0.5):
    return dy * (np.abs(x) > threshold)


def sparse_plus(x):
    """0 for x <= -1, ``(x + 1)**2 / 4`` for -1 < x < 1, x for x >= 1.

    Args:
        x: array-like.
    """
    x = _float(x)
    return np.where(x <= -1, 0, np.where(x >= 1, x, 0.25 * np.square(x + 1))).astype(x.dtype, copy=False)


def _sparse_plus_grad(x, y, dy):
    return dy * np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1)))


def tanh_shrink(x):
    """``x - tanh(x)``.

    Args:
        x: array-like.
    """
    x = _float(x)
    return x - np.tanh(x)


def _tanh_shrink_grad(x, y, dy):
    return dy * np.square(np.tanh(x))


def hard_tanh(x):
    """``x`` clipped to [-1, 1].

    Args:
        x: array-like.
    """
    return np.clip(_float(x), -1, 1)


def _hard_tanh_grad(x, y, dy):
    return dy * ((x > -1) & (x < 1))


def hard_shrink(x, threshold=0.5):
    """``x`` where ``abs(x) > threshold``, 0 elsewhere.

    Args:
        x: array-like.
        threshold: float, default 0.5.
    """
    x = _float(x)
    t = _check_threshold(threshold, "threshold", "hard_shrink")
    return np.where(np.abs(x) > t, x, 0).astype(x.dtype, copy=False)


def _hard_shrink_grad(x, y, dy, threshold=0.5):
    return dy * (np.abs(x) > threshold)


def threshold(x, threshold, default_value):
    """``x`` where x > threshold, ``default_value`` elsewhere.

    Both arguments are required (as in Keras), so in a layer pass
    ``functools.partial(threshold, threshold=..., default_value=...)``.

    Args:
        x: array-like.
        threshold: float. Values at or below it are replaced.
        default_value: float. Their replacement.
    """
    x = _float(x)
    t = _check_threshold(threshold, "threshold", "threshold")
    d = _check_threshold(default_value, "default_value", "threshold")
    return np.where(x > t, x, d).astype(x.dtype, copy=False)


def _threshold_grad(x, y, dy, threshold, default_value):
    return dy * (x > threshold)


def sparse_sigmoid(x):
    """0 for x <= -1, ``(x + 1) / 2`` for -1 < x < 1, 1 for x >= 1.

    Args:
        x: array-like.
    """
    x = _float(x)
    return np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1))).astype(x.dtype, copy=False)


def _sparse_sigmoid_grad(x, y, dy):
    return dy * (0.5 * ((x > -1) & (x < 1)))


def exponential(x):
    """``exp(x)``.

    Args:
        x: array-like.
    """
    return np.exp(_float(x))


def _exponential_grad(x, y, dy):
    return dy * y


def hard_sigmoid(x):
    """Piecewise-linear sigmoid (Keras 3): ``relu6(x + 3) / 6``, i.e. 0 for x <= -3,
    1 for x >= 3 and ``x / 6 + 0.5`` between.

    Args:
        x: array-like.
    """
    x = _float(x)
    return np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)


def _hard_sigmoid_grad(x, y, dy):
    return dy * (((x > -3) & (x < 3)) / 6)


def hard_silu(x):
    """Hard SiLU (hard swish): ``x * relu6(x + 3) / 6``: 0 for x < -3, x for x > 3.

    Args:
        x: array-like.
    """
    x = _float(x)
    return x * hard_sigmoid(x)


hard_swish = hard_silu


def _hard_silu_grad(x, y, dy):
    return dy * np.where(x <= -3, 0, np.where(x >= 3, 1, (2 * x + 3) / 6))


def mish(x):
    """``x * tanh(softplus(x))``.

    Args:
        x: array-like.
    """
    x = _float(x)
    return x * np.tanh(_softplus(x))


def _mish_grad(x, y, dy):
    t = np.tanh(_softplus(x))
    return dy * (t + x * (1 - t * t) * _sigmoid(x))


def log_sigmoid(x):
    """``log(1 / (1 + exp(-x)))``, computed without overflow as ``-softplus(-x)``.

    Args:
        x: array-like.
    """
    x = _float(x)
    return -_softplus(-x)


def _log_sigmoid_grad(x, y, dy):
    return dy * _sigmoid(-x)


def log_softmax(x, axis=-1):
    """``x - log(sum(exp(x)))`` along ``axis``, computed stably.

    Args:
        x: array-like.
        axis: int, default -1. The axis normalised over.
    """
    x = _float(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return (shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))).astype(x.dtype, copy=False)


def _log_softmax_grad(x, y, dy, axis=-1):
    return dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)


def sparsemax(x, axis=-1):
    """Euclidean projection onto the simplex along ``axis``: ``max(x - tau(x), 0)``, where
    tau makes the outputs sum to 1 (Martins & Astudillo, 2016).

    Args:
        x: array-like.
        axis: int, default -1.
    """
    x = _float(x)
    z = np.moveaxis(x, axis, -1)
    ordered = -np.sort(-z, axis=-1)
    k = np.arange(1, z.shape[-1] + 1, dtype=x.dtype)
    cumulative = np.cumsum(ordered, axis=-1)
    support = 1 + k * ordered > cumulative  # true for the first k(z) sorted entries
    k_z = np.sum(support, axis=-1, keepdims=True)
    tau = (np.take_along_axis(cumulative, k_z - 1, axis=-1) - 1) / k_z
    return np.moveaxis(np.maximum(z - tau, 0), -1, axis).astype(x.dtype, copy=False)


def _sparsemax_grad(x, y, dy, axis=-1):
    # Jacobian diag(s) - s sᵀ / |s| over the support s = (y > 0)
    s = y > 0
    mean = np.sum(dy * s, axis=axis, keepdims=True) / np.sum(s, axis=axis, keepdims=True)
    return s * (dy - mean)


def glu(x, axis=-1):
    """Gated linear unit: ``a * sigmoid(b)``, where ``a, b`` are the two halves of ``x`` along ``axis``.

    It halves that axis, so it is a function only: layers that keep their shape refuse it.

    Args:
        x: array-like; ``axis`` must have an even size.
        axis: int, default -1.
    """
    x = _float(x)
    if x.ndim == 0 or x.shape[axis] % 2:
        raise ValueError(f"glu: the size of axis {axis} of 'x' must be even, got shape {x.shape}")
    a, b = np.split(x, 2, axis=axis)
    return a * _sigmoid(b)


class ActivationSpec:
    """How a layer applies an activation and its derivative.

    Built-in functions run in the C++ kernels (``kind``); other callables are traced
    with fastnn's reverse-mode autodiff over ``fastnn.ops`` math.

    Attributes:
        name: serialisable name, or None for a custom callable.
        kind: the kernel's name (``ops.activation_forward``'s), or None.
        fn, grad: without a kernel, the function and its derivative ``grad(x, y, dy)``
            (None: derived by autodiff).
        alpha: the kernel's parameter (slope or scale).
        needs_input: whether backward needs the pre-activation values.
    """

    def __init__(self, name, kind=None, alpha=0.0, fn=None, grad=None):
        self.name = name
        self.kind = kind
        self.alpha = float(alpha)
        self.fn = fn
        self.grad = grad  # (x, y, dy) -> dx for a NumPy activation; None: autodiff traces fn
        self.needs_input = True if kind is None else ops.activation_needs_input(kind)

    @property
    def is_linear(self):
        return self.kind == "linear"

    def forward(self, x):
        if self.kind is not None:
            return ops.activation_forward(x, self.kind, self.alpha)
        return np.asarray(self.fn(x), dtype=x.dtype)

    def backward(self, x, y, dy):
        if self.kind is not None:
            return ops.activation_backward(dy, self.kind, y, x if self.needs_input else None, self.alpha)
        if self.grad is not None:
            return np.asarray(self.grad(x, y, dy), dtype=x.dtype)
        from . import autodiff

        return autodiff.vjp(self.fn, x, dy).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"ActivationSpec({self.name or self.fn!r})"


# name -> (kernel, alpha) for the C++ kernels, or (function, derivative) for the NumPy ones
_BY_NAME = {
    "linear": ("linear", 0.0), None: ("linear", 0.0), "relu": ("relu", 0.0),
    "sigmoid": ("sigmoid", 0.0), "tanh": ("tanh", 0.0), "softmax": ("softmax", 0.0),
    "leaky_relu": ("leaky_relu", 0.2), "elu": ("elu", 1.0), "selu": ("selu", 0.0),
    "gelu": ("gelu", 0.0), "softplus": ("softplus", 0.0), "swish": ("swish", 0.0),
    "silu": ("swish", 0.0),
}
_BY_FUNCTION = {linear: "linear", relu: "relu", sigmoid: "sigmoid", tanh: "tanh",
                softmax: "softmax", leaky_relu: "leaky_relu", elu: "elu", selu: "selu",
                gelu: "gelu", softplus: "softplus", swish: "swish"}
_NUMPY = {relu6: _relu6_grad, celu: _celu_grad, softsign: _softsign_grad, squareplus: _squareplus_grad,
          soft_shrink: _soft_shrink_grad, sparse_plus: _sparse_plus_grad, tanh_shrink: _tanh_shrink_grad,
          hard_tanh: _hard_tanh_grad, hard_shrink: _hard_shrink_grad, threshold: _threshold_grad,
          sparse_sigmoid: _sparse_sigmoid_grad, exponential: _exponential_grad, hard_sigmoid: _hard_sigmoid_grad,
          hard_silu: _hard_silu_grad, mish: _mish_grad, log_sigmoid: _log_sigmoid_grad,
          log_softmax: _log_softmax_grad, sparsemax: _sparsemax_grad}
_BY_NAME.update({fn.__name__: (fn, grad) for fn, grad in _NUMPY.items() if fn is not threshold})
_BY_NAME["hard_swish"] = (hard_silu, _hard_silu_grad)  # Keras' alias
# Keras accepts these names too, but a layer cannot use them by name alone: glu halves an axis,
# threshold has two required arguments.
_NOT_BY_NAME = {
    "glu": "it halves the last axis, so a layer that keeps its shape cannot apply it; call "
           "fastnn.activations.glu on a tensor instead",
    "threshold": "it needs 'threshold' and 'default_value'; pass functools.partial("
                 "fastnn.activations.threshold, threshold=..., default_value=...)",
}


def get(identifier):
    """Resolves an activation: a name, a fastnn.activations function, a callable, or None.

    Returns:
        ActivationSpec.

    Raises:
        ValueError: an unknown name. TypeError: neither a string nor a callable.
    """
    if isinstance(identifier, ActivationSpec):
        return identifier
    if identifier is None or isinstance(identifier, str):
        key = identifier.lower() if isinstance(identifier, str) else None
        if key in _NOT_BY_NAME:
            raise ValueError(f"Activation {identifier!r} cannot be given by name: {_NOT_BY_NAME[key]}")
        if key not in _BY_NAME:
            names = ", ".join(sorted(k for k in _BY_NAME if k))
            raise ValueError(f"Unknown activation {identifier!r}; expected one of: {names}")
        entry = _BY_NAME[key]
        if callable(entry[0]):
            return ActivationSpec(key, fn=entry[0], grad=entry[1])
        return ActivationSpec(key or "linear", entry[0], entry[1])
    if callable(identifier):
        partial = isinstance(identifier, functools.partial)
        base = identifier.func if partial else identifier
        if base in _BY_FUNCTION and not partial:
            return get(_BY_FUNCTION[base])
        if base in _NUMPY and not (partial and identifier.args):
            if not partial:
                return get(base.__name__)
            # the derivative takes the same keyword arguments (threshold=..., axis=...)
            return ActivationSpec(None, fn=identifier, grad=functools.partial(_NUMPY[base], **identifier.keywords))
        if base is glu:
            raise ValueError(f"Activation glu cannot be used by a layer: {_NOT_BY_NAME['glu']}")
        return ActivationSpec(None, fn=identifier)
    raise TypeError(f"activation must be a string, a callable or None, got {type(identifier).__name__}")


def serialize(spec):
    """The name of an activation spec (a custom callable gives its __name__)."""
    return spec.name if spec.name is not None else getattr(spec.fn, "__name__", repr(spec.fn))


__all__ = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "selu", "gelu", "softplus",
           "swish", "silu", "relu6", "celu", "softsign", "squareplus", "soft_shrink", "sparse_plus", "tanh_shrink",
           "hard_tanh", "hard_shrink", "threshold", "sparse_sigmoid", "exponential", "hard_sigmoid", "hard_silu",
           "hard_swish", "mish", "log_sigmoid", "log_softmax", "sparsemax", "glu", "get", "serialize"]
