"""Strategies and the oracle shared by the property suites (test_property_ops.py,
test_property_layers.py).

Arrays come in every NumPy dtype (bool, signed and unsigned ints, float16/32/64, long double,
complex, object, str, bytes, datetime, timedelta) and memory layout (C, Fortran, strided
slices, negative strides, an odd offset into a buffer, byte-swapped, read-only, broadcast with
zero strides, nested lists, NumPy scalars), with shapes holding zero, one and a few elements,
or huge sizes on empty axes such as (0, 2**40); values are small floats, or NaN and inf.
Integer arguments range over 0, 1, small, 2**31, 2**63 - 1, 2**63, 2**64, negatives, bools,
floats, None and strings.

The oracle (``check``): a reference computes what the call must give, an exact shape from
Python integers and values close to a float64 NumPy computation, and the call must give it,
bit for bit the same as the call on C-contiguous float copies of its inputs; or the reference
raises ``Invalid`` and the call must raise ValueError or TypeError whose message names the
function and the argument. Anything else fails: another exception (RuntimeError from
pybind11, SystemError, OverflowError, MemoryError), a result that differs, or a hang (a
watchdog dumps the stacks and ends the process after ``WATCHDOG_SECONDS``).

Set FASTNN_PROPERTY_TRACE=<file> to append each call's description to <file> before making
it (the last line names the call that crashed the process, if one does).
"""

import faulthandler
import math
import os
import re
import warnings

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

BIG = 2**63 - 1
WATCHDOG_SECONDS = 120
TRACE = os.environ.get("FASTNN_PROPERTY_TRACE")

# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------
REAL_DTYPES = [np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                     np.uint32, np.uint64, np.float16, np.float32, np.float64, np.longdouble)]
OTHER_DTYPES = [np.dtype(t) for t in (np.complex64, np.complex128, object, "U6", "S6", "datetime64[s]",
                                      "timedelta64[s]")]
ALL_DTYPES = REAL_DTYPES + OTHER_DTYPES
FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]

# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------
SPECIALS = [np.nan, np.inf, -np.inf]
finite_values = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.5]),
                          st.floats(-4, 4, width=16))
special_values = st.one_of(finite_values, st.sampled_from(SPECIALS))


def cast_values(values, dtype):
    """float64 `values` as an array of `dtype` (ints rounded and clipped, strings printed)."""
    dtype = np.dtype(dtype)
    v = np.asarray(values, np.float64)
    with np.errstate(all="ignore"):
        if dtype.kind == "b":
            return (v != 0).astype(dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            r = np.clip(np.nan_to_num(np.round(v), nan=0, posinf=info.max, neginf=info.min), info.min, info.max)
            return r.astype(dtype)
        if dtype.kind in "fc":
            return v.astype(dtype)
        if dtype.kind == "O":
            out = np.empty(v.shape, object)
            out.reshape(-1)[:] = [float(t) for t in v.reshape(-1)]
            return out
        if dtype.kind in "US":
            return v.astype(dtype)
        if dtype.kind in "mM":
            return np.nan_to_num(np.round(v), nan=0, posinf=0, neginf=0).astype(np.int64).astype(dtype)
    raise AssertionError(dtype)


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------
LAYOUTS = ["C", "F", "strided", "negative", "offset", "swapped", "readonly", "broadcast", "list", "scalar"]
ARRAY_LAYOUTS = [lay for lay in LAYOUTS if lay not in ("list", "scalar")]


def relayout(arr, layout, axis):
    """arr (an ndarray) in `layout`; `axis` picks the axis a strided layout walks oddly.

    The values may change (broadcast repeats one slice): references read what was passed.
    """
    arr = np.asarray(arr)
    if arr.ndim == 0 and layout in ("strided", "negative", "broadcast"):
        layout = "C"
    if layout in ("list", "scalar") and math.prod(max(d, 1) for d in arr.shape) > 4096:
        layout = "C"  # (a list of 2**40 empty lists would not fit in memory)
    axis = axis % arr.ndim if arr.ndim else 0
    if layout == "C":
        return np.array(arr, order="C", copy=True)
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "strided":  # every other element of a buffer twice as long along `axis`
        if _nbytes_guard(arr, 2):
            return np.array(arr, order="C", copy=True)
        wide = list(arr.shape)
        wide[axis] *= 2
        buf = np.zeros(wide, arr.dtype)
        view = buf[(slice(None),) * axis + (slice(None, None, 2),)]
        view[...] = arr
        return view
    if layout == "negative":
        rev = (slice(None),) * axis + (slice(None, None, -1),)
        return np.array(arr[rev], order="C", copy=True)[rev]
    if layout == "offset":  # C-contiguous, one element into a buffer (an unaligned start)
        flat = np.empty(arr.size + 1, arr.dtype)
        flat[1:] = arr.ravel()
        return flat[1:].reshape(arr.shape)
    if layout == "swapped":
        if arr.dtype.kind in "biufcmM" and arr.dtype.itemsize > 1:
            return arr.astype(arr.dtype.newbyteorder())
        return arr.copy()
    if layout == "readonly":
        out = arr.copy()
        out.flags.writeable = False
        return out
    if layout == "broadcast":  # zero strides along `axis` (read-only)
        if arr.shape[axis] == 0:
            return arr.copy()
        one = arr[(slice(None),) * axis + (slice(0, 1),)]
        return np.broadcast_to(one, arr.shape)
    if layout == "list":
        return arr.tolist()
    if layout == "scalar":
        return arr[()] if arr.ndim == 0 else arr.tolist()
    raise AssertionError(layout)


def _nbytes_guard(arr, factor):
    """Whether a copy `factor` times as large would hit NumPy's size limit (huge empty axes)."""
    n = 1
    for d in arr.shape:
        n *= max(d, 1)
    return n * factor * max(arr.dtype.itemsize, 1) >= 2**62


# ---------------------------------------------------------------------------------------------
# shapes and arrays
# ---------------------------------------------------------------------------------------------
HUGE_EMPTY_SIZES = [2**31, 2**40, 2**50]
small_sizes = st.sampled_from([0, 1, 1, 2, 2, 3, 3, 4, 5])


@st.composite
def shapes(draw, min_dims=0, max_dims=4, max_elements=64, huge_empty=True, sizes=small_sizes):
    """Shapes with 0, 1 and a few elements; sometimes one axis of 0 beside a huge one."""
    ndim = draw(st.integers(min_dims, max_dims))
    shape = [draw(sizes) for _ in range(ndim)]
    while math.prod(shape) > max_elements:
        i = shape.index(max(shape))
        shape[i] -= 1
    if huge_empty and ndim >= 2 and draw(st.integers(0, 9)) == 0:
        i, j = draw(st.permutations(range(ndim)))[:2]
        shape[i] = 0
        shape[j] = draw(st.sampled_from(HUGE_EMPTY_SIZES))
    return tuple(shape)


@st.composite
def float_values(draw, shape, specials=None):
    """A float64 array of `shape`: small values, with NaN and inf when `specials` (drawn if None)."""
    if specials is None:
        specials = draw(st.integers(0, 5)) == 0
    n = 1
    for d in shape:
        n *= d
    if n == 0:
        return np.zeros(shape)
    return draw(hnp.arrays(np.float64, shape, elements=special_values if specials else finite_values))


@st.composite
def arrays(draw, shape, dtypes=None, layouts=None, specials=None, float_weight=6):
    """An array-like of `shape`: values from float_values, a dtype (float32/float64 most
    often), a layout from LAYOUTS."""
    if dtypes is None:
        dtypes = ALL_DTYPES
    dtypes = [np.dtype(d) for d in dtypes]
    shape = tuple(shape)
    if math.prod(shape) > 4096:  # a huge axis without an empty one: make it the empty one
        shape = tuple(0 if d == max(shape) else d for d in shape)
    while math.prod(max(d, 1) for d in shape) > 2**56:  # NumPy's limit on the other axes' product
        shape = tuple(1 if d == max(shape) else d for d in shape)
    floats = [d for d in dtypes if d in FLOAT_DTYPES]
    if floats and draw(st.integers(0, 9)) < float_weight:
        dtype = draw(st.sampled_from(floats))
    else:
        dtype = draw(st.sampled_from(dtypes))
    values = draw(float_values(shape, specials))
    arr = cast_values(values, dtype)
    if layouts is None:
        layouts = LAYOUTS
    layout = "C" if draw(st.booleans()) else draw(st.sampled_from(layouts))
    return relayout(arr, layout, draw(st.integers(0, 3)))


# ---------------------------------------------------------------------------------------------
# scalar arguments
# ---------------------------------------------------------------------------------------------
INT_EDGES = [0, 1, 2, 3, 2**31 - 1, 2**31, 2**32, 2**62, BIG, 2**63, 2**64, -1, -2, -(2**63), -(2**63) - 1]
NOT_INTS = [True, False, 1.0, 2.5, float("nan"), float("inf"), None, "2", b"2", 2 + 0j, [2], (2,),
            np.float64(2.0), np.array([2])]


def ints(low=1, high=4, weight=7):
    """Mostly ints in [low, high]; otherwise edges (2**63 and beyond, negatives), NumPy ints,
    and things that are not ints (bool, float, None, str, complex, sequences)."""
    return st.integers(0, 9).flatmap(
        lambda r: st.integers(low, high) if r < weight else st.one_of(
            st.sampled_from(INT_EDGES), st.sampled_from(NOT_INTS),
            st.builds(lambda v, t: t(v), st.integers(0, 127), st.sampled_from([np.int8, np.int64, np.uint64])),
            st.integers(-(2**70), 2**70)))


FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), 2**63, -7]
NOT_FLOATS = [None, "0.5", b"1", 1j, [0.5], (0.5,), np.array([0.5, 0.5]), object()]


def floats(low=0.0, high=1.0, weight=7):
    """Mostly floats in [low, high]; otherwise edges (NaN, inf, huge), ints, bools, NumPy
    floats, and things that are not numbers."""
    return st.integers(0, 9).flatmap(
        lambda r: st.floats(low, high) if r < weight else st.one_of(
            st.sampled_from(FLOAT_EDGES), st.sampled_from(NOT_FLOATS), st.sampled_from([True, False, 0, 1, 3]),
            st.builds(lambda v, t: t(v), st.floats(low, high), st.sampled_from([np.float32, np.float64]))))


BOOL_LIKE = [True, False, np.True_, np.False_, 0, 1]
NOT_BOOLS = ["yes", "", None, [1], np.array([True, False]), 2.5]


def flags(weight=8):
    """True/False mostly; sometimes NumPy bools, 0/1, or things that are not flags."""
    return st.integers(0, 9).flatmap(
        lambda r: st.booleans() if r < weight else st.sampled_from(BOOL_LIKE + NOT_BOOLS))


def is_int(v):
    """A Python/NumPy integer (not a bool): what int arguments accept."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v):
    """A real number (int, float, bool, NumPy scalar): what float arguments accept."""
    return isinstance(v, (int, float, np.integer, np.floating, np.bool_))


def is_flag(v):
    return isinstance(v, (bool, np.bool_)) or (is_int(v) and v in (0, 1))


# ---------------------------------------------------------------------------------------------
# the binding contract: dtypes and conversion
# ---------------------------------------------------------------------------------------------
class Invalid(Exception):
    """The reference's verdict that the call must raise ValueError or TypeError naming one of
    `names` (no names: the function only, for errors about the result rather than an argument)."""

    def __init__(self, *names):
        super().__init__(names)
        self.names = names


class TooLarge(Exception):
    """The reference's verdict for a result too large for memory (`nbytes` bytes) from small
    (empty) inputs: MemoryError (or a ValueError) is the right answer; past NumPy's limit of
    2**63 - 1 bytes, a ValueError naming the function."""

    def __init__(self, nbytes):
        super().__init__(nbytes)
        self.nbytes = nbytes


SAFE_ELEMENTS = 2**20  # results the tests make and compare
UNALLOCATABLE_BYTES = 2**47  # results no test machine can hold (128 TiB)


def result_shape(shape, dtype):
    """`shape` (Python ints) as the shape of a result of `dtype`, if the test can afford it:
    TooLarge when it cannot be allocated; hypothesis.reject() in between (a result of many
    GiB would be made and written)."""
    from hypothesis import reject

    shape = tuple(int(d) for d in shape)
    nonzero = math.prod(d for d in shape if d) * np.dtype(dtype).itemsize
    if nonzero > BIG:  # NumPy refuses even an empty array whose other axes' product overflows
        raise TooLarge(nonzero)
    elements = math.prod(shape)
    if elements * np.dtype(dtype).itemsize >= UNALLOCATABLE_BYTES:
        raise TooLarge(elements * np.dtype(dtype).itemsize)
    if elements > SAFE_ELEMENTS:
        reject()
    return shape


def deciding_bits(value):
    """32 or 64 for a float32/float64 ndarray (any byte order), else 0 (the contract)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.dtype.itemsize in (4, 8):
        return value.dtype.itemsize * 8
    return 0


def call_dtype(**args):
    """The call's dtype from its array arguments (None: absent), or Invalid naming both of a
    float32/float64 pair."""
    first = None
    for name, value in args.items():
        bits = deciding_bits(value)
        if not bits:
            continue
        if first is None:
            first = (name, bits)
        elif bits != first[1]:
            raise Invalid(first[0], name)
    return np.dtype(np.float64) if first and first[1] == 64 else np.dtype(np.float32)


def as_input(value, name, dtype):
    """What the binding reads for an input array: `value` converted to `dtype` (C order), or
    Invalid(name) for non-numeric or unreadable input."""
    if value is None:
        raise Invalid(name)
    try:
        with np.errstate(all="ignore"):
            arr = np.asarray(value)
    except (ValueError, TypeError):
        raise Invalid(name) from None
    if arr.dtype.kind not in "fiub":
        raise Invalid(name)
    with np.errstate(all="ignore"):
        return np.array(arr, dtype=dtype, order="C", copy=True)


def canonical(value, dtype):
    """A C-contiguous, writeable `dtype` copy of an input array (None stays None)."""
    if value is None:
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (complex to real: the binding refuses those anyway)
        return np.array(np.asarray(value), dtype=dtype, order="C", copy=True)


# ---------------------------------------------------------------------------------------------
# comparing results
# ---------------------------------------------------------------------------------------------
class Approx:
    """An expected float array: `values` (float64) rounded to `dtype`, within a tolerance.

    rtol/atol default to a few hundred units of `dtype`'s epsilon; NaN must be NaN and inf
    the same inf.
    """

    def __init__(self, values, dtype, rtol=None, atol=None, scale=None):
        self.values = np.asarray(values, np.float64)
        self.dtype = np.dtype(dtype)
        # (the values are float64: no finer than float64's epsilon for a long double result)
        eps = max(float(np.finfo(self.dtype).eps), float(np.finfo(np.float64).eps))
        self.rtol = 64 * eps if rtol is None else rtol
        self.atol = 64 * eps if atol is None else atol
        # the size of what was summed (Σ|terms|): rounding errors scale with it, not the result
        # (a non-finite Σ|terms| goes with a NaN or inf result, which must match exactly)
        self.scale = 0.0 if scale is None else np.broadcast_to(
            np.nan_to_num(np.asarray(scale, np.float64), nan=0.0, posinf=0.0), self.values.shape)

    def __repr__(self):
        return f"Approx({self.values!r}, {self.dtype})"


class Exact:
    """An expected array equal to `value` bit for bit (its dtype and shape too)."""

    def __init__(self, value):
        self.value = np.asarray(value)


def assert_matches(got, want, where="result"):
    """got against the reference's want (Approx, Exact, ndarray, tuples, dicts, floats, None)."""
    if isinstance(want, Approx):
        if isinstance(got, np.generic) and want.values.ndim == 0:  # (NumPy's scalars, from 0-d maths)
            got = np.asarray(got)
        assert isinstance(got, np.ndarray), f"{where}: expected an ndarray, got {type(got).__name__}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype}, expected {want.dtype}"
        assert got.shape == want.values.shape, f"{where}: shape {got.shape}, expected {want.values.shape}"
        assert all(type(d) is int for d in got.shape)
        g = got.astype(np.float64)
        w = want.values
        with np.errstate(all="ignore"):
            w_rounded = w.astype(want.dtype).astype(np.float64)
        nan_g, nan_w = np.isnan(g), np.isnan(w)
        assert np.array_equal(nan_g, nan_w), (
            f"{where}: NaN at {np.argwhere(nan_g != nan_w)[:5].tolist()}: got {g[nan_g != nan_w][:5]}, "
            f"expected {w[nan_g != nan_w][:5]}")
        inf_w = np.isinf(w_rounded)
        both = ~nan_w
        with np.errstate(all="ignore"):
            ok = np.where(inf_w, g == w_rounded,
                          np.abs(g - w) <= want.atol + want.rtol * (np.abs(w) + want.scale))
        ok = ok | ~both
        with np.errstate(all="ignore"):
            ok = ok & ~(np.isinf(g) & ~inf_w & both)
        if not np.all(ok):
            bad = np.argwhere(~ok)[:5]
            raise AssertionError(f"{where}: differs at {bad.tolist()}: got {[g[tuple(i)] for i in bad]}, "
                                 f"expected {[w[tuple(i)] for i in bad]}")
        return
    if isinstance(want, Exact):
        assert isinstance(got, np.ndarray), f"{where}: expected an ndarray, got {type(got).__name__}"
        assert got.dtype == want.value.dtype, f"{where}: dtype {got.dtype}, expected {want.value.dtype}"
        assert got.shape == want.value.shape, f"{where}: shape {got.shape}, expected {want.value.shape}"
        assert same_bits(got, want.value), f"{where}: got {got!r}, expected {want.value!r}"
        return
    if want is None:
        assert got is None, f"{where}: expected None, got {type(got).__name__}"
        return
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} vs {sorted(want)}"
        for k in want:
            assert_matches(got[k], want[k], f"{where}[{k!r}]")
        return
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), f"{where}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_matches(g, w, f"{where}[{i}]")
        return
    if callable(want):  # a predicate on the result
        want(got)
        return
    raise AssertionError(f"unknown expectation {want!r}")


def same_bits(a, b):
    """Same dtype, shape and bytes (NaN payloads and -0.0 included); recursive on tuples."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_bits(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return a == b or (a is None and b is None)


# ---------------------------------------------------------------------------------------------
# error messages
# ---------------------------------------------------------------------------------------------
PYBIND_SIGNATURE = "incompatible function arguments"


def names_argument(message, name):
    """Whether `message` names the argument `name`: quoted, or as name=, name.shape, name[...],
    or (names of 3 characters or more) as a word."""
    if any(form in message for form in (f"'{name}'", f'"{name}"', f"{name}=", f"{name}.shape", f"{name}[")):
        return True
    return len(name) >= 3 and re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


def assert_names(exc, functions, arguments):
    """exc is a ValueError/TypeError whose message names one of `functions` and one of `arguments`."""
    message = str(exc)
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {message}"
    assert PYBIND_SIGNATURE not in message, (
        f"pybind11's signature error names no argument (expected one of {arguments}): {message[:300]}")
    assert any(f in message for f in functions), f"the message names none of {functions}: {message!r}"
    assert not arguments or any(names_argument(message, a) for a in arguments), \
        f"the message names none of the arguments {arguments}: {message!r}"


# ---------------------------------------------------------------------------------------------
# the oracle
# ---------------------------------------------------------------------------------------------
def _trace(description):
    if TRACE:
        with open(TRACE, "a") as f:
            f.write(description + "\n")


def guarded(call, description):
    """call() under a watchdog (a hang dumps the stacks and ends the process)."""
    _trace(description)
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    try:
        return call()
    finally:
        faulthandler.cancel_dump_traceback_later()


def check(functions, call, reference, canonical_call=None, description="", aliases=None):
    """The oracle. `functions`: names an error message may use for the function (its public
    name and the kernel's). `reference()`: the expectation (see assert_matches) or raises
    Invalid. `canonical_call()`: the same call on C-contiguous float copies (its result must
    be bit for bit the same), or None.

    `aliases`: {argument: names the message may use for it instead}.

    Returns the result (None when the call raised as expected).
    """
    if isinstance(functions, str):
        functions = (functions,)
    aliases = aliases or {}
    try:
        with np.errstate(all="ignore"):
            want = reference()
    except TooLarge as large:
        try:
            got = guarded(call, description)
        except MemoryError:
            assert large.nbytes <= BIG, "MemoryError where the result's size exceeds 2**63 - 1 bytes"
            return None
        except Exception as exc:  # noqa: BLE001
            if large.nbytes > BIG:
                assert_names(exc, functions, ())
            else:
                assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
            return None
        raise AssertionError(f"a result of {large.nbytes} bytes was expected to be refused, got {_short(got)}")
    except Invalid as invalid:
        try:
            got = guarded(call, description)
        except Exception as exc:  # noqa: BLE001 - the oracle classifies every exception
            names = tuple(invalid.names) + tuple(a for n in invalid.names for a in aliases.get(n, ()))
            assert_names(exc, functions, names)
            return None
        raise AssertionError(f"expected a ValueError/TypeError naming one of {invalid.names}, got a result "
                             f"{_short(got)}")
    got = guarded(call, description)
    assert_matches(got, want)
    if canonical_call is not None:
        again = guarded(canonical_call, description + " [canonical]")
        assert same_bits(got, again), "the result differs from the call on C-contiguous float copies"
    return got


def _short(value):
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


def describe(value):
    """A short description of an argument, for traces and failure notes."""
    if isinstance(value, np.ndarray):
        flags = "C" if value.flags.c_contiguous else ("F" if value.flags.f_contiguous else "strided")
        ro = "" if value.flags.writeable else " read-only"
        return f"ndarray({value.dtype.str}, {value.shape}, {flags}{ro})"
    if isinstance(value, list):
        return f"list(len {len(value)})"
    text = repr(value)
    return text if len(text) < 60 else text[:60] + "..."


def describe_call(name, *args, **kwargs):
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"
