"""Layers (Keras names and arguments). See layers/base.py for the contract."""

from .activation import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .base import Layer, Variable
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .normalization import BatchNormalization
from .preprocessing import Normalization, Rescaling

_CLASSES = {cls.__name__: cls for cls in (Activation, Dense, Dropout, Flatten, InputLayer, Reshape, ELU,
                                          LeakyReLU, PReLU, ReLU, Softmax, Normalization, Rescaling,
                                          BatchNormalization)}


def serialize(layer):
    """{'class_name': ..., 'config': ...}: enough to rebuild the layer with ``deserialize``."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config, custom_objects=None):
    """A layer from ``serialize``'s output (custom layer classes via custom_objects)."""
    classes = {**_CLASSES, **(custom_objects or {})}
    name = config["class_name"]
    if name not in classes:
        raise ValueError(f"Unknown layer class {name!r}; pass it in custom_objects")
    return classes[name].from_config(config["config"])


__all__ = ["Layer", "Variable", "Input", "InputLayer", "Dense", "Activation", "Dropout", "Flatten", "Reshape",
           "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Normalization", "Rescaling", "BatchNormalization",
           "serialize", "deserialize"]
