"""Convolution layers: Conv1D and Conv2D (Keras arguments), channels_last or channels_first."""

import numpy as np

from .. import activations, constraints, initializers, ops, quantizers, regularizers
from ..ops.pool import channels_to_first, channels_to_last, standardize_data_format
from . import _quantization, _validation
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


def _to_last(x):
    """(batch, channels, *spatial) -> (batch, *spatial, channels), contiguous for the NHWC kernels."""
    return channels_to_last(x) if x.ndim > 2 else x


def _to_first(y):
    """(batch, *spatial, channels) -> (batch, channels, *spatial); 2-D arrays have no spatial axes."""
    return channels_to_first(y) if y.ndim > 2 else y


def _last_shape(shape):
    shape = tuple(shape)
    return (shape[0],) + shape[2:] + (shape[1],) if len(shape) > 2 else shape


def _first_shape(shape):
    shape = tuple(shape)
    return (shape[0], shape[-1]) + shape[1:-1] if len(shape) > 2 else shape


class _DataFormat:
    """Mixin of the layers with a ``data_format``: channels_first runs the channels_last code
    between two transposes (NCHW -> NHWC, the NHWC kernel, back), so there is one kernel per
    operation. The layer writes ``_output_shape_last``, ``_forward_last`` and ``_backward_last``
    for channels_last arrays; this mixin gives the public methods in the layer's own format.

    Transposing at the edges was measured against the cost of the kernels (see
    bench/bench_conv.py, channels_first rows): with a tiled C++ transpose a convolution spends
    a few percent of its time moving channels, which does not pay for a second set of NCHW
    kernels (memory-bound layers such as pooling pay relatively more).
    """

    data_format = "channels_last"

    @property
    def _channels_first(self):
        return self.data_format == "channels_first"

    def _channel_axis(self):
        return 1 if self._channels_first else -1

    def compute_output_shape(self, input_shape):
        if not self._channels_first:
            return self._output_shape_last(tuple(input_shape))
        return _first_shape(self._output_shape_last(_last_shape(input_shape)))

    def forward(self, x, training=False, **kwargs):
        if not self._channels_first:
            return self._forward_last(x, training, **kwargs)
        y, cache = self._forward_last(_to_last(x), training, **kwargs)
        return _to_first(y), cache

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if not self._channels_first:
            return self._backward_last(cache, dy, need_input_grad, accumulate)
        dx = self._backward_last(cache, _to_last(dy), need_input_grad, accumulate)
        return None if dx is None else _to_first(dx)


class _Conv(_quantization.Int8Quantizable, _DataFormat, _AnySpatialSize, _OutputActivation, Layer):
    """Shared by Conv1D and Conv2D: `rank` spatial axes, run by the 2-D kernel.

    Quantized (``model.quantize("int8")``; fastnn's extension, Keras does not quantize
    convolutions): the kernel is int8 with one scale per filter (``kernel_scale``, shape
    (filters,)); weights kernel, bias, kernel_scale. The forward takes the image patches
    (im2col, NumPy stride tricks), quantizes each patch (one output position's receptive
    field) per row and runs one ``fastnn.quantizers.int8_dense`` call. Inference only;
    groups > 1 stays float.
    """

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
        self.data_format = standardize_data_format(data_format, who)
        self.groups = _validation.integer(groups, "groups", who, minimum=1)
        if filters % self.groups:
            raise ValueError(f"{who}: the number of filters must be evenly divisible by the number of groups. "
                             f"Received: groups={self.groups}, filters={filters}.")
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
        channels = input_shape[self._channel_axis()]
        if channels % self.groups:
            raise ValueError(f"{type(self).__name__} '{self.name}': the number of input channels must be evenly "
                             f"divisible by the number of groups. Received groups={self.groups}, but the input "
                             f"has {channels} channels (full input shape is {tuple(input_shape)}).")
        shape = self.kernel_size + (channels // self.groups, self.filters)
        if self._quantization_mode:
            self.kernel = self._add_int8_weight("kernel", shape)
        else:
            self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer,
                                          regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                          name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                        name="bias")
        if self._quantization_mode:
            self.kernel_scale = self._add_scale_weight("kernel_scale", (self.filters,))

    def _output_shape_last(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != self.rank + 2:
            expected = "(batch, steps, channels)" if self.rank == 1 else "(batch, height, width, channels)"
            if self._channels_first:
                expected = "(batch, channels, steps)" if self.rank == 1 else "(batch, channels, height, width)"
                input_shape = _first_shape(input_shape)
            raise ValueError(f"{who}: expects {self.rank + 2}-D input {expected}, got shape {input_shape}")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{who}: the channel axis of the input must be known, got {input_shape}")
        if self.kernel is not None and channels != self.kernel.shape[-2] * self.groups:
            raise ValueError(f"{who}: built for {self.kernel.shape[-2] * self.groups} input channels, got inputs "
                             f"of shape {input_shape}")
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

    def _int8_unsupported(self):
        if self.groups > 1:
            return "groups > 1"
        patch = self.kernel.value[..., 0].size  # multiply-adds per output value
        if patch < quantizers.int8.MIN_CONV_PATCH:
            # (measured: a 3×3 kernel on 1 channel ran 10-16x slower in int8 than fastnn's
            # float convolution, on 32 channels even; a first layer also stays float in
            # most deployments, for accuracy)
            return f"patches of {patch} values (< {quantizers.int8.MIN_CONV_PATCH}): int8 gains nothing there"
        return None

    def _int8_quantize(self):
        axes = tuple(range(self.kernel.value.ndim - 1))
        values, scale = quantizers.abs_max_quantize(self.kernel.value, axis=axes)  # per filter
        self._swap_to_int8([("kernel", values)], [("kernel_scale", scale.reshape(self.filters))])

    def _int8_forward(self, x, logits):
        act = self._act
        fused, after = _quantization.int8_activation(act, logits)
        w = self.kernel.value.reshape(-1, self.filters)
        bias = self.bias.value if self.use_bias else None
        y = quantizers.int8_conv(x, self._int8_packed(w), self.kernel_scale.value, self.kernel_size, self.strides,
                                 self.padding, self.dilation_rate, bias, fused).astype(self._dtype, copy=False)
        return (act.forward(y) if after else y), None

    def _conv(self, x, activation=None, alpha=0.0, return_preactivation=False):
        bias = self.bias.value if self.use_bias else None
        return ops.conv(x, self.kernel.value, self.strides, self.padding, dilation_rate=self.dilation_rate,
                        bias=bias, activation=activation, alpha=alpha, return_preactivation=return_preactivation)

    def _forward_last(self, x, training=False, logits=False):
        if self._quantization_mode:
            return self._int8_forward(x, logits)
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

    def _backward_last(self, cache, dy, need_input_grad=True, accumulate=False):
        if self._quantization_mode:
            raise self._int8_backward_error()
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
                   data_format=self.data_format, dilation_rate=self.dilation_rate, groups=self.groups,
                   activation=activations.serialize(self._act),
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
        data_format: "channels_last" (batch, height, width, channels) or "channels_first"
            (batch, channels, height, width); default None: "channels_last" (fastnn has no
            ``image_data_format`` setting). The kernel keeps the shape (kh, kw, in, out) in both.
        dilation_rate: int or (dh, dw), default 1 (not with strides > 1).
        groups: int, default 1: input channels and filters split into `groups` groups, the
            filters of each group seeing only its channels (both must be divisible by it);
            the kernel is then (kh, kw, in / groups, out). groups=in is a depthwise convolution
            with filters/in outputs per channel. One GEMM per group, in place.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: as Dense.

    Example:
        >>> import fastnn as keras
        >>> layer = keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1))
    """

    rank = 2


class Conv1D(_Conv):
    """1-D convolution over (batch, steps, channels) sequences (kernel (k, in, out));
    with data_format="channels_first", over (batch, channels, steps).

    Arguments as Conv2D with ints; padding may also be "causal" (all padding before the
    first step, so output t sees inputs up to t only).
    """

    rank = 1


Convolution1D = Conv1D  # Keras' long names
Convolution2D = Conv2D
