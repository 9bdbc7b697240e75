"""Merging layers (Keras names and semantics): Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate, Dot, and their function forms add, subtract, ... dot.

Each is called on a list of tensors: ``layers.Add()([x, y])``. The elementwise ones accept
inputs whose shapes broadcast (sizes of 1 stretch; an input with fewer axes gets axes of
size 1 inserted after the batch axis, as Keras does). Forward and backward are one NumPy
expression each over the whole batch (these layers do no products), and the backward sums a
broadcast input's gradient back to its shape.

Masks: the elementwise layers pass on the OR of their inputs' masks when every input has one
(Keras' rule); Concatenate concatenates them (an input without one counts as unmasked) and
reduces over the last axis; Dot's output has none.
"""

import numpy as np

from .. import ops
from ..autodiff import unbroadcast
from .base import Layer


def _mask_list(layer, inputs, mask):
    """Keras' checks of a merging layer's masks: a list, as long as the list of inputs."""
    who = f"{type(layer).__name__} '{layer.name}'"
    if not isinstance(mask, (list, tuple)):
        raise ValueError(f"{who}: 'mask' must be a list (one mask or None per input), got {type(mask).__name__}")
    if not isinstance(inputs, (list, tuple)):
        raise ValueError(f"{who}: 'inputs' must be a list, got {type(inputs).__name__}")
    if len(mask) != len(inputs):
        raise ValueError(f"{who}: 'mask' must hold one entry per input ({len(inputs)}), got {len(mask)}")


def _batch_size(shapes, who):
    sizes = {s[0] for s in shapes if s and s[0] is not None}
    if len(sizes) > 1:
        raise ValueError(f"{who}: cannot merge tensors with different batch sizes, got shapes {shapes}")
    return sizes.pop() if sizes else None


class _Merge(Layer):
    """Shared by the elementwise merging layers: the list check, broadcasting, masks."""

    supports_masking = True
    _min_inputs = 1
    _max_inputs = None

    def _check_list(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if not isinstance(input_shape, list) or not input_shape or not isinstance(input_shape[0], tuple):
            raise ValueError(f"{who}: a merging layer is called on a list of tensors, e.g. "
                             f"layers.{type(self).__name__}()([x, y]); got input shape {input_shape}")
        count = len(input_shape)
        if count < self._min_inputs or (self._max_inputs is not None and count > self._max_inputs):
            expected = (f"exactly {self._min_inputs}" if self._min_inputs == self._max_inputs
                        else f"at least {self._min_inputs}")
            raise ValueError(f"{who}: expects {expected} inputs, got {count} (shapes {input_shape})")
        return who

    def compute_output_shape(self, input_shape):
        who = self._check_list(input_shape)
        batch = _batch_size(input_shape, who)
        rank = max(len(s) for s in input_shape)
        aligned = [(1,) * (rank - len(s)) + tuple(s[1:]) for s in input_shape]  # lower ranks: axes after batch
        out = []
        for axis, dims in enumerate(zip(*aligned), 1):
            known = {d for d in dims if d is not None and d != 1}
            if len(known) > 1:
                raise ValueError(f"{who}: inputs have incompatible shapes {input_shape} (axis {axis}: sizes "
                                 f"{sorted(known)})")
            out.append(known.pop() if known else (None if None in dims else 1))
        return (batch,) + tuple(out)

    @staticmethod
    def _aligned(xs):
        """The inputs with axes of size 1 inserted after the batch axis up to the largest rank."""
        rank = max(x.ndim for x in xs)
        return [x if x.ndim == rank else x.reshape((x.shape[0],) + (1,) * (rank - x.ndim) + x.shape[1:])
                for x in xs]

    def forward(self, xs, training=False):
        aligned = self._aligned(xs)
        y = self._merge(aligned)
        cache = ([x.shape for x in xs], aligned, y) if training else None
        return y, cache

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        shapes, aligned, y = cache
        grads = self._merge_grads(aligned, y, dy)
        return [None if g is None else np.ascontiguousarray(unbroadcast(g, x.shape).reshape(shape), dtype=x.dtype)
                for g, x, shape in zip(grads, aligned, shapes)]

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        _mask_list(self, inputs, mask)
        if any(m is None for m in mask):
            return None
        out = np.asarray(mask[0], bool)
        for m in mask[1:]:
            out = out | np.asarray(m, bool)
        return out

    def _merge(self, xs):
        raise TypeError(f"{type(self).__name__} must implement _merge")

    def _merge_grads(self, xs, y, dy):
        raise TypeError(f"{type(self).__name__} must implement _merge_grads")


class Add(_Merge):
    """Adds a list of inputs elementwise: ``Add()([x1, x2, ...])`` (shapes broadcast).

    Example:
        >>> x = fastnn.layers.Dense(8)(inputs)
        >>> y = fastnn.layers.Add()([x, inputs])   # a residual connection
    """

    def _merge(self, xs):
        y = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            y += x
        return y

    def _merge_grads(self, xs, y, dy):
        return [dy] * len(xs)


class Subtract(_Merge):
    """Subtracts two inputs: ``Subtract()([x1, x2])`` is ``x1 - x2``."""

    _min_inputs = _max_inputs = 2

    def _merge(self, xs):
        return xs[0] - xs[1]

    def _merge_grads(self, xs, y, dy):
        return [dy, -dy]


class Multiply(_Merge):
    """Multiplies a list of inputs elementwise: ``Multiply()([x1, x2, ...])``."""

    def _merge(self, xs):
        y = xs[0] * xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            y *= x
        return y

    def _merge_grads(self, xs, y, dy):
        grads = []
        for i in range(len(xs)):
            g = dy
            for j, x in enumerate(xs):  # the product of the others (no division: zeros are fine)
                if j != i:
                    g = g * x
            grads.append(g)
        return grads


class Average(_Merge):
    """The elementwise mean of a list of inputs: ``Average()([x1, x2, ...])``."""

    def _merge(self, xs):
        y = Add._merge(self, xs)
        y *= y.dtype.type(1.0 / len(xs))
        return y

    def _merge_grads(self, xs, y, dy):
        return [dy * dy.dtype.type(1.0 / len(xs))] * len(xs)


class Maximum(_Merge):
    """The elementwise maximum of a list of inputs (the gradient goes to the first largest)."""

    _pick = staticmethod(np.greater)

    def _merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = np.where(self._pick(x, y), x, y)
        return np.ascontiguousarray(y)

    def _merge_grads(self, xs, y, dy):
        best = np.zeros(np.broadcast_shapes(*(x.shape for x in xs)), np.int64)
        current = np.broadcast_to(xs[0], best.shape)
        for i, x in enumerate(xs[1:], 1):
            better = self._pick(x, current)
            best[better] = i
            current = np.where(better, x, current)
        return [np.where(best == i, dy, 0).astype(dy.dtype) for i in range(len(xs))]


class Minimum(Maximum):
    """The elementwise minimum of a list of inputs (the gradient goes to the first smallest)."""

    _pick = staticmethod(np.less)


class Concatenate(Layer):
    """Joins a list of inputs along `axis`: ``Concatenate(axis=-1)([x1, x2])``.

    Args:
        axis: int, default -1: the axis to join along; the inputs' other sizes must agree.
        **kwargs: name, dtype, trainable.
    """

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Concatenate: 'axis' must be an int, got {axis!r}")
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        who = f"Concatenate '{self.name}'"
        if not isinstance(input_shape, list) or not input_shape or not isinstance(input_shape[0], tuple):
            raise ValueError(f"{who}: call it on a list of tensors, e.g. Concatenate()([x, y]); got input shape "
                             f"{input_shape}")
        rank = len(input_shape[0])
        if any(len(s) != rank for s in input_shape):
            raise ValueError(f"{who}: the inputs must have the same number of axes, got shapes {input_shape}")
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{who}: axis {self.axis} is not a non-batch axis of inputs with {rank} axes "
                             f"(shapes {input_shape})")
        axis = self.axis % rank
        out = list(input_shape[0])
        out[axis] = 0
        for shape in input_shape:
            for i, (a, b) in enumerate(zip(out, shape)):
                if i == axis:
                    out[i] = None if (a is None or b is None) else a + b
                elif a is None:
                    out[i] = b
                elif b is not None and a != b:
                    raise ValueError(f"{who}: the inputs' shapes must agree except on the concatenation axis "
                                     f"{self.axis}, got {input_shape}")
        out[0] = _batch_size(input_shape, who)
        return tuple(out)

    def forward(self, xs, training=False):
        y = np.concatenate(xs, axis=self.axis)
        return y, ([x.shape[self.axis] for x in xs] if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        bounds = np.cumsum(cache)[:-1]
        return [np.ascontiguousarray(part) for part in np.split(dy, bounds, axis=self.axis)]

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        _mask_list(self, inputs, mask)
        if all(m is None for m in mask):
            return None
        masks = []
        for x, m in zip(inputs, mask):
            if m is None:
                m = np.ones(x.shape, bool)
            elif np.ndim(m) < x.ndim:
                m = np.broadcast_to(np.expand_dims(m, -1), x.shape)
            masks.append(np.asarray(m, bool))
        return np.any(np.concatenate(masks, axis=self.axis), axis=-1)

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg


class Dot(Layer):
    """The dot product of two inputs along one axis each, sample by sample (Keras' ``Dot``).

    For inputs (batch, ..., k, ...) and (batch, ..., k, ...) the output holds the sums over
    the two axes of size k: its shape is the first input's without that axis followed by
    the second's without the batch axis and that axis ((batch, 1) when that leaves one
    axis). One batched matrix product each way.

    Args:
        axes: int, or a pair (axis of the first input, axis of the second); not 0 (the
            batch axis).
        normalize: bool, default False: L2-normalize each sample along the dot axes first
            (the output is then the cosine similarity).
        **kwargs: name, dtype, trainable.

    Example:
        >>> similarity = fastnn.layers.Dot(axes=1, normalize=True)([a, b])   # (batch, 1)
    """

    supports_masking = True  # as Keras, though the output's mask is None (compute_mask)

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, (list, tuple)):
            if len(axes) != 2 or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
                raise ValueError(f"Dot: 'axes' must be an int or a pair of ints, got {axes!r}")
            axes = (int(axes[0]), int(axes[1]))
        elif isinstance(axes, bool) or not isinstance(axes, (int, np.integer)):
            raise TypeError(f"Dot: 'axes' must be an int or a pair of ints, got {axes!r}")
        else:
            axes = int(axes)
        self.axes = axes
        self.normalize = bool(normalize)

    def _axes(self, rank1, rank2):
        pair = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        return pair[0] % rank1, pair[1] % rank2

    def compute_output_shape(self, input_shape):
        who = f"Dot '{self.name}'"
        if not isinstance(input_shape, list) or len(input_shape) != 2 or not isinstance(input_shape[0], tuple):
            raise ValueError(f"{who}: call it on a list of 2 tensors, got input shape {input_shape}")
        s1, s2 = input_shape
        if len(s1) < 2 or len(s2) < 2:
            raise ValueError(f"{who}: both inputs need a batch axis and at least one more, got {input_shape}")
        a1, a2 = self._axes(len(s1), len(s2))
        if a1 == 0 or a2 == 0:
            raise ValueError(f"{who}: 'axes' cannot include the batch axis 0, got axes={self.axes}")
        if s1[a1] is not None and s2[a2] is not None and s1[a1] != s2[a2]:
            raise ValueError(f"{who}: the dot axes differ in size: {s1[a1]} (axis {a1} of {s1}) vs {s2[a2]} "
                             f"(axis {a2} of {s2})")
        out = [d for i, d in enumerate(s1) if i != a1] + [d for i, d in enumerate(s2) if i not in (0, a2)]
        out[0] = _batch_size(input_shape, who)
        return tuple(out) if len(out) > 1 else (out[0], 1)

    @staticmethod
    def _l2_normalize(x, axis):
        """x · rsqrt(max(Σx², ε²)) along axis (Keras' normalize), and that scale."""
        eps = np.asarray(1e-7, x.dtype)
        scale = 1.0 / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), eps * eps))
        return x * scale, scale

    def forward(self, xs, training=False):
        x1, x2 = xs
        a1, a2 = self._axes(x1.ndim, x2.ndim)
        s1 = s2 = None
        if self.normalize:
            (n1, s1), (n2, s2) = self._l2_normalize(x1, a1), self._l2_normalize(x2, a2)
        else:
            n1, n2 = x1, x2
        m1 = np.moveaxis(n1, a1, -1)  # (batch, ..., k)
        m2 = np.moveaxis(n2, a2, 1)  # (batch, k, ...)
        p1 = m1.reshape(m1.shape[0], -1, m1.shape[-1])
        p2 = m2.reshape(m2.shape[0], m2.shape[1], -1)
        y = ops.matmul(p1, p2).reshape(m1.shape[:-1] + m2.shape[2:])
        if y.ndim == 1:
            y = y[:, None]
        cache = (x1, x2, n1, n2, s1, s2, p1, p2, m1.shape, m2.shape) if training else None
        return y, cache

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x1, x2, n1, n2, s1, s2, p1, p2, shape1, shape2 = cache
        a1, a2 = self._axes(x1.ndim, x2.ndim)
        g = np.ascontiguousarray(dy).reshape(p1.shape[0], p1.shape[1], p2.shape[2])
        d1 = np.moveaxis(ops.matmul(g, p2, transpose_b=True).reshape(shape1), -1, a1)
        d2 = np.moveaxis(ops.matmul(p1, g, transpose_a=True).reshape(shape2), 1, a2)
        if self.normalize:  # through n = x·s: dx = s·dn - x·s³·Σ(x·dn) where the norm was not clamped
            d1 = self._normalize_backward(x1, s1, d1, a1)
            d2 = self._normalize_backward(x2, s2, d2, a2)
        return [np.ascontiguousarray(d1, dtype=x1.dtype), np.ascontiguousarray(d2, dtype=x2.dtype)]

    @staticmethod
    def _normalize_backward(x, scale, dn, axis):
        eps = np.asarray(1e-7, x.dtype)
        unclamped = np.sum(x * x, axis=axis, keepdims=True) > eps * eps
        inner = np.sum(x * dn, axis=axis, keepdims=True)
        return scale * dn - np.where(unclamped, x * scale ** 3 * inner, 0)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axes=self.axes, normalize=self.normalize)
        return cfg


# ---- the function forms (Keras' layers.add, layers.concatenate ...) -----------------------------------
def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``: the elementwise sum of a list of tensors."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``: inputs[0] - inputs[1]."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``: the elementwise product of a list of tensors."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``: the elementwise mean of a list of tensors."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``: the elementwise maximum of a list of tensors."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``: the elementwise minimum of a list of tensors."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis, **kwargs)(inputs)``: a list of tensors joined along `axis` (default -1)."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, **kwargs):
    """``Dot(axes, **kwargs)(inputs)``: the dot product of two tensors (default: last axes)."""
    return Dot(axes=axes, **kwargs)(inputs)
