"""What the property suites (test_property_ops.py, test_property_layers.py) found, one focused
test each, so every fix stays covered whatever examples Hypothesis draws."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn import losses, ops

BIG = 2**63 - 1


# ---- batch and layer normalisation of non-finite values: NumPy's mean and variance ------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_statistics_of_a_channel_holding_inf_or_nan(dtype):
    x = np.array([[np.inf, 1, np.nan], [0, 2, 1], [1, 4, 2]], dtype)
    mm, mv = np.zeros(3, dtype), np.ones(3, dtype)
    y, mean, invstd = ops.batch_norm_forward(x, moving_mean=mm, moving_variance=mv, axis=1, epsilon=1e-3,
                                             momentum=0.5)
    with np.errstate(invalid="ignore"):
        want_mean, want_var = x.astype(np.float64).mean(axis=0), x.astype(np.float64).var(axis=0)
    np.testing.assert_array_equal(mean[[0, 2]], want_mean[[0, 2]].astype(dtype))  # inf, NaN
    assert np.isnan(invstd[0]) and np.isnan(invstd[2])  # was 1 / sqrt(epsilon): variance max(0, NaN) = 0
    np.testing.assert_allclose(invstd[1], 1 / np.sqrt(want_var[1] + 1e-3), rtol=1e-6)
    assert np.all(np.isnan(y[:, [0, 2]])) and np.all(np.isfinite(y[:, 1]))
    assert mm[0] == np.inf and np.isnan(mm[2]) and np.isnan(mv[0]) and np.isnan(mv[2])
    np.testing.assert_allclose(mv[1], 0.5 + 0.5 * want_var[1], rtol=1e-6)


@pytest.mark.parametrize("mode, want_y", [("standard", [np.nan, np.nan]), ("rms_scaling", [np.nan, np.nan]),
                                          ("rms", [np.nan, 0.0])])
def test_layer_norm_of_a_row_holding_inf(mode, want_y):
    """Standard: (x - inf) / sqrt(NaN); Keras' rms_scaling: x / sqrt(var = NaN); RMS: x / sqrt(mean(x²) =
    inf), so the finite value gives 0. Before: mean NaN, invstd 1 / sqrt(epsilon), finite outputs."""
    x = np.array([[np.inf, 0.0], [1.0, 3.0]], np.float32)
    y, mean, invstd = ops.layer_norm_forward(x, axis=-1, mode=mode)
    np.testing.assert_array_equal(y[0], np.array(want_y, np.float32))
    assert mean[0] == np.inf
    assert np.isnan(invstd[0]) if mode != "rms" else invstd[0] == 0
    np.testing.assert_allclose(mean[1], 2.0)


def test_batch_norm_backward_with_channels_but_no_values_does_not_crash():
    """x of shape (2, 0) with axis=0: two channels, no values after the axis. The runs layout
    divided by the run length (0): SIGFPE. Run in a child so a crash fails the test only."""
    script = textwrap.dedent("""
        import numpy as np
        from fastnn import ops
        dx = ops.batch_norm_backward(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32),
                                     np.zeros(2, np.float32), np.ones(2, np.float32), axis=0)
        print(dx.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 0)"


def test_huge_channel_count_without_values_is_refused_before_allocating():
    x = np.zeros((0, 2**40), np.float32)  # no values, 2**40 channels: 8 TiB of statistics
    with pytest.raises(ValueError, match=r"batch_normalization: 'mean' must have shape \(1099511627776,\)"):
        ops.batch_normalization(x, np.zeros(0, np.float32), np.zeros(0, np.float32), axis=1)
    with pytest.raises(ValueError, match="training mode needs at least one value per channel"):
        ops.batch_norm_forward(x, axis=1)


def test_batch_normalization_errors_use_keras_argument_names():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^batch_normalization: 'offset' must have shape \(3,\)"):
        ops.batch_normalization(x, np.zeros(3, np.float32), np.ones(3, np.float32), -1,
                                offset=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"^batch_normalization: 'variance' must have shape \(3,\)"):
        ops.batch_normalization(x, np.zeros(3, np.float32), np.ones(4, np.float32), -1)


# ---- losses, pooling, embedding ---------------------------------------------------------------
def test_a_loss_over_an_empty_class_axis_is_refused():
    """Before: per-row losses left uninitialised, the mean 0.0 and sample weights refused."""
    with pytest.raises(ValueError, match=r"'y_pred' of shape \(3, 0\) has an empty last \(class\) axis"):
        losses.mean_squared_error(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))
    assert losses.MeanSquaredError()(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)) == 0.0


def test_global_pool_backward_height_times_width_is_checked():
    with pytest.raises(ValueError, match=r"'input_shape' height × width \(4611686018427387905 × 4\) exceeds"):
        ops.global_average_pool_backward(np.zeros((1, 1), np.float32), (1, 2**62 + 1, 4, 1))


def test_embedding_backward_of_an_empty_table_allocates_nothing_per_word():
    dtable = ops.embedding_backward(np.array([0, 5]), np.zeros((2, 0), np.float32), 2**40)
    assert dtable.shape == (2**40, 0) and dtable.dtype == np.float32


# ---- optimizer helpers: their arrays under their own names, integers and reals only ---------
@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.sum_squares(np.ones(4, np.float32), [0.0, 2.7]), TypeError,
     r"sum_squares: 'offsets' must hold integers"),  # was truncated to [0, 2]
    (lambda: ops.scale_segments(np.ones(4, np.float32), [0, 4], [1 + 5j]), TypeError,
     r"scale_segments: 'factors' must hold real numbers"),  # was the real part
    (lambda: ops.l1_l2_regularize(np.ones(2, np.float32), np.zeros(2, np.float32), [0, 2], ["1"], [0.0]),
     TypeError, r"regularize: 'l1' must hold real numbers"),  # was parsed
    (lambda: ops.sum_squares(np.ones(4, np.float32), [[0, 4]]), ValueError, r"'offsets' must be 1-D"),
    (lambda: ops.clip_by_value([1.0], 1.0), TypeError, r"clip_by_value: 'g' must be a numpy.ndarray"),
    (lambda: ops.ema_update([1.0], np.ones(1), 0.5), TypeError, r"ema_update: 'ema' must be a numpy.ndarray"),
    (lambda: ops.clip_by_value(np.ones(2, np.float32), 0.0), ValueError, r"clip_by_value: 'clipvalue'"),
])
def test_optimizer_helper_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_optimizer_helpers_still_take_integer_and_real_arrays():
    g = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(ops.sum_squares(g, np.array([0, 2, 4], np.int32)), [1.0, 13.0])
    ops.scale_segments(g, [0, 2, 4], [True, 0.5])
    np.testing.assert_array_equal(g, [0, 1, 1, 1.5])


# ---- kernel argument names in the public functions' words ---------------------------------------
def test_conv_errors_name_inputs_and_kernel():
    with pytest.raises(ValueError, match=r"^conv: 'inputs' has 1 channels .* but 'kernel' expects 2 "
                                         r"\(kernel.shape="):
        ops.conv(np.ones((1, 4, 4, 1), np.float32), np.ones((2, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"^conv: 'bias' must have shape"):
        ops.conv(np.ones((1, 4, 4, 1), np.float32), np.ones((2, 2, 1, 3), np.float32), bias=np.ones(2, np.float32))


def test_rnn_errors_name_the_recurrent_dropout_mask():
    x = np.ones((2, 3, 4), np.float32)
    k, r = np.ones((4, 5), np.float32), np.ones((5, 5), np.float32)
    with pytest.raises(ValueError, match=r"^simple_rnn\w*: 'recurrent_dropout_mask' must have shape"):
        ops.simple_rnn(x, k, r, recurrent_dropout_mask=np.ones((2, 4), np.float32))


# ---- NumPy-like maths of unsigned integers: no wrap-around in -|x| or x - max ------------------
@pytest.mark.parametrize("name", ["sigmoid", "softplus", "softmax", "log_softmax", "logsumexp"])
def test_smooth_functions_of_unsigned_integers_match_their_float_values(name):
    x = np.array([0, 2, 1, 200], np.uint8)
    want = getattr(ops, name)(x.astype(np.float16))  # NumPy's float type for 8-bit integers
    got = getattr(ops, name)(x)  # was -|x| = 254 for 2: sigmoid 0, softplus inf, softmax NaN
    assert np.asarray(got).dtype == np.float16
    np.testing.assert_array_equal(got, want)


# ---- attention: a NaN logit gives NaN, not a masked (zero) row ----------------------------------
def test_attention_row_with_a_nan_logit_is_nan_not_masked():
    q = np.ones((1, 2, 1, 2), np.float32)  # (B, T, heads, d)
    k = np.array([[[[np.nan, 1.0]], [[1.0, 0.0]]]], np.float32)
    v = np.ones((1, 2, 1, 3), np.float32)
    out, lse, _ = ops.attention_forward(q, k, v, causal=True)
    assert np.all(np.isnan(out[0, 0])) and np.isnan(lse[0, 0, 0])  # row 0 sees only the NaN key: was 0, +inf
    assert np.all(np.isnan(out[0, 1]))  # row 1 sees it too
    masked, lse_masked, _ = ops.attention_forward(q, k, v, mask=np.zeros((1, 1, 2, 2), bool))
    assert np.all(masked == 0) and np.all(lse_masked == np.inf)  # every key masked: zeros


def test_an_empty_result_too_large_for_numpy_is_named():
    """NumPy refuses an empty array whose nonzero sizes multiply past 2**63 - 1 bytes ("array is
    too big", naming no function): the bindings check the same bound and name the function."""
    x = np.zeros((0, 1, 1, 0), np.float32)
    with pytest.raises(ValueError, match=r"^upsample2d: the result would have shape \(0, 2147483647, 2147483647, 0\)"):
        ops.upsample2d(x, 2**31 - 1)
    assert ops.upsample2d(x, 2**30).shape == (0, 2**30, 2**30, 0)  # (2**62 bytes: NumPy makes it)


def test_affine_transform_backward_names_an_input_size_too_large():
    from fastnn.ops import image

    with pytest.raises(ValueError, match=r"^image_affine_transform_backward: the result would have shape "
                                         r"\(5, 1099511627776, 1099511627776, 1\)"):  # was NumPy's "array is too big"
        image.affine_transform_backward(np.zeros((5, 4, 2, 1)), np.zeros(8, np.float32), (2**40, 2**40))


def test_amsgrad_maximum_keeps_a_nan_second_moment():
    """v_max = maximum(v_max, v) as Keras' ops.maximum: a NaN v stays NaN (std::max dropped it, and the
    step used the stale finite v_max)."""
    w, g, m = np.zeros(1), np.zeros(1), np.zeros(1)
    v, v_max = np.array([np.nan]), np.zeros(1)
    ops.adam_update(w, g, m=m, v=v, v_max=v_max, learning_rate=0.0, beta_1=0.0, beta_2=0.0, epsilon=1e-3, step=1)
    assert np.isnan(v_max[0]) and np.isnan(w[0])  # 0·(m / (sqrt(NaN) + eps)) is NaN, as in NumPy


def test_binary_crossentropy_from_logits_is_tensorflows_stable_form():
    """max(x, 0) - x·t + log(1 + e^-|x|), for any label (an infinite one gives -inf, as TensorFlow)."""
    t = np.array([[0.0, 1.0, 0.3, np.inf]], np.float32)
    x = np.array([[2.0, -1.5, 0.25, 1.0]], np.float32)
    want = np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))), axis=-1)
    got = losses.binary_crossentropy(t[:, :3], x[:, :3], from_logits=True)
    np.testing.assert_allclose(got, np.mean((np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))[:, :3], -1),
                               rtol=1e-6)
    assert losses.binary_crossentropy(t, x, from_logits=True)[0] == want[0] == -np.inf
