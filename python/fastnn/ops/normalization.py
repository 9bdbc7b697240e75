"""Batch normalisation kernels (cpp/include/fastnn/batchnorm.hpp).

``batch_normalization`` is Keras' op (normalise with given statistics). ``batch_norm_forward``
and ``batch_norm_backward`` are the two calls the BatchNormalization layer makes: the
training-mode forward (batch statistics, moving averages updated in place) or inference
forward, and the backward giving dx, dgamma and dbeta. Each is one C++ call that releases
the GIL; results are the same bit for bit on any thread count.

The channel axis may be any axis: the kernels read x in place as
(axes before) × channels × (axes after), vectorised across channels when the axis is the
last (NHWC images, features) and along the contiguous runs otherwise (NCHW), with no
transposed copies.
"""

from .. import _core


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
