"""The Layer contract (DESIGN.md): build, forward, backward, get_config.

A layer owns Variables (its weights). ``forward(x, training)`` returns the output and keeps
what ``backward`` needs; ``backward(dy)`` returns the gradient with respect to the input and
writes the weights' gradients into ``layer.grads`` (same order as ``get_weights()``).
Inside a model the weights and gradients are views into two flat buffers, so that one
optimizer call updates the whole model.
"""

import re

import numpy as np

from .. import config, initializers, regularizers
from ..saving import registration

_NAME_COUNTS = {}


def _unique_name(prefix):
    count = _NAME_COUNTS.get(prefix, 0)
    _NAME_COUNTS[prefix] = count + 1
    return prefix if count == 0 else f"{prefix}_{count}"


def _snake_case(name):
    """Keras' naming: ReLU -> re_lu, PReLU -> p_re_lu, LeakyReLU -> leaky_re_lu, Dense -> dense."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class Variable:
    """A named weight array.

    Attributes:
        name: e.g. "dense/kernel".
        trainable: whether the optimizer updates it.
        regularizer: a Regularizer or None.
        grad: the gradient array written by the layer's backward (same shape), or None.
    """

    def __init__(self, name, value, trainable=True, regularizer=None):
        self.name = name
        self._value = value
        self.trainable = trainable
        self.regularizer = regularizer
        self.grad = np.zeros_like(value) if trainable else None

    @property
    def value(self):
        """The array itself (not a copy): layers read it, optimizers update it in place."""
        return self._value

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    def numpy(self):
        """A copy of the current value."""
        return self._value.copy()

    def assign(self, value):
        """Copies `value` into the variable (shape must match; dtype is converted)."""
        value = np.asarray(value)
        if value.shape != self._value.shape:
            raise ValueError(f"Variable '{self.name}': expected shape {self._value.shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Variable '{self.name}': the new value contains NaN or inf")
        self._value[...] = value

    def _rebind(self, value, grad):
        """Moves the variable's storage (and its gradient's) into the given views."""
        value[...] = self._value
        self._value = value
        if grad is not None:
            grad[...] = 0
            self.grad = grad

    def __repr__(self):
        return f"<Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"


class Layer:
    """Base class of all layers.

    Args:
        name: str, default None (derived from the class name, made unique).
        dtype: "float32" or "float64", default fastnn.config.floatx().
        trainable: bool, default True.
        input_shape: tuple, optional: the input shape without the batch axis, for the
            first layer of a Sequential model.
        input_dim: int, optional: shorthand for ``input_shape=(input_dim,)``.
        activity_regularizer: optional regularizer of the layer's output: its penalty is
            added to the loss (and its gradient to the output's) during training.

    Subclasses override ``build``, ``forward``, ``backward`` and ``get_config``.

    Masks (Keras): a layer with ``supports_masking`` passes the mask of its input on
    (``compute_mask``); a layer that produces one (Embedding with mask_zero=True) overrides
    ``compute_mask``; a layer that uses one (recurrent layers) sets ``_consumes_mask`` and
    takes ``forward(x, training, mask=...)``.
    """

    supports_masking = False
    _consumes_mask = False

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None, input_dim=None,
                 batch_size=None, activity_regularizer=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        self.name = name if name is not None else _unique_name(_snake_case(type(self).__name__))
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"{type(self).__name__}: 'name' must be a non-empty string, got {name!r}")
        self._dtype = np.dtype(dtype or config.floatx())
        if self._dtype not in (np.float32, np.float64):
            raise ValueError(f"{type(self).__name__}: 'dtype' must be float32 or float64, got {dtype!r}")
        self.trainable = bool(trainable)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        self._declared_input_shape = None
        if input_shape is not None:
            self._declared_input_shape = _as_shape(input_shape, type(self).__name__)
        self._batch_size = batch_size
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._variables = []
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self._need_input_grad = True  # a model turns this off for its first layer
        self._cache = None

    # ---- weights ------------------------------------------------------------------------
    @property
    def dtype(self):
        return self._dtype.name

    def add_weight(self, name, shape, initializer="glorot_uniform", regularizer=None, trainable=True):
        """Creates a Variable (during build) and returns it."""
        init = initializers.get(initializer)
        value = np.array(init(tuple(shape), self._dtype), dtype=self._dtype, order="C")  # keeps 0-d shapes
        if value.shape != tuple(shape):
            raise ValueError(f"{self.name}: initializer for '{name}' returned shape {value.shape}, expected {tuple(shape)}")
        var = Variable(f"{self.name}/{name}", value, trainable=trainable,
                       regularizer=regularizers.get(regularizer))
        self._variables.append(var)
        return var

    @property
    def weights(self):
        """All Variables (trainable first, as Keras lists them)."""
        return self.trainable_weights + self.non_trainable_weights

    @property
    def trainable_weights(self):
        return [v for v in self._variables if v.trainable and self.trainable]

    @property
    def non_trainable_weights(self):
        return [v for v in self._variables if not (v.trainable and self.trainable)]

    @property
    def grads(self):
        """Gradients written by the last backward, in the order of get_weights()."""
        return [v.grad for v in self.weights]

    def get_weights(self):
        """Copies of the weights' values, in the order of ``weights``."""
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        """Sets the weights from a list of arrays (shapes must match); nothing changes on error."""
        current = self.weights
        if len(weights) != len(current):
            raise ValueError(f"{self.name}: expected {len(current)} weight arrays, got {len(weights)}")
        arrays = [np.asarray(w) for w in weights]
        for var, value in zip(current, arrays):
            if value.shape != var.shape:
                raise ValueError(f"{self.name}: weight '{var.name}' has shape {var.shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{self.name}: weight '{var.name}' would contain NaN or inf")
        for var, value in zip(current, arrays):
            var.assign(value)

    def count_params(self):
        return int(sum(v.value.size for v in self._variables))

    # ---- the contract -----------------------------------------------------------------------
    def build(self, input_shape):
        """Creates the weights for `input_shape` (batch axis None) and returns the output shape."""
        return tuple(input_shape)

    def forward(self, x, training=False):
        """Returns the output for input x; keeps what backward needs when training."""
        return x

    def backward(self, dy):
        """Returns dL/dx for dy = dL/dy and writes the weights' gradients."""
        return dy

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output for input `inputs` carrying `mask` (or None)."""
        return mask if self.supports_masking else None

    def get_config(self):
        """The arguments that rebuild this layer (``type(layer).from_config(config)``)."""
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._declared_input_shape is not None:
            cfg["input_shape"] = self._declared_input_shape
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, cfg):
        return cls(**cfg)

    # ---- helpers ------------------------------------------------------------------------------
    def ensure_built(self, input_shape):
        """Builds once; a later different input shape is a clear error."""
        input_shape = tuple(None if i == 0 else d for i, d in enumerate(input_shape))
        if not self.built:
            self.input_shape = input_shape
            self.output_shape = tuple(self.build(input_shape))
            self.built = True
        elif not _compatible(self.input_shape, input_shape):
            raise ValueError(f"Layer '{self.name}' was built for input shape {self.input_shape}, "
                             f"got {input_shape}")
        return self.output_shape

    #: The dtype inputs are converted to (an Embedding takes integer ids).
    @property
    def input_dtype(self):
        return self._dtype

    def __call__(self, x, training=False, mask=None):
        """Runs the layer on x (converted to the layer's input dtype), building it on first use."""
        x = _as_input(x, np.dtype(self.input_dtype), self.name)
        self.ensure_built(x.shape)
        if mask is not None and self._consumes_mask:
            return self.forward(x, training=training, mask=np.asarray(mask, bool))
        return self.forward(x, training=training)

    def _check_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(x, training=True) first")
        return self._cache

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own layers register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "layer")


registration.register_builtin(Layer, "layer")  # the base is a usable (identity) layer too
# ---- end of registration ------------------------------------------------------------------------


def _as_shape(shape, who):
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: a shape must be a tuple of ints, got {shape!r}") from None
    if any(d is not None and d < 0 for d in shape):
        raise ValueError(f"{who}: shape dimensions must be >= 0, got {shape}")
    return shape


def _compatible(expected, got):
    if len(expected) != len(got):
        return False
    return all(e is None or g is None or e == g for e, g in zip(expected, got))


def _as_input(x, dtype, who):
    """x as a C-contiguous array of dtype: converted once, strings and objects refused;
    non-integer values for an integer dtype (token ids) refused rather than truncated."""
    if isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous:
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: expected numeric input, got an array of dtype {arr.dtype}")
    if np.dtype(dtype).kind in "iu" and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(np.floor(arr) == arr):
            raise ValueError(f"{who}: expected integer ids, got non-integer values")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_finite(x, who, what="x"):
    """ValueError when x holds NaN or inf."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{who}: '{what}' contains NaN or inf")
