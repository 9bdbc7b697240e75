"""Batch and layer normalisation kernels (cpp/include/fastnn/batchnorm.hpp, layernorm.hpp).

``batch_normalization`` is Keras' op (normalise with given statistics). ``batch_norm_forward``
and ``batch_norm_backward`` are the two calls the BatchNormalization layer makes: the
training-mode forward (batch statistics, moving averages updated in place) or inference
forward, and the backward giving dx, dgamma and dbeta. Each is one C++ call that releases
the GIL; results are the same bit for bit on any thread count.

The channel axis may be any axis: the kernels read x in place as
(axes before) × channels × (axes after), vectorised across channels when the axis is the
last (NHWC images, features) and along the contiguous runs otherwise (NCHW), with no
transposed copies.

``layer_normalization`` and ``rms_normalization`` are Keras' ops; ``layer_norm_forward`` and
``layer_norm_backward`` are the LayerNormalization layer's two calls. They normalise each
row of x over its trailing axes (one pass for a row's moments, rows in parallel), and sum
dgamma/dbeta over rows in a fixed order: bit for bit the same on any thread count.
"""

import operator

import numpy as np

from .. import _core, config
from ._public_names import public_names


def batch_normalization(x, mean, variance, axis, offset=None, scale=None, epsilon=1e-3):
    """Normalises x with the given per-channel statistics (Keras' ``ops.batch_normalization``).

    ``(x - mean) / sqrt(variance + epsilon) * scale + offset``, with mean, variance, offset
    and scale holding one value per index of ``x.shape[axis]``.

    Args:
        x: array-like.
        mean, variance: array-likes of shape (x.shape[axis],); variance >= 0.
        axis: int, the channel axis (negative values count from the end).
        offset: optional array-like like mean (beta); None adds nothing.
        scale: optional array-like like mean (gamma); None multiplies by 1.
        epsilon: float > 0, default 1e-3.

    Returns:
        An array shaped like x.

    Example:
        >>> x = np.array([[0.1, 0.7], [0.2, 0.5]], np.float32)
        >>> fastnn.ops.batch_normalization(x, mean=[0.15, 0.6], variance=[0.0025, 0.01], axis=-1,
        ...                                epsilon=0.0001)
        array([[-0.98058...,  0.99503...],
               [ 0.98058..., -0.99503...]], dtype=float32)
    """
    with public_names("batch_normalization", "batchnorm_forward", gamma="scale", beta="offset",
                      moving_mean="mean", moving_variance="variance"):
        y, _, _ = _core.batchnorm_forward(x, scale, offset, mean, variance, axis, epsilon, 0.0, False)
    return y


def batch_norm_forward(x, gamma=None, beta=None, moving_mean=None, moving_variance=None, axis=-1,
                       epsilon=1e-3, momentum=0.99, training=True):
    """The BatchNormalization layer's forward pass, in one kernel call.

    training=True: per-channel batch mean μ and biased variance σ² over every axis but
    `axis`; ``y = (x - μ) / sqrt(σ² + epsilon) * gamma + beta``; and, when moving_mean and
    moving_variance are given, in place (they must be float arrays of the call's dtype,
    C-contiguous and writeable): ``moving = moving * momentum + batch * (1 - momentum)``.
    training=False: y from moving_mean and moving_variance (required), which are not changed.

    Args:
        x: array-like with at least one value per channel (training).
        gamma, beta: optional per-channel scale and offset (None: 1 and 0).
        moving_mean, moving_variance: per-channel arrays (see above).
        axis: int, default -1: the channel axis.
        epsilon: float > 0, default 1e-3.
        momentum: float in [0, 1], default 0.99.
        training: bool, default True.

    Returns:
        (y, mean, invstd): the output, and the statistics used with
        ``invstd = 1 / sqrt(variance + epsilon)`` (C values each), which
        ``batch_norm_backward`` takes.

    Example:
        >>> x = np.random.default_rng(0).normal(3, 2, (256, 4)).astype(np.float32)
        >>> mm, mv = np.zeros(4, np.float32), np.ones(4, np.float32)
        >>> y, mean, invstd = fastnn.ops.batch_norm_forward(x, moving_mean=mm, moving_variance=mv)
        >>> bool(np.allclose(mm, 0.01 * mean))
        True
    """
    return _core.batchnorm_forward(x, gamma, beta, moving_mean, moving_variance, axis, epsilon, momentum,
                                   training)


def batch_norm_backward(dy, x, mean, invstd, gamma=None, axis=-1, training=True, dgamma=None, dbeta=None,
                        accumulate=False, need_dx=True):
    """Backward of ``batch_norm_forward``: writes dgamma and dbeta in place, returns dx.

    With x̂ = (x - mean)·invstd and N values per channel:
    ``dbeta = Σ dy``, ``dgamma = Σ dy·x̂``, and
    ``dx = gamma·invstd/N·(N·dy - Σ dy - x̂·Σ dy·x̂)`` when the forward pass used batch
    statistics (training=True), ``dx = gamma·invstd·dy`` when it used fixed ones.

    Args:
        dy: dL/dy, shaped like x.
        x: the forward input. mean, invstd: returned by the forward pass.
        gamma: the forward's gamma (None: 1).
        axis: int, default -1: the channel axis.
        training: bool, default True: the forward pass ran in training mode.
        dgamma, dbeta: optional output arrays of shape (C,) and the call's dtype.
        accumulate: bool, default False: add into dgamma/dbeta instead of overwriting.
        need_dx: bool, default True.

    Returns:
        dx shaped like x, or None unless need_dx.
    """
    return _core.batchnorm_backward(x, dy, mean, invstd, gamma, axis, training, dgamma, dbeta, accumulate,
                                    need_dx)


_LAYER_NORM_MODES = ("standard", "rms_scaling", "rms")


def _first_normalised_axis(fn, x, axis):
    """The first axis of the trailing run `axis` names (int, or a list/tuple of axes)."""
    ndim = np.ndim(x)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if not axes:
        raise ValueError(f"{fn}: 'axis' must name at least one axis, got {axis!r}")
    canonical = []
    for a in axes:
        if isinstance(a, bool):
            raise TypeError(f"{fn}: 'axis' must be an int or a list/tuple of ints, got {axis!r}")
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{fn}: 'axis' must be an int or a list/tuple of ints, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"{fn}: 'axis' {a} is out of range for 'x' with {ndim} dimensions")
        canonical.append(a % ndim)
    canonical = sorted(canonical)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"{fn}: duplicate axes in 'axis' {axis!r}")
    if canonical != list(range(canonical[0], ndim)):
        raise ValueError(f"{fn}: 'axis' {axis!r} must be the last axis or a run of trailing axes (e.g. -1, or "
                         f"[-2, -1]) for 'x' with {ndim} dimensions: the kernel normalises trailing axes only")
    return canonical[0]


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon=None, rms_scaling=False):
    """Layer normalization (Ba et al., 2016): each example normalised over ``axis`` (Keras' op).

    ``(x - mean) / sqrt(var + epsilon) * gamma + beta`` with the mean and (biased) variance
    over the normalised axes of each example. ``rms_scaling=True`` is Keras 3's variant:
    ``x / sqrt(var + epsilon) * gamma`` (no mean subtracted, no beta; Keras deprecates it
    because it scales by the variance, not the root mean square: see
    ``rms_normalization``).

    Args:
        x: array-like.
        gamma: optional array-like shaped like the normalised axes of x (None: 1).
        beta: optional array-like like gamma (None: 0); must be None with rms_scaling.
        axis: int or list/tuple of ints, default -1: the axes to normalise over; they must
            be the last axis or a run of trailing axes (others raise ValueError).
        epsilon: float > 0, default None: ``fastnn.config.epsilon()`` (1e-7), as in Keras.
        rms_scaling: bool, default False.

    Returns:
        An array shaped like x, of x's dtype (float32 or float64).

    Example:
        >>> fastnn.ops.layer_normalization(np.arange(5, dtype="float32"))
        array([-1.4142135 , -0.70710677,  0.        ,  0.70710677,  1.4142135 ], dtype=float32)
    """
    if not isinstance(rms_scaling, (bool, np.bool_, int, np.integer)):
        raise TypeError(f"layer_normalization: 'rms_scaling' must be a bool, got {rms_scaling!r}")
    mode = "rms_scaling" if rms_scaling else "standard"
    eps = config.epsilon() if epsilon is None else epsilon
    y, _, _ = _core.layernorm_forward(x, gamma, beta, _first_normalised_axis("layer_normalization", x, axis), eps,
                                      mode)
    return y


def rms_normalization(x, scale=None, axis=-1, epsilon=None):
    """Root mean square normalization (Zhang & Sennrich, 2019; Keras' op).

    ``x / sqrt(mean(x**2) + epsilon) * scale`` over the normalised axes of each example.

    Args:
        x: array-like.
        scale: optional array-like shaped like the normalised axes of x (None: 1).
        axis: int or list/tuple of ints, default -1: the last axis or a run of trailing axes.
        epsilon: float > 0, default None: ``fastnn.config.epsilon()`` (1e-7), as in Keras.

    Returns:
        An array shaped like x.

    Example:
        >>> fastnn.ops.rms_normalization(np.array([3.0, 4.0]))
        array([0.84852813, 1.13137085])
    """
    eps = config.epsilon() if epsilon is None else epsilon
    y, _, _ = _core.layernorm_forward(x, scale, None, _first_normalised_axis("rms_normalization", x, axis), eps,
                                      "rms")
    return y


def layer_norm_forward(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, mode="standard"):
    """The LayerNormalization layer's forward pass, in one kernel call.

    Normalises the axes of x from ``axis`` to the last (each example's F values) by their
    own statistics. mode "standard": ``(x - mean) * invstd * gamma + beta`` with
    ``invstd = 1 / sqrt(var + epsilon)``; "rms_scaling" (Keras' LayerNormalization
    rms_scaling=True): ``x * invstd * gamma`` with the same invstd; "rms" (RMSNorm):
    ``x * invstd * gamma`` with ``invstd = 1 / sqrt(mean(x**2) + epsilon)``.

    Args:
        x: array-like with at least one value in the normalised axes.
        gamma, beta: optional arrays shaped like ``x.shape[axis:]`` (beta only with "standard").
        axis: int, default -1: the first normalised axis (all later axes are normalised too).
        epsilon: float > 0, default 1e-3.
        mode: "standard" (default), "rms_scaling" or "rms".

    Returns:
        (y, mean, invstd): the output, and per example (``x.shape[:axis]`` flattened) the
        row mean (float64) and invstd, which ``layer_norm_backward`` takes.

    Example:
        >>> x = np.random.default_rng(0).normal(3, 2, (4, 16)).astype(np.float32)
        >>> y, mean, invstd = fastnn.ops.layer_norm_forward(x)
        >>> bool(np.allclose(y.mean(axis=-1), 0, atol=1e-5)), mean.shape, invstd.dtype
        (True, (4,), dtype('float32'))
    """
    return _core.layernorm_forward(x, gamma, beta, axis, epsilon, mode)


def layer_norm_backward(dy, x, mean, invstd, gamma=None, axis=-1, mode="standard", dgamma=None, dbeta=None,
                        accumulate=False, need_dx=True):
    """Backward of ``layer_norm_forward``: writes dgamma and dbeta in place, returns dx.

    With x̂ = (x - mean)·invstd ("standard"; x·invstd in the RMS modes) and F normalised
    values per example: ``dbeta = Σ dy`` and ``dgamma = Σ dy·x̂`` over the examples (in a
    fixed order), and for "standard" ``dx = invstd/F·(F·g - Σg - x̂·Σ g·x̂)`` with
    g = gamma·dy (sums over the example's values).

    Args:
        dy: dL/dy, shaped like x.
        x: the forward input. mean, invstd: returned by the forward pass.
        gamma: the forward's gamma (None: 1).
        axis: int, default -1: the forward's first normalised axis.
        mode: the forward's mode, default "standard".
        dgamma, dbeta: optional output arrays shaped like ``x.shape[axis:]``, of the call's dtype.
        accumulate: bool, default False: add into dgamma/dbeta instead of overwriting.
        need_dx: bool, default True.

    Returns:
        dx shaped like x, or None unless need_dx.
    """
    return _core.layernorm_backward(x, dy, mean, invstd, gamma, axis, mode, dgamma, dbeta, accumulate, need_dx)
