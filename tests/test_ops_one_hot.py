"""fastnn.ops.one_hot against a NumPy reference of Keras 3's semantics (keras/src/ops/nn.py).

Keras (TensorFlow's tf.one_hot) gives a row of zeros for a label outside [0, num_classes),
negative or too large; NumPy indexing would wrap -1 to the last class or raise.
"""

import re

import numpy as np
import pytest

import fastnn
from fastnn import ops


def reference(labels, num_classes, axis=-1, dtype=np.float32):
    """Loops, no fancy indexing: out[..., c] = 1 iff label == c with 0 <= c < num_classes."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape + (num_classes,), dtype)
    for index in np.ndindex(labels.shape):
        label = labels[index]
        if 0 <= label < num_classes:
            out[index + (int(label),)] = 1
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("labels", [
    [-1, 0],  # the issue's example: Keras [[0, 0, 0], [1, 0, 0]], not NumPy's [[0, 0, 1], ...]
    [2, -1, 0, 3, 5, -3],
    [[0, 1, -2], [2, 3, 2]],
    np.arange(-4, 8).reshape(2, 3, 2),
    [],
    np.int64(2),  # a scalar label: one vector
    np.array([-(2**62), 2**62, 1], np.int64),  # far out of range both ways
], ids=str)
@pytest.mark.parametrize("num_classes", [1, 3, 4])
def test_matches_the_reference_including_negative_and_too_large_labels(labels, num_classes):
    expected = reference(labels, num_classes)
    got = ops.one_hot(labels, num_classes)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_the_issue_example():
    np.testing.assert_array_equal(ops.one_hot([-1, 0], 3), [[0, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.float32, np.float64])
def test_label_dtypes(dtype):
    labels = np.array([0, 3, 1, 7, 2], dtype)  # 7 >= num_classes; uint64 compares without wrapping
    np.testing.assert_array_equal(ops.one_hot(labels, 4), reference([0, 3, 1, 7, 2], 4))
    if np.dtype(dtype).kind in "if":
        signed = np.array([0, -1, 2], dtype)
        np.testing.assert_array_equal(ops.one_hot(signed, 3), reference([0, -1, 2], 3))


def test_uint64_labels_beyond_int64_are_out_of_range():
    labels = np.array([2**64 - 1, 2**63, 1], np.uint64)  # a cast to int64 would make them -1 and -2**63
    np.testing.assert_array_equal(ops.one_hot(labels, 3), [[0, 0, 0], [0, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("axis", [-3, -2, -1, 0, 1, 2, np.int64(1)])
def test_axis_places_the_new_axis(axis):
    labels = np.array([[0, 2, -1], [1, 5, 2]])
    got = ops.one_hot(labels, 4, axis=axis)
    np.testing.assert_array_equal(got, reference(labels, 4, axis=int(axis)))
    assert got.flags.c_contiguous


@pytest.mark.parametrize("dtype", ["float64", "int32", np.uint8, "bool"])
def test_dtype(dtype):
    got = ops.one_hot([1, -1, 0], 2, dtype=dtype)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, reference([1, -1, 0], 2, dtype=np.dtype(dtype)))


def test_default_dtype_is_floatx():
    fastnn.config.set_floatx("float64")
    try:
        assert ops.one_hot([0, 1], 2).dtype == np.float64
    finally:
        fastnn.config.set_floatx("float32")


def test_integer_valued_float_labels_are_accepted():
    np.testing.assert_array_equal(ops.one_hot(np.array([2.0, -1.0, 0.0, 9.0]), 3), reference([2, -1, 0, 9], 3))


@pytest.mark.parametrize("args, kwargs, error, message", [
    (([1], 0), {}, ValueError, r"one_hot: 'num_classes' must be an int >= 1 \(at most 2\*\*63 - 1\), got 0"),
    (([1], -2), {}, ValueError, r"'num_classes' must be an int >= 1 .*got -2"),
    (([1], 2**63), {}, ValueError, r"'num_classes' must be an int >= 1 \(at most 2\*\*63 - 1\)"),
    (([1], 3.0), {}, TypeError, r"one_hot: 'num_classes' must be an int >= 1, got 3.0"),
    (([1], True), {}, TypeError, r"one_hot: 'num_classes' must be an int >= 1, got True"),
    (([1], None), {}, TypeError, r"one_hot: 'num_classes' must be an int >= 1, got None"),
    (([1], 3), {"axis": 2}, ValueError, r"one_hot: 'axis' must be in \[-2, 1\] for labels with 1 axes, got 2"),
    (([1], 3), {"axis": -3}, ValueError, r"one_hot: 'axis' must be in \[-2, 1\]"),
    (([1], 3), {"axis": 1.0}, TypeError, r"one_hot: 'axis' must be an int, got 1.0"),
    (([1], 3), {"sparse": True}, ValueError, r"one_hot: sparse=True is not supported"),
    (([1.5], 3), {}, ValueError, r"one_hot: 'x' must hold integer labels, got 1.5"),
    (([np.nan], 3), {}, ValueError, r"one_hot: 'x' must hold integer labels, got nan"),
    (([np.inf], 3), {}, ValueError, r"one_hot: 'x' must hold integer labels, got inf"),
    (([True, False], 3), {}, TypeError, r"one_hot: 'x' must hold integer labels, got an array of dtype bool"),
    ((["1"], 3), {}, TypeError, r"one_hot: 'x' must hold integer labels, got an array of dtype <U1"),
])
def test_bad_arguments(args, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        ops.one_hot(*args, **kwargs)
    assert type(info.value) is error


@pytest.mark.parametrize("shape, num_classes, dtype", [((2,), 2**62, "float32"), ((0,), 2**62, "float32"),
                                                      ((2**31, 2**31), 4, "float64")])
def test_huge_outputs_are_a_clear_error(shape, num_classes, dtype):
    labels = np.broadcast_to(np.int8(0), shape)  # a view: no memory for the labels either
    out_shape = shape + (num_classes,)
    with pytest.raises(ValueError, match=re.escape(f"one_hot: the output of shape {out_shape} and dtype {dtype} is too "
                                                   "large")):
        ops.one_hot(labels, num_classes, dtype=dtype)


def test_an_empty_output_with_many_classes_is_exact():
    assert ops.one_hot(np.zeros((0, 3), np.int64), 2**40).shape == (0, 3, 2**40)


def test_symbolic_inputs_and_a_model():
    inputs = fastnn.Input((3,), dtype="int32")
    out = ops.one_hot(inputs, 4)
    assert out.shape == (None, 3, 4)
    model = fastnn.Model(inputs, out)
    labels = np.array([[0, 3, -1], [5, 2, 1]])
    np.testing.assert_array_equal(model.predict(labels, verbose=0), reference(labels, 4))
