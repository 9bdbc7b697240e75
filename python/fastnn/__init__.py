"""fastnn: a CPU-first neural-network library with a Keras-style API.

Keras programs run with ``import fastnn as keras``:

    >>> import fastnn as keras
    >>> model = keras.Sequential([
    ...     keras.layers.Dense(64, activation="relu", input_shape=(64,)),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

The hot paths are C++ kernels (Eigen + OpenMP) in the extension ``fastnn._core``;
``fastnn.ops`` is their documented Python face.
"""

from ._version import __version__
from .runtime import load_core as _load_core

_core = _load_core()  # before anything else: the OpenMP runtime reads its settings as it loads
from . import config, isa
from .config import get_num_threads, set_num_threads, show_config
from . import (activations, autodiff, callbacks, constraints, datasets, distribution, initializers, layers, losses, metrics,
               models, ops, optimizers, preprocessing, pruning, quantizers, regularizers, saving, utils, wrappers)
from .keras_tensor import KerasTensor
from .layers import Input, Layer, Variable
from .models import Model, Sequential
from .operation import Operation

# The public API (``from fastnn import *``): the classes and functions below and the API
# submodules. ``__version__`` stays out, so that a star import does not overwrite the
# importing module's own; it is read as ``fastnn.__version__``.
__all__ = ["Sequential", "Model", "Input", "KerasTensor", "Layer", "Variable", "Operation", "layers", "losses",
           "optimizers", "metrics", "initializers", "activations", "regularizers", "constraints", "callbacks", "utils", "datasets",
           "distribution", "quantizers", "isa",
           "models", "ops", "preprocessing", "pruning", "saving", "wrappers", "autodiff", "config", "get_num_threads",
           "set_num_threads", "show_config"]
