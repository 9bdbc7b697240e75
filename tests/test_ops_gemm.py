"""fastnn.ops.matmul / linear against NumPy (the kernel: cpp/include/fastnn/gemm.hpp)."""

import tracemalloc

import numpy as np
import pytest

from fastnn import ops

DTYPES = [np.float32, np.float64]

# (m, k, n): unit, primes, tall and skinny, k = 1, k > 1000, edge tiles of every kind.
SHAPES = [
    (1, 1, 1), (1, 7, 1), (2, 3, 5), (7, 13, 31), (31, 97, 17), (97, 31, 101),
    (4, 784, 256), (1, 784, 256), (2, 256, 10), (128, 784, 256), (128, 256, 10),
    (1000, 3, 2), (3, 2, 1000), (2, 1000, 3), (513, 1, 257), (17, 1, 1), (1, 1, 65),
    (5, 1500, 7), (67, 1201, 53), (257, 263, 269), (300, 2, 4100),
    (100, 37, 11), (19, 16, 12), (64, 300, 1), (16, 17, 4),
    # 49-64 float32 / 25-32 float64 columns: the 6-row × 4-vector tile, ragged rows and lanes
    (13, 27, 64), (7, 300, 57), (50, 9, 49), (3, 5, 28), (20, 33, 32), (6, 290, 26),
]


def reference(a, b, transpose_a=False, transpose_b=False):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a,
                     np.swapaxes(b, -1, -2) if transpose_b else b)


def assert_close(got, want, k, dtype):
    """Error bound of a length-k dot product in `dtype`, relative to the operands' size."""
    eps = np.finfo(dtype).eps
    assert got.dtype == dtype
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * eps * max(k, 1) ** 0.5 * 8 + 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_matches_numpy(rng, m, k, n, dtype, transpose_a, transpose_b):
    a = rng.uniform(-1, 1, (k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.uniform(-1, 1, (n, k) if transpose_b else (k, n)).astype(dtype)
    got = ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert_close(got, reference(a, b, transpose_a, transpose_b), k, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(1, 5, 3), (33, 17, 49), (128, 784, 256), (3, 1, 2)])
def test_linear_adds_bias(rng, m, k, n, dtype):
    x = rng.uniform(-1, 1, (m, k)).astype(dtype)
    w = rng.uniform(-1, 1, (k, n)).astype(dtype)
    b = rng.uniform(-1, 1, n).astype(dtype)
    assert_close(ops.linear(x, w, b), reference(x, w) + b, k, dtype)
    assert_close(ops.linear(x, w), reference(x, w), k, dtype)


def test_linear_applies_to_the_last_axis(rng):
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    assert_close(ops.linear(x, w, b), reference(x, w) + b, 7, np.float32)
    assert_close(ops.linear(x[0, 0, 0], w, b), reference(x[0, 0, 0], w) + b, 7, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, True)])
def test_accumulate_adds_into_out(rng, dtype, transpose_a, transpose_b):
    m, k, n = 37, 300, 45
    a = rng.uniform(-1, 1, (k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.uniform(-1, 1, (n, k) if transpose_b else (k, n)).astype(dtype)
    start = rng.uniform(-1, 1, (m, n)).astype(dtype)
    out = start.copy()
    result = ops.matmul(a, b, transpose_a, transpose_b, out=out, accumulate=True)
    assert result is out
    assert_close(out, start + reference(a, b, transpose_a, transpose_b), k, dtype)
    ops.matmul(a, b, transpose_a, transpose_b, out=out)  # overwrite
    assert_close(out, reference(a, b, transpose_a, transpose_b), k, dtype)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
    ((2, 1, 4, 3), (5, 3, 6)), ((2, 5, 4, 3), (1, 3, 6)), ((7, 2, 3), (7, 3, 2)), ((4, 3), (2, 3, 1)),
])
def test_matmul_follows_numpy_broadcasting(rng, a_shape, b_shape):
    a = rng.standard_normal(a_shape)
    b = rng.standard_normal(b_shape)
    assert_close(ops.matmul(a, b), np.matmul(a, b), a_shape[-1], np.float64)


def test_batched_transposes(rng):
    a = rng.standard_normal((4, 3, 5))
    b = rng.standard_normal((4, 6, 3))
    assert_close(ops.matmul(a, b, transpose_a=True, transpose_b=True),
                 np.swapaxes(a, 1, 2) @ np.swapaxes(b, 1, 2), 3, np.float64)


@pytest.mark.parametrize("a_shape,b_shape,out_shape", [
    ((0, 5), (5, 3), (0, 3)), ((4, 5), (5, 0), (4, 0)), ((4, 0), (0, 3), (4, 3)),
    ((0, 0), (0, 0), (0, 0)), ((2, 0, 5), (5, 3), (2, 0, 3)), ((0, 4, 5), (0, 5, 3), (0, 4, 3)),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_sized_dimensions_follow_numpy(a_shape, b_shape, out_shape, dtype):
    a = np.ones(a_shape, dtype)
    b = np.ones(b_shape, dtype)
    got = ops.matmul(a, b)
    want = np.matmul(a, b)
    assert got.shape == want.shape == out_shape
    np.testing.assert_array_equal(got, want)  # k = 0: zeros


def test_empty_inner_dimension_gives_bias_and_keeps_accumulator():
    w = np.ones((0, 3), np.float32)
    b = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(ops.linear(np.ones((2, 0), np.float32), w, b), np.tile(b, (2, 1)))
    out = np.full((2, 3), 5, np.float32)
    ops.matmul(np.ones((2, 0), np.float32), w, out=out, accumulate=True)
    np.testing.assert_array_equal(out, 5)


# Shapes on both sides of the threading threshold, with row and column splits and edge tiles.
THREAD_SHAPES = [(128, 784, 256), (300, 300, 300), (1, 4000, 700), (2, 2000, 900),
                 (1031, 257, 33), (64, 64, 64), (128, 256, 10), (96, 96, 96), (2000, 300, 10)]


@pytest.mark.parametrize("m,k,n", THREAD_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_identical_on_one_and_two_threads(rng, threads, m, k, n, dtype):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    results = []
    for count in (1, 2):
        threads(count)
        results.append((ops.matmul(a, b), ops.matmul(a, b.T.copy(), transpose_b=True),
                        ops.matmul(a.T.copy(), b, transpose_a=True), ops.linear(a, b, bias)))
    for one, two in zip(*results):
        assert one.tobytes() == two.tobytes()


def test_batched_results_identical_on_one_and_two_threads(rng, threads):
    a = rng.standard_normal((16, 40, 50)).astype(np.float32)
    b = rng.standard_normal((16, 50, 60)).astype(np.float32)
    threads(1)
    one = ops.matmul(a, b)
    threads(2)
    assert one.tobytes() == ops.matmul(a, b).tobytes()


def test_contiguous_float_arrays_are_not_copied():
    a = np.ones((1000, 1000), np.float32)  # 4 MB
    b = np.ones((1000, 1), np.float32)
    ops.matmul(a, b)  # warm up: scratch buffers are kept per thread
    tracemalloc.start()
    ops.matmul(a, b)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # the 4 KB result, not a 4 MB copy of a


@pytest.mark.parametrize("make", [
    lambda a: a.tolist(),                              # nested lists
    lambda a: np.asfortranarray(a),                    # non-contiguous layout
    lambda a: np.repeat(a, 2, axis=1)[:, ::2],         # strided view
    lambda a: a.astype(np.float16),                    # other float widths
    lambda a: a.astype(">f4"),                         # non-native byte order
])
def test_other_array_likes_are_converted(rng, make):
    a = rng.integers(-3, 4, (5, 6)).astype(np.float32)
    b = rng.integers(-3, 4, (6, 4)).astype(np.float32)
    got = ops.matmul(make(a), b)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, a @ b)  # small integers: exact


def test_integer_inputs_compute_in_float32_unless_a_float64_array_decides():
    a = [[1, 2], [3, 4]]
    assert ops.matmul(a, np.array(a, np.int64)).dtype == np.float32
    assert ops.matmul(a, np.array(a, np.float64)).dtype == np.float64
    np.testing.assert_array_equal(ops.matmul(a, a), [[7, 10], [15, 22]])


def test_nan_and_inf_propagate_like_numpy():
    a = np.array([[1.0, np.nan], [1.0, 2.0]])
    b = np.array([[1.0, 0.0], [np.inf, 1.0]])
    np.testing.assert_array_equal(np.isnan(ops.matmul(a, b)), np.isnan(a @ b))


def test_kernels_flush_denormals_but_leave_the_callers_mode_alone():
    tiny = np.float32(1e-40)  # a float32 denormal
    assert tiny > 0
    got = ops.matmul(np.array([[tiny]], np.float32), np.array([[1.0]], np.float32))
    assert got[0, 0] == 0  # denormals are zero inside the kernels
    assert np.float32(1e-38) / np.float32(100) > 0  # ...but not in the caller afterwards


# ---- bad input: a clear TypeError/ValueError naming the argument, never a crash ----------

F32 = np.ones((3, 4), np.float32)
G32 = np.ones((4, 5), np.float32)

BAD_MATMUL = [
    ((None, G32), {}, TypeError, "'a' must be an array, got None"),
    ((F32, "abc"), {}, TypeError, "'b' must hold real numbers"),
    ((F32.astype(np.complex64), G32), {}, TypeError, "'a' must hold real numbers"),
    ((np.array([object(), 1]), G32), {}, TypeError, "'a' must hold real numbers"),
    (([[1, 2], [3]], G32), {}, ValueError, "'a' could not be read as a numeric array"),
    ((np.float32(3.0), G32), {}, ValueError, "'a' must have at least 1 dimension"),
    ((F32, np.ones((), np.float32)), {}, ValueError, "'b' must have at least 1 dimension"),
    ((F32, np.ones((5, 5), np.float32)), {}, ValueError, r"a has 4 columns but b has 5 rows"),
    ((F32, G32), {"transpose_a": True}, ValueError, r"transpose\(a\) has 3 columns but b has 4 rows"),
    ((np.ones(4, np.float32), G32), {"transpose_a": True}, ValueError, "transpose_a=True needs 'a'"),
    ((F32, np.ones(4, np.float32)), {"transpose_b": True}, ValueError, "transpose_b=True needs 'b'"),
    ((F32, G32.astype(np.float64)), {}, TypeError, "'a' is float32 but 'b' is float64"),
    ((np.ones((2, 3, 4)), np.ones((5, 4, 2))), {}, ValueError, "batch dimensions do not broadcast"),
    ((F32, G32), {"accumulate": True}, ValueError, "accumulate=True .* pass out="),
    ((F32, G32), {"out": np.ones((3, 4), np.float32)}, ValueError, r"'out' must have shape \(3, 5\)"),
    ((F32, G32), {"out": np.ones((3, 5), np.float64)}, TypeError, "'a' is float32 but 'out' is float64"),
    ((F32, G32), {"out": np.ones((3, 5), np.int32)}, TypeError, "'out' must have dtype float32"),
    ((F32, G32), {"out": [[0.0] * 5] * 3}, TypeError, "'out' must be a numpy.ndarray"),
    ((F32, G32), {"out": np.ones((5, 3), np.float32).T}, ValueError, "'out' must be C-contiguous"),
]


@pytest.mark.parametrize("args,kwargs,error,message", BAD_MATMUL)
def test_bad_matmul_input_raises_a_clear_error(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        ops.matmul(*args, **kwargs)


def test_read_only_or_overlapping_out_is_refused():
    out = np.zeros((3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="'out' is read-only"):
        ops.matmul(F32, G32, out=out)
    square = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="'out' shares memory with 'a'"):
        ops.matmul(square, np.ones((4, 4), np.float32), out=square)
    with pytest.raises(ValueError, match="'out' shares memory with 'b'"):
        ops.matmul(np.ones((4, 4), np.float32), square, out=square, accumulate=True)
    np.testing.assert_array_equal(square, 1)  # nothing was written


BAD_LINEAR = [
    ((np.ones((2, 3)), np.ones(3)), ValueError, "'w' must have 2 dimensions, got 1"),
    ((np.ones((2, 3)), np.ones((3, 4, 1))), ValueError, "'w' must have 2 dimensions, got 3"),
    ((np.ones((2, 3)), np.ones((4, 5))), ValueError, "'x' has 3 features .* but 'w' expects 4"),
    ((np.ones((2, 3)), np.ones((3, 5)), np.ones(4)), ValueError, r"'b' must have shape \(5,\)"),
    ((np.ones((2, 3)), np.ones((3, 5)), np.ones((1, 5))), ValueError, r"'b' must have shape \(5,\)"),
    ((np.ones(()), np.ones((3, 5))), ValueError, "'x' must have at least 1 dimension"),
    ((np.ones((2, 3), np.float32), np.ones((3, 5)), None), TypeError, "'x' is float32 but 'w' is float64"),
    ((np.ones((2, 3)), None), TypeError, "'w' must be an array, got None"),
]


@pytest.mark.parametrize("args,error,message", BAD_LINEAR)
def test_bad_linear_input_raises_a_clear_error(args, error, message):
    with pytest.raises(error, match=message):
        ops.linear(*args)


def test_many_malformed_inputs_never_crash(rng):
    """Random shapes, dtypes and objects: every call returns a correct result or raises."""
    candidates = [None, 3, "x", [], [[]], [1, [2]], {"a": 1}, np.ones(()), np.ones(0),
                  np.ones((0, 0)), np.ones((2, 0, 3)), np.array(["a", "b"]), np.ones((2, 2), bool),
                  np.ones((3, 3), np.complex128), np.ones((1, 1, 1, 1, 1)), np.full((2, 2), np.nan)]
    for _ in range(300):
        shape_a = tuple(rng.integers(0, 4, rng.integers(0, 4)))
        shape_b = tuple(rng.integers(0, 4, rng.integers(0, 4)))
        dtype_a, dtype_b = rng.choice([np.float32, np.float64, np.int8, np.uint16]), rng.choice([np.float32, np.float64])
        candidates_a = candidates + [np.ones(shape_a, dtype_a)]
        candidates_b = candidates + [np.ones(shape_b, dtype_b)]
        a = candidates_a[rng.integers(len(candidates_a))]
        b = candidates_b[rng.integers(len(candidates_b))]
        try:
            got = ops.matmul(a, b)
        except (TypeError, ValueError) as error:
            assert "matmul: " in str(error)
            continue
        want = np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64))
        np.testing.assert_allclose(got, want, atol=1e-5)
