"""int8 products (fastnn.quantizers, cpp/src/qgemm.cpp) against NumPy's exact integer
products, on every path this CPU runs, and Keras' abs_max_quantize formula."""

import numpy as np
import pytest

import fastnn
from fastnn import quantizers

PATHS = {"vnni": ["vnni", "avx2", "scalar"], "avx2": ["avx2", "scalar"], "scalar": ["scalar"]}[
    quantizers.int8_best_path()]
SHAPES = [(1, 1, 1), (1, 3, 5), (2, 4, 16), (5, 7, 17), (6, 64, 64), (7, 65, 63), (13, 130, 100),
          (48, 256, 256), (49, 257, 257), (97, 1000, 33), (1, 784, 256)]


@pytest.fixture(params=PATHS)
def path(request):
    quantizers.set_int8_path(request.param)
    yield request.param
    quantizers.set_int8_path(quantizers.int8_best_path())


def _int8(rng, shape, low=-127, high=127):
    return rng.integers(low, high + 1, shape).astype(np.int8)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_int8_matmul_is_numpys_exact_product(path, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = _int8(rng, (m, k)), _int8(rng, (k, n))
    c = quantizers.int8_matmul(a, quantizers.pack_int8(b))
    assert c.dtype == np.int32 and c.shape == (m, n)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


def test_int8_accumulation_is_exact_at_k_65536(path):
    # the extremes: |sum| = 65536·127·127 = 1,057,030,144 and (vnni's unsigned encoding)
    # 65536·255·127 < 2^31
    k = 65536
    a = np.array([[127] * k, [-127] * k, [(-1) ** i * 127 for i in range(k)]], np.int8)
    b = np.stack([np.full(k, 127), np.full(k, -127), np.arange(k) % 255 - 127], axis=1).astype(np.int8)
    c = quantizers.int8_matmul(a, quantizers.pack_int8(b))
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    assert c[0, 0] == 65536 * 127 * 127


def test_int8_results_are_the_same_at_any_thread_count():
    rng = np.random.default_rng(3)
    a, b = _int8(rng, (200, 300)), quantizers.pack_int8(_int8(rng, (300, 520)))
    x = rng.normal(size=(200, 300)).astype(np.float32)
    scale = rng.uniform(1, 100, 520).astype(np.float32)
    threads = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        one = quantizers.int8_matmul(a, b), quantizers.int8_dense(x, b, scale, activation="relu")
        fastnn.set_num_threads(2)
        two = quantizers.int8_matmul(a, b), quantizers.int8_dense(x, b, scale, activation="relu")
    finally:
        fastnn.set_num_threads(threads)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def _keras_abs_max(x, axis):
    """Keras 3's abs_max_quantize (quantizers.py), written out in NumPy float32."""
    scale = np.float32(127) / (np.max(np.abs(x), axis=axis, keepdims=True) + np.float32(1e-7))
    return np.clip(np.rint(x * scale), -127, 127).astype(np.int8), scale.astype(np.float32)


@pytest.mark.parametrize("shape, axis", [((5, 9), -1), ((3, 4, 6), -1), ((64, 10), 0), ((2, 3, 4), (0, 1)),
                                         ((1, 1), -1)])
def test_abs_max_quantize_follows_keras(shape, axis):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 3
    x.flat[0] = 0.5 / np.float32(127) * 3  # exact halves round to even
    q, scale = quantizers.abs_max_quantize(x, axis=axis)
    q_ref, scale_ref = _keras_abs_max(x, axis)
    np.testing.assert_array_equal(scale, scale_ref)
    np.testing.assert_array_equal(q, q_ref)
    assert q.dtype == np.int8 and scale.dtype == np.float32


def test_abs_max_quantize_rounds_half_to_even_and_handles_zero_and_nonfinite_rows():
    x = np.array([[0.0, 0.0], [1.0, -0.0], [np.nan, 1.0], [np.inf, 1.0]], np.float32)
    q, scale = quantizers.abs_max_quantize(x, axis=-1)
    assert scale[0, 0] == np.float32(127) / np.float32(1e-7) and (q[0] == 0).all()
    np.testing.assert_array_equal(q[1], [127, 0])
    assert np.isnan(scale[2, 0]) and np.isnan(scale[3, 0]) and (q[2:] == 0).all()
    halves = np.array([[2.5, 127.0, -3.5]], np.float32)  # scale ~1: 2.5 → 2, -3.5 → -4
    np.testing.assert_array_equal(quantizers.abs_max_quantize(halves, axis=-1)[0], [[2, 127, -4]])


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "softmax", "tanh"])
@pytest.mark.parametrize("m, k, n", [(1, 784, 256), (13, 130, 100), (64, 256, 10), (3, 5, 1)])
def test_int8_dense_is_the_dequantized_integer_product(path, m, k, n, activation):
    rng = np.random.default_rng(k + n)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(k, n)).astype(np.float32) * 0.1
    b = rng.normal(size=n).astype(np.float32)
    w_q, w_scale = _keras_abs_max(w, 0)  # per output channel, as Dense.quantize
    y = quantizers.int8_dense(x, quantizers.pack_int8(w_q), w_scale.reshape(-1), b, activation)
    x_q, x_scale = _keras_abs_max(x, -1)
    z = (x_q.astype(np.int64) @ w_q.astype(np.int64)).astype(np.float32) / (x_scale * w_scale) + b
    reference = {None: z, "relu": np.maximum(z, 0), "sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z),
                 "softmax": np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1,
                                                                                                    keepdims=True)}
    if activation in (None, "relu"):
        np.testing.assert_array_equal(y, reference[activation])  # the same float32 operations
    else:
        np.testing.assert_allclose(y, reference[activation], rtol=2e-6, atol=1e-7)
    # and close to the float product: the quantization error of 8 bits
    np.testing.assert_allclose(quantizers.int8_dense(x, quantizers.pack_int8(w_q), w_scale.reshape(-1), b),
                               x @ w + b, atol=0.05 * np.abs(x @ w).max() + 1e-6)


def test_int8_dense_keeps_leading_axes_and_propagates_nan_rows():
    rng = np.random.default_rng(0)
    w_q, w_scale = _keras_abs_max(rng.normal(size=(6, 4)).astype(np.float32), 0)
    x = rng.normal(size=(2, 3, 6)).astype(np.float32)
    x[1, 2, 0] = np.nan
    y = quantizers.int8_dense(x, quantizers.pack_int8(w_q), w_scale.reshape(-1))
    assert y.shape == (2, 3, 4)
    assert np.isnan(y[1, 2]).all() and np.isfinite(np.delete(y.reshape(6, 4), 5, axis=0)).all()


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    packed = quantizers.pack_int8(_int8(rng, (4, 3)))
    with pytest.raises(ValueError, match=r"pack_int8: 'b' must hold values in \[-127, 127\]"):
        quantizers.pack_int8(np.full((2, 2), -128))
    with pytest.raises(TypeError, match="pack_int8: 'b' must hold integers"):
        quantizers.pack_int8(np.ones((2, 2)))
    with pytest.raises(ValueError, match="pack_int8: 'b' must be 2-D"):
        quantizers.pack_int8(np.ones(3, np.int8))
    with pytest.raises(ValueError, match="at most 65536"):
        quantizers.pack_int8(np.zeros((65537, 1), np.int8))
    with pytest.raises(ValueError, match="int8_matmul: 'a' has 5 columns"):
        quantizers.int8_matmul(np.zeros((2, 5), np.int8), packed)
    with pytest.raises(TypeError, match="int8_dense: 'kernel' must be a PackedInt8"):
        quantizers.int8_dense(np.zeros((1, 4)), np.zeros((4, 3), np.int8), np.ones(3))
    with pytest.raises(ValueError, match="int8_dense: 'x' has 5 features"):
        quantizers.int8_dense(np.zeros((1, 5)), packed, np.ones(3))
    with pytest.raises(ValueError, match="int8_dense: 'kernel_scale' must have 3 values"):
        quantizers.int8_dense(np.zeros((1, 4)), packed, np.ones(4))
    with pytest.raises(ValueError, match="int8_dense: 'bias' must have 3 values"):
        quantizers.int8_dense(np.zeros((1, 4)), packed, np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="int8_dense: unknown activation"):
        quantizers.int8_dense(np.zeros((1, 4)), packed, np.ones(3), activation="nope")
    with pytest.raises(ValueError, match="set_int8_path: 'path' must be"):
        quantizers.set_int8_path("sse")
    with pytest.raises(ValueError, match="abs_max_quantize: 'dtype'"):
        quantizers.abs_max_quantize(np.ones(3), axis=-1, dtype="int4")
    # the kernel entry points check dtypes themselves
    with pytest.raises(TypeError, match="int8_matmul: 'a' must be a C-contiguous int8 array"):
        fastnn._core.int8_matmul(np.zeros((2, 4), np.int16), packed.packed, packed.col_sums, 3)
    with pytest.raises(ValueError, match="int8_matmul: 'packed'"):
        fastnn._core.int8_matmul(np.zeros((2, 8), np.int8), packed.packed, packed.col_sums, 3)


def test_the_paths_are_reported():
    assert quantizers.int8_best_path() in ("vnni", "avx2", "scalar")
    assert quantizers.int8_path() == quantizers.int8_best_path()
