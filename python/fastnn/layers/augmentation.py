"""Image augmentation layers: RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
RandomCrop, RandomContrast (Keras 3 names, arguments and defaults).

They change images only in training (``training=True``, as ``fit`` calls them); at
inference they return the input unchanged (RandomCrop resizes, see there). Images are NHWC
(batch, height, width, channels), float32 or float64. Each image of a batch gets its own
random parameters, drawn from fastnn's global generator (reproducible after
``fastnn.utils.set_random_seed``) or from the layer's own when it is given a ``seed``.

Rotation, translation and zoom are one call of the C++ warp (``fastnn.ops.image.
affine_transform``, one transform per image, OpenMP over images); flips and the contrast
adjustment are C++ kernels too (``fastnn.ops.image.flip``, ``adjust_contrast``): on a
64×32×32×3 float32 batch NumPy took 0.29 ms to flip (reversed-stride copies of 3 channels)
and 1.8 ms to adjust the contrast (strided means, four passes), the kernels ~0.11 ms each
(a plain copy: 0.02 ms). Crops are NumPy slice copies, one per image (~0.09 ms).

Backward: these layers usually come first in a model, whose first layer computes no input
gradient (it returns None at once, or is not called). Anywhere else they return the exact
gradient of what the forward pass did to the batch: the adjoint warp (the same kernel's
backward), the flipped or zero-padded gradient, the contrast adjustment's Jacobian (zero
where the output was clipped); at inference (no cache) the gradient passes through. So a
model may put them after other layers as well (e.g. after Rescaling, or between
convolutions). Built for one image size, they take others too (as Keras).

Deliberate differences from Keras 3 (each where Keras' code contradicts its own
documentation or the more useful behaviour of tf.keras):

* RandomFlip("horizontal_and_vertical") flips each axis with its own draw (four outcomes, as
  tf.keras); Keras 3 uses one draw for both, so images are either unchanged or turned 180°.
* RandomCrop draws an offset per image (Keras: one for the whole batch) and, as documented
  by Keras, resizes at inference (Keras 3 currently returns the input unchanged, keras-team/
  keras#21868); it crops whenever the input is at least the target size (Keras: strictly
  larger, otherwise resizes).
* RandomContrast(f) draws factors in [1 - f, 1 + f] as documented (Keras 3's code draws in
  [1, 1 + f]).
* Unknown fill_mode / interpolation raise ValueError when the layer is made. Inputs
  must be batched (4-D); data_format must be "channels_last".
"""

import abc

import numpy as np

from .. import ops
from ..utils import rng
from . import _validation
from .base import Layer
from .conv import _AnySpatialSize

FILL_MODES = ("reflect", "wrap", "constant", "nearest")  # the layers' (ops.image also has "mirror")
INTERPOLATIONS = ("nearest", "bilinear")
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _factor_range(factor, what, who, low, high, low_open=False):
    """(lower, upper): a number f gives (-|f|, |f|), a pair is sorted (as Keras); each number in
    [low, high] (with `low_open`, (low, high])."""
    interval = f"{'(' if low_open else '['}{low}, {high}]"
    pair = isinstance(factor, (tuple, list)) and len(factor) == 2 and all(_is_number(v) for v in factor)
    if not (_is_number(factor) or pair):
        raise ValueError(f"{who}: '{what}' must be a number or a pair of numbers in {interval}, got {factor!r}")
    values = [float(v) for v in factor] if pair else [float(factor)]
    for v in values:
        if not (low < v <= high if low_open else low <= v <= high):
            raise ValueError(f"{who}: '{what}' must be in {interval}, got {factor!r}")
    if not pair:
        return -abs(values[0]), abs(values[0])
    return tuple(sorted(values))


def _choice(value, what, choices, who):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{who}: '{what}' must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


class _Augmentation(_AnySpatialSize, Layer, metaclass=abc.ABCMeta):
    """Shared plumbing: the seed, the 4-D input check, identity at inference, backward."""

    _training_dependent = True

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        who = f"{type(self).__name__} '{self.name}'"
        seed = _validation.seed(seed, who)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{who}: 'data_format' must be 'channels_last' (or None): fastnn images are NHWC; "
                             f"got {data_format!r}")
        self.seed = None if seed is None else int(seed)
        self._generator = rng.generator_for(self.seed) if self.seed is not None else None

    @property
    def _who(self):
        return f"{type(self).__name__} '{self.name}'"

    def _rng(self):
        # The global generator is looked up at each call: set_random_seed replaces it. In
        # data-parallel training each process draws its own numbers (rng.process_generator).
        return rng.process_generator(self._generator)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{self._who}: expects a batch of NHWC images (batch, height, width, channels), got "
                             f"input shape {tuple(input_shape)}; add a batch axis to a single image (x[None])")
        return tuple(input_shape)

    def forward(self, x, training=False, keep_cache=False):
        if not training:
            return x, None  # the identity: backward passes the gradient through (a None cache)
        return self._augment(x)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if not need_input_grad:
            return None
        if cache is None:  # an inference pass: the identity
            return dy
        return self._augment_backward(np.ascontiguousarray(dy), cache)

    @abc.abstractmethod
    def _augment(self, x):
        """(augmented batch, what backward needs: not None) in training."""

    @abc.abstractmethod
    def _augment_backward(self, dy, cache):
        """The gradient of the input from dy, given what _augment kept."""

    def get_config(self):
        cfg = super().get_config()
        cfg["seed"] = self.seed
        return cfg


class RandomFlip(_Augmentation):
    """Flips images left-right and/or top-bottom at random during training.

    Each image is flipped horizontally with probability 1/2 and, independently, vertically
    with probability 1/2 (per the mode). Identity at inference.

    Args:
        mode: "horizontal", "vertical" or "horizontal_and_vertical" (default).
            "horizontal" is a left-right flip, "vertical" a top-bottom flip. In
            "horizontal_and_vertical" the two flips are drawn independently (tf.keras'
            behaviour; Keras 3 draws once for both).
        seed: int >= 0 or None (default): a generator of the layer's own; None draws from
            fastnn's global generator (``fastnn.utils.set_random_seed``).
        **kwargs: name, dtype, input_shape, ...

    Example:
        >>> layer = fastnn.layers.RandomFlip("horizontal", seed=2)
        >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1)
        >>> layer(x, training=True).ravel()  # this draw flips
        array([5., 4., 3., 2., 1., 0.], dtype=float32)
        >>> layer(x).ravel()  # inference: unchanged
        array([0., 1., 2., 3., 4., 5.], dtype=float32)
    """

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.mode = _choice(mode, "mode", FLIP_MODES, self._who)
        self._horizontal = mode in ("horizontal", "horizontal_and_vertical")
        self._vertical = mode in ("vertical", "horizontal_and_vertical")

    def _augment(self, x):
        n = x.shape[0]
        g = self._rng()
        flip_h = g.random(n) < 0.5 if self._horizontal else np.zeros(n, bool)
        flip_v = g.random(n) < 0.5 if self._vertical else np.zeros(n, bool)
        return ops.image.flip(x, flip_h, flip_v), (flip_h, flip_v)

    def _augment_backward(self, dy, cache):
        return ops.image.flip(dy, *cache)  # a flip is its own adjoint

    def get_config(self):
        cfg = super().get_config()
        cfg["mode"] = self.mode
        return cfg


class _Warp(_Augmentation):
    """A layer whose training pass is one warp of the batch (one transform per image)."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.fill_mode = _choice(fill_mode, "fill_mode", FILL_MODES, self._who)
        self.interpolation = _choice(interpolation, "interpolation", INTERPOLATIONS, self._who)
        self.fill_value = _validation.number(fill_value, "fill_value", self._who, type_error=ValueError)

    @abc.abstractmethod
    def _transforms(self, n, height, width):
        """(n, 8) float64 transforms (output -> input), one per image."""

    def _augment(self, x):
        n, h, w, _ = x.shape
        t = self._transforms(n, h, w)
        y = ops.image.affine_transform(x, t, self.interpolation, self.fill_mode, self.fill_value)
        return y, (t, (h, w))

    def _augment_backward(self, dy, cache):
        t, size = cache
        return ops.image.affine_transform_backward(dy, t, size, self.interpolation, self.fill_mode)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(fill_mode=self.fill_mode, interpolation=self.interpolation, fill_value=self.fill_value)
        return cfg


_WARP_ARGS_DOC = """
        fill_mode: how the image is extended where the transform reads outside it:
            "reflect" (default) ``(d c b a | a b c d | d c b a)``, "wrap"
            ``(a b c d | a b c d | a b c d)``, "nearest" ``(a a a a | a b c d | d d d d)``,
            "constant" ``(k k k k | a b c d | k k k k)`` with k = fill_value.
        interpolation: "bilinear" (default) or "nearest".
        seed: int >= 0 or None (default): a generator of the layer's own; None draws from
            fastnn's global generator (``fastnn.utils.set_random_seed``).
        fill_value: float, default 0.0: the value outside the image for fill_mode "constant".
        **kwargs: name, dtype, input_shape, ..."""


class RandomRotation(_Warp):
    __doc__ = """Rotates each image by a random angle during training (identity at inference).

    The angle is drawn uniformly from ``[lower, upper] · 2π`` for each image; positive
    angles turn the image counter-clockwise, about its centre ((width-1)/2, (height-1)/2).

    Args:
        factor: a float in [-1, 1], a fraction of a full turn: ``0.1`` draws angles in
            [-36°, 36°]; or a pair ``(lower, upper)``, e.g. ``(-0.2, 0.3)`` for
            [-72°, 108°]. ``0`` is the identity.""" + _WARP_ARGS_DOC + """

    Example:
        >>> layer = fastnn.layers.RandomRotation(0.1, seed=3)
        >>> layer(np.zeros((8, 28, 28, 1), np.float32), training=True).shape
        (8, 28, 28, 1)
    """

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         **kwargs)
        self.factor = factor
        self._lower, self._upper = _factor_range(factor, "factor", self._who, -1.0, 1.0)

    def _transforms(self, n, h, w):
        angle = self._rng().uniform(self._lower, self._upper, n) * (2.0 * np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
        y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
        zero = np.zeros(n)
        return np.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero], axis=1)

    def get_config(self):
        cfg = super().get_config()
        cfg["factor"] = self.factor
        return cfg


class RandomTranslation(_Warp):
    __doc__ = """Shifts each image by a random offset during training (identity at inference).

    Args:
        height_factor: a float in [-1, 1], a fraction of the height: ``0.2`` shifts by a
            random amount in [-20%, +20%] of the height; or a pair ``(lower, upper)``.
            Positive values shift the image down, negative up.
        width_factor: the same for the width; positive values shift right.""" + _WARP_ARGS_DOC + """

    Example:
        >>> layer = fastnn.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=0)
        >>> layer(np.ones((4, 8, 8, 3), np.float32), training=True).shape
        (4, 8, 8, 3)
    """

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         **kwargs)
        self.height_factor = height_factor
        self.width_factor = width_factor
        self._height = _factor_range(height_factor, "height_factor", self._who, -1.0, 1.0)
        self._width = _factor_range(width_factor, "width_factor", self._who, -1.0, 1.0)

    def _transforms(self, n, h, w):
        g = self._rng()
        dy = g.uniform(*self._height, n) * h
        dx = g.uniform(*self._width, n) * w
        one, zero = np.ones(n), np.zeros(n)
        return np.stack([one, zero, -dx, zero, one, -dy, zero, zero], axis=1)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(height_factor=self.height_factor, width_factor=self.width_factor)
        return cfg


class RandomZoom(_Warp):
    __doc__ = """Zooms each image in or out by a random amount during training (identity at inference).

    Output pixels read the input at ``centre + zoom · (p - centre)`` with zoom drawn as
    ``1 + uniform(lower, upper)`` per image: a zoom above 1 shows more of the image
    (zoom out), below 1 less (zoom in).

    Args:
        height_factor: a float in (-1, 1] or a pair ``(lower, upper)``: ``0.2`` zooms
            vertically by a random amount in [-20%, +20%]; positive values zoom out,
            negative values zoom in (``(-0.3, -0.2)``: in by 20% to 30%).
        width_factor: the same horizontally, default None: the vertical zoom is used for
            both axes (the aspect ratio is kept).""" + _WARP_ARGS_DOC + """

    Example:
        >>> layer = fastnn.layers.RandomZoom(0.2, seed=0)
        >>> layer(np.ones((4, 8, 8, 3), np.float32), training=True).shape
        (4, 8, 8, 3)
    """

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         **kwargs)
        self.height_factor = height_factor
        self.width_factor = width_factor
        # Keras: factors in (-1, 1] (a zoom of 1 + (-1) = 0 maps every pixel to the centre)
        self._height = _factor_range(height_factor, "height_factor", self._who, -1.0, 1.0, low_open=True)
        self._width = (None if width_factor is None
                       else _factor_range(width_factor, "width_factor", self._who, -1.0, 1.0, low_open=True))

    def _transforms(self, n, h, w):
        g = self._rng()
        zy = 1.0 + g.uniform(*self._height, n)
        zx = zy if self._width is None else 1.0 + g.uniform(*self._width, n)
        zero = np.zeros(n)
        return np.stack([zx, zero, (w - 1) / 2.0 * (1.0 - zx), zero, zy, (h - 1) / 2.0 * (1.0 - zy), zero, zero],
                        axis=1)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(height_factor=self.height_factor, width_factor=self.width_factor)
        return cfg


class RandomCrop(_Augmentation):
    """Crops each image to (height, width) at a random place during training.

    Training: each image gets its own random offset (Keras crops a whole batch at one
    place). Inputs smaller than the target in either dimension, and every input at
    inference, are instead resized (bilinear, half-pixel centres, as Keras' resize) after
    a centred crop to the target's aspect ratio: the largest centred window with the
    target's aspect ratio, scaled to (height, width). An input already of the target size
    passes unchanged at inference. The output shape is (batch, height, width, channels)
    either way.

    Args:
        height: int > 0, the output height.
        width: int > 0, the output width.
        seed: int >= 0 or None (default): a generator of the layer's own; None draws from
            fastnn's global generator (``fastnn.utils.set_random_seed``).
        **kwargs: name, dtype, input_shape, ...

    Example:
        >>> layer = fastnn.layers.RandomCrop(24, 24, seed=0)
        >>> layer(np.zeros((8, 32, 32, 3), np.float32), training=True).shape
        (8, 24, 24, 3)
    """

    _size_arguments = ("height", "width")

    def __init__(self, height, width, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        for what, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{self._who}: '{what}' must be a positive int, got {value!r}")
        self.height = int(height)
        self.width = int(width)

    def compute_output_shape(self, input_shape):
        super().compute_output_shape(input_shape)
        return (input_shape[0], self.height, self.width, input_shape[3])

    def forward(self, x, training=False, keep_cache=False):
        n, h, w, c = x.shape
        self._check_size((n, self.height, self.width, c), x)
        if training and h >= self.height and w >= self.width:
            return self._augment(x)
        if not training and (h, w) == (self.height, self.width):
            return x, None
        y, cache = self._resize(x)
        return y, (cache if training or keep_cache else None)

    def _augment(self, x):
        n, h, w, _ = x.shape
        g = self._rng()
        top = g.integers(0, h - self.height + 1, n)
        left = g.integers(0, w - self.width + 1, n)
        y = np.empty((n, self.height, self.width, x.shape[3]), x.dtype)
        for i in range(n):
            y[i] = x[i, top[i]:top[i] + self.height, left[i]:left[i] + self.width]
        return y, ("crop", top, left, (h, w))

    def _resize(self, x):
        """Keras' smart resize: the centred window with the target's aspect ratio, resized."""
        _, h, w, _ = x.shape
        crop_h = max(min(h, int(float(w * self.height) / self.width)), 1)
        crop_w = max(min(w, int(float(h * self.width) / self.height)), 1)
        top, left = int(float(h - crop_h) / 2), int(float(w - crop_w) / 2)
        window = np.ascontiguousarray(x[:, top:top + crop_h, left:left + crop_w])
        sy, sx = crop_h / self.height, crop_w / self.width
        t = np.array([sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5, 0.0, 0.0])
        y = ops.image.affine_transform(window, t, "bilinear", "nearest", 0.0, output_size=(self.height, self.width))
        return y, ("resize", t, (top, left, crop_h, crop_w), (h, w))

    def _augment_backward(self, dy, cache):
        kind = cache[0]
        if kind == "crop":
            _, top, left, (h, w) = cache
            dx = np.zeros((dy.shape[0], h, w, dy.shape[3]), dy.dtype)
            for i in range(dy.shape[0]):
                dx[i, top[i]:top[i] + self.height, left[i]:left[i] + self.width] = dy[i]
            return dx
        _, t, (top, left, crop_h, crop_w), (h, w) = cache
        dx = np.zeros((dy.shape[0], h, w, dy.shape[3]), dy.dtype)
        dx[:, top:top + crop_h, left:left + crop_w] = ops.image.affine_transform_backward(
            dy, t, (crop_h, crop_w), "bilinear", "nearest")
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(height=self.height, width=self.width)
        return cfg


class RandomContrast(_Augmentation):
    """Adjusts the contrast of each image by a random factor during training.

    For each image and channel with mean m over the pixels, ``x -> (x - m) · c + m``, with
    c drawn per image from ``[1 - lower, 1 + upper]``, then clipped to `value_range`.
    Identity at inference.

    Args:
        factor: a float in [0, 1]: c in [1 - factor, 1 + factor]; or a pair
            ``(lower, upper)`` of floats in [0, 1]: c in [1 - lower, 1 + upper].
        value_range: pair (low, high), default (0, 255): the range of the input values;
            outputs are clipped to it (use (0, 1) for images scaled to [0, 1]).
        seed: int >= 0 or None (default): a generator of the layer's own; None draws from
            fastnn's global generator (``fastnn.utils.set_random_seed``).
        **kwargs: name, dtype, input_shape, ...

    Example:
        >>> layer = fastnn.layers.RandomContrast(0.2, value_range=(0, 1), seed=0)
        >>> layer(np.random.random((4, 8, 8, 3)), training=True).shape
        (4, 8, 8, 3)
    """

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        who = self._who
        pair = isinstance(factor, (tuple, list)) and len(factor) == 2 and all(_is_number(v) for v in factor)
        if not (_is_number(factor) or pair):
            raise ValueError(f"{who}: 'factor' must be a number or a pair of numbers in [0, 1], got {factor!r}")
        values = sorted(float(v) for v in factor) if pair else [float(factor)] * 2
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"{who}: 'factor' must be in [0, 1], got {factor!r}")
        if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2
                and all(_is_number(v) and np.isfinite(v) for v in value_range) and value_range[0] <= value_range[1]):
            raise ValueError(f"{who}: 'value_range' must be a pair (low, high) of finite numbers with low <= high, "
                             f"got {value_range!r}")
        self.factor = factor
        self.value_range = tuple(float(v) for v in value_range)
        self._lower, self._upper = values

    def _augment(self, x):
        n = x.shape[0]
        c = self._rng().uniform(1.0 - self._lower, 1.0 + self._upper, n).astype(x.dtype)
        y = ops.image.adjust_contrast(x, c, self.value_range)
        return y, (x, c)  # backward recomputes the means and the clipping mask from x

    def _augment_backward(self, dy, cache):
        x, c = cache
        return ops.image.adjust_contrast_backward(x, dy, c, self.value_range)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(factor=self.factor, value_range=self.value_range)
        return cfg
