"""Core layers: Input, Dense, Activation, Dropout, Flatten, Reshape."""

import math

import numpy as np

from .. import activations, constraints, initializers, ops, quantizers, regularizers
from ..keras_tensor import KerasTensor
from ..ops.pool import standardize_data_format
from ..utils import rng
from . import _quantization, _validation
from .base import Layer, _as_shape, _unique_name, trainable_grad


class InputLayer(Layer):
    """The input of a model: a symbolic tensor of the given shape (Keras' ``InputLayer``).

    Usually made with ``keras.Input(shape)``, which returns its output tensor.

    Args:
        shape: tuple without the batch axis, e.g. ``(784,)`` or ``(28, 28, 1)``.
        batch_size: optional int.
        dtype: default floatx ("float32"); an integer dtype for token ids.
        batch_shape: optional tuple with the batch axis (instead of shape and batch_size).
        name: optional str (default "input_layer", made unique).
    """

    _is_input_layer = True

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, input_tensor=None,
                 optional=False, name=None, input_shape=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if batch_shape is not None:
            if shape is not None or batch_size is not None:  # Keras: one or the other
                raise ValueError(f"InputLayer: give 'batch_shape' or 'shape' (with 'batch_size'), not both; got "
                                 f"shape={shape!r}, batch_size={batch_size!r}, batch_shape={batch_shape!r}")
            batch_shape = _as_shape(batch_shape, "InputLayer")
            if not batch_shape:
                raise ValueError("InputLayer: 'batch_shape' needs the batch axis, got ()")
            shape, batch_size = batch_shape[1:], batch_shape[0]
        if shape is None:
            raise ValueError("InputLayer: 'shape' is required, e.g. Input(shape=(784,))")
        if sparse:
            raise ValueError("InputLayer: sparse inputs are not supported")
        if input_tensor is not None:
            raise ValueError("InputLayer: 'input_tensor' is not supported; use the tensor itself as the input")
        # Integer inputs (token ids for an Embedding) are declared with an integer dtype.
        self._int_dtype = np.dtype(dtype) if dtype is not None and np.dtype(dtype).kind in "iub" else None
        super().__init__(name=name or _unique_name("input_layer"),
                         dtype=None if self._int_dtype is not None else dtype, input_shape=shape,
                         batch_size=batch_size, **kwargs)
        self.shape = self._declared_input_shape
        self.input_shape = self.output_shape = (batch_size,) + tuple(self.shape)
        self.built = True
        from ..graph import Node

        Node(self, (), {}, KerasTensor(self.output_shape, self.dtype, name=self.name))

    @property
    def dtype(self):
        return self._int_dtype.name if self._int_dtype is not None else self._dtype.name

    @property
    def input_dtype(self):
        return self.dtype

    def forward(self, x, training=False):
        return x, None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy

    def get_config(self):
        return {"batch_shape": [self._batch_size] + list(self.shape), "dtype": self.dtype, "name": self.name}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        if "shape" in cfg and "batch_shape" not in cfg:  # files written before Keras 3's layout
            cfg["batch_shape"] = [cfg.pop("batch_size", None)] + list(cfg.pop("shape"))
        cfg.pop("sparse", None), cfg.pop("ragged", None), cfg.pop("optional", None)
        return cls(**cfg)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None, tensor=None,
          optional=False):
    """A symbolic input of a model (Keras' ``keras.Input``).

    Args:
        shape: tuple without the batch axis, e.g. ``(784,)``; None entries for sizes that
            vary (e.g. ``(None, 64)`` for sequences of any length).
        batch_size: optional int.
        dtype: default floatx ("float32"); e.g. "int32" for token ids.
        sparse: must be None or False.
        batch_shape: optional tuple with the batch axis (instead of shape and batch_size).
        name: optional str, default "input_layer" (made unique): the key of this input
            when data is given as a dict.
        tensor: must be None.
        optional: accepted for Keras compatibility.

    Returns:
        KerasTensor: call layers on it, then ``keras.Model(inputs, outputs)``. In a
        ``Sequential`` list it declares the input shape.

    Example:
        >>> inputs = fastnn.Input(shape=(784,))
        >>> outputs = fastnn.layers.Dense(10, activation="softmax")(inputs)
        >>> model = fastnn.Model(inputs, outputs)
    """
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, batch_shape=batch_shape,
                       input_tensor=tensor, optional=optional, name=name)
    return layer.output


class _OutputActivation:
    """Mixin: a layer whose activation a model may fuse with the loss.

    When its activation is softmax (or sigmoid) and the loss the matching cross-entropy, a
    model calls ``forward(x, training, logits=True)`` on that output's node: the layer
    returns the logits and the loss kernel applies the activation stably (gradient p - y).
    """

    def output_activation(self):
        """'softmax', 'sigmoid' or None."""
        name = self._act.name
        return name if name in ("softmax", "sigmoid") else None


class Dense(_quantization.Int8Quantizable, _OutputActivation, Layer):
    """Densely connected layer: ``activation(x @ kernel + bias)`` over the last axis.

    Forward is one C++ call (GEMM with the bias added inside the product, then the
    activation); backward is one call (activation derivative, the two products, the bias
    sum).

    Quantized (``model.quantize("int8")`` or ``dtype="int8_from_float32"``), as Keras 3: the
    kernel is int8 (non-trainable) with a float ``kernel_scale`` of shape (units,), the
    weights are kernel, bias, kernel_scale; each input row is quantized at run time and
    ``activation((x_q @ kernel) / (x_scale · kernel_scale) + bias)`` runs in one int8 call
    (``fastnn.quantizers.int8_dense``: AVX-512 VNNI, AVX2 or plain C++). Inference only.

    Args:
        units: int > 0, output size.
        activation: name, function or None (default: linear).
        use_bias: bool, default True.
        kernel_initializer: default "glorot_uniform". Kernel shape (in, units).
        bias_initializer: default "zeros".
        kernel_regularizer, bias_regularizer: default None.
        kernel_constraint, bias_constraint: default None: a fastnn.constraints constraint
            applied to the weight after each optimizer step.
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    Example:
        >>> import fastnn
        >>> layer = fastnn.layers.Dense(3, activation="relu", input_shape=(4,))
    """

    supports_masking = True
    _size_arguments = ("units",)

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense: 'units' must be a positive int, got {units!r}")
        self.kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint", "Dense")
        self.bias_constraint = _validation.constraint(bias_constraint, "bias_constraint", "Dense")
        self.units = int(units)
        self._act = _validation.activation(activation, "activation", "Dense")
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
        self.compute_output_shape(input_shape)
        if self._quantization_mode:
            self.kernel = self._add_int8_weight("kernel", (input_shape[-1], self.units))
        else:
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer=self.kernel_initializer,
                                          regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                          name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
        if self._quantization_mode:
            self.kernel_scale = self._add_scale_weight("kernel_scale", (self.units,))

    def _int8_quantize(self):
        values, scale = quantizers.abs_max_quantize(self.kernel.value, axis=0)  # per output unit
        self._swap_to_int8([("kernel", values)], [("kernel_scale", scale.reshape(self.units))])

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Dense '{self.name}': input needs at least 2 axes (batch, features), got {input_shape}")
        if input_shape[-1] is None:
            raise ValueError(f"Dense '{self.name}': the last axis of the input must be known, got {input_shape}")
        if self.kernel is not None and input_shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Dense '{self.name}': built for {self.kernel.shape[0]} input features, got inputs of "
                             f"shape {input_shape}")
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False, logits=False):
        act = self._act
        bias = self.bias.value if self.use_bias else None
        if self._quantization_mode:
            fused, after = _quantization.int8_activation(act, logits)
            y = quantizers.int8_dense(x, self._int8_packed(self.kernel.value), self.kernel_scale.value, bias, fused)
            y = y.astype(self._dtype, copy=False)
            return (act.forward(y) if after else y), None
        if logits or act.kind is None:  # linear here (a custom callable: its traced function after)
            z = ops.dense(x, self.kernel.value, bias)
            if logits:
                return z, ((x, None, z, None) if training else None)
            y = act.forward(z)
            return y, ((x, z, y, act) if training else None)
        if training and act.needs_input:
            y, z = ops.dense(x, self.kernel.value, bias, act.kind, act.alpha, return_preactivation=True)
        else:
            y, z = ops.dense(x, self.kernel.value, bias, act.kind, act.alpha), None
        return y, ((x, z, y, act) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if self._quantization_mode:
            raise self._int8_backward_error()
        x, z, y, act = cache
        kind, alpha = None, 0.0
        if act is not None and act.kind is None:
            dy = act.backward(z, y, dy)
        elif act is not None:
            kind, alpha = act.kind, act.alpha
        return ops.dense_backward(x, self.kernel.value, dy, y, trainable_grad(self.kernel), trainable_grad(self.bias),
                                  kind, z, alpha, accumulate, need_input_grad)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=activations.serialize(self._act), use_bias=self.use_bias,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer),
                   kernel_constraint=constraints.serialize(self.kernel_constraint),
                   bias_constraint=constraints.serialize(self.bias_constraint))
        return cfg


class Activation(_OutputActivation, Layer):
    """Applies an activation function: ``Activation('relu')``.

    Args:
        activation: name, fastnn.activations function, or a callable.
    """

    supports_masking = True
    _shape_preserving = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self._act = _validation.activation(activation, "activation", "Activation")

    @property
    def activation(self):
        return self._act

    def forward(self, x, training=False, logits=False):
        if logits:
            return x, ((None, None, None) if training else None)
        y = self._act.forward(x)
        return y, ((x if self._act.needs_input else None, y, self._act) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x, y, act = cache
        if act is None:
            return dy
        return act.backward(x, y, np.ascontiguousarray(dy, dtype=y.dtype))

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = activations.serialize(self._act)
        return cfg


def _noise_shape(noise_shape, who):
    """None, or a tuple of ints > 0 and None (Keras' checks: ValueError for anything else)."""
    if noise_shape is None:
        return None
    error = ValueError(f"{who}: 'noise_shape' must be a tuple of ints > 0 and None, got {noise_shape!r}")
    if isinstance(noise_shape, (str, bytes)):
        raise error
    try:
        shape = tuple(noise_shape)
    except TypeError:
        raise error from None
    if not all(d is None or (_validation.is_int(d) and d > 0) for d in shape):
        raise error
    return tuple(None if d is None else int(d) for d in shape)


class Dropout(Layer):
    """Sets a fraction `rate` of the inputs to zero during training (inverted dropout).

    Kept values are scaled by 1 / (1 - rate), so inference is the identity. The mask comes
    from a counter-based generator seeded per call: reproducible under
    ``fastnn.utils.set_random_seed``, identical on any thread count.

    Args:
        rate: float in [0, 1]; 1 drops everything (zeros, as Keras).
        noise_shape: optional tuple of ints > 0 and None: the mask's shape, broadcast over
            the input (None entries take the input's size), e.g. ``(batch, 1, features)``;
            one that does not broadcast to the input's shape is a ValueError at the call.
        seed: optional int >= 0: a generator of this layer's own.
    """

    supports_masking = True
    _shape_preserving = True
    _training_dependent = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _validation.rate(rate, "rate", "Dropout", allow_one=True)
        self.noise_shape = _noise_shape(noise_shape, "Dropout")
        self.seed = _validation.seed(seed, "Dropout")
        self._generator = rng.generator_for(self.seed) if self.seed is not None else None

    def forward(self, x, training=False, keep_cache=False):
        if not training or self.rate == 0:
            return x, ((None, None) if training or keep_cache else None)
        if self.rate == 1:  # everything dropped (Keras returns zeros)
            return np.zeros_like(x), (None, np.zeros((), x.dtype))
        seed = rng.draw_seed(self._generator)
        if self.noise_shape is None:
            return ops.dropout(x, self.rate, seed), (seed, None)
        shape = self._mask_shape(x.shape)
        mask = ops.dropout(np.ones(shape, x.dtype), self.rate, seed)
        return x * mask, (seed, mask)

    def _mask_shape(self, input_shape):
        """noise_shape with its None entries filled from the input's; it must broadcast to the
        input without changing its shape (Keras' broadcast_to of the mask fails otherwise)."""
        noise = self.noise_shape
        shape = tuple(input_shape[i] if d is None and i < len(input_shape) else d for i, d in enumerate(noise))
        try:
            fits = None not in shape and np.broadcast_shapes(shape, input_shape) == tuple(input_shape)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"Dropout '{self.name}': 'noise_shape' {noise} does not broadcast to inputs of shape "
                             f"{tuple(input_shape)}")
        return shape

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        seed, mask = cache
        if mask is not None:
            return dy * mask
        if seed is None:
            return dy
        return ops.dropout_backward(np.ascontiguousarray(dy), self.rate, seed)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
        return cfg


class Flatten(Layer):
    """Flattens every axis after the batch axis: (batch, ...) -> (batch, prod(...)).

    Args:
        data_format: None (default: "channels_last"), "channels_last" or "channels_first". As in
            Keras, a channels_first input of rank 3 or more has its channel axis moved last
            before flattening, so that the values come out in the channels_last order.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format, "Flatten")

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)  # exact (a Python int)
        return (input_shape[0], size if rest else 1)

    def _output_dtype(self, input_dtype):
        return input_dtype

    def _moves_channels(self, x):
        return self.data_format == "channels_first" and x.ndim > 2

    def forward(self, x, training=False):
        moves = self._moves_channels(x)
        if moves:
            x = np.moveaxis(x, 1, -1)
        size = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        # (a copy for a moved axis; reshape also works on an empty batch, where -1 could not)
        return x.reshape(x.shape[0], size), ((x.shape, moves) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        shape, moves = cache
        dx = dy.reshape(shape)
        return np.ascontiguousarray(np.moveaxis(dx, -1, 1)) if moves else dx

    def get_config(self):
        cfg = super().get_config()
        cfg["data_format"] = self.data_format
        return cfg


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (without the batch axis).

    Args:
        target_shape: tuple of ints >= 0, at most one of them -1 (the size that makes the
            number of values match).
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        error = f"Reshape: 'target_shape' must be a tuple of ints >= 0 with at most one -1, got {target_shape!r}"
        if isinstance(target_shape, (str, bytes)):
            raise TypeError(error)
        try:
            shape = tuple(target_shape)
        except TypeError:
            raise TypeError(error) from None
        if not all(_validation.is_int(d) for d in shape):
            raise TypeError(error)
        self.target_shape = tuple(int(d) for d in shape)
        if sum(d == -1 for d in self.target_shape) > 1 or any(d < -1 for d in self.target_shape):
            raise ValueError(error)

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0],) + tuple(None if d == -1 else d for d in self.target_shape)
        size = math.prod(rest)  # exact sizes (Python ints): no wrap-around past 2**63
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if known == 0 or size % known:
                raise ValueError(f"Reshape '{self.name}': cannot reshape {rest} ({size} values) into "
                                 f"target_shape={self.target_shape}")
            return (input_shape[0],) + tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(f"Reshape '{self.name}': cannot reshape {rest} ({size} values) into "
                             f"target_shape={self.target_shape} ({known} values)")
        return (input_shape[0],) + self.target_shape

    def _output_dtype(self, input_dtype):
        return input_dtype

    def forward(self, x, training=False):
        target = self.compute_output_shape((None,) + x.shape[1:])[1:]  # -1 resolved from the sample shape
        return x.reshape((x.shape[0],) + target), (x.shape if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy.reshape(cache)

    def get_config(self):
        cfg = super().get_config()
        cfg["target_shape"] = self.target_shape
        return cfg


class Identity(Layer):
    """Returns its input unchanged (a placeholder in a model, as Keras' ``Identity``)."""

    supports_masking = True
    _shape_preserving = True

    def _output_dtype(self, input_dtype):
        return input_dtype

    def forward(self, x, training=False):
        return x, None

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy
