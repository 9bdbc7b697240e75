"""Activation layers with arguments: ReLU, LeakyReLU, PReLU, ELU, Softmax."""

import numpy as np

from .. import activations, constraints, initializers, ops, regularizers
from . import _validation
from .base import Layer, trainable_grad
from .core import Activation, _OutputActivation


class ReLU(Layer):
    """``max(x, 0)``, optionally leaky below `threshold` and capped at `max_value`.

    Args:
        max_value: float >= 0 or None (default).
        negative_slope: float >= 0, default 0.
        threshold: float >= 0, default 0.
    """

    supports_masking = True  # passes its input's mask on (Keras)
    _shape_preserving = True

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        max_value = _validation.number(max_value, "max_value", "ReLU", low=0.0, allow_none=True)
        negative_slope = _validation.number(negative_slope, "negative_slope", "ReLU", low=0.0)
        threshold = _validation.number(threshold, "threshold", "ReLU", low=0.0)
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold
        # The common case is one kernel call; max_value and threshold use NumPy.
        self._simple = max_value is None and threshold == 0.0
        base = activations.get("leaky_relu" if negative_slope else "relu")
        self._spec = activations.ActivationSpec(base.name, base.kind, negative_slope)

    def forward(self, x, training=False):
        y = (self._spec.forward(x) if self._simple else
             activations.relu(x, self.negative_slope, self.max_value, self.threshold).astype(x.dtype))
        return y, ((x, y) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x, y = cache
        dy = np.ascontiguousarray(dy, dtype=x.dtype)
        if self._simple:
            return self._spec.backward(x, y, dy)
        slope = np.where(x > self.threshold, 1.0, self.negative_slope)
        if self.max_value is not None:
            slope = np.where(x > self.max_value, 0.0, slope)
        return (dy * slope).astype(x.dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(max_value=self.max_value, negative_slope=self.negative_slope, threshold=self.threshold)
        return cfg


class LeakyReLU(Activation):
    """``x`` for x > 0, ``negative_slope * x`` otherwise (layer default 0.3, as Keras)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:  # Keras 2 name
            negative_slope = kwargs.pop("alpha")
        negative_slope = _validation.number(negative_slope, "negative_slope", "LeakyReLU", low=0.0)
        super().__init__("leaky_relu", **kwargs)
        self.negative_slope = negative_slope
        self._act = activations.ActivationSpec("leaky_relu", self._act.kind, negative_slope)

    def get_config(self):
        cfg = Layer.get_config(self)
        cfg["negative_slope"] = self.negative_slope
        return cfg


class ELU(Activation):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (default alpha 1.0)."""

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__("elu", **kwargs)
        self.alpha = _validation.number(alpha, "alpha", "ELU")
        self._act = activations.ActivationSpec("elu", self._act.kind, self.alpha)

    def get_config(self):
        cfg = Layer.get_config(self)
        cfg["alpha"] = self.alpha
        return cfg


# Keras' value for masked logits (keras/src/layers/activations/softmax.py: -1e9 below float16).
_MASKED_LOGIT = -1e9


class Softmax(_OutputActivation, Layer):
    """Softmax over `axis` (default the last), optionally masked.

    Args:
        axis: int, or a list/tuple of distinct ints (one softmax over those axes together, as
            Keras), default -1.
        **kwargs: name, dtype, input_shape.

    Call arguments:
        inputs: the logits.
        mask: optional mask broadcastable to `inputs` (NumPy's rule: no more axes than the
            inputs, each of its sizes 1 or the input's), True (or > 0.5 when not boolean) to
            keep. As Keras: masked logits become -1e9 before the softmax and masked outputs 0
            after it (so a slice masked entirely gives zeros). In a model the input's mask
            (e.g. an Embedding's with mask_zero=True) is passed on and used, as Keras does.

    As a model's output with a cross-entropy loss (last axis), the model fuses the softmax
    with the loss: ``forward(x, training, logits=True)`` returns the logits (the masked ones
    under a mask, so only a slice masked entirely differs from Keras: uniform, not zeros).

    Example:
        >>> layer = fastnn.layers.Softmax()
        >>> layer(np.array([[1.0, 2.0, 1.0]]), mask=np.array([[True, True, False]]))  # [[0.269, 0.731, 0]]
    """

    supports_masking = True
    _consumes_mask = True
    _keeps_mask_dtype = True  # a float mask is read with Keras' > 0.5, not cast to bool
    _shape_preserving = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis or not all(_validation.is_int(a) for a in axis):
                raise TypeError(f"Softmax: 'axis' must be an int or a non-empty list/tuple of ints, got {axis!r}")
            axis = [int(a) for a in axis]
        else:
            axis = _validation.axis(axis, "axis", "Softmax")
        self.axis = axis
        self._act = activations.get("softmax")

    def _axes(self, ndim):
        """The softmax axes for inputs of `ndim` axes (sorted, non-negative), checked."""
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        if any(not -ndim <= a < ndim for a in axes):
            raise ValueError(f"Softmax '{self.name}': 'axis' {self.axis} is out of range for inputs with {ndim} axes")
        axes = sorted(a % ndim for a in axes)
        if len(set(axes)) != len(axes):
            raise ValueError(f"Softmax '{self.name}': 'axis' {self.axis} repeats an axis")
        return axes

    def compute_output_shape(self, input_shape):
        self._axes(len(input_shape))
        return tuple(input_shape)

    def _apply(self, fn, *arrays):
        """fn (the kernel over the last axis) on arrays with the softmax axes moved last and merged."""
        ndim = arrays[0].ndim
        axes = self._axes(ndim)
        if axes == [ndim - 1]:
            return fn(*arrays)
        others = [a for a in range(ndim) if a not in axes]
        order = others + axes
        moved = [np.ascontiguousarray(np.transpose(a, order)) for a in arrays]
        shape = moved[0].shape
        flat = [m.reshape(shape[:len(others)] + (-1,)) for m in moved]
        out = fn(*flat).reshape(shape)
        return np.ascontiguousarray(np.transpose(out, np.argsort(order)))

    def _mask(self, mask, x):
        """The boolean mask broadcast to x's shape (Keras' checks and > 0.5 rule)."""
        mask = np.asarray(mask)
        if mask.ndim > x.ndim:
            raise ValueError(f"Softmax '{self.name}': 'mask' must be broadcastable to the inputs and must not have "
                             f"more axes; got inputs of shape {x.shape} and a mask of shape {mask.shape}")
        if any(m != 1 and m != i for m, i in zip(mask.shape[::-1], x.shape[::-1])):
            raise ValueError(f"Softmax '{self.name}': 'mask' must be broadcastable to the inputs (each of its sizes "
                             f"1 or the input's); got inputs of shape {x.shape} and a mask of shape {mask.shape}")
        if mask.dtype != bool:
            if mask.dtype.kind not in "biuf":
                raise TypeError(f"Softmax '{self.name}': 'mask' must be boolean or numeric, got dtype {mask.dtype}")
            mask = mask > 0.5
        return np.broadcast_to(mask, x.shape)

    def forward(self, x, training=False, mask=None, logits=False):
        x = np.asarray(x)
        if mask is None:
            y = None if logits else self._apply(lambda a: activations.softmax(a, -1), x)
            return (x if logits else y), ((y, None) if training else None)
        mask = self._mask(mask, x)
        masked = np.where(mask, x, np.asarray(_MASKED_LOGIT, x.dtype))
        if logits:
            return masked, ((None, mask) if training else None)
        s = self._apply(lambda a: activations.softmax(a, -1), masked)
        # Zeroed after: a slice masked entirely would otherwise be uniform (Keras zeroes it).
        y = np.where(mask, s, np.zeros((), x.dtype))
        return y, ((s, mask) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        s, mask = cache
        if s is None:  # the (masked) logits were the output
            return dy if mask is None else np.where(mask, dy, np.zeros((), np.asarray(dy).dtype))
        dy = np.ascontiguousarray(dy, dtype=s.dtype)
        if mask is not None:  # masked outputs are constants (0) and masked logits too
            dy = np.where(mask, dy, np.zeros((), s.dtype))
        dx = self._apply(lambda d, yy: ops.activation_backward(np.ascontiguousarray(d), "softmax",
                                                              np.ascontiguousarray(yy)), dy, s)
        return dx if mask is None else np.where(mask, dx, np.zeros((), s.dtype))

    def output_activation(self):
        return "softmax" if self.axis in (-1,) else None

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg


class PReLU(Layer):
    """Leaky ReLU with a learned slope per input position: ``x`` or ``alpha * x``.

    Args:
        alpha_initializer: default "zeros".
        alpha_regularizer: default None.
        alpha_constraint: default None: a fastnn.constraints constraint applied after each step.
        shared_axes: optional list of axes (1-based, batch excluded) sharing one slope,
            e.g. ``[1, 2]`` for one slope per channel of an image.
        **kwargs: name, dtype, trainable, input_shape.

    Example:
        >>> layer = fastnn.layers.PReLU(shared_axes=[1, 2])  # one slope per channel of an image
    """

    supports_masking = True  # passes its input's mask on (Keras)
    _shape_preserving = True

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        self.alpha_constraint = _validation.constraint(alpha_constraint, "alpha_constraint", "PReLU")
        if shared_axes is not None and not isinstance(shared_axes, (list, tuple)):
            shared_axes = [shared_axes]
        self.shared_axes = None if shared_axes is None else [_validation.axis(a, "shared_axes", "PReLU")
                                                             for a in shared_axes]
        self.alpha = None

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes or []:
            if not 1 <= axis <= len(shape):
                raise ValueError(f"PReLU '{self.name}': 'shared_axes' {self.shared_axes} holds {axis}, outside "
                                 f"1..{len(shape)} (the axes of inputs of shape {tuple(input_shape)} after the batch "
                                 "axis)")
            shape[axis - 1] = 1
        if any(d is None for d in shape):
            raise ValueError(f"PReLU '{self.name}': input shape {input_shape} must be known after the batch axis")
        self.alpha = self.add_weight(shape=tuple(shape), initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer, constraint=self.alpha_constraint,
                                     name="alpha")

    def _full_alpha(self, x):
        # The kernel takes one slope per position of a sample: expand the shared axes.
        alpha = self.alpha.value
        if alpha.shape == x.shape[1:]:
            return alpha
        return np.ascontiguousarray(np.broadcast_to(alpha, x.shape[1:]))

    def forward(self, x, training=False):
        alpha = self._full_alpha(x)
        return ops.prelu(x, alpha), ((x, alpha) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x, alpha = cache
        dy = np.ascontiguousarray(dy, dtype=x.dtype)
        grad = trainable_grad(self.alpha)
        if grad is not None and alpha.shape == grad.shape:  # one slope per position: the kernel writes it
            dx, _ = ops.prelu_backward(x, alpha, dy, grad, accumulate)
        else:
            dx, dalpha = ops.prelu_backward(x, alpha, dy)
            if grad is not None:  # sum the positions that share a slope
                shared = tuple(a for a in range(alpha.ndim) if grad.shape[a] == 1 and alpha.shape[a] != 1)
                dalpha = dalpha.sum(axis=shared, keepdims=True)
                if accumulate:
                    grad += dalpha
                else:
                    grad[...] = dalpha
        return dx if need_input_grad else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(alpha_initializer=initializers.serialize(self.alpha_initializer),
                   alpha_regularizer=regularizers.serialize(self.alpha_regularizer),
                   alpha_constraint=constraints.serialize(self.alpha_constraint),
                   shared_axes=self.shared_axes)
        return cfg
