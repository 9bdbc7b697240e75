"""Property-based tests (Hypothesis) of every function in ``fastnn.ops.__all__``, of the image
transforms in ``fastnn.ops.image`` and of the losses' functional forms.

Each property draws arrays of every NumPy dtype and memory layout (C, Fortran, strided,
negative strides, unaligned, byte-swapped, read-only, broadcast, lists, scalars), shapes with
0, 1 and a few elements or huge empty axes, NaN and inf, and scalar arguments from 0 to 2**64
and beyond (negative, bool, float, None, str). The oracle (tests/property_support.py): the
result equals a NumPy reference written here, with the exact shape from Python integers, and
equals bit for bit the same call on C-contiguous float copies of the inputs; or the call
raises ValueError/TypeError whose message names the function and the argument.

The default Hypothesis profile "ci" (tests/conftest.py) runs a bounded, reproducible number
of examples (a few minutes for both property files). More, new examples each run:

    FASTNN_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_property_ops.py tests/test_property_layers.py

What the suite found is fixed and pinned by focused tests in tests/test_property_findings.py.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, note, reject, settings

# NumPy's own warnings (overflow in casts, invalid values in references) are not findings here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::numpy.exceptions.ComplexWarning")
from hypothesis import strategies as st
from property_support import (ALL_DTYPES, ARRAY_LAYOUTS, BIG, FLOAT_DTYPES, LAYOUTS, PYBIND_SIGNATURE, REAL_DTYPES,
                              Approx, Exact, Invalid, arrays, as_input, assert_matches, call_dtype,
                              canonical, check, describe_call, float_values, floats, flags, ints, is_int, is_real,
                              result_shape, same_bits, shapes, small_sizes)
from scipy.special import erf
from test_ops_activation import ref_derivative

import fastnn
from fastnn import _core, losses, ops

# ---------------------------------------------------------------------------------------------
# bookkeeping: one property per public function
# ---------------------------------------------------------------------------------------------
COVERED = {}


def covers(*names):
    """Registers the property of the ops functions `names`."""
    def mark(test):
        for name in names:
            COVERED.setdefault(name, []).append(test.__name__)
        return test
    return mark


def examples(factor):
    """The current profile's max_examples scaled by `factor` (for costly properties)."""
    return settings(max_examples=max(5, int(settings.default.max_examples * factor)))


# scalar arguments: what the bindings take (pybind11's conversions, fastnn._arguments)
# ---------------------------------------------------------------------------------------------
def flag_arg(value, name):
    """What a bool parameter takes (the truth value of bool/int/float/None), or Invalid."""
    if value is None or isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return bool(value)
    raise Invalid(name)


def float_arg(value, name):
    """What a double parameter takes (float(value) of a real number, bools included as pybind11
    and NumPy take them), or Invalid."""
    if is_real(value) and not (isinstance(value, int) and abs(value) > 2**1000):
        return float(value)
    raise Invalid(name)


def str_type(value, name):
    """What a pybind11 std::string parameter takes (str, or bytes decoded), or Invalid."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise Invalid(name)
    return value


def str_arg(value, name, choices):
    """A string parameter among `choices`, or Invalid (pybind11 takes str and bytes, and rejects
    anything else)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise Invalid(name)
    if value not in choices:
        raise Invalid(name)
    return value


def size_arg(value, name, low=1):
    """An int argument the binding reads with int_arg: an int (not a bool) in [low, 2**63 - 1]."""
    if not is_int(value) or not low <= int(value) <= BIG:
        raise Invalid(name)
    return int(value)


# ---------------------------------------------------------------------------------------------
# shared drawing helpers
# ---------------------------------------------------------------------------------------------
def perturbed(draw, shape, rate=8):
    """`shape`, or now and then a wrong one (a size changed, an axis added or dropped)."""
    original = shape = list(shape)
    shape = list(shape)
    r = draw(st.integers(0, rate))
    if r == 0 and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, 1, 2, 3, 5]))
    elif r == 1:
        shape.insert(draw(st.integers(0, len(shape))), draw(st.sampled_from([1, 2])))
    elif r == 2 and shape:
        shape.pop(draw(st.integers(0, len(shape) - 1)))
    if math.prod(shape) > 4096:  # a changed size beside a huge empty axis: keep the memory bounded
        return tuple(original)
    return tuple(shape)


def operand(draw, shape, dtypes=None, layouts=None, specials=None, none_weight=0):
    """An array argument of `shape` (sometimes perturbed); None with probability none_weight/10."""
    if none_weight and draw(st.integers(0, 9)) < none_weight:
        return None
    return draw(arrays(perturbed(draw, shape), dtypes=dtypes, layouts=layouts, specials=specials))


def truth(value):
    """value's truth for planning shapes (False for what has none: arrays, lists)."""
    return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)) and bool(value)


def out_buffer(draw, shape, dtype):
    """An `out=`-style argument: a fresh C-contiguous array of the right shape and dtype most
    often, or a wrong one (dtype, shape, Fortran, read-only, a list)."""
    r = draw(st.integers(0, 9))
    shape = tuple(shape)
    values = draw(float_values(shape, specials=False)) if math.prod(shape) < 4096 else np.zeros(shape)
    if r < 6:
        return values.astype(dtype)
    if r == 6:
        return values.astype(np.float32 if dtype == np.float64 else np.float64)
    if r == 7:
        small = math.prod(max(d, 1) for d in shape) <= 4096  # (a list of 2**31 empty lists would not fit)
        return draw(st.sampled_from([np.zeros(perturbed(draw, shape, 2), dtype)] + ([values.tolist()] if small else [])))
    if r == 8:
        ro = values.astype(dtype)
        ro.flags.writeable = False
        return ro
    return np.asfortranarray(values.astype(dtype)) if len(shape) >= 2 and min(shape) > 1 else values.astype(
        np.int32)


def output_arg(value, name, shape, dtype):
    """The reference's view of an output argument (output_array in the binding): an ndarray of
    exactly `dtype` and `shape`, C-contiguous, writeable; else Invalid(name)."""
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != tuple(shape) \
            or not value.flags.c_contiguous or not value.flags.writeable:
        raise Invalid(name)
    return value.astype(np.float64)


def copy_arg(value):
    """A copy of an output/in-place argument with the same dtype, strides and flags (so that the
    call, its reference and its canonical twin each start from the same values and layout)."""
    if not isinstance(value, np.ndarray):
        return value
    if value.flags.c_contiguous or value.flags.f_contiguous or value.size == 0 or 0 in value.strides:
        out = np.array(value, copy=True, order="K")
    else:
        strides = [abs(st_) for st_ in value.strides]
        span = sum((d - 1) * st_ for d, st_ in zip(value.shape, strides)) + value.itemsize
        buf = np.zeros(span // value.itemsize + 1, value.dtype)
        out = np.lib.stride_tricks.as_strided(buf, value.shape, strides)
        out = out[tuple(slice(None, None, -1) if st_ < 0 else slice(None) for st_ in value.strides)]
        out[...] = value
    out.flags.writeable = value.flags.writeable
    return out


# ---------------------------------------------------------------------------------------------
# activations (references: the formulas as Keras writes them, in float64)
# ---------------------------------------------------------------------------------------------
ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "softplus",
               "swish", "softmax"]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
NEEDS_INPUT = {"leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "softplus", "swish"}


def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def act_forward(kind, x, alpha):
    x = np.asarray(x, np.float64)
    if kind in (None, "linear"):
        return x.copy()
    if kind == "relu":
        return np.where(np.isnan(x), x, np.maximum(x, 0))
    if kind == "sigmoid":
        return sigmoid(x)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if kind == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
    if kind == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if kind == "softplus":
        return np.logaddexp(x, 0)
    if kind == "swish":
        return x * sigmoid(x)
    if kind == "softmax":
        if x.ndim == 0:
            return np.where(np.isnan(x), x, 1.0)
        if x.size == 0:
            return x.copy()
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(kind)


def act_derivative(kind, x, alpha):
    """f'(x) of the elementwise kinds (tests/test_ops_activation.py's reference)."""
    return ref_derivative("linear" if kind is None else kind, x, alpha)


def act_backward(kind, x, y, dy, alpha):
    """dy · f'(x), as the documented contract computes it: from the output y where f' is a
    function of y (relu, sigmoid, tanh; elu and selu below 0), from the input x otherwise;
    a derivative of 0 gives 0 (not NaN · 0); softmax: the Jacobian-vector product from y."""
    y, dy = np.asarray(y, np.float64), np.asarray(dy, np.float64)
    if kind == "softmax":
        if y.ndim == 0:  # one value: a last axis of length 1
            return y * (dy - y * dy)
        if y.size == 0:
            return y.copy()
        return y * (dy - (y * dy).sum(axis=-1, keepdims=True))
    if kind == "leaky_relu":
        return np.where(x > 0, dy, alpha * dy)
    if kind == "elu":
        return np.where(x > 0, dy, dy * (y + alpha))
    if kind == "selu":
        return np.where(x > 0, SELU_SCALE * dy, dy * (y + SELU_SCALE * SELU_ALPHA))
    if kind in NEEDS_INPUT:
        return dy * act_derivative(kind, x, alpha)
    if kind in (None, "linear"):
        return dy * np.ones_like(y)
    if kind == "relu":
        return np.where(y > 0, dy, 0.0)
    if kind == "sigmoid":
        return dy * (y * (1 - y))
    if kind == "tanh":
        return dy * (1 - y * y)
    raise AssertionError(kind)


activation_names = st.one_of(st.sampled_from(ACTIVATIONS + [None]),
                             st.sampled_from(["Relu", "nope", "", 3, 1.5, b"relu", ("relu",)]))


def activation_kind(value):
    """The activation a wrapper's _kind() accepts (a kernel name or None), or Invalid."""
    if value is None or (isinstance(value, str) and value in ACTIVATIONS):
        return value
    raise Invalid("activation")


def act_tolerance(kind, dtype):
    eps = float(np.finfo(dtype).eps)
    return dict(rtol=64 * eps, atol=64 * eps)


# ---------------------------------------------------------------------------------------------
# gemm: matmul, linear
# ---------------------------------------------------------------------------------------------
def matmul_reference(a, b, ta, tb, out, accumulate):
    ta, tb = flag_arg(ta, "transpose_a"), flag_arg(tb, "transpose_b")
    accumulate = flag_arg(accumulate, "accumulate")
    dtype = call_dtype(a=a, b=b, out=out)
    A, B = as_input(a, "a", dtype), as_input(b, "b", dtype)
    for name, v in (("a", A), ("b", B)):
        if v.ndim < 1:
            raise Invalid(name)
    if ta and A.ndim < 2:
        raise Invalid("a", "transpose_a")
    if tb and B.ndim < 2:
        raise Invalid("b", "transpose_b")
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    A2 = A64[None, :] if A.ndim == 1 else (np.swapaxes(A64, -1, -2) if ta else A64)
    B2 = B64[:, None] if B.ndim == 1 else (np.swapaxes(B64, -1, -2) if tb else B64)
    if A2.shape[-1] != B2.shape[-2]:
        raise Invalid("a", "b")
    try:
        batch = np.broadcast_shapes(A2.shape[:-2], B2.shape[:-2])
    except ValueError:
        raise Invalid("a", "b") from None
    m, n = A2.shape[-2], B2.shape[-1]
    shape = batch + ((m,) if A.ndim >= 2 else ()) + ((n,) if B.ndim >= 2 else ())
    if out is None:
        if accumulate:
            raise Invalid("accumulate", "out")
        result_shape(shape, dtype)
        start = 0.0
    else:
        start = output_arg(out, "out", shape, dtype)
        if out is a or out is b:  # passed through without a copy: the product would overwrite it
            raise Invalid("out")
        start = start if accumulate else 0.0
    product = np.matmul(A2, B2) if A2.size and B2.size else np.zeros(batch + (m, n))
    terms = (A2[..., :, :, None] * B2[..., None, :, :])
    prod = terms.sum(axis=-2) if terms.size else product
    scale = np.abs(terms).sum(axis=-2) if terms.size else 0.0
    if A.ndim == 1:
        prod = prod[..., 0, :]
        scale = scale[..., 0, :] if terms.size else 0.0
    if B.ndim == 1:
        prod = prod[..., 0]
        scale = scale[..., 0] if terms.size else 0.0
    prod = np.broadcast_to(prod, shape)
    return Approx(start + prod, dtype, scale=np.abs(start) + scale)


@covers("matmul")
@given(st.data())
def test_matmul(data):
    draw = data.draw
    m, k, n = draw(small_sizes), draw(small_sizes), draw(small_sizes)
    if draw(st.integers(0, 9)) == 0:  # a huge empty axis (the result: empty, or too large)
        huge = draw(st.sampled_from([2**31, 2**40, 2**50, 2**55]))
        m, k, n = draw(st.sampled_from([(huge, 0, n), (m, 0, huge), (0, huge, 0)]))
    ta, tb, accumulate = draw(flags()), draw(flags()), draw(flags(9))
    a_vec, b_vec = draw(st.integers(0, 5)) == 0, draw(st.integers(0, 5)) == 0
    batch_a = draw(shapes(0, 2, max_elements=6, huge_empty=False))
    batch_b = draw(st.sampled_from([batch_a, batch_a[1:], tuple(1 for _ in batch_a), ()]))
    a_shape = (k,) if a_vec else batch_a + ((k, m) if truth(ta) else (m, k))
    b_shape = (k,) if b_vec else batch_b + ((n, k) if truth(tb) else (k, n))
    a, b = operand(draw, a_shape), operand(draw, b_shape)
    out = None
    if draw(st.integers(0, 3)) == 0:
        out_shape = np.broadcast_shapes(batch_a if not a_vec else (), batch_b if not b_vec else ()) + \
            ((m,) if not a_vec else ()) + ((n,) if not b_vec else ())
        if math.prod(out_shape) <= 4096:
            out = out_buffer(draw, out_shape, draw(st.sampled_from([np.float32, np.float64])))
            if m == k == n and not a_vec and draw(st.integers(0, 4)) == 0:
                out = a  # shares memory with an input
    desc = describe_call("matmul", a, b, ta, tb, out=out, accumulate=accumulate)
    note(desc)
    out_before = copy_arg(out)

    def call():
        got = ops.matmul(a, b, ta, tb, out=out, accumulate=accumulate)
        if out is not None:
            assert got is out, "matmul(out=...) must return out itself"
        return got

    def canonical_call():
        dtype = call_dtype(a=a, b=b, out=out)
        return ops.matmul(canonical(a, dtype), canonical(b, dtype), ta, tb, out=copy_arg(out_before),
                          accumulate=accumulate)

    check("matmul", call, lambda: matmul_reference(a, b, ta, tb, out_before, accumulate), canonical_call, desc)


def linear_reference(x, w, b):
    dtype = call_dtype(x=x, w=w, b=b)
    X, W = as_input(x, "x", dtype).astype(np.float64), as_input(w, "w", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    if W.ndim != 2:
        raise Invalid("w")
    if W.shape[0] != X.shape[-1]:
        raise Invalid("x", "w")
    B = None
    if b is not None:
        B = as_input(b, "b", dtype).astype(np.float64)
        if B.shape != (W.shape[1],):
            raise Invalid("b")
    shape = result_shape(X.shape[:-1] + (W.shape[1],), dtype)
    terms = X[..., :, None] * W
    y = terms.sum(axis=-2) if terms.size else np.zeros(shape)
    scale = np.abs(terms).sum(axis=-2) if terms.size else 0.0
    if B is not None:
        y = y + B
        scale = scale + np.abs(B)
    return Approx(np.broadcast_to(y, shape), dtype, scale=scale)


@covers("linear")
@given(st.data())
def test_linear(data):
    draw = data.draw
    lead = draw(shapes(0, 3, max_elements=12))
    k, n = draw(small_sizes), draw(small_sizes)
    x = operand(draw, lead + (k,))
    w = operand(draw, (k, n))
    b = operand(draw, (n,), none_weight=4)
    desc = describe_call("linear", x, w, b)
    note(desc)
    dtype = lambda: call_dtype(x=x, w=w, b=b)  # noqa: E731
    check("linear", lambda: ops.linear(x, w, b), lambda: linear_reference(x, w, b),
          lambda: ops.linear(canonical(x, dtype()), canonical(w, dtype()), canonical(b, dtype())), desc)


# ---------------------------------------------------------------------------------------------
# activations, dense, prelu, dropout
# ---------------------------------------------------------------------------------------------
def activation_forward_reference(x, activation, alpha):
    kind = activation_kind(activation)
    alpha = float_arg(alpha, "alpha")
    dtype = call_dtype(x=x)
    X = as_input(x, "x", dtype)
    result_shape(X.shape, dtype)
    return Approx(act_forward(kind, X, alpha), dtype, **act_tolerance(kind, dtype))


@covers("activation_forward")
@given(st.data())
def test_activation_forward(data):
    draw = data.draw
    x = draw(arrays(draw(shapes(0, 4))))
    activation, alpha = draw(activation_names), draw(floats(-2, 2, weight=9))
    desc = describe_call("activation_forward", x, activation, alpha)
    note(desc)
    check("activation_forward", lambda: ops.activation_forward(x, activation, alpha),
          lambda: activation_forward_reference(x, activation, alpha),
          lambda: ops.activation_forward(canonical(x, call_dtype(x=x)), activation, alpha), desc)


def activation_backward_reference(dy, activation, y, x, alpha):
    kind = activation_kind(activation)
    alpha = float_arg(alpha, "alpha")
    dtype = call_dtype(x=x, y=y, dy=dy)
    Y = as_input(y, "y", dtype)
    DY = as_input(dy, "dy", dtype)
    if DY.shape != Y.shape:
        raise Invalid("dy")
    X = None
    if kind in NEEDS_INPUT:
        if x is None:
            raise Invalid("x")
        X = as_input(x, "x", dtype)
        if X.shape != Y.shape:
            raise Invalid("x")
    result_shape(Y.shape, dtype)
    return Approx(act_backward(kind, X, Y, DY.astype(np.float64), alpha), dtype,
                  scale=np.abs(DY.astype(np.float64)) * 4)


@covers("activation_backward")
@given(st.data())
def test_activation_backward(data):
    draw = data.draw
    shape = draw(shapes(0, 4))
    activation, alpha = draw(activation_names), draw(floats(-2, 2, weight=9))
    y, dy = operand(draw, shape), operand(draw, shape)
    x = operand(draw, shape, none_weight=3)
    desc = describe_call("activation_backward", dy, activation, y, x, alpha)
    note(desc)

    def canonical_call():
        dtype = call_dtype(x=x, y=y, dy=dy)
        return ops.activation_backward(canonical(dy, dtype), activation, canonical(y, dtype), canonical(x, dtype),
                                       alpha)

    check("activation_backward", lambda: ops.activation_backward(dy, activation, y, x, alpha),
          lambda: activation_backward_reference(dy, activation, y, x, alpha), canonical_call, desc)


@covers("activation_needs_input")
@given(activation_names)
def test_activation_needs_input(activation):
    def reference():
        needs = activation_kind(activation) in NEEDS_INPUT
        return lambda got: _assert_is(got, needs)

    check("activation_needs_input", lambda: ops.activation_needs_input(activation), reference)


def _assert_is(got, want):
    assert got is want, f"got {got!r}, expected {want!r}"


def dense_reference(x, w, b, activation, alpha, return_preactivation):
    kind = activation_kind(activation)
    alpha = float_arg(alpha, "alpha")
    keep_z = flag_arg(return_preactivation, "return_preactivation")
    z = linear_reference(x, w, b)
    dtype = z.dtype
    y = Approx(act_forward(kind, z.values, alpha), dtype, scale=2 * z.scale)
    if not keep_z:
        return y
    return y, (None if kind in (None, "linear") else z)


@covers("dense")
@given(st.data())
def test_dense(data):
    draw = data.draw
    lead = draw(shapes(0, 3, max_elements=12))
    k, n = draw(small_sizes), draw(small_sizes)
    x, w, b = operand(draw, lead + (k,)), operand(draw, (k, n)), operand(draw, (n,), none_weight=4)
    activation, alpha, keep = draw(activation_names), draw(floats(-2, 2, weight=9)), draw(flags())
    desc = describe_call("dense", x, w, b, activation, alpha, keep)
    note(desc)
    dtype = lambda: call_dtype(x=x, w=w, b=b)  # noqa: E731
    check(("dense", "dense_forward"), lambda: ops.dense(x, w, b, activation, alpha, keep),
          lambda: dense_reference(x, w, b, activation, alpha, keep),
          lambda: ops.dense(canonical(x, dtype()), canonical(w, dtype()), canonical(b, dtype()), activation, alpha,
                            keep), desc)


def dense_backward_reference(x, w, dy, y, dw, db, activation, z, alpha, accumulate, need_dx):
    kind = activation_kind(activation)
    alpha = float_arg(alpha, "alpha")
    accumulate, need_dx = flag_arg(accumulate, "accumulate"), flag_arg(need_dx, "need_dx")
    dtype = call_dtype(x=x, w=w, z=z, y=y, dy=dy, dw=dw, db=db)
    X, W = as_input(x, "x", dtype).astype(np.float64), as_input(w, "w", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    if W.ndim != 2:
        raise Invalid("w")
    if W.shape[0] != X.shape[-1]:
        raise Invalid("x", "w")
    out_shape = X.shape[:-1] + (W.shape[1],)
    Y, DY = as_input(y, "y", dtype).astype(np.float64), as_input(dy, "dy", dtype).astype(np.float64)
    if Y.shape != out_shape:
        raise Invalid("y")
    if DY.shape != out_shape:
        raise Invalid("dy")
    Z = None
    if kind in NEEDS_INPUT:
        if z is None:
            raise Invalid("z")
        Z = as_input(z, "z", dtype).astype(np.float64)
        if Z.shape != out_shape:
            raise Invalid("z")
    dw0 = None if dw is None else output_arg(dw, "dw", W.shape, dtype)
    db0 = None if db is None else output_arg(db, "db", (W.shape[1],), dtype)
    if need_dx:
        result_shape(X.shape, dtype)
    G = act_backward(kind, Z, Y, DY, alpha)
    rows = math.prod(X.shape[:-1])
    G2, X2 = G.reshape(rows, W.shape[1]), X.reshape(rows, W.shape[0])
    gscale = np.abs(DY).reshape(G2.shape) * 4
    dx = Approx((G2[:, None, :] * W[None]).sum(-1).reshape(X.shape), dtype,
                scale=(gscale[:, None, :] * np.abs(W)[None]).sum(-1).reshape(X.shape)) if need_dx else None
    dw_terms = X2[:, :, None] * G2[:, None, :]
    dw_sum, dw_scale = dw_terms.sum(0), (np.abs(X2)[:, :, None] * gscale[:, None, :]).sum(0)
    db_sum, db_scale = G2.sum(0), gscale.sum(0)
    want_dw = None if dw is None else Approx(dw_sum + (dw0 if accumulate else 0), dtype,
                                             scale=dw_scale + (np.abs(dw0) if accumulate else 0))
    want_db = None if db is None else Approx(db_sum + (db0 if accumulate else 0), dtype,
                                             scale=db_scale + (np.abs(db0) if accumulate else 0))
    return dx, want_dw, want_db


def grads_out(draw, shape, none_weight=2):
    """An in-place gradient output: None, or out_buffer of float32/float64."""
    if draw(st.integers(0, 9)) < none_weight or math.prod(shape) > 4096:
        return None
    return out_buffer(draw, shape, draw(st.sampled_from([np.float32, np.float64])))


@covers("dense_backward")
@given(st.data())
def test_dense_backward(data):
    draw = data.draw
    lead = draw(shapes(0, 3, max_elements=12))
    k, n = draw(small_sizes), draw(small_sizes)
    x, w = operand(draw, lead + (k,)), operand(draw, (k, n))
    y, dy = operand(draw, lead + (n,)), operand(draw, lead + (n,))
    z = operand(draw, lead + (n,), none_weight=3)
    dw, db = grads_out(draw, (k, n)), grads_out(draw, (n,))
    activation, alpha = draw(activation_names), draw(floats(-2, 2, weight=9))
    accumulate, need_dx = draw(flags()), draw(flags())
    desc = describe_call("dense_backward", x, w, dy, y, dw, db, activation, z, alpha, accumulate, need_dx)
    note(desc)
    dw0, db0 = copy_arg(dw), copy_arg(db)

    def call():
        return ops.dense_backward(x, w, dy, y, dw, db, activation, z, alpha, accumulate, need_dx), dw, db

    def canonical_call():
        dtype = call_dtype(x=x, w=w, z=z, y=y, dy=dy, dw=dw0, db=db0)
        dw1, db1 = copy_arg(dw0), copy_arg(db0)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        return ops.dense_backward(c(x), c(w), c(dy), c(y), dw1, db1, activation, c(z), alpha, accumulate,
                                  need_dx), dw1, db1

    check(("dense_backward",), call,
          lambda: dense_backward_reference(x, w, dy, y, dw0, db0, activation, z, alpha, accumulate, need_dx),
          canonical_call, desc)


def prelu_reference(x, alpha):
    dtype = call_dtype(x=x, alpha=alpha)
    X, A = as_input(x, "x", dtype).astype(np.float64), as_input(alpha, "alpha", dtype).astype(np.float64)
    if A.ndim > X.ndim or X.shape[X.ndim - A.ndim:] != A.shape:
        raise Invalid("alpha")
    result_shape(X.shape, dtype)
    return Approx(np.where(X > 0, X, A * X), dtype)


def prelu_shapes(draw):
    xshape = draw(shapes(0, 4))
    cut = draw(st.integers(0, len(xshape)))
    return xshape, perturbed(draw, xshape[cut:], 10)


@covers("prelu")
@given(st.data())
def test_prelu(data):
    draw = data.draw
    xshape, ashape = prelu_shapes(draw)
    x, alpha = draw(arrays(xshape)), draw(arrays(ashape))
    desc = describe_call("prelu", x, alpha)
    note(desc)
    dtype = lambda: call_dtype(x=x, alpha=alpha)  # noqa: E731
    check(("prelu", "prelu_forward"), lambda: ops.prelu(x, alpha), lambda: prelu_reference(x, alpha),
          lambda: ops.prelu(canonical(x, dtype()), canonical(alpha, dtype())), desc)


def prelu_backward_reference(x, alpha, dy, dalpha, accumulate):
    given = dalpha is not None
    accumulate = flag_arg(accumulate, "accumulate") if given else False  # (ignored without dalpha)
    dtype = call_dtype(x=x, alpha=alpha, dy=dy, dalpha=dalpha)
    X, A = as_input(x, "x", dtype).astype(np.float64), as_input(alpha, "alpha", dtype).astype(np.float64)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.shape != X.shape:
        raise Invalid("dy")
    if A.ndim > X.ndim or X.shape[X.ndim - A.ndim:] != A.shape:
        raise Invalid("alpha")
    if given:
        if not isinstance(dalpha, np.ndarray) or dalpha.dtype != dtype or dalpha.size != A.size \
                or not dalpha.flags.c_contiguous or not dalpha.flags.writeable:
            raise Invalid("dalpha")
    lead = tuple(range(X.ndim - A.ndim))
    da = np.sum(np.where(X > 0, 0.0, DY * X), axis=lead)
    scale = np.sum(np.abs(DY * X), axis=lead)
    start = dalpha.astype(np.float64).reshape(A.shape) if accumulate else 0.0
    want_da = Approx((start + da).reshape(dalpha.shape if given else A.shape), dtype,
                     scale=(scale + np.abs(start)).reshape(dalpha.shape if given else A.shape))
    return Approx(np.where(X > 0, DY, A * DY), dtype), want_da


@covers("prelu_backward")
@given(st.data())
def test_prelu_backward(data):
    draw = data.draw
    xshape, ashape = prelu_shapes(draw)
    x, alpha, dy = draw(arrays(xshape)), draw(arrays(ashape)), operand(draw, xshape)
    dalpha = grads_out(draw, ashape, none_weight=5)
    accumulate = draw(flags())
    desc = describe_call("prelu_backward", x, alpha, dy, dalpha, accumulate)
    note(desc)
    dalpha0 = copy_arg(dalpha)

    def call():
        dx, da = ops.prelu_backward(x, alpha, dy, dalpha, accumulate)
        if dalpha is not None:
            assert da is dalpha
        return dx, da

    def canonical_call():
        dtype = call_dtype(x=x, alpha=alpha, dy=dy, dalpha=dalpha0)
        return ops.prelu_backward(canonical(x, dtype), canonical(alpha, dtype), canonical(dy, dtype),
                                  copy_arg(dalpha0), accumulate)

    check(("prelu_backward",), call, lambda: prelu_backward_reference(x, alpha, dy, dalpha0, accumulate),
          canonical_call, desc)


SEEDS = st.integers(0, 9).flatmap(lambda r: st.integers(0, 2**64 - 1) if r < 7 else st.sampled_from(
    [0, 2**63, 2**64 - 1, 2**64, -1, True, 1.0, 2.5, None, "1", np.uint64(2**64 - 1), np.int64(-1)]))


def seed_arg(seed, name="seed"):
    """A dropout seed: an int in [0, 2**64)."""
    if is_int(seed) and 0 <= int(seed) < 2**64:
        return int(seed)
    if isinstance(seed, bool):  # pybind11's integer casters take a Python bool as 0/1 (it is an int)
        return int(seed)
    raise Invalid(name)


def dropout_reference(x, rate, seed, name="x"):
    rate = float_arg(rate, "rate")
    seed_arg(seed)
    if not 0 <= rate <= 1:
        raise Invalid("rate")
    dtype = call_dtype(x=x)
    X = as_input(x, name, dtype).astype(np.float64)
    result_shape(X.shape, dtype)
    eps = float(np.finfo(dtype).eps)

    def each_value_is_dropped_or_scaled(got):
        assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == X.shape, repr(got)
        g = got.astype(np.float64)
        if rate == 1:
            assert np.all(g == 0), "rate 1 drops every value"
            return
        kept = X / (1 - rate)
        with np.errstate(all="ignore"):
            close = (np.abs(g - kept) <= 4 * eps * np.abs(kept)) | (np.isnan(g) & np.isnan(kept)) | (g == kept)
        assert np.all((g == 0) | close), f"values neither dropped nor x / (1 - rate): {g} for {X}"
    return each_value_is_dropped_or_scaled


@covers("dropout")
@given(st.data())
def test_dropout(data):
    draw = data.draw
    x = draw(arrays(draw(shapes(0, 4))))
    rate, seed = draw(floats(0, 1)), draw(SEEDS)
    desc = describe_call("dropout", x, rate, seed)
    note(desc)
    check(("dropout", "dropout_forward"), lambda: ops.dropout(x, rate, seed),
          lambda: dropout_reference(x, rate, seed),
          lambda: ops.dropout(canonical(x, call_dtype(x=x)), rate, seed), desc)


@covers("dropout_backward")
@given(st.data())
def test_dropout_backward(data):
    """The backward pass regenerates the forward's mask: dropout_backward(v) == dropout(v) bit for bit."""
    draw = data.draw
    dy = draw(arrays(draw(shapes(0, 4))))
    rate, seed = draw(floats(0, 1)), draw(SEEDS)
    desc = describe_call("dropout_backward", dy, rate, seed)
    note(desc)

    def reference():
        dropout_reference(dy, rate, seed, "dy")
        return Exact(ops.dropout(canonical(dy, call_dtype(dy=dy)), rate, seed))

    check(("dropout_backward",), lambda: ops.dropout_backward(dy, rate, seed), reference,
          lambda: ops.dropout_backward(canonical(dy, call_dtype(dy=dy)), rate, seed), desc)


# ---------------------------------------------------------------------------------------------
# conv, conv_backward (references: loops over the kernel's taps, exact geometry from Python ints)
# ---------------------------------------------------------------------------------------------
def pair_arg(value, name, rank):
    """conv's Python-side `_pair`: an int (not bool) or `rank` ints; range checked by the binding."""
    def integral(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if integral(value):
        value = (value,) * rank
    if not isinstance(value, (tuple, list)) or not all(integral(v) for v in value):
        raise Invalid(name)
    if len(value) != rank:
        raise Invalid(name)
    return tuple(int(v) for v in value)


def conv_axis(n, k, s, d, padding, axis):
    """(output size, padding before) along one axis, TensorFlow's rules, in Python ints."""
    span = (k - 1) * d + 1
    if span > BIG or span > 2**31 - 1:
        raise Invalid("dilation_rate", "kernel")
    if padding == "valid":
        if span > n:
            raise Invalid("kernel", "padding", "inputs")
        return (n - span) // s + 1, 0
    if padding == "same":
        out = -(-n // s)
        return out, max((out - 1) * s - n + span, 0) // 2
    if padding == "causal":
        return (0 if n == 0 else (n - 1) // s + 1), span - 1
    raise Invalid("padding")


def conv_taps(n_out, s, k, d, pad, n_in):
    """For each tap: (output indices, input indices) of the in-bounds positions."""
    taps = []
    for t in range(k):
        outs, ins = [], []
        for o in range(n_out):
            i = o * s + t * d - pad
            if 0 <= i < n_in:
                outs.append(o)
                ins.append(i)
        taps.append((np.array(outs, np.int64), np.array(ins, np.int64)))
    return taps


def conv_plan(inputs, kernel, strides, padding, data_format, dilation_rate, bias, activation, alpha, keep,
              backward_arrays=None):
    """The checks of conv / conv_backward in their order; returns the pieces the references use."""
    if data_format not in (None, "channels_last"):
        raise Invalid("data_format")
    x_nd = np.ndim(inputs)
    if x_nd == 3:
        s, d = pair_arg(strides, "strides", 1), pair_arg(dilation_rate, "dilation_rate", 1)
        s, d, one_d = (1, s[0]), (1, d[0]), True
    elif x_nd != 4:
        raise Invalid("inputs")
    else:
        if padding == "causal":
            raise Invalid("padding")
        s, d, one_d = pair_arg(strides, "strides", 2), pair_arg(dilation_rate, "dilation_rate", 2), False
    kind = activation_kind(activation)
    padding = str_type(padding, "padding")
    alpha = float_arg(alpha, "alpha")
    keep = flag_arg(keep, "return_preactivation") if keep is not None else False
    return s, d, one_d, kind, padding, alpha, keep


def conv_arrays(inputs, kernel, bias, s, d, one_d, padding, dtype):
    X = as_input(inputs, "inputs", dtype).astype(np.float64)
    W = as_input(kernel, "kernel", dtype).astype(np.float64)
    if one_d:
        X = X[:, None]
        if W.ndim == 3:
            W = W[None]
    if X.ndim != 4:
        raise Invalid("inputs")
    if W.ndim != 4:
        raise Invalid("kernel")
    if W.shape[2] != X.shape[3]:
        raise Invalid("inputs", "kernel")
    if W.shape[0] < 1 or W.shape[1] < 1:
        raise Invalid("kernel")
    for v, name in ((s[0], "strides"), (s[1], "strides"), (d[0], "dilation_rate"), (d[1], "dilation_rate")):
        if not 1 <= v <= BIG:
            raise Invalid(name)
    n, h, w, c = X.shape
    kh, kw, _, f = W.shape
    oh, pt = conv_axis(h, kh, s[0], d[0], "valid" if padding == "causal" else padding, "rows")
    ow, pl = conv_axis(w, kw, s[1], d[1], padding, "columns")
    B = None
    if bias is not None:
        B = as_input(bias, "bias", dtype).astype(np.float64)
        if B.shape != (f,):
            raise Invalid("bias")
    return X, W, B, (n, oh, ow, f), (pt, pl)


def conv_values(X, W, B, out_shape, pads, s, d):
    """z = conv(X, W) + B and Σ|terms|, skipping the taps in the padding."""
    z, scale = np.zeros(out_shape), np.zeros(out_shape)
    if math.prod(out_shape):
        rows = conv_taps(out_shape[1], s[0], W.shape[0], d[0], pads[0], X.shape[1])
        cols = conv_taps(out_shape[2], s[1], W.shape[1], d[1], pads[1], X.shape[2])
        for i, (ro, ri) in enumerate(rows):
            for j, (co, ci) in enumerate(cols):
                if len(ro) and len(co):
                    patch = X[:, ri][:, :, ci]
                    z[np.ix_(range(out_shape[0]), ro, co, range(out_shape[3]))] += \
                        np.einsum("nhwc,cf->nhwf", patch, W[i, j])
                    scale[np.ix_(range(out_shape[0]), ro, co, range(out_shape[3]))] += \
                        np.einsum("nhwc,cf->nhwf", np.abs(patch), np.abs(W[i, j]))
    if B is not None:
        z, scale = z + B, scale + np.abs(B)
    return z, scale


def conv_reference(inputs, kernel, strides, padding, data_format, dilation_rate, bias, activation, alpha, keep):
    s, d, one_d, kind, padding, alpha, keep = conv_plan(inputs, kernel, strides, padding, data_format,
                                                        dilation_rate, bias, activation, alpha, keep)
    dtype = call_dtype(inputs=inputs, kernel=kernel, bias=bias)
    X, W, B, out_shape, pads = conv_arrays(inputs, kernel, bias, s, d, one_d, padding, dtype)
    result_shape(out_shape, dtype)
    z, scale = conv_values(X, W, B, out_shape, pads, s, d)
    y = act_forward(kind, z, alpha)
    if one_d:
        z, y, scale = z[:, 0], y[:, 0], scale[:, 0]
    want_y = Approx(y, dtype, scale=2 * scale)
    if not keep:
        return want_y
    return want_y, (None if kind in (None, "linear") else Approx(z, dtype, scale=scale))


CONV_NAMES = ("conv", "conv2d_forward")
conv_paddings = st.one_of(st.sampled_from(["valid", "same", "causal"]),
                          st.sampled_from(["SAME", "full", "", None, 1, b"same"]))


def conv_ints():
    """Strides and dilations: mostly 1 to 3, sometimes up to 2**63 - 1 and beyond, or not ints."""
    return ints(1, 3, weight=6)


def conv_window(draw, rank):
    one = lambda: draw(conv_ints())  # noqa: E731
    return draw(st.sampled_from([one(), tuple(one() for _ in range(rank)), [one() for _ in range(rank)],
                                 tuple(one() for _ in range(rank + 1))]))


def conv_operands(draw):
    rank = draw(st.sampled_from([1, 2, 2]))
    n, c, f = draw(small_sizes), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(0, 5)) for _ in range(rank))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    if draw(st.integers(0, 9)) == 0:  # a huge empty batch, or a huge spatial size with no batch
        n = 0
        spatial = tuple(draw(st.sampled_from([2**31, 2**40])) if draw(st.booleans()) else v for v in spatial)
    x = operand(draw, (n,) + spatial + (c,))
    w = operand(draw, ks + (c, f))
    b = operand(draw, (f,), none_weight=5)
    return rank, x, w, b


@covers("conv")
@given(st.data())
def test_conv(data):
    draw = data.draw
    rank, x, w, b = conv_operands(draw)
    strides, dilation = conv_window(draw, rank), conv_window(draw, rank)
    padding = draw(conv_paddings)
    data_format = draw(st.sampled_from([None, None, None, "channels_last", "channels_first", "NHWC"]))
    activation, alpha, keep = draw(activation_names), draw(floats(-2, 2, weight=9)), draw(flags())
    desc = describe_call("conv", x, w, strides, padding, data_format, dilation, b, activation, alpha, keep)
    note(desc)

    def canonical_call():
        dtype = call_dtype(x=x, w=w, b=b)
        return ops.conv(canonical(x, dtype), canonical(w, dtype), strides, padding, data_format, dilation,
                        canonical(b, dtype), activation, alpha, keep)

    check(CONV_NAMES, lambda: ops.conv(x, w, strides, padding, data_format, dilation, b, activation, alpha, keep),
          lambda: conv_reference(x, w, strides, padding, data_format, dilation, b, activation, alpha, keep),
          canonical_call, desc)


def conv_backward_reference(inputs, kernel, dy, y, dw, db, strides, padding, dilation_rate, activation, z, alpha,
                            accumulate, need_dx):
    s, d, one_d, kind, padding, alpha, _ = conv_plan(inputs, kernel, strides, padding, None, dilation_rate, None,
                                                     activation, alpha, None)
    accumulate, need_dx = flag_arg(accumulate, "accumulate"), flag_arg(need_dx, "need_dx")
    dtype = call_dtype(inputs=inputs, kernel=kernel, z=z, y=y, dy=dy, dw=dw, db=db)
    X, W, _, out_shape, pads = conv_arrays(inputs, kernel, None, s, d, one_d, padding, dtype)

    def as_out(v, name):
        a = as_input(v, name, dtype).astype(np.float64)
        if one_d:
            a = a[:, None] if a.ndim >= 1 else a
        if a.shape != out_shape:
            raise Invalid(name)
        return a

    Y, DY = as_out(y, "y"), as_out(dy, "dy")
    Z = None
    if kind in NEEDS_INPUT:
        if z is None:
            raise Invalid("z")
        Z = as_out(z, "z")
    w_shape = W.shape[1:] if (one_d and np.ndim(kernel) == 3) else W.shape
    dw0 = None if dw is None else output_arg(dw, "dw", w_shape, dtype)
    db0 = None if db is None else output_arg(db, "db", (W.shape[3],), dtype)
    if need_dx:
        result_shape(X.shape, dtype)
    G = act_backward(kind, Z, Y, DY, alpha)
    gs = np.abs(DY) * 4
    dx, dxs = np.zeros(X.shape), np.zeros(X.shape)
    dwv, dws = np.zeros(W.shape), np.zeros(W.shape)
    if math.prod(out_shape):
        rows = conv_taps(out_shape[1], s[0], W.shape[0], d[0], pads[0], X.shape[1])
        cols = conv_taps(out_shape[2], s[1], W.shape[1], d[1], pads[1], X.shape[2])
        n = range(X.shape[0])
        for i, (ro, ri) in enumerate(rows):
            for j, (co, ci) in enumerate(cols):
                if not (len(ro) and len(co)):
                    continue
                g, ga = G[:, ro][:, :, co], gs[:, ro][:, :, co]
                patch = X[:, ri][:, :, ci]
                dwv[i, j] += np.einsum("nhwc,nhwf->cf", patch, g)
                dws[i, j] += np.einsum("nhwc,nhwf->cf", np.abs(patch), ga)
                contrib = np.einsum("nhwf,cf->nhwc", g, W[i, j])
                contrib_s = np.einsum("nhwf,cf->nhwc", ga, np.abs(W[i, j]))
                np.add.at(dx, np.ix_(n, ri, ci, range(X.shape[3])), contrib)
                np.add.at(dxs, np.ix_(n, ri, ci, range(X.shape[3])), contrib_s)
    dbv = G.reshape(-1, W.shape[3]).sum(0)
    dbs = gs.reshape(-1, W.shape[3]).sum(0)
    if one_d:
        dx, dxs = dx[:, 0], dxs[:, 0]
        if np.ndim(kernel) == 3:
            dwv, dws = dwv[0], dws[0]
    want_dw = None if dw is None else Approx(dwv + (dw0 if accumulate else 0), dtype,
                                             scale=dws + (np.abs(dw0) if accumulate else 0))
    want_db = None if db is None else Approx(dbv + (db0 if accumulate else 0), dtype,
                                             scale=dbs + (np.abs(db0) if accumulate else 0))
    return (Approx(dx, dtype, scale=dxs) if need_dx else None), want_dw, want_db


@covers("conv_backward")
@given(st.data())
def test_conv_backward(data):
    draw = data.draw
    rank, x, w, _ = conv_operands(draw)
    strides, dilation = conv_window(draw, rank), conv_window(draw, rank)
    padding = draw(conv_paddings)
    activation, alpha = draw(activation_names), draw(floats(-2, 2, weight=9))
    accumulate, need_dx = draw(flags()), draw(flags())
    # dy, y, z shaped like the forward's output when it has one
    try:
        plan = conv_plan(x, w, strides, padding, None, dilation, None, None, 0.0, None)
        dtype = call_dtype(x=x, w=w)
        X, W, _, out_shape, _ = conv_arrays(x, w, None, plan[0], plan[1], plan[2], plan[4], dtype)
        out_shape = out_shape if not plan[2] else (out_shape[0],) + out_shape[2:]
        w_shape = np.shape(w)
    except Invalid:
        out_shape, w_shape = (1, 2, 1), (1, 1, 1)
    if math.prod(out_shape) > 4096:
        out_shape = tuple(0 if v == max(out_shape) else v for v in out_shape)
    y, dy = operand(draw, out_shape), operand(draw, out_shape)
    z = operand(draw, out_shape, none_weight=3)
    dw, db = grads_out(draw, w_shape), grads_out(draw, (w_shape[-1],))
    desc = describe_call("conv_backward", x, w, dy, y, dw, db, strides, padding, dilation, activation, z, alpha,
                         accumulate, need_dx)
    note(desc)
    dw0, db0 = copy_arg(dw), copy_arg(db)

    def call():
        return ops.conv_backward(x, w, dy, y, dw, db, strides, padding, dilation, activation, z, alpha, accumulate,
                                 need_dx), dw, db

    def canonical_call():
        dtype = call_dtype(x=x, w=w, z=z, y=y, dy=dy, dw=dw0, db=db0)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        dw1, db1 = copy_arg(dw0), copy_arg(db0)
        return ops.conv_backward(c(x), c(w), c(dy), c(y), dw1, db1, strides, padding, dilation, activation, c(z),
                                 alpha, accumulate, need_dx), dw1, db1

    check(("conv_backward", "conv"), call,
          lambda: conv_backward_reference(x, w, dy, y, dw0, db0, strides, padding, dilation, activation, z, alpha,
                                          accumulate, need_dx), canonical_call, desc)


# ---------------------------------------------------------------------------------------------
# pooling: max_pool, average_pool (and backward, argmax), global pools
# ---------------------------------------------------------------------------------------------
def std_tuple(value, n, name, allow_none=False):
    """pool.standardize_tuple: an int or n ints, each in [1, 2**63 - 1]."""
    if value is None and allow_none:
        return None
    if is_int(value):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise Invalid(name) from None
        if len(values) != n or not all(is_int(v) for v in values):
            raise Invalid(name)
        values = tuple(int(v) for v in values)
    if any(not 1 <= v <= BIG for v in values):
        raise Invalid(name)
    return values


def std_padding(padding):
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise Invalid("padding")
    return padding.lower()


def pool_window(ndim, pool_size, strides, padding):
    """pool._window: (ph, pw, sh, sw, padding) for an input of `ndim` dimensions."""
    if ndim not in (3, 4):
        raise Invalid("inputs", "input_shape")
    spatial = ndim - 2
    pool = std_tuple(pool_size, spatial, "pool_size")
    stride = std_tuple(strides, spatial, "strides", allow_none=True) or pool
    padding = std_padding(padding)
    if spatial == 1:
        return 1, pool[0], 1, stride[0], padding
    return pool[0], pool[1], stride[0], stride[1], padding


def pool_axis(n, k, s, padding):
    """(output size, padding before) along one axis (TensorFlow's rules, Python ints)."""
    if padding == "valid":
        if k > n:
            raise Invalid("pool_size")
        return (n - k) // s + 1, 0
    out = -(-n // s)
    return out, max((out - 1) * s + k - n, 0) // 2


def pool_geometry(shape, ph, pw, sh, sw, padding):
    """(batch, H, W, C), (oh, pad_top), (ow, pad_left) and the output shape (the input's rank)."""
    dims = tuple(shape) if len(shape) == 4 else (shape[0], 1, shape[1], shape[2])
    oh, pt = pool_axis(dims[1], ph, sh, padding)
    ow, pl = pool_axis(dims[2], pw, sw, padding)
    out = (dims[0], oh, ow, dims[3]) if len(shape) == 4 else (dims[0], ow, dims[3])
    return dims, (oh, pt), (ow, pl), out


def pool_windows(dims, rows, cols, sh, sw, ph, pw):
    """For each output (oh, ow): the in-bounds (rows, cols) ranges of its window."""
    (oh, pt), (ow, pl) = rows, cols
    for i in range(oh):
        r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, dims[1])
        for j in range(ow):
            c0, c1 = max(j * sw - pl, 0), min(j * sw - pl + pw, dims[2])
            yield i, j, r0, r1, c0, c1


def pool_reference(fn, inputs, pool_size, strides, padding, data_format, with_argmax=False, average=False):
    if data_format not in (None, "channels_last"):
        raise Invalid("data_format")
    ph, pw, sh, sw, padding = pool_window(np.ndim(inputs), pool_size, strides, padding)
    dtype = call_dtype(inputs=inputs)
    X = as_input(inputs, "inputs", dtype).astype(np.float64)
    dims, rows, cols, out_shape = pool_geometry(X.shape, ph, pw, sh, sw, padding)
    if with_argmax and dims[1] * dims[2] > 2**31 - 1:
        raise Invalid("inputs", "argmax")
    result_shape(out_shape, dtype)
    X4 = X.reshape(dims)
    y = np.zeros((dims[0], rows[0], cols[0], dims[3]))
    arg = np.zeros(y.shape, np.int32)
    if y.size:
        for i, j, r0, r1, c0, c1 in pool_windows(dims, rows, cols, sh, sw, ph, pw):
            win = X4[:, r0:r1, c0:c1, :].reshape(dims[0], -1, dims[3])
            if average:
                y[:, i, j] = win.mean(axis=1)
            else:
                y[:, i, j] = win.max(axis=1)
                k = np.argmax(win, axis=1)  # the first maximum (the first NaN) in row-major order
                arg[:, i, j] = (r0 + k // (c1 - c0)) * dims[2] + c0 + k % (c1 - c0)
    want = Approx(y.reshape(out_shape), dtype)
    return (want, Exact(arg.reshape(out_shape))) if with_argmax else want


POOL_NAMES = {"max_pool": ("max_pool",), "max_pool_with_argmax": ("max_pool_with_argmax", "max_pool"),
              "average_pool": ("average_pool",)}
pool_paddings = st.one_of(st.sampled_from(["valid", "same", "VALID", "Same"]),
                          st.sampled_from(["full", "", None, 1, b"same", "causal"]))


def pool_ints():
    return ints(1, 3, weight=6)


def pool_args(draw, rank):
    def window():
        one = lambda: draw(pool_ints())  # noqa: E731
        return draw(st.sampled_from([one(), tuple(one() for _ in range(rank)), [one() for _ in range(rank)],
                                     tuple(one() for _ in range(rank + 1)), "2"]))
    pool = window()
    strides = None if draw(st.booleans()) else window()
    return pool, strides, draw(pool_paddings)


def pool_input(draw):
    rank = draw(st.sampled_from([1, 2, 2]))
    shape = (draw(small_sizes),) + tuple(draw(st.integers(0, 5)) for _ in range(rank)) + (draw(small_sizes),)
    if draw(st.integers(0, 9)) == 0:  # a huge spatial axis beside an empty one
        shape = (0,) + tuple(draw(st.sampled_from([2**31, 2**40])) for _ in range(rank)) + shape[-1:]
    if draw(st.integers(0, 12)) == 0:
        shape = perturbed(draw, shape, 2)
    return rank, draw(arrays(shape))


@covers("max_pool", "max_pool_with_argmax", "average_pool")
@given(st.data(), st.sampled_from(["max_pool", "max_pool_with_argmax", "average_pool"]))
def test_pool(data, fn):
    draw = data.draw
    rank, x = pool_input(draw)
    pool, strides, padding = pool_args(draw, rank)
    data_format = draw(st.sampled_from([None, None, None, "channels_last", "channels_first", "NHWC"]))
    desc = describe_call(fn, x, pool, strides, padding, data_format)
    note(desc)
    f = getattr(ops, fn)
    check(POOL_NAMES[fn], lambda: f(x, pool, strides, padding, data_format),
          lambda: pool_reference(fn, x, pool, strides, padding, data_format, fn == "max_pool_with_argmax",
                                 fn == "average_pool"),
          lambda: f(canonical(x, call_dtype(inputs=x)), pool, strides, padding, data_format), desc)


def shape_arg(input_shape):
    """What the *_backward functions take as input_shape: a sequence of ints >= 0."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, np.ndarray)):
        raise Invalid("input_shape")
    shape = tuple(input_shape)
    if not all(is_int(d) and 0 <= d <= BIG for d in shape):
        raise Invalid("input_shape")
    return tuple(int(d) for d in shape)


def pool_backward_reference(fn, dy, argmax, input_shape, pool_size, strides, padding, average):
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, np.ndarray)):
        raise Invalid("input_shape")
    ph, pw, sh, sw, padding = pool_window(len(input_shape), pool_size, strides, padding)
    shape = shape_arg(input_shape)
    dtype = call_dtype(dy=dy)
    dims, rows, cols, out_shape = pool_geometry(shape, ph, pw, sh, sw, padding)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.shape != out_shape:
        raise Invalid("dy")
    if not average:
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32:
            raise Invalid("argmax")
        if argmax.shape != out_shape:
            raise Invalid("argmax")
    result_shape(shape, dtype)
    dx = np.zeros(dims)
    if dx.size and DY.size:
        D4 = DY.reshape(dims[0], rows[0], cols[0], dims[3])
        A4 = None if average else argmax.reshape(D4.shape)
        for i, j, r0, r1, c0, c1 in pool_windows(dims, rows, cols, sh, sw, ph, pw):
            if average:
                dx[:, r0:r1, c0:c1, :] += D4[:, i:i + 1, j:j + 1, :] / ((r1 - r0) * (c1 - c0))
            else:
                keys = (np.arange(r0, r1)[:, None] * dims[2] + np.arange(c0, c1)[None, :])[None, :, :, None]
                dx[:, r0:r1, c0:c1, :] += np.where(keys == A4[:, i:i + 1, j:j + 1, :], D4[:, i:i + 1, j:j + 1, :],
                                                   0.0)
    return Approx(dx.reshape(shape), dtype, scale=np.abs(dx.reshape(shape)) * 4)


def backward_shape(draw, shape):
    """input_shape for a backward call: the forward's, or a perturbed, huge or ill-typed one."""
    r = draw(st.integers(0, 12))
    if r < 9:
        return draw(st.sampled_from([tuple(shape), list(shape), np.array(shape)]))
    if r == 9:
        return perturbed(draw, shape, 2)
    if r == 10:
        return tuple(shape[:1]) + tuple(draw(st.sampled_from([2**40, 2**62, BIG, 2**63, -1])) for _ in shape[1:])
    return draw(st.sampled_from([3, None, "abc", (2.0, 3.0, 1.0), (True, 2, 2, 1)]))


@covers("max_pool_backward", "average_pool_backward")
@given(st.data(), st.booleans())
def test_pool_backward(data, average):
    draw = data.draw
    fn = "average_pool_backward" if average else "max_pool_backward"
    rank, x = pool_input(draw)
    pool, strides, padding = pool_args(draw, rank)
    xs = np.shape(x)
    try:  # dy and argmax from the forward pass when it has one
        y, argmax = ops.max_pool_with_argmax(canonical(x, call_dtype(inputs=x)), pool, strides, padding)
        if draw(st.integers(0, 5)) == 0:  # argmax values anywhere, in and out of range
            argmax = draw(arrays(argmax.shape, dtypes=[np.int32], layouts=ARRAY_LAYOUTS, specials=True))
            argmax = np.asarray(argmax, np.int32) * draw(st.sampled_from([1, 7, -3, 2**20]))
    except (ValueError, TypeError):
        y, argmax = np.zeros((1, 1, 1)), np.zeros((1, 1, 1), np.int32)
    dy = draw(arrays(perturbed(draw, y.shape, 12)))
    if draw(st.integers(0, 6)) == 0:
        argmax = draw(st.sampled_from([argmax.astype(np.int64), argmax.tolist(), argmax[..., :0], None,
                                       np.asfortranarray(argmax)]))
    input_shape = backward_shape(draw, xs)
    desc = describe_call(fn, dy, argmax, input_shape, pool, strides, padding)
    note(desc)
    if average:
        def call():
            return ops.average_pool_backward(dy, input_shape, pool, strides, padding)

        def canonical_call():
            return ops.average_pool_backward(canonical(dy, call_dtype(dy=dy)), input_shape, pool, strides, padding)
    else:
        def call():
            return ops.max_pool_backward(dy, argmax, input_shape, pool, strides, padding)

        def canonical_call():
            am = np.ascontiguousarray(argmax) if isinstance(argmax, np.ndarray) else argmax
            return ops.max_pool_backward(canonical(dy, call_dtype(dy=dy)), am, input_shape, pool, strides, padding)

    check((fn,), call,
          lambda: pool_backward_reference(fn, dy, argmax, input_shape, pool, strides, padding, average),
          canonical_call, desc)


def global_reference(inputs, keepdims, with_argmax=False, average=False):
    dtype = call_dtype(inputs=inputs)
    X = as_input(inputs, "inputs", dtype).astype(np.float64)
    if X.ndim not in (3, 4):
        raise Invalid("inputs")
    steps = math.prod(X.shape[1:-1])
    if steps == 0 or steps > 2**31 - 1:
        raise Invalid("inputs")
    n, c = X.shape[0], X.shape[-1]
    flat = X.reshape(n, steps, c)
    y = flat.mean(axis=1) if average else flat.max(axis=1)
    if truth_of(keepdims):
        y = y.reshape((n,) + (1,) * (X.ndim - 2) + (c,))
    want = Approx(y, dtype, scale=np.abs(y) if average else None)
    if with_argmax:
        return want, Exact(np.argmax(flat, axis=1).astype(np.int32).reshape(n, c))
    return want


def truth_of(value):
    """Python's truth value (what keepdims= and similar plain-Python flags use), or Invalid."""
    try:
        return bool(value)
    except (ValueError, TypeError):
        raise Invalid("keepdims") from None


def global_input(draw):
    rank = draw(st.sampled_from([1, 2, 2]))
    shape = (draw(small_sizes),) + tuple(draw(st.integers(0, 4)) for _ in range(rank)) + (draw(small_sizes),)
    if draw(st.integers(0, 12)) == 0:
        shape = perturbed(draw, shape, 2)
    if draw(st.integers(0, 12)) == 0:
        shape = (0,) + tuple(2**16 for _ in range(rank)) + shape[-1:]  # 2**32 positions
    return draw(arrays(shape))


@covers("global_max_pool", "global_max_pool_with_argmax", "global_average_pool")
@given(st.data(), st.sampled_from(["global_max_pool", "global_max_pool_with_argmax", "global_average_pool"]))
def test_global_pool(data, fn):
    draw = data.draw
    x = global_input(draw)
    keepdims = draw(st.sampled_from([False, True, 0, 1, None, np.True_]))
    desc = describe_call(fn, x, keepdims)
    note(desc)
    f = getattr(ops, fn)
    check((fn, fn.replace("_with_argmax", "")), lambda: f(x, keepdims),
          lambda: global_reference(x, keepdims, fn.endswith("argmax"), fn == "global_average_pool"),
          lambda: f(canonical(x, call_dtype(inputs=x)), keepdims), desc)


def global_backward_reference(dy, argmax, input_shape, average):
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, np.ndarray)):
        raise Invalid("input_shape")
    shape = shape_arg(input_shape)
    dtype = call_dtype(dy=dy)
    if len(shape) not in (3, 4):
        raise Invalid("input_shape")
    steps = math.prod(shape[1:-1])
    if steps == 0 or steps > 2**31 - 1:  # (past 2**63 - 1 too: named, never wrapped around)
        raise Invalid("input_shape")
    n, c = shape[0], shape[-1]
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    keep = (n,) + (1,) * (len(shape) - 2) + (c,)
    if DY.shape == keep and isinstance(dy, np.ndarray):
        DY = DY.reshape(n, c)
    if DY.shape != (n, c):
        raise Invalid("dy")
    if not average:
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32:
            raise Invalid("argmax")
        if argmax.shape != (n, c):
            raise Invalid("argmax")
    result_shape(shape, dtype)
    if average:
        dx = np.broadcast_to((DY / steps)[:, None, :], (n, steps, c))
    else:
        dx = np.where(np.arange(steps)[None, :, None] == argmax.astype(np.int64)[:, None, :], DY[:, None, :], 0.0)
    return Approx(dx.reshape(shape), dtype)


@covers("global_max_pool_backward", "global_average_pool_backward")
@given(st.data(), st.booleans())
def test_global_pool_backward(data, average):
    draw = data.draw
    fn = "global_average_pool_backward" if average else "global_max_pool_backward"
    x = global_input(draw)
    try:
        y, argmax = ops.global_max_pool_with_argmax(canonical(x, call_dtype(inputs=x)), draw(st.booleans()))
        if draw(st.integers(0, 5)) == 0:
            argmax = np.asarray(draw(arrays(argmax.shape, dtypes=[np.int32], specials=True)), np.int32) * \
                draw(st.sampled_from([1, 7, -3]))
    except (ValueError, TypeError):
        y, argmax = np.zeros((1, 1)), np.zeros((1, 1), np.int32)
    dy = draw(arrays(perturbed(draw, y.shape, 12)))
    if draw(st.integers(0, 6)) == 0:
        argmax = draw(st.sampled_from([argmax.astype(np.int64), argmax.tolist(), None]))
    input_shape = backward_shape(draw, np.shape(x))
    desc = describe_call(fn, dy, argmax, input_shape)
    note(desc)
    if average:
        call = lambda: ops.global_average_pool_backward(dy, input_shape)  # noqa: E731
        canonical_call = lambda: ops.global_average_pool_backward(  # noqa: E731
            canonical(dy, call_dtype(dy=dy)), input_shape)
    else:
        call = lambda: ops.global_max_pool_backward(dy, argmax, input_shape)  # noqa: E731
        canonical_call = lambda: ops.global_max_pool_backward(  # noqa: E731
            canonical(dy, call_dtype(dy=dy)), argmax, input_shape)
    check((fn,), call, lambda: global_backward_reference(dy, argmax, input_shape, average), canonical_call, desc)


# ---------------------------------------------------------------------------------------------
# upsample2d, zero_pad2d (and backward)
# ---------------------------------------------------------------------------------------------
def upsample_reference(inputs, size, backward=False):
    sh, sw = std_tuple(size, 2, "size")
    name = "dy" if backward else "inputs"
    dtype = call_dtype(**{name: inputs})
    X = as_input(inputs, name, dtype).astype(np.float64)
    if X.ndim != 4:
        raise Invalid(name)
    n, h, w, c = X.shape
    if backward:
        if h % sh or w % sw:
            raise Invalid("dy", "size")
        shape = result_shape((n, h // sh, w // sw, c), dtype)
        if not math.prod(shape):
            return Approx(np.zeros(shape), dtype)
        blocks = X.reshape(n, h // sh, sh, w // sw, sw, c)
        return Approx(blocks.sum(axis=(2, 4)), dtype, scale=np.abs(blocks).sum(axis=(2, 4)))
    shape = result_shape((n, h * sh, w * sw, c), dtype)
    if not math.prod(shape):
        return Approx(np.zeros(shape), dtype)
    return Approx(np.repeat(np.repeat(X, sh, axis=1), sw, axis=2), dtype)


def size_pairs():
    one = ints(1, 3, weight=6)
    return st.one_of(one, st.tuples(one, one), st.lists(one, min_size=2, max_size=2), st.tuples(one, one, one))


def image_input(draw, max_hw=5):
    shape = (draw(small_sizes), draw(st.integers(0, max_hw)), draw(st.integers(0, max_hw)), draw(small_sizes))
    r = draw(st.integers(0, 12))
    if r == 0:
        shape = (0,) + tuple(draw(st.sampled_from([2**31, 2**40, 2**50])) for _ in range(2)) + shape[-1:]
    elif r == 1:
        shape = perturbed(draw, shape, 2)
    return draw(arrays(shape))


@covers("upsample2d", "upsample2d_backward")
@given(st.data(), st.booleans())
def test_upsample2d(data, backward):
    draw = data.draw
    x = image_input(draw)
    size = draw(size_pairs())
    fn = "upsample2d_backward" if backward else "upsample2d"
    f = getattr(ops, fn)
    desc = describe_call(fn, x, size)
    note(desc)
    name = "dy" if backward else "inputs"
    check((fn,), lambda: f(x, size), lambda: upsample_reference(x, size, backward),
          lambda: f(canonical(x, call_dtype(**{name: x})), size), desc)


def padding2d(padding):
    """pool.normalize_padding2d: ((top, bottom), (left, right)) of ints in [0, 2**63 - 1]."""
    def nonneg(v):
        return is_int(v) and 0 <= v <= BIG
    if nonneg(padding):
        return (int(padding),) * 2, (int(padding),) * 2
    try:
        parts = tuple(padding)
    except TypeError:
        raise Invalid("padding") from None
    if len(parts) != 2:
        raise Invalid("padding")
    if all(nonneg(p) for p in parts):
        return (int(parts[0]),) * 2, (int(parts[1]),) * 2
    out = []
    for part in parts:
        try:
            pair = tuple(part)
        except TypeError:
            raise Invalid("padding") from None
        if len(pair) != 2 or not all(nonneg(v) for v in pair):
            raise Invalid("padding")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def zero_pad_reference(inputs, padding, backward=False):
    (top, bottom), (left, right) = padding2d(padding)
    name = "dy" if backward else "inputs"
    dtype = call_dtype(**{name: inputs})
    X = as_input(inputs, name, dtype).astype(np.float64)
    if X.ndim != 4:
        raise Invalid(name)
    n, h, w, c = X.shape
    if backward:
        if top + bottom > h or left + right > w:
            raise Invalid("dy", "padding")
        shape = result_shape((n, h - top - bottom, w - left - right, c), dtype)
        return Approx(X[:, top:top + shape[1], left:left + shape[2]], dtype)
    hp, wp = h + top + bottom, w + left + right
    if hp > BIG or wp > BIG or math.prod(d for d in (n, hp, wp, c)) > BIG:
        raise Invalid()  # the padded size does not fit in 64 bits
    shape = result_shape((n, hp, wp, c), dtype)
    if not math.prod(shape):
        return Approx(np.zeros(shape), dtype)
    out = np.zeros(shape)
    out[:, top:top + h, left:left + w] = X
    return Approx(out, dtype)


def paddings():
    one = ints(0, 3, weight=6)
    return st.one_of(one, st.tuples(one, one), st.tuples(st.tuples(one, one), st.tuples(one, one)),
                     st.lists(st.lists(one, min_size=2, max_size=2), min_size=2, max_size=2),
                     st.tuples(one, one, one), st.tuples(st.tuples(one, one, one), st.tuples(one, one)))


@covers("zero_pad2d", "zero_pad2d_backward")
@given(st.data(), st.booleans())
def test_zero_pad2d(data, backward):
    draw = data.draw
    x = image_input(draw)
    padding = draw(paddings())
    fn = "zero_pad2d_backward" if backward else "zero_pad2d"
    f = getattr(ops, fn)
    desc = describe_call(fn, x, padding)
    note(desc)
    name = "dy" if backward else "inputs"
    check((fn,), lambda: f(x, padding), lambda: zero_pad_reference(x, padding, backward),
          lambda: f(canonical(x, call_dtype(**{name: x})), padding), desc)


# ---------------------------------------------------------------------------------------------
# batch normalisation, layer normalisation
# ---------------------------------------------------------------------------------------------
def pybind_int(value, name):
    """What a pybind11 int parameter takes: an int (or __index__) within 32 bits; a Python bool
    as 0/1 (pybind11's int caster takes it as an int), never a float."""
    if isinstance(value, bool):
        return int(value)
    if is_int(value) and -(2**31) <= int(value) < 2**31:
        return int(value)
    raise Invalid(name)


def channel_axis(nd, axis):
    if not -nd <= axis < nd:
        raise Invalid("axis")
    return axis % nd


def bn_stats(X, axis):
    """Per-channel batch mean and biased variance over every axis but `axis`."""
    other = tuple(a for a in range(X.ndim) if a != axis)
    return X.mean(axis=other), X.var(axis=other)


def huge_channels(c):
    """A channel count whose per-channel arrays the test cannot afford (only empty inputs have one)."""
    if c > SAFE_CHANNELS:
        # (a valid call with this many channels returns 2 x c values per statistic; the
        # invalid ones are refused before anything is allocated: tests/test_size_arithmetic.py)
        reject()


SAFE_CHANNELS = 2**20


def per_channel(v, name, dtype, c, required=False):
    if v is None:
        if required:
            raise Invalid(name)
        return None
    a = as_input(v, name, dtype).astype(np.float64)
    if a.shape != (c,):
        raise Invalid(name)
    return a


def bshape(c, axis, nd):
    return tuple(c if a == axis else 1 for a in range(nd))




def batch_normalization_reference(x, mean, variance, axis, offset, scale, epsilon):
    axis = pybind_int(axis, "axis")
    epsilon = float_arg(epsilon, "epsilon")
    dtype = call_dtype(x=x, scale=scale, offset=offset, mean=mean, variance=variance)
    X = as_input(x, "x", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    ax = channel_axis(X.ndim, axis)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise Invalid("epsilon")
    c = X.shape[ax]
    huge_channels(c)
    G, B = per_channel(scale, "scale", dtype, c), per_channel(offset, "offset", dtype, c)
    if mean is None or variance is None:
        raise Invalid("mean", "variance")
    M, V = per_channel(mean, "mean", dtype, c), per_channel(variance, "variance", dtype, c)
    if np.any(V < 0):
        raise Invalid("variance")
    result_shape(X.shape, dtype)
    bs = bshape(c, ax, X.ndim)
    inv = (1 / np.sqrt(V + epsilon)).astype(dtype).astype(np.float64)
    y = (X - M.reshape(bs)) * inv.reshape(bs)
    if G is not None:
        y = y * G.reshape(bs)
    if B is not None:
        y = y + B.reshape(bs)
    return Approx(y, dtype, scale=np.abs(X * inv.reshape(bs) * (1 if G is None else np.abs(G).reshape(bs))) +
                  np.abs(M * inv * (1 if G is None else np.abs(G))).reshape(bs))


def bn_operands(draw):
    shape = draw(shapes(1, 4))
    nd = len(shape)
    axis = draw(st.one_of(st.integers(-nd - 1, nd), st.sampled_from([True, 2**40, 1.0, None, "1", np.int64(-1)])))
    c = shape[int(axis) % nd] if is_int(axis) and -nd <= axis < nd else 1
    return shape, axis, c


epsilons = st.one_of(st.sampled_from([1e-3, 1e-5, 0.5]), st.sampled_from([0.0, -1e-3, float("nan"), float("inf"),
                                                                          None, "1e-3", True, 1]))


@covers("batch_normalization")
@given(st.data())
def test_batch_normalization(data):
    draw = data.draw
    shape, axis, c = bn_operands(draw)
    x = draw(arrays(shape))
    mean, variance = operand(draw, (c,), none_weight=1), operand(draw, (c,), none_weight=1)
    if isinstance(variance, np.ndarray) and variance.dtype.kind == "f" and draw(st.booleans()):
        variance = np.abs(variance)
    offset, scale = operand(draw, (c,), none_weight=4), operand(draw, (c,), none_weight=4)
    epsilon = draw(epsilons)
    desc = describe_call("batch_normalization", x, mean, variance, axis, offset, scale, epsilon)
    note(desc)

    def canonical_call():
        dtype = call_dtype(x=x, gamma=scale, beta=offset, moving_mean=mean, moving_variance=variance)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        return ops.batch_normalization(c(x), c(mean), c(variance), axis, c(offset), c(scale), epsilon)

    check(("batch_normalization", "batchnorm_forward"),
          lambda: ops.batch_normalization(x, mean, variance, axis, offset, scale, epsilon),
          lambda: batch_normalization_reference(x, mean, variance, axis, offset, scale, epsilon), canonical_call,
          desc)


def inout_arg(value, name, size, dtype):
    """An in-place argument (inout_array in the binding): an ndarray of exactly `dtype` with
    `size` values, C-contiguous, writeable; else Invalid(name)."""
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.size != size \
            or not value.flags.c_contiguous or not value.flags.writeable:
        raise Invalid(name)
    return value.astype(np.float64)


def batch_norm_forward_reference(x, gamma, beta, mm, mv, axis, epsilon, momentum, training):
    axis = pybind_int(axis, "axis")
    epsilon, momentum = float_arg(epsilon, "epsilon"), float_arg(momentum, "momentum")
    training = flag_arg(training, "training")
    dtype = call_dtype(x=x, gamma=gamma, beta=beta, moving_mean=mm, moving_variance=mv)
    X = as_input(x, "x", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    ax = channel_axis(X.ndim, axis)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise Invalid("epsilon")
    c = X.shape[ax]
    huge_channels(c)
    G, B = per_channel(gamma, "gamma", dtype, c), per_channel(beta, "beta", dtype, c)
    result_shape(X.shape, dtype)
    bs = bshape(c, ax, X.ndim)
    if training:
        if (mm is None) != (mv is None):
            raise Invalid("moving_mean", "moving_variance")
        if mm is not None:
            if not 0 <= momentum <= 1:
                raise Invalid("momentum")
            MM, MV = inout_arg(mm, "moving_mean", c, dtype), inout_arg(mv, "moving_variance", c, dtype)
            if mm is mv or (np.shares_memory(mm, mv) and c):
                raise Invalid("moving_variance", "moving_mean")
            for other in (x, gamma, beta):
                if isinstance(other, np.ndarray) and np.shares_memory(mm, other) and c:
                    raise Invalid("moving_mean")
        if c and X.size == 0:
            raise Invalid("x")
        mu, var = bn_stats(X, ax) if X.size else (np.zeros(c), np.zeros(c))
    else:
        if mm is None or mv is None:
            raise Invalid("moving_mean", "moving_variance")
        mu = per_channel(mm, "moving_mean", dtype, c)
        var = per_channel(mv, "moving_variance", dtype, c)
        if np.any(var < 0):
            raise Invalid("moving_variance")
    inv = 1 / np.sqrt(var + epsilon)
    mu_t, inv_t = mu.astype(dtype).astype(np.float64), inv.astype(dtype).astype(np.float64)
    y = (X - mu_t.reshape(bs)) * inv_t.reshape(bs)
    gs = 1 if G is None else np.abs(G).reshape(bs)
    if G is not None:
        y = y * G.reshape(bs)
    if B is not None:
        y = y + B.reshape(bs)
    scale = (np.abs(X) + np.abs(mu).reshape(bs)) * np.abs(inv).reshape(bs) * gs
    want_inv = Approx(inv, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)
    out = [Approx(y, dtype, scale=scale), Approx(mu, dtype), want_inv]
    if training and mm is not None:  # (updated in place: in the buffers' own shapes, any with c values)
        out += [Approx((MM * momentum + mu * (1 - momentum)).reshape(np.shape(mm)), dtype,
                       scale=(np.abs(MM) + np.abs(mu)).reshape(np.shape(mm))),
                Approx((MV * momentum + var * (1 - momentum)).reshape(np.shape(mv)), dtype,
                       scale=(np.abs(MV) + var).reshape(np.shape(mv)))]
    else:
        out += [lambda got: None, lambda got: None]
    return tuple(out)


@covers("batch_norm_forward")
@given(st.data())
def test_batch_norm_forward(data):
    draw = data.draw
    shape, axis, c = bn_operands(draw)
    x = draw(arrays(shape))
    gamma, beta = operand(draw, (c,), none_weight=4), operand(draw, (c,), none_weight=4)
    training = draw(flags())
    mm = grads_out(draw, (c,), none_weight=3) if truth(training) else operand(draw, (c,), none_weight=1)
    mv = grads_out(draw, (c,), none_weight=3) if truth(training) else operand(draw, (c,), none_weight=1)
    if isinstance(mv, np.ndarray) and mv.dtype.kind == "f" and draw(st.booleans()):
        np.abs(mv, out=mv) if mv.flags.writeable else None
    epsilon, momentum = draw(epsilons), draw(floats(0, 1))
    desc = describe_call("batch_norm_forward", x, gamma, beta, mm, mv, axis, epsilon, momentum, training)
    note(desc)
    mm0, mv0 = copy_arg(mm), copy_arg(mv)

    def call():
        return tuple(ops.batch_norm_forward(x, gamma, beta, mm, mv, axis, epsilon, momentum, training)) + (mm, mv)

    def canonical_call():
        dtype = call_dtype(x=x, gamma=gamma, beta=beta, moving_mean=mm0, moving_variance=mv0)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        m1, v1 = copy_arg(mm0), copy_arg(mv0)
        if not truth(training):
            m1, v1 = c(m1), c(v1)
        return tuple(ops.batch_norm_forward(c(x), c(gamma), c(beta), m1, v1, axis, epsilon, momentum,
                                            training)) + (m1 if truth(training) else mm, v1 if truth(training) else mv)

    got = check(("batch_norm_forward", "batchnorm_forward"), call,
                lambda: batch_norm_forward_reference(x, gamma, beta, mm0, mv0, axis, epsilon, momentum, training),
                None, desc)
    if got is not None:  # the layout of the inputs does not change the bits
        again = canonical_call()
        assert all(same_bits(a, b) for a, b in zip(got[:3], again[:3]))
        if truth(training) and mm is not None:
            assert same_bits(got[3], again[3]) and same_bits(got[4], again[4])


def batch_norm_backward_reference(dy, x, mean, invstd, gamma, axis, training, dgamma, dbeta, accumulate, need_dx):
    axis = pybind_int(axis, "axis")
    training = flag_arg(training, "training")
    accumulate, need_dx = flag_arg(accumulate, "accumulate"), flag_arg(need_dx, "need_dx")
    dtype = call_dtype(x=x, dy=dy, mean=mean, invstd=invstd, gamma=gamma, dgamma=dgamma, dbeta=dbeta)
    X = as_input(x, "x", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    ax = channel_axis(X.ndim, axis)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.shape != X.shape:
        raise Invalid("dy")
    c = X.shape[ax]
    huge_channels(c)
    M = per_channel(mean, "mean", dtype, c, required=False)
    S = per_channel(invstd, "invstd", dtype, c, required=False)
    if M is None or S is None:
        raise Invalid("mean", "invstd")
    G = per_channel(gamma, "gamma", dtype, c)
    dg0 = None if dgamma is None else output_arg(dgamma, "dgamma", (c,), dtype)
    db0 = None if dbeta is None else output_arg(dbeta, "dbeta", (c,), dtype)
    if dgamma is not None and dbeta is not None and (dgamma is dbeta or np.shares_memory(dgamma, dbeta)) and c:
        raise Invalid("dbeta", "dgamma")
    if need_dx:
        result_shape(X.shape, dtype)
    bs = bshape(c, ax, X.ndim)
    other = tuple(a for a in range(X.ndim) if a != ax)
    xhat = (X - M.reshape(bs)) * S.reshape(bs)
    n = X.size // c if c else 0
    sdy = DY.sum(axis=other) if other else DY.copy()
    sdyx = (DY * xhat).sum(axis=other) if other else DY * xhat
    absdy = np.abs(DY).sum(axis=other) if other else np.abs(DY)
    absdyx = np.abs(DY * xhat).sum(axis=other) if other else np.abs(DY * xhat)
    g = np.ones(c) if G is None else G
    if training and n:
        dx = (g * S).reshape(bs) / n * (n * DY - sdy.reshape(bs) - xhat * sdyx.reshape(bs))
        dxs = np.abs(g * S).reshape(bs) / n * (n * np.abs(DY) + absdy.reshape(bs) + np.abs(xhat) * absdyx.reshape(bs))
    else:
        dx = (g * S).reshape(bs) * DY
        dxs = 0
    want_dx = Approx(dx, dtype, scale=dxs) if need_dx else None
    want_dg = None if dgamma is None else Approx(sdyx + (dg0 if accumulate else 0), dtype,
                                                 scale=absdyx + (np.abs(dg0) if accumulate else 0))
    want_db = None if dbeta is None else Approx(sdy + (db0 if accumulate else 0), dtype,
                                                scale=absdy + (np.abs(db0) if accumulate else 0))
    return want_dx, want_dg, want_db


@covers("batch_norm_backward")
@given(st.data())
def test_batch_norm_backward(data):
    draw = data.draw
    shape, axis, c = bn_operands(draw)
    x, dy = draw(arrays(shape)), operand(draw, shape)
    gamma = operand(draw, (c,), none_weight=4)
    huge_channels(c)
    try:  # statistics from the forward pass, most often
        _, mean, invstd = ops.batch_norm_forward(canonical(x, call_dtype(x=x)), axis=axis)
    except (ValueError, TypeError):
        mean, invstd = np.zeros(c, np.float32), np.ones(c, np.float32)
    if draw(st.integers(0, 4)) == 0:
        mean, invstd = operand(draw, (c,), none_weight=1), operand(draw, (c,), none_weight=1)
    training, accumulate, need_dx = draw(flags()), draw(flags()), draw(flags())
    dgamma, dbeta = grads_out(draw, (c,)), grads_out(draw, (c,))
    huge_channels(c)
    desc = describe_call("batch_norm_backward", dy, x, mean, invstd, gamma, axis, training, dgamma, dbeta, accumulate,
                         need_dx)
    note(desc)
    dg0, db0 = copy_arg(dgamma), copy_arg(dbeta)

    def call():
        return ops.batch_norm_backward(dy, x, mean, invstd, gamma, axis, training, dgamma, dbeta, accumulate,
                                       need_dx), dgamma, dbeta

    def canonical_call():
        dtype = call_dtype(x=x, dy=dy, mean=mean, invstd=invstd, gamma=gamma, dgamma=dg0, dbeta=db0)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        g1, b1 = copy_arg(dg0), copy_arg(db0)
        return ops.batch_norm_backward(c(dy), c(x), c(mean), c(invstd), c(gamma), axis, training, g1, b1, accumulate,
                                       need_dx), g1, b1

    check(("batch_norm_backward", "batchnorm_backward"), call,
          lambda: batch_norm_backward_reference(dy, x, mean, invstd, gamma, axis, training, dg0, db0, accumulate,
                                                need_dx), canonical_call, desc)


LN_MODES = ("standard", "rms_scaling", "rms")


def ln_reference_forward(X, first, G, B, eps, mode):
    """(y, row mean, invstd, Σ|terms| of y) normalising the axes of X from `first` on."""
    rows = math.prod(X.shape[:first])
    feats = X.shape[first:]
    F = math.prod(feats)
    Xr = X.reshape(rows, F)
    mu = Xr.mean(axis=1) if F else np.zeros(rows)
    var = Xr.var(axis=1) if F else np.zeros(rows)
    second = (Xr * Xr).mean(axis=1) if mode == "rms" and F else var  # RMSNorm: mean(x²) (inf, not NaN, with inf)
    inv = 1 / np.sqrt(second + eps)
    centred = Xr - mu[:, None] if mode == "standard" else Xr
    y = centred * inv[:, None]
    scale = (np.abs(Xr) + (np.abs(mu)[:, None] if mode == "standard" else 0)) * inv[:, None]
    if G is not None:
        y, scale = y * G.reshape(F), scale * np.abs(G.reshape(F))
    if B is not None:
        y, scale = y + B.reshape(F), scale + np.abs(B.reshape(F))
    return y.reshape(X.shape), mu, inv, scale.reshape(X.shape)


def ln_split(X, axis):
    if not -X.ndim <= axis < X.ndim:
        raise Invalid("axis", "x")
    first = axis % X.ndim
    if math.prod(X.shape[first:]) == 0:
        raise Invalid("x")
    return first


def ln_feature(v, name, dtype, feats):
    if v is None:
        return None
    a = as_input(v, name, dtype).astype(np.float64)
    if a.shape != tuple(feats):
        raise Invalid(name)
    return a


def layer_norm_forward_reference(x, gamma, beta, axis, epsilon, mode):
    axis = pybind_int(axis, "axis")
    epsilon = float_arg(epsilon, "epsilon")
    mode = str_type(mode, "mode")
    dtype = call_dtype(x=x, gamma=gamma, beta=beta)
    X = as_input(x, "x", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    first = ln_split(X, axis)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise Invalid("epsilon")
    if mode not in LN_MODES:
        raise Invalid("mode")
    feats = X.shape[first:]
    G, B = ln_feature(gamma, "gamma", dtype, feats), ln_feature(beta, "beta", dtype, feats)
    if B is not None and mode != "standard":
        raise Invalid("beta")
    result_shape(X.shape, dtype)
    y, mu, inv, scale = ln_reference_forward(X, first, G, B, epsilon, mode)
    rows = X.reshape(len(mu), math.prod(X.shape[first:]))
    want_mu = Approx(mu, np.float64, rtol=1e-12, atol=1e-12, scale=np.abs(rows).mean(axis=1) if rows.size else 0)
    want_inv = Approx(inv, dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
    want_y = Approx(y, dtype, scale=scale)
    return want_y, want_mu, want_inv


def ln_operands(draw):
    shape = draw(shapes(1, 4))
    nd = len(shape)
    axis = draw(st.one_of(st.integers(-nd - 1, nd), st.sampled_from([True, 2**40, 1.0, None, "1", np.int64(-1)])))
    first = int(axis) % nd if is_int(axis) and -nd <= axis < nd else nd - 1
    return shape, axis, shape[first:]


ln_mode_values = st.one_of(st.sampled_from(LN_MODES), st.sampled_from(["RMS", "", None, b"rms", 1]))


@covers("layer_norm_forward")
@given(st.data())
def test_layer_norm_forward(data):
    draw = data.draw
    shape, axis, feats = ln_operands(draw)
    x = draw(arrays(shape))
    gamma, beta = operand(draw, feats, none_weight=4), operand(draw, feats, none_weight=5)
    epsilon, mode = draw(epsilons), draw(ln_mode_values)
    desc = describe_call("layer_norm_forward", x, gamma, beta, axis, epsilon, mode)
    note(desc)

    def canonical_call():
        dtype = call_dtype(x=x, gamma=gamma, beta=beta)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        return ops.layer_norm_forward(c(x), c(gamma), c(beta), axis, epsilon, mode)

    check(("layer_norm_forward", "layernorm_forward"), lambda: ops.layer_norm_forward(x, gamma, beta, axis, epsilon,
                                                                                      mode),
          lambda: layer_norm_forward_reference(x, gamma, beta, axis, epsilon, mode), canonical_call, desc)


def keras_axis(x_ndim, axis):
    """normalization._first_normalised_axis: the first axis of a trailing run (Python side)."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if not axes:
        raise Invalid("axis")
    canonical_axes = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not is_int(a):
            raise Invalid("axis")
        if not -x_ndim <= a < x_ndim:
            raise Invalid("axis")
        canonical_axes.append(int(a) % x_ndim)
    canonical_axes = sorted(canonical_axes)
    if len(set(canonical_axes)) != len(canonical_axes) or canonical_axes != list(range(canonical_axes[0], x_ndim)):
        raise Invalid("axis")
    return canonical_axes[0]


def layer_normalization_reference(x, gamma, beta, axis, epsilon, rms_scaling, rms=False):
    if not rms and not isinstance(rms_scaling, (bool, np.bool_, int, np.integer)):
        raise Invalid("rms_scaling")
    rms_scaling = bool(rms_scaling)
    eps = fastnn.config.epsilon() if epsilon is None else epsilon
    first = keras_axis(np.ndim(x), axis)
    mode = "rms" if rms else ("rms_scaling" if rms_scaling else "standard")
    return layer_norm_forward_reference(x, gamma, beta, first, eps, mode)[0]


def keras_axes(draw, nd):
    return draw(st.one_of(st.integers(-nd - 1, nd), st.just(-1),
                          st.lists(st.integers(-max(nd, 1), max(nd, 1) - 1), min_size=0, max_size=3).map(tuple),
                          st.sampled_from([True, 1.0, None, "1", [-2, -1], [-1, -1], np.int64(-1)])))


@covers("layer_normalization", "rms_normalization")
@given(st.data(), st.booleans())
def test_layer_normalization(data, rms):
    draw = data.draw
    shape = draw(shapes(0, 4))
    x = draw(arrays(shape))
    axis = keras_axes(draw, len(shape))
    try:
        feats = shape[keras_axis(len(shape), axis):]
    except Invalid:
        feats = shape[-1:]
    gamma, beta = operand(draw, feats, none_weight=4), operand(draw, feats, none_weight=6)
    epsilon = draw(st.one_of(st.none(), epsilons))
    rms_scaling = draw(flags())
    fn = "rms_normalization" if rms else "layer_normalization"
    desc = describe_call(fn, x, gamma, beta, axis, epsilon, rms_scaling)
    note(desc)
    if rms:
        call = lambda: ops.rms_normalization(x, gamma, axis, epsilon)  # noqa: E731
        reference = lambda: layer_normalization_reference(x, gamma, None, axis, epsilon, False, True)  # noqa: E731

        def canonical_call():
            dtype = call_dtype(x=x, gamma=gamma)
            return ops.rms_normalization(canonical(x, dtype), canonical(gamma, dtype), axis, epsilon)
    else:
        call = lambda: ops.layer_normalization(x, gamma, beta, axis, epsilon, rms_scaling)  # noqa: E731
        reference = lambda: layer_normalization_reference(x, gamma, beta, axis, epsilon, rms_scaling)  # noqa

        def canonical_call():
            dtype = call_dtype(x=x, gamma=gamma, beta=beta)
            c = lambda v: canonical(v, dtype)  # noqa: E731
            return ops.layer_normalization(c(x), c(gamma), c(beta), axis, epsilon, rms_scaling)

    check((fn, "layernorm_forward"), call, reference, canonical_call, desc,
          {"gamma": ("scale",)} if rms else None)


def layer_norm_backward_reference(dy, x, mean, invstd, gamma, axis, mode, dgamma, dbeta, accumulate, need_dx):
    axis = pybind_int(axis, "axis")
    mode = str_type(mode, "mode")
    accumulate, need_dx = flag_arg(accumulate, "accumulate"), flag_arg(need_dx, "need_dx")
    dtype = call_dtype(x=x, dy=dy, invstd=invstd, gamma=gamma, dgamma=dgamma, dbeta=dbeta)
    X = as_input(x, "x", dtype).astype(np.float64)
    if X.ndim < 1:
        raise Invalid("x")
    first = ln_split(X, axis)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.shape != X.shape:
        raise Invalid("dy")
    if mode not in LN_MODES:
        raise Invalid("mode")
    rows, feats = math.prod(X.shape[:first]), X.shape[first:]
    F = math.prod(feats)
    if mean is None:
        raise Invalid("mean")
    M = as_input(mean, "mean", np.float64)
    if M.size != rows:
        raise Invalid("mean")
    if invstd is None:
        raise Invalid("invstd")
    S = as_input(invstd, "invstd", dtype).astype(np.float64)
    if S.size != rows:
        raise Invalid("invstd")
    M, S = M.reshape(rows), S.reshape(rows)
    G = ln_feature(gamma, "gamma", dtype, feats)
    dg0 = None if dgamma is None else output_arg(dgamma, "dgamma", feats, dtype)
    db0 = None if dbeta is None else output_arg(dbeta, "dbeta", feats, dtype)
    if dgamma is not None and dbeta is not None and (dgamma is dbeta or np.shares_memory(dgamma, dbeta)):
        raise Invalid("dbeta", "dgamma")
    if need_dx:
        result_shape(X.shape, dtype)
    Xr, Dr = X.reshape(rows, F), DY.reshape(rows, F)
    g = Dr * (1 if G is None else G.reshape(F))
    centre = M[:, None] if mode == "standard" else 0.0
    xhat = (Xr - centre) * S[:, None]
    dgv, dgs = ((Dr * xhat).sum(0), np.abs(Dr * xhat).sum(0)) if dgamma is not None else (0, 0)
    dbv, dbs = (Dr.sum(0), np.abs(Dr).sum(0)) if dbeta is not None else (0, 0)
    A = (S / F * g.sum(1))[:, None] if mode == "standard" else 0.0
    sgx = (g * (Xr - centre)).sum(1)
    tail = Xr if mode == "rms" else Xr - M[:, None]
    dx = S[:, None] * g - A - (S ** 3 / F * sgx)[:, None] * tail
    dxs = np.abs(S[:, None] * g) + np.abs(A) + (np.abs(S) ** 3 / F * np.abs(g * (Xr - centre)).sum(1))[:, None] * \
        (np.abs(tail) + np.abs(Xr))
    want_dx = Approx(dx.reshape(X.shape), dtype, scale=dxs.reshape(X.shape)) if need_dx else None
    want_dg = None if dgamma is None else Approx(dgv.reshape(feats) + (dg0 if accumulate else 0), dtype,
                                                 scale=dgs.reshape(feats) + (np.abs(dg0) if accumulate else 0))
    want_db = None if dbeta is None else Approx(dbv.reshape(feats) + (db0 if accumulate else 0), dtype,
                                                scale=dbs.reshape(feats) + (np.abs(db0) if accumulate else 0))
    return want_dx, want_dg, want_db


@covers("layer_norm_backward")
@given(st.data())
def test_layer_norm_backward(data):
    draw = data.draw
    shape, axis, feats = ln_operands(draw)
    x, dy = draw(arrays(shape)), operand(draw, shape)
    gamma = operand(draw, feats, none_weight=4)
    mode = draw(ln_mode_values)
    try:  # statistics from the forward pass, most often
        _, mean, invstd = ops.layer_norm_forward(canonical(x, call_dtype(x=x)), axis=axis, mode=mode)
    except (ValueError, TypeError):
        mean, invstd = np.zeros(1), np.ones(1, np.float32)
    if draw(st.integers(0, 4)) == 0:
        mean, invstd = operand(draw, np.shape(mean), none_weight=1), operand(draw, np.shape(invstd), none_weight=1)
    accumulate, need_dx = draw(flags()), draw(flags())
    dgamma, dbeta = grads_out(draw, feats), grads_out(draw, feats)
    desc = describe_call("layer_norm_backward", dy, x, mean, invstd, gamma, axis, mode, dgamma, dbeta, accumulate,
                         need_dx)
    note(desc)
    dg0, db0 = copy_arg(dgamma), copy_arg(dbeta)

    def call():
        return ops.layer_norm_backward(dy, x, mean, invstd, gamma, axis, mode, dgamma, dbeta, accumulate,
                                       need_dx), dgamma, dbeta

    def canonical_call():
        dtype = call_dtype(x=x, dy=dy, invstd=invstd, gamma=gamma, dgamma=dg0, dbeta=db0)
        c = lambda v: canonical(v, dtype)  # noqa: E731
        g1, b1 = copy_arg(dg0), copy_arg(db0)
        return ops.layer_norm_backward(c(dy), c(x), canonical(mean, np.float64), c(invstd), c(gamma), axis, mode, g1,
                                       b1, accumulate, need_dx), g1, b1

    check(("layer_norm_backward", "layernorm_backward"), call,
          lambda: layer_norm_backward_reference(dy, x, mean, invstd, gamma, axis, mode, dg0, db0, accumulate,
                                                need_dx), canonical_call, desc)


# ---------------------------------------------------------------------------------------------
# attention (references: softmax over the attended keys in float64; a row with nothing attended
# gives P = 0, logsumexp = +inf; a NaN or +inf logit among the attended makes its attended P NaN)
# ---------------------------------------------------------------------------------------------
def heads_first(a, heads_axis):
    return a.transpose(0, 2, 1, 3) if heads_axis == 2 else a


def attention_core(Q, K, V, mask, bias, scale, causal):
    """(P, lse, out, |logit| bound) for heads-first float64 Q, K, V."""
    L = np.einsum("bhtd,bhsd->bhts", Q, K) * scale
    Lscale = np.einsum("bhtd,bhsd->bhts", np.abs(Q), np.abs(K)) * abs(scale)
    if bias is not None:
        L, Lscale = L + bias, Lscale + np.abs(bias)
    attend = attend_of(Q, K, mask, causal)
    Lm = np.where(attend, L, -np.inf)
    bad = np.any(attend & (np.isnan(L) | (L == np.inf)), axis=-1, keepdims=True)
    m = np.max(np.where(np.isnan(Lm), -np.inf, Lm), axis=-1, keepdims=True, initial=-np.inf)
    finite = np.isfinite(m)
    e = np.where(attend & finite, np.exp(np.where(attend, Lm, 0) - np.where(finite, m, 0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    some = total > 0
    P = np.where(some, e / np.where(some, total, 1.0), 0.0)
    lse = np.where(some, m + np.log(np.where(some, total, 1.0)), np.inf)
    P = np.where(bad & attend, np.nan, P)  # (masked keys keep P = 0 exactly, even in a NaN row)
    lse = np.where(bad, np.nan, lse)[..., 0]
    out = np.einsum("bhts,bhsd->bhtd", P, V)
    lbound = np.max(np.where(attend, np.nan_to_num(Lscale, posinf=0), 0), axis=-1, initial=0)
    return P, lse, out, lbound


ATTENTION_NAMES = {"attention_forward": ("attention_forward",), "attention_backward": ("attention_backward",)}


def flag_checks(flags_):
    for name, v in flags_:
        if not isinstance(v, (int, float, np.integer, np.floating, np.bool_, complex)):
            raise Invalid(name)


def attention_checks(fn, query, key, value, mask, bias, scale, causal, dropout_rate, seed, heads_axis, extra=None):
    """The wrapper's and the binding's checks, in their order; the float64 arrays, heads first."""
    if not isinstance(scale, (int, float, np.integer, np.floating, np.bool_)):
        raise Invalid("scale")
    scale = float(scale)
    if not isinstance(causal, (int, float, np.integer, np.floating, np.bool_, complex)):
        raise Invalid("causal")
    if not isinstance(dropout_rate, (int, float, np.integer, np.floating, np.bool_)):
        raise Invalid("dropout_rate")
    rate = float(dropout_rate)
    if not is_int(seed):
        raise Invalid("seed")
    if not 0 <= int(seed) < 2**64:
        raise Invalid("seed")
    flags_ = [(name, v) for name, v in (extra or {}).items() if not name.startswith("__")]
    if fn == "attention_forward":  # (the wrapper reads return_probabilities before heads_axis)
        flag_checks(flags_)
    if not is_int(heads_axis) or heads_axis not in (1, 2):
        raise Invalid("heads_axis")
    flag_checks(flags_)
    args = dict(query=query, key=key, value=value)
    if fn == "attention_backward":
        args.update(out=extra["__out"], dout=extra["__dout"], logsumexp=extra["__lse"])
    dtype = call_dtype(**args, bias=bias)
    Q, K, V = (as_input(v, n, dtype).astype(np.float64) for v, n in ((query, "query"), (key, "key"),
                                                                       (value, "value")))
    for a, n in ((Q, "query"), (K, "key"), (V, "value")):
        if a.ndim != 4:
            raise Invalid(n)
    t_axis = 1 if heads_axis == 2 else 2
    b, h = Q.shape[0], Q.shape[heads_axis]
    if K.shape[0] != b or V.shape[0] != b or K.shape[heads_axis] != h or V.shape[heads_axis] != h:
        raise Invalid("query", "key", "value")
    if K.shape[3] != Q.shape[3]:
        raise Invalid("key")
    if V.shape[t_axis] != K.shape[t_axis]:
        raise Invalid("value")
    if Q.shape[3] == 0:
        raise Invalid("query", "key")
    if not math.isfinite(scale):
        raise Invalid("scale")
    if not 0 <= rate < 1:
        raise Invalid("dropout_rate")
    full = (b, h, Q.shape[t_axis], K.shape[t_axis])
    M = None
    if mask is not None:
        m = np.asarray(mask) if not isinstance(mask, np.ndarray) else mask
        if m.dtype.kind != "b":
            raise Invalid("mask")
        if m.ndim > 4 or any(d not in (1, f) for d, f in zip(m.shape[::-1], full[::-1])):
            raise Invalid("mask")
        M = np.asarray(m, bool)
    B = None
    if bias is not None:
        B = as_input(bias, "bias", dtype).astype(np.float64)
        if B.ndim > 4 or any(d not in (1, f) for d, f in zip(B.shape[::-1], full[::-1])):
            raise Invalid("bias")
    return dtype, heads_first(Q, heads_axis), heads_first(K, heads_axis), heads_first(V, heads_axis), M, B, \
        scale, bool(causal), rate, full


def attention_forward_reference(query, key, value, mask, bias, scale, causal, dropout_rate, seed, probs,
                                heads_axis):
    dtype, Q, K, V, M, B, scale, causal, rate, full = attention_checks(
        "attention_forward", query, key, value, mask, bias, scale, causal, dropout_rate, seed, heads_axis,
        {"return_probabilities": probs})
    out_shape = (full[0], full[2], full[1], V.shape[3]) if heads_axis == 2 else (full[0], full[1], full[2],
                                                                                    V.shape[3])
    result_shape(out_shape, dtype)
    if bool(probs):
        result_shape(full, dtype)
    P, lse, out, lb = attention_core(Q, K, V, M, B, scale, causal)
    eps = float(np.finfo(dtype).eps)
    tol = dict(rtol=2048 * eps, atol=2048 * eps)
    want_out = Approx(heads_first(out, heads_axis), dtype, scale=heads_first(
        np.einsum("bhts,bhsd->bhtd", np.nan_to_num(P), np.abs(V)) * (1 + lb[..., None]), heads_axis), **tol)
    # A NaN or inf value at a key a row does not attend: 0·NaN reaches that row's output where the
    # kernel multiplies the key's block (as Keras' dense P·V does), not past the causal boundary,
    # whose keys it never reads. Both are documented; such rows are checked for shape only.
    unread = heads_first(np.any(~attend_of(Q, K, M, causal)[..., None] & ~np.isfinite(V)[:, :, None], axis=3),
                         heads_axis) if V.size else np.zeros(out_shape, bool)
    if rate > 0:  # the dropout mask is the kernel's: the shape and dtype only
        want_out = lambda got: _assert_array(got, out_shape, dtype)  # noqa: E731
    elif unread.any():
        want_out = rows_except(want_out, unread, out_shape, dtype)
    return want_out, Approx(lse, dtype, scale=lb, **tol), (Approx(P, dtype, scale=lb[..., None], **tol)
                                                           if bool(probs) else None)


def attend_of(Q, K, mask, causal):
    """(b, h, t, s): whether query t attends key s (the mask and the causal rule)."""
    attend = np.ones(Q.shape[:3] + (K.shape[2],), bool)
    if mask is not None:
        attend &= np.broadcast_to(mask, attend.shape)
    if causal:
        attend &= np.tril(np.ones(attend.shape[-2:], bool))
    return attend


def rows_except(want, skip, shape, dtype):
    """`want` (an Approx) checked where `skip` is False; the shape and dtype everywhere."""
    def check_rows(got):
        _assert_array(got, shape, dtype)
        keep = ~skip
        assert_matches(got[keep], Approx(want.values[keep], dtype, rtol=want.rtol, atol=want.atol,
                                         scale=want.scale[keep] if np.ndim(want.scale) else None))
    return check_rows


def _assert_array(got, shape, dtype):
    assert isinstance(got, np.ndarray) and got.shape == tuple(shape) and got.dtype == dtype, repr(got)


def attention_operands(draw):
    heads_axis = draw(st.sampled_from([2, 2, 1]))
    b, h, t, s = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    dk, dv = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    if draw(st.integers(0, 12)) == 0:
        dk = 0

    def layout(time, d):
        return (b, time, h, d) if heads_axis == 2 else (b, h, time, d)
    q, k, v = operand(draw, layout(t, dk)), operand(draw, layout(s, dk)), operand(draw, layout(s, dv))
    full = (b, h, t, s)

    def scores(dtypes):
        keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
        shape = tuple(d if k else 1 for d, k in zip(full, keep))[draw(st.integers(0, 3)):]
        return draw(arrays(perturbed(draw, shape, 12), dtypes=dtypes))
    mask = scores([np.bool_] * 8 + [np.int8, np.float32]) if draw(st.integers(0, 2)) == 0 else None
    bias = scores(None) if draw(st.integers(0, 2)) == 0 else None
    return heads_axis, q, k, v, mask, bias, layout(t, dv), (b, h, t)


@covers("attention_forward")
@given(st.data())
def test_attention_forward(data):
    draw = data.draw
    heads_axis, q, k, v, mask, bias, _, _ = attention_operands(draw)
    if draw(st.integers(0, 8)) == 0:
        heads_axis = draw(st.sampled_from([0, 3, True, 2.0, None, "2"]))
    scale = draw(floats(0.1, 2.0))
    causal, probs = draw(flags()), draw(flags())
    rate = draw(st.sampled_from([0.0, 0.0, 0.0, 0.5])) if draw(st.integers(0, 7)) else draw(floats(0, 1))
    seed = draw(SEEDS)
    desc = describe_call("attention_forward", q, k, v, mask, bias, scale, causal, rate, seed, probs, heads_axis)
    note(desc)

    def canonical_call():
        dtype = call_dtype(query=q, key=k, value=v, bias=bias)
        c = lambda a: canonical(a, dtype)  # noqa: E731
        m = None if mask is None else np.array(np.asarray(mask), order="C", copy=True)
        return ops.attention_forward(c(q), c(k), c(v), m, c(bias), scale, causal, rate, seed, probs, heads_axis)

    check(ATTENTION_NAMES["attention_forward"],
          lambda: ops.attention_forward(q, k, v, mask, bias, scale, causal, rate, seed, probs, heads_axis),
          lambda: attention_forward_reference(q, k, v, mask, bias, scale, causal, rate, seed, probs, heads_axis),
          canonical_call, desc)


def attention_backward_reference(dout, query, key, value, out, lse, mask, bias, scale, causal, dropout_rate, seed,
                                 heads_axis, nq, nk, nv):
    dtype, Q, K, V, M, B, scale, causal, rate, full = attention_checks(
        "attention_backward", query, key, value, mask, bias, scale, causal, dropout_rate, seed, heads_axis,
        {"need_query_grad": nq, "need_key_grad": nk, "need_value_grad": nv, "__out": out, "__dout": dout,
         "__lse": lse})
    b, h, t, s = full

    def tensor(time, d):
        return (b, time, h, d) if heads_axis == 2 else (b, h, time, d)
    O = as_input(out, "out", dtype).astype(np.float64)
    if O.shape != tensor(t, V.shape[3]):
        raise Invalid("out")
    DO = as_input(dout, "dout", dtype).astype(np.float64)
    if DO.shape != tensor(t, V.shape[3]):
        raise Invalid("dout")
    LSE = as_input(lse, "logsumexp", dtype).astype(np.float64)
    if LSE.shape != (b, h, t):
        raise Invalid("logsumexp")
    nq, nk, nv = bool(nq), bool(nk), bool(nv)
    for flag, shape in ((nq, tensor(t, Q.shape[3])), (nk, tensor(s, K.shape[3])), (nv, tensor(s, V.shape[3]))):
        if flag:
            result_shape(shape, dtype)
    if rate > 0:
        return tuple((lambda got, sh=sh: _assert_array(got, sh, dtype)) if f else None
                     for f, sh in ((nq, tensor(t, Q.shape[3])), (nk, tensor(s, K.shape[3])), (nv, tensor(s, V.shape[3]))))
    O, DO = heads_first(O, heads_axis), heads_first(DO, heads_axis)
    L = np.einsum("bhtd,bhsd->bhts", Q, K) * scale
    if B is not None:
        L = L + B
    attend = np.ones(L.shape, bool)
    if M is not None:
        attend &= np.broadcast_to(M, L.shape)
    if causal:
        attend &= np.tril(np.ones(L.shape[-2:], bool))
    P = np.where(attend, np.exp(L - LSE[..., None]), 0.0)
    dP = np.einsum("bhtd,bhsd->bhts", DO, V)
    D = (DO * O).sum(axis=-1, keepdims=True)
    dS = P * (dP - D)
    aP = np.abs(np.nan_to_num(P))
    adS = aP * (np.einsum("bhtd,bhsd->bhts", np.abs(DO), np.abs(V)) + np.abs(DO * O).sum(-1, keepdims=True))
    lb = np.einsum("bhtd,bhsd->bhts", np.abs(Q), np.abs(K)) * abs(scale) + (0 if B is None else np.abs(B))
    grow = 1 + np.max(np.nan_to_num(lb, posinf=0), initial=0)
    eps = float(np.finfo(dtype).eps)
    tol = dict(rtol=2048 * eps, atol=2048 * eps)
    dq = Approx(heads_first(scale * np.einsum("bhts,bhsd->bhtd", dS, K), heads_axis), dtype, scale=heads_first(
        abs(scale) * np.einsum("bhts,bhsd->bhtd", adS, np.abs(K)) * grow, heads_axis), **tol) if nq else None
    dk = Approx(heads_first(scale * np.einsum("bhts,bhtd->bhsd", dS, Q), heads_axis), dtype, scale=heads_first(
        abs(scale) * np.einsum("bhts,bhtd->bhsd", adS, np.abs(Q)) * grow, heads_axis), **tol) if nk else None
    dv = Approx(heads_first(np.einsum("bhts,bhtd->bhsd", P, DO), heads_axis), dtype, scale=heads_first(
        np.einsum("bhts,bhtd->bhsd", aP, np.abs(DO)), heads_axis), **tol) if nv else None
    return dq, dk, dv


@covers("attention_backward")
@given(st.data())
def test_attention_backward(data):
    draw = data.draw
    heads_axis, q, k, v, mask, bias, out_shape, lse_shape = attention_operands(draw)
    scale, causal = draw(floats(0.1, 2.0)), draw(flags())
    rate = draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, -0.1]))
    seed = draw(SEEDS)
    try:  # out and logsumexp from the forward pass, most often
        dtype = call_dtype(query=q, key=k, value=v, bias=bias)
        c = lambda a: canonical(a, dtype)  # noqa: E731
        out, lse, _ = ops.attention_forward(c(q), c(k), c(v), mask, c(bias), scale, causal, rate, seed,
                                            heads_axis=heads_axis)
    except (ValueError, TypeError, Invalid):
        out, lse = np.zeros(out_shape, np.float32), np.zeros(lse_shape, np.float32)
    if draw(st.integers(0, 5)) == 0:
        out, lse = operand(draw, np.shape(out)), operand(draw, np.shape(lse))
    dout = operand(draw, np.shape(out))
    nq, nk, nv = draw(flags()), draw(flags()), draw(flags())
    desc = describe_call("attention_backward", dout, q, k, v, out, lse, mask, bias, scale, causal, rate, seed,
                         heads_axis, nq, nk, nv)
    note(desc)

    def canonical_call():
        dtype = call_dtype(query=q, key=k, value=v, out=out, dout=dout, logsumexp=lse, bias=bias)
        c = lambda a: canonical(a, dtype)  # noqa: E731
        m = None if mask is None else np.array(np.asarray(mask), order="C", copy=True)
        return ops.attention_backward(c(dout), c(q), c(k), c(v), c(out), c(lse), m, c(bias), scale, causal, rate,
                                      seed, heads_axis, nq, nk, nv)

    check(ATTENTION_NAMES["attention_backward"],
          lambda: ops.attention_backward(dout, q, k, v, out, lse, mask, bias, scale, causal, rate, seed, heads_axis,
                                         nq, nk, nv),
          lambda: attention_backward_reference(dout, q, k, v, out, lse, mask, bias, scale, causal, rate, seed,
                                               heads_axis, nq, nk, nv), canonical_call, desc)


def dot_product_attention_reference(query, key, value, bias, mask, scale, is_causal, flash_attention, soft_cap):
    if soft_cap is not None:
        raise Invalid("attn_logits_soft_cap")
    if not (flash_attention is None or (isinstance(flash_attention, (bool, np.bool_, int, np.integer))
                                        and flash_attention in (0, 1))):
        raise Invalid("flash_attention")
    for name, x in (("query", query), ("key", key), ("value", value)):
        if np.ndim(x) != 4:
            raise Invalid(name)
    head = np.shape(query)[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(head) if head else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise Invalid("scale")
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype.kind not in "biuf":
            raise Invalid("mask")
        mask = m.astype(bool)
    for name, x in (("query", query), ("key", key), ("value", value), ("bias", bias)):
        if x is not None and np.asarray(x).dtype.kind not in "biuf":
            raise Invalid(name)
    call_dtype(query=query, key=key, value=value, bias=bias)
    want = attention_forward_reference(query, key, value, mask, bias, scale, is_causal, 0.0, 0, False, 2)
    return want[0]


@covers("dot_product_attention")
@given(st.data())
def test_dot_product_attention(data):
    draw = data.draw
    _, q, k, v, mask, bias, _, _ = attention_operands(draw)
    if mask is not None and draw(st.booleans()):
        mask = draw(arrays(np.shape(mask)))  # Keras takes any array as a mask (nonzero = attend)
    scale = draw(st.one_of(st.none(), floats(0.1, 2.0)))
    is_causal = draw(flags())
    flash = draw(st.sampled_from([None, None, True, False, 1, "yes", np.array([1])]))
    cap = draw(st.sampled_from([None] * 8 + [30.0]))
    desc = describe_call("dot_product_attention", q, k, v, bias, mask, scale, is_causal, flash, cap)
    note(desc)

    def canonical_call():
        dtype = call_dtype(query=q, key=k, value=v, bias=bias)
        c = lambda a: canonical(a, dtype)  # noqa: E731
        return ops.dot_product_attention(c(q), c(k), c(v), c(bias), mask, scale, is_causal, flash, cap)

    check(("dot_product_attention", "attention_forward"),
          lambda: ops.dot_product_attention(q, k, v, bias, mask, scale, is_causal, flash, cap),
          lambda: dot_product_attention_reference(q, k, v, bias, mask, scale, is_causal, flash, cap),
          canonical_call, desc)


# ---------------------------------------------------------------------------------------------
# recurrent kernels (references: tests/rnn_reference.py, Keras 3's step loops in NumPy; backward
# passes against central finite differences of those references) and the embedding lookup
# ---------------------------------------------------------------------------------------------
from rnn_reference import gru_reference, lstm_reference, simple_rnn_reference  # noqa: E402

RNN_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
# The recurrent kernels' activations, Keras' formulas with Keras' default parameters.
RNN_ACTS = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda v: np.maximum(v, 0), "linear": lambda v: v,
            None: lambda v: v,
            "hard_sigmoid": lambda v: np.clip(v + 3, 0, 6) / 6, "softsign": lambda v: v / (np.abs(v) + 1),
            "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
            "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(np.minimum(v, 0))),
            "softplus": lambda v: np.logaddexp(0, v), "leaky_relu": lambda v: np.where(v > 0, v, 0.2 * v),
            "relu6": lambda v: np.clip(v, 0, 6), "hard_tanh": lambda v: np.clip(v, -1, 1)}
rnn_activations = st.one_of(st.sampled_from(["tanh", "sigmoid", "linear", None, "relu"]),
                            st.sampled_from(sorted(k for k in RNN_ACTS if k is not None)), activation_names)


def rnn_activation_kind(value, arg):
    """An activation the recurrent kernels compute (by name, or None), or Invalid(arg)."""
    if value is None or (isinstance(value, str) and value in RNN_ACTS):
        return value
    raise Invalid(arg)


def rnn_run(kind, X, K, R, B, h0, c0, mask, back, act, ract, scale):
    """The reference forward in float64: (outputs, h[, c])."""
    a, ra = RNN_ACTS[act], RNN_ACTS[ract]
    if X.shape[0] == 0:  # no samples (the steps may be 2**40 of them: no loop)
        empty = np.zeros((0, R.shape[0]))
        return (np.zeros(X.shape[:2] + (R.shape[0],)), empty) + ((empty,) if kind == "lstm" else ())
    if kind == "lstm":
        return lstm_reference(X, K, R, B, h0, c0, mask, back, a, ra, scale)
    if kind == "gru":
        return gru_reference(X, K, R, B, h0, mask, back, a, ra, scale)
    return simple_rnn_reference(X, K, R, B, h0, mask, back, a, scale)


def rnn_checks(kind, inputs, kernel, recurrent_kernel, bias, initial_state, mask, go_backwards, activation,
               recurrent_activation, scale, grads=None):
    """The wrapper's and the binding's checks, in their order; the float64 arrays."""
    if initial_state is None:
        h0 = c0 = None
    else:
        states = [initial_state] if isinstance(initial_state, np.ndarray) or not isinstance(
            initial_state, (list, tuple)) else initial_state
        if len(states) != (2 if kind == "lstm" else 1):
            raise Invalid("initial_state")
        h0, c0 = states[0], (states[1] if kind == "lstm" else None)
    M = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype.kind not in "biuf":
            raise Invalid("mask")
        M = m != 0
    act = rnn_activation_kind(activation, "activation")
    ract = rnn_activation_kind(recurrent_activation, "recurrent_activation")
    if not isinstance(go_backwards, (bool, np.bool_, int, float, np.integer, np.floating)):
        raise Invalid("go_backwards")
    dtype = call_dtype(**{"inputs": inputs, "kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias,
                          "initial_state[0]": h0, "initial_state[1]": c0, "recurrent_scale": scale})
    if grads:  # the backward call decides its dtype with the gradients too
        dtype = call_dtype(**{"inputs": inputs, "kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias,
                              "initial_state[0]": h0, "initial_state[1]": c0, "recurrent_scale": scale}, **grads)
    X = as_input(inputs, "inputs", dtype).astype(np.float64)
    if X.ndim != 3:
        raise Invalid("inputs")
    K = as_input(kernel, "kernel", dtype).astype(np.float64)
    R = as_input(recurrent_kernel, "recurrent_kernel", dtype).astype(np.float64)
    if K.ndim != 2:
        raise Invalid("kernel")
    if R.ndim != 2:
        raise Invalid("recurrent_kernel")
    n, t, f = X.shape
    units, gates = R.shape[0], RNN_GATES[kind]
    if f == 0:
        raise Invalid("inputs")
    if units == 0:
        raise Invalid("recurrent_kernel")
    if R.shape != (units, gates * units):
        raise Invalid("recurrent_kernel")
    if K.shape[0] != f:
        raise Invalid("inputs", "kernel")
    if K.shape != (f, gates * units):
        raise Invalid("kernel")
    Bv = None
    if bias is not None:
        Bv = as_input(bias, "bias", dtype).astype(np.float64)
        if Bv.shape != ((2, gates * units) if kind == "gru" else (gates * units,)):
            raise Invalid("bias")
    H0 = C0 = None
    if h0 is not None:
        H0 = as_input(h0, "initial_state[0]", dtype).astype(np.float64)
        if H0.shape != (n, units):
            raise Invalid("initial_state[0]", "initial_state")
    if c0 is not None:
        C0 = as_input(c0, "initial_state[1]", dtype).astype(np.float64)
        if C0.shape != (n, units):
            raise Invalid("initial_state[1]", "initial_state")
    if M is not None and M.shape != (n, t):
        raise Invalid("mask")
    S = None
    if scale is not None:
        S = as_input(scale, "recurrent_dropout_mask", dtype).astype(np.float64)
        if S.shape != (n, units):
            raise Invalid("recurrent_dropout_mask")
    return dtype, X, K, R, Bv, H0, C0, M, bool(go_backwards), act, ract, S


def rnn_tolerance(dtype):
    return dict(rtol=2e-3, atol=2e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)


def rnn_forward_reference(kind, *args):
    dtype, X, K, R, Bv, H0, C0, M, back, act, ract, S = rnn_checks(kind, *args)
    n, t, _ = X.shape
    units = R.shape[0]
    result_shape((t + 1, n, units), dtype)
    got = rnn_run(kind, X, K, R, Bv, H0, C0, M, back, act, ract, S)
    return tuple(Approx(v, dtype, **rnn_tolerance(dtype)) for v in got)


def rnn_operands(draw, kind):
    gates = RNN_GATES[kind]
    n, t, f, u = draw(st.integers(0, 2)), draw(st.integers(0, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if draw(st.integers(0, 15)) == 0:
        f, u = draw(st.sampled_from([(0, u), (f, 0)]))
    if draw(st.integers(0, 15)) == 0:
        n = draw(st.sampled_from([0])) if t else n
        t = 2**40 if n == 0 else t
    x = operand(draw, (n, t, f))
    kernel = operand(draw, (f, gates * u))
    recurrent = operand(draw, (u, gates * u))
    bias = operand(draw, (2, gates * u) if kind == "gru" else (gates * u,), none_weight=3)
    r = draw(st.integers(0, 9))
    if r < 5:
        state = None
    elif r < 9:
        states = [operand(draw, (n, u)) for _ in range(2 if kind == "lstm" else 1)]
        state = states if draw(st.booleans()) or kind == "lstm" else states[0]
    else:
        state = draw(st.sampled_from([[], [np.zeros((n, u))] * 3, (np.zeros((n, u)),)]))
    mask = None if draw(st.booleans()) else draw(arrays(perturbed(draw, (n, t), 12),
                                                        dtypes=[np.bool_] * 6 + [np.int8, np.float32, "U3"]))
    scale = None if draw(st.integers(0, 3)) else operand(draw, (n, u))
    return x, kernel, recurrent, bias, state, mask, scale


def canonical_state(state, dtype):
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return type(state)(canonical(s, dtype) for s in state)
    return canonical(state, dtype)


def state_dtype_args(kind, state):
    if state is None:
        return {}
    states = [state] if isinstance(state, np.ndarray) or not isinstance(state, (list, tuple)) else list(state)
    return {"initial_state[0]": states[0] if states else None,
            "initial_state[1]": states[1] if kind == "lstm" and len(states) > 1 else None}


@covers("lstm", "gru", "simple_rnn")
@given(st.data(), st.sampled_from(["lstm", "gru", "simple_rnn"]))
def test_rnn(data, kind):
    draw = data.draw
    x, kernel, recurrent, bias, state, mask, scale = rnn_operands(draw, kind)
    go_backwards = draw(flags())
    activation = draw(rnn_activations)
    ract = draw(rnn_activations) if kind != "simple_rnn" else "sigmoid"
    desc = describe_call(kind, x, kernel, recurrent, bias, state, mask, go_backwards, activation, ract, scale)
    note(desc)
    f = getattr(ops, kind)

    def call(x=x, kernel=kernel, recurrent=recurrent, bias=bias, state=state, scale=scale):
        if kind == "simple_rnn":
            return f(x, kernel, recurrent, bias, state, mask, go_backwards, activation, recurrent_dropout_mask=scale)
        return f(x, kernel, recurrent, bias, state, mask, go_backwards, activation, ract,
                 recurrent_dropout_mask=scale)

    def canonical_call():
        dtype = call_dtype(inputs=x, kernel=kernel, recurrent_kernel=recurrent, bias=bias, recurrent_scale=scale,
                           **state_dtype_args(kind, state))
        c = lambda v: canonical(v, dtype)  # noqa: E731
        return call(c(x), c(kernel), c(recurrent), c(bias), canonical_state(state, dtype), c(scale))

    check((kind,), call, lambda: rnn_forward_reference(kind, x, kernel, recurrent, bias, state, mask, go_backwards,
                                                       activation, ract, scale),
          canonical_call, desc)


def finite_difference(fn, arrays_, step=1e-6):
    """Central differences of the scalar fn(*arrays_) with respect to each array."""
    grads = []
    for i, a in enumerate(arrays_):
        if a is None:
            grads.append(None)
            continue
        g = np.zeros_like(a)
        if a.size == 0:  # (np.ndindex of (0, 2**40) would allocate per index of the long axis)
            grads.append(g)
            continue
        for idx in np.ndindex(a.shape):
            plus, minus = [b.copy() if b is not None else None for b in arrays_], \
                [b.copy() if b is not None else None for b in arrays_]
            plus[i][idx] += step
            minus[i][idx] -= step
            g[idx] = (fn(*plus) - fn(*minus)) / (2 * step)
        grads.append(g)
    return grads


def rnn_backward_reference(kind, args, d_outputs, d_h, d_c, need_dx, dkernel, drec, dbias, accumulate, grads_dtype):
    rnn_checks(kind, *args)  # the forward pass's errors first
    for name, v in (("accumulate", accumulate), ("need_dx", need_dx)):
        if not isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
            raise Invalid(name)
    dtype, X, K, R, Bv, H0, C0, M, back, act, ract, S = rnn_checks(
        kind, *args, grads={"d_outputs": d_outputs, "d_h": d_h, "d_c": d_c})
    n, t, f = X.shape
    units = R.shape[0]
    gates = RNN_GATES[kind]
    shapes_out = {"d_outputs": (n, t, units), "d_h": (n, units), "d_c": (n, units)}
    D = {}
    for name, v in (("d_outputs", d_outputs), ("d_h", d_h), ("d_c", d_c)):
        if v is None:
            D[name] = None
            continue
        if name == "d_c" and kind != "lstm":
            raise Invalid("d_c")
        D[name] = as_input(v, name, dtype).astype(np.float64)
        if D[name].shape != shapes_out[name]:
            raise Invalid(name)
    bias_shape = (2, gates * units) if kind == "gru" else (gates * units,)
    outs = {}
    for name, v, shape in (("dkernel", dkernel, K.shape), ("drecurrent_kernel", drec, R.shape),
                           ("dbias", dbias, bias_shape)):
        if name == "dbias" and Bv is None:
            continue
        if v is not None:
            outs[name] = output_arg(v, name, shape, dtype)
    accumulate = bool(accumulate)
    # Values are checked against finite differences, which only moderate inputs condition well:
    # with weights of 2**32 (an unsigned -1) the gates saturate and float64 differences are off
    # by orders of magnitude (an extended-precision check agrees with the kernel's W² trend).
    finite = all(a is None or (np.all(np.isfinite(a)) and np.max(np.abs(a), initial=0) <= 1e3)
                 for a in (X, K, R, Bv, H0, C0, S, *D.values())) and \
        act in ("tanh", "sigmoid", "linear", None) and ract in ("tanh", "sigmoid", "linear", None)

    def loss(X_, K_, R_, B_, H_, C_):
        got = rnn_run(kind, X_, K_, R_, B_, H_, C_, M, back, act, ract, S)
        total = 0.0
        if D["d_outputs"] is not None:
            total += np.sum(got[0] * D["d_outputs"])
        if D["d_h"] is not None:
            total += np.sum(got[1] * D["d_h"])
        if kind == "lstm" and D["d_c"] is not None:
            total += np.sum(got[2] * D["d_c"])
        return total

    zeros = np.zeros((n, units))
    shapes = {"dx": (n, t, f), "kernel": K.shape, "recurrent_kernel": R.shape, "bias": bias_shape,
              "h0": (n, units), "c0": (n, units)}

    def expect(name, value):
        if not finite or value is None:
            return lambda got, name=name: _assert_array(got, shapes[name], dtype)
        return Approx(value, dtype, rtol=2e-3 if dtype == np.float32 else 1e-6,
                      atol=2e-3 * (1 + np.max(np.abs(value), initial=0)) if dtype == np.float32 else 1e-6)

    fd = finite_difference(loss, [X, K, R, Bv, H0 if H0 is not None else zeros,
                                  C0 if C0 is not None else zeros]) if finite else [None] * 6
    want = {"dx": expect("dx", fd[0]) if bool(need_dx) else None}
    for key, name, g in (("kernel", "dkernel", fd[1]), ("recurrent_kernel", "drecurrent_kernel", fd[2]),
                         ("bias", "dbias", fd[3])):
        if key == "bias" and Bv is None:
            want[key] = None
            continue
        start = outs[name] if (accumulate and name in outs) else 0
        want[key] = expect(key, None if g is None else g + start)
    want["h0"] = expect("h0", fd[4])
    if kind == "lstm":
        want["c0"] = expect("c0", fd[5])
    return want


@covers("lstm_backward", "gru_backward", "simple_rnn_backward")
@examples(0.5)
@given(st.data(), st.sampled_from(["lstm", "gru", "simple_rnn"]))
def test_rnn_backward(data, kind):
    draw = data.draw
    x, kernel, recurrent, bias, state, mask, scale = rnn_operands(draw, kind)
    go_backwards = draw(flags())
    activation = draw(st.sampled_from(["tanh", "sigmoid", "linear", None, "relu"]))
    ract = draw(st.sampled_from(["tanh", "sigmoid", "linear"])) if kind != "simple_rnn" else "sigmoid"
    args = (x, kernel, recurrent, bias, state, mask, go_backwards, activation, ract, scale)
    fwd = getattr(ops, kind)
    try:
        rnn_checks(kind, *args)
    except Invalid:
        reject()  # the forward pass's errors are test_rnn's
    n, t, f = np.shape(x)
    u = np.shape(recurrent)[0]
    d_outputs = operand(draw, (n, t, u), none_weight=2)
    d_h = operand(draw, (n, u), none_weight=4)
    d_c = operand(draw, (n, u), none_weight=4) if kind == "lstm" else None
    need_dx, accumulate = draw(flags()), draw(flags())
    dkernel, drec = grads_out(draw, np.shape(kernel), 6), grads_out(draw, np.shape(recurrent), 6)
    dbias = grads_out(draw, np.shape(bias), 6) if bias is not None else None
    desc = describe_call(kind + "_backward", *args, d_outputs, d_h, d_c, need_dx, dkernel, drec, dbias, accumulate)
    note(desc)
    outs0 = [copy_arg(v) for v in (dkernel, drec, dbias)]

    def run(args, grads, outs):
        x_, k_, r_, b_, s_, m_, back, a_, ra_, sc_ = args
        extra = {} if kind == "simple_rnn" else {"recurrent_activation": ra_}
        cache = fwd(x_, k_, r_, b_, s_, m_, back, a_, recurrent_dropout_mask=sc_, return_cache=True, **extra)[-1]
        bwd = getattr(ops, kind + "_backward")
        kw = dict(need_dx=need_dx, dkernel=outs[0], drecurrent_kernel=outs[1], dbias=outs[2], accumulate=accumulate)
        if kind == "lstm":
            return bwd(cache, grads[0], grads[1], grads[2], **kw)
        return bwd(cache, grads[0], grads[1], **kw)

    def call():
        return run(args, (d_outputs, d_h, d_c), (dkernel, drec, dbias))

    def canonical_call():
        dtype = call_dtype(inputs=x, kernel=kernel, recurrent_kernel=recurrent, bias=bias, recurrent_scale=scale,
                           d_outputs=d_outputs, d_h=d_h, d_c=d_c, **state_dtype_args(kind, state))
        c = lambda v: canonical(v, dtype)  # noqa: E731
        cargs = (c(x), c(kernel), c(recurrent), c(bias), canonical_state(state, dtype), mask, go_backwards,
                 activation, ract, c(scale))
        return run(cargs, (c(d_outputs), c(d_h), c(d_c)), [copy_arg(v) for v in outs0])

    check((kind, kind + "_backward"), call,
          lambda: rnn_backward_reference(kind, args, d_outputs, d_h, d_c, need_dx, *outs0, accumulate, None),
          canonical_call, desc)


@covers("lstm_cell", "lstm_cell_backward")
@examples(0.5)
@given(st.data())
def test_lstm_cell(data):
    draw = data.draw
    n, f, u = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    x = operand(draw, (n, f))
    kernel, recurrent = operand(draw, (f, 4 * u)), operand(draw, (u, 4 * u))
    bias = operand(draw, (4 * u,), none_weight=3)
    h, c = operand(draw, (n, u)), operand(draw, (n, u))
    activation, ract = draw(rnn_activations), draw(rnn_activations)
    d_h, d_c = operand(draw, (n, u), none_weight=3), operand(draw, (n, u), none_weight=3)
    need_dx = draw(flags())
    desc = describe_call("lstm_cell", x, h, c, kernel, recurrent, bias, activation, ract, d_h, d_c, need_dx)
    note(desc)

    def run(x, h, c, kernel, recurrent, bias, d_h, d_c):
        h1, c1, cache = ops.lstm_cell(x, h, c, kernel, recurrent, bias, activation, ract, return_cache=True)
        return h1, c1, ops.lstm_cell_backward(cache, d_h, d_c, need_dx)

    def reference():
        if np.ndim(x) != 2:
            raise Invalid("inputs")
        x3 = np.asarray(x)[:, None]
        h1, c1 = rnn_forward_reference("lstm", x3, kernel, recurrent, bias, [h, c], None, False, activation, ract,
                                       None)[1:]
        grads = rnn_backward_reference("lstm", (x3, kernel, recurrent, bias, [h, c], None, False, activation, ract,
                                                None), None, d_h, d_c, need_dx, None, None, None, False, None)
        dx = grads["dx"]
        if isinstance(dx, Approx):
            dx = Approx(dx.values[:, 0], dx.dtype, dx.rtol, dx.atol)
        elif dx is not None:
            dx = lambda got: None  # noqa: E731
        return h1, c1, {"dx": dx, "kernel": grads["kernel"], "recurrent_kernel": grads["recurrent_kernel"],
                        "bias": grads["bias"], "h": grads["h0"], "c": grads["c0"]}

    def canonical_call():
        dtype = call_dtype(inputs=x, kernel=kernel, recurrent_kernel=recurrent, bias=bias, **{
            "initial_state[0]": h, "initial_state[1]": c})
        cv = lambda v: canonical(v, dtype)  # noqa: E731
        return run(cv(x), cv(h), cv(c), cv(kernel), cv(recurrent), cv(bias), cv(d_h), cv(d_c))

    check(("lstm_cell", "lstm"), lambda: run(x, h, c, kernel, recurrent, bias, d_h, d_c), reference, canonical_call,
          desc, {"inputs": ("x",), "initial_state[0]": ("h",), "initial_state[1]": ("c",)})


def embedding_reference(indices, embeddings):
    dtype = call_dtype(embeddings=embeddings)
    T = as_input(embeddings, "embeddings", dtype).astype(np.float64)
    if T.ndim != 2:
        raise Invalid("embeddings")
    ids = np.asarray(indices) if not isinstance(indices, np.ndarray) else indices
    if ids.dtype.kind not in "iub":
        raise Invalid("indices")
    with np.errstate(all="ignore"):
        ids = ids.astype(np.int64)
    if np.any((ids < 0) | (ids >= T.shape[0])):
        raise Invalid("indices")
    result_shape(ids.shape + (T.shape[1],), dtype)
    return Approx(T[ids], dtype)


def indices_for(draw, shape, vocabulary):
    r = draw(st.integers(0, 9))
    if r < 7 and vocabulary:
        values = draw(st.lists(st.integers(0, vocabulary - 1), min_size=math.prod(shape), max_size=math.prod(shape))
                      ) if math.prod(shape) <= 64 else []
        ids = np.array(values, np.int64).reshape(shape) if values or not math.prod(shape) else np.zeros(shape, int)
        dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int8, np.uint64]))
        from property_support import relayout
        return relayout(ids.astype(dtype), draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 3)))
    if r < 9:
        return draw(arrays(shape))  # floats, negative values, bools...
    return draw(st.sampled_from([None, "1", np.array([2**63, 2**64 - 1], np.uint64), np.array([-1]), [1.5],
                                 np.array([vocabulary])]))


@covers("embedding")
@given(st.data())
def test_embedding(data):
    draw = data.draw
    vocabulary, dim = draw(st.integers(0, 5)), draw(st.integers(0, 3))
    table = operand(draw, (vocabulary, dim))
    indices = indices_for(draw, draw(shapes(0, 3, huge_empty=True)), vocabulary)
    desc = describe_call("embedding", indices, table)
    note(desc)
    check(("embedding",), lambda: ops.embedding(indices, table), lambda: embedding_reference(indices, table),
          lambda: ops.embedding(indices, canonical(table, call_dtype(embeddings=table))), desc)


def embedding_backward_reference(indices, dy, vocabulary, out, accumulate):
    if isinstance(vocabulary, (bool, np.bool_)) or not is_int(vocabulary):
        raise Invalid("vocabulary")
    if not 0 <= vocabulary <= BIG:
        raise Invalid("vocabulary")
    if not isinstance(accumulate, (bool, np.bool_, int, float, np.integer, np.floating)):
        raise Invalid("accumulate")
    dtype = call_dtype(dy=dy, dtable=out)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.ndim < 1:
        raise Invalid("dy")
    dim = DY.shape[-1]
    ids = np.asarray(indices) if not isinstance(indices, np.ndarray) else indices
    if ids.dtype.kind not in "iub":
        raise Invalid("indices")
    with np.errstate(all="ignore"):
        ids = ids.astype(np.int64)
    if np.any((ids < 0) | (ids >= vocabulary)):
        raise Invalid("indices", "vocabulary")
    if DY.shape != ids.shape + (dim,):
        raise Invalid("dy")
    start = 0.0
    if out is not None:
        start = output_arg(out, "out", (vocabulary, dim), dtype)
        start = start if bool(accumulate) else 0.0
    else:
        result_shape((vocabulary, dim), dtype)
    if dim == 0:  # (an empty table of any vocabulary: no work, nothing allocated per word)
        return Approx(np.zeros((vocabulary, 0)), dtype)
    table = np.zeros((vocabulary, dim))
    scale = np.zeros((vocabulary, dim))
    np.add.at(table, ids.reshape(-1), DY.reshape(ids.size, dim))
    np.add.at(scale, ids.reshape(-1), np.abs(DY.reshape(ids.size, dim)))
    return Approx(table + start, dtype, scale=scale + np.abs(start))


@covers("embedding_backward")
@given(st.data())
def test_embedding_backward(data):
    draw = data.draw
    vocabulary, dim = draw(st.integers(0, 5)), draw(st.integers(0, 3))
    shape = draw(shapes(0, 3))
    indices = indices_for(draw, shape, vocabulary)
    dy = operand(draw, tuple(np.shape(indices)) + (dim,))
    voc_arg = vocabulary if draw(st.integers(0, 7)) else draw(st.sampled_from(
        [-1, 2.0, True, None, "3", 2**63, np.int64(vocabulary), 2**40]))
    out = grads_out(draw, (vocabulary, dim), 6)
    accumulate = draw(flags())
    desc = describe_call("embedding_backward", indices, dy, voc_arg, out, accumulate)
    note(desc)
    out0 = copy_arg(out)

    def call():
        got = ops.embedding_backward(indices, dy, voc_arg, out, accumulate)
        if out is not None:
            assert got is out
        return got

    check(("embedding_backward",), call,
          lambda: embedding_backward_reference(indices, dy, voc_arg, out0, accumulate),
          lambda: ops.embedding_backward(indices, canonical(dy, call_dtype(dy=dy, dtable=out0)), voc_arg,
                                         copy_arg(out0), accumulate), desc, {"out": ("dtable",)})


# ---------------------------------------------------------------------------------------------
# image transforms: affine_transform (and backward), flip, adjust_contrast (and backward)
# ---------------------------------------------------------------------------------------------
FILL_MODES = ("constant", "nearest", "reflect", "mirror", "wrap")


def fill_index(i, n, mode):
    """The pixel an integer tap i reads along an axis of n pixels, or -1 for fill_value."""
    if 0 <= i < n:
        return i
    if mode == "constant":
        return -1
    if mode == "nearest":
        return 0 if i < 0 else n - 1
    if mode == "wrap":
        return i % n
    if mode == "reflect":  # d c b a | a b c d | d c b a
        m = i % (2 * n)
        return m if m < n else 2 * n - 1 - m
    if n == 1:  # mirror: d c b | a b c d | c b a
        return 0
    m = i % (2 * n - 2)
    return m if m < n else 2 * n - 2 - m


def round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def warp_taps(T, h, w, interpolation, fill_mode, out_h, out_w, dtype):
    """For each image b and output pixel (y, x): None (the pixel is fill_value: a coordinate NaN
    or beyond 2**61) or the taps [(weight, (row, column) or None for fill_value)], as the kernel
    reads them (bilinear: all four, zero weights included)."""
    taps = {}
    for b in range(T.shape[0]):
        a0, a1, a2, b0, b1, b2, c0, c1 = T[b]
        for y in range(out_h):
            for x in range(out_w):
                sx, sy = a0 * x + a1 * y + a2, b0 * x + b1 * y + b2
                if c0 != 0 or c1 != 0:
                    k = c0 * x + c1 * y + 1.0
                    with np.errstate(all="ignore"):
                        sx, sy = np.float64(sx) / k, np.float64(sy) / k
                if not (abs(sx) < 2.0**61 and abs(sy) < 2.0**61):
                    taps[b, y, x] = None
                    continue

                def at(ix, iy):
                    jx, jy = fill_index(ix, w, fill_mode), fill_index(iy, h, fill_mode)
                    return None if jx < 0 or jy < 0 else (jy, jx)
                if interpolation == "nearest":
                    taps[b, y, x] = [(1.0, at(round_half_away(sx), round_half_away(sy)))]
                    continue
                fx, fy = math.floor(sx), math.floor(sy)
                wx, wy = float(np.float64(sx - fx).astype(dtype)), float(np.float64(sy - fy).astype(dtype))
                taps[b, y, x] = [((1 - wy) * (1 - wx), at(fx, fy)), ((1 - wy) * wx, at(fx + 1, fy)),
                                 (wy * (1 - wx), at(fx, fy + 1)), (wy * wx, at(fx + 1, fy + 1))]
    return taps


def warp_reference(I, T, interpolation, fill_mode, fill_value, out_h, out_w, dtype):
    """(values, Σ|terms|) of the warp of I (n, h, w, c) by the rows of T (n, 8), in float64."""
    n, h, w, c = I.shape
    out = np.zeros((n, out_h, out_w, c))
    scale = np.zeros(out.shape)
    fill = float(np.float64(fill_value).astype(dtype))
    for (b, y, x), taps in warp_taps(T, h, w, interpolation, fill_mode, out_h, out_w, dtype).items():
        if taps is None:
            out[b, y, x] = fill_value
            continue
        values = [(wt, np.full(c, fill) if at is None else I[b, at[0], at[1]]) for wt, at in taps]
        out[b, y, x] = sum(wt * v for wt, v in values)
        scale[b, y, x] = sum(abs(wt) * np.abs(v) for wt, v in values)
    return out, scale


def transform_rows(transform, n, name="transform"):
    Tr = as_input(transform, name, np.float64)
    if not (Tr.shape == (8,) or Tr.shape == (n, 8)):
        raise Invalid(name)
    if not np.all(np.isfinite(Tr)):
        raise Invalid(name)
    return np.broadcast_to(Tr, (n, 8))


def size_pair(value, name, low):
    """A (height, width) pair the binding reads with int_pair_arg: two ints, not bools."""
    try:
        pair = tuple(value)
    except TypeError:
        raise Invalid(name) from None
    if len(pair) != 2 or not all(is_int(v) for v in pair):
        raise Invalid(name)
    if not all(-(2**63) <= v <= BIG for v in pair) or min(pair) < low:
        raise Invalid(name)
    return int(pair[0]), int(pair[1])


def affine_reference(images, transform, interpolation, fill_mode, fill_value, data_format, output_size):
    if not isinstance(interpolation, str) or interpolation not in ("nearest", "bilinear"):
        raise Invalid("interpolation")
    if not isinstance(fill_mode, str) or fill_mode not in FILL_MODES:
        raise Invalid("fill_mode")
    if data_format not in (None, "channels_last"):
        raise Invalid("data_format")
    nd = np.ndim(images)
    if nd not in (3, 4):
        raise Invalid("images")
    dtype = call_dtype(images=images)  # (of the images as given: a list computes in float32)
    unbatched = nd == 3
    if unbatched:
        images = np.asarray(images)[None]
        if np.ndim(transform) == 2 and np.shape(transform)[0] == 1:
            transform = np.asarray(transform)[0]
    if isinstance(fill_value, (str, bytes)) or not isinstance(fill_value, (int, float, np.integer, np.floating,
                                                                           np.bool_)):
        raise Invalid("fill_value")
    fill_value = float(fill_value)
    I = as_input(images, "images", dtype).astype(np.float64)
    if I.ndim != 4:
        raise Invalid("images")
    n, h, w, c = I.shape
    if h < 1 or w < 1:
        raise Invalid("images")
    out_h, out_w = (h, w) if output_size is None else size_pair(output_size, "output_size", 0)
    Tr = transform_rows(transform, n)
    result_shape((n, out_h, out_w, c), dtype)
    if n * out_h * out_w > 4096:
        reject()
    out, scale = warp_reference(I, Tr, interpolation, fill_mode, fill_value, out_h, out_w, dtype)
    if unbatched:
        out, scale = out[0], scale[0]
    return Approx(out, dtype, scale=scale)


def transforms(draw, n):
    def row():
        kind = draw(st.integers(0, 9))
        if kind < 3:
            base = [1, 0, 0, 0, 1, 0, 0, 0]
        elif kind < 8:
            base = [draw(st.sampled_from([1, -1, 0.5, 2, 0.25, -0.7])), draw(st.sampled_from([0, 0.5, -1])),
                    draw(st.floats(-5, 5, width=16)), draw(st.sampled_from([0, 0.3, -1])),
                    draw(st.sampled_from([1, -1, 0.5, 2])), draw(st.floats(-5, 5, width=16)),
                    draw(st.sampled_from([0, 0, 0, 0.1, -0.2])), draw(st.sampled_from([0, 0, 0, 0.1, 0.5]))]
        else:
            base = [draw(st.sampled_from([1e300, -1e300, 2.0**61, 2.0**62, 1e18, 0, 1, np.nan, np.inf]))
                    for _ in range(8)]
        return base
    r = draw(st.integers(0, 9))
    if r < 5:
        t = np.array(row(), np.float64)
    elif r < 9:
        t = np.array([row() for _ in range(n)], np.float64)
    else:
        t = np.array(draw(st.sampled_from([[1, 0, 0, 0, 1, 0], [[1, 0, 0, 0, 1, 0, 0, 0]] * (n + 1)])), np.float64)
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.int64, object, "U8"]))
    from property_support import relayout
    return relayout(t.astype(dtype), draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 3)))


interpolations = st.sampled_from(["bilinear", "nearest", "bilinear", "cubic", None])
fill_modes = st.one_of(st.sampled_from(FILL_MODES), st.sampled_from(["Constant", None, 0]))


@covers("affine_transform")
@given(st.data())
def test_affine_transform(data):
    draw = data.draw
    images = image_input(draw, max_hw=4)
    if draw(st.integers(0, 6)) == 0 and np.ndim(images) == 4 and np.shape(images)[0]:
        images = np.asarray(images)[0]  # a single image
    n = np.shape(images)[0] if np.ndim(images) == 4 else 1
    transform = transforms(draw, n)
    interpolation, fill_mode = draw(interpolations), draw(fill_modes)
    fill_value = draw(floats(-3, 3))
    data_format = draw(st.sampled_from([None, None, "channels_last", "channels_first"]))
    output_size = draw(st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 4), st.integers(0, 4)),
                                 st.sampled_from([(2**40, 2**40), (-1, 2), (1, 2, 3), "ab", (True, 2), (2.0, 2),
                                                  [3, 3], (0, 2**62)])))
    desc = describe_call("affine_transform", images, transform, interpolation, fill_mode, fill_value, data_format,
                         output_size)
    note(desc)
    f = ops.affine_transform
    check(("affine_transform", "image_affine_transform"),
          lambda: f(images, transform, interpolation, fill_mode, fill_value, data_format, output_size),
          lambda: affine_reference(images, transform, interpolation, fill_mode, fill_value, data_format, output_size),
          lambda: f(canonical(images, call_dtype(images=images)), transform, interpolation, fill_mode, fill_value,
                    data_format, output_size), desc)


def affine_backward_reference(dy, transform, input_size, interpolation, fill_mode):
    if not isinstance(interpolation, str) or interpolation not in ("nearest", "bilinear"):
        raise Invalid("interpolation")
    if not isinstance(fill_mode, str) or fill_mode not in FILL_MODES:
        raise Invalid("fill_mode")
    if input_size is None:
        input_size = np.shape(dy)[1:3]
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, (tuple, list, np.ndarray)):
        raise Invalid("input_size")
    dtype = call_dtype(dy=dy)
    DY = as_input(dy, "dy", dtype).astype(np.float64)
    if DY.ndim != 4:
        raise Invalid("dy")
    h, w = size_pair(input_size, "input_size", 1)
    n, oh, ow, c = DY.shape
    Tr = transform_rows(transform, n)
    result_shape((n, h, w, c), dtype)
    if h * w > 64 or n * oh * ow > 1024:
        reject()
    dx, scale = np.zeros((n, h, w, c)), np.zeros((n, h, w, c))
    # the adjoint: each output gradient to the taps its value was read from, with their weights
    for (b, y, x), taps in warp_taps(Tr, h, w, interpolation, fill_mode, oh, ow, dtype).items():
        for wt, at in taps or ():
            if at is not None:
                dx[b, at[0], at[1]] += wt * DY[b, y, x]
                scale[b, at[0], at[1]] += abs(wt) * np.abs(DY[b, y, x])
    return Approx(dx, dtype, scale=scale)


@covers("affine_transform_backward")
@given(st.data())
def test_affine_transform_backward(data):
    draw = data.draw
    dy = image_input(draw, max_hw=4)
    n = np.shape(dy)[0] if np.ndim(dy) == 4 else 1
    transform = transforms(draw, n)
    interpolation, fill_mode = draw(interpolations), draw(fill_modes)
    input_size = draw(st.one_of(st.none(), st.tuples(st.integers(0, 4), st.integers(0, 4)),
                                st.sampled_from([(2**40, 2**40), 3, "ab", (1, 2, 3), (2.5, 2), [2, 2], (0, 2**62)])))
    desc = describe_call("affine_transform_backward", dy, transform, input_size, interpolation, fill_mode)
    note(desc)
    f = ops.affine_transform_backward
    check(("affine_transform_backward", "image_affine_transform_backward"),
          lambda: f(dy, transform, input_size, interpolation, fill_mode),
          lambda: affine_backward_reference(dy, transform, input_size, interpolation, fill_mode),
          lambda: f(canonical(dy, call_dtype(dy=dy)), transform, input_size, interpolation, fill_mode), desc)


def image_flags(draw, n):
    r = draw(st.integers(0, 9))
    if r < 7:
        values = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool).reshape(n)
        return draw(st.sampled_from([values, values.astype(np.int8), values.tolist(), values.astype(np.uint64)]))
    return draw(st.sampled_from([None, "yes", np.zeros(n + 1, bool), np.zeros((n, 1), bool), np.zeros(n, np.float32),
                                 True]))


def flip_reference(images, horizontal, vertical):
    dtype = call_dtype(images=images)
    I = as_input(images, "images", dtype).astype(np.float64)
    if I.ndim != 4:
        raise Invalid("images")
    n = I.shape[0]
    flags_ = []
    for name, v in (("horizontal", horizontal), ("vertical", vertical)):
        try:
            a = np.asarray(v)
        except Exception:  # noqa: BLE001
            raise Invalid(name) from None
        if a.dtype.kind not in "biu":
            raise Invalid(name)
        if a.shape != (n,):
            raise Invalid(name)
        flags_.append(a != 0)
    result_shape(I.shape, dtype)
    out = I.copy()
    for i in range(n):
        if flags_[0][i]:
            out[i] = out[i, :, ::-1]
        if flags_[1][i]:
            out[i] = out[i, ::-1]
    return Approx(out, dtype, rtol=0, atol=0)


def contrast_reference(images, factors, value_range, dy=None):
    fn = "adjust_contrast" if dy is None else "adjust_contrast_backward"
    try:
        low, high = value_range
    except (TypeError, ValueError):
        raise Invalid("value_range") from None
    for v in (low, high):
        if isinstance(v, (str, bytes)) or not isinstance(v, (int, float, np.integer, np.floating, np.bool_)):
            raise Invalid("value_range")
    low, high = float(low), float(high)
    if not low <= high:
        raise Invalid("value_range")
    dtype = call_dtype(images=images) if dy is None else call_dtype(images=images, dy=dy)
    I = as_input(images, "images", dtype).astype(np.float64)
    if I.ndim != 4:
        raise Invalid("images")
    DY = None
    if dy is not None:
        DY = as_input(dy, "dy", dtype).astype(np.float64)
        if DY.shape != I.shape:
            raise Invalid("dy")
    F = as_input(factors, "factors", dtype).astype(np.float64)
    if F.size != I.shape[0]:
        raise Invalid("factors")
    result_shape(I.shape, dtype)
    n = I.shape[0]
    F = F.reshape(n)[:, None, None, None]
    m = I.mean(axis=(1, 2), keepdims=True) if I.shape[1] * I.shape[2] else np.zeros((n, 1, 1, I.shape[3]))
    lo, hi = float(np.float64(low).astype(dtype)), float(np.float64(high).astype(dtype))
    raw = (I - m) * F + m
    if dy is None:
        return Approx(np.clip(raw, lo, hi), dtype, scale=(np.abs(I) + np.abs(m)) * (np.abs(F) + 1))
    g = np.where((raw >= lo) & (raw <= hi), DY, 0.0)
    gm = g.mean(axis=(1, 2), keepdims=True) if I.shape[1] * I.shape[2] else 0.0
    return Approx(F * g + (1 - F) * gm, dtype, scale=(np.abs(F) + 1) * (np.abs(g) + np.abs(gm)))


@covers("image.flip", "image.adjust_contrast", "image.adjust_contrast_backward")
@given(st.data(), st.sampled_from(["flip", "adjust_contrast", "adjust_contrast_backward"]))
def test_image_flip_and_contrast(data, fn):
    draw = data.draw
    images = image_input(draw, max_hw=4)
    n = np.shape(images)[0] if np.ndim(images) else 0
    f = getattr(ops.image, fn)
    if fn == "flip":
        horizontal, vertical = image_flags(draw, n), image_flags(draw, n)
        args, reference = (horizontal, vertical), lambda: flip_reference(images, horizontal, vertical)
        canonical_args = lambda: (canonical(images, call_dtype(images=images)), horizontal, vertical)  # noqa
        names = ("flip", "image_flip")
    else:
        factors = operand(draw, (n,))
        value_range = draw(st.one_of(st.just((-np.inf, np.inf)), st.tuples(floats(-4, 0), floats(0, 4)),
                                     st.sampled_from([(1, 0), (0, np.nan), 3, (0, 1, 2), ("a", 1), [0, 2]])))
        if fn == "adjust_contrast":
            args = (factors, value_range)
            reference = lambda: contrast_reference(images, factors, value_range)  # noqa: E731
            canonical_args = lambda: (canonical(images, call_dtype(images=images)), factors, value_range)  # noqa
        else:
            dy = operand(draw, np.shape(images))
            args = (dy, factors, value_range)
            reference = lambda: contrast_reference(images, factors, value_range, dy)  # noqa: E731

            def canonical_args():
                dtype = call_dtype(images=images, dy=dy)
                return canonical(images, dtype), canonical(dy, dtype), canonical(factors, dtype), value_range
        names = (fn, "image_contrast")
    desc = describe_call(fn, images, *args)
    note(desc)
    check(names, lambda: f(images, *args), reference, lambda: f(*canonical_args()), desc)


# ---------------------------------------------------------------------------------------------
# losses (fastnn.losses: the functional forms and the Loss classes' __call__; references: the
# Keras 3 formulas in float64, probabilities clipped to [1e-7, 1 - 1e-7] in y_pred's dtype)
# ---------------------------------------------------------------------------------------------
LOSS_EPS = 1e-7
LOSS_FUNCTIONS = ["mean_squared_error", "mean_absolute_error", "huber", "binary_crossentropy",
                  "categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence"]
LOSS_CLASSES = {"mean_squared_error": "MeanSquaredError", "mean_absolute_error": "MeanAbsoluteError",
                "huber": "Huber", "binary_crossentropy": "BinaryCrossentropy",
                "categorical_crossentropy": "CategoricalCrossentropy",
                "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy", "kl_divergence": "KLDivergence"}


def log_softmax(z):
    top = np.max(z, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    return z - top - np.log(np.sum(np.exp(z - top), axis=-1, keepdims=True))


def loss_rows(fn, t, x, dtype, from_logits=False, ls=0.0, delta=1.0):
    """Per-row losses (shape x.shape[:-1]) and Σ|terms| (for the tolerance), float64."""
    lo = float(np.asarray(LOSS_EPS, dtype))
    hi = float(np.asarray(1, dtype) - np.asarray(LOSS_EPS, dtype))
    if fn == "sparse_categorical_crossentropy":
        t = np.eye(x.shape[-1])[t.astype(np.int64)] if x.shape[-1] else np.zeros(x.shape)
        fn, ls = "categorical_crossentropy", 0.0
    if fn == "mean_squared_error":
        per = np.square(t - x)
        return per.mean(-1), per.sum(-1)
    if fn == "mean_absolute_error":
        per = np.abs(t - x)
        return per.mean(-1), per.sum(-1)
    if fn == "huber":
        e = np.abs(x - t)
        per = np.where(e <= delta, 0.5 * e * e, delta * e - 0.5 * delta * delta)
        return per.mean(-1), (0.5 * e * e + delta * e).sum(-1)
    if fn == "binary_crossentropy":
        t = t * (1 - ls) + 0.5 * ls if ls else t
        if from_logits:
            # (TensorFlow's stable form, as Keras' TF backend and the kernel: max(x, 0) - x·t + log(1 + e^-|x|))
            per = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
            return per.mean(-1), (np.abs(t) * np.logaddexp(0, -x) + np.abs(1 - t) * np.logaddexp(0, x)).sum(-1)
        p = np.clip(x, lo, hi)
        per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        return per.mean(-1), (np.abs(t * np.log(p)) + np.abs((1 - t) * np.log(1 - p))).sum(-1) * 4
    if fn == "categorical_crossentropy":
        t = t * (1 - ls) + ls / x.shape[-1] if ls and x.shape[-1] else t
        if from_logits:
            lsm = log_softmax(x) if x.size else x
            return -(t * lsm).sum(-1), (np.abs(t * lsm)).sum(-1) * 4
        p = np.clip(x / np.sum(x, axis=-1, keepdims=True), lo, hi)
        return -(t * np.log(p)).sum(-1), np.abs(t * np.log(p)).sum(-1) * 4
    if fn == "kl_divergence":
        yt, yp = np.clip(t, lo, 1), np.clip(x, lo, 1)
        per = yt * np.log(yt / yp)
        return per.sum(-1), np.abs(per).sum(-1) * 4
    raise AssertionError(fn)


def loss_kwargs(draw, fn):
    kw = {}
    if fn in ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        kw["from_logits"] = draw(st.sampled_from([False, True, False, 1, "yes", None]))
    if fn in ("binary_crossentropy", "categorical_crossentropy"):
        kw["label_smoothing"] = draw(floats(0, 1))
    if fn == "huber":
        kw["delta"] = draw(floats(0.1, 2))
    return kw


def loss_checks(fn, kw, reduction="sum_over_batch_size"):
    """The Loss constructor's checks, in their order: (from_logits, label_smoothing, delta)."""
    def real(name, default):
        v = kw.get(name, default)
        if isinstance(v, (str, bytes)) or not isinstance(v, (int, float, np.integer, np.floating, np.bool_)):
            raise Invalid(name)
        return float(v)
    if fn == "huber" and not real("delta", 1.0) > 0:
        raise Invalid("delta")
    if reduction not in REDUCTIONS:
        raise Invalid("reduction")
    ls, delta = real("label_smoothing", 0.0), real("delta", 1.0)
    if not 0 <= ls <= 1:
        raise Invalid("label_smoothing")
    if not isinstance(kw.get("from_logits", False), (bool, np.bool_, int, np.integer)):
        raise Invalid("from_logits")
    return bool(kw.get("from_logits", False)), ls, delta


def loss_inputs(fn, y_true, y_pred):
    """(targets or labels, predictions, dtype) as the Loss classes prepare them (Python-side checks)."""
    P = np.asarray(y_pred)
    if P.dtype.kind not in "fiub":
        raise Invalid("y_pred")
    dtype = P.dtype if P.dtype in (np.float32, np.float64) else np.dtype(fastnn.config.floatx())
    with np.errstate(all="ignore"):
        P = np.ascontiguousarray(P, dtype=dtype)  # (as _as_float: a 0-d value becomes 1-d)
    if fn == "sparse_categorical_crossentropy":
        L = np.asarray(y_true)
        if L.dtype.kind not in "iuf":
            raise Invalid("y_true")
        if L.ndim == P.ndim and L.shape[-1] == 1:
            L = L[..., 0]
        if L.shape != P.shape[:-1]:
            raise Invalid("y_true")
        return L, P, dtype
    T = np.asarray(y_true)
    if T.dtype.kind not in "fiub":
        raise Invalid("y_true")
    with np.errstate(all="ignore"):
        T = np.ascontiguousarray(T, dtype=dtype)
    if T.shape != P.shape and T.ndim == P.ndim - 1 and P.shape[-1] == 1:
        T = T[..., None]
    if T.shape != P.shape:
        raise Invalid("y_true", "y_pred")
    return T, P, dtype


def loss_kernel_checks(fn, T, P, weights=None):
    """The loss binding's checks (after the Python side): labels integral and in range."""
    if fn == "sparse_categorical_crossentropy":
        Lf = T.astype(np.float64)
        if np.any(Lf != np.floor(Lf)):
            raise Invalid("y_true")
        if np.any((Lf < 0) | (Lf >= P.shape[-1])):
            raise Invalid("y_true")
    return T.astype(np.float64), P.astype(np.float64)


def empty_classes(P):
    """Rows with an empty last (class) axis: refused, naming y_pred (no per-row loss exists)."""
    return P.ndim >= 1 and P.shape[-1] == 0 and P.size == 0 and math.prod(P.shape[:-1]) > 0


def loss_data(draw, fn):
    shape = draw(shapes(0, 3, max_elements=24, huge_empty=False))
    if fn == "sparse_categorical_crossentropy":
        classes = shape[-1] if shape else 2
        labels_shape = shape[:-1]
        if draw(st.integers(0, 9)):
            values = np.array(draw(st.lists(st.integers(0, max(classes - 1, 0)), min_size=math.prod(labels_shape),
                                            max_size=math.prod(labels_shape))), np.int64).reshape(labels_shape)
            from property_support import relayout
            y_true = relayout(values.astype(draw(st.sampled_from([np.int64, np.int32, np.float32, np.uint8]))),
                              draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 3)))
        else:
            y_true = operand(draw, labels_shape)
    else:
        y_true = operand(draw, shape)
    y_pred = draw(arrays(shape))
    if fn in ("binary_crossentropy", "kl_divergence", "categorical_crossentropy") and draw(st.booleans()):
        if isinstance(y_pred, np.ndarray) and y_pred.dtype.kind == "f" and y_pred.flags.writeable:
            y_pred = np.abs(y_pred) / 4  # probabilities, mostly
    return y_true, y_pred


def loss_function_reference(fn, y_true, y_pred, kw):
    from_logits, ls, delta = loss_checks(fn, kw)
    T, P, dtype = loss_inputs(fn, y_true, y_pred)
    if empty_classes(P):
        raise Invalid("y_pred")
    T, P = loss_kernel_checks(fn, T, P)
    rows, scale = loss_rows(fn, T, P, dtype, from_logits, ls, delta)
    eps = float(np.finfo(dtype).eps)
    return Approx(rows, dtype, rtol=256 * eps, atol=256 * eps, scale=scale)


LOSS_NAMES = {fn: (fn, LOSS_CLASSES[fn], "loss", "huber_loss") for fn in LOSS_FUNCTIONS}


@given(st.data(), st.sampled_from(LOSS_FUNCTIONS))
def test_loss_functions(data, fn):
    draw = data.draw
    y_true, y_pred = loss_data(draw, fn)
    kw = loss_kwargs(draw, fn)
    desc = describe_call(fn, y_true, y_pred, **kw)
    note(desc)
    f = getattr(losses, fn)

    def canonical_call():
        dtype = np.asarray(y_pred).dtype if np.asarray(y_pred).dtype in (np.float32, np.float64) else np.float32
        t = y_true if fn == "sparse_categorical_crossentropy" else canonical(y_true, dtype)
        return f(t, canonical(y_pred, dtype), **kw)

    check(LOSS_NAMES[fn], lambda: f(y_true, y_pred, **kw), lambda: loss_function_reference(fn, y_true, y_pred, kw),
          canonical_call, desc)


REDUCTIONS = ["sum_over_batch_size", "sum", None, "none"]


def loss_class_reference(fn, y_true, y_pred, kw, sample_weight, reduction):
    from_logits, ls, delta = loss_checks(fn, kw, reduction)
    T, P, dtype = loss_inputs(fn, y_true, y_pred)
    rows_shape = P.shape[:-1]
    w = None
    if sample_weight is not None:
        W = np.asarray(sample_weight)
        if W.dtype.kind not in "fiub":
            raise Invalid("sample_weight")
        with np.errstate(all="ignore"):
            W = W.astype(dtype)
        if W.ndim == len(rows_shape) + 1 and W.shape[-1] == 1:
            W = W[..., 0]
        if W.ndim < len(rows_shape):
            W = W.reshape(W.shape + (1,) * (len(rows_shape) - W.ndim))
        try:
            W = np.broadcast_to(W, rows_shape)
        except ValueError:
            raise Invalid("sample_weight") from None
        if not np.all(np.isfinite(W)):
            raise Invalid("sample_weight")
        w = W.astype(np.float64)
    if empty_classes(P):
        raise Invalid("y_pred")
    T, P = loss_kernel_checks(fn, T, P)
    rows, scale = loss_rows(fn, T, P, dtype, from_logits, ls, delta)
    values = rows if w is None else rows * w
    vscale = scale if w is None else scale * np.abs(w)
    eps = float(np.finfo(dtype).eps)
    tol = dict(rtol=256 * eps, atol=256 * eps)
    if reduction in (None, "none"):
        return Approx(values, dtype, scale=vscale, **tol)
    count = max(math.prod(rows_shape), 1)
    total = float(np.sum(values))
    want = total / count if reduction == "sum_over_batch_size" else total
    wscale = float(np.sum(vscale)) / (count if reduction == "sum_over_batch_size" else 1)

    def close(got):
        assert isinstance(got, float), f"a reduced loss is a float, got {type(got).__name__}"
        if math.isnan(want):
            assert math.isnan(got), f"got {got}, expected NaN"
        elif math.isinf(want):
            assert got == want, f"got {got}, expected {want}"
        else:
            assert abs(got - want) <= tol["atol"] + tol["rtol"] * (abs(want) + wscale), f"got {got}, expected {want}"
    return close


@given(st.data(), st.sampled_from(LOSS_FUNCTIONS))
def test_loss_classes(data, fn):
    """Loss(...)(y_true, y_pred, sample_weight) with each reduction."""
    draw = data.draw
    y_true, y_pred = loss_data(draw, fn)
    kw = loss_kwargs(draw, fn)
    rows_shape = np.shape(y_pred)[:-1] if np.ndim(y_pred) else ()
    sample_weight = None if draw(st.booleans()) else draw(st.one_of(
        st.builds(lambda: None), st.just(None),
        st.sampled_from([2.0, np.nan, "w", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]))) if draw(st.integers(0, 5)) == 0 \
        else operand(draw, rows_shape)
    reduction = draw(st.sampled_from(REDUCTIONS + ["mean"]))
    desc = describe_call(LOSS_CLASSES[fn], y_true, y_pred, sample_weight, reduction=reduction, **kw)
    note(desc)
    cls = getattr(losses, LOSS_CLASSES[fn])
    check(LOSS_NAMES[fn], lambda: cls(reduction=reduction, **kw)(y_true, y_pred, sample_weight),
          lambda: loss_class_reference(fn, y_true, y_pred, kw, sample_weight, reduction), None, desc)


# ---------------------------------------------------------------------------------------------
# optimizer kernels (fastnn.ops.optim: updates in place; references: the documented formulas)
# ---------------------------------------------------------------------------------------------
def params_like(draw, n, dtype, state=False):
    """A parameter or state buffer: most often a fresh C-contiguous array of `dtype` with n values."""
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1)]))
    values = np.abs(draw(float_values((n,)))) if state else draw(float_values((n,)))
    arr = values.reshape(shape).astype(dtype)
    r = draw(st.integers(0, 19))
    if r == 0:
        return arr.astype(np.float32 if dtype == np.float64 else np.float64)
    if r == 1:
        arr.flags.writeable = False
    if r == 2:
        return np.zeros(n + 1, dtype)
    if r == 3:
        return values.tolist()
    if r == 4 and n > 1:
        return np.repeat(arr.reshape(-1), 2)[::2]
    return arr


def inplace(value, name, n, dtype):
    """An in-place buffer (inout_array): ndarray of exactly `dtype`, n values, C order, writeable."""
    return inout_arg(value, name, n, dtype)


def optim_w(w, name="w"):
    """with_params: w an ndarray of float32/float64 (the dtype of the call)."""
    if not isinstance(w, np.ndarray):
        raise Invalid(name)
    if w.dtype.kind != "f" or w.dtype.itemsize not in (4, 8):
        raise Invalid(name)
    return np.dtype(np.float32 if w.dtype.itemsize == 4 else np.float64)


def optim_buffers(w, g):
    """Buffers(w, g): (dtype, W, G): w in place, g an input of w's size."""
    dtype = optim_w(w)
    W = inplace(w, "w", w.size, dtype)
    call_dtype(w=w, g=g)
    G = as_input(g, "g", dtype).astype(np.float64)
    if G.size != W.size:
        raise Invalid("g")
    return dtype, W.reshape(-1), G.reshape(-1)


OPTIMIZERS = ["sgd_update", "adagrad_update", "rmsprop_update", "adadelta_update", "adam_update", "nadam_update"]


# The updates' documented scalar ranges, checked in this order before the kernel runs:
# (low, high, low excluded, high excluded); step is an int >= 1.
HYPER_RANGES = {"learning_rate": (0, None, False, False), "epsilon": (0, None, True, False),
                "weight_decay": (0, None, False, False), "rho": (0, 1, False, False),
                "momentum": (0, 1, False, False), "beta_1": (0, 1, False, True), "beta_2": (0, 1, False, True),
                "u_product_t": (0, 1, False, True), "u_product_t1": (0, 1, False, True)}


def hyper_checks(hp):
    """Invalid naming the first scalar out of its documented range (not a bool, finite)."""
    if "step" in hp:
        step = hp["step"]
        if not is_int(step) or step < 1:
            raise Invalid("step")
    for name, (low, high, low_open, high_open) in HYPER_RANGES.items():
        if name not in hp:
            continue
        v = hp[name]
        if isinstance(v, (bool, np.bool_)) or not is_real(v):
            raise Invalid(name)
        v = float(v)
        if not math.isfinite(v) or (v <= low if low_open else v < low) or \
                (high is not None and (v >= high if high_open else v > high)):
            raise Invalid(name)
    if "nesterov" in hp:
        flag_arg(hp["nesterov"], "nesterov")


def optimizer_reference(fn, w, g, states, hp):
    """The expected w and state buffers after one step (float64), or Invalid."""
    hyper_checks(hp)
    dtype, W, G = optim_buffers(w, g)
    n = W.size
    S = {}
    for name, v in states.items():
        if v is None:
            if (fn, name) in (("adagrad_update", "acc"), ("rmsprop_update", "v"), ("adadelta_update", "acc_g"),
                              ("adadelta_update", "acc_delta"), ("adam_update", "m"), ("adam_update", "v"),
                              ("nadam_update", "m"), ("nadam_update", "v")):
                raise Invalid(name, "acc_d" if name == "acc_delta" else name)
            S[name] = None
            continue
        S[name] = inplace(v, "acc_d" if name == "acc_delta" else name, n, dtype).reshape(-1)
    hp = {k: (bool(v) if k == "nesterov" else float(v)) for k, v in hp.items()}
    T = lambda v: float(np.asarray(v, dtype))  # noqa: E731 - the kernel's scalars are rounded to its dtype
    lr = hp.get("learning_rate", 0.0)
    with np.errstate(all="ignore"):
        if fn == "sgd_update":
            if S["m"] is None:
                return {"w": W - T(lr) * G}
            mu = T(hp["momentum"])
            m = mu * S["m"] - T(lr) * G
            step = mu * m - T(lr) * G if hp["nesterov"] else m
            return {"w": W + step, "m": m}
        if fn == "adagrad_update":
            acc = S["acc"] + G * G
            return {"w": W - T(lr) * G / np.sqrt(acc + T(hp["epsilon"])), "acc": acc}
        if fn == "rmsprop_update":
            rho = T(hp["rho"])
            v = rho * S["v"] + (1 - rho) * G * G
            out = {"v": v}
            denom = v
            if S["mean_g"] is not None:
                mg = rho * S["mean_g"] + (1 - rho) * G
                out["mean_g"] = mg
                denom = v - mg * mg
            stp = T(lr) * G / np.sqrt(denom + T(hp["epsilon"]))
            if S["m"] is not None:
                m = T(hp["momentum"]) * S["m"] + stp
                out["m"], out["w"] = m, W - m
            else:
                out["w"] = W - stp
            return out
        if fn == "adadelta_update":
            rho, eps = T(hp["rho"]), T(hp["epsilon"])
            ag = rho * S["acc_g"] + (1 - rho) * G * G
            d = -np.sqrt(S["acc_delta"] + eps) / np.sqrt(ag + eps) * G
            return {"acc_g": ag, "acc_delta": rho * S["acc_delta"] + (1 - rho) * d * d, "w": W + T(lr) * d}
        b1, b2, eps, t = hp["beta_1"], hp["beta_2"], hp["epsilon"], hp["step"]
        m = S["m"] + (G - S["m"]) * (1 - T(b1))
        v = S["v"] + (G * G - S["v"]) * (1 - T(b2))
        decay = T(1 - lr * hp.get("weight_decay", 0.0))
        out = {"m": m, "v": v}
        if fn == "adam_update":
            alpha = T(np.float64(lr) * np.sqrt(np.float64(1) - np.float64(b2) ** t) / (np.float64(1) - np.float64(b1) ** t))
            vv = v
            if S["v_max"] is not None:
                vv = np.maximum(S["v_max"], v)
                out["v_max"] = vv
            out["w"] = W * decay - alpha * m / (np.sqrt(vv) + T(eps))
            return out
        b1, b2 = np.float64(b1), np.float64(b2)
        u_t, u_t1 = b1 * (1 - 0.5 * 0.96 ** t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        c_m = T(u_t1 / (1 - np.float64(hp["u_product_t1"])))
        c_g = T((1 - u_t) / (1 - np.float64(hp["u_product_t"])))
        c_v = T(1 / (1 - b2 ** t))
        out["w"] = W * decay - T(lr) * (c_m * m + c_g * G) / (np.sqrt(c_v * v) + T(eps))
        return out


OPTIM_STATES = {"sgd_update": ["m"], "adagrad_update": ["acc"], "rmsprop_update": ["v", "mean_g", "m"],
                "adadelta_update": ["acc_g", "acc_delta"], "adam_update": ["m", "v", "v_max"],
                "nadam_update": ["m", "v"]}


def optimizer_hparams(draw, fn):
    lr = draw(floats(0, 0.5))
    if fn == "sgd_update":
        return {"learning_rate": lr, "momentum": draw(floats(0, 1)), "nesterov": draw(flags())}
    if fn == "adagrad_update":
        return {"learning_rate": lr, "epsilon": draw(floats(1e-7, 1e-3))}
    if fn == "rmsprop_update":
        return {"learning_rate": lr, "rho": draw(floats(0, 1)), "momentum": draw(floats(0, 1)),
                "epsilon": draw(floats(1e-7, 1e-3))}
    if fn == "adadelta_update":
        return {"learning_rate": lr, "rho": draw(floats(0, 1)), "epsilon": draw(floats(1e-7, 1e-3))}
    hp = {"learning_rate": lr, "beta_1": draw(floats(0, 0.99)), "beta_2": draw(floats(0, 0.999)),
          "epsilon": draw(floats(1e-7, 1e-3)), "weight_decay": draw(floats(0, 0.1)),
          "step": draw(st.one_of(st.integers(1, 10), st.sampled_from([0, -1, 2.5, True, 1.0, 2**40, None, "3"])))}
    if fn == "nadam_update":
        t = hp["step"] if isinstance(hp["step"], int) and 1 <= hp["step"] <= 10 else 1
        b1 = hp["beta_1"] if isinstance(hp["beta_1"], float) and 0 <= hp["beta_1"] <= 0.99 else 0.9
        prod = 1.0
        for i in range(1, t + 1):
            prod *= b1 * (1 - 0.5 * 0.96 ** i)
        hp["u_product_t"], hp["u_product_t1"] = prod, prod * b1 * (1 - 0.5 * 0.96 ** (t + 1))
    return hp


@covers(*OPTIMIZERS)
@given(st.data(), st.sampled_from(OPTIMIZERS))
def test_optimizer_updates(data, fn):
    draw = data.draw
    n = draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    w = params_like(draw, n, dtype)
    g = draw(arrays((n,))) if draw(st.integers(0, 4)) else draw(arrays(perturbed(draw, (n,), 2)))
    states = {name: (None if draw(st.integers(0, 5)) == 0 else params_like(draw, n, dtype, state=True))
              for name in OPTIM_STATES[fn]}
    hp = optimizer_hparams(draw, fn)
    desc = describe_call(fn, w, g, **states, **hp)
    note(desc)
    before = {"w": copy_arg(w), **{k: copy_arg(v) for k, v in states.items()}}
    f = getattr(ops, fn)

    def run(w, g, states):
        args = [w, g] + [states[k] for k in OPTIM_STATES[fn] if k not in ("v_max",)]
        kwargs = {k: v for k, v in hp.items()}
        if fn == "adam_update":
            kwargs["v_max"] = states["v_max"]
            step = kwargs.pop("step")
            result = f(*args, step, **kwargs)
        elif fn == "nadam_update":
            step, ut, ut1 = kwargs.pop("step"), kwargs.pop("u_product_t"), kwargs.pop("u_product_t1")
            result = f(*args, step, ut, ut1, **kwargs)
        elif fn == "rmsprop_update":
            result = f(w, g, states["v"], states["mean_g"], states["m"], **kwargs)
        else:
            result = f(*args, **kwargs)
        assert result is None
        return {"w": w, **{k: v for k, v in states.items() if v is not None}}

    def reference():
        want = optimizer_reference(fn, before["w"], g, {k: before[k] for k in states}, hp)
        dtype_ = np.asarray(before["w"]).dtype
        eps = float(np.finfo(dtype_).eps)
        out = {}
        for k in ["w"] + [k for k in states if states[k] is not None]:
            shape = np.shape(before[k])
            out[k] = Approx(want.get(k, np.asarray(before[k], np.float64).reshape(-1)).reshape(shape), dtype_,
                            rtol=1024 * eps, atol=1024 * eps)
        return out

    def canonical_call():
        w1 = copy_arg(before["w"])
        return run(w1, canonical(g, np.asarray(w1).dtype), {k: copy_arg(v) for k, v in before.items() if k != "w"})

    check((fn,), lambda: run(w, g, states), reference, canonical_call, desc,
          {"acc_delta": ("acc_d",), "learning_rate": ("lr",)})


def segments(draw, n):
    """Offsets of segments within n values: increasing from 0 to n most often, or not."""
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=0, max_size=3)))
    offsets = [0] + cuts + [n]
    r = draw(st.integers(0, 12))
    if r == 0:
        offsets = offsets[::-1]
    elif r == 1:
        offsets = offsets + [n + 1]
    elif r == 2:
        return np.array([-1] + offsets, np.int64)
    elif r == 3:
        return draw(st.sampled_from([np.array(offsets, np.float64) + 0.5, [0.0, float(n)], "ab", None, [],
                                     np.array([offsets]), np.array(offsets, np.uint64)]))
    return np.array(offsets, draw(st.sampled_from([np.int64, np.int64, np.int32, np.uint8])))


def vector_arg(values, dtype, name, kinds):
    """An array as the segment helpers read offsets, l1, l2 and factors: np.asarray of the
    value, of a kind in `kinds` ("iu" integers, "biuf" reals: never fractions, complex numbers,
    strings or objects) and 1-D, cast to `dtype`; Invalid(name) otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(values)
    except (ValueError, TypeError):
        raise Invalid(name) from None
    if arr.dtype.kind not in kinds or arr.ndim != 1:
        raise Invalid(name)
    with np.errstate(all="ignore"):
        return arr.astype(dtype)


def real_factors(values, name="factors"):
    return vector_arg(values, np.float64, name, "biuf")


def offsets_arg(offsets, name, fn):
    return vector_arg(offsets, np.int64, name, "iu")


@covers("clip_by_value", "ema_update", "sum_squares", "scale_segments", "l1_l2_regularize")
@given(st.data(), st.sampled_from(["clip_by_value", "ema_update", "sum_squares", "scale_segments",
                                   "l1_l2_regularize"]))
def test_optimizer_helpers(data, fn):
    draw = data.draw
    n = draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    g = params_like(draw, n, dtype)
    f = getattr(ops, fn)
    eps = float(np.finfo(dtype).eps)
    tol = dict(rtol=64 * eps, atol=64 * eps)
    g0 = copy_arg(g)
    if fn == "clip_by_value":
        c = draw(floats(0, 3))
        args = (g, c)

        def reference():
            if isinstance(c, (bool, np.bool_)) or not is_real(c) or not (math.isfinite(float(c)) and float(c) > 0):
                raise Invalid("clipvalue")  # (checked first, by the Python function: bools refused)
            d = optim_w(g0, "g")
            G = inplace(g0, "g", np.size(g0), d)
            # The kernels run with subnormals flushed to zero (FTZ/DAZ, DESIGN: recurrent backward
            # passes are ~10x slower without): a subnormal clipvalue or value of g counts as 0.
            tiny = np.finfo(d).tiny
            lim = float(np.asarray(float(c), d))
            lim = 0.0 if lim < tiny else lim
            G = np.where(np.abs(G) < tiny, 0.0, G)
            return Approx(np.clip(G, -lim, lim), d, rtol=0, atol=0)
        call, outs = (lambda: (f(g, c), g)[1]), None
    elif fn == "ema_update":
        w = draw(arrays((n,))) if draw(st.integers(0, 4)) else draw(arrays(perturbed(draw, (n,), 2)))
        m = draw(floats(0, 1))
        args = (g, w, m)

        def reference():
            hyper_checks({"momentum": m})  # (by the Python function, first: bools refused)
            mom = float(m)
            d = optim_w(g0, "ema")
            E = inplace(g0, "ema", np.size(g0), d)
            call_dtype(ema=g0, w=w)
            W = as_input(w, "w", d).astype(np.float64)
            if W.size != E.size:
                raise Invalid("w")
            mu = float(np.asarray(mom, d))
            eps_d = float(np.finfo(d).eps)
            return Approx(mu * E + (1 - mu) * W.reshape(E.shape), d, rtol=64 * eps_d, atol=64 * eps_d)
        call = lambda: (f(g, w, m), g)[1]  # noqa: E731
    elif fn == "sum_squares":
        offsets = segments(draw, n)
        args = (g, offsets)

        def reference():
            off = offsets_arg(offsets, "offsets", fn)
            if off.ndim != 1 or off.size < 1:
                raise Invalid("offsets")
            d = optim_w(g0, "g")
            G = as_input(g0, "g", d).astype(np.float64).reshape(-1)
            for s_ in range(off.size - 1):
                if off[s_] < 0 or off[s_] > off[s_ + 1] or off[s_ + 1] > G.size:
                    raise Invalid("offsets")
            return Approx(np.array([np.sum(G[off[i]:off[i + 1]] ** 2) for i in range(off.size - 1)]), np.float64,
                          rtol=1e-14, atol=1e-300)
        call = lambda: f(g, offsets)  # noqa: E731
    elif fn == "scale_segments":
        offsets = segments(draw, n)
        k = max(np.size(offsets) - 1, 0) if isinstance(offsets, np.ndarray) else 1
        factors = draw(arrays(perturbed(draw, (k,), 10)))
        args = (g, offsets, factors)

        def reference():
            off = offsets_arg(offsets, "offsets", fn)
            F = real_factors(factors)
            if off.size != F.size + 1:
                raise Invalid("offsets", "factors")
            F = F.astype(np.float64).reshape(-1)
            d = optim_w(g0, "g")
            G = inplace(g0, "g", np.size(g0), d).reshape(-1)
            out = G.copy()
            flat = off.reshape(-1)
            for s_ in range(F.size):
                if flat[s_] < 0 or flat[s_] > flat[s_ + 1] or flat[s_ + 1] > G.size:
                    raise Invalid("offsets")
            for s_ in range(F.size):
                if F[s_] != 1.0:
                    out[flat[s_]:flat[s_ + 1]] = G[flat[s_]:flat[s_ + 1]] * float(np.asarray(F[s_], d))
            eps_d = float(np.finfo(d).eps)
            return Approx(out.reshape(np.shape(g0)), d, rtol=64 * eps_d, atol=64 * eps_d)
        call = lambda: (f(g, offsets, factors), g)[1]  # noqa: E731
    else:  # l1_l2_regularize(w, g, offsets, l1, l2)
        w = g
        grad = params_like(draw, n, dtype)
        offsets = segments(draw, n)
        k = max(np.size(offsets) - 1, 0) if isinstance(offsets, np.ndarray) else 1
        l1, l2 = draw(arrays(perturbed(draw, (k,), 10))), draw(arrays(perturbed(draw, (k,), 10)))
        args = (w, grad, offsets, l1, l2)
        grad0 = copy_arg(grad)

        def reference():
            off = offsets_arg(offsets, "offsets", fn)
            L1, L2 = real_factors(l1, "l1"), real_factors(l2, "l2")
            if off.ndim != 1 or L1.size + 1 != off.size or L2.size != L1.size:
                raise Invalid("offsets", "l1", "l2")
            L1, L2 = L1.astype(np.float64).reshape(-1), L2.astype(np.float64).reshape(-1)
            d = optim_w(w, "w")
            W = as_input(w, "w", d).astype(np.float64).reshape(-1)
            call_dtype(w=w, g=grad0)
            for s_ in range(L1.size):
                if off[s_] < 0 or off[s_] > off[s_ + 1] or off[s_ + 1] > W.size:
                    raise Invalid("offsets")
            G = inplace(grad0, "g", W.size, d).reshape(-1)
            out, penalty, scale = G.copy(), 0.0, 0.0
            for s_ in range(L1.size):
                if (L1[s_] == 0 and L2[s_] == 0) or off[s_] == off[s_ + 1]:  # (nothing to add: 0)
                    continue
                seg = W[off[s_]:off[s_ + 1]]
                a1, a2 = float(np.asarray(L1[s_], d)), float(np.asarray(2 * L2[s_], d))
                out[off[s_]:off[s_ + 1]] += a1 * np.sign(seg) + a2 * seg
                penalty += a1 * np.sum(np.abs(seg)) + 0.5 * a2 * np.sum(seg * seg)
                scale += abs(a1) * np.sum(np.abs(seg)) + 0.5 * abs(a2) * np.sum(seg * seg)

            def close(got):
                assert isinstance(got, float), repr(got)
                if math.isnan(penalty):
                    assert math.isnan(got)
                else:
                    assert got == penalty or abs(got - penalty) <= 1e-12 * (scale + 1e-300) + 64 * eps * scale, \
                        (got, penalty)
            eps_d = float(np.finfo(d).eps)
            return close, Approx(out.reshape(np.shape(grad0)), d, rtol=64 * eps_d, atol=64 * eps_d)
        call = lambda: (f(*args), grad)  # noqa: E731
    desc = describe_call(fn, *args)
    note(desc)
    check((fn, "regularize"), call, reference, None, desc)


# ---------------------------------------------------------------------------------------------
# the NumPy-like maths: NumPy itself is the reference (same dtype, shape and bits, or the same
# kind of error); softmax, sigmoid and the like against their formulas. Each is also called on
# an autodiff.Tensor, whose value must be the same.
# ---------------------------------------------------------------------------------------------
from fastnn import autodiff  # noqa: E402

MATH_UNARY = {"abs": np.abs, "absolute": np.abs, "negative": np.negative, "square": np.square, "sqrt": np.sqrt,
              "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh, "sin": np.sin,
              "cos": np.cos, "stop_gradient": np.array, "convert_to_numpy": np.asarray,
              "relu": lambda v: np.maximum(v, 0)}
MATH_BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
               "power": np.power, "maximum": np.maximum, "minimum": np.minimum, "equal": np.equal,
               "not_equal": np.not_equal, "greater": np.greater, "greater_equal": np.greater_equal, "less": np.less,
               "less_equal": np.less_equal}
MATH_REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}
TRACEABLE = set(MATH_UNARY) - {"stop_gradient", "convert_to_numpy"} | set(MATH_BINARY) | set(MATH_REDUCE) | {
    "reshape", "expand_dims", "squeeze", "transpose", "concatenate", "stack", "take_index", "cast", "where", "clip",
    "sigmoid", "softplus", "softmax", "log_softmax", "logsumexp"}


def numpy_oracle(name, call, reference, desc):
    """call() gives what reference() (NumPy) gives, bit for bit, or raises an error of the same kind."""
    try:
        with np.errstate(all="ignore"):
            want = reference()
        numpy_error = None
    except Exception as exc:  # noqa: BLE001
        numpy_error = exc
    try:
        with np.errstate(all="ignore"):
            got = guard_call(call, desc)
    except Exception as exc:  # noqa: BLE001
        assert numpy_error is not None, f"{name}: {type(exc).__name__}: {exc} where NumPy gives {want!r}"
        same_kind = isinstance(exc, type(numpy_error)) or (
            isinstance(numpy_error, (ValueError, TypeError)) and isinstance(exc, (ValueError, TypeError)))
        assert same_kind, f"{name}: {type(exc).__name__}: {exc}, where NumPy raises {type(numpy_error).__name__}: " \
                          f"{numpy_error}"
        return None
    assert numpy_error is None, f"{name}: a result {got!r} where NumPy raises {type(numpy_error).__name__}: " \
                                f"{numpy_error}"
    if isinstance(want, Approx) or callable(want):
        assert_matches(got, want)
        return got
    # (a 0-d array for NumPy's scalar is the same answer: fastnn's maths take np.asarray first)
    same_type = type(got) is type(want) or (isinstance(got, np.ndarray) and isinstance(want, (np.ndarray, np.generic)))
    assert same_type, f"{name}: {type(got).__name__}, NumPy gives {type(want).__name__}"
    if isinstance(want, (np.ndarray, np.generic)):
        g, w = np.asarray(got), np.asarray(want)
        assert g.dtype == w.dtype and g.shape == w.shape, f"{name}: {g.dtype}{g.shape}, NumPy: {w.dtype}{w.shape}"
        assert same_values(g, w), f"{name}: {g!r}, NumPy: {w!r}"
    else:
        assert got == want, f"{name}: {got!r}, NumPy: {want!r}"
    return got


def same_values(g, w):
    """Equal arrays: the same bytes; long doubles (whose padding bytes are garbage) and objects by value."""
    if w.dtype.kind == "O":
        return all(a is b or a == b or (a != a and b != b) for a, b in zip(g.ravel(), w.ravel()))
    if w.dtype.kind in "fc" and w.dtype.itemsize > 8 * (2 if w.dtype.kind == "c" else 1):
        parts = (lambda a: (a.real, a.imag)) if w.dtype.kind == "c" else (lambda a: (a,))
        return all(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
                   for a, b in zip(parts(g), parts(w)))
    return g.tobytes() == w.tobytes()


def guard_call(call, desc):
    from property_support import guarded
    return guarded(call, desc)


def traced_value(name, call_on_tensor, want_value, desc):
    """The same function on an autodiff.Tensor: a Tensor (or an array) holding the same value."""
    got = guard_call(call_on_tensor, desc + " [traced]")
    value = got.value if isinstance(got, autodiff.Tensor) else np.asarray(got)
    want = np.asarray(want_value)
    assert value.shape == want.shape and value.dtype == want.dtype, f"{name} traced: {value.dtype}{value.shape}, " \
                                                                    f"untraced: {want.dtype}{want.shape}"
    assert same_values(value, want), f"{name} traced: {value!r}, untraced: {want!r}"


def math_operand(draw, shape=None):
    if shape is None:
        shape = draw(shapes(0, 3, max_elements=24))
    r = draw(st.integers(0, 12))
    if r == 0:
        return draw(st.sampled_from([3, -2.5, True, np.float32(1.5), np.int8(-3), [1, 2], [[1.0], [2.0]], "ab",
                                     None, 1j]))
    return draw(arrays(shape))


axes_values = st.one_of(st.none(), st.integers(-4, 3), st.tuples(st.integers(-3, 2), st.integers(-3, 2)),
                        st.sampled_from([(), [0, 1], True, 1.0, "0", np.int64(-1), 2**63, (0, 0)]))


@covers(*MATH_UNARY)
@given(st.data(), st.sampled_from(sorted(MATH_UNARY)))
def test_math_unary(data, name):
    draw = data.draw
    x = math_operand(draw)
    desc = describe_call(name, x)
    note(desc)
    f = getattr(ops, name)
    got = numpy_oracle(name, lambda: f(x), lambda: MATH_UNARY[name](x), desc)
    if got is not None and name in TRACEABLE and isinstance(x, np.ndarray) and x.dtype.kind == "f":
        traced_value(name, lambda: f(autodiff.Tensor(x)), got, desc)


@covers(*MATH_BINARY)
@given(st.data(), st.sampled_from(sorted(MATH_BINARY)))
def test_math_binary(data, name):
    draw = data.draw
    a = math_operand(draw)
    b_shape = draw(st.sampled_from([np.shape(a), np.shape(a)[1:], (1,) + np.shape(a)[1:], (), (3,)]))
    b = math_operand(draw, b_shape)
    desc = describe_call(name, a, b)
    note(desc)
    f = getattr(ops, name)
    got = numpy_oracle(name, lambda: f(a, b), lambda: MATH_BINARY[name](a, b), desc)
    if got is not None and isinstance(a, np.ndarray) and a.dtype.kind == "f":
        traced_value(name, lambda: f(autodiff.Tensor(a), b), got, desc)


@covers(*MATH_REDUCE, "argmax")
@given(st.data(), st.sampled_from(sorted(MATH_REDUCE) + ["argmax"]))
def test_math_reductions(data, name):
    draw = data.draw
    x = math_operand(draw)
    axis = draw(axes_values)
    keepdims = draw(st.sampled_from([False, True, False, 1, None]))
    f = getattr(ops, name)
    if name == "argmax":
        desc = describe_call(name, x, axis)
        note(desc)
        numpy_oracle(name, lambda: f(x, axis), lambda: np.argmax(x, axis=axis), desc)
        return
    desc = describe_call(name, x, axis, keepdims)
    note(desc)
    # (on np.asarray(x), as fastnn's maths take it: NumPy calls a Python object's own method of that name,
    # e.g. datetime.max, which is not callable)
    got = numpy_oracle(name, lambda: f(x, axis, keepdims),
                       lambda: MATH_REDUCE[name](np.asarray(x), axis=axis, keepdims=keepdims), desc)
    if got is not None and isinstance(x, np.ndarray) and x.dtype.kind == "f":
        traced_value(name, lambda: f(autodiff.Tensor(x), axis, keepdims), got, desc)


def float_result_dtype(x):
    """The dtype NumPy's exp gives for x's dtype (None: not a number NumPy computes with)."""
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        return None
    return np.exp(np.zeros(1, a.dtype)).dtype


def smooth_reference(name, x, axis=-1, keepdims=False):
    """softmax, log_softmax, logsumexp, sigmoid, softplus of x in float64, rounded to NumPy's dtype."""
    dtype = float_result_dtype(x)
    if dtype is None:
        return lambda got: None  # (bool, complex, strings...: a result or a ValueError/TypeError)
    v = np.asarray(x, np.float64)
    if name == "sigmoid":
        return Approx(sigmoid(v), dtype)
    if name == "softplus":
        return Approx(np.logaddexp(v, 0), dtype, scale=np.abs(v))
    ax = axis
    if v.size == 0:
        shape = np.sum(np.zeros(v.shape, bool), axis=ax, keepdims=True).shape
        if name == "logsumexp":  # log Σ over nothing: -inf
            out = np.full(shape, -np.inf)
            return Approx(out if keepdims else np.squeeze(out, axis=ax), dtype)
        return Approx(np.zeros(v.shape), dtype)
    top = np.max(v, axis=ax, keepdims=True)
    with np.errstate(all="ignore"):
        if name == "logsumexp":
            total = np.sum(np.exp(v - top), axis=ax, keepdims=True)
            out = top + np.log(total)
            out = out if keepdims else np.squeeze(out, axis=ax)
            return Approx(out, dtype, scale=np.abs(out))
        shifted = v - top
        total = np.sum(np.exp(shifted), axis=ax, keepdims=True)
        if name == "softmax":
            return Approx(np.exp(shifted) / total, dtype)
        return Approx(shifted - np.log(total), dtype, scale=np.abs(shifted) + 1)


@covers("sigmoid", "softplus", "softmax", "log_softmax", "logsumexp")
@given(st.data(), st.sampled_from(["sigmoid", "softplus", "softmax", "log_softmax", "logsumexp"]))
def test_math_smooth(data, name):
    draw = data.draw
    x = math_operand(draw)
    f = getattr(ops, name)
    if name in ("sigmoid", "softplus"):
        args, desc = (x,), describe_call(name, x)
    elif name == "logsumexp":
        args = (x, draw(axes_values), draw(st.sampled_from([False, True])))
        desc = describe_call(name, *args)
    else:
        args = (x, draw(st.one_of(st.just(-1), axes_values)))
        desc = describe_call(name, *args)
    note(desc)

    def reference():
        a = np.asarray(x)
        if name not in ("sigmoid", "softplus"):
            np.sum(np.zeros(a.shape, bool), axis=args[1])  # NumPy's errors for a bad axis
        return smooth_reference(name, x, *args[1:])

    want_fn = reference
    if float_result_dtype(x) is None:  # not a real number: any float result, or an error
        try:
            guard_call(lambda: f(*args), desc)
        except (ValueError, TypeError, OverflowError):
            return
        return
    got = numpy_oracle(name, lambda: f(*args), want_fn, desc)
    if got is not None and isinstance(x, np.ndarray) and x.dtype.kind == "f":
        traced_value(name, lambda: f(autodiff.Tensor(x), *args[1:]), got, desc)


DTYPE_ARGS = st.sampled_from([None, "float32", "float64", "int8", "bool", np.float16, "uint64", "complex64", "U3",
                              object, "nope", 3])


@covers("reshape", "expand_dims", "squeeze", "transpose", "take_index", "cast", "zeros_like", "ones_like", "clip",
        "where", "concatenate", "stack")
@given(st.data(), st.sampled_from(["reshape", "expand_dims", "squeeze", "transpose", "take_index", "cast",
                                   "zeros_like", "ones_like", "clip", "where", "concatenate", "stack"]))
def test_math_shapes(data, name):
    draw = data.draw
    x = math_operand(draw)
    nd, shape = np.ndim(x), np.shape(x)
    f = getattr(ops, name)
    if name == "reshape":
        size = math.prod(shape)
        arg = draw(st.sampled_from([(size,), (-1,), (1, -1), (size, 1), (-1, -1), (size + 1,), (), 3, "ab", (2.0,)]))
        numpy_fn = lambda: np.reshape(x, arg)  # noqa: E731
    elif name in ("expand_dims", "squeeze"):
        arg = draw(st.one_of(st.integers(-nd - 2, nd + 1), st.sampled_from([None, (0, 1), 1.0, True, "0", 2**63])))
        if name == "expand_dims" and arg is None:
            arg = 0
        numpy_fn = lambda: getattr(np, name)(x, arg)  # noqa: E731
    elif name == "transpose":
        perm = list(draw(st.permutations(range(nd))))
        arg = draw(st.sampled_from([None, tuple(perm), perm[::-1] + [0], tuple(perm[:-1]), "ab"]))
        numpy_fn = lambda: np.transpose(x, arg)  # noqa: E731
    elif name == "take_index":
        arg = draw(st.sampled_from([0, -1, slice(None, None, -1), (Ellipsis, 0), np.array([0, 0]), None, 5,
                                    np.array([True]), (0, 0, 0, 0), "a", 2**63]))
        numpy_fn = lambda: np.asarray(x)[arg]  # noqa: E731
    elif name == "cast":
        arg = draw(DTYPE_ARGS)
        numpy_fn = lambda: np.asarray(x).astype(arg)  # noqa: E731
    elif name in ("zeros_like", "ones_like"):
        arg = draw(DTYPE_ARGS)
        numpy_fn = lambda: getattr(np, name)(np.asarray(x), dtype=arg)  # noqa: E731
    elif name == "clip":
        lo, hi = draw(st.sampled_from([(-1, 1), (0, 0), (1, -1), (np.nan, 1), (None, 2), (-np.inf, np.inf), ("a", 1)]))
        arg = (lo, hi)
        numpy_fn = lambda: np.clip(x, lo, hi)  # noqa: E731
    elif name == "where":
        cond = draw(arrays(draw(st.sampled_from([shape, shape[1:], ()]))))
        other = math_operand(draw, draw(st.sampled_from([shape, (), shape[1:]])))
        arg = (cond, other)
        numpy_fn = lambda: np.where(cond, x, other)  # noqa: E731
    else:  # concatenate, stack
        others = [math_operand(draw, draw(st.sampled_from([shape, shape, shape[1:], (1,) + shape[1:]])))
                  for _ in range(draw(st.integers(0, 2)))]
        xs = draw(st.sampled_from([[x] + others, tuple([x] + others), []]))
        arg = draw(st.one_of(st.integers(-nd - 1, nd), st.sampled_from([None, 1.0, "0"])))
        numpy_fn = lambda: getattr(np, name)([np.asarray(v) for v in xs], axis=arg)  # noqa: E731
    if name == "where":
        call = lambda: ops.where(arg[0], x, arg[1])  # noqa: E731
    elif name == "clip":
        call = lambda: ops.clip(x, *arg)  # noqa: E731
    elif name in ("concatenate", "stack"):
        call = lambda: f(xs, arg)  # noqa: E731
    else:
        call = lambda: f(x, arg)  # noqa: E731
    desc = describe_call(name, x, arg)
    note(desc)
    got = numpy_oracle(name, call, numpy_fn, desc)
    if got is not None and isinstance(x, np.ndarray) and x.dtype.kind == "f" and name in TRACEABLE:
        if name == "where":
            traced_value(name, lambda: ops.where(arg[0], autodiff.Tensor(x), arg[1]), got, desc)
        elif name == "clip":
            traced_value(name, lambda: ops.clip(autodiff.Tensor(x), *arg), got, desc)
        elif name in ("concatenate", "stack"):
            if xs and xs[0] is x:
                traced_value(name, lambda: f([autodiff.Tensor(x)] + list(xs[1:]), arg), got, desc)
        else:
            traced_value(name, lambda: f(autodiff.Tensor(x), arg), got, desc)


shape_args = st.one_of(shapes(0, 3, max_elements=24, huge_empty=False).map(tuple), st.integers(0, 5),
                       st.sampled_from([(2**50, 2**10), 2**60, -1, (2, -1), (2.0,), "3", None, [2, 3], (True,)]))


@covers("zeros", "ones", "arange", "shape", "convert_to_tensor")
@given(st.data(), st.sampled_from(["zeros", "ones", "arange", "shape", "convert_to_tensor"]))
def test_math_constructors(data, name):
    draw = data.draw
    if name in ("zeros", "ones"):
        shape, dtype = draw(shape_args), draw(st.one_of(st.just("float32"), DTYPE_ARGS))
        args, numpy_fn = (shape, dtype), lambda: getattr(np, name)(shape, dtype=dtype)
    elif name == "arange":
        start = draw(st.one_of(st.integers(-5, 5), st.sampled_from([0.5, np.nan, np.inf, "1", None, True, 2**63])))
        stop = draw(st.one_of(st.none(), st.integers(-5, 10), st.sampled_from([2.5, 2**40, np.inf])))
        step = draw(st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 0.0, 1e-9, np.nan])))
        dtype = draw(st.one_of(st.none(), DTYPE_ARGS))
        if stop is not None and isinstance(start, (int, float)) and not isinstance(start, bool) and \
                isinstance(step, (int, float)) and step and abs((stop - start) / step) > 2**20 and \
                abs((stop - start) / step) < 2**44:
            reject()  # (a result of GiBs: NumPy would make it)
        args, numpy_fn = (start, stop, step, dtype), lambda: np.arange(start, stop, step, dtype=dtype)
    elif name == "shape":
        x = math_operand(draw)
        args, numpy_fn = (x,), lambda: np.shape(x)
    else:
        x, dtype = math_operand(draw), draw(DTYPE_ARGS)
        args, numpy_fn = (x, dtype), lambda: np.asarray(x, dtype=dtype)
    desc = describe_call(name, *args)
    note(desc)
    f = getattr(ops, name)
    numpy_oracle(name, lambda: f(*args), numpy_fn, desc)


def one_hot_reference(x, num_classes, axis, dtype):
    """Keras 3's one_hot: a new axis of num_classes values at `axis`, 1 at each integer label; a
    label outside [0, num_classes) (negative or too large) gives zeros (not NumPy's wrap-around)."""
    if not is_int(num_classes) or not 1 <= num_classes <= BIG:
        raise Invalid("num_classes")
    labels = np.asarray(x)
    if labels.dtype.kind not in "iuf":  # (bools, complex numbers, strings, objects)
        raise Invalid("x")
    if not is_int(axis) or not -(labels.ndim + 1) <= axis <= labels.ndim:
        raise Invalid("axis")
    out_dtype = np.dtype("float32" if dtype is None else dtype)
    result_shape(labels.shape + (num_classes,), out_dtype)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.floor(labels))):
        raise Invalid("x")
    wide = labels.astype(np.float64)[..., None]  # (exact for the small labels drawn here)
    hot = (wide == np.arange(num_classes)).astype(out_dtype)
    return Exact(np.moveaxis(hot, -1, int(axis)))


@covers("one_hot")
@given(st.data())
def test_one_hot(data):
    draw = data.draw
    shape = draw(shapes(0, 2, max_elements=12, huge_empty=False))
    num_classes = draw(st.one_of(st.integers(1, 5), st.sampled_from([0, -1, 2**63, 2.0, True, None, "3"])))
    n = math.prod(shape)
    values = np.array(draw(st.lists(st.integers(-2, 6), min_size=n, max_size=n)), np.int64).reshape(shape)
    r = draw(st.integers(0, 9))
    if r < 6:
        x = values.astype(draw(st.sampled_from([np.int64, np.int32, np.int8, np.uint8])))
    elif r < 8:
        x = values.astype(np.float32) + draw(st.sampled_from([0.0, 0.0, 0.5, np.nan]))
    else:
        x = draw(arrays(shape))
    axis = draw(st.one_of(st.just(-1), st.integers(-len(shape) - 2, len(shape) + 1),
                          st.sampled_from([1.0, None, "0", True])))
    dtype = draw(st.sampled_from(["float32", "int32", "bool", None]))
    desc = describe_call("one_hot", x, num_classes, axis=axis, dtype=dtype)
    note(desc)
    check(("one_hot",), lambda: ops.one_hot(x, num_classes, axis=axis, dtype=dtype),
          lambda: one_hot_reference(x, num_classes, axis, dtype), None, desc)


# ---------------------------------------------------------------------------------------------
# every public function has a property (kept last: COVERED is filled by the decorators above)
# ---------------------------------------------------------------------------------------------
def test_every_public_ops_function_has_a_property():
    missing = sorted(set(ops.__all__) - set(COVERED))
    assert not missing, f"fastnn.ops functions without a property: {missing}"
