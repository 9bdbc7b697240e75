"""Convolution layers: Conv1D and Conv2D (Keras arguments; channels-last only)."""

import numpy as np

from .. import _core, activations, initializers, regularizers
from .base import Layer
from .core import _OutputActivation

_LINEAR = activations.get("linear").kind


def _tuple(value, rank, name, who):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{who}: '{name}' must be an int or a tuple of {rank} ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * rank
    try:
        value = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: '{name}' must be an int or a tuple of {rank} ints, got {value!r}") from None
    if len(value) != rank or any(v < 1 for v in value):
        raise ValueError(f"{who}: '{name}' must be {rank} positive int(s), got {value}")
    return value


class _Conv(_OutputActivation, Layer):
    """Shared by Conv1D and Conv2D: `rank` spatial axes, run by the 2-D kernel."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{who}: 'filters' must be a positive int, got {filters!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{who}: only data_format='channels_last' is supported, got {data_format!r}")
        if groups != 1:
            raise ValueError(f"{who}: grouped convolutions (groups={groups}) are not supported")
        allowed = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        padding = str(padding).lower()
        if padding not in allowed:
            raise ValueError(f"{who}: 'padding' must be one of {allowed}, got {padding!r}")
        self.filters = int(filters)
        self.kernel_size = _tuple(kernel_size, self.rank, "kernel_size", who)
        self.strides = _tuple(strides, self.rank, "strides", who)
        self.dilation_rate = _tuple(dilation_rate, self.rank, "dilation_rate", who)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{who}: strides > 1 cannot be combined with dilation_rate > 1 (as Keras)")
        self.padding = padding
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

    def _spatial(self):
        """(strides, dilation) for the 2-D kernel."""
        if self.rank == 1:
            return (1, self.strides[0]), (1, self.dilation_rate[0])
        return self.strides, self.dilation_rate

    def build(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != self.rank + 2:
            expected = "(batch, steps, channels)" if self.rank == 1 else "(batch, height, width, channels)"
            raise ValueError(f"{who}: expects {self.rank + 2}-D input {expected}, got shape {input_shape}")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{who}: the channel axis of the input must be known, got {input_shape}")
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels, self.filters), self.kernel_initializer,
                                      self.kernel_regularizer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
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
                    raise ValueError(f"{who}: the kernel spans {span} positions on spatial axis {axis + 1} but the "
                                     f"input has {size}; use padding='same' or a smaller kernel")
                spatial.append((size - span) // s + 1)
        return (input_shape[0],) + tuple(spatial) + (self.filters,)

    def ensure_built(self, input_shape):
        """As Keras: once built, any image size with the built channel count is accepted."""
        if self.built and len(input_shape) == len(self.input_shape) and input_shape[-1] == self.input_shape[-1]:
            return self.output_shape
        return super().ensure_built(input_shape)

    def _as_4d(self, x):
        return x[:, None] if self.rank == 1 else x

    def _kernel_4d(self):
        w = self.kernel.value
        return w[None] if self.rank == 1 else w

    def forward(self, x, training=False):
        strides, dilation = self._spatial()
        x4 = self._as_4d(x)
        bias = self.bias.value if self.use_bias else None
        act = self._act
        if self._emit_logits or act.kind is None:
            y, _ = _core.conv2d_forward(x4, self._kernel_4d(), bias, strides, dilation, self.padding, _LINEAR)
            z = y
            if act.kind is None and not self._emit_logits:
                y = act.forward(z)
            act_used = None if self._emit_logits else act
        else:
            y, z = _core.conv2d_forward(x4, self._kernel_4d(), bias, strides, dilation, self.padding, act.kind,
                                        act.alpha, training and act.needs_input)
            act_used = act
        if training:
            self._cache = (x4, z, y, act_used)
        return y[:, 0] if self.rank == 1 else y

    def backward(self, dy):
        x4, z, y, act = self._check_cache()
        dy = np.ascontiguousarray(self._as_4d(dy), dtype=y.dtype)
        kind, alpha = _LINEAR, 0.0
        if act is not None and act.kind is None:
            dy = act.backward(z, y, dy)
        elif act is not None:
            kind, alpha = act.kind, act.alpha
        strides, dilation = self._spatial()
        trainable = self.trainable and self.kernel.trainable
        dw = (self.kernel.grad[None] if self.rank == 1 else self.kernel.grad) if trainable else None
        db = self.bias.grad if (self.use_bias and trainable) else None
        dx = _core.conv2d_backward(x4, self._kernel_4d(), z, y, dy, strides, dilation, self.padding, kind, alpha,
                                   dw, db, False, self._need_input_grad)
        if dx is None:
            return None
        return dx[:, 0] if self.rank == 1 else dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                   dilation_rate=self.dilation_rate, activation=activations.serialize(self._act),
                   use_bias=self.use_bias, kernel_initializer=initializers.serialize(self.kernel_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer))
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
        bias_regularizer: as Dense.

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
