"""fastnn.ops.image.affine_transform (and its backward) against an independent NumPy version.

The reference extends each image with ``np.pad`` in the fill mode's NumPy equivalent
(Keras' NumPy backend does the same before scipy's map_coordinates), then samples the
padded image with vectorised indexing.
"""

import numpy as np
import pytest

import fastnn
from fastnn import _core

PAD_MODES = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "wrap": "wrap"}
FILL_MODES = ["constant", "nearest", "reflect", "mirror", "wrap"]


def _round_half_away(v):
    fl = np.floor(v)
    d = v - fl
    return fl + ((d > 0.5) | ((d == 0.5) & (v > 0)))


def reference(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0,
              output_size=None):
    """The warp in NumPy: pad the input in the fill mode, then sample it (float64 coordinates)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    oh, ow = output_size or (h, w)
    t = np.broadcast_to(np.asarray(transform, np.float64), (n, 8))
    y, x = np.meshgrid(np.arange(oh, dtype=np.float64), np.arange(ow, dtype=np.float64), indexing="ij")
    out = np.empty((n, oh, ow, c), images.dtype)
    for i in range(n):
        a0, a1, a2, b0, b1, b2, c0, c1 = t[i]
        k = c0 * x + c1 * y + 1.0
        sx = (a0 * x + a1 * y + a2) / k
        sy = (b0 * x + b1 * y + b2) / k
        if interpolation == "nearest":
            ix = [_round_half_away(sx).astype(np.int64)]
            iy = [_round_half_away(sy).astype(np.int64)]
        else:
            fx, fy = np.floor(sx), np.floor(sy)
            ix = [fx.astype(np.int64), fx.astype(np.int64) + 1]
            iy = [fy.astype(np.int64), fy.astype(np.int64) + 1]
            wx = (sx - fx).astype(images.dtype)[..., None]
            wy = (sy - fy).astype(images.dtype)[..., None]
        lo = max(0, -min(int(v.min()) for v in ix + iy))
        hi = max(0, max(int(v.max()) for v in ix) - (w - 1), max(int(v.max()) for v in iy) - (h - 1))
        pad = ((lo, hi), (lo, hi), (0, 0))
        if fill_mode == "constant":
            padded = np.pad(images[i], pad, mode="constant", constant_values=fill_value)
        else:
            padded = np.pad(images[i], pad, mode=PAD_MODES[fill_mode])

        def tap(yy, xx):
            return padded[yy + lo, xx + lo]

        if interpolation == "nearest":
            out[i] = tap(iy[0], ix[0])
        else:
            one = images.dtype.type(1)
            out[i] = ((one - wy) * (one - wx) * tap(iy[0], ix[0]) + (one - wy) * wx * tap(iy[0], ix[1])
                      + wy * (one - wx) * tap(iy[1], ix[0]) + wy * wx * tap(iy[1], ix[1]))
    return out


def rotation(angle, h, w):
    """Keras' RandomRotation matrix for `angle` radians about the image centre."""
    cos, sin = np.cos(angle), np.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
    return np.array([cos, -sin, x_off, sin, cos, y_off, 0, 0])


IDENTITY = np.array([1.0, 0, 0, 0, 1, 0, 0, 0])


def _images(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ---- exact cases --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_identity_returns_the_input_exactly(rng, dtype, interpolation, fill_mode):
    x = _images(rng, (3, 7, 5, 2), dtype)
    y = fastnn.ops.affine_transform(x, IDENTITY, interpolation, fill_mode, fill_value=9.0)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_integer_translations_shift_pixels(rng, fill_mode, interpolation):
    x = _images(rng, (2, 6, 9, 3), np.float32)
    dx, dy = 2, -3  # the output at (y, x) reads the input at (y - 3, x + 2)
    t = np.array([1, 0, dx, 0, 1, dy, 0, 0], np.float64)
    y = fastnn.ops.affine_transform(x, t, interpolation, fill_mode, fill_value=-7.0)
    np.testing.assert_array_equal(y[:, 3:, :-2], x[:, :-3, 2:])  # the part that stays inside
    np.testing.assert_array_equal(y, reference(x, t, interpolation, fill_mode, -7.0))
    if fill_mode == "constant":
        assert np.all(y[:, :3] == -7) and np.all(y[:, :, -2:] == -7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_quarter_turns_match_rot90(rng, dtype, interpolation):
    n = 5
    x = _images(rng, (2, n, n, 3), dtype)
    # Keras' rotation by +pi/2 (counter-clockwise) with exact entries: output (y, x) reads
    # input (y', x') = (x, n-1-y), which is np.rot90's counter-clockwise quarter turn.
    ccw = np.array([0, -1, n - 1, 1, 0, 0, 0, 0], np.float64)
    y = fastnn.ops.affine_transform(x, ccw, interpolation, "constant")
    np.testing.assert_array_equal(y, np.rot90(x, k=1, axes=(1, 2)))
    cw = np.array([0, 1, 0, -1, 0, n - 1, 0, 0], np.float64)
    np.testing.assert_array_equal(fastnn.ops.affine_transform(x, cw, interpolation), np.rot90(x, k=-1, axes=(1, 2)))
    half = np.array([-1, 0, n - 1, 0, -1, n - 1, 0, 0], np.float64)
    np.testing.assert_array_equal(fastnn.ops.affine_transform(x, half, interpolation), np.rot90(x, 2, (1, 2)))
    # Keras' rotation matrix at exactly pi/2 equals the quarter turn up to cos(pi/2) ~ 6e-17.
    keras = rotation(np.pi / 2, n, n)
    np.testing.assert_allclose(fastnn.ops.affine_transform(x, keras, interpolation, "reflect"),
                               np.rot90(x, k=1, axes=(1, 2)), **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_half_pixel_shift_averages_neighbours(rng, dtype):
    x = _images(rng, (2, 4, 6, 2), dtype)
    t = np.array([1, 0, 0.5, 0, 1, 0, 0, 0])
    y = fastnn.ops.affine_transform(x, t, "bilinear", "nearest")
    half = dtype(0.5)
    np.testing.assert_allclose(y[:, :, :-1], half * x[:, :, :-1] + half * x[:, :, 1:], **_tol(dtype))
    np.testing.assert_array_equal(y[:, :, -1], x[:, :, -1])  # both taps clamp to the last column
    t2 = np.array([1, 0, 0.5, 0, 1, 0.5, 0, 0])
    y2 = fastnn.ops.affine_transform(x, t2, "bilinear", "constant", fill_value=1.0)
    quarter = dtype(0.25)
    inner = quarter * (x[:, :-1, :-1] + x[:, :-1, 1:] + x[:, 1:, :-1] + x[:, 1:, 1:])
    np.testing.assert_allclose(y2[:, :-1, :-1], inner, **_tol(dtype))
    np.testing.assert_allclose(y2[:, -1, -1], quarter * x[:, -1, -1] + 3 * quarter, **_tol(dtype))


def test_nearest_rounds_halves_away_from_zero():
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    for shift, expect in [(0.5, [1, 2, 3, 4, 4]), (-0.5, [0, 1, 2, 3, 4]), (1.5, [2, 3, 4, 4, 4])]:
        # x' = x + shift: 0.5 -> 1, 1.5 -> 2, ... and -0.5 -> -1 (clamped to 0), 0.5 -> 1
        y = fastnn.ops.affine_transform(x, [1, 0, shift, 0, 1, 0, 0, 0], "nearest", "nearest")
        assert y.ravel().tolist() == [float(v) for v in expect], shift


# ---- every fill mode at the borders --------------------------------------------------------------
def test_fill_modes_extend_a_row_as_documented():
    row = np.array([1.0, 2, 3, 4]).reshape(1, 1, 4, 1)
    # Output x reads input x - 4: the output shows the 4 values left of the image.
    t = [1, 0, -4, 0, 1, 0, 0, 0]
    got = {m: fastnn.ops.affine_transform(row, t, "nearest", m, fill_value=9).ravel().tolist()
           for m in FILL_MODES}
    assert got == {"constant": [9, 9, 9, 9], "nearest": [1, 1, 1, 1], "reflect": [4, 3, 2, 1],
                   "mirror": [3, 4, 3, 2], "wrap": [1, 2, 3, 4]}
    t = [1, 0, 4, 0, 1, 0, 0, 0]  # ... and the 4 values right of it
    got = {m: fastnn.ops.affine_transform(row, t, "nearest", m, fill_value=9).ravel().tolist()
           for m in FILL_MODES}
    assert got == {"constant": [9, 9, 9, 9], "nearest": [4, 4, 4, 4], "reflect": [4, 3, 2, 1],
                   "mirror": [3, 2, 1, 2], "wrap": [1, 2, 3, 4]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_random_transforms_match_the_reference(rng, dtype, interpolation, fill_mode):
    # ... including images split into several tasks of row blocks and several pixel chunks
    for shape in [(3, 8, 8, 1), (2, 7, 11, 3), (2, 5, 4, 5), (1, 1, 1, 2), (2, 1, 6, 1), (1, 13, 2, 4),
                  (2, 45, 70, 1), (1, 130, 67, 3), (1, 3, 300, 2)]:
        n, h, w, _ = shape
        x = _images(rng, shape, dtype)
        t = np.empty((n, 8))
        for i in range(n):
            angle = rng.uniform(-np.pi, np.pi)
            t[i] = rotation(angle, h, w)
            t[i, [0, 1, 3, 4]] *= rng.uniform(0.5, 1.6)  # zoom
            t[i, [2, 5]] += rng.uniform(-3 * max(h, w), 3 * max(h, w), 2)  # far outside too
        y = fastnn.ops.affine_transform(x, t, interpolation, fill_mode, fill_value=0.25)
        np.testing.assert_allclose(y, reference(x, t, interpolation, fill_mode, 0.25), **_tol(dtype))


@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_projective_transforms_match_the_reference(rng, fill_mode):
    x = _images(rng, (2, 9, 10, 3), np.float64)
    t = np.array([[1.1, 0.1, -1, 0.05, 0.9, 0.5, 0.01, -0.02], [0.8, -0.2, 2, 0.3, 1.2, -1, -0.015, 0.01]])
    for interpolation in ("nearest", "bilinear"):
        y = fastnn.ops.affine_transform(x, t, interpolation, fill_mode, fill_value=-1)
        np.testing.assert_allclose(y, reference(x, t, interpolation, fill_mode, -1), rtol=1e-12, atol=1e-12)


def test_output_size_samples_a_different_grid(rng):
    x = _images(rng, (2, 6, 8, 3), np.float32)
    t = np.array([0.5, 0, 0.25, 0, 0.75, -0.5, 0, 0])
    y = fastnn.ops.affine_transform(x, t, "bilinear", "nearest", output_size=(9, 13))
    assert y.shape == (2, 9, 13, 3)
    np.testing.assert_allclose(y, reference(x, t, "bilinear", "nearest", output_size=(9, 13)), rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(fastnn.ops.image.affine_transform(x[1], t, "bilinear", "nearest",
                                                                    output_size=[9, 13]), y[1])
    np.testing.assert_array_equal(_core.image_affine_transform(x, t, "bilinear", "nearest", 0.0, (9, 13)), y)
    with pytest.raises(TypeError, match=r"'output_size' must be a pair of ints >= 0, got 9"):
        fastnn.ops.affine_transform(x, t, output_size=9)


def test_single_image_and_one_transform_for_the_batch(rng):
    x = _images(rng, (4, 5, 6, 2), np.float32)
    t = rotation(0.3, 5, 6)
    batch = fastnn.ops.affine_transform(x, t)
    np.testing.assert_array_equal(batch, fastnn.ops.affine_transform(x, np.tile(t, (4, 1))))
    np.testing.assert_array_equal(fastnn.ops.affine_transform(x[1], t), batch[1])
    np.testing.assert_array_equal(fastnn.ops.image.affine_transform(x[1], t[None]), batch[1])


def test_empty_batches_and_other_inputs(rng):
    empty = fastnn.ops.affine_transform(np.zeros((0, 4, 4, 3), np.float32), np.zeros((0, 8)))
    assert empty.shape == (0, 4, 4, 3) and empty.dtype == np.float32
    no_channels = fastnn.ops.affine_transform(np.zeros((2, 4, 4, 0)), IDENTITY)
    assert no_channels.shape == (2, 4, 4, 0)
    ints = np.arange(12).reshape(1, 3, 4, 1)
    y = fastnn.ops.affine_transform(ints, IDENTITY)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ints)
    # float32 transforms are used in float64; non-contiguous images are converted.
    x = _images(rng, (2, 6, 6, 2), np.float64)[:, ::-1]
    t32 = rotation(0.7, 6, 6).astype(np.float32)
    np.testing.assert_allclose(fastnn.ops.affine_transform(x, t32),
                               reference(np.ascontiguousarray(x), t32.astype(np.float64)), rtol=1e-12, atol=1e-12)


# ---- threads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_on_1_and_2_threads(rng, threads, dtype):
    x = _images(rng, (64, 32, 32, 3), dtype)
    t = np.stack([rotation(a, 32, 32) for a in rng.uniform(-1, 1, 64)])
    dy = _images(rng, x.shape, dtype)
    results = []
    for n in (1, 2):
        threads(n)
        results.append((fastnn.ops.affine_transform(x, t, "bilinear", "reflect"),
                        fastnn.ops.affine_transform_backward(dy, t, None, "bilinear", "reflect")))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # a large single image splits into row blocks
    big = _images(rng, (1, 300, 200, 1), dtype)
    tb = rotation(0.4, 300, 200)
    outs = []
    for n in (1, 2):
        threads(n)
        outs.append(fastnn.ops.affine_transform(big, tb))
    np.testing.assert_array_equal(outs[0], outs[1])


# ---- backward: the adjoint ----------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_backward_is_the_adjoint(rng, interpolation, fill_mode):
    """<A x, dy> == <x, A^T dy> for the linear part (fill_value 0), and A^T built column by column."""
    x = _images(rng, (2, 5, 6, 2), np.float64)
    t = np.stack([rotation(0.6, 5, 6), rotation(-2.0, 5, 6)])
    t[1, [2, 5]] += [1.3, -4.2]
    dy = _images(rng, (2, 5, 6, 2), np.float64)
    ax = fastnn.ops.affine_transform(x, t, interpolation, fill_mode, 0.0)
    atdy = fastnn.ops.affine_transform_backward(dy, t, (5, 6), interpolation, fill_mode)
    np.testing.assert_allclose(np.vdot(ax, dy), np.vdot(x, atdy), rtol=1e-12)
    # Explicit matrix of the map (one basis image at a time), then its transpose.
    size = x[:1].size
    columns = np.stack([fastnn.ops.affine_transform(e.reshape(1, 5, 6, 2), t[:1], interpolation, fill_mode).ravel()
                        for e in np.eye(size)], axis=1)
    np.testing.assert_allclose(atdy[:1].ravel(), columns.T @ dy[:1].ravel(), rtol=1e-12, atol=1e-12)


def test_backward_with_a_different_output_size(rng):
    x = _images(rng, (3, 6, 7, 3), np.float64)
    t = np.array([0.6, 0.1, 0.3, -0.05, 0.8, 0.2, 0, 0])
    y = _core.image_affine_transform(x, t, "bilinear", "nearest", 0.0, (4, 5))
    dy = _images(rng, y.shape, np.float64)
    dx = fastnn.ops.affine_transform_backward(dy, t, (6, 7), "bilinear", "nearest")
    assert dx.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, dx), rtol=1e-12)


def test_backward_of_the_identity_is_the_identity(rng):
    dy = _images(rng, (2, 4, 5, 3), np.float32)
    for interpolation in ("nearest", "bilinear"):
        np.testing.assert_array_equal(fastnn.ops.affine_transform_backward(dy, IDENTITY, None, interpolation), dy)


# ---- bad input --------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="'interpolation' must be one of 'nearest', 'bilinear', got 'cubic'"):
        fastnn.ops.affine_transform(x, IDENTITY, interpolation="cubic")
    with pytest.raises(ValueError, match="'fill_mode' must be one of .*got 'edge'"):
        fastnn.ops.affine_transform(x, IDENTITY, fill_mode="edge")
    with pytest.raises(ValueError, match="'data_format' must be 'channels_last'"):
        fastnn.ops.affine_transform(x, IDENTITY, data_format="channels_first")
    with pytest.raises(ValueError, match=r"'images' must have 3 .* or 4 .*got shape \(4, 4\)"):
        fastnn.ops.affine_transform(np.zeros((4, 4)), IDENTITY)
    with pytest.raises(ValueError, match=r"'transform' must have shape \(8,\) or \(2, 8\).*got \(3, 8\)"):
        fastnn.ops.affine_transform(x, np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"'transform' must have shape \(8,\) or \(2, 8\).*got \(6,\)"):
        fastnn.ops.affine_transform(x, np.zeros(6))
    with pytest.raises(ValueError, match="'transform' contains NaN or inf"):
        fastnn.ops.affine_transform(x, [1, 0, np.nan, 0, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="height and width >= 1"):
        fastnn.ops.affine_transform(np.zeros((1, 0, 3, 1)), IDENTITY)
    with pytest.raises(TypeError, match="'images' must hold real numbers"):
        fastnn.ops.affine_transform(np.array([[["a"]]]), IDENTITY)
    with pytest.raises(ValueError, match="image_affine_transform: 'interpolation'"):
        _core.image_affine_transform(x, IDENTITY, "area", "constant", 0.0)
    with pytest.raises(ValueError, match="'output_size' must be an int >= 0, got -1"):
        _core.image_affine_transform(x, IDENTITY, "bilinear", "constant", 0.0, (3, -1))
    with pytest.raises(ValueError, match="'input_size' must be an int >= 1, got 0"):
        _core.image_affine_transform_backward(x, IDENTITY, (0, 4), "bilinear", "constant")
    with pytest.raises(ValueError, match="'dy' must have 4 dimensions"):
        fastnn.ops.affine_transform_backward(np.zeros((4, 4, 1)), IDENTITY, (4, 4))


def test_non_finite_pixels_propagate_and_far_coordinates_fill():
    x = np.ones((1, 3, 3, 1))
    x[0, 1, 1, 0] = np.nan
    y = fastnn.ops.affine_transform(x, IDENTITY, "nearest")
    assert np.isnan(y[0, 1, 1, 0]) and np.isfinite(np.delete(y.ravel(), 4)).all()
    far = [1, 0, 1e300, 0, 1, 0, 0, 0]  # beyond any integer tap: fill_value in every mode
    for mode in FILL_MODES:
        assert np.all(fastnn.ops.affine_transform(np.ones((1, 2, 2, 1)), far, "bilinear", mode, 5.0) == 5.0)


# ---- flips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 5, 7, 1), (4, 3, 6, 3), (4, 2, 3, 17), (4, 1, 1, 2), (4, 6, 5, 0)])
def test_flip_matches_numpy(rng, dtype, shape):
    x = _images(rng, shape, dtype)
    h = np.array([True, False, True, False])
    v = np.array([True, True, False, False])
    y = fastnn.ops.image.flip(x, h, v)
    expected = np.stack([np.flip(x[i], [a for a, f in ((0, v[i]), (1, h[i])) if f]) for i in range(4)])
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(fastnn.ops.image.flip(y, h, v), x)  # its own inverse (and adjoint)
    np.testing.assert_array_equal(fastnn.ops.image.flip(x, [1, 0, 1, 0], np.zeros(4, int)), np.stack(
        [x[0, :, ::-1], x[1], x[2, :, ::-1], x[3]]))


def test_flip_bad_input():
    x = np.zeros((3, 2, 2, 1))
    with pytest.raises(ValueError, match=r"'horizontal' must have shape \(3,\) \(one flag per image\), got \(2,\)"):
        fastnn.ops.image.flip(x, [True, False], [True, False, True])
    with pytest.raises(TypeError, match="'vertical' must hold booleans"):
        fastnn.ops.image.flip(x, [True] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="'images' must have 4 dimensions"):
        fastnn.ops.image.flip(x[0], [True], [True])


# ---- contrast --------------------------------------------------------------------------------------
def contrast_reference(x, c, low, high):
    mean = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    z = (x - mean) * c.reshape(-1, 1, 1, 1) + mean
    return np.clip(z, low, high), z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (3, 5, 7, 3), (2, 9, 9, 70), (2, 1, 1, 2), (2, 13, 11, 5)])
def test_contrast_matches_numpy(rng, dtype, shape):
    x = _images(rng, shape, dtype)
    c = rng.uniform(0.2, 1.8, shape[0]).astype(dtype)
    for low, high in [(-np.inf, np.inf), (-0.5, 0.7)]:
        y = fastnn.ops.image.adjust_contrast(x, c, (low, high))
        assert y.dtype == dtype
        np.testing.assert_allclose(y, contrast_reference(x, c, low, high)[0], **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contrast_keeps_the_means_and_factor_one_is_the_identity(rng, dtype):
    x = _images(rng, (4, 6, 5, 3), dtype)
    y = fastnn.ops.image.adjust_contrast(x, np.full(4, 1.7, dtype))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), **_tol(dtype))
    np.testing.assert_allclose(fastnn.ops.image.adjust_contrast(x, np.ones(4, dtype)), x, **_tol(dtype))
    flat = fastnn.ops.image.adjust_contrast(x, np.zeros(4, dtype))  # factor 0: every pixel the mean
    np.testing.assert_allclose(flat, np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape), **_tol(dtype))


def test_contrast_backward_matches_the_jacobian(rng):
    x = _images(rng, (3, 5, 6, 2), np.float64)
    c = np.array([0.5, 1.3, 1.9])
    low, high = -0.8, 0.9
    dy = _images(rng, x.shape, np.float64)
    dx = fastnn.ops.image.adjust_contrast_backward(x, dy, c, (low, high))
    _, z = contrast_reference(x, c, low, high)
    g = np.where((z >= low) & (z <= high), dy, 0)
    expected = c.reshape(-1, 1, 1, 1) * g + (1 - c.reshape(-1, 1, 1, 1)) * g.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)
    # and finite differences of the forward pass (away from the clip's kinks)
    eps = 1e-7
    v = rng.standard_normal(x.shape)
    numeric = np.vdot(fastnn.ops.image.adjust_contrast(x + eps * v, c, (low, high))
                      - fastnn.ops.image.adjust_contrast(x - eps * v, c, (low, high)), dy) / (2 * eps)
    assert np.vdot(dx, v) == pytest.approx(numeric, rel=1e-6)


def test_contrast_nan_propagates_and_bad_input():
    x = np.ones((2, 2, 2, 1))
    x[0, 0, 0, 0] = np.nan
    y = fastnn.ops.image.adjust_contrast(x, [1.5, 1.5], (0, 1))
    assert np.isnan(y[0]).all() and np.all(y[1] == 1)  # the NaN poisons its image's mean only
    with pytest.raises(ValueError, match="'factors' must hold 2 values"):
        fastnn.ops.image.adjust_contrast(x, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="low <= high"):
        fastnn.ops.image.adjust_contrast(x, [1.0, 1.0], (1, 0))
    with pytest.raises(ValueError, match=r"'dy' must have shape \(2, 2, 2, 1\)"):
        fastnn.ops.image.adjust_contrast_backward(x, np.ones((2, 2, 2, 2)), [1.0, 1.0])
    with pytest.raises(TypeError, match="'images' is float64 but 'dy' is float32"):
        fastnn.ops.image.adjust_contrast_backward(x, np.ones(x.shape, np.float32), [1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flip_and_contrast_bit_identical_on_1_and_2_threads(rng, threads, dtype):
    x = _images(rng, (64, 32, 32, 3), dtype)
    c = rng.uniform(0.5, 1.5, 64).astype(dtype)
    h, v = rng.random(64) < 0.5, rng.random(64) < 0.5
    outs = []
    for n in (1, 2):
        threads(n)
        outs.append((fastnn.ops.image.adjust_contrast(x, c, (-1, 1)),
                     fastnn.ops.image.adjust_contrast_backward(x, x, c, (-1, 1)), fastnn.ops.image.flip(x, h, v)))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
