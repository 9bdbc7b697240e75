"""Convolution layers: Conv1D and Conv2D (Keras arguments; channels-last only)."""

import numpy as np

from .. import activations, constraints, initializers, ops, regularizers
from . import _validation
from .base import Layer, trainable_grad
from .core import _OutputActivation


class _AnySpatialSize:
    """Mixin of the layers over images and sequences (convolutions, pooling, padding, upsampling,
    augmentation): as in Keras, once built they take inputs of other spatial sizes (the same
    rank and channels), each call with its own output shape from ``compute_output_shape``.

    Its ``build`` only validates the shape (layers with weights override it).
    """

    _flexible_input_shape = True

    def build(self, input_shape):
        return self.compute_output_shape(input_shape)


class _Conv(_AnySpatialSize, _OutputActivation, Layer):
    """Shared by Conv1D and Conv2D: `rank` spatial axes, run by the 2-D kernel."""

    rank = 2
    _size_arguments = ("filters", "kernel_size")

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        self.kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint", who)
        self.bias_constraint = _validation.constraint(bias_constraint, "bias_constraint", who)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{who}: 'filters' must be a positive int, got {filters!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{who}: only data_format='channels_last' is supported, got {data_format!r}")
        if _validation.integer(groups, "groups", who, minimum=1) != 1:
            raise ValueError(f"{who}: grouped convolutions (groups={groups}) are not supported")
        allowed = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        if not isinstance(padding, str) or padding.lower() not in allowed:
            raise ValueError(f"{who}: 'padding' must be one of {allowed}, got {padding!r}")
        padding = padding.lower()
        self.filters = int(filters)
        self.kernel_size = _validation.int_tuple(kernel_size, self.rank, "kernel_size", who)
        self.strides = _validation.int_tuple(strides, self.rank, "strides", who)
        self.dilation_rate = _validation.int_tuple(dilation_rate, self.rank, "dilation_rate", who)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{who}: strides > 1 cannot be combined with dilation_rate > 1 (as Keras)")
        self.padding = padding
        self._act = _validation.activation(activation, "activation", who)
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
        self.kernel = self.add_weight(shape=self.kernel_size + (input_shape[-1], self.filters),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                        name="bias")

    def compute_output_shape(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != self.rank + 2:
            expected = "(batch, steps, channels)" if self.rank == 1 else "(batch, height, width, channels)"
            raise ValueError(f"{who}: expects {self.rank + 2}-D input {expected}, got shape {input_shape}")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{who}: the channel axis of the input must be known, got {input_shape}")
        if self.kernel is not None and channels != self.kernel.shape[-2]:
            raise ValueError(f"{who}: built for {self.kernel.shape[-2]} input channels, got inputs of shape "
                             f"{input_shape}")
        spatial = []
        for axis, (size, k, s, d) in enumerate(zip(input_shape[1:-1], self.kernel_size, self.strides,
                                                    self.dilation_rate)):
            if size is None:
                spatial.append(None)
                continue
            span = (k - 1) * d + 1
            if self.padding == "same":
                spatial.append(-(-size // s))
            elif self.padding == "causal":
                spatial.append((size - 1) // s + 1)
            else:
                if span > size:
                    raise ValueError(f"{who}: the kernel spans {span} positions on spatial axis {axis + 1} "
                                     f"(kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}) but "
                                     f"the input has {size}; use padding='same' or a smaller kernel")
                spatial.append((size - span) // s + 1)
        return (input_shape[0],) + tuple(spatial) + (self.filters,)

    def _conv(self, x, activation=None, alpha=0.0, return_preactivation=False):
        bias = self.bias.value if self.use_bias else None
        return ops.conv(x, self.kernel.value, self.strides, self.padding, dilation_rate=self.dilation_rate,
                        bias=bias, activation=activation, alpha=alpha, return_preactivation=return_preactivation)

    def forward(self, x, training=False, logits=False):
        act = self._act
        if logits or act.kind is None:  # linear here (a custom callable: its traced function after)
            z = self._conv(x)
            if logits:
                return z, ((x, None, z, None) if training else None)
            y = act.forward(z)
            return y, ((x, z, y, act) if training else None)
        if training and act.needs_input:
            y, z = self._conv(x, act.kind, act.alpha, return_preactivation=True)
        else:
            y, z = self._conv(x, act.kind, act.alpha), None
        return y, ((x, z, y, act) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x, z, y, act = cache
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        kind, alpha = None, 0.0
        if act is not None and act.kind is None:
            dy = act.backward(z, y, dy)
        elif act is not None:
            kind, alpha = act.kind, act.alpha
        return ops.conv_backward(x, self.kernel.value, dy, y, trainable_grad(self.kernel), trainable_grad(self.bias),
                                 self.strides, self.padding, self.dilation_rate, kind, z, alpha, accumulate,
                                 need_input_grad)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                   dilation_rate=self.dilation_rate, activation=activations.serialize(self._act),
                   use_bias=self.use_bias, kernel_initializer=initializers.serialize(self.kernel_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer),
                   kernel_constraint=constraints.serialize(self.kernel_constraint),
                   bias_constraint=constraints.serialize(self.bias_constraint))
        return cfg


class Conv2D(_Conv):
    """2-D convolution over (batch, height, width, channels) images.

    Forward is one C++ call (an implicit GEMM over the image patches with the bias inside
    the product, then the activation); backward is one call. Kernel layout (kh, kw, in, out), as Keras.

    Args:
        filters: int, output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw), default 1.
        padding: "valid" (default) or "same" (TensorFlow's rule: output ceil(in/stride),
            the odd padding after).
        data_format: None or "channels_last".
        dilation_rate: int or (dh, dw), default 1 (not with strides > 1).
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: as Dense.

    Example:
        >>> import fastnn as keras
        >>> layer = keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1))
    """

    rank = 2


class Conv1D(_Conv):
    """1-D convolution over (batch, steps, channels) sequences (kernel (k, in, out)).

    Arguments as Conv2D with ints; padding may also be "causal" (all padding before the
    first step, so output t sees inputs up to t only).
    """

    rank = 1


Convolution1D = Conv1D  # Keras' long names
Convolution2D = Conv2D
