"""Activation, PReLU and dropout kernels (cpp/include/fastnn/{activation,dropout}.hpp).

Every kernel is checked against an independent NumPy reference (float32 and float64, shapes
from 0 elements to more than one 16384-value chunk), backward passes against float64 central
finite differences, results against the thread count, and bad input against clear errors.
"""

import math

import numpy as np
import pytest

from fastnn import _core, activations, ops

try:  # optional: the exact erf; math.erf (vectorised) otherwise
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

DTYPES = [np.float32, np.float64]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
KINDS = ["linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh",
         "softplus", "swish", "softmax"]
ELEMENTWISE = [k for k in KINDS if k != "softmax"]
# Functions with a kink (or a jump in a higher derivative) at 0: finite differences avoid it.
KINKED = {"relu", "leaky_relu", "elu", "selu"}
# The alpha passed to the kernel (slope or scale) where the function has one.
ALPHA = {"leaky_relu": 0.37, "elu": 0.7}
# 0 values, 0-d, 1 value, odd sizes, and > 16384 values (several chunks; the smooth
# functions then run on several threads: 100003 * 20 flops > 1.5e6).
SHAPES = [(0,), (3, 0), (0, 4), (), (1,), (7,), (5, 13), (3, 5, 7), (16385,), (100003,)]
SOFTMAX_SHAPES = [(0,), (3, 0), (0, 4), (1,), (1, 1), (7,), (5, 13), (3, 5, 7), (2, 16385), (200, 517)]


# ----------------------------------------------------------------------------------------
# Independent references (float64 NumPy)
# ----------------------------------------------------------------------------------------
def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def ref_forward(kind, x, alpha=0.0):
    x = np.asarray(x, np.float64)
    if kind == "linear":
        return x.copy()
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if kind == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
    if kind == "gelu":
        return 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if kind == "softplus":
        return np.logaddexp(x, 0)
    if kind == "swish":
        return x * _sigmoid(x)
    if kind == "softmax":
        if x.ndim == 0:
            return np.ones_like(x)
        if x.size == 0:
            return x.copy()
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(kind)


def ref_derivative(kind, x, alpha=0.0):
    """f'(x), elementwise (not for softmax)."""
    x = np.asarray(x, np.float64)
    if kind == "linear":
        return np.ones_like(x)
    if kind == "relu":
        return (x > 0).astype(np.float64)
    if kind == "sigmoid":
        s = _sigmoid(x)
        return s * (1 - s)
    if kind == "tanh":
        return 1 - np.tanh(x) ** 2
    if kind == "leaky_relu":
        return np.where(x > 0, 1.0, alpha)
    if kind == "elu":
        return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0)))
    if kind == "gelu":
        return 0.5 * (1 + _erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    if kind == "gelu_tanh":
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    if kind == "softplus":
        return _sigmoid(x)
    if kind == "swish":
        s = _sigmoid(x)
        return s + x * s * (1 - s)
    raise AssertionError(kind)


def ref_softmax_backward(y, dy):
    y = np.asarray(y, np.float64)
    dy = np.asarray(dy, np.float64)
    if y.ndim == 0:
        return np.zeros_like(y)
    return y * (dy - (y * dy).sum(axis=-1, keepdims=True))


def assert_matches(got, want, x, dtype, factor=8):
    """|got - want| <= factor·eps·(|want| + 1 + |x|): a few roundings of each operation
    (the |x| term: products such as x·Φ(x), where Φ carries an absolute error ~eps)."""
    eps = np.finfo(dtype).eps
    got = np.asarray(got)
    assert got.dtype == dtype
    assert got.shape == np.shape(want)
    assert np.all(np.isfinite(got))
    err = np.abs(got.astype(np.float64) - want)
    bound = factor * eps * (np.abs(want) + 1 + np.abs(np.asarray(x, np.float64)))
    worst = np.argmax(err - bound) if err.size else None
    assert np.all(err <= bound), (f"worst at {worst}: got {got.flat[worst]!r}, want {want.flat[worst]!r}, "
                                  f"x={np.asarray(x).flat[worst]!r}")


def random_input(rng, shape, dtype, low=-8.0, high=8.0, kink=None):
    x = np.asarray(rng.uniform(low, high, shape))
    if kink is not None and x.size:  # keep |x| >= kink: finite differences must not straddle 0
        x = np.where(np.abs(x) < kink, np.copysign(kink, x) + x, x)
    return np.asarray(x, dtype)  # an ndarray even when 0-d (NumPy scalars compute in float32)


def bits(a):
    return np.ascontiguousarray(a).tobytes()


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------
def test_kernel_list_is_complete():
    assert set(_core.activation_kinds) == set(KINDS)
    assert len(set(_core.activation_kinds.values())) == len(KINDS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_forward_matches_reference(rng, kind, shape, dtype):
    x = random_input(rng, shape, dtype, -12, 12)
    alpha = ALPHA.get(kind, 0.0)
    y = ops.activation_forward(x, kind, alpha)
    assert y.shape == x.shape and y is not x
    assert_matches(y, ref_forward(kind, x, alpha), x, dtype)
    if kind in ("linear", "relu"):  # no arithmetic: exact
        np.testing.assert_array_equal(y, ref_forward(kind, x).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_forward_matches_reference(rng, shape, dtype):
    x = random_input(rng, shape, dtype, -20, 20)
    y = ops.activation_forward(x, "softmax")
    assert_matches(y, ref_forward("softmax", x), 0 * x, dtype)
    if y.size:
        np.testing.assert_allclose(y.astype(np.float64).sum(axis=-1), 1.0, rtol=0,
                                   atol=4 * np.finfo(dtype).eps * shape[-1])


def test_softmax_of_a_0d_input_is_one():
    np.testing.assert_array_equal(ops.activation_forward(np.float64(3.5), "softmax"), 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 500.0, -500.0, 1e30, -1e30], dtype)
    for kind in ELEMENTWISE:
        alpha = ALPHA.get(kind, 0.0)
        y = ops.activation_forward(x, kind, alpha)
        assert np.all(np.isfinite(y)), (kind, y)
        assert_matches(y, ref_forward(kind, x, alpha), 0 * x, dtype)
    # Saturation: exactly 0/1 and x where the true value rounds there.
    np.testing.assert_array_equal(ops.activation_forward(np.array([-1e4, 1e4], dtype), "sigmoid"), [0, 1])
    np.testing.assert_array_equal(ops.activation_forward(np.array([-1e4, 1e4], dtype), "tanh"), [-1, 1])
    np.testing.assert_array_equal(ops.activation_forward(np.array([-1e4, 1e4], dtype), "softplus"), [0, 1e4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 3, 7), (50, 300)], ids=str)
def test_softmax_is_stable_on_huge_logits(rng, shape, dtype):
    x = rng.choice([-1e4, 1e4], size=shape).astype(dtype) + rng.uniform(-1, 1, shape).astype(dtype)
    y = ops.activation_forward(x, "softmax")
    assert np.all(np.isfinite(y))
    assert_matches(y, ref_forward("softmax", x), 0 * x, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = ops.activation_backward(dy, "softmax", y)
    assert np.all(np.isfinite(dx))
    # All equal huge logits: uniform.
    same = np.full(shape, -1e4, dtype)
    np.testing.assert_allclose(ops.activation_forward(same, "softmax"), 1 / shape[-1], rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_shift_invariant(rng, dtype):
    x = rng.uniform(-3, 3, (6, 11)).astype(dtype)
    shift = dtype(1000.0)
    assert_matches(ops.activation_forward(x + shift, "softmax"), ref_forward("softmax", x), 0 * x, dtype, 8 * 1000)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3, 1.0, 2.5])
def test_leaky_relu_and_elu_use_alpha(rng, alpha):
    x = random_input(rng, (101,), np.float64)
    for kind in ("leaky_relu", "elu"):
        assert_matches(ops.activation_forward(x, kind, alpha), ref_forward(kind, x, alpha), x, np.float64)


def test_non_float_inputs_are_converted_to_float32():
    y = ops.activation_forward([[-1, 2], [3, -4]], "relu")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[0, 2], [3, 0]])
    y = ops.activation_forward(np.array([True, False]), "sigmoid")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1 / (1 + math.exp(-1)), 0.5], rtol=1e-6)
    x = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # non-contiguous view
    np.testing.assert_array_equal(ops.activation_forward(x, "linear"), x)
    assert ops.activation_forward(x, "linear").dtype == np.float64
    np.testing.assert_allclose(ops.activation_forward(np.float16([1, -1]), "tanh"), np.tanh([1, -1]), rtol=1e-6)


def test_inputs_are_not_modified(rng):
    x = rng.standard_normal((9, 7))
    keep = x.copy()
    for kind in KINDS:
        y = ops.activation_forward(x, kind, ALPHA.get(kind, 0.0))
        ops.activation_backward(np.ones_like(x), kind, y, x, ALPHA.get(kind, 0.0))
    np.testing.assert_array_equal(x, keep)


# ----------------------------------------------------------------------------------------
# fastnn.activations (Keras names and defaults)
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_functions_match_keras_formulas(rng, dtype):
    x = random_input(rng, (4, 33), dtype, -10, 10)
    cases = [
        (activations.linear(x), x.astype(np.float64)),
        (activations.relu(x), ref_forward("relu", x)),
        (activations.sigmoid(x), ref_forward("sigmoid", x)),
        (activations.tanh(x), ref_forward("tanh", x)),
        (activations.leaky_relu(x), ref_forward("leaky_relu", x, 0.2)),  # Keras function default 0.2
        (activations.leaky_relu(x, negative_slope=0.05), ref_forward("leaky_relu", x, 0.05)),
        (activations.elu(x), ref_forward("elu", x, 1.0)),
        (activations.elu(x, alpha=0.5), ref_forward("elu", x, 0.5)),
        (activations.selu(x), ref_forward("selu", x)),
        (activations.gelu(x), ref_forward("gelu", x)),  # exact erf by default (Keras)
        (activations.gelu(x, approximate=True), ref_forward("gelu_tanh", x)),
        (activations.softplus(x), ref_forward("softplus", x)),
        (activations.swish(x), ref_forward("swish", x)),
        (activations.silu(x), ref_forward("swish", x)),
        (activations.softmax(x), ref_forward("softmax", x)),
    ]
    for i, (got, want) in enumerate(cases):
        assert_matches(got, want, x, dtype), i


def test_gelu_default_is_the_exact_form():
    x = np.array([-3.0, -1.0, 0.5, 2.0])
    exact = ref_forward("gelu", x)
    assert np.max(np.abs(exact - ref_forward("gelu_tanh", x))) > 1e-5  # the two forms differ
    np.testing.assert_allclose(activations.gelu(x), exact, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((5, 7), 0), ((5, 7), -2), ((3, 4, 6), 1), ((3, 4, 6), 0),
                                        ((3, 4, 6), 2), ((3, 4, 6), -1)], ids=str)
def test_softmax_over_another_axis(rng, shape, axis, dtype):
    x = random_input(rng, shape, dtype, -10, 10)
    y = activations.softmax(x, axis=axis)
    moved = np.moveaxis(x, axis, -1)
    want = np.moveaxis(ref_forward("softmax", moved), -1, axis)
    assert_matches(y, want, 0 * x, dtype)
    np.testing.assert_allclose(y.astype(np.float64).sum(axis=axis), 1.0, atol=8 * np.finfo(dtype).eps)


def _keras_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """keras.src.activations.ReLU.static_call, in NumPy."""
    x = np.asarray(x, np.float64)
    if negative_slope != 0.0:
        if max_value is None and threshold == 0:
            return np.maximum(x, negative_slope * x)
        negative_part = np.maximum(-x + threshold, 0) if threshold != 0 else np.maximum(-x, 0)
    else:
        negative_part = 1
    if threshold != 0:
        x = x * (x > threshold)
    else:
        x = np.maximum(x, 0)
    if max_value is not None:
        x = np.clip(x, 0, max_value)
    if negative_slope != 0.0:
        x = x - negative_slope * negative_part
    return x


@pytest.mark.parametrize("kwargs", [dict(), dict(negative_slope=0.1), dict(max_value=6.0),
                                    dict(max_value=2.5, negative_slope=0.2),
                                    dict(threshold=1.5), dict(threshold=1.5, negative_slope=0.25),
                                    dict(threshold=0.5, negative_slope=0.1, max_value=4.0)], ids=str)
def test_relu_arguments_match_keras(rng, kwargs):
    x = rng.uniform(-8, 8, 257)
    x = x[np.abs(x - kwargs.get("threshold", 0.0)) > 1e-6]  # the point itself: see the next test
    got = activations.relu(x, **kwargs)
    np.testing.assert_allclose(got, _keras_relu(x, **kwargs), rtol=1e-15, atol=1e-15)


def test_relu_threshold_is_strict_like_keras():
    # Keras: x * (x > threshold): a value equal to the threshold gives 0.
    x = np.array([0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(activations.relu(x, threshold=1.0), _keras_relu(x, threshold=1.0))
    np.testing.assert_array_equal(activations.relu(x, threshold=1.0), [0.0, 0.0, 1.5, 2.0])


# ----------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------
def _fd_elementwise(kind, x, alpha, dy, h=1e-5):
    """dy ⊙ f'(x) by central differences of the float64 kernel (elements are independent)."""
    plus = ops.activation_forward(np.asarray(x + h), kind, alpha)
    minus = ops.activation_forward(np.asarray(x - h), kind, alpha)
    return dy * (plus - minus) / (2 * h)


def assert_gradient_close(got, fd):
    """Relative error < 1e-6 per element (1e-9 absolute floor for derivatives near 0)."""
    assert got.shape == fd.shape
    err = np.abs(got - fd)
    assert np.all(err <= 1e-6 * np.abs(fd) + 1e-9), f"max error {err.max()} at {np.argmax(err)}"


@pytest.mark.parametrize("shape", [(0,), (), (1,), (7,), (5, 13), (3, 5, 7), (16385,), (100003,)], ids=str)
@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_backward_matches_finite_differences(rng, kind, shape):
    alpha = ALPHA.get(kind, 0.0)
    x = random_input(rng, shape, np.float64, -6, 6, kink=1e-3 if kind in KINKED else None)
    dy = np.asarray(rng.uniform(-2, 2, shape))
    y = ops.activation_forward(x, kind, alpha)
    dx = ops.activation_backward(dy, kind, y, x, alpha)
    assert dx.dtype == np.float64 and dx.shape == x.shape
    assert_gradient_close(dx, _fd_elementwise(kind, x, alpha, dy))
    assert_gradient_close(dx, dy * ref_derivative(kind, x, alpha))


@pytest.mark.parametrize("shape", [(1,), (1, 1), (6,), (3, 5), (2, 3, 4), (1, 17)], ids=str)
def test_softmax_backward_matches_finite_differences(rng, shape):
    x = rng.uniform(-4, 4, shape)
    dy = rng.uniform(-2, 2, shape)
    y = ops.activation_forward(x, "softmax")
    dx = ops.activation_backward(dy, "softmax", y)
    h = 1e-5
    fd = np.zeros_like(x)
    for i in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = (np.sum(ops.activation_forward(xp, "softmax") * dy)
                 - np.sum(ops.activation_forward(xm, "softmax") * dy)) / (2 * h)
    assert_gradient_close(dx, fd)
    # The kernel also accepts x (not needed: the derivative comes from y).
    np.testing.assert_array_equal(ops.activation_backward(dy, "softmax", y, x), dx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_backward_matches_reference(rng, shape, dtype):
    x = random_input(rng, shape, dtype, -5, 5)
    dy = rng.uniform(-2, 2, shape).astype(dtype)
    y = ops.activation_forward(x, "softmax")
    dx = ops.activation_backward(dy, "softmax", y)
    assert_matches(dx, ref_softmax_backward(y, dy), 0 * x, dtype, 16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (5, 13), (16385,), (100003,)], ids=str)
@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_backward_matches_reference_derivative(rng, kind, shape, dtype):
    alpha = ALPHA.get(kind, 0.0)
    x = random_input(rng, shape, dtype, -10, 10, kink=1e-3 if kind in KINKED else None)
    dy = rng.uniform(-2, 2, shape).astype(dtype)
    y = ops.activation_forward(x, kind, alpha)
    dx = ops.activation_backward(dy, kind, y, x, alpha)
    want = dy.astype(np.float64) * ref_derivative(kind, x, alpha)
    assert_matches(dx, want, np.abs(dy.astype(np.float64)) * (1 + np.abs(x.astype(np.float64))), dtype, 16)


def test_backward_of_functions_of_y_needs_no_x(rng):
    x = rng.standard_normal(50)
    dy = rng.standard_normal(50)
    for kind in ("linear", "relu", "sigmoid", "tanh", "softmax"):
        assert not _core.activation_needs_input(_core.activation_kinds[kind])
        y = ops.activation_forward(x, kind)
        np.testing.assert_array_equal(ops.activation_backward(dy, kind, y), ops.activation_backward(dy, kind, y, x))
    for kind in ("leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "softplus", "swish"):
        assert _core.activation_needs_input(_core.activation_kinds[kind])


# ----------------------------------------------------------------------------------------
# Threads: the same bits on 1 and 2 threads
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_are_bit_identical_on_1_and_2_threads(rng, threads, dtype):
    n = 1_600_003  # relu/linear cost 1 flop per value: threaded above 1.5e6 values
    x = rng.uniform(-6, 6, n).astype(dtype)
    dy = rng.uniform(-1, 1, n).astype(dtype)
    results = {}
    for t in (1, 2):
        threads(t)
        out = []
        for kind in ELEMENTWISE:
            alpha = ALPHA.get(kind, 0.0)
            y = ops.activation_forward(x, kind, alpha)
            out.append(bits(y))
            out.append(bits(ops.activation_backward(dy, kind, y, x, alpha)))
        xs, dys = x[:1_600_000].reshape(3200, 500), dy[:1_600_000].reshape(3200, 500)
        ys = ops.activation_forward(xs, "softmax")
        out.append(bits(ys))
        out.append(bits(ops.activation_backward(dys, "softmax", ys)))
        results[t] = out
    assert len(results[1]) == len(results[2])
    for i, (a, b) in enumerate(zip(results[1], results[2])):
        assert a == b, f"result {i} differs between 1 and 2 threads"


@pytest.mark.parametrize("dtype", DTYPES)
def test_repeated_calls_give_the_same_bits(rng, threads, dtype):
    """One thread, the same input: the result must not depend on where NumPy happens to place
    the output buffer (its address modulo the SIMD width changes from call to call)."""
    threads(1)
    differing = set()
    for n in (1000, 3001, 8000):
        for _ in range(4):
            x = rng.uniform(-6, 6, n).astype(dtype)
            dy = rng.uniform(-1, 1, n).astype(dtype)
            for kind in ELEMENTWISE:
                alpha = ALPHA.get(kind, 0.0)
                first = None
                spacers = []
                for k in range(32):
                    spacers.append(np.empty(16 * (k % 5) + 8 * k, np.uint8))  # vary the heap layout
                    y = ops.activation_forward(x, kind, alpha)
                    got = (bits(y), bits(ops.activation_backward(dy, kind, y, x, alpha)))
                    if first is None:
                        first = got
                    elif got != first:
                        differing.add(kind)
                        break
    assert not differing, f"identical calls gave different bits for: {sorted(differing)}"


# ----------------------------------------------------------------------------------------
# PReLU kernels
# ----------------------------------------------------------------------------------------
def _prelu_ref(x, alpha):
    return np.where(x > 0, x, alpha * x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,ashape", [((4, 5), (5,)), ((3, 4, 5), (4, 5)), ((3, 4, 5), (5,)),
                                           ((2, 3), (2, 3)), ((7,), (7,)), ((0, 5), (5,)),
                                           ((1, 1), (1,)), ((300, 129), (129,)), ((40, 1100), (1100,))],
                         ids=str)
def test_prelu_matches_reference(rng, xshape, ashape, dtype):
    x = rng.uniform(-3, 3, xshape).astype(dtype)
    alpha = rng.uniform(-0.5, 1.5, ashape).astype(dtype)
    dy = rng.uniform(-2, 2, xshape).astype(dtype)
    y = _core.prelu_forward(x, alpha)
    assert y.dtype == dtype and y.shape == x.shape
    assert_matches(y, _prelu_ref(x.astype(np.float64), alpha.astype(np.float64)), x, dtype, 2)
    dalpha = np.full(ashape, np.nan, dtype)  # overwritten (accumulate=False)
    dx = _core.prelu_backward(x, alpha, dy, dalpha, False)
    x64, a64, dy64 = (a.astype(np.float64) for a in (x, alpha, dy))
    assert_matches(dx, np.where(x64 > 0, dy64, a64 * dy64), 0 * x, dtype, 2)
    lead = tuple(range(x.ndim - alpha.ndim))
    want = np.sum(np.where(x64 > 0, 0.0, dy64 * x64), axis=lead)
    scale = np.sum(np.abs(dy64 * x64), axis=lead)
    rows = max(1, x.size // max(1, alpha.size))
    assert dalpha.dtype == dtype
    assert np.all(np.abs(dalpha - want) <= 2 * np.finfo(dtype).eps * rows * (scale + 1e-30))
    # accumulate=True adds into dalpha.
    start = rng.uniform(-1, 1, ashape).astype(dtype)
    acc = start.copy()
    _core.prelu_backward(x, alpha, dy, acc, True)
    assert np.all(np.abs(acc - (start.astype(np.float64) + want))
                  <= 2 * np.finfo(dtype).eps * (rows + 1) * (scale + np.abs(start) + 1e-30))


def test_prelu_backward_matches_finite_differences(rng):
    x = rng.uniform(-3, 3, (6, 2, 5))
    x = np.where(np.abs(x) < 1e-3, 0.5, x)
    alpha = rng.uniform(-0.5, 1.5, (2, 5))
    dy = rng.uniform(-2, 2, x.shape)
    dalpha = np.zeros_like(alpha)
    dx = _core.prelu_backward(x, alpha, dy, dalpha)
    h = 1e-5

    def loss():
        return np.sum(_core.prelu_forward(x, alpha) * dy)

    for target, grad in ((x, dx), (alpha, dalpha)):
        fd = np.zeros_like(target)
        for i in np.ndindex(target.shape):
            keep = target[i]
            target[i] = keep + h
            lp = loss()
            target[i] = keep - h
            lm = loss()
            target[i] = keep
            fd[i] = (lp - lm) / (2 * h)
        assert_gradient_close(grad, fd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_public_faces(rng, dtype):
    """ops.prelu / prelu_backward: the kernels' bits; the slopes' gradient in a new array, or
    written into (accumulate: added to) a given one in place."""
    x = rng.uniform(-3, 3, (6, 2, 5)).astype(dtype)
    alpha = rng.uniform(-0.5, 1.5, (2, 5)).astype(dtype)
    dy = rng.uniform(-2, 2, x.shape).astype(dtype)
    assert ops.prelu(x, alpha).tobytes() == _core.prelu_forward(x, alpha).tobytes()
    want_da = np.zeros_like(alpha)
    want_dx = _core.prelu_backward(x, alpha, dy, want_da, False)
    dx, dalpha = ops.prelu_backward(x, alpha, dy)
    assert dx.tobytes() == want_dx.tobytes() and dalpha.tobytes() == want_da.tobytes()
    out = np.full_like(alpha, np.nan)
    _, got = ops.prelu_backward(x, alpha, dy, out)
    assert got is out and out.tobytes() == want_da.tobytes()
    ops.prelu_backward(x, alpha, dy, out, accumulate=True)
    np.testing.assert_allclose(out, 2 * want_da, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_is_bit_identical_on_1_and_2_threads(rng, threads, dtype):
    x = rng.uniform(-1, 1, (1500, 1030)).astype(dtype)  # 1.5e6 values; two column blocks
    alpha = rng.uniform(0, 1, 1030).astype(dtype)
    dy = rng.uniform(-1, 1, x.shape).astype(dtype)
    out = {}
    for t in (1, 2):
        threads(t)
        da = np.zeros_like(alpha)
        y = _core.prelu_forward(x, alpha)
        dx = _core.prelu_backward(x, alpha, dy, da, False)
        out[t] = (bits(y), bits(dx), bits(da))
    assert out[1] == out[2]


def test_prelu_bad_input():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="'alpha'.*trailing axes of 'x'"):
        _core.prelu_forward(x, np.ones(4))
    with pytest.raises(ValueError, match="'alpha'"):
        _core.prelu_forward(x, np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="'dy' must have shape"):
        _core.prelu_backward(x, np.ones(3), np.ones((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="'dalpha' must hold 3 values"):
        _core.prelu_backward(x, np.ones(3), np.ones((2, 3)), np.zeros(4))
    with pytest.raises(TypeError, match="'dalpha'"):
        _core.prelu_backward(x, np.ones(3), np.ones((2, 3)), [0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="'x' is float64 but 'dalpha' is float32"):
        _core.prelu_backward(x, np.ones(3), np.ones((2, 3)), np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="'x'"):
        _core.prelu_forward(np.array([["a", "b", "c"]]), np.ones(3))


# ----------------------------------------------------------------------------------------
# Dropout kernels
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_keeps_about_1_minus_rate_and_scales(rng, rate, dtype):
    n = 1_000_000
    x = rng.uniform(1, 2, n).astype(dtype)  # no zeros: a zero output means dropped
    y = ops.dropout(x, rate, 12345)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # Binomial(n, 1-rate): std <= 5e-4, so 5e-3 is > 10 standard deviations.
    assert abs(kept.mean() - (1 - rate)) < 5e-3
    np.testing.assert_allclose(y[kept], x[kept].astype(np.float64) / (1 - rate), rtol=2 * np.finfo(dtype).eps)
    # The mask does not favour the start or the end, or even/odd positions.
    for part in (kept[: n // 2], kept[n // 2:], kept[0::2], kept[1::2]):
        assert abs(part.mean() - (1 - rate)) < 1e-2


def test_dropout_mask_depends_on_seed_and_position_only(rng):
    x = rng.uniform(1, 2, 200_000)
    a = ops.dropout(x, 0.5, 7) != 0
    np.testing.assert_array_equal(ops.dropout(x, 0.5, 7) != 0, a)  # same seed: same mask
    np.testing.assert_array_equal(ops.dropout(x * 3 + 1, 0.5, 7) != 0, a)  # values do not matter
    np.testing.assert_array_equal(ops.dropout(x[:1000], 0.5, 7) != 0, a[:1000])  # a prefix: same mask
    np.testing.assert_array_equal(ops.dropout(x.reshape(400, 500), 0.5, 7).ravel() != 0, a)  # shape does not
    np.testing.assert_array_equal(ops.dropout(x.astype(np.float32), 0.5, 7) != 0, a)  # nor the dtype
    for other in (8, 6, 7 + 2**32, 2**63, 2**64 - 1, 0):
        b = ops.dropout(x, 0.5, other) != 0
        # Independent masks agree on about half the positions.
        assert abs(np.mean(a == b) - 0.5) < 1e-2, other
    # Neighbouring positions are independent.
    assert abs(np.mean(a[1:] == a[:-1]) - 0.5) < 1e-2


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_backward_uses_the_same_mask(rng, dtype):
    x = rng.uniform(1, 2, (300, 77)).astype(dtype)
    dy = rng.uniform(1, 2, x.shape).astype(dtype)
    y = ops.dropout(x, 0.3, 99)
    dx = ops.dropout_backward(dy, 0.3, 99)
    assert dx.dtype == dtype and dx.shape == dy.shape
    np.testing.assert_array_equal(dx != 0, y != 0)
    np.testing.assert_allclose(dx, np.where(y != 0, dy.astype(np.float64) / 0.7, 0), rtol=2 * np.finfo(dtype).eps)
    # The derivative of sum(dropout(x) * dy) by finite differences (linear in x: exact up to rounding).
    if dtype == np.float64:
        h = 1e-3
        for i in [(0, 0), (5, 3), (299, 76), (150, 40)]:
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            fd = (np.sum(ops.dropout(xp, 0.3, 99) * dy) - np.sum(ops.dropout(xm, 0.3, 99) * dy)) / (2 * h)
            assert abs(fd - dx[i]) <= 1e-6 * max(abs(dx[i]), 1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_rate_0_is_the_identity_and_rate_1_drops_all(rng, dtype):
    x = rng.standard_normal((33, 17)).astype(dtype)
    np.testing.assert_array_equal(ops.dropout(x, 0.0, 3), x)
    np.testing.assert_array_equal(ops.dropout_backward(x, 0.0, 3), x)
    np.testing.assert_array_equal(ops.dropout(x, 1.0, 3), np.zeros_like(x))
    np.testing.assert_array_equal(ops.dropout_backward(x, 1.0, 3), np.zeros_like(x))


def test_dropout_of_empty_and_0d_inputs():
    assert ops.dropout(np.zeros((0, 3)), 0.5, 1).shape == (0, 3)
    y = ops.dropout(np.float64(2.0), 0.5, 1)
    assert y.shape == () and float(y) in (0.0, 4.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_bit_identical_on_1_and_2_threads(rng, threads, dtype):
    x = rng.standard_normal(1_000_003).astype(dtype)  # 6 ops per value: threaded
    out = {}
    for t in (1, 2):
        threads(t)
        out[t] = (bits(ops.dropout(x, 0.4, 2024)), bits(ops.dropout_backward(x, 0.4, 2024)))
    assert out[1] == out[2]


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan"), float("inf"), -1e-12, 1 + 1e-12])
def test_dropout_rejects_rates_outside_0_1(rate):
    x = np.ones(4)
    with pytest.raises(ValueError, match="'rate' must be in \\[0, 1\\]"):
        ops.dropout(x, rate, 1)
    with pytest.raises(ValueError, match="'rate'"):
        ops.dropout_backward(x, rate, 1)


def test_dropout_bad_input():
    with pytest.raises(TypeError, match="'x' must hold real numbers"):
        ops.dropout(np.array(["a", "b"]), 0.5, 1)
    with pytest.raises(TypeError, match="'dy' must hold real numbers"):
        ops.dropout_backward(np.array(["a", "b"]), 0.5, 1)
    with pytest.raises(TypeError, match="'x' must be an array, got None"):
        ops.dropout(None, 0.5, 1)
    seed_range = r"dropout_forward: 'seed' must be an int in \[0, 18446744073709551615\]"  # unsigned 64-bit
    with pytest.raises(ValueError, match=seed_range + ", got int -1"):
        ops.dropout(np.ones(3), 0.5, -1)
    with pytest.raises(ValueError, match=seed_range):
        ops.dropout(np.ones(3), 0.5, 2**64)
    with pytest.raises(TypeError, match="dropout_forward: 'rate' must be a float, got str"):
        ops.dropout(np.ones(3), "half", 1)


# ----------------------------------------------------------------------------------------
# Bad input to the activation kernels
# ----------------------------------------------------------------------------------------
def test_unknown_activation_kind():
    x = np.ones(3)
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        ops.activation_forward(x, "swishy")
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        ops.activation_backward(x, "nope", x)
    for kind in (-1, 12, 99):
        with pytest.raises(ValueError, match=f"activation_forward: unknown activation kind {kind}"):
            _core.activation_forward(x, kind, 0.0)
        with pytest.raises(ValueError, match=f"activation_backward: unknown activation kind {kind}"):
            _core.activation_backward(kind, 0.0, x, x, x)
    with pytest.raises(ValueError, match="Unknown activation 'nope'"):
        activations.get("nope")
    with pytest.raises(TypeError, match="activation must be a string, a callable or None"):
        activations.get(3)


def test_activation_backward_shape_errors():
    with pytest.raises(ValueError, match="'dy' must have shape \\(4,\\), got \\(3,\\)"):
        ops.activation_backward(np.ones(3), "tanh", np.ones(4))
    with pytest.raises(ValueError, match="'dy' must have shape \\(2, 3\\), got \\(3, 2\\)"):
        ops.activation_backward(np.ones((3, 2)), "softmax", np.ones((2, 3)))
    with pytest.raises(ValueError, match="'x' must have shape \\(3,\\), got \\(2,\\)"):
        ops.activation_backward(np.ones(3), "elu", np.ones(3), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="needs its input 'x'"):
        ops.activation_backward(np.ones(3), "gelu", np.ones(3))


def test_activation_argument_type_errors():
    with pytest.raises(TypeError, match="activation_forward: 'x' must hold real numbers"):
        ops.activation_forward(np.array(["a"]), "relu")
    with pytest.raises(TypeError, match="activation_forward: 'x' must be an array, got None"):
        ops.activation_forward(None, "relu")
    with pytest.raises(TypeError, match="activation_backward: 'y' must be an array, got None"):
        ops.activation_backward(np.ones(3), "tanh", None)
    with pytest.raises(TypeError, match="'y' is float64 but 'dy' is float32"):
        ops.activation_backward(np.ones(3, np.float32), "tanh", np.ones(3))
    with pytest.raises(TypeError, match="'x' is float32 but 'y' is float64"):
        ops.activation_backward(np.ones(3), "elu", np.ones(3), np.ones(3, np.float32))
    with pytest.raises((TypeError, ValueError), match="'x'"):
        ops.activation_forward([[1.0, 2.0], [3.0]], "relu")  # ragged
