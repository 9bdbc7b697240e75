"""Optimizers (Keras 3 names, arguments, defaults and update formulas).

``base.py`` holds the `Optimizer` base class (learning rate and schedules, clipping,
weight decay, moving average, state); each algorithm has its own file (``sgd.py``,
``adam.py`` ...) with its update: one fused kernel call from ``fastnn.ops`` over the
model's flat parameter buffer. ``schedules`` holds the learning-rate schedules.
"""

from . import schedules
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .base import Optimizer
from .nadam import Nadam
from .rmsprop import RMSprop
from .sgd import SGD

_BY_NAME = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adadelta": Adadelta, "adam": Adam,
            "adamw": AdamW, "nadam": Nadam}


def get(identifier):
    """An Optimizer from a name ("adam"), class or instance.

    Args:
        identifier: a name (case-insensitive: "sgd", "adagrad", "rmsprop", "adadelta",
            "adam", "adamw", "nadam"), an Optimizer subclass, or an Optimizer.

    Returns:
        The instance itself, or a new instance with default arguments.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"Unknown optimizer {identifier!r}; expected one of: {', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[key]()
    raise TypeError(f"optimizer must be a name or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer):
    """The optimizer as ``{"class_name": ..., "config": optimizer.get_config()}``."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Nadam", "schedules", "get",
           "serialize"]
