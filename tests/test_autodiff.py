"""fastnn.autodiff and the differentiable maths of fastnn.ops (python/fastnn/ops/math.py).

Every derivative is checked against float64 central finite differences; every value (traced or
not) against NumPy. Custom losses written with these functions are checked through
fastnn.losses (value_and_grad against finite differences) and by training a small model.
"""

import numpy as np
import pytest

import fastnn
from fastnn import autodiff, losses, ops
from fastnn.autodiff import Tensor


def fd_grad(f, x, h=1e-6):
    """Central finite differences of a scalar function of a float64 array."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        up = float(f(x))
        x[i] = keep - h
        down = float(f(x))
        x[i] = keep
        g[i] = (up - down) / (2 * h)
    return g


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.max(np.abs(want)) if want.size else 0.0
    return np.max(np.abs(got - want)) / max(scale, 1e-12) if got.size else 0.0


def check_vjp(fn, x, rng, tol=1e-6):
    """vjp(fn, x, dy) and grad(sum(fn·dy)) against finite differences of sum(fn(x)·dy)."""
    x = np.asarray(x, np.float64)
    out = fn(x)
    assert not isinstance(out, Tensor)  # plain NumPy in, plain NumPy out
    dy = rng.normal(size=np.shape(out))
    want = fd_grad(lambda v: np.sum(np.asarray(fn(v)) * dy), x)
    got = autodiff.vjp(fn, x, dy)
    assert isinstance(got, np.ndarray) and got.shape == x.shape
    assert rel_err(got, want) < tol
    got2 = autodiff.grad(lambda t: ops.sum(ops.multiply(fn(t), dy)), x)
    assert rel_err(got2, want) < tol
    # the traced value is the plain value
    traced = fn(Tensor(x))
    assert isinstance(traced, Tensor)
    np.testing.assert_array_equal(traced.value, out)
    return got


def away_from_zero(rng, shape, low=0.2, high=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, shape)


# ---- elementwise, one argument ------------------------------------------------------------------
UNARY = {
    "negative": (ops.negative, np.negative, lambda r, s: r.normal(size=s)),
    "abs": (ops.abs, np.abs, away_from_zero),
    "absolute": (ops.absolute, np.abs, away_from_zero),
    "square": (ops.square, np.square, lambda r, s: r.normal(size=s)),
    "sqrt": (ops.sqrt, np.sqrt, lambda r, s: r.uniform(0.3, 3.0, s)),
    "exp": (ops.exp, np.exp, lambda r, s: r.normal(size=s)),
    "log": (ops.log, np.log, lambda r, s: r.uniform(0.3, 3.0, s)),
    "log1p": (ops.log1p, np.log1p, lambda r, s: r.uniform(-0.6, 3.0, s)),
    "expm1": (ops.expm1, np.expm1, lambda r, s: r.normal(size=s)),
    "tanh": (ops.tanh, np.tanh, lambda r, s: r.normal(size=s)),
    "sigmoid": (ops.sigmoid, lambda v: 1 / (1 + np.exp(-v)), lambda r, s: 3 * r.normal(size=s)),
    "relu": (ops.relu, lambda v: np.maximum(v, 0), away_from_zero),
    "softplus": (ops.softplus, lambda v: np.log1p(np.exp(v)), lambda r, s: 3 * r.normal(size=s)),
    "clip": (lambda v: ops.clip(v, -0.5, 0.7), lambda v: np.clip(v, -0.5, 0.7),
             lambda r, s: r.choice([-1.3, -0.2, 0.1, 0.4, 1.1], size=s) + r.uniform(-0.05, 0.05, s)),
    "power_3": (lambda v: ops.power(v, 3.0), lambda v: np.power(v, 3.0), lambda r, s: r.normal(size=s)),
    "power_half": (lambda v: ops.power(v, 0.5), np.sqrt, lambda r, s: r.uniform(0.3, 3.0, s)),
    "power_base": (lambda v: ops.power(2.0, v), lambda v: np.power(2.0, v), lambda r, s: r.normal(size=s)),
    "stop_gradient_passthrough": (lambda v: ops.add(ops.square(v), ops.stop_gradient(v)),
                                  lambda v: np.square(v) + v, lambda r, s: r.normal(size=s)),
}


@pytest.mark.parametrize("shape", [(5,), (3, 4), ()])
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_gradient_and_value(rng, name, shape):
    fn, reference, draw = UNARY[name]
    x = np.asarray(draw(rng, shape), np.float64)
    if name == "stop_gradient_passthrough":
        got = autodiff.vjp(fn, x, np.ones(shape))
        np.testing.assert_allclose(got, 2 * x, rtol=1e-15)  # stop_gradient has no derivative
        np.testing.assert_allclose(fn(x), reference(x), rtol=1e-15)
        return
    np.testing.assert_allclose(fn(x), reference(x), rtol=1e-14, atol=1e-300)
    check_vjp(fn, x, rng)


def test_stable_sigmoid_and_softplus_at_extremes():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(ops.sigmoid(x), [0.0, np.exp(-40) / (1 + np.exp(-40)), 0.5,
                                                    1 / (1 + np.exp(-40)), 1.0], rtol=1e-15, atol=0)
        np.testing.assert_allclose(ops.softplus(x), [0.0, np.log1p(np.exp(-40)), np.log(2),
                                                     40 + np.log1p(np.exp(-40)), 800.0], rtol=1e-15, atol=1e-300)
        g = autodiff.grad(lambda t: ops.sum(ops.sigmoid(t)), x)
        assert np.all(np.isfinite(g))
        g = autodiff.grad(lambda t: ops.sum(ops.softplus(t)), x)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, 1 / (1 + np.exp(-x)), rtol=1e-15)


# ---- elementwise, two arguments, broadcasting -------------------------------------------------------
def _positive(r, s):
    return r.uniform(0.5, 2.0, s)


BINARY = {
    "add": (ops.add, np.add, lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s)),
    "subtract": (ops.subtract, np.subtract, lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s)),
    "multiply": (ops.multiply, np.multiply, lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s)),
    "divide": (ops.divide, np.divide, lambda r, s: r.normal(size=s), away_from_zero),
    "power": (ops.power, np.power, _positive, lambda r, s: r.normal(size=s)),
    "maximum": (ops.maximum, np.maximum, lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s)),
    "minimum": (ops.minimum, np.minimum, lambda r, s: r.normal(size=s), lambda r, s: r.normal(size=s)),
}
SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((1, 4), (3, 1)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)),
               ((3, 4), ()), ((), (3, 4)), ((2, 1, 4), (3, 1))]


def _check_binary(op, a, b, rng):
    out = op(a, b)
    assert not isinstance(out, Tensor)
    dy = rng.normal(size=np.shape(out))
    fa = fd_grad(lambda v: np.sum(op(v, b) * dy), a)
    fb = fd_grad(lambda v: np.sum(op(a, v) * dy), b)
    # one argument traced, the other a constant
    assert rel_err(autodiff.vjp(lambda t: op(t, b), a, dy), fa) < 1e-6
    assert rel_err(autodiff.vjp(lambda t: op(a, t), b, dy), fb) < 1e-6
    # both traced: backward returns the gradient of each leaf, reduced to its shape
    ta, tb = Tensor(a), Tensor(b)
    traced = op(ta, tb)
    np.testing.assert_array_equal(traced.value, out)
    grads = autodiff.backward(traced, dy)
    assert np.shape(grads[id(ta)]) == np.shape(a) and np.shape(grads[id(tb)]) == np.shape(b)
    assert rel_err(grads[id(ta)], fa) < 1e-6
    assert rel_err(grads[id(tb)], fb) < 1e-6


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=[f"{a}-{b}" for a, b in SHAPE_PAIRS])
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_gradient_with_broadcasting(rng, name, shapes):
    op, reference, draw_a, draw_b = BINARY[name]
    a = np.asarray(draw_a(rng, shapes[0]), np.float64)
    b = np.asarray(draw_b(rng, shapes[1]), np.float64)
    np.testing.assert_allclose(op(a, b), reference(a, b), rtol=1e-15)
    _check_binary(op, a, b, rng)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 1), (1, 4), (3, 4)), ((3, 4), (), (1, 4)),
                                    ((4,), (3, 1), (3, 4))])
def test_where_gradient(rng, shapes):
    sa, sb, sc = shapes
    a, b = rng.normal(size=sa), rng.normal(size=sb)
    cond = rng.random(sc) < 0.5
    np.testing.assert_array_equal(ops.where(cond, a, b), np.where(cond, a, b))
    _check_binary(lambda x1, x2: ops.where(cond, x1, x2), a, b, rng)
    # a constant branch
    x = rng.normal(size=sa)
    check_vjp(lambda t: ops.where(cond, t, 0.0), x, rng)
    # a condition computed from the traced value itself (comparisons give plain arrays)
    y = away_from_zero(rng, (3, 4))
    g = autodiff.grad(lambda t: ops.sum(ops.where(t > 0, ops.square(t), -t)), y)
    np.testing.assert_allclose(g, np.where(y > 0, 2 * y, -1.0), rtol=1e-15)


def test_maximum_minimum_ties_send_the_gradient_to_the_first_argument():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 5.0, 0.0])
    ta, tb = Tensor(a), Tensor(b)
    grads = autodiff.backward(ops.maximum(ta, tb))
    np.testing.assert_array_equal(grads[id(ta)], [1, 0, 1])
    np.testing.assert_array_equal(grads[id(tb)], [0, 1, 0])
    ta, tb = Tensor(a), Tensor(b)
    grads = autodiff.backward(ops.minimum(ta, tb))
    np.testing.assert_array_equal(grads[id(ta)], [1, 1, 0])
    np.testing.assert_array_equal(grads[id(tb)], [0, 0, 1])


def test_a_value_used_twice_accumulates_its_gradients(rng):
    x = rng.normal(size=(3, 4))
    np.testing.assert_allclose(autodiff.grad(lambda t: ops.sum(ops.multiply(t, t)), x), 2 * x, rtol=1e-15)
    np.testing.assert_allclose(autodiff.grad(lambda t: ops.sum(t * t + t * 3.0 - t), x), 2 * x + 2, rtol=1e-15)
    # a diamond: u used by two branches that join again
    f = lambda t: ops.sum(ops.exp(ops.tanh(t)) * ops.square(ops.tanh(t)) + ops.tanh(t))  # noqa: E731
    check_vjp(lambda t: ops.exp(ops.tanh(t)) * ops.square(ops.tanh(t)) + ops.tanh(t), x, rng)
    assert rel_err(autodiff.grad(f, x), fd_grad(f, x)) < 1e-6


# ---- Tensor operators --------------------------------------------------------------------------------
OPERATORS = {
    "x+1": (lambda t: t + 1.0, lambda v: v + 1.0),
    "1+x": (lambda t: 1.0 + t, lambda v: 1.0 + v),
    "x-2": (lambda t: t - 2.0, lambda v: v - 2.0),
    "2-x": (lambda t: 2.0 - t, lambda v: 2.0 - v),
    "x*3": (lambda t: t * 3.0, lambda v: v * 3.0),
    "3*x": (lambda t: 3.0 * t, lambda v: 3.0 * v),
    "x/2": (lambda t: t / 2.0, lambda v: v / 2.0),
    "2/x": (lambda t: 2.0 / t, lambda v: 2.0 / v),
    "x**2": (lambda t: t ** 2, lambda v: v ** 2),
    "2**x": (lambda t: 2.0 ** t, lambda v: 2.0 ** v),
    "-x": (lambda t: -t, lambda v: -v),
    "+x": (lambda t: +t, lambda v: +v),
    "abs(x)": (lambda t: abs(t), np.abs),
    "x.T": (lambda t: t.T, lambda v: v.T),
    "ndarray*x": (lambda t: np.array([[1.0, -2.0, 0.5, 3.0]]) * t, lambda v: np.array([[1.0, -2.0, 0.5, 3.0]]) * v),
    "ndarray-x": (lambda t: np.array([1.0, -2.0, 0.5, 3.0]) - t, lambda v: np.array([1.0, -2.0, 0.5, 3.0]) - v),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_tensor_operators(rng, name):
    traced_fn, plain_fn = OPERATORS[name]
    x = away_from_zero(rng, (3, 4))
    out = traced_fn(Tensor(x))
    assert isinstance(out, Tensor)
    np.testing.assert_allclose(out.value, plain_fn(x), rtol=1e-15)
    dy = rng.normal(size=out.shape)
    got = autodiff.vjp(traced_fn, x, dy)
    assert rel_err(got, fd_grad(lambda v: np.sum(plain_fn(v) * dy), x)) < 1e-6


# ---- reductions ------------------------------------------------------------------------------------------
AXES = [None, 0, 1, -1, 2, (0, 2), (-1, 0)]
REDUCTIONS = {"sum": (ops.sum, np.sum), "mean": (ops.mean, np.mean), "max": (ops.max, np.max),
              "min": (ops.min, np.min)}


def _np_logsumexp(v, axis=None, keepdims=False):
    top = np.max(v, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(v - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS) + ["logsumexp"])
def test_reduction_gradients(rng, name, axis, keepdims):
    op, reference = (ops.logsumexp, _np_logsumexp) if name == "logsumexp" else REDUCTIONS[name]
    x = rng.normal(size=(2, 3, 4))  # continuous: no ties for max/min
    fn = lambda v: op(v, axis=axis, keepdims=keepdims)  # noqa: E731
    plain = fn(x)
    want = reference(x, axis=axis, keepdims=keepdims)
    assert np.shape(plain) == np.shape(want)
    np.testing.assert_allclose(plain, want, rtol=1e-14)
    check_vjp(fn, x, rng)


def test_mean_gradient_simple():
    """d mean(x) / dx = 1/n (and 1/size along an axis)."""
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(autodiff.grad(ops.mean, x), np.full((2, 3), 1 / 6), rtol=1e-15)
    np.testing.assert_allclose(autodiff.grad(lambda t: ops.sum(ops.mean(t, axis=-1)), x),
                               np.full((2, 3), 1 / 3), rtol=1e-15)


def test_max_gradient_goes_to_the_maximum(rng):
    x = rng.normal(size=(4, 5))
    g = autodiff.grad(lambda t: ops.sum(ops.max(t, axis=1)), x)
    want = np.zeros_like(x)
    want[np.arange(4), np.argmax(x, axis=1)] = 1
    np.testing.assert_array_equal(g, want)


def test_logsumexp_is_stable_on_large_values():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1001.0]])
    np.testing.assert_allclose(ops.logsumexp(x, axis=-1), [1000 + np.log(2), -1000 + np.log1p(np.exp(-1))],
                               rtol=1e-15)
    g = autodiff.grad(lambda t: ops.sum(ops.logsumexp(t, axis=-1)), x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[0.5, 0.5], [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))]], rtol=1e-12)


# ---- softmax and log_softmax -----------------------------------------------------------------------------
def _np_log_softmax(v, axis=-1):
    return v - _np_logsumexp(v, axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_gradients(rng, name, axis):
    x = 2 * rng.normal(size=(3, 4, 5))
    op = getattr(ops, name)
    want = _np_log_softmax(x, axis) if name == "log_softmax" else np.exp(_np_log_softmax(x, axis))
    np.testing.assert_allclose(op(x, axis=axis), want, rtol=1e-13, atol=1e-15)
    check_vjp(lambda v: op(v, axis=axis), x, rng)


def test_softmax_is_stable_and_sums_to_one():
    x = np.array([[1e4, -1e4, 0.0], [800.0, 800.0, 800.0]])
    p = ops.softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3] * 3], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ops.log_softmax(x)[1], np.full(3, -np.log(3)), rtol=1e-12)
    # softmax is shift invariant, and its Jacobian annihilates constant directions
    g = autodiff.vjp(ops.softmax, x, np.ones_like(x))
    np.testing.assert_allclose(g, 0, atol=1e-12)


@pytest.mark.parametrize("shift", [1e4, -1e4])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_float32_softmax_is_shift_invariant(rng, name, shift):
    """softmax(z + c) = softmax(z): a large shared offset must not cost float32 precision."""
    z = rng.integers(-40, 40, (6, 5)) / 8.0  # multiples of 1/8: z + shift is exact in float32
    shifted = (z + shift).astype(np.float32)
    assert np.all(shifted.astype(np.float64) - shift == z)
    want = _np_log_softmax(z) if name == "log_softmax" else np.exp(_np_log_softmax(z))
    got = getattr(ops, name)(shifted)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=64 * float(np.finfo(np.float32).eps))


# ---- shapes and indexing ---------------------------------------------------------------------------------
SHAPE_OPS = {
    "reshape_6_4": ((2, 3, 4), lambda v: ops.reshape(v, (6, 4)), lambda v: np.reshape(v, (6, 4))),
    "reshape_flat": ((2, 3, 4), lambda v: ops.reshape(v, (-1,)), lambda v: np.reshape(v, (-1,))),
    "reshape_4_-1_3": ((2, 3, 4), lambda v: ops.reshape(v, (4, -1, 3)), lambda v: np.reshape(v, (4, -1, 3))),
    "expand_dims_0": ((3, 4), lambda v: ops.expand_dims(v, 0), lambda v: np.expand_dims(v, 0)),
    "expand_dims_1": ((3, 4), lambda v: ops.expand_dims(v, 1), lambda v: np.expand_dims(v, 1)),
    "expand_dims_-1": ((3, 4), lambda v: ops.expand_dims(v, -1), lambda v: np.expand_dims(v, -1)),
    "squeeze_all": ((2, 1, 3, 1), lambda v: ops.squeeze(v), np.squeeze),
    "squeeze_1": ((2, 1, 3, 1), lambda v: ops.squeeze(v, axis=1), lambda v: np.squeeze(v, axis=1)),
    "squeeze_-1": ((2, 1, 3, 1), lambda v: ops.squeeze(v, axis=-1), lambda v: np.squeeze(v, axis=-1)),
    "transpose": ((2, 3, 4), lambda v: ops.transpose(v), np.transpose),
    "transpose_102": ((2, 3, 4), lambda v: ops.transpose(v, (1, 0, 2)), lambda v: np.transpose(v, (1, 0, 2))),
    "transpose_201": ((2, 3, 4), lambda v: ops.transpose(v, (2, 0, 1)), lambda v: np.transpose(v, (2, 0, 1))),
    "transpose_120": ((2, 3, 4), lambda v: ops.transpose(v, (1, 2, 0)), lambda v: np.transpose(v, (1, 2, 0))),
    "cast": ((3, 4), lambda v: ops.cast(v, "float64"), lambda v: v.astype("float64")),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_function_gradients(rng, name):
    shape, fn, reference = SHAPE_OPS[name]
    x = rng.normal(size=shape)
    np.testing.assert_array_equal(fn(x), reference(x))
    check_vjp(fn, x, rng)


MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])
INDICES = {
    "int": 1,
    "neg_int": -1,
    "slice": (slice(None), slice(1, 3)),
    "step": (Ellipsis, slice(None, None, -2)),
    "int_array_repeats": np.array([0, 2, 0, 0]),
    "int_arrays_pairs": (np.array([0, 1, 2, 2]), np.array([3, 0, 3, 3])),
    "bool_mask": MASK,
    "new_axis": (None, 0),
    "scalar": (2, 3),
}


@pytest.mark.parametrize("name", list(INDICES))
def test_indexing_gradients(rng, name):
    index = INDICES[name]
    x = rng.normal(size=(3, 4))
    fn_op = lambda v: ops.take_index(v, index)  # noqa: E731
    np.testing.assert_array_equal(fn_op(x), x[index])
    traced = Tensor(x)[index]
    assert isinstance(traced, Tensor)
    np.testing.assert_array_equal(traced.value, x[index])
    check_vjp(fn_op, x, rng)
    dy = rng.normal(size=np.shape(x[index]))
    got = autodiff.vjp(lambda t: t[index], x, dy)
    want = np.zeros_like(x)
    np.add.at(want, index, dy)  # repeated indices accumulate
    np.testing.assert_allclose(got, want, rtol=1e-15)


# ---- plain NumPy in, plain NumPy out -----------------------------------------------------------------
def test_plain_numpy_inputs_give_plain_numpy_results(rng):
    a = rng.uniform(0.5, 2.0, (3, 4))
    b = rng.uniform(0.5, 2.0, (1, 4))
    cond = a > 1
    cases = [
        (ops.add(a, b), a + b), (ops.subtract(a, b), a - b), (ops.multiply(a, b), a * b),
        (ops.divide(a, b), a / b), (ops.power(a, b), a ** b), (ops.negative(a), -a), (ops.abs(-a), a),
        (ops.square(a), a * a), (ops.sqrt(a), np.sqrt(a)), (ops.exp(a), np.exp(a)), (ops.log(a), np.log(a)),
        (ops.log1p(a), np.log1p(a)), (ops.expm1(a), np.expm1(a)), (ops.tanh(a), np.tanh(a)),
        (ops.sigmoid(a), 1 / (1 + np.exp(-a))), (ops.relu(a - 1), np.maximum(a - 1, 0)),
        (ops.softplus(a), np.log1p(np.exp(a))), (ops.clip(a, 0.8, 1.5), np.clip(a, 0.8, 1.5)),
        (ops.maximum(a, b), np.maximum(a, b)), (ops.minimum(a, b), np.minimum(a, b)),
        (ops.where(cond, a, b), np.where(cond, a, b)),
        (ops.sum(a), np.sum(a)), (ops.sum(a, axis=0), np.sum(a, axis=0)),
        (ops.mean(a, axis=1, keepdims=True), np.mean(a, axis=1, keepdims=True)),
        (ops.max(a, axis=-1), np.max(a, axis=-1)), (ops.min(a), np.min(a)),
        (ops.logsumexp(a, axis=1), np.log(np.sum(np.exp(a), axis=1))),
        (ops.softmax(a), np.exp(a) / np.sum(np.exp(a), axis=-1, keepdims=True)),
        (ops.log_softmax(a), np.log(np.exp(a) / np.sum(np.exp(a), axis=-1, keepdims=True))),
        (ops.reshape(a, (4, 3)), a.reshape(4, 3)), (ops.expand_dims(a, 1), a[:, None]),
        (ops.squeeze(b), b[0]), (ops.transpose(a), a.T), (ops.take_index(a, (1, slice(None))), a[1]),
        (ops.stop_gradient(a), a),
    ]
    for got, want in cases:
        assert not isinstance(got, Tensor)
        assert isinstance(got, (np.ndarray, np.generic))
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-14)
    # lists are accepted as NumPy would
    np.testing.assert_array_equal(ops.square([1.0, 2.0]), [1.0, 4.0])


def test_grad_and_vjp_edge_cases():
    # the docstring example
    np.testing.assert_array_equal(autodiff.grad(lambda x: ops.sum(ops.square(x)), np.array([1.0, 2.0])),
                                  [2.0, 4.0])
    # integer input is differentiated in float64
    g = autodiff.grad(lambda x: ops.sum(x * x), np.array([1, 2, 3]))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [2.0, 4.0, 6.0])
    # a function that ignores its input has zero gradient
    np.testing.assert_array_equal(autodiff.grad(lambda x: 3.0, np.ones(3)), np.zeros(3))
    np.testing.assert_array_equal(autodiff.vjp(lambda x: np.ones(2), np.ones(2), np.ones(2)), np.zeros(2))
    # a non-scalar output: the gradient of its sum
    np.testing.assert_allclose(autodiff.grad(ops.exp, np.array([0.0, 1.0])), [1.0, np.e], rtol=1e-15)
    # float32 stays float32
    g32 = autodiff.grad(lambda x: ops.sum(ops.square(x)), np.array([1.0, 2.0], np.float32))
    assert g32.dtype == np.float32
    # vjp with a scalar cotangent broadcast to the output
    np.testing.assert_allclose(autodiff.vjp(ops.square, np.array([1.0, -2.0]), 3.0), [6.0, -12.0], rtol=1e-15)


def test_composite_function(rng):
    """A loss-like composition of many ops, against finite differences."""
    y = np.eye(5)[rng.integers(0, 5, 4)]
    w = rng.uniform(0.5, 1.5, (4, 1))

    def f(z):
        ce = -ops.sum(y * ops.log_softmax(z, axis=-1), axis=-1, keepdims=True)
        reg = ops.sum(ops.square(ops.tanh(z)), axis=-1, keepdims=True) / 5.0
        return ops.sum(ops.sqrt(ops.square(ce * w) + 1.0) + 0.1 * reg) / 4.0

    z = 2 * rng.normal(size=(4, 5))
    assert rel_err(autodiff.grad(f, z), fd_grad(f, z)) < 1e-6


# ---- custom losses through fastnn.losses -----------------------------------------------------------------
WSLE_WEIGHTS = np.array([1.0, 2.0, 0.5])


def weighted_squared_log_error(y_true, y_pred):
    """Keras style: ops.mean over the last axis."""
    return ops.mean(WSLE_WEIGHTS * ops.square(ops.log1p(y_pred) - ops.log1p(y_true)), axis=-1)


def weighted_squared_log_error_sum(y_true, y_pred):
    """The same loss with ops.sum / classes instead of ops.mean."""
    return ops.sum(WSLE_WEIGHTS * ops.square(ops.log1p(y_pred) - ops.log1p(y_true)), axis=-1) / 3.0


def ref_wsle(y_true, y_pred):
    return np.mean(WSLE_WEIGHTS * np.square(np.log1p(y_pred) - np.log1p(y_true)), axis=-1)


def focal_loss(y_true, y_pred, gamma=2.0):
    p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
    pt = ops.where(y_true > 0.5, p, 1 - p)
    return ops.sum(-ops.power(1 - pt, gamma) * ops.log(pt), axis=-1)


def ref_focal(y_true, y_pred, gamma=2.0):
    p = np.clip(y_pred, 1e-7, 1 - 1e-7)
    pt = np.where(y_true > 0.5, p, 1 - p)
    return np.sum(-np.power(1 - pt, gamma) * np.log(pt), axis=-1)


def _reduce(rows, w, reduction):
    """Keras: weights squeezed/expanded to the rank of the per-sample values, then broadcast."""
    if w is not None:
        w = np.asarray(w)
        if w.ndim == rows.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        while w.ndim < rows.ndim:
            w = w[..., None]
    values = rows if w is None else rows * w
    if reduction is None:
        return values
    return values.sum() / values.size if reduction == "sum_over_batch_size" else values.sum()


CUSTOM = {
    "wsle_mean": (weighted_squared_log_error, ref_wsle, "regression"),
    "wsle_sum": (weighted_squared_log_error_sum, ref_wsle, "regression"),
    "focal": (focal_loss, ref_focal, "binary"),
}


def _custom_data(rng, kind, shape):
    if kind == "regression":
        return rng.uniform(0, 3, shape), rng.uniform(0, 3, shape)
    return rng.integers(0, 2, shape).astype(np.float64), rng.uniform(0.05, 0.95, shape)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", None])
@pytest.mark.parametrize("shape,weight_shape", [((6, 3), None), ((6, 3), (6,)), ((6, 3), (6, 1)),
                                                 ((4, 2, 3), (4,))])
@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_function_loss_value_and_grad(rng, name, shape, weight_shape, reduction):
    fn, reference, kind = CUSTOM[name]
    y_true, y_pred = _custom_data(rng, kind, shape)
    w = None if weight_shape is None else rng.uniform(0.2, 2.0, weight_shape)
    loss = losses.get(fn) if reduction == "sum_over_batch_size" else losses.LossFunctionWrapper(fn, reduction)
    assert isinstance(loss, losses.Loss)
    want = _reduce(reference(y_true, y_pred), w, reduction)
    np.testing.assert_allclose(loss(y_true, y_pred, w), want, rtol=1e-12)
    if reduction is None:
        return
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    assert value == pytest.approx(want, rel=1e-12)
    assert grad.shape == y_pred.shape
    assert rel_err(grad, fd_grad(lambda p: _reduce(reference(y_true, p), w, reduction), y_pred)) < 1e-6
    assert rel_err(grad, fd_grad(lambda p: loss(y_true, p, w), y_pred)) < 1e-6


def test_custom_function_loss_kwargs_and_float32(rng):
    y_true, y_pred = _custom_data(rng, "binary", (5, 4))
    loss = losses.LossFunctionWrapper(focal_loss, gamma=3.0)
    assert loss.name == "focal_loss"
    value, grad = loss.value_and_grad(y_true, y_pred)
    assert value == pytest.approx(np.mean(ref_focal(y_true, y_pred, 3.0)), rel=1e-12)
    assert rel_err(grad, fd_grad(lambda p: np.mean(ref_focal(y_true, p, 3.0)), y_pred)) < 1e-6
    v32, g32 = loss.value_and_grad(y_true.astype(np.float32), y_pred.astype(np.float32))
    assert g32.dtype == np.float32
    assert v32 == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(g32, grad, rtol=1e-4, atol=1e-6)


def test_custom_function_returning_a_scalar_is_not_divided_again(rng):
    """Keras' reduce_values returns a scalar loss as it is (no division by the batch size)."""
    def total_squared_error(y_true, y_pred):
        return ops.sum(ops.square(y_pred - y_true))

    y_true, y_pred = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    loss = losses.get(total_squared_error)
    want = np.sum(np.square(y_pred - y_true))
    value, grad = loss.value_and_grad(y_true, y_pred)
    assert value == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(grad, 2 * (y_pred - y_true), rtol=1e-12)


class SquaredErrorWithFakeGradient(losses.Loss):
    """call: per-sample sum of squares; gradient: deliberately NOT the true one."""

    def call(self, y_true, y_pred):
        return np.sum(np.square(np.asarray(y_pred) - y_true), axis=-1)

    def gradient(self, y_true, y_pred):
        return np.full_like(y_pred, 7.0) + np.arange(y_pred.shape[-1])


class LogCoshLoss(losses.Loss):
    """Only call, with fastnn.ops maths: the gradient is derived automatically."""

    def call(self, y_true, y_pred):
        e = y_pred - y_true
        return ops.mean(e + ops.softplus(-2.0 * e) - np.log(2.0), axis=-1)


class LogCoshLossSum(losses.Loss):
    def call(self, y_true, y_pred):
        e = y_pred - y_true
        return ops.sum(e + ops.softplus(-2.0 * e) - np.log(2.0), axis=-1) / y_pred.shape[-1]


def ref_logcosh(y_true, y_pred):
    return np.mean(np.log(np.cosh(y_pred - y_true)), axis=-1)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
def test_loss_subclass_gradient_is_used(rng, reduction):
    y_true, y_pred = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    w = rng.uniform(0.5, 2.0, 5)
    loss = SquaredErrorWithFakeGradient(reduction=reduction)
    assert loss.name == "squared_error_with_fake_gradient"
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    rows = np.sum(np.square(y_pred - y_true), axis=-1)
    scale = 1 / 5 if reduction == "sum_over_batch_size" else 1.0
    assert value == pytest.approx(np.sum(rows * w) * scale, rel=1e-12)
    fake = np.full((5, 3), 7.0) + np.arange(3)
    np.testing.assert_allclose(grad, fake * w[:, None] * scale, rtol=1e-15)
    true_grad = 2 * (y_pred - y_true) * w[:, None] * scale
    assert not np.allclose(grad, true_grad)
    # without weights
    _, grad = loss.value_and_grad(y_true, y_pred)
    np.testing.assert_allclose(grad, fake * scale, rtol=1e-15)


@pytest.mark.parametrize("cls", [LogCoshLoss, LogCoshLossSum])
@pytest.mark.parametrize("weight_shape", [None, (6,), (6, 1)])
def test_loss_subclass_with_only_call_gets_the_automatic_gradient(rng, cls, weight_shape):
    y_true, y_pred = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    w = None if weight_shape is None else rng.uniform(0.5, 2.0, weight_shape)
    loss = cls()
    want = _reduce(ref_logcosh(y_true, y_pred), w, "sum_over_batch_size")
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    assert value == pytest.approx(want, rel=1e-12)
    assert rel_err(grad, fd_grad(lambda p: _reduce(ref_logcosh(y_true, p), w, "sum_over_batch_size"),
                                 y_pred)) < 1e-6
    wb = np.ones((6, 1)) if w is None else w.reshape(6, 1)
    np.testing.assert_allclose(grad, np.tanh(y_pred - y_true) / 3 * wb / 6, rtol=1e-12)


def test_loss_subclass_without_call_is_rejected(rng):
    class NoCall(losses.Loss):
        pass

    with pytest.raises(TypeError, match="NoCall must implement call"):
        NoCall()(np.zeros((2, 2)), np.zeros((2, 2)))


# ---- training with a custom loss --------------------------------------------------------------------------
def squared_error_sum(y_true, y_pred):
    return ops.sum(ops.square(y_pred - y_true), axis=-1)


def squared_error_mean(y_true, y_pred):  # the usual Keras way of writing it
    return ops.mean(ops.square(y_pred - y_true), axis=-1)


def pseudo_huber(y_true, y_pred):
    e = y_pred - y_true
    return ops.sum(ops.sqrt(1.0 + ops.square(e)) - 1.0, axis=-1)


@pytest.mark.parametrize("loss_fn", [squared_error_sum, squared_error_mean, pseudo_huber, LogCoshLossSum()],
                         ids=["sum", "mean", "pseudo_huber", "logcosh_subclass"])
def test_custom_loss_trains_a_linear_model(loss_fn):
    fastnn.utils.set_random_seed(0)
    data = np.random.default_rng(7)
    x = data.normal(size=(256, 3)).astype(np.float32)
    w_true = np.array([[1.5], [-2.0], [0.5]], np.float32)
    b_true = np.float32(0.3)
    y = x @ w_true + b_true
    model = fastnn.Sequential([fastnn.layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=fastnn.optimizers.SGD(0.1), loss=loss_fn)
    kernel0 = model.get_weights()[0].copy()
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    kernel, bias = model.get_weights()
    assert not np.allclose(kernel0, w_true, atol=0.1)
    np.testing.assert_allclose(kernel, w_true, atol=2e-3)
    np.testing.assert_allclose(bias, [b_true], atol=2e-3)
    losses_seen = history.history["loss"]
    assert losses_seen[-1] < 1e-3 * losses_seen[0]


def test_constant_makers_and_shape():
    from fastnn import ops
    import fastnn

    np.testing.assert_array_equal(ops.arange(2, 8, 3), np.arange(2, 8, 3))
    assert ops.zeros((2, 3)).dtype == np.float32 and not ops.zeros((2, 3)).any()
    np.testing.assert_array_equal(ops.ones((2,), dtype="int32"), [1, 1])
    assert ops.shape(np.ones((4, 5))) == (4, 5) and ops.shape(fastnn.Input((7,))) == (None, 7)
