"""Pooling kernels (cpp/include/fastnn/pool.hpp) through fastnn.ops.

Every kernel is checked against an independent NumPy reference (window by window, float32
and float64) over many geometries: odd sizes, strides 1-3, windows from 1 to the whole
input and beyond it ('same'), both paddings, batch 1, one channel and channel counts that
use every block width of the kernels. Backward passes are checked against float64
central finite differences, results against the thread count, and bad input against
clear errors.
"""

import itertools
import math

import numpy as np
import pytest

from fastnn import _core, ops

DTYPES = [np.float32, np.float64]
H = 1e-5  # finite-difference step
# 1 channel, one 32-byte block (float32), and 43 = every block width plus a scalar tail
# (float32: 32 + 8 + 3; float64: 16 + 16 + 4 + 4 + 3).
CHANNELS = [1, 8, 43]
SIZES = [(1, 1), (1, 7), (2, 2), (5, 5), (7, 4), (8, 9), (13, 6)]
POOLS = [(1, 1), (2, 2), (3, 2), (2, 3), (3, 3), (4, 5), "all", "over"]
STRIDES = [None, 1, 2, 3, (1, 2), (3, 1)]


# ----------------------------------------------------------------------------------------
# Independent references (NumPy, float64, one window at a time)
# ----------------------------------------------------------------------------------------
def same_padding(size, pool, stride):
    """TensorFlow's rule: (output size, padding before)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + pool - size, 0)
    return out, total // 2


def geometry(size, pool, stride, padding):
    """(output size, padding before) along one axis."""
    if padding == "same":
        return same_padding(size, pool, stride)
    return (size - pool) // stride + 1, 0


def windows(shape, pool, strides, padding):
    """Yields (i, j, rows, cols): each output position and its in-bounds input slices."""
    _, h, w, _ = shape
    oh, pt = geometry(h, pool[0], strides[0], padding)
    ow, pl = geometry(w, pool[1], strides[1], padding)
    for i in range(oh):
        r0 = i * strides[0] - pt
        for j in range(ow):
            c0 = j * strides[1] - pl
            yield i, j, slice(max(r0, 0), min(r0 + pool[0], h)), slice(max(c0, 0), min(c0 + pool[1], w))


def out_shape(shape, pool, strides, padding):
    oh, _ = geometry(shape[1], pool[0], strides[0], padding)
    ow, _ = geometry(shape[2], pool[1], strides[1], padding)
    return (shape[0], oh, ow, shape[3])


def ref_max_pool(x, pool, strides, padding):
    """(y, argmax): maxima and the flat index h*W + w of each window's first maximum."""
    x = np.asarray(x, np.float64)
    n, _, w, c = x.shape
    shape = out_shape(x.shape, pool, strides, padding)
    y = np.empty(shape)
    argmax = np.empty(shape, np.int64)
    for i, j, rows, cols in windows(x.shape, pool, strides, padding):
        win = x[:, rows, cols, :].reshape(n, -1, c)
        k = np.argmax(win, axis=1)  # the first maximum (the first NaN when there is one)
        y[:, i, j, :] = np.take_along_axis(win, k[:, None, :], axis=1)[:, 0, :]
        ncols = cols.stop - cols.start
        argmax[:, i, j, :] = (rows.start + k // ncols) * w + cols.start + k % ncols
    return y, argmax


def ref_average_pool(x, pool, strides, padding):
    x = np.asarray(x, np.float64)
    y = np.empty(out_shape(x.shape, pool, strides, padding))
    for i, j, rows, cols in windows(x.shape, pool, strides, padding):
        y[:, i, j, :] = x[:, rows, cols, :].mean(axis=(1, 2))
    return y


def ref_max_pool_backward(dy, argmax, shape):
    n, h, w, c = shape
    dx = np.zeros(shape)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
            a = argmax[:, i, j, :]
            np.add.at(dx, (nn, a // w, a % w, cc), dy[:, i, j, :])
    return dx


def ref_average_pool_backward(dy, shape, pool, strides, padding):
    dx = np.zeros(shape)
    for i, j, rows, cols in windows(shape, pool, strides, padding):
        count = (rows.stop - rows.start) * (cols.stop - cols.start)
        dx[:, rows, cols, :] += dy[:, i, j, :][:, None, None, :] / count
    return dx


def cases():
    """(shape, pool, strides, padding): every geometry the tests sweep."""
    out = []
    for k, ((h, w), pool, strides, padding) in enumerate(itertools.product(SIZES, POOLS, STRIDES,
                                                                            ["valid", "same"])):
        if pool == "all":
            pool = (h, w)
        elif pool == "over":  # larger than the input: 'same' only
            if padding == "valid":
                continue
            pool = (h + 2, w + 1)
        if padding == "valid" and (pool[0] > h or pool[1] > w):
            continue
        strides = pool if strides is None else (strides, strides) if isinstance(strides, int) else strides
        batch = 1 if k % 3 == 0 else 3
        out.append(((batch, h, w, CHANNELS[k % len(CHANNELS)]), tuple(pool), tuple(strides), padding))
    return out


CASES = cases()


def distinct_input(rng, shape, dtype=np.float64):
    """Values in [-1, 1) without ties, 2/size apart (>= 2e-4 here, 20 steps H): finite
    differences keep every argmax."""
    n = math.prod(shape)
    assert n <= 10000
    return (rng.permutation(n).reshape(shape) * (2 / n) - 1).astype(dtype)


def assert_close(got, want, dtype, scale=1.0, ulps=4):
    got = np.asarray(got)
    assert got.dtype == dtype
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    np.testing.assert_allclose(got, want, rtol=ulps * np.finfo(dtype).eps,
                               atol=ulps * np.finfo(dtype).eps * scale)


def numeric_gradient(f, x, dy):
    """Central differences of sum(f(x) * dy) with respect to x (float64). The outputs are
    subtracted before the sum, so that the sum's rounding does not swamp the difference."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        keep = x[idx]
        x[idx] = keep + H
        plus = f(x)
        x[idx] = keep - H
        minus = f(x)
        x[idx] = keep
        grad[idx] = np.sum((plus - minus) * dy) / (2 * H)
    return grad


def assert_gradient(got, fd, what):
    err = np.abs(got - fd)
    assert np.all(err <= 1e-6 * np.abs(fd) + 1e-9), f"{what}: max error {err.max():.3g}"


def bits(a):
    return np.ascontiguousarray(a).tobytes()


# ----------------------------------------------------------------------------------------
# 2-D max and average pooling
# ----------------------------------------------------------------------------------------
def test_the_sweep_covers_the_geometries():
    assert len(CASES) > 300
    assert {c[3] for c in CASES} == {"valid", "same"}
    assert {c[0][3] for c in CASES} == set(CHANNELS) and {c[0][0] for c in CASES} == {1, 3}
    assert any(c[1][0] > c[0][1] for c in CASES)  # windows larger than the input ('same')
    assert any(c[2][0] < c[1][0] for c in CASES)  # overlapping windows
    assert any(c[2][0] > c[1][0] for c in CASES)  # gaps between windows


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_matches_reference(rng, dtype):
    for shape, pool, strides, padding in CASES:
        x = rng.standard_normal(shape).astype(dtype)
        x[..., 0] = np.round(x[..., 0])  # ties: the first maximum must win
        y, argmax = ops.max_pool_with_argmax(x, pool, strides, padding)
        want, want_argmax = ref_max_pool(x, pool, strides, padding)
        where = f"{shape} pool={pool} strides={strides} {padding}"
        assert y.dtype == dtype and argmax.dtype == np.int32, where
        np.testing.assert_array_equal(y, want.astype(dtype), err_msg=where)  # no arithmetic: exact
        np.testing.assert_array_equal(argmax, want_argmax, err_msg=where)
        np.testing.assert_array_equal(ops.max_pool(x, pool, strides, padding), y, err_msg=where)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_matches_reference(rng, dtype):
    for shape, pool, strides, padding in CASES:
        x = rng.standard_normal(shape).astype(dtype)
        y, argmax = ops.max_pool_with_argmax(x, pool, strides, padding)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = ops.max_pool_backward(dy, argmax, x.shape, pool, strides, padding)
        want = ref_max_pool_backward(dy.astype(np.float64), argmax, x.shape)
        windows_per_position = math.ceil(pool[0] / strides[0]) * math.ceil(pool[1] / strides[1])
        assert_close(dx, want, dtype, scale=windows_per_position * np.abs(dy).max(), ulps=windows_per_position)


@pytest.mark.parametrize("dtype", DTYPES)
def test_average_pool_matches_reference(rng, dtype):
    for shape, pool, strides, padding in CASES:
        x = rng.standard_normal(shape).astype(dtype)
        y = ops.average_pool(x, pool, strides, padding)
        assert_close(y, ref_average_pool(x, pool, strides, padding), dtype, ulps=2 + pool[0] * pool[1])
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = ops.average_pool_backward(dy, x.shape, pool, strides, padding)
        want = ref_average_pool_backward(dy.astype(np.float64), x.shape, pool, strides, padding)
        assert_close(dx, want, dtype, scale=np.abs(dy).max(), ulps=4 + pool[0] * pool[1])


def test_max_pool_gradients_by_finite_differences(rng):
    for shape, pool, strides, padding in CASES[::7]:
        shape = shape[:3] + (min(shape[3], 3),)  # every channel count is in the reference tests
        x = distinct_input(rng, shape)
        y, argmax = ops.max_pool_with_argmax(x, pool, strides, padding)
        dy = rng.uniform(-1, 1, y.shape)
        dx = ops.max_pool_backward(dy, argmax, x.shape, pool, strides, padding)
        fd = numeric_gradient(lambda v: ops.max_pool(v, pool, strides, padding), x, dy)
        assert_gradient(dx, fd, f"max_pool {shape} pool={pool} strides={strides} {padding}")


def test_average_pool_gradients_by_finite_differences(rng):
    for shape, pool, strides, padding in CASES[3::7]:
        shape = shape[:3] + (min(shape[3], 3),)
        x = rng.standard_normal(shape)
        y = ops.average_pool(x, pool, strides, padding)
        dy = rng.uniform(-1, 1, y.shape)
        dx = ops.average_pool_backward(dy, x.shape, pool, strides, padding)
        fd = numeric_gradient(lambda v: ops.average_pool(v, pool, strides, padding), x, dy)
        assert_gradient(dx, fd, f"average_pool {shape} pool={pool} strides={strides} {padding}")


def test_same_padding_follows_tensorflow():
    # in=5, pool=2, stride=2: out 3, total pad 1 -> 0 before, 1 after: the last window is [4].
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(ops.max_pool(x, (1, 2), padding="same").ravel(), [1, 3, 4])
    np.testing.assert_array_equal(ops.average_pool(x, (1, 2), padding="same").ravel(), [0.5, 2.5, 4])
    # in=5, pool=4, stride=1: out 5, total pad 3 -> 1 before, 2 after; averages count
    # only the in-bounds positions.
    np.testing.assert_array_equal(ops.average_pool(x, (1, 4), 1, "same").ravel(),
                                  [1, 1.5, 2.5, 3, 3.5])
    np.testing.assert_array_equal(ops.max_pool(-x, (1, 4), 1, "same").ravel(), [0, 0, -1, -2, -3])
    # in=4, pool=3, stride=3 (gaps): out 2, total pad 2 -> 1 before.
    x4 = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1)
    np.testing.assert_array_equal(ops.average_pool(x4, (3, 1), (3, 1), "same").ravel(), [0.5, 2.5])


def test_valid_pooling_drops_the_leftover_and_its_gradient_is_zero(rng):
    x = rng.standard_normal((2, 7, 5, 3))
    y, argmax = ops.max_pool_with_argmax(x, 2)
    assert y.shape == (2, 3, 2, 3)
    dx = ops.max_pool_backward(np.ones_like(y), argmax, x.shape, 2)
    assert np.all(dx[:, 6] == 0) and np.all(dx[:, :, 4] == 0)
    assert dx.sum() == y.size
    dx = ops.average_pool_backward(np.ones_like(y), x.shape, 2)
    np.testing.assert_array_equal(dx[:, :6, :4], 0.25)
    assert np.all(dx[:, 6] == 0) and np.all(dx[:, :, 4] == 0)


def test_overlapping_windows_sum_their_gradients():
    # A single large value is the maximum of every 3x3 window (stride 1) that contains it.
    x = np.zeros((1, 5, 5, 2))
    x[0, 2, 2, :] = 1.0
    x[0, :, :, 1] -= np.arange(25).reshape(5, 5) * 0.01  # channel 1: no ties elsewhere
    y, argmax = ops.max_pool_with_argmax(x, 3, 1)
    dx = ops.max_pool_backward(np.ones_like(y), argmax, x.shape, 3, 1)
    assert dx[0, 2, 2, 1] == 9 and dx[0, :, :, 1].sum() == 9
    assert dx[0, 2, 2, 0] == 9
    dx = ops.average_pool_backward(np.ones((1, 3, 3, 2)), x.shape, 3, 1)
    np.testing.assert_allclose(dx[0, :, :, 0], np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1]) / 9, rtol=1e-15)


def test_max_pool_ties_go_to_the_first_maximum_in_row_major_order():
    x = np.zeros((1, 2, 2, 1), np.float32)
    _, argmax = ops.max_pool_with_argmax(x, 2)
    assert argmax.ravel().tolist() == [0]
    x = np.array([[1, 3], [3, 2]], np.float32).reshape(1, 2, 2, 1)
    _, argmax = ops.max_pool_with_argmax(x, 2)
    assert argmax.ravel().tolist() == [1]  # (0, 1) before (1, 0)
    dx = ops.max_pool_backward(np.array([[[[5.0]]]], np.float32), argmax, x.shape, 2)
    np.testing.assert_array_equal(dx.ravel(), [0, 5, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(dtype):
    x = np.array([[1, np.nan], [np.nan, 2]], dtype).reshape(1, 2, 2, 1)
    y, argmax = ops.max_pool_with_argmax(x, 2)
    assert np.isnan(y).all() and argmax.ravel().tolist() == [1]  # the first NaN
    assert np.isnan(ops.average_pool(x, 2)).all()
    x = np.full((1, 2, 2, 3), -np.inf, dtype)
    y, argmax = ops.max_pool_with_argmax(x, 2)
    assert np.all(y == -np.inf) and np.all(argmax == 0)
    x[0, 1, 1, 1] = np.inf
    y, argmax = ops.max_pool_with_argmax(x, 2)
    assert y.ravel().tolist() == [-np.inf, np.inf, -np.inf] and argmax.ravel().tolist() == [0, 3, 0]


def test_one_dimensional_pooling_is_height_one(rng):
    for steps, pool, stride, padding in [(1, 1, 1, "valid"), (9, 2, None, "valid"), (9, 3, 2, "same"),
                                         (10, 4, 1, "same"), (7, 7, 3, "valid"), (5, 8, 2, "same")]:
        x = rng.standard_normal((3, steps, 5))
        y, argmax = ops.max_pool_with_argmax(x, pool, stride, padding)
        y2, argmax2 = ops.max_pool_with_argmax(x[:, None], (1, pool), (1, stride or pool), padding)
        np.testing.assert_array_equal(y, y2[:, 0])
        np.testing.assert_array_equal(argmax, argmax2[:, 0])
        np.testing.assert_array_equal(ops.average_pool(x, (pool,), stride and (stride,), padding),
                                      ops.average_pool(x[:, None], (1, pool), (1, stride or pool), padding)[:, 0])
        dy = rng.standard_normal(y.shape)
        np.testing.assert_array_equal(ops.max_pool_backward(dy, argmax, x.shape, pool, stride, padding),
                                      ref_max_pool_backward(dy[:, None], argmax2, (3, 1, steps, 5))[:, 0])
        dx = ops.average_pool_backward(dy, x.shape, pool, stride, padding)
        want = ops.average_pool_backward(dy[:, None], (3, 1, steps, 5), (1, pool), (1, stride or pool), padding)
        np.testing.assert_array_equal(dx, want[:, 0])


def test_empty_batches_and_channels(rng):
    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        x = np.zeros(shape, np.float32)
        y, argmax = ops.max_pool_with_argmax(x, 2)
        assert y.shape == (shape[0], 2, 2, shape[3]) and argmax.shape == y.shape
        assert ops.max_pool_backward(y, argmax, shape, 2).shape == shape
        assert ops.average_pool_backward(ops.average_pool(x, 2), shape, 2).shape == shape
    assert ops.max_pool(np.zeros((2, 0, 3, 1)), 2, padding="same").shape == (2, 0, 2, 1)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_results_do_not_depend_on_the_thread_count(rng, threads, padding):
    # Large enough for several tasks on 2 threads; overlapping windows (3, stride 2).
    x = rng.standard_normal((32, 30, 29, 40)).astype(np.float32)
    dy = None
    results = []
    for n in (1, 2):
        threads(n)
        y, argmax = ops.max_pool_with_argmax(x, 3, 2, padding)
        if dy is None:
            dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = ops.max_pool_backward(dy, argmax, x.shape, 3, 2, padding)
        a = ops.average_pool(x, 3, 2, padding)
        da = ops.average_pool_backward(dy, x.shape, 3, 2, padding)
        results.append([bits(v) for v in (y, argmax, dx, a, da)])
    assert results[0] == results[1]


def test_dtypes_follow_the_contract(rng):
    x64 = rng.standard_normal((2, 4, 4, 3))
    assert ops.max_pool(x64, 2).dtype == np.float64
    assert ops.max_pool(x64.astype(np.float32), 2).dtype == np.float32
    assert ops.max_pool(x64.tolist(), 2).dtype == np.float32  # array-likes: float32
    np.testing.assert_array_equal(ops.max_pool(x64.astype(np.int64), 2), ops.max_pool(x64.astype(np.int64) * 1.0, 2))
    view = x64[:, ::-1, :, ::2]  # non-contiguous: converted once
    np.testing.assert_array_equal(ops.max_pool(view, 2), ref_max_pool(view, (2, 2), (2, 2), "valid")[0])
    y, argmax = ops.max_pool_with_argmax(x64, 2)
    with pytest.raises(TypeError, match="max_pool_backward: 'argmax' must be the int32 array"):
        ops.max_pool_backward(y, argmax.astype(np.int64), x64.shape, 2)


def test_bad_arguments_are_clear_errors(rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"max_pool: with padding='valid' the pooling window must fit in "
                                         r"the input: pool_size \(6, 2\) is larger than the input's "
                                         r"height × width 5×5"):
        ops.max_pool(x, (6, 2))
    with pytest.raises(ValueError, match="average_pool: with padding='valid'.*steps 5"):
        ops.average_pool(x[:, 0], 6)
    for bad in (0, -1, (2, 0), (-3, 2)):
        with pytest.raises(ValueError, match="max_pool: 'pool_size' must hold positive ints"):
            ops.max_pool(x, bad)
        with pytest.raises(ValueError, match="average_pool: 'strides' must hold positive ints"):
            ops.average_pool(x, 2, bad)
    for bad in ((2, 2, 2), (2.0, 2), "2", True):
        with pytest.raises((ValueError, TypeError), match="max_pool: 'pool_size' must be an int or a tuple of 2"):
            ops.max_pool(x, bad)
    with pytest.raises(ValueError, match="'pool_size' must be an int or a tuple of 1 ints"):
        ops.max_pool(x[:, 0], (2, 2))
    with pytest.raises(ValueError, match="'padding' must be 'valid' or 'same', got 'full'"):
        ops.max_pool(x, 2, padding="full")
    with pytest.raises(ValueError, match="data_format='channels_first' is not supported"):
        ops.max_pool(x, 2, data_format="channels_first")
    with pytest.raises(ValueError, match="max_pool: 'inputs' must have 3 dimensions .* or 4 .*, got 2"):
        ops.max_pool(x[0, 0], 2)
    with pytest.raises(ValueError, match="must have 3 dimensions .* got 5"):
        ops.average_pool(x[None], 2)
    with pytest.raises(TypeError, match="max_pool: 'inputs' must hold real numbers"):
        ops.max_pool(np.array([[[["a"]]]]), 1)
    y, argmax = ops.max_pool_with_argmax(x, 2)
    with pytest.raises(ValueError, match=r"max_pool_backward: 'dy' must have shape \(2, 2, 2, 3\), got \(2, 2, 3, 3\)"):
        ops.max_pool_backward(np.zeros((2, 2, 3, 3), np.float32), argmax, x.shape, 2)
    with pytest.raises(ValueError, match=r"max_pool_backward: 'argmax' must have shape \(2, 2, 2, 3\)"):
        ops.max_pool_backward(y, argmax[:1], x.shape, 2)
    with pytest.raises(ValueError, match=r"average_pool_backward: 'dy' must have shape \(2, 3, 3, 3\)"):
        ops.average_pool_backward(y, x.shape, 2, padding="same")
    with pytest.raises(TypeError, match=r"max_pool_backward: 'input_shape\[1\]' must be an int >= 0, got float"):
        _core.max_pool_backward(y, argmax, (2, 5.0, 5, 3), 2, 2, 2, 2, "valid")
    with pytest.raises(ValueError, match="max_pool: 'pool_h' must be an int >= 1, got 0"):
        _core.max_pool(x, 0, 2, 2, 2, "valid", False)
    with pytest.raises(ValueError, match="a 3-D input .* pools along its steps only"):
        _core.max_pool(x[:, 0], 2, 2, 2, 2, "valid", False)


def test_an_argmax_outside_its_window_contributes_nothing(rng):
    # The backward pass compares indices with positions and never indexes with them, so a
    # corrupt argmax cannot write out of bounds.
    x = rng.standard_normal((2, 6, 6, 4))
    y, argmax = ops.max_pool_with_argmax(x, 2, 1)
    for value in (-1, 36, 10**9):
        dx = ops.max_pool_backward(np.ones_like(y), np.full_like(argmax, value), x.shape, 2, 1)
        assert np.all(dx == 0)
    # Position (5, 5) = index 35 lies in the last window only.
    dx = ops.max_pool_backward(np.ones_like(y), np.full_like(argmax, 35), x.shape, 2, 1)
    assert np.all(dx[:, 5, 5] == 1) and dx.sum() == 2 * 4


# ----------------------------------------------------------------------------------------
# Global pooling
# ----------------------------------------------------------------------------------------
GLOBAL_SHAPES = [(1, 1, 1), (3, 7, 1), (2, 5, 43), (1, 1, 1, 1), (3, 4, 5, 8), (2, 7, 3, 43), (4, 60, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GLOBAL_SHAPES, ids=str)
def test_global_pooling_matches_reference(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[..., 0] = np.round(x[..., 0])  # ties
    flat = x.reshape(shape[0], -1, shape[-1]).astype(np.float64)
    y, argmax = ops.global_max_pool_with_argmax(x)
    np.testing.assert_array_equal(y, flat.max(axis=1).astype(dtype))
    np.testing.assert_array_equal(argmax, flat.argmax(axis=1))
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(ops.global_max_pool(x), y)
    avg = ops.global_average_pool(x)
    assert_close(avg, flat.mean(axis=1), dtype, ulps=2 + flat.shape[1])
    keep = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
    assert ops.global_max_pool(x, keepdims=True).shape == keep
    np.testing.assert_array_equal(ops.global_average_pool(x, keepdims=True).reshape(avg.shape), avg)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.global_max_pool_backward(dy, argmax, x.shape)
    want = np.zeros(flat.shape)
    np.put_along_axis(want, argmax[:, None, :].astype(np.int64), dy[:, None, :], axis=1)
    np.testing.assert_array_equal(dx, want.reshape(shape).astype(dtype))
    np.testing.assert_array_equal(ops.global_max_pool_backward(dy.reshape(keep), argmax, x.shape), dx)
    da = ops.global_average_pool_backward(dy, x.shape)
    want = np.broadcast_to(dy[:, None, :].astype(np.float64) / flat.shape[1], flat.shape).reshape(shape)
    assert_close(da, want, dtype, scale=np.abs(dy).max())
    np.testing.assert_array_equal(ops.global_average_pool_backward(dy.reshape(keep), x.shape), da)


def test_global_pooling_gradients_by_finite_differences(rng):
    for shape in [(2, 5, 3), (2, 3, 4, 5)]:
        x = distinct_input(rng, shape)
        dy = rng.uniform(-1, 1, (shape[0], shape[-1]))
        y, argmax = ops.global_max_pool_with_argmax(x)
        assert_gradient(ops.global_max_pool_backward(dy, argmax, x.shape),
                        numeric_gradient(ops.global_max_pool, x, dy), f"global_max_pool {shape}")
        assert_gradient(ops.global_average_pool_backward(dy, x.shape),
                        numeric_gradient(ops.global_average_pool, x, dy), f"global_average_pool {shape}")


def test_global_pooling_threads_and_errors(rng, threads):
    x = rng.standard_normal((80, 30, 30, 24)).astype(np.float32)  # > 1.5 Mflop: 2 threads
    results = []
    for n in (1, 2):
        threads(n)
        y, argmax = ops.global_max_pool_with_argmax(x)
        a = ops.global_average_pool(x)
        results.append([bits(v) for v in (y, argmax, a, ops.global_average_pool_backward(a, x.shape),
                                           ops.global_max_pool_backward(y, argmax, x.shape))])
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="global_average_pool: 'inputs' of shape \\(2, 0, 3\\) has no positions"):
        ops.global_average_pool(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="global_max_pool: 'inputs' must have 3 dimensions"):
        ops.global_max_pool(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"global_average_pool_backward: 'dy' must have shape \(2, 3\)"):
        ops.global_average_pool_backward(np.zeros((2, 4)), (2, 5, 3))


# ----------------------------------------------------------------------------------------
# Zero padding and upsampling
# ----------------------------------------------------------------------------------------
PADDINGS = [0, 1, (2, 0), ((0, 3), (1, 2)), ((2, 1), (0, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
def test_zero_pad2d(rng, padding, dtype):
    (t, b), (l, r) = ops.pool.normalize_padding2d(padding, "test")
    for shape in [(1, 1, 1, 1), (2, 5, 3, 43), (3, 4, 7, 8)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = ops.zero_pad2d(x, padding)
        np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (t, b), (l, r), (0, 0))))
        dy = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(ops.zero_pad2d_backward(dy, padding), dy[:, t:t + shape[1], l:l + shape[2]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 2, (3, 1), (1, 4), (2, 3)], ids=str)
def test_upsample2d(rng, size, dtype):
    sh, sw = (size, size) if isinstance(size, int) else size
    for shape in [(1, 1, 1, 1), (2, 5, 3, 43), (3, 4, 7, 8)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = ops.upsample2d(x, size)
        np.testing.assert_array_equal(y, x.repeat(sh, axis=1).repeat(sw, axis=2))
        dy = rng.standard_normal(y.shape).astype(dtype)
        want = dy.astype(np.float64).reshape(shape[0], shape[1], sh, shape[2], sw, shape[3]).sum(axis=(2, 4))
        assert_close(ops.upsample2d_backward(dy, size), want, dtype, scale=np.abs(dy).max(), ulps=sh * sw)


def test_padding_and_upsampling_gradients_threads_and_errors(rng, threads):
    x = rng.standard_normal((2, 3, 4, 2))
    dy = rng.uniform(-1, 1, (2, 6, 8, 2))
    assert_gradient(ops.upsample2d_backward(dy, 2), numeric_gradient(lambda v: ops.upsample2d(v, 2), x, dy),
                    "upsample2d")
    dy = rng.uniform(-1, 1, (2, 6, 5, 2))
    assert_gradient(ops.zero_pad2d_backward(dy, ((1, 2), (0, 1))),
                    numeric_gradient(lambda v: ops.zero_pad2d(v, ((1, 2), (0, 1))), x, dy), "zero_pad2d")
    big = rng.standard_normal((32, 40, 40, 16)).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        up = ops.upsample2d(big, 2)
        results.append([bits(v) for v in (up, ops.upsample2d_backward(up, 2), ops.zero_pad2d(big, 2),
                                           ops.zero_pad2d_backward(big, 3))])
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="zero_pad2d: 'padding' must be an int >= 0"):
        ops.zero_pad2d(x, -1)
    with pytest.raises(ValueError, match="'padding' must be an int >= 0, a tuple of 2 ints"):
        ops.zero_pad2d(x, (1, 2, 3))
    with pytest.raises(ValueError, match="zero_pad2d: 'inputs' must have 4 dimensions"):
        ops.zero_pad2d(x[0], 1)
    with pytest.raises(ValueError, match="zero_pad2d_backward: 'dy' of shape .* is smaller than the padding"):
        ops.zero_pad2d_backward(np.zeros((1, 2, 2, 1)), 2)
    with pytest.raises(ValueError, match="upsample2d: 'size' must hold positive ints"):
        ops.upsample2d(x, 0)
    with pytest.raises(ValueError, match=r"upsample2d_backward: 'dy' of shape \(1, 3, 4, 1\) is not a multiple"):
        ops.upsample2d_backward(np.zeros((1, 3, 4, 1)), 2)


def test_argmax_is_exact_on_images_of_more_than_2_to_the_24_positions():
    # float32 kernels carry the keys as floats only while they are exact (< 2^24).
    width = (1 << 23) + 2  # 2 rows: 2^24 + 4 positions
    x = np.zeros((1, 2, width, 1), np.float32)
    x[0, 1, -1, 0] = 1.0  # key 2^24 + 3: not a float32
    x[0, 0, -4, 0] = 2.0  # key 2^23 - 2
    y, argmax = ops.max_pool_with_argmax(x, 2)
    assert argmax[0, 0, -1, 0] == 2 * width - 1 == (1 << 24) + 3 and y[0, 0, -1, 0] == 1
    assert argmax[0, 0, -2, 0] == width - 4 and y[0, 0, -2, 0] == 2
    assert argmax[0, 0, 0, 0] == 0


def test_argument_helpers_standardize_like_keras():
    assert ops.pool.standardize_tuple(3, 2, "pool_size", "fn") == (3, 3)
    assert ops.pool.standardize_tuple([2, np.int64(4)], 2, "pool_size", "fn") == (2, 4)
    assert ops.pool.standardize_tuple(None, 1, "strides", "fn", allow_none=True) is None
    with pytest.raises(ValueError, match="fn: 'strides' must hold positive ints"):
        ops.pool.standardize_tuple((1, 0), 2, "strides", "fn")
    with pytest.raises(ValueError, match=r"fn: 'pool_size' must be an int or a tuple of 2 ints"):
        ops.pool.standardize_tuple((1, 2, 3), 2, "pool_size", "fn")
    assert ops.pool.standardize_padding("SAME", "fn") == "same"
    with pytest.raises(ValueError, match="fn: 'padding' must be 'valid' or 'same', got 'causal'"):
        ops.pool.standardize_padding("causal", "fn")


@pytest.mark.parametrize("shape", [(3, 5, 7, 33), (2, 16, 16, 16), (2, 17, 3, 40), (1, 1, 1, 1), (2, 3, 100),
                                   (2, 64, 8, 4, 3), (0, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_to_last_and_first_are_numpy_moveaxis(rng, shape, dtype):
    from fastnn.ops.pool import channels_to_first, channels_to_last
    x = rng.standard_normal(shape).astype(dtype)
    y = channels_to_last(x)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.moveaxis(x, 1, -1))
    np.testing.assert_array_equal(channels_to_first(x), np.moveaxis(x, -1, 1))
    np.testing.assert_array_equal(channels_to_first(y), x)


def test_channels_to_last_refuses_arrays_without_spatial_axes():
    from fastnn.ops.pool import channels_to_last
    with pytest.raises(ValueError, match="move_channels: 'inputs'"):
        channels_to_last(np.zeros((2, 3), np.float32))
