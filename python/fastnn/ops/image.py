"""Image kernels (cpp/include/fastnn/image.hpp): Keras' ``ops.image.affine_transform`` and the
flips and contrast adjustment of the augmentation layers.

Images are NHWC (batch, height, width, channels), float32 or float64; a single image
(height, width, channels) is accepted too.
"""

import numpy as np

from .. import _core

INTERPOLATIONS = ("nearest", "bilinear")
FILL_MODES = ("constant", "nearest", "reflect", "mirror", "wrap")


def _check_choice(fn, what, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: '{what}' must be one of {', '.join(repr(c) for c in choices)}, "
                         f"got {value!r}")


def _check_data_format(fn, data_format):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{fn}: 'data_format' must be 'channels_last' (or None): fastnn images are NHWC; "
                         f"got {data_format!r}. Transpose channels-first images with "
                         f"np.transpose(x, (0, 2, 3, 1)).")


def _real(fn, name, value):
    """A float argument: a real number (not a string, None or an array), as a float."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        raise TypeError(f"{fn}: '{name}' must be a float, got {value!r}")
    return float(value)


def _value_range(fn, value_range):
    """(low, high) floats with low <= high."""
    try:
        low, high = value_range
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: 'value_range' must be a pair (low, high), got {value_range!r}") from None
    low, high = _real(fn, "value_range", low), _real(fn, "value_range", high)
    if not low <= high:
        raise ValueError(f"{fn}: 'value_range' must have low <= high, got {value_range!r}")
    return low, high


def _batched(fn, images):
    """images as a 4-D array (a 3-D image gets a batch axis) and whether it was added."""
    ndim = np.ndim(images)
    if ndim == 3:
        image = np.asarray(images)
        if not isinstance(images, np.ndarray) and image.dtype.kind == "f":
            image = image.astype(np.float32)  # (a list computes in float32, as the package's contract says)
        return image[None], True
    if ndim != 4:
        raise ValueError(f"{fn}: 'images' must have 3 (height, width, channels) or 4 (batch, height, "
                         f"width, channels) dimensions, got shape {np.shape(images)}")
    return images, False


def affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
                     data_format=None, output_size=None):
    """Applies a projective transform to each image (Keras' ``ops.image.affine_transform``).

    With ``transform = [a0, a1, a2, b0, b1, b2, c0, c1]``, output pixel (y, x) reads the
    input at ``x' = (a0 x + a1 y + a2) / k``, ``y' = (b0 x + b1 y + b2) / k`` with
    ``k = c0 x + c1 y + 1``: the transform maps output points to input points (the
    inverse of the transform that moves the image). Pixel centres are at integer
    coordinates. ``c0``, ``c1`` are honoured as in Keras' TensorFlow backend (the other
    Keras backends ignore them).

    Args:
        images: (batch, height, width, channels) or (height, width, channels), float32 or
            float64 (other numeric inputs are converted to float32).
        transform: shape (8,) (the same for every image) or (batch, 8); any float dtype
            (it is used in float64). Must be finite.
        interpolation: "bilinear" (default) or "nearest" (halves rounded away from zero).
        fill_mode: default "constant". How the input is extended for taps outside it:
            "constant" ``(k k k k | a b c d | k k k k)`` with k = fill_value;
            "nearest" ``(a a a a | a b c d | d d d d)``;
            "reflect" ``(d c b a | a b c d | d c b a)``;
            "mirror" ``(d c b | a b c d | c b a)``;
            "wrap" ``(a b c d | a b c d | a b c d)``.
            Each integer tap is extended separately, as in Keras' NumPy and JAX backends.
        fill_value: float, default 0: the value of taps outside the image in constant mode.
        data_format: None or "channels_last" (fastnn's only layout).
        output_size: optional (height, width) of the output (a fastnn extension), default
            the input's: e.g. a scaling transform then resizes the images.

    Returns:
        The warped images, same dtype as `images` and the same shape but for the
        output_size.

    Raises:
        ValueError: unknown interpolation, fill_mode or data_format, images that are not
            3-D or 4-D, a transform of the wrong shape or with NaN/inf, an output_size that
            is not a pair of ints >= 0.

    Example:
        >>> x = np.random.random((2, 64, 80, 3)).astype(np.float32)
        >>> shift = np.array([1, 0, -20, 0, 1, -16, 0, 0])  # reads (x - 20, y - 16)
        >>> fastnn.ops.image.affine_transform(x, shift).shape
        (2, 64, 80, 3)
    """
    fn = "affine_transform"
    _check_choice(fn, "interpolation", interpolation, INTERPOLATIONS)
    _check_choice(fn, "fill_mode", fill_mode, FILL_MODES)
    _check_data_format(fn, data_format)
    images, unbatched = _batched(fn, images)
    if unbatched and np.ndim(transform) == 2 and np.shape(transform)[0] == 1:
        transform = np.asarray(transform)[0]
    fill_value = _real(fn, "fill_value", fill_value)
    out = _core.image_affine_transform(images, transform, interpolation, fill_mode, fill_value, output_size)
    return out[0] if unbatched else out


def affine_transform_backward(dy, transform, input_size=None, interpolation="bilinear", fill_mode="constant"):
    """The gradient of ``affine_transform`` with respect to its images: the adjoint warp of dy.

    Each output gradient goes back to the input pixels its value was read from, with the
    same interpolation weights (taps that read fill_value get nothing). Linear in dy.

    Args:
        dy: (batch, out_height, out_width, channels): the gradient of the output.
        transform: as for affine_transform.
        input_size: (height, width) of the forward input, default that of dy.
        interpolation, fill_mode: as in the forward call.

    Returns:
        (batch, height, width, channels), dy's dtype.
    """
    _check_choice("affine_transform_backward", "interpolation", interpolation, INTERPOLATIONS)
    _check_choice("affine_transform_backward", "fill_mode", fill_mode, FILL_MODES)
    if input_size is None:
        input_size = np.shape(dy)[1:3]
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, (tuple, list, np.ndarray)):
        raise TypeError(f"affine_transform_backward: 'input_size' must be a pair of ints (height, width), got "
                        f"{input_size!r}")
    return _core.image_affine_transform_backward(dy, transform, tuple(input_size), interpolation, fill_mode)


def flip(images, horizontal, vertical):
    """Flips each image of an NHWC batch: its columns where ``horizontal[i]``, its rows where ``vertical[i]``.

    One copy (a C++ loop; NumPy's reversed-stride copies of a few channels were ~15x
    slower). The flip is its own gradient.

    Args:
        images: (batch, height, width, channels), float32 or float64.
        horizontal, vertical: (batch,) booleans.

    Returns:
        The flipped batch (a new array).

    Example:
        >>> x = np.arange(4.0).reshape(1, 1, 4, 1)
        >>> fastnn.ops.image.flip(x, [True], [False]).ravel()
        array([3., 2., 1., 0.])
    """
    return _core.image_flip(images, horizontal, vertical)


def adjust_contrast(images, factors, value_range=(-np.inf, np.inf)):
    """Scales each image's deviations from its channel means: ``clip((x - m) * c + m, low, high)``.

    m is the mean of image i's channel over its pixels (summed in float64), c =
    ``factors[i]``; the result is clipped to ``value_range`` (Keras' RandomContrast).

    Args:
        images: (batch, height, width, channels), float32 or float64.
        factors: (batch,) contrast factors.
        value_range: (low, high), default no clipping.

    Returns:
        The adjusted batch (a new array).
    """
    low, high = _value_range("adjust_contrast", value_range)
    return _core.image_contrast(images, factors, low, high)


def adjust_contrast_backward(images, dy, factors, value_range=(-np.inf, np.inf)):
    """The input gradient of ``adjust_contrast``: with g = dy where the unclipped output lies in
    value_range (else 0), ``c * g + (1 - c) * mean(g)`` per image and channel."""
    low, high = _value_range("adjust_contrast_backward", value_range)
    return _core.image_contrast_backward(images, dy, factors, low, high)
