"""Core layers: Input, Dense, Activation, Dropout, Flatten, Reshape."""

import numpy as np

from .. import _core, activations, initializers, regularizers
from ..utils import rng
from .base import Layer

_LINEAR = activations.get("linear").kind


class InputLayer(Layer):
    """Declares a model's input shape (without the batch axis).

    Args:
        shape: tuple, e.g. ``(784,)`` or ``(28, 28, 1)``.
        batch_size: optional int.
        name: optional str.
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, input_shape=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: 'shape' is required, e.g. Input(shape=(784,))")
        # Integer inputs (token ids for an Embedding) are declared with an integer dtype.
        self._int_dtype = np.dtype(dtype) if dtype is not None and np.dtype(dtype).kind in "iu" else None
        super().__init__(name=name, dtype=None if self._int_dtype is not None else dtype, input_shape=shape,
                         batch_size=batch_size, **kwargs)
        self.shape = self._declared_input_shape

    @property
    def dtype(self):
        return self._int_dtype.name if self._int_dtype is not None else self._dtype.name

    def get_config(self):
        return {"shape": self.shape, "batch_size": self._batch_size, "dtype": self.dtype, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, **kwargs):
    """The input of a Sequential model: ``Sequential([Input(shape=(784,)), Dense(10)])``."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name, **kwargs)


class _OutputActivation:
    """Mixin: a layer whose activation a model may fuse with the loss.

    When its activation is softmax (or sigmoid) and the loss is the matching cross-entropy,
    a model trains on the logits (the loss kernel applies the activation stably, gradient
    p - y) and sets ``_emit_logits``; predictions still apply the activation.
    """

    _emit_logits = False

    def output_activation(self):
        """'softmax', 'sigmoid' or None."""
        name = self._act.name
        return name if name in ("softmax", "sigmoid") else None


class Dense(_OutputActivation, Layer):
    """Densely connected layer: ``activation(x @ kernel + bias)`` over the last axis.

    Forward is one C++ call (GEMM with the bias added inside the product, then the
    activation); backward is one call (activation derivative, the two products, the bias
    sum).

    Args:
        units: int > 0, output size.
        activation: name, function or None (default: linear).
        use_bias: bool, default True.
        kernel_initializer: default "glorot_uniform". Kernel shape (in, units).
        bias_initializer: default "zeros".
        kernel_regularizer, bias_regularizer: default None.
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    Example:
        >>> import fastnn
        >>> layer = fastnn.layers.Dense(3, activation="relu", input_shape=(4,))
    """

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense: 'units' must be a positive int, got {units!r}")
        self.units = int(units)
        self._act = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel = self.bias = None

    @property
    def activation(self):
        return self._act

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Dense '{self.name}': input needs at least 2 axes (batch, features), got {input_shape}")
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"Dense '{self.name}': the last axis of the input must be known, got {input_shape}")
        self.kernel = self.add_weight("kernel", (features, self.units), self.kernel_initializer,
                                      self.kernel_regularizer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False):
        act = self._act
        bias = self.bias.value if self.use_bias else None
        if self._emit_logits:  # a model fuses the activation with its loss
            y, _ = _core.dense_forward(x, self.kernel.value, bias, _LINEAR)
            if training:
                self._cache = (x, None, y, None)
            return y
        if act.kind is None:  # a custom callable: linear here, then the traced function
            z, _ = _core.dense_forward(x, self.kernel.value, bias, _LINEAR)
            y = act.forward(z)
            if training:
                self._cache = (x, z, y, act)
            return y
        y, z = _core.dense_forward(x, self.kernel.value, bias, act.kind, act.alpha,
                                   training and act.needs_input)
        if training:
            self._cache = (x, z, y, act)
        return y

    def backward(self, dy):
        x, z, y, act = self._check_cache()
        kind, alpha = _LINEAR, 0.0
        if act is not None and act.kind is None:
            dy = act.backward(z, y, dy)
        elif act is not None:
            kind, alpha = act.kind, act.alpha
        trainable = self.trainable and self.kernel.trainable
        dw = self.kernel.grad if trainable else None
        db = self.bias.grad if (self.use_bias and trainable) else None
        return _core.dense_backward(x, self.kernel.value, z, y, dy, kind, alpha, dw, db, False,
                                    self._need_input_grad)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=activations.serialize(self._act), use_bias=self.use_bias,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer))
        return cfg


class Activation(_OutputActivation, Layer):
    """Applies an activation function: ``Activation('relu')``.

    Args:
        activation: name, fastnn.activations function, or a callable.
    """

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self._act = activations.get(activation)

    @property
    def activation(self):
        return self._act

    def forward(self, x, training=False):
        if self._emit_logits:
            if training:
                self._cache = (None, None, None)
            return x
        y = self._act.forward(x)
        if training:
            self._cache = (x if self._act.needs_input else None, y, self._act)
        return y

    def backward(self, dy):
        x, y, act = self._check_cache()
        if act is None:
            return dy
        return act.backward(x, y, np.ascontiguousarray(dy, dtype=y.dtype))

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = activations.serialize(self._act)
        return cfg


class Dropout(Layer):
    """Sets a fraction `rate` of the inputs to zero during training (inverted dropout).

    Kept values are scaled by 1 / (1 - rate), so inference is the identity. The mask comes
    from a counter-based generator seeded per call: reproducible under
    ``fastnn.utils.set_random_seed``, identical on any thread count.

    Args:
        rate: float in [0, 1).
        noise_shape: optional tuple: the mask's shape, broadcast over the input (None
            entries take the input's size), e.g. ``(batch, 1, features)``.
        seed: optional int: a generator of this layer's own.
    """

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: 'rate' must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._generator = rng.generator_for(seed) if seed is not None else None

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            self._cache = (None, None)
            return x
        seed = rng.draw_seed(self._generator)
        if self.noise_shape is None:
            self._cache = (seed, None)
            return _core.dropout_forward(x, self.rate, seed)
        shape = tuple(x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
        mask = _core.dropout_forward(np.ones(shape, x.dtype), self.rate, seed)
        self._cache = (seed, mask)
        return x * mask

    def backward(self, dy):
        seed, mask = self._check_cache()
        if seed is None:
            return dy
        if mask is not None:
            return dy * mask
        return _core.dropout_backward(np.ascontiguousarray(dy), self.rate, seed)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
        return cfg


class Flatten(Layer):
    """Flattens every axis after the batch axis: (batch, ...) -> (batch, prod(...))."""

    def build(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else int(np.prod(rest, dtype=np.int64))
        return (input_shape[0], size if rest else 1)

    def forward(self, x, training=False):
        if training:
            self._cache = x.shape
        size = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        return x.reshape(x.shape[0], size)  # explicit size: an empty batch cannot infer -1

    def backward(self, dy):
        return dy.reshape(self._check_cache())


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (without the batch axis; one -1 allowed)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1 or any(d < -1 or d == 0 for d in self.target_shape):
            raise ValueError(f"Reshape: 'target_shape' must hold positive sizes and at most one -1, got {target_shape}")

    def build(self, input_shape):
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0],) + self.target_shape
        size = int(np.prod(rest, dtype=np.int64))
        known = int(np.prod([d for d in self.target_shape if d != -1], dtype=np.int64))
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"Reshape '{self.name}': cannot reshape {rest} into {self.target_shape}")
            return (input_shape[0],) + tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(f"Reshape '{self.name}': cannot reshape {rest} ({size} values) into "
                             f"{self.target_shape} ({known} values)")
        return (input_shape[0],) + self.target_shape

    def forward(self, x, training=False):
        if training:
            self._cache = x.shape
        target = self.build((None,) + x.shape[1:])[1:]  # -1 resolved from the sample shape
        return x.reshape((x.shape[0],) + target)

    def backward(self, dy):
        return dy.reshape(self._check_cache())

    def get_config(self):
        cfg = super().get_config()
        cfg["target_shape"] = self.target_shape
        return cfg
