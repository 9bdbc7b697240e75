"""Every ``fastnn._core`` function names the argument pybind11 could not convert: a wrong type
or an out-of-range integer for any scalar argument gives a TypeError / ValueError that says
which argument and what it must be (never "incompatible function arguments" or "Unable to
cast ... to C++ type '?'")."""

import numpy as np
import pytest

from fastnn import _arguments, _core, ops

FUNCTIONS = sorted(name for name in dir(_core) if not name.startswith("_") and callable(getattr(_core, name)))


def _signature(name):
    """The first overload's signature line (the typed one) of a _core function."""
    doc = getattr(_core, name).__doc__
    return next(line.split(". ", 1)[1] for line in doc.splitlines() if line.startswith("1. "))


def _scalar_parameters():
    for name in FUNCTIONS:
        for parameter, annotation, _ in _arguments._parameters(_signature(name)):
            kind = _arguments._kind(annotation)
            if kind in ("float", "int", "str"):
                yield name, parameter, kind


CASES = list(_scalar_parameters())


def test_there_are_scalar_arguments_to_check():
    assert len(CASES) > 40


@pytest.mark.parametrize("name, parameter, kind", CASES)
def test_a_wrong_type_names_the_argument(name, parameter, kind):
    """All other arguments left as they are (possibly wrong too): the first unconvertible one is
    named, so give only this one, as a keyword, an object() that converts to nothing."""
    parameters = _arguments._parameters(_signature(name))
    names = [p[0] for p in parameters]
    index = names.index(parameter)
    args = [None] * index  # arguments before it: None (object parameters accept it)
    for (p, annotation, _), i in zip(parameters[:index], range(index)):
        kind_before = _arguments._kind(annotation)
        args[i] = {"float": 1.0, "int": 0, "str": "valid", "bool": False}.get(kind_before)
    expected = {"float": "a float", "int": "an int", "str": "a string"}[kind]
    with pytest.raises(TypeError, match=rf"^{name}: '{parameter}' must be {expected}, got object"):
        getattr(_core, name)(*args, **{parameter: object()})


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.dropout(np.ones(3, np.float32), 0.5, -1), ValueError,
     r"dropout_forward: 'seed' must be an int in \[0, 18446744073709551615\], got int -1"),
    (lambda: _core.layernorm_forward(np.ones((2, 3), np.float32), None, None, 2**40), ValueError,
     r"layernorm_forward: 'axis' must be an int in \[-2147483648, 2147483647\]"),
    (lambda: _core.dropout_forward(np.ones(3, np.float32), rate=0.5, sed=1), TypeError,
     r"dropout_forward: unexpected argument 'sed'; it takes x, rate, seed"),
    (lambda: _core.dropout_forward(np.ones(3, np.float32)), TypeError, r"dropout_forward: missing argument 'rate'"),
    (lambda: _core.max_pool(np.ones((1, 4, 4, 1), np.float32), 2, 2, 2, 2, 5), TypeError,
     r"max_pool: 'padding' must be a string, got int 5"),
    (lambda: ops.max_pool(np.ones((1, 5, 3), np.float32), 2**63, 1), ValueError,
     r"max_pool: 'pool_size' must hold positive ints \(at most 2\*\*63 - 1\), got 9223372036854775808"),
    (lambda: _core.max_pool(np.ones((1, 4, 4, 1), np.float32), 2**63, 2, 2, 2, "valid"), ValueError,
     r"max_pool: 'pool_h' must be an int >= 1, got 9223372036854775808"),
    (lambda: _core.set_num_threads(2**64), ValueError, r"set_num_threads: 'n' must be an int in \[1, 65536\]"),
])
def test_examples(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, expected", [
    # pybind11 tries the catch-all overload before converting: ints for bools and floats, NumPy
    # scalars, None for a bool must still reach the kernel as pybind11 would convert them.
    (lambda: _core.matmul(np.eye(2, dtype=np.float32), np.full((2, 2), 3, np.float32), 1, 0, None, 0),
     np.full((2, 2), 3, np.float32)),
    (lambda: _core.dropout_forward(np.ones(4, np.float32), 0, np.uint64(3)), np.ones(4, np.float32)),
    (lambda: _core.dropout_forward(np.ones(4, np.float32), np.float32(0.0), 3), np.ones(4, np.float32)),
    (lambda: _core.matmul(np.ones((1, 2), np.float64), np.ones((2, 1), np.float64), None, np.bool_(False)),
     np.full((1, 1), 2.0)),
])
def test_convertible_scalars_reach_the_kernel(call, expected):
    got = call()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_a_float_too_large_for_a_double_is_named():
    with pytest.raises(ValueError, match=r"dropout_forward: 'rate' must be a float in the double range"):
        _core.dropout_forward(np.ones(4, np.float32), 10**400, 3)
