"""fastnn.ops.conv / conv_backward against a direct NumPy convolution and finite differences."""

import zlib

import numpy as np
import pytest

import fastnn
from fastnn import ops


def tf_padding(size, k, stride, dilation, padding):
    """(output size, padding before) by TensorFlow's rules, written independently of fastnn."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    if padding == "same":
        out = -(-size // stride)
        return out, max((out - 1) * stride + span - size, 0) // 2
    return (size - 1) // stride + 1, span - 1  # causal


def reference_conv(x, w, b, strides, padding, dilation):
    """z[n, i, j, f] = b[f] + Σ x[n, i·s + p·d - pad, j·s + q·d - pad, c] · w[p, q, c, f]."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    oh, pt = tf_padding(h, kh, strides[0], dilation[0], padding)
    ow, pl = tf_padding(wd, kw, strides[1], dilation[1], padding)
    # Pad generously on every side, then index.
    big = max(kh * dilation[0], kw * dilation[1]) + max(strides) * 2
    xp = np.zeros((n, h + 2 * big, wd + 2 * big, c), np.float64)
    xp[:, big:big + h, big:big + wd] = x
    z = np.zeros((n, oh, ow, f), np.float64)
    for p in range(kh):
        for q in range(kw):
            r0 = big - pt + p * dilation[0]
            c0 = big - pl + q * dilation[1]
            patch = xp[:, r0:r0 + oh * strides[0]:strides[0], c0:c0 + ow * strides[1]:strides[1]]
            z += patch[:, :oh, :ow] @ w[p, q].astype(np.float64)
    if b is not None:
        z += b
    return z


def reference_grads(x, w, dz, strides, padding, dilation):
    """dx, dw of sum(z · dz), by the transpose of reference_conv's gather."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    oh, pt = tf_padding(h, kh, strides[0], dilation[0], padding)
    ow, pl = tf_padding(wd, kw, strides[1], dilation[1], padding)
    big = max(kh * dilation[0], kw * dilation[1]) + max(strides) * 2
    xp = np.zeros((n, h + 2 * big, wd + 2 * big, c), np.float64)
    xp[:, big:big + h, big:big + wd] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape, np.float64)
    dz = dz.astype(np.float64)
    for p in range(kh):
        for q in range(kw):
            r0 = big - pt + p * dilation[0]
            c0 = big - pl + q * dilation[1]
            rows = slice(r0, r0 + (oh - 1) * strides[0] + 1, strides[0])
            cols = slice(c0, c0 + (ow - 1) * strides[1] + 1, strides[1])
            dw[p, q] = np.einsum("nijc,nijf->cf", xp[:, rows, cols], dz)
            dxp[:, rows, cols] += dz @ w[p, q].T.astype(np.float64)
    return dxp[:, big:big + h, big:big + wd], dw


# (batch, h, w, c, f, kh, kw, strides, padding, dilation)
CASES = [
    (2, 7, 7, 3, 4, 3, 3, (1, 1), "same", (1, 1)),
    (2, 7, 7, 3, 4, 3, 3, (1, 1), "valid", (1, 1)),
    (3, 8, 9, 2, 5, 3, 2, (2, 2), "same", (1, 1)),
    (3, 9, 8, 2, 5, 3, 3, (2, 3), "valid", (1, 1)),
    (2, 10, 10, 3, 2, 3, 3, (1, 1), "same", (2, 2)),
    (2, 11, 9, 1, 3, 2, 3, (1, 1), "valid", (3, 2)),
    (2, 6, 6, 5, 7, 1, 1, (1, 1), "valid", (1, 1)),   # pointwise: a plain GEMM
    (2, 6, 6, 5, 7, 1, 1, (2, 2), "same", (1, 1)),    # 1×1 with stride
    (1, 5, 5, 2, 3, 5, 5, (1, 1), "valid", (1, 1)),   # kernel = input: one output pixel
    (1, 5, 4, 2, 3, 5, 4, (1, 1), "same", (1, 1)),
    (4, 12, 12, 16, 24, 3, 3, (1, 1), "same", (1, 1)),
    (2, 9, 9, 4, 100, 3, 3, (1, 1), "same", (1, 1)),  # wide output: packed A panels
    (1, 4, 4, 3, 2, 4, 4, (3, 3), "same", (1, 1)),
    (5, 1, 13, 3, 4, 1, 4, (1, 2), "same", (1, 1)),   # height 1 (a 1-D convolution)
    # 3×3 stride 1 with ≥ 16 channels: Winograd F(2×2, 3×3), odd and even output sizes
    (3, 13, 13, 32, 64, 3, 3, (1, 1), "same", (1, 1)),
    (2, 7, 9, 16, 16, 3, 3, (1, 1), "valid", (1, 1)),
    (1, 4, 4, 20, 17, 3, 3, (1, 1), "same", (1, 1)),
    (2, 2, 5, 16, 18, 3, 3, (1, 1), "same", (1, 1)),
    (1, 3, 3, 16, 16, 3, 3, (1, 1), "valid", (1, 1)),  # a single output pixel
]


def _data(case, dtype, seed=0):
    n, h, wd, c, f, kh, kw = case[:7]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    w = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_numpy(case, dtype):
    x, w, b = _data(case, dtype)
    strides, padding, dilation = case[7:]
    y = ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b)
    ref = reference_conv(x, w, b, strides, padding, dilation)
    assert y.dtype == dtype and y.shape == ref.shape
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_backward_matches_numpy(case, dtype):
    x, w, b = _data(case, dtype)
    strides, padding, dilation = case[7:]
    y = ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = ops.conv_backward(x, w, dy, y, dw, db, strides, padding, dilation)
    ref_dx, ref_dw = reference_grads(x, w, dy, strides, padding, dilation)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol * np.abs(ref_dx).max())
    np.testing.assert_allclose(dw, ref_dw, rtol=tol, atol=tol * np.abs(ref_dw).max())
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 1, 2)), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], CASES[7]])
def test_gradients_match_finite_differences(case):
    """The reference gradients above are checked here against the definition."""
    x, w, b = _data(case, np.float64, seed=3)
    strides, padding, dilation = case[7:]
    y = ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b, activation="tanh")
    dy = np.random.default_rng(4).standard_normal(y.shape)
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = ops.conv_backward(x, w, dy, y, dw, db, strides, padding, dilation, activation="tanh")

    def loss(x_, w_, b_):
        return float((np.tanh(reference_conv(x_, w_, b_, strides, padding, dilation)) * dy).sum())

    rng = np.random.default_rng(5)
    eps = 1e-6
    for array, grad in ((x, dx), (w, dw), (b, db)):
        for flat in rng.choice(array.size, size=min(6, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            saved = array[idx]
            array[idx] = saved + eps
            up = loss(x, w, b)
            array[idx] = saved - eps
            down = loss(x, w, b)
            array[idx] = saved
            np.testing.assert_allclose(grad[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_accumulate_adds_to_gradients():
    x, w, b = _data(CASES[0], np.float64)
    y = ops.conv(x, w, 1, "same", bias=b)
    dy = np.ones_like(y)
    dw, db = np.empty_like(w), np.empty_like(b)
    ops.conv_backward(x, w, dy, y, dw, db, 1, "same", need_dx=False)
    dw2, db2 = dw.copy(), db.copy()
    assert ops.conv_backward(x, w, dy, y, dw2, db2, 1, "same", accumulate=True, need_dx=False) is None
    np.testing.assert_allclose(dw2, 2 * dw)
    np.testing.assert_allclose(db2, 2 * db)


NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "tanh": np.tanh,
}


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
def test_fused_activation(activation):
    x, w, b = _data(CASES[2], np.float64)
    y, z = ops.conv(x, w, 2, "same", bias=b, activation=activation, alpha=1.0, return_preactivation=True)
    ref = reference_conv(x, w, b, (2, 2), "same", (1, 1))
    np.testing.assert_allclose(z, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, NUMPY_ACTIVATIONS[activation](ref), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_conv1d_matches_numpy(padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 11, 4))
    w = rng.standard_normal((3, 4, 5))
    y = ops.conv(x, w, 1, padding, dilation_rate=2)
    if padding == "causal":  # all padding before: pad (k-1)·d zeros, then 'valid'
        ref = reference_conv(np.pad(x, ((0, 0), (4, 0), (0, 0)))[:, None], w[None], None, (1, 1), "valid",
                             (1, 2))[:, 0]
    else:
        ref = reference_conv(x[:, None], w[None], None, (1, 1), padding, (1, 2))[:, 0]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dw = np.empty_like(w)
    dx = ops.conv_backward(x, w, dy, y, dw, None, 1, padding, 2)
    if padding != "causal":
        ref_dx, ref_dw = reference_grads(x[:, None], w[None], dy[:, None], (1, 1), padding, (1, 2))
        np.testing.assert_allclose(dx, ref_dx[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, ref_dw[0], rtol=1e-12, atol=1e-12)
    else:
        xp = np.pad(x, ((0, 0), (4, 0), (0, 0)))
        ref_dx, ref_dw = reference_grads(xp[:, None], w[None], dy[:, None], (1, 1), "valid", (1, 2))
        np.testing.assert_allclose(dx, ref_dx[:, 0, 4:], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, ref_dw[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[3], CASES[10], (40, 14, 14, 8, 16, 3, 3, (1, 1), "same", (1, 1)),
                                  (12, 13, 13, 32, 64, 3, 3, (1, 1), "same", (1, 1))])  # Winograd, many blocks
def test_bit_identical_on_one_and_two_threads(case):
    x, w, b = _data(case, np.float32)
    strides, padding, dilation = case[7:]
    results = []
    saved = fastnn.config.get_num_threads()
    try:
        for threads in (1, 2):
            fastnn.config.set_num_threads(threads)
            y = ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b)
            dw, db = np.empty_like(w), np.empty_like(b)
            dx = ops.conv_backward(x, w, np.cos(y), y, dw, db, strides, padding, dilation)
            results.append((y, dx, dw, db))
    finally:
        fastnn.config.set_num_threads(saved)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# Depthwise (one group per channel), one output per channel: (batch, h, w, c, kh, kw, strides, padding,
# dilation). Channel counts around the SIMD widths (4, 8, 16 floats) exercise the vector tails; wide
# rows pair neighbouring pixels.
DEPTHWISE = [
    (2, 9, 11, 37, 3, 3, (1, 1), "same", (1, 1)),
    (2, 9, 11, 16, 3, 3, (1, 1), "valid", (1, 1)),
    (3, 10, 12, 3, 3, 3, (2, 2), "same", (1, 1)),
    (2, 12, 10, 33, 3, 3, (1, 1), "same", (2, 2)),
    (1, 7, 13, 8, 1, 5, (1, 1), "same", (1, 1)),
    (2, 8, 9, 40, 2, 4, (1, 2), "valid", (1, 1)),
    (1, 3, 2, 5, 3, 3, (1, 1), "same", (1, 1)),      # narrower than the kernel
    (2, 6, 6, 1, 3, 3, (1, 1), "same", (1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_matches_numpy_per_channel(case, dtype):
    n, h, wd, c, kh, kw, strides, padding, dilation = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    w = rng.standard_normal((kh, kw, 1, c)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    y = ops.conv(x, w, strides, padding, dilation_rate=dilation, bias=b)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = ops.conv_backward(x, w, dy, y, dw, db, strides, padding, dilation)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g in range(c):  # channel g alone is an ordinary one-channel convolution
        ref = reference_conv(x[..., g:g + 1], w[..., g:g + 1], b[g:g + 1], strides, padding, dilation)
        ref_dx, ref_dw = reference_grads(x[..., g:g + 1], w[..., g:g + 1], dy[..., g:g + 1], strides, padding,
                                         dilation)
        for got, want in ((y[..., g:g + 1], ref), (dx[..., g:g + 1], ref_dx), (dw[..., g:g + 1], ref_dw)):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 1, 2)), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("case", [DEPTHWISE[0], DEPTHWISE[3], DEPTHWISE[5]])
def test_depthwise_is_bit_identical_on_one_and_two_threads(case, threads):
    n, h, wd, c, kh, kw, strides, padding, dilation = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8 * n, h, wd, c)).astype(np.float32)
    w = rng.standard_normal((kh, kw, 1, c)).astype(np.float32)
    results = []
    for count in (1, 2):
        threads(count)
        y = ops.conv(x, w, strides, padding, dilation_rate=dilation)
        dw = np.empty_like(w)
        dx = ops.conv_backward(x, w, np.cos(y), y, dw, None, strides, padding, dilation)
        results.append((y, dx, dw))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_empty_batch():
    x = np.zeros((0, 5, 5, 2), np.float32)
    w = np.ones((3, 3, 2, 4), np.float32)
    y = ops.conv(x, w, 1, "same")
    assert y.shape == (0, 5, 5, 4)
    dw = np.full_like(w, 7.0)
    dx = ops.conv_backward(x, w, y, y, dw, None, 1, "same")
    assert dx.shape == x.shape and not dw.any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(padding="full"), "padding"),
    (dict(strides=0), "strides"),
    (dict(strides=(1, 2, 3)), "strides"),
    (dict(dilation_rate=0), "dilation"),
    (dict(data_format="channels_first"), "data_format"),
])
def test_bad_arguments(kwargs, message):
    x = np.zeros((1, 5, 5, 2), np.float32)
    w = np.ones((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        ops.conv(x, w, **kwargs)


def test_bad_shapes():
    x = np.zeros((1, 5, 5, 2), np.float32)
    with pytest.raises(ValueError, match="channels|in"):
        ops.conv(x, np.ones((3, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="inputs"):
        ops.conv(np.zeros((5, 5)), np.ones((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="valid"):
        ops.conv(x, np.ones((7, 7, 2, 4), np.float32), padding="valid")
    with pytest.raises(ValueError, match=r"^conv: 'kernel' must have 4 dimensions, got 3"):
        ops.conv(x, np.ones((3, 3, 2), np.float32))
    with pytest.raises(ValueError, match="causal"):
        ops.conv(x, np.ones((3, 3, 2, 4), np.float32), padding="causal")
    with pytest.raises(TypeError, match="^conv: 'kernel' must hold real numbers"):
        ops.conv(x, np.ones((3, 3, 2, 4), np.complex64))
    with pytest.raises(TypeError, match="^conv: 'inputs' is float64 but 'kernel' is float32"):
        ops.conv(x.astype(np.float64), np.ones((3, 3, 2, 4), np.float32))
