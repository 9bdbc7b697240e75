"""Image augmentation kernels: the affine warp (RandomRotation's bilinear, reflect-filled
rotation), its adjoint, flips and the contrast adjustment, against NumPy written the way a
NumPy user would (vectorised over the whole batch), and against scipy.ndimage.affine_transform
looped over images and channels when SciPy is installed (in the NumPy column, named so).
"""

import numpy as np

from harness import Case

import fastnn

FULL = [(64, 28, 28, 1), (64, 32, 32, 3)]
SMOKE = [(2, 5, 5, 1)]


def rotations(n, h, w, rng, max_angle=0.6):
    """Keras' RandomRotation matrices for random angles in [-max_angle, max_angle] radians."""
    angle = rng.uniform(-max_angle, max_angle, n)
    cos, sin = np.cos(angle), np.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
    zero = np.zeros(n)
    return np.stack([cos, -sin, x_off, sin, cos, y_off, zero, zero], axis=1)


def _reflect(i, size):
    i = np.mod(i, 2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def numpy_taps(t, h, w, dtype):
    """Bilinear taps of every output pixel: four (batch, y, x) index triples and weights."""
    n = len(t)
    ys, xs = np.mgrid[0:h, 0:w].astype(dtype)
    t = t.astype(dtype)[:, :, None, None]
    sx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    sy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    fx, fy = np.floor(sx), np.floor(sy)
    wx, wy = (sx - fx)[..., None], (sy - fy)[..., None]
    x0, y0 = fx.astype(np.intp), fy.astype(np.intp)
    x0, x1 = _reflect(x0, w), _reflect(x0 + 1, w)
    y0, y1 = _reflect(y0, h), _reflect(y0 + 1, h)
    b = np.arange(n)[:, None, None]
    return (b, y0, x0, y1, x1), ((1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx)


def numpy_affine(images, t):
    """Bilinear warp with reflect fill in NumPy (gathers on the whole batch)."""
    n, h, w, c = images.shape
    (b, y0, x0, y1, x1), (w00, w01, w10, w11) = numpy_taps(t, h, w, images.dtype)
    return (w00 * images[b, y0, x0] + w01 * images[b, y0, x1] + w10 * images[b, y1, x0]
            + w11 * images[b, y1, x1])


def numpy_affine_backward(dy, t):
    """The adjoint: scatter-add of dy to the taps (np.add.at)."""
    n, h, w, c = dy.shape
    (b, y0, x0, y1, x1), weights = numpy_taps(t, h, w, dy.dtype)
    dx = np.zeros_like(dy)
    for (yy, xx), wk in zip(((y0, x0), (y0, x1), (y1, x0), (y1, x1)), weights):
        np.add.at(dx, (np.broadcast_to(b, yy.shape), yy, xx), wk * dy)
    return dx


def scipy_affine(ndimage, images, t):
    """scipy.ndimage.affine_transform per image and channel (order 1, mode 'reflect')."""
    out = np.empty_like(images)
    for i in range(len(images)):
        a0, a1, a2, b0, b1, b2 = t[i, :6]
        matrix = np.array([[b1, b0], [a1, a0]])  # (row, col) = (y, x) order
        offset = np.array([b2, a2])
        for ch in range(images.shape[3]):
            out[i, :, :, ch] = ndimage.affine_transform(images[i, :, :, ch], matrix, offset, order=1, mode="reflect")
    return out


def _close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)


def cases(torch, size="full"):
    del torch  # no PyTorch peer: grid_sample's border conventions differ from Keras'
    try:
        from scipy import ndimage
    except ImportError:
        ndimage = None
    rng = np.random.default_rng(0)
    out = []
    for shape in {"full": FULL, "quick": FULL, "smoke": SMOKE}[size]:
        n, h, w, c = shape
        label = "×".join(map(str, shape))
        x = rng.random(shape, dtype=np.float32)
        t = rotations(n, h, w, rng)
        out.append(Case("image", f"affine bilinear reflect {label} f32", 0.0, {
            "fastnn": lambda x=x, t=t: fastnn.ops.affine_transform(x, t, "bilinear", "reflect"),
            "numpy": lambda x=x, t=t: numpy_affine(x, t)}, _close))
        if ndimage is not None:
            out.append(Case("image", f"affine bilinear reflect {label} f32 (NumPy column: scipy.ndimage per image)",
                            0.0, {"fastnn": lambda x=x, t=t: fastnn.ops.affine_transform(x, t, "bilinear", "reflect"),
                                  "numpy": lambda x=x, t=t: scipy_affine(ndimage, x, t)}, _close))
        if size != "full":
            continue
        dy = rng.standard_normal(shape).astype(np.float32)
        out.append(Case("image", f"affine backward (adjoint) {label} f32", 0.0, {
            "fastnn": lambda dy=dy, t=t: fastnn.ops.affine_transform_backward(dy, t, None, "bilinear", "reflect"),
            "numpy": lambda dy=dy, t=t: numpy_affine_backward(dy, t)}, _close))
        flip_h, flip_v = rng.random(n) < 0.5, rng.random(n) < 0.5

        def numpy_flip(x=x, flip_h=flip_h, flip_v=flip_v):
            y = np.where(flip_h[:, None, None, None], x[:, :, ::-1], x)
            return np.where(flip_v[:, None, None, None], y[:, ::-1], y)

        out.append(Case("image", f"flip {label} f32", 0.0, {
            "fastnn": lambda x=x, h=flip_h, v=flip_v: fastnn.ops.image.flip(x, h, v),
            "numpy": numpy_flip}, _close))
        factors = rng.uniform(0.8, 1.2, n).astype(np.float32)

        def numpy_contrast(x=x, factors=factors):
            mean = x.mean(axis=(1, 2), keepdims=True)
            return np.clip((x - mean) * factors[:, None, None, None] + mean, 0, 1)

        out.append(Case("image", f"contrast {label} f32", 0.0, {
            "fastnn": lambda x=x, f=factors: fastnn.ops.image.adjust_contrast(x, f, (0, 1)),
            "numpy": numpy_contrast}, _close))
    return out
