"""Array maths with Keras 3 names (``fastnn.ops.mean``, ``ops.square``...).

Each function computes with NumPy; given an ``autodiff.Tensor`` it also records its
derivative, so that custom losses written with these functions train without a
hand-written gradient. Given symbolic tensors (``keras.Input``, or inside a traced
``call()``), each records one node of the model graph, whose backward is that derivative:
custom layers and subclassed models written with these functions train as they are.
These are small per-batch computations, not hot kernels.
"""

import builtins
import math

import numpy as np

from .. import config
from ..autodiff import Tensor, is_traced, unbroadcast, value_of
from ..keras_tensor import KerasTensor
from ..operation import symbolic


def _node(value, *parents):
    """A Tensor with (input, local derivative) pairs, keeping only the traced inputs."""
    return Tensor(value, tuple((p, fn) for p, fn in parents if isinstance(p, Tensor)))


def _binary(a, b, value, da, db):
    if not is_traced(a, b):
        return value
    av, bv = value_of(a), value_of(b)
    return _node(value, (a, lambda g: unbroadcast(da(g), np.shape(av))),
                 (b, lambda g: unbroadcast(db(g), np.shape(bv))))


def _unary(x, value, local):
    if not is_traced(x):
        return value
    return _node(value, (x, local))


# ---- elementwise --------------------------------------------------------------------------
@symbolic
def add(a, b):
    """a + b (broadcasting)."""
    return _binary(a, b, np.add(value_of(a), value_of(b)), lambda g: g, lambda g: g)


@symbolic
def subtract(a, b):
    """a - b."""
    return _binary(a, b, np.subtract(value_of(a), value_of(b)), lambda g: g, lambda g: -g)


@symbolic
def multiply(a, b):
    """a * b."""
    av, bv = value_of(a), value_of(b)
    return _binary(a, b, np.multiply(av, bv), lambda g: g * bv, lambda g: g * av)


@symbolic
def divide(a, b):
    """a / b."""
    av, bv = value_of(a), value_of(b)
    return _binary(a, b, np.divide(av, bv), lambda g: g / bv, lambda g: -g * av / np.square(bv))


@symbolic
def power(a, b):
    """a ** b."""
    av, bv = value_of(a), value_of(b)
    out = np.power(av, bv)
    return _binary(a, b, out, lambda g: g * bv * np.power(av, np.subtract(bv, 1)),
                   lambda g: g * out * np.log(np.where(np.asarray(av) > 0, av, 1)))


@symbolic
def negative(x):
    """-x."""
    return _unary(x, np.negative(value_of(x)), lambda g: -g)


@symbolic
def abs(x):  # noqa: A001 - Keras' name
    """|x| (derivative 0 at 0)."""
    v = value_of(x)
    return _unary(x, np.abs(v), lambda g: g * np.sign(v))


absolute = abs


@symbolic
def square(x):
    """x²."""
    v = value_of(x)
    return _unary(x, np.square(v), lambda g: 2 * g * v)


@symbolic
def sqrt(x):
    """√x."""
    out = np.sqrt(value_of(x))
    return _unary(x, out, lambda g: g / (2 * out))


@symbolic
def exp(x):
    """eˣ."""
    out = np.exp(value_of(x))
    return _unary(x, out, lambda g: g * out)


@symbolic
def log(x):
    """Natural logarithm."""
    v = value_of(x)
    return _unary(x, np.log(v), lambda g: g / v)


@symbolic
def log1p(x):
    """log(1 + x)."""
    v = value_of(x)
    return _unary(x, np.log1p(v), lambda g: g / (1 + v))


@symbolic
def expm1(x):
    """eˣ - 1."""
    v = value_of(x)
    return _unary(x, np.expm1(v), lambda g: g * np.exp(v))


@symbolic
def tanh(x):
    """Hyperbolic tangent."""
    out = np.tanh(value_of(x))
    return _unary(x, out, lambda g: g * (1 - out * out))


def _as_float(v):
    """Integers and bools as the float type NumPy's exp gives them (float16 for 8 bits, ...):
    -|v| of an unsigned array would wrap around (uint8 2 -> 254)."""
    v = np.asarray(v)
    return v.astype(np.result_type(v.dtype, np.float16)) if v.dtype.kind in "biu" else v


@symbolic
def sigmoid(x):
    """1 / (1 + e⁻ˣ)."""
    v = _as_float(value_of(x))
    out = np.where(v >= 0, 1 / (1 + np.exp(-np.abs(v))), np.exp(-np.abs(v)) / (1 + np.exp(-np.abs(v))))
    return _unary(x, out, lambda g: g * out * (1 - out))


@symbolic
def relu(x):
    """max(x, 0)."""
    v = value_of(x)
    return _unary(x, np.maximum(v, 0), lambda g: g * (v > 0))


@symbolic
def softplus(x):
    """log(1 + eˣ), stable."""
    v = _as_float(value_of(x))
    out = np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))
    return _unary(x, out, lambda g: g / (1 + np.exp(-v)))


@symbolic
def clip(x, x_min, x_max):
    """x limited to [x_min, x_max] (derivative 1 inside, 0 outside)."""
    v = value_of(x)
    out = np.clip(v, x_min, x_max)
    return _unary(x, out, lambda g: g * ((np.asarray(v) >= x_min) & (np.asarray(v) <= x_max)))


@symbolic
def maximum(a, b):
    """Elementwise maximum (ties send the gradient to a)."""
    av, bv = value_of(a), value_of(b)
    pick_a = np.asarray(av) >= np.asarray(bv)
    return _binary(a, b, np.maximum(av, bv), lambda g: g * pick_a, lambda g: g * ~pick_a)


@symbolic
def minimum(a, b):
    """Elementwise minimum (ties send the gradient to a)."""
    av, bv = value_of(a), value_of(b)
    pick_a = np.asarray(av) <= np.asarray(bv)
    return _binary(a, b, np.minimum(av, bv), lambda g: g * pick_a, lambda g: g * ~pick_a)


@symbolic
def where(condition, x1, x2):
    """x1 where condition holds, else x2."""
    cond = np.asarray(value_of(condition), dtype=bool)
    return _binary(x1, x2, np.where(cond, value_of(x1), value_of(x2)),
                   lambda g: g * cond, lambda g: g * ~cond)


@symbolic
def stop_gradient(x):
    """x's value, with no derivative."""
    return np.array(value_of(x))


# ---- reductions -------------------------------------------------------------------------------
def _expand(g, shape, axis, keepdims):
    if axis is None or keepdims:
        return np.broadcast_to(np.reshape(g, [1] * len(shape)) if axis is None else g, shape)
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    axes = tuple(a % len(shape) for a in axes)
    return np.broadcast_to(np.expand_dims(g, axes), shape)


@symbolic
def sum(x, axis=None, keepdims=False):  # noqa: A001 - Keras' name
    """Sum over `axis` (default all)."""
    v = value_of(x)
    return _unary(x, np.sum(v, axis=axis, keepdims=keepdims), lambda g: _expand(g, v.shape, axis, keepdims))


@symbolic
def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (default all)."""
    v = np.asarray(value_of(x))
    out = np.mean(v, axis=axis, keepdims=keepdims)  # (NumPy's errors for a bad axis, before the count below)
    if not is_traced(x):
        return out
    count = v.size if axis is None else int(np.prod([v.shape[a] for a in np.atleast_1d(axis)]))
    return _unary(x, out, lambda g: _expand(g, v.shape, axis, keepdims) / builtins.max(count, 1))


@symbolic
def max(x, axis=None, keepdims=False):  # noqa: A001 - Keras' name
    """Maximum over `axis` (the gradient goes to the maxima)."""
    v = np.asarray(value_of(x))
    out = np.max(v, axis=axis, keepdims=keepdims)
    return _unary(x, out, lambda g: _expand(g, v.shape, axis, keepdims) * (v == _expand(out, v.shape, axis, keepdims)))


@symbolic
def min(x, axis=None, keepdims=False):  # noqa: A001 - Keras' name
    """Minimum over `axis` (the gradient goes to the minima)."""
    v = np.asarray(value_of(x))
    out = np.min(v, axis=axis, keepdims=keepdims)
    return _unary(x, out, lambda g: _expand(g, v.shape, axis, keepdims) * (v == _expand(out, v.shape, axis, keepdims)))


def _shifted(v, axis):
    """(x - max, Σ exp(x - max)): the shifted values stay exact however large x is. Over an
    empty axis the maximum is -inf (Σ exp = 0: logsumexp -inf, as in Keras)."""
    v = _as_float(v)  # (x - max of unsigned integers would wrap around)
    if v.size == 0:
        shape = np.sum(np.zeros(v.shape, bool), axis=axis, keepdims=True).shape  # (NumPy's errors for a bad axis)
        top = np.full(shape, -np.inf, np.result_type(v.dtype, np.float16))
        return top, v - top, np.zeros(shape, top.dtype)
    top = np.max(v, axis=axis, keepdims=True)
    shifted = v - top
    return top, shifted, np.sum(np.exp(shifted), axis=axis, keepdims=True)


@symbolic
def logsumexp(x, axis=None, keepdims=False):
    """log Σ eˣ over `axis`, computed stably."""
    v = np.asarray(value_of(x))
    top, shifted, total = _shifted(v, axis)
    out_keep = top + np.log(total)
    out = out_keep if keepdims else np.squeeze(out_keep, axis=axis)
    soft = np.exp(shifted) / total
    return _unary(x, out, lambda g: _expand(g, v.shape, axis, keepdims) * soft)


@symbolic
def softmax(x, axis=-1):
    """eˣ / Σ eˣ along `axis`."""
    v = np.asarray(value_of(x))
    _, shifted, total = _shifted(v, axis)
    out = np.exp(shifted) / total
    return _unary(x, out, lambda g: out * (g - np.sum(g * out, axis=axis, keepdims=True)))


@symbolic
def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`."""
    v = np.asarray(value_of(x))
    _, shifted, total = _shifted(v, axis)
    out = shifted - np.log(total)
    soft = np.exp(shifted) / total
    return _unary(x, out, lambda g: g - soft * np.sum(g, axis=axis, keepdims=True))


# ---- shapes and types -------------------------------------------------------------------------
@symbolic
def reshape(x, new_shape):
    """x with a new shape."""
    v = np.asarray(value_of(x))
    return _unary(x, np.reshape(v, new_shape), lambda g: np.reshape(g, v.shape))


@symbolic
def expand_dims(x, axis):
    """x with a new axis of size 1 at `axis`."""
    v = np.asarray(value_of(x))
    return _unary(x, np.expand_dims(v, axis), lambda g: np.reshape(g, v.shape))


@symbolic
def squeeze(x, axis=None):
    """x without axes of size 1."""
    v = np.asarray(value_of(x))
    return _unary(x, np.squeeze(v, axis=axis), lambda g: np.reshape(g, v.shape))


@symbolic
def transpose(x, axes=None):
    """x with its axes permuted (reversed by default)."""
    v = np.asarray(value_of(x))
    inverse = None if axes is None else np.argsort(axes)
    return _unary(x, np.transpose(v, axes), lambda g: np.transpose(g, inverse))


@symbolic
def concatenate(xs, axis=0):
    """The arrays of `xs` joined along an existing `axis` (default 0, as Keras)."""
    values = [np.asarray(value_of(x)) for x in xs]
    out = np.concatenate(values, axis=axis)
    if not is_traced(*xs):
        return out
    if axis is None:  # the arrays flattened, then joined
        bounds = np.cumsum([v.size for v in values])[:-1]

        def part(i):
            return lambda g: np.split(np.asarray(g), bounds)[i].reshape(values[i].shape)
        return _node(out, *((x, part(i)) for i, x in enumerate(xs)))
    bounds = np.cumsum([v.shape[axis] for v in values])[:-1]

    def part(i):
        return lambda g: np.split(g, bounds, axis=axis)[i]

    return _node(out, *((x, part(i)) for i, x in enumerate(xs)))


@symbolic
def stack(xs, axis=0):
    """The arrays of `xs` (one shape) stacked along a new `axis` (default 0)."""
    out = np.stack([np.asarray(value_of(x)) for x in xs], axis=axis)
    if not is_traced(*xs):
        return out

    def part(i):
        return lambda g: np.take(g, i, axis=axis)

    return _node(out, *((x, part(i)) for i, x in enumerate(xs)))


@symbolic
def sin(x):
    """Sine."""
    v = value_of(x)
    return _unary(x, np.sin(v), lambda g: g * np.cos(v))


@symbolic
def cos(x):
    """Cosine."""
    v = value_of(x)
    return _unary(x, np.cos(v), lambda g: -g * np.sin(v))


@symbolic
def zeros_like(x, dtype=None):
    """Zeros shaped like x (no derivative)."""
    return np.zeros_like(np.asarray(value_of(x)), dtype=dtype)


@symbolic
def ones_like(x, dtype=None):
    """Ones shaped like x (no derivative)."""
    return np.ones_like(np.asarray(value_of(x)), dtype=dtype)


@symbolic
def take_index(x, index):
    """x[index] (basic and integer-array indexing)."""
    v = np.asarray(value_of(x))

    def local(g):
        out = np.zeros_like(v, dtype=np.result_type(v.dtype, np.asarray(g).dtype))
        np.add.at(out, index, g)
        return out

    return _unary(x, v[index], local)


@symbolic
def cast(x, dtype):
    """x converted to `dtype` (the derivative passes through for float types)."""
    v = np.asarray(value_of(x))
    return _unary(x, v.astype(dtype), lambda g: g)


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values in [start, stop) (NumPy's arange; a constant, no derivative)."""
    return np.arange(start, stop, step, dtype=dtype)


def zeros(shape, dtype="float32"):
    """An array of zeros (a constant)."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    """An array of ones (a constant)."""
    return np.ones(shape, dtype=dtype)


def shape(x):
    """The shape of x as a tuple (None for unknown sizes of a symbolic tensor, e.g. the batch)."""
    return tuple(x.shape) if isinstance(x, (Tensor, KerasTensor)) else np.shape(x)


def convert_to_tensor(x, dtype=None):
    """x as an array (Tensors and symbolic tensors pass through)."""
    if isinstance(x, (Tensor, KerasTensor)):
        return x
    return np.asarray(x, dtype=dtype)


@symbolic
def convert_to_numpy(x):
    """The value of x as a NumPy array."""
    return np.asarray(value_of(x))


_MAX_SIZE = 2**63 - 1


@symbolic
def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """Integer labels to one-hot vectors (Keras 3's ``ops.one_hot``; no derivative).

    Args:
        x: integer labels, any shape (integer-valued floats are accepted too).
        num_classes: int >= 1, the length of each one-hot vector.
        axis: int, default -1: where the new axis of size num_classes goes in the output
            (in [-(x.ndim + 1), x.ndim]; -1 is last).
        dtype: the output's dtype, default ``fastnn.config.floatx()``.
        sparse: must be False (fastnn has no sparse tensors).

    Returns:
        An array of x's shape with an axis of size num_classes inserted at `axis`: 1 at each
        label's index, 0 elsewhere. A label outside [0, num_classes), negative or too large,
        gives all zeros (Keras' and TensorFlow's rule, not NumPy's negative indexing).

    Raises:
        TypeError: num_classes or axis not an int, or labels that are not numbers (bools
            included).
        ValueError: num_classes < 1 (or above 2**63 - 1), axis out of range, labels that
            are not integers (1.5, NaN), sparse=True, or an output of more than 2**63 - 1
            bytes.

    Example:
        >>> fastnn.ops.one_hot([2, -1, 0, 5], 3)
        array([[0., 0., 1.],
               [0., 0., 0.],
               [1., 0., 0.],
               [0., 0., 0.]], dtype=float32)
    """
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"one_hot: 'num_classes' must be an int >= 1, got {num_classes!r}")
    if not 1 <= num_classes <= _MAX_SIZE:
        raise ValueError(f"one_hot: 'num_classes' must be an int >= 1 (at most 2**63 - 1), got {num_classes!r}")
    num_classes = int(num_classes)
    if sparse:
        raise ValueError("one_hot: sparse=True is not supported (fastnn arrays are dense)")
    dtype = np.dtype(config.floatx() if dtype is None else dtype)
    labels = np.asarray(value_of(x))
    kind = labels.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"one_hot: 'x' must hold integer labels, got an array of dtype {labels.dtype}")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"one_hot: 'axis' must be an int, got {axis!r}")
    rank = labels.ndim + 1
    if not -rank <= axis < rank:
        raise ValueError(f"one_hot: 'axis' must be in [{-rank}, {rank - 1}] for labels with {labels.ndim} axes, "
                         f"got {axis}")
    shape = labels.shape + (num_classes,)
    size = math.prod(d for d in shape if d)  # exact (Python ints); NumPy bounds the nonzero sizes' product
    if size * dtype.itemsize > _MAX_SIZE:
        raise ValueError(f"one_hot: the output of shape {shape} and dtype {dtype.name} is too large: its sizes "
                         f"(zeros aside) times {dtype.itemsize} bytes pass 2**63 - 1")
    flat = labels.reshape(-1)
    if kind == "f":
        bad = ~np.isfinite(flat) | (flat != np.floor(flat))
        if bad.any():
            raise ValueError(f"one_hot: 'x' must hold integer labels, got {flat[bad][0].item()!r}")
    valid = (flat < num_classes) if kind == "u" else ((flat >= 0) & (flat < num_classes))
    out = np.zeros((flat.size, num_classes), dtype)
    out[np.flatnonzero(valid), flat[valid].astype(np.int64)] = 1
    out = out.reshape(shape)
    axis = int(axis) % rank
    return out if axis == rank - 1 else np.ascontiguousarray(np.moveaxis(out, -1, axis))


@symbolic
def argmax(x, axis=-1):
    """Index of the maximum along `axis` (no derivative)."""
    return np.argmax(value_of(x), axis=axis)


@symbolic
def equal(a, b):
    """Elementwise ``a == b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.equal(value_of(a), value_of(b))


@symbolic
def not_equal(a, b):
    """Elementwise ``a != b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.not_equal(value_of(a), value_of(b))


@symbolic
def greater(a, b):
    """Elementwise ``a > b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.greater(value_of(a), value_of(b))


@symbolic
def greater_equal(a, b):
    """Elementwise ``a >= b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.greater_equal(value_of(a), value_of(b))


@symbolic
def less(a, b):
    """Elementwise ``a < b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.less(value_of(a), value_of(b))


@symbolic
def less_equal(a, b):
    """Elementwise ``a <= b`` with broadcasting: a bool array (no derivative).

    Args:
        a, b: arrays, numbers or tensors.
    """
    return np.less_equal(value_of(a), value_of(b))
