"""Sizes from users (strides, dilations, pool sizes, paddings, repeats) up to 2**63 - 1: every
kernel's output shape is exact (computed here with Python's unbounded ints) or the call raises
a ValueError naming what overflows, never a wrapped-around shape or a crash; and empty inputs
cost work proportional to their (zero) elements, not to an axis length."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import ops

BIG = 2**63 - 1


def same_out(n, stride):
    return -(-n // stride)  # ceil, exact


def valid_out(n, k, stride):
    return (n - k) // stride + 1 if n >= k else 0


@pytest.mark.parametrize("strides", [(1, 1), (2, 3), (BIG, 1), (BIG, BIG), (2**62, 5)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_with_huge_strides_has_the_exact_shape_and_values(strides, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    y = ops.conv(x, w, strides, padding)
    if padding == "same":
        expected = (2, same_out(7, strides[0]), same_out(6, strides[1]), 4)
    else:
        expected = (2, valid_out(7, 2, strides[0]), valid_out(6, 3, strides[1]), 4)
    assert y.shape == expected
    # output (0, 0): the window at rows / columns −pad.. (TensorFlow's 'same' padding, the extra
    # one after), from Python ints
    pads = [max((out - 1) * s + k - n, 0) // 2 if padding == "same" else 0
            for out, s, k, n in ((expected[1], strides[0], 2, 7), (expected[2], strides[1], 3, 6))]
    ref = np.zeros((2, 4), np.float64)
    for i in range(2):
        for j in range(3):
            r, c = i - pads[0], j - pads[1]
            if 0 <= r < 7 and 0 <= c < 6:
                ref += x[:, r, c].astype(np.float64) @ w[i, j]
    np.testing.assert_allclose(y[:, 0, 0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation, match", [
    ((BIG, 1), r"exceeds 2\*\*63 - 1"), ((1, BIG), r"exceeds 2\*\*63 - 1"),
    ((2**62, 1), r"spans 4611686018427387905 positions; at most 2\*\*31 - 1 are supported"),
    ((1, 2**31), r"spans 2147483649 positions; at most 2\*\*31 - 1 are supported")])
def test_conv_with_a_huge_receptive_field_is_a_clear_error(dilation, match):
    x = np.ones((1, 4, 4, 1), np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"conv: the receptive field along the (rows|columns) \(kernel size 2 with "
                                         r"dilation_rate \d+\).* " + match):
        ops.conv(x, w, (1, 1), "same", None, dilation)


def test_conv_with_a_large_dilation_in_range_is_exact():
    """dilation 2**20 with 'same' padding: every tap but one of each window falls in the padding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 5, 4, 2)).astype(np.float32)
    w = rng.standard_normal((3, 1, 2, 3)).astype(np.float32)
    y = ops.conv(x, w, (1, 1), "same", None, (2**20, 1))
    # span 2·2**20 + 1, pad_top 2**20: the middle tap (index 1) sits on the output's own row
    np.testing.assert_allclose(y, np.einsum("nhwc,cf->nhwf", x, w[1, 0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value, error, match", [
    ((2**63, 1), ValueError, r"'strides' must be an int >= 1, got 9223372036854775808"),
    ((0, 1), ValueError, r"'strides' must be an int >= 1, got 0"),
    ((1.5, 1), TypeError, r"conv: 'strides' must be an int or a tuple of 2 ints, got \(1.5, 1\)"),
    ((1,), ValueError, r"conv: 'strides' must be an int or 2 ints, got \(1,\)"),
])
def test_conv_size_arguments_out_of_range_name_the_argument(value, error, match):
    x = np.ones((1, 4, 4, 1), np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    with pytest.raises(error, match=match):
        ops.conv(x, w, value, "same")


@pytest.mark.parametrize("pool, stride", [(2, BIG), (BIG, 1), (BIG, BIG), (2**40, 3), (7, 2**62)])
@pytest.mark.parametrize("kind", ["max", "average"])
def test_same_pooling_with_huge_windows_and_strides_is_exact(pool, stride, kind):
    """'same' pooling: a window wider than the input covers all of it; a stride past the end
    leaves one window. Reference: NumPy over the clipped windows, from exact Python ints."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)  # (batch, steps, channels)
    fn = ops.max_pool if kind == "max" else ops.average_pool
    y = fn(x, pool, stride, "same")
    n = x.shape[1]
    out = same_out(n, stride)
    pad = max((out - 1) * stride + pool - n, 0) // 2
    ref = np.empty((2, out, 3), np.float32)
    for o in range(out):
        lo, hi = max(o * stride - pad, 0), min(o * stride - pad + pool, n)
        window = x[:, lo:hi]
        ref[:, o] = window.max(axis=1) if kind == "max" else window.mean(axis=1)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_pooling_size_arguments_past_int64_name_the_argument():
    x = np.ones((1, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"max_pool: 'pool_size' must hold positive ints \(at most 2\*\*63 - 1\), "
                                         r"got 9223372036854775808"):
        ops.max_pool(x, 2**63, 1, "same")
    with pytest.raises(ValueError, match=r"max_pool: 'strides' must hold positive ints \(at most 2\*\*63 - 1\), "
                                         r"got 9223372036854775808"):
        ops.max_pool(x, 2, 2**63, "same")


def test_upsampling_past_2_63_is_a_clear_error_and_exact_below():
    x = np.ones((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"upsample2d: the upsampled height .* exceeds 2\*\*63 - 1"):
        ops.upsample2d(x, (2**62 + 1, 2))
    z = np.zeros((1, 2**20, 0, 1), np.float32)  # no elements: any exact shape is fine
    assert ops.upsample2d(z, (2**40, 3)).shape == (1, 2**60, 0, 1)


def test_zero_padding_past_2_63_is_a_clear_error():
    x = np.ones((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"zero_pad2d: the padding \(top \+ bottom\) .* exceeds 2\*\*63 - 1"):
        ops.zero_pad2d(x, ((BIG, BIG), (0, 0)))
    with pytest.raises(ValueError, match=r"zero_pad2d: the padded height .* exceeds 2\*\*63 - 1"):
        ops.zero_pad2d(x, ((BIG - 2, 0), (0, 0)))
    with pytest.raises(ValueError, match="zero_pad2d_backward: 'dy' of shape .* is smaller than the padding"):
        ops.zero_pad2d_backward(x, ((BIG, BIG), (0, 0)))


def test_zero_padding_layer_with_huge_padding_is_a_clear_error():
    layer = fastnn.layers.ZeroPadding2D(((BIG, BIG), (0, 0)))
    with pytest.raises(ValueError, match=r"ZeroPadding2D 'zero_padding2d\w*': the output would have shape \(1, "
                                         r"18446744073709551618, 4, 1\): its sizes \(zeros aside\) multiply to more "
                                         r"than 2\*\*63 - 1 bytes"):
        layer(np.ones((1, 4, 4, 1), np.float32))


def test_empty_inputs_with_a_huge_axis_return_at_once():
    """Zero elements along the channels but 2**40 rows: the result is empty and exact, and the
    kernels do not walk the rows (each call would otherwise take hours: a child process with a
    time limit checks it)."""
    script = textwrap.dedent("""
        import numpy as np
        from fastnn import ops
        z = np.zeros((1, 2**40, 2, 0), np.float32)
        assert ops.max_pool(z, 2, 2).shape == (1, 2**39, 1, 0)
        assert ops.average_pool(z, 2, 2, "same").shape == (1, 2**39, 1, 0)
        assert ops.zero_pad2d(z, ((1, 1), (1, 1))).shape == (1, 2**40 + 2, 4, 0)
        assert ops.upsample2d(z, (2, 2)).shape == (1, 2**41, 4, 0)
        z = np.zeros((2**40, 4, 2, 0), np.float32)  # (argmax indices are int32 within an image)
        y, argmax = ops.max_pool_with_argmax(z, 2, 2)
        assert ops.max_pool_backward(y, argmax, z.shape, 2, 2).shape == z.shape
        assert ops.average_pool_backward(y, z.shape, 2, 2).shape == z.shape
        print("done")
    """)
    import os

    here = os.path.dirname(os.path.dirname(fastnn.__file__))  # the child imports the fastnn under test
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"


def test_exact_shapes_match_python_integer_arithmetic_for_many_sizes():
    """Output shapes over a grid of sizes against the formulas in Python ints."""
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 8):
        x = rng.standard_normal((1, n, 2)).astype(np.float32)
        for pool in (1, 2, 3, 9, 2**31, 2**62):
            for stride in (1, 2, 3, 7, 2**31, BIG):
                y = ops.average_pool(x, pool, stride, "same")
                assert y.shape == (1, same_out(n, stride), 2)
                if pool <= n:
                    y = ops.max_pool(x, pool, stride, "valid")
                    assert y.shape == (1, valid_out(n, pool, stride), 2)
                    assert math.isfinite(float(y.sum()))
