"""Weight regularizers: a penalty added to the loss and its gradient added to the weights'.

``Dense(kernel_regularizer='l2')`` or ``regularizers.L2(0.01)``. The penalty of every
regularised weight is part of the loss that ``fit`` reports and differentiates.
"""

import numpy as np

from .saving import registration


class Regularizer(registration.Configurable, kind="regularizer"):
    """Base class: ``penalty(w)`` is a float, ``gradient(w)`` its derivative (an array)."""

    def __call__(self, w):
        return self.penalty(w)

    def penalty(self, w):
        return 0.0

    def gradient(self, w):
        return np.zeros_like(w)


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w²)`` (defaults 0.0 and 0.0).

    Args:
        l1: float >= 0.
        l2: float >= 0.
    """

    def __init__(self, l1=0.0, l2=0.0):
        for name, value in (("l1", l1), ("l2", l2)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{type(self).__name__}: '{name}' must be a finite float >= 0, got {value}")
        self.l1, self.l2 = float(l1), float(l2)

    def penalty(self, w):
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.square(w, dtype=np.float64).sum())
        return total

    def gradient(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += self.l1 * np.sign(w)
        if self.l2:
            g += (2 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|w|)``, default l1 = 0.01."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(w²)``, default l2 = 0.01."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def l1_l2(l1=0.01, l2=0.01):
    """L1L2 with both defaults 0.01 (Keras' function form)."""
    return L1L2(l1=l1, l2=l2)


l1 = L1
l2 = L2

_ALIASES = {"l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": l1_l2}


def get(identifier):
    """A regularizer from None, a name ("l1", "l2", "l1_l2"), or an instance."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _ALIASES:
            raise ValueError(f"Unknown regularizer {identifier!r}; expected l1, l2 or l1_l2")
        return _ALIASES[key]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        return globals()[identifier["class_name"]].from_config(identifier.get("config", {}))
    raise TypeError(f"regularizer must be None, a name or a Regularizer, got {type(identifier).__name__}")


def serialize(regularizer):
    """A regularizer as a JSON-ready description, which ``get`` turns back into one.

    Args:
        regularizer: a Regularizer, or None.

    Returns:
        ``{"class_name": ..., "config": regularizer.get_config()}``, or None for None.
    """
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


__all__ = ["Regularizer", "L1L2", "L1", "L2", "l1_l2", "l1", "l2", "get", "serialize"]
