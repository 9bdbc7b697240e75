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


class ActivationSpec:
    """How a layer applies an activation and its derivative.

    Built-in functions run in the C++ kernels (``kind``); other callables are traced
    with fastnn's reverse-mode autodiff over ``fastnn.ops`` math.

    Attributes:
        name: serialisable name, or None for a custom callable.
        kind: the kernel's name (``ops.activation_forward``'s), or None.
        alpha: the kernel's parameter (slope or scale).
        needs_input: whether backward needs the pre-activation values.
    """

    def __init__(self, name, kind=None, alpha=0.0, fn=None):
        self.name = name
        self.kind = kind
        self.alpha = float(alpha)
        self.fn = fn
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
        from . import autodiff

        return autodiff.vjp(self.fn, x, dy).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"ActivationSpec({self.name or self.fn!r})"


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
        if key not in _BY_NAME:
            names = ", ".join(sorted(k for k in _BY_NAME if k))
            raise ValueError(f"Unknown activation {identifier!r}; expected one of: {names}")
        kernel, alpha = _BY_NAME[key]
        return ActivationSpec(key or "linear", kernel, alpha)
    if callable(identifier):
        base = identifier.func if isinstance(identifier, functools.partial) else identifier
        if base in _BY_FUNCTION and not isinstance(identifier, functools.partial):
            return get(_BY_FUNCTION[base])
        return ActivationSpec(None, fn=identifier)
    raise TypeError(f"activation must be a string, a callable or None, got {type(identifier).__name__}")


def serialize(spec):
    """The name of an activation spec (a custom callable gives its __name__)."""
    return spec.name if spec.name is not None else getattr(spec.fn, "__name__", repr(spec.fn))


__all__ = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "selu", "gelu", "softplus",
           "swish", "silu", "get", "serialize"]
