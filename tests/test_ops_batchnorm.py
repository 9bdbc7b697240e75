"""Batch normalisation kernels (cpp/include/fastnn/batchnorm.hpp via fastnn.ops).

Forward (training and inference) and backward are compared with NumPy references on many
shapes (2-D, NHWC, channels-first, one channel, a batch of one, thousands of channels,
sizes that leave partial tiles and blocks), in float32 and float64; dx, dgamma and dbeta
with central finite differences in float64; the moving averages with the EMA formula;
results on 1 and 2 threads bit for bit; bad input must fail clearly and change nothing.
"""

import numpy as np
import pytest

import fastnn
from fastnn import ops
from finite_differences import numeric_gradient

H = 1e-5  # finite-difference step


# ----------------------------------------------------------------------------------------
# References (float64)
# ----------------------------------------------------------------------------------------
def _axes(x, axis):
    axis %= x.ndim
    return tuple(d for d in range(x.ndim) if d != axis), [-1 if d == axis else 1 for d in range(x.ndim)]


def ref_forward(x, axis, gamma=None, beta=None, mean=None, variance=None, eps=1e-3):
    """Batch statistics when mean/variance are None; returns (y, mean, variance)."""
    x = np.asarray(x, np.float64)
    red, shape = _axes(x, axis)
    if mean is None:
        mean, variance = x.mean(axis=red), x.var(axis=red)
    mean, variance = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + eps)
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64).reshape(shape)
    if beta is not None:
        y = y + np.asarray(beta, np.float64).reshape(shape)
    return y, mean, variance


def ref_backward(x, dy, axis, gamma=None, eps=1e-3, mean=None, variance=None):
    """(dx, dgamma, dbeta); batch statistics when mean/variance are None, else fixed ones."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    red, shape = _axes(x, axis)
    batch = mean is None
    if batch:
        mean, variance = x.mean(axis=red), x.var(axis=red)
    s = 1 / np.sqrt(np.asarray(variance, np.float64) + eps)
    g = np.ones_like(s) if gamma is None else np.asarray(gamma, np.float64)
    xhat = (x - np.asarray(mean, np.float64).reshape(shape)) * s.reshape(shape)
    n = x.size // x.shape[axis]
    dgamma, dbeta = (dy * xhat).sum(axis=red), dy.sum(axis=red)
    if batch:
        dx = (g * s).reshape(shape) / n * (n * dy - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))
    else:
        dx = (g * s).reshape(shape) * dy
    return dx, dgamma, dbeta


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _data(rng, shape, axis, dtype, loc=0.5, scale=2.0):
    c = shape[axis]
    x = (rng.standard_normal(shape) * scale + loc).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-1, 1, c).astype(dtype)
    return x, gamma, beta


# (shape, axis): channels last (inner = 1) in many sizes, channels-first runs, one channel.
SHAPES = [
    ((7, 5), -1),            # 2-D (N, C), tiny
    ((1, 8), -1),            # a batch of one: zero variance
    ((37, 32), -1),          # rows not a multiple of the tile (8 rows of 32): a tail
    ((5000, 16), -1),        # several reduction tasks, tiles of 16 rows, a tail of 8
    ((300, 3), -1),          # a prime channel count (tiles of 96 rows)
    ((2, 2000), -1),         # more channels than a channel group (1024): two groups
    ((257, 1), -1),          # one channel
    ((4, 6, 6, 32), -1),     # NHWC
    ((2, 5, 7, 3), -1),      # NHWC, odd sizes
    ((4, 3, 9, 7), 1),       # NCHW-like, axis=1: runs of 63
    ((2, 16, 5, 5), 1),      # axis=1, more channels
    ((3, 1, 5, 5), 1),       # axis=1 with one channel (read as one long channel)
    ((2, 3, 5000), 1),       # runs longer than a sub-block (4096): split runs
    ((33, 17), 0),           # axis 0: channels first without an outer axis
    ((6, 4, 5), -2),         # a negative middle axis
]
SHAPE_IDS = [f"{'x'.join(map(str, s))}-axis{a}" for s, a in SHAPES]


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=SHAPE_IDS)
def test_training_forward_matches_numpy(shape, axis, dtype, rng):
    x, gamma, beta = _data(rng, shape, axis, dtype)
    c = shape[axis]
    mm, mv = np.zeros(c, dtype), np.ones(c, dtype)
    y, mean, invstd = ops.batch_norm_forward(x, gamma, beta, mm, mv, axis=axis, momentum=0.9)
    y_ref, mean_ref, var_ref = ref_forward(x, axis, gamma, beta)
    assert y.dtype == mean.dtype == invstd.dtype == dtype
    assert y.shape == x.shape and mean.shape == invstd.shape == (c,)
    np.testing.assert_allclose(y, y_ref, **_tol(dtype))
    np.testing.assert_allclose(mean, mean_ref, **_tol(dtype))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var_ref + 1e-3), **_tol(dtype))
    # The moving averages use the biased batch variance (Keras).
    np.testing.assert_allclose(mm, 0.1 * mean_ref, **_tol(dtype))
    np.testing.assert_allclose(mv, 0.9 + 0.1 * var_ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=SHAPE_IDS)
def test_inference_forward_uses_the_given_statistics(shape, axis, dtype, rng):
    x, gamma, beta = _data(rng, shape, axis, dtype)
    c = shape[axis]
    mean = rng.standard_normal(c).astype(dtype)
    var = rng.uniform(0.1, 3, c).astype(dtype)
    before = (mean.copy(), var.copy())
    y, m_out, invstd = ops.batch_norm_forward(x, gamma, beta, mean, var, axis=axis, training=False)
    y_ref, _, _ = ref_forward(x, axis, gamma, beta, mean, var)
    np.testing.assert_allclose(y, y_ref, **_tol(dtype))
    np.testing.assert_array_equal(m_out, mean)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var.astype(np.float64) + 1e-3), **_tol(dtype))
    np.testing.assert_array_equal(mean, before[0])  # inference never changes the statistics
    np.testing.assert_array_equal(var, before[1])
    # Keras' op gives the same.
    np.testing.assert_array_equal(ops.batch_normalization(x, mean, var, axis, offset=beta, scale=gamma), y)


def test_keras_op_example_and_defaults():
    x = np.array([[0.1, 0.7], [0.2, 0.5]], np.float32)
    y = ops.batch_normalization(x, mean=[0.15, 0.6], variance=[0.0025, 0.01], axis=-1, epsilon=0.0001)
    np.testing.assert_allclose(y, [[-0.98058, 0.99503], [0.98058, -0.99503]], rtol=1e-4)
    # no offset / scale: plain standardisation with epsilon 1e-3
    y = ops.batch_normalization(x, mean=[0.0, 0.0], variance=[1.0, 1.0], axis=1)
    np.testing.assert_allclose(y, x / np.sqrt(1.001), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_center_and_scale_off(dtype, rng):
    x = rng.standard_normal((40, 6)).astype(dtype)
    y, mean, invstd = ops.batch_norm_forward(x)  # no gamma, beta, moving statistics
    y_ref, _, _ = ref_forward(x, -1)
    np.testing.assert_allclose(y, y_ref, **_tol(dtype))
    gamma = rng.uniform(0.5, 2, 6).astype(dtype)
    y_scale, _, _ = ops.batch_norm_forward(x, gamma=gamma)
    np.testing.assert_allclose(y_scale, y_ref * gamma, **_tol(dtype))
    beta = rng.uniform(-1, 1, 6).astype(dtype)
    y_center, _, _ = ops.batch_norm_forward(x, beta=beta)
    np.testing.assert_allclose(y_center, y_ref + beta, **_tol(dtype))


def test_batch_of_one_gives_beta(rng):
    x = rng.standard_normal((1, 5)).astype(np.float32)
    beta = np.arange(5, dtype=np.float32)
    y, mean, invstd = ops.batch_norm_forward(x, gamma=np.full(5, 3, np.float32), beta=beta)
    np.testing.assert_array_equal(y, beta[None])  # zero variance: x - mean is exactly 0
    np.testing.assert_array_equal(mean, x[0])
    np.testing.assert_allclose(invstd, 1 / np.sqrt(1e-3), rtol=1e-6)


def test_variance_is_accurate_far_from_zero(rng):
    # Mean 1e4, standard deviation 1: E[x²] - E[x]² in float32 would lose every digit.
    x = (1e4 + rng.standard_normal((20000, 4))).astype(np.float32)
    _, mean, invstd = ops.batch_norm_forward(x, epsilon=1e-6)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-7)
    var = 1 / invstd.astype(np.float64) ** 2 - 1e-6
    np.testing.assert_allclose(var, x64.var(0), rtol=1e-4)


def test_moving_statistics_follow_the_ema_over_steps(rng):
    c, momentum = 12, 0.8
    mm, mv = np.zeros(c), np.ones(c)
    ema_mean, ema_var = np.zeros(c), np.ones(c)
    for step in range(6):
        x = rng.normal(step, 1 + step, (50, 3, c))
        ops.batch_norm_forward(x, moving_mean=mm, moving_variance=mv, momentum=momentum)
        red = (0, 1)
        ema_mean = ema_mean * momentum + x.mean(red) * (1 - momentum)
        ema_var = ema_var * momentum + x.var(red) * (1 - momentum)
        np.testing.assert_allclose(mm, ema_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mv, ema_var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_bounds(momentum, rng):
    x = rng.standard_normal((30, 4))
    mm, mv = np.full(4, 2.0), np.full(4, 3.0)
    _, mean, invstd = ops.batch_norm_forward(x, moving_mean=mm, moving_variance=mv, momentum=momentum)
    if momentum == 1.0:  # nothing moves
        np.testing.assert_array_equal(mm, 2.0)
        np.testing.assert_array_equal(mv, 3.0)
    else:  # the batch statistics replace them
        np.testing.assert_allclose(mm, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(mv, x.var(0), rtol=1e-12)


def test_moving_statistics_may_be_views_of_a_flat_buffer(rng):
    flat = np.zeros(20)
    flat[5:10] = 0.0
    flat[10:15] = 1.0
    x = rng.standard_normal((16, 5))
    ops.batch_norm_forward(x, moving_mean=flat[5:10], moving_variance=flat[10:15], momentum=0.5)
    np.testing.assert_allclose(flat[5:10], 0.5 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(flat[10:15], 0.5 + 0.5 * x.var(0), rtol=1e-12)
    assert not flat[:5].any() and not flat[15:].any()


def test_nan_stays_in_its_channel(rng):
    x = rng.standard_normal((10, 3))
    x[4, 1] = np.nan
    y, mean, _ = ops.batch_norm_forward(x)
    assert np.isnan(y[:, 1]).all() and np.isnan(mean[1])
    assert np.isfinite(y[:, [0, 2]]).all()


def test_empty_inputs():
    x = np.zeros((0, 4), np.float32)
    y, _, _ = ops.batch_norm_forward(x, moving_mean=np.zeros(4, np.float32), moving_variance=np.ones(4, np.float32),
                                     training=False)
    assert y.shape == (0, 4)
    dg, db = np.full(4, 7, np.float32), np.full(4, 7, np.float32)
    dx = ops.batch_norm_backward(x, x, np.zeros(4, np.float32), np.ones(4, np.float32), training=False,
                                 dgamma=dg, dbeta=db)
    assert dx.shape == (0, 4)
    np.testing.assert_array_equal(dg, 0)  # sums over no values
    np.testing.assert_array_equal(db, 0)
    y, _, _ = ops.batch_norm_forward(np.zeros((3, 0), np.float32))  # no channels
    assert y.shape == (3, 0)


# ----------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=SHAPE_IDS)
def test_backward_matches_numpy(shape, axis, dtype, rng):
    x, gamma, beta = _data(rng, shape, axis, dtype)
    c = shape[axis]
    dy = rng.standard_normal(shape).astype(dtype)
    _, mean, invstd = ops.batch_norm_forward(x, gamma, beta, axis=axis)
    dgamma, dbeta = np.empty(c, dtype), np.empty(c, dtype)
    dx = ops.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis, dgamma=dgamma, dbeta=dbeta)
    dx_ref, dg_ref, db_ref = ref_backward(x, dy, axis, gamma)
    tol = _tol(dtype)
    if dtype == np.float32:  # sums over up to 10,000 values; dx cancels three terms
        scale = max(1.0, np.abs(dx_ref).max())
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(dgamma, dg_ref, rtol=1e-4, atol=1e-4 * np.sqrt(x.size / c))
        np.testing.assert_allclose(dbeta, db_ref, rtol=1e-4, atol=1e-4 * np.sqrt(x.size / c))
    else:
        np.testing.assert_allclose(dx, dx_ref, **tol)
        np.testing.assert_allclose(dgamma, dg_ref, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(dbeta, db_ref, rtol=1e-10, atol=1e-9)

    # Fixed statistics (inference mode): dx = gamma·invstd·dy; same dgamma/dbeta formula.
    mean_f = rng.standard_normal(c).astype(dtype)
    var_f = rng.uniform(0.5, 2, c).astype(dtype)
    _, m_out, inv_f = ops.batch_norm_forward(x, gamma, beta, mean_f, var_f, axis=axis, training=False)
    dx = ops.batch_norm_backward(dy, x, m_out, inv_f, gamma, axis=axis, training=False, dgamma=dgamma, dbeta=dbeta)
    dx_ref, dg_ref, db_ref = ref_backward(x, dy, axis, gamma, mean=mean_f, variance=var_f)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    atol = 1e-4 * np.sqrt(x.size / c) if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(dgamma, dg_ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=atol)
    np.testing.assert_allclose(dbeta, db_ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=atol)


def _numeric_gradient(loss, target):
    """Central differences of loss() with respect to the array `target` (perturbed in place)."""
    return numeric_gradient(loss, target, H)


def _assert_gradient(got, fd, what):
    rel = np.linalg.norm(got - fd) / max(np.linalg.norm(fd), 1e-12)
    assert rel < 1e-6, f"{what}: relative error {rel:.3g}"
    assert np.all(np.abs(got - fd) <= 1e-6 * np.abs(fd) + 1e-8), f"{what}: max error {np.abs(got - fd).max():.3g}"


@pytest.mark.parametrize("shape,axis", [((6, 4), -1), ((2, 3, 3, 5), -1), ((3, 4, 2, 3), 1), ((1, 3), -1),
                                        ((9, 1), -1), ((2, 3, 4), 0)])
@pytest.mark.parametrize("training", [True, False])
def test_gradients_match_finite_differences(shape, axis, training, rng):
    x, gamma, beta = _data(rng, shape, axis, np.float64)
    c = shape[axis]
    dy = rng.uniform(-1, 1, shape)
    mean_f, var_f = rng.standard_normal(c), rng.uniform(0.5, 2, c)

    def forward():
        if training:
            return ops.batch_norm_forward(x, gamma, beta, axis=axis)
        return ops.batch_norm_forward(x, gamma, beta, mean_f, var_f, axis=axis, training=False)

    def loss():
        return float(np.sum(forward()[0] * dy))

    _, mean, invstd = forward()
    dgamma, dbeta = np.empty(c), np.empty(c)
    dx = ops.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis, training=training, dgamma=dgamma,
                                 dbeta=dbeta)
    _assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    _assert_gradient(dgamma, _numeric_gradient(loss, gamma), "dgamma")
    _assert_gradient(dbeta, _numeric_gradient(loss, beta), "dbeta")


def test_backward_options(rng):
    x, gamma, _ = _data(rng, (20, 4), -1, np.float32)
    dy = rng.standard_normal((20, 4)).astype(np.float32)
    _, mean, invstd = ops.batch_norm_forward(x, gamma)
    dg, db = np.empty(4, np.float32), np.empty(4, np.float32)
    dx = ops.batch_norm_backward(dy, x, mean, invstd, gamma, dgamma=dg, dbeta=db)
    # need_dx=False: only the parameter gradients
    dg2, db2 = np.zeros(4, np.float32), np.zeros(4, np.float32)
    assert ops.batch_norm_backward(dy, x, mean, invstd, gamma, dgamma=dg2, dbeta=db2, need_dx=False) is None
    np.testing.assert_array_equal(dg2, dg)
    np.testing.assert_array_equal(db2, db)
    # accumulate adds
    ops.batch_norm_backward(dy, x, mean, invstd, gamma, dgamma=dg2, dbeta=db2, accumulate=True, need_dx=False)
    np.testing.assert_allclose(dg2, 2 * dg, rtol=1e-6)
    np.testing.assert_allclose(db2, 2 * db, rtol=1e-6)
    # skipping the parameter gradients does not change dx
    np.testing.assert_array_equal(ops.batch_norm_backward(dy, x, mean, invstd, gamma), dx)
    # scale=False is gamma = 1
    _, mean1, invstd1 = ops.batch_norm_forward(x)
    np.testing.assert_array_equal(ops.batch_norm_backward(dy, x, mean1, invstd1),
                                  ops.batch_norm_backward(dy, x, mean1, invstd1, np.ones(4, np.float32)))


def test_lists_and_integers_are_converted():
    y, mean, _ = ops.batch_norm_forward([[1, 2], [3, 6]])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(mean, [2, 4])


# ----------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((64, 14, 14, 64), -1), ((32, 12, 40, 40), 1), ((300000, 3), -1),
                                        ((200, 3000), -1)])
def test_bit_identical_on_one_and_two_threads(shape, axis, dtype, threads, rng):
    # Big enough for two threads (kernels stay on one below ~1.5 MFLOP, 4 flops a value).
    assert 4 * np.prod(shape) > 1.5e6
    x, gamma, beta = _data(rng, shape, axis, dtype, loc=3.0)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[axis]
    results = []
    for n in (1, 2):
        threads(n)
        mm, mv = np.zeros(c, dtype), np.ones(c, dtype)
        y, mean, invstd = ops.batch_norm_forward(x, gamma, beta, mm, mv, axis=axis)
        dg, db = np.empty(c, dtype), np.empty(c, dtype)
        dx = ops.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis, dgamma=dg, dbeta=db)
        results.append((y, mean, invstd, mm, mv, dx, dg, db))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------
def _stats(c=4, dtype=np.float32):
    return np.zeros(c, dtype), np.ones(c, dtype)


@pytest.mark.parametrize("axis", [2, -3, 7])
def test_axis_out_of_range(axis):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"batchnorm_forward: 'axis' must be in \[-2, 2\) for 'x' of shape \(3, 4\)"):
        ops.batch_norm_forward(x, axis=axis)
    with pytest.raises(ValueError, match="batchnorm_backward: 'axis'"):
        ops.batch_norm_backward(x, x, np.zeros(4, np.float32), np.ones(4, np.float32), axis=axis)


def test_per_channel_arguments_must_match_the_channels():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"'gamma' must have shape \(4,\).*axis 1 of 'x' of shape \(3, 4\).*got \(5,\)"):
        ops.batch_norm_forward(x, gamma=np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"'beta' must have shape \(3,\)"):
        ops.batch_norm_forward(x, beta=np.ones(4, np.float32), axis=0)
    with pytest.raises(ValueError, match=r"'moving_mean' must hold 4 values, got 3"):
        ops.batch_norm_forward(x, moving_mean=np.zeros(3, np.float32), moving_variance=np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"'mean' must have shape \(4,\)"):
        ops.batch_norm_backward(x, x, np.zeros(2, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"'dy' must have shape \(3, 4\), got \(4, 3\)"):
        ops.batch_norm_backward(np.zeros((4, 3), np.float32), x, *_stats())
    with pytest.raises(ValueError, match=r"'dgamma' must have shape \(4,\), got \(3,\)"):
        ops.batch_norm_backward(x, x, *_stats(), dgamma=np.zeros(3, np.float32))


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_momentum_outside_0_1(momentum):
    mm, mv = _stats()
    with pytest.raises(ValueError, match=r"'momentum' must be in \[0, 1\]"):
        ops.batch_norm_forward(np.ones((3, 4), np.float32), moving_mean=mm, moving_variance=mv, momentum=momentum)
    np.testing.assert_array_equal(mm, 0)  # nothing changed
    np.testing.assert_array_equal(mv, 1)


@pytest.mark.parametrize("epsilon", [0.0, -1e-3, float("inf")])
def test_epsilon_must_be_positive(epsilon):
    with pytest.raises(ValueError, match="'epsilon' must be a finite number > 0"):
        ops.batch_norm_forward(np.ones((3, 4), np.float32), epsilon=epsilon)


def test_statistics_arguments():
    x = np.ones((3, 4), np.float32)
    mm, mv = _stats()
    with pytest.raises(ValueError, match="inference mode .* needs 'moving_mean' and 'moving_variance'"):
        ops.batch_norm_forward(x, training=False)
    with pytest.raises(ValueError, match="give both 'moving_mean' and 'moving_variance'"):
        ops.batch_norm_forward(x, moving_mean=mm)
    with pytest.raises(ValueError, match="'moving_variance' must be >= 0, got -1 for channel 2"):
        ops.batch_norm_forward(x, moving_mean=mm, moving_variance=np.array([1, 1, -1, 1], np.float32), training=False)
    with pytest.raises(ValueError, match="training mode needs at least one value per channel"):
        ops.batch_norm_forward(np.zeros((0, 4), np.float32), moving_mean=mm, moving_variance=mv)
    with pytest.raises(ValueError, match="'moving_variance' shares memory with 'moving_mean'"):
        ops.batch_norm_forward(x, moving_mean=mm, moving_variance=mm)
    with pytest.raises(TypeError, match="'mean' and 'invstd' .* are required"):
        ops.batch_norm_backward(x, x, None, None)


def test_moving_statistics_must_be_writeable_float_arrays_of_the_call_dtype():
    x = np.ones((3, 4), np.float32)
    mm, mv = _stats()
    with pytest.raises(TypeError, match="'moving_mean' must be a numpy.ndarray of float32, got list"):
        ops.batch_norm_forward(x, moving_mean=[0, 0, 0, 0], moving_variance=mv)
    frozen = mm.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="'moving_mean' is read-only"):
        ops.batch_norm_forward(x, moving_mean=frozen, moving_variance=mv)
    strided = np.zeros(8, np.float32)[::2]
    with pytest.raises(ValueError, match="'moving_variance' must be C-contiguous"):
        ops.batch_norm_forward(x, moving_mean=mm, moving_variance=strided)
    with pytest.raises(TypeError, match="'x' is float32 but 'moving_mean' is float64"):
        ops.batch_norm_forward(x, moving_mean=np.zeros(4), moving_variance=np.ones(4))
    np.testing.assert_array_equal(mv, 1)


def test_mixed_precision_and_bad_dtypes_are_refused():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="'x' is float32 but 'gamma' is float64"):
        ops.batch_norm_forward(x, gamma=np.ones(4))
    with pytest.raises(TypeError, match="'x' must hold real numbers"):
        ops.batch_norm_forward(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="'x' is float32 but 'dgamma' is float64"):
        ops.batch_norm_backward(x, x, *_stats(), dgamma=np.zeros(4))
    with pytest.raises(TypeError, match="'dgamma' must have dtype float32"):
        ops.batch_norm_backward(x, x, *_stats(), dgamma=np.zeros(4, np.float16))
    with pytest.raises(ValueError, match="'x' must have at least 1 dimension"):
        ops.batch_norm_forward(np.float32(3.0))


def test_gil_is_released_for_concurrent_calls(rng):
    import threading

    x = rng.standard_normal((64, 28, 28, 8)).astype(np.float32)
    expected = ops.batch_norm_forward(x)[0]
    out = [None] * 4

    def work(i):
        out[i] = ops.batch_norm_forward(x)[0]

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for y in out:
        np.testing.assert_array_equal(y, expected)


def test_exported_from_fastnn_ops():
    for name in ("batch_normalization", "batch_norm_forward", "batch_norm_backward"):
        assert name in fastnn.ops.__all__
