"""Weight constraints (Keras 3's keras/src/constraints/constraints.py: names, defaults, formulas).

A constraint projects a weight after each optimizer step: the optimizer updates the model's
flat parameter buffer in one fused call, then writes ``constraint(w)`` into the view of each
constrained weight (``variable.assign(constraint(variable))`` in Keras). Layers take them as
``kernel_constraint=``, ``bias_constraint=``, ... by instance, class name or alias
(``"max_norm"``, ``"non_neg"``, ``"unit_norm"``, ``"min_max_norm"``).
"""

import inspect

import numpy as np

from . import config
from .saving import registration


def _norms(w, axis):
    w = np.asarray(w)
    return w, np.sqrt(np.sum(np.square(w), axis=_axis(axis), keepdims=True))


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _check_axis(axis, who):
    items = axis if isinstance(axis, (list, tuple)) else [axis]
    if not items or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise TypeError(f"{who}: 'axis' must be an int or a list of ints, got {axis!r}")
    return [int(a) for a in axis] if isinstance(axis, (list, tuple)) else int(axis)


def _check_number(value, arg, who, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise TypeError(f"{who}: '{arg}' must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{who}: '{arg}' must be >= {minimum}, got {value!r}")
    return value


class Constraint(registration.Configurable, kind="constraint"):
    """Base class for weight constraints: a stateless function ``w -> projected w``.

    Subclasses override ``__call__(w)`` (an array in, an array of the same shape out) and,
    when they take arguments, ``get_config()``.

    Example:
        >>> class NonNegative(fastnn.constraints.Constraint):
        ...     def __call__(self, w):
        ...         return w * (w >= 0)
        >>> layer = fastnn.layers.Dense(4, kernel_constraint=NonNegative())
    """

    def __call__(self, w):
        """The projected weight; the base class returns it unchanged."""
        return w

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"



class MaxNorm(Constraint):
    """Limits the norm of the weights incident to each unit: ``w * clip(n, 0, max_value) /
    (epsilon + n)`` with ``n = sqrt(sum(w**2, axis))``.

    Args:
        max_value: float, default 2. The largest norm.
        axis: int or list of ints, default 0: the axes the norm sums over. A Dense kernel
            (in, out): 0, one norm per output unit; a Conv2D kernel (h, w, in, out): [0, 1, 2].
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value = _check_number(max_value, "max_value", "MaxNorm", 0)
        self.axis = _check_axis(axis, "MaxNorm")

    def __call__(self, w):
        w, norms = _norms(w, self.axis)
        desired = np.clip(norms, 0, self.max_value)
        return w * (desired / (config.epsilon() + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Makes the weights non-negative: ``maximum(w, 0)``."""

    def __call__(self, w):
        return np.maximum(np.asarray(w), 0)


class UnitNorm(Constraint):
    """Scales the weights incident to each unit to norm 1: ``w / (epsilon + n)`` with
    ``n = sqrt(sum(w**2, axis))``.

    Args:
        axis: int or list of ints, default 0 (as MaxNorm).
    """

    def __init__(self, axis=0):
        self.axis = _check_axis(axis, "UnitNorm")

    def __call__(self, w):
        w, norms = _norms(w, self.axis)
        return w / (config.epsilon() + norms)

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Keeps the norm of the weights incident to each unit within [min_value, max_value]:
    ``w * desired / (epsilon + n)`` with ``desired = rate * clip(n, min_value, max_value) +
    (1 - rate) * n``.

    Args:
        min_value: float, default 0.0. The smallest norm.
        max_value: float, default 1.0. The largest norm.
        rate: float, default 1.0: 1 enforces the bounds at once, less moves towards them.
        axis: int or list of ints, default 0 (as MaxNorm).
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _check_number(min_value, "min_value", "MinMaxNorm", 0)
        self.max_value = _check_number(max_value, "max_value", "MinMaxNorm", 0)
        if self.max_value < self.min_value:
            raise ValueError(f"MinMaxNorm: 'max_value' must be >= 'min_value', got min_value={min_value!r}, "
                             f"max_value={max_value!r}")
        self.rate = _check_number(rate, "rate", "MinMaxNorm")
        self.axis = _check_axis(axis, "MinMaxNorm")

    def __call__(self, w):
        w, norms = _norms(w, self.axis)
        desired = self.rate * np.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (config.epsilon() + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


# Keras' lowercase aliases (the classes themselves)
max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm

_BY_NAME = {cls.__name__: cls for cls in (Constraint, MaxNorm, NonNeg, UnitNorm, MinMaxNorm)}
_BY_NAME.update({"constraint": Constraint, "max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm,
                 "min_max_norm": MinMaxNorm})


def serialize(constraint):
    """A constraint as a JSON-ready description, which ``deserialize`` / ``get`` turn back.

    Args:
        constraint: a Constraint, or None.

    Returns:
        ``{"module", "class_name", "config", "registered_name"}``, or None for None.
    """
    if constraint is None:
        return None
    from .saving import serialization

    return serialization.serialize_keras_object(constraint)


def deserialize(config, custom_objects=None):
    """The constraint a ``serialize`` description (or a class name) stands for.

    Args:
        config: dict with "class_name" and "config", or a name.
        custom_objects: optional dict of name -> class for constraints of your own.
    """
    if isinstance(config, str):
        return get(config) if custom_objects is None or config not in custom_objects else custom_objects[config]()
    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(f"constraints.deserialize: 'config' must be a dict with 'class_name' and 'config' (from "
                        f"serialize) or a name, got {config!r}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or _BY_NAME.get(name)
    if cls is None:
        cls = registration.builtin_class("constraint", name)
    if cls is None:
        from .saving import serialization

        return serialization.deserialize_keras_object(config, custom_objects=custom_objects)
    return cls.from_config(config.get("config") or {})


def get(identifier):
    """A constraint from None, a name ("max_norm", "NonNeg", ...), a serialize() dict, a
    Constraint class or instance, or any callable ``w -> w``.

    Raises:
        ValueError: an unknown name. TypeError: anything else.
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"Unknown constraint {identifier!r}; expected one of: {', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[identifier]()
    if inspect.isclass(identifier):
        if not issubclass(identifier, Constraint):
            raise TypeError(f"constraint must be a Constraint class or instance, a name, a dict or a callable, got "
                            f"the class {identifier.__name__}")
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"constraint must be None, a name, a dict, a Constraint or a callable, got "
                    f"{type(identifier).__name__}")


__all__ = ["Constraint", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm", "max_norm", "non_neg", "unit_norm",
           "min_max_norm", "get", "serialize", "deserialize"]
