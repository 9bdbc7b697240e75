"""Normalization layers: BatchNormalization, LayerNormalization."""

import math

import numpy as np

from .. import config, constraints, initializers, ops, regularizers
from . import _validation
from .base import Layer, trainable_grad


class BatchNormalization(Layer):
    """Normalizes each channel with batch statistics while training, moving ones otherwise.

    Keras 3's BatchNormalization. For each index c of the channel axis:

    * training (``fit``, or ``training=True``): ``y = gamma * (x - mean(x)) /
      sqrt(var(x) + epsilon) + beta`` with the mean and the biased variance of the batch over
      every other axis; then ``moving_mean = moving_mean * momentum + mean * (1 - momentum)``
      and the same for ``moving_variance`` (with the biased batch variance);
    * inference (``predict``, ``evaluate``, ``training=False``): the same with
      ``moving_mean`` and ``moving_variance`` in place of the batch statistics.

    A frozen layer (``trainable = False``) runs in inference mode even with training=True
    and leaves its moving statistics alone (Keras 3's rule).

    gamma and beta are trainable weights; moving_mean and moving_variance are non-trainable
    weights: saved with the model, listed in ``non_trainable_weights`` and the summary's
    non-trainable count, never touched by the optimizer. Inside a model they are views into
    its flat weight buffer, and the forward kernel updates them there in place. Forward and
    backward are one C++ call each; the weights order is gamma, beta, moving_mean,
    moving_variance (those that exist), as in Keras.

    Any channel axis works without a transposed copy (the kernels read the input in place);
    the last axis (NHWC images, features) is the fastest.

    Batch renormalization (``renorm=True``, Ioffe 2017, as Keras 3 computes it): while
    training, with the batch's ``stddev = sqrt(var(x) + epsilon)`` and
    ``s = maximum(renorm_stddev, sqrt(epsilon))``, ``r = stddev / s`` and
    ``d = (mean(x) - renorm_mean) / s`` (clipped by ``renorm_clipping``) correct the batch
    normalization towards the moving statistics: ``y = x̂ * (r * gamma) + (d * gamma + beta)``,
    with r and d constants in the gradient. Then ``renorm_mean`` and ``renorm_stddev`` move
    with ``renorm_momentum``, ``moving_mean`` and ``moving_stddev`` with ``momentum``, and
    ``moving_variance = relu(moving_stddev**2 - epsilon)``. Inference is unchanged. The
    weights are then gamma, beta, moving_mean, moving_variance, moving_stddev, renorm_mean,
    renorm_stddev, as in Keras.

    Masks (Keras 3): the input's mask (``Embedding(mask_zero=True)`` upstream, or
    ``layer(x, training=True, mask=m)``) passes through to the output. While training it also
    restricts the batch statistics to the unmasked positions: with ``w = mask[..., None]``
    (the mask has one axis fewer than the inputs) and ``n = sum(w) + fastnn.config.epsilon()``
    over every axis but the channel one, ``mean = sum(w * x) / n`` and ``var = sum(w * (x -
    mean)**2) / n``; every position, masked ones too, is then normalised with them, and the
    moving statistics move towards them. Inference ignores the mask.

    Args:
        axis: int, default -1: the channel axis (e.g. 1 for channels-first images). Its size
            must be known when the layer is built.
        momentum: float in [0, 1], default 0.99: of the moving averages.
        epsilon: float > 0, default 1e-3: added to the variance.
        center: bool, default True: add beta (False: no beta weight).
        scale: bool, default True: multiply by gamma (False: no gamma weight).
        beta_initializer: default "zeros". gamma_initializer: default "ones".
        moving_mean_initializer: default "zeros". moving_variance_initializer: default "ones".
        beta_regularizer, gamma_regularizer: default None.
        beta_constraint, gamma_constraint: default None: fastnn.constraints constraints
            applied after each optimizer step.
        renorm: bool, default False: batch renormalization (above).
        renorm_clipping: dict or None, default None: optional keys "rmin", "rmax" (bounds of
            r) and "dmax" (d is clipped to [-dmax, dmax]); None or {}: no clipping.
        renorm_momentum: float in [0, 1], default 0.99: of renorm_mean and renorm_stddev.
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    Example:
        >>> model = fastnn.Sequential([
        ...     fastnn.layers.Dense(64, input_shape=(64,)),
        ...     fastnn.layers.BatchNormalization(),
        ...     fastnn.layers.Activation("relu"),
        ...     fastnn.layers.Dense(10, activation="softmax"),
        ... ])
    """

    _training_dependent = True
    supports_masking = True
    _consumes_mask = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 renorm=False, renorm_clipping=None, renorm_momentum=0.99, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        who = f"BatchNormalization '{self.name}'"
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{who}: 'axis' must be an int (one channel axis), got {axis!r}")
        for what, value in (("momentum", momentum), ("epsilon", epsilon), ("renorm_momentum", renorm_momentum)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{who}: '{what}' must be a float, got {value!r}")
        for what, value in (("momentum", momentum), ("renorm_momentum", renorm_momentum)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{who}: '{what}' must be in [0, 1], got {value!r}")
        if not (math.isfinite(float(epsilon)) and float(epsilon) > 0):
            raise ValueError(f"{who}: 'epsilon' must be a finite float > 0, got {epsilon!r}")
        self.beta_constraint = _validation.constraint(beta_constraint, "beta_constraint", who)
        self.gamma_constraint = _validation.constraint(gamma_constraint, "gamma_constraint", who)
        # Keras' cross-device statistics: accepted at its default so that Keras configs port
        if synchronized:
            raise ValueError(f"{who}: synchronized=True (cross-device statistics) is not supported")
        self.renorm = bool(renorm)
        if self.renorm:
            renorm_clipping = _renorm_clipping(renorm_clipping, who)
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = float(renorm_momentum)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self.moving_stddev = self.renorm_mean = self.renorm_stddev = None
        self._channel_axis = None  # self.axis made non-negative, after build

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self._channel_axis = self.axis % len(input_shape)
        shape = (input_shape[self._channel_axis],)
        if self.scale:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
                                         name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer,
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint,
                                        name="beta")
        self.moving_mean = self.add_weight(shape=shape, initializer=self.moving_mean_initializer, trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer=self.moving_variance_initializer,
                                               trainable=False, name="moving_variance")
        if self.renorm:
            # Keras tracks standard deviations here, started at sqrt(the variance initializer)
            def stddev_initializer(shape, dtype=None):
                return np.sqrt(self.moving_variance_initializer(shape, dtype))

            self.moving_stddev = self.add_weight(shape=shape, initializer=stddev_initializer, trainable=False,
                                                 name="moving_stddev")
            self.renorm_mean = self.add_weight(shape=shape, initializer=self.moving_mean_initializer,
                                               trainable=False, name="renorm_mean")
            self.renorm_stddev = self.add_weight(shape=shape, initializer=stddev_initializer, trainable=False,
                                                 name="renorm_stddev")

    def compute_output_shape(self, input_shape):
        who = f"BatchNormalization '{self.name}'"
        ndim = len(input_shape)
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{who}: 'axis' {self.axis} is out of range for inputs of shape {input_shape} "
                             f"({ndim} axes)")
        axis = self.axis % ndim
        channels = input_shape[axis]
        if channels is None:
            hint = " (axis 0 is the batch axis)" if axis == 0 else ""
            raise ValueError(f"{who}: the channel axis {self.axis} of the input shape {input_shape} must have a "
                             f"known size{hint}")
        if self.moving_mean is not None and channels != self.moving_mean.shape[0]:
            raise ValueError(f"{who}: built for {self.moving_mean.shape[0]} channels on axis {self.axis}, got "
                             f"inputs of shape {input_shape}")
        return tuple(input_shape)

    def forward(self, x, training=False, keep_cache=False, mask=None):
        axis = self._channel_axis
        channels = self.moving_mean.shape[0]
        if x.ndim != len(self.input_shape) or x.shape[axis] != channels:
            raise ValueError(f"BatchNormalization '{self.name}': built for inputs of shape {self.input_shape} "
                             f"({channels} channels on axis {self.axis}), got shape {x.shape}")
        if mask is not None:
            mask = self._check_mask(mask, x)
        # Keras 3: a frozen layer normalises with its moving statistics and does not update them.
        batch_statistics = bool(training) and self.trainable
        gamma = self.gamma.value if self.scale else None
        beta = self.beta.value if self.center else None
        if batch_statistics and mask is not None:
            return self._masked_forward(x, mask, gamma, beta)
        if batch_statistics and self.renorm:
            return self._renorm_forward(x, gamma, beta)
        y, mean, invstd = ops.batch_norm_forward(x, gamma, beta, self.moving_mean.value, self.moving_variance.value,
                                                 axis, self.epsilon, self.momentum, batch_statistics)
        return y, ((x, mean, invstd, batch_statistics) if training or keep_cache else None)

    def _check_mask(self, mask, x):
        """Keras' check (one axis fewer than the inputs), then the boolean mask broadcast to x's
        shape along the last axis (Keras' ``expand_dims(mask, -1)``)."""
        mask = np.asarray(mask)
        if mask.ndim != x.ndim - 1:
            raise ValueError(f"BatchNormalization '{self.name}': 'mask' must have one axis fewer than the inputs; "
                             f"got mask.shape={mask.shape}, inputs.shape={x.shape}")
        try:
            return np.broadcast_to(np.asarray(mask, bool)[..., None], x.shape)
        except ValueError:
            raise ValueError(f"BatchNormalization '{self.name}': 'mask' of shape {mask.shape} does not broadcast to "
                             f"the inputs of shape {x.shape} (as mask[..., None])") from None

    def _masked_forward(self, x, mask, gamma, beta):
        """Training with a mask (Keras 3's ``_moments(inputs, mask)``): the batch mean and variance
        over the unmasked positions only, each divided by (unmasked count + fastnn.config.epsilon()),
        then every position (masked ones too) normalised with them; the moving statistics (and, with
        renorm, the renorm ones) move towards these moments."""
        axis = self._channel_axis
        reduce = tuple(a for a in range(x.ndim) if a != axis)
        shape = [1] * x.ndim
        shape[axis] = -1
        zero = np.zeros((), x.dtype)
        count = mask.sum(axis=reduce, dtype=x.dtype) + np.asarray(config.epsilon(), x.dtype)
        mean = np.where(mask, x, zero).sum(axis=reduce) / count
        centered = x - mean.reshape(shape)
        variance = np.square(np.where(mask, centered, zero)).sum(axis=reduce) / count
        stddev = np.sqrt(variance + np.asarray(self.epsilon, x.dtype))
        invstd = (1 / stddev).astype(x.dtype)
        x_hat = centered * invstd.reshape(shape)
        r = d = None
        if self.renorm:
            r, d = self._renorm_correction(mean, stddev, x.dtype)
            scale = r if gamma is None else r * gamma
            offset = d if gamma is None else d * gamma
            self._renorm_update(mean, stddev)
        else:
            scale = np.ones_like(mean) if gamma is None else gamma
            offset = np.zeros_like(mean)
            m = self.momentum
            self.moving_mean.value[...] = self.moving_mean.value * m + mean * (1 - m)
            self.moving_variance.value[...] = self.moving_variance.value * m + variance * (1 - m)
        if beta is not None:
            offset = offset + beta
        y = x_hat * scale.reshape(shape).astype(x.dtype) + offset.reshape(shape).astype(x.dtype)
        return np.ascontiguousarray(y, dtype=x.dtype), _MaskedCache(x_hat, mask, count, invstd, scale, r, d)

    def _renorm_correction(self, mean, stddev, dtype):
        """Keras' r and d (clipped by renorm_clipping) from the batch mean and stddev, with the renorm
        statistics before this step's update."""
        floor = np.sqrt(np.asarray(self.epsilon, stddev.dtype))  # avoids dividing by 0 early on
        s = np.maximum(self.renorm_stddev.value, floor)
        r = stddev / s
        d = (mean - self.renorm_mean.value) / s
        clip = self.renorm_clipping
        if clip.get("rmin") is not None:
            r = np.maximum(r, clip["rmin"])
        if clip.get("rmax") is not None:
            r = np.minimum(r, clip["rmax"])
        if clip.get("dmax") is not None:
            d = np.clip(d, -clip["dmax"], clip["dmax"])
        return r.astype(dtype), d.astype(dtype)

    def _renorm_update(self, mean, stddev):
        """Keras' update of renorm_mean/stddev (renorm_momentum) and moving_mean/stddev (momentum);
        moving_variance = relu(moving_stddev**2 - epsilon)."""
        rm, m = self.renorm_momentum, self.momentum
        self.renorm_mean.value[...] = self.renorm_mean.value * rm + mean * (1 - rm)
        self.renorm_stddev.value[...] = self.renorm_stddev.value * rm + stddev * (1 - rm)
        self.moving_mean.value[...] = self.moving_mean.value * m + mean * (1 - m)
        self.moving_stddev.value[...] = self.moving_stddev.value * m + stddev * (1 - m)
        self.moving_variance.value[...] = np.maximum(np.square(self.moving_stddev.value) - self.epsilon, 0)

    def _renorm_forward(self, x, gamma, beta):
        """Training with renorm: the batch-normalized x̂ from the kernel, then the r, d correction."""
        axis = self._channel_axis
        x_hat, mean, invstd = ops.batch_norm_forward(x, axis=axis, epsilon=self.epsilon, training=True)
        stddev = 1 / invstd  # sqrt(var + epsilon)
        r, d = self._renorm_correction(mean, stddev, x_hat.dtype)
        scale = r if gamma is None else r * gamma
        offset = d if gamma is None else d * gamma
        if beta is not None:
            offset = offset + beta
        shape = [1] * x.ndim
        shape[axis] = -1
        y = x_hat * scale.reshape(shape) + offset.reshape(shape)
        # Keras' order: the corrections above used the statistics before this update.
        self._renorm_update(mean, stddev)
        return y, (x, mean, invstd, True, r, d)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if isinstance(cache, _MaskedCache):
            return self._masked_backward(cache, dy, need_input_grad, accumulate)
        if len(cache) == 6:
            return self._renorm_backward(cache, dy, need_input_grad, accumulate)
        x, mean, invstd, batch_statistics = cache
        gamma = self.gamma.value if self.scale else None
        return ops.batch_norm_backward(dy, x, mean, invstd, gamma, self._channel_axis, batch_statistics,
                                       trainable_grad(self.gamma), trainable_grad(self.beta), accumulate,
                                       need_input_grad)

    def _masked_backward(self, cache, dy, need_input_grad, accumulate):
        # y = x̂·G + B with x̂ = (x - mean)·invstd, where mean and var are the masked moments
        # (weights w = mask, n = Σw + ε): dmean/dx = w/n, dvar/dx = 2w(x - mean)/n and
        # dvar/dmean = -2Σw(x - mean)/n; r and d (renorm) are constants, as in Keras.
        x_hat, w, n, invstd, scale, r, d = cache
        axis = self._channel_axis
        reduce = tuple(a for a in range(x_hat.ndim) if a != axis)
        shape = [1] * x_hat.ndim
        shape[axis] = -1
        dy = np.asarray(dy, x_hat.dtype)
        sum_dy = dy.sum(axis=reduce)
        sum_dy_xhat = (dy * x_hat).sum(axis=reduce)
        dgamma = sum_dy_xhat if r is None else r * sum_dy_xhat + d * sum_dy
        for grad, value in ((trainable_grad(self.gamma), dgamma), (trainable_grad(self.beta), sum_dy)):
            if grad is not None:
                if accumulate:
                    grad += value
                else:
                    grad[...] = value
        if not need_input_grad:
            return None
        zero = np.zeros((), x_hat.dtype)
        sum_dxhat, sum_dxhat_xhat = sum_dy * scale, sum_dy_xhat * scale
        centered = x_hat / invstd.reshape(shape)
        d_var = -0.5 * invstd ** 2 * sum_dxhat_xhat
        d_mean = -invstd * sum_dxhat - 2 * d_var * np.where(w, centered, zero).sum(axis=reduce) / n
        dx = dy * (scale * invstd).reshape(shape)
        dx += np.where(w, (d_mean / n).reshape(shape) + (2 * d_var / n).reshape(shape) * centered, zero)
        return np.ascontiguousarray(dx, dtype=x_hat.dtype)

    def _renorm_backward(self, cache, dy, need_input_grad, accumulate):
        # y = x̂·(r·gamma) + d·gamma + beta with r, d constant: the batch-norm backward with
        # scale r·gamma gives dx, Σ dy·x̂ and Σ dy; then dgamma = r·Σ dy·x̂ + d·Σ dy.
        x, mean, invstd, _, r, d = cache
        scale = r if not self.scale else r * self.gamma.value
        sum_dy_xhat, sum_dy = np.zeros_like(r), np.zeros_like(r)
        dx = ops.batch_norm_backward(dy, x, mean, invstd, scale, self._channel_axis, True, sum_dy_xhat, sum_dy,
                                     False, need_input_grad)
        for grad, value in ((trainable_grad(self.gamma), r * sum_dy_xhat + d * sum_dy),
                            (trainable_grad(self.beta), sum_dy)):
            if grad is not None:
                if accumulate:
                    grad += value
                else:
                    grad[...] = value
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(renorm=self.renorm, renorm_clipping=self.renorm_clipping, renorm_momentum=self.renorm_momentum,
                   beta_constraint=constraints.serialize(self.beta_constraint),
                   gamma_constraint=constraints.serialize(self.gamma_constraint))
        cfg.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                   scale=self.scale,
                   beta_initializer=initializers.serialize(self.beta_initializer),
                   gamma_initializer=initializers.serialize(self.gamma_initializer),
                   moving_mean_initializer=initializers.serialize(self.moving_mean_initializer),
                   moving_variance_initializer=initializers.serialize(self.moving_variance_initializer),
                   beta_regularizer=regularizers.serialize(self.beta_regularizer),
                   gamma_regularizer=regularizers.serialize(self.gamma_regularizer))
        return cfg


class _MaskedCache(tuple):
    """A masked training pass's cache: (x̂, mask, count + ε, invstd, effective scale, r, d)."""

    __slots__ = ()

    def __new__(cls, *items):
        return super().__new__(cls, items)


def _renorm_clipping(value, who):
    """Keras' checks of renorm_clipping: a dict with keys among rmin, rmax, dmax (None: {})."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise TypeError(f"{who}: 'renorm_clipping' must be a dict with keys among rmin, rmax, dmax, or None; got "
                        f"{value!r}")
    unknown = set(value) - {"rmin", "rmax", "dmax"}
    if unknown:
        raise ValueError(f"{who}: 'renorm_clipping' has unknown keys {sorted(map(str, unknown))}; expected keys among "
                         f"rmin, rmax, dmax, got {value!r}")
    for key, bound in value.items():
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer,
                                                                                   np.floating))
                                  or not math.isfinite(float(bound))):
            raise TypeError(f"{who}: renorm_clipping['{key}'] must be a finite number or None, got {bound!r}")
    if value.get("rmin") is not None and value.get("rmax") is not None and value["rmax"] < value["rmin"]:
        raise ValueError(f"{who}: renorm_clipping needs rmax >= rmin, got rmax={value['rmax']}, rmin={value['rmin']}")
    if value.get("dmax") is not None and value["dmax"] < 0:
        raise ValueError(f"{who}: renorm_clipping['dmax'] must be >= 0, got {value['dmax']}")
    return dict(value)


class LayerNormalization(Layer):
    """Normalizes each example over its last axes (Ba et al., 2016; Keras 3's LayerNormalization).

    For each example (every index of the axes not normalised) with k values ``x_i`` in the
    normalised axes::

        mean = sum(x_i) / k
        var = sum((x_i - mean) ** 2) / k
        output_i = (x_i - mean) / sqrt(var + epsilon) * gamma_i + beta_i

    ``gamma`` and ``beta`` span the normalised axes (shape ``input_shape[axis]``), so their
    size must be known when the layer is built. Unlike BatchNormalization the statistics are
    each example's own: training and inference compute the same thing, and there are no
    moving statistics.

    ``rms_scaling=True`` is Keras 3's (deprecated there) variant: ``x / sqrt(var + epsilon) *
    gamma``, no mean subtracted and no beta (gamma is created even with scale=False).

    Forward and backward are one C++ call each (one pass over each example for its moments;
    dgamma and dbeta summed in a fixed order, the same bit for bit on any thread count). The
    kernel normalises trailing axes: ``axis`` must be the last axis or a run of trailing axes
    (``-1``, ``[-2, -1]``, ``[1, 2]`` for 3-D inputs); other axes raise ValueError. After
    building, ``axis`` is the sorted list of the normalised axes (non-negative), as in Keras.
    Weights order: gamma, beta (those that exist), as in Keras. Masks pass through.

    Args:
        axis: int or list/tuple of ints, default -1: the axes to normalise over.
        epsilon: float > 0, default 1e-3: added to the variance.
        center: bool, default True: add beta (False: no beta weight).
        scale: bool, default True: multiply by gamma (False: no gamma weight).
        rms_scaling: bool, default False: Keras' RMS scaling variant (see above).
        beta_initializer: default "zeros". gamma_initializer: default "ones".
        beta_regularizer, gamma_regularizer: default None.
        beta_constraint, gamma_constraint: default None: fastnn.constraints constraints
            applied after each optimizer step.
        **kwargs: name, dtype, trainable, input_shape, input_dim.

    Example:
        >>> layer = fastnn.layers.LayerNormalization(axis=[1, 2])
        >>> layer.ensure_built((5, 20, 30))
        (None, 20, 30)
        >>> layer.gamma.shape, layer.axis
        ((20, 30), [1, 2])
    """

    supports_masking = True
    _shape_preserving = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = f"LayerNormalization '{self.name}'"
        if isinstance(axis, (list, tuple)):
            if not axis or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis):
                raise TypeError(f"{who}: 'axis' must be an int or a non-empty list/tuple of ints, got {axis!r}")
            axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            axis = int(axis)
        else:
            raise TypeError(f"{who}: 'axis' must be an int or a list/tuple of ints, got {axis!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.integer, np.floating)):
            raise TypeError(f"{who}: 'epsilon' must be a float, got {epsilon!r}")
        if not (math.isfinite(float(epsilon)) and float(epsilon) > 0):
            raise ValueError(f"{who}: 'epsilon' must be a finite float > 0, got {epsilon!r}")
        self.beta_constraint = _validation.constraint(beta_constraint, "beta_constraint", who)
        self.gamma_constraint = _validation.constraint(gamma_constraint, "gamma_constraint", who)
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.rms_scaling = bool(rms_scaling)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.gamma = self.beta = None
        self._first_axis = None  # the first normalised axis, after build

    def _axes(self, input_shape):
        """The normalised axes (sorted, non-negative) for inputs of `input_shape`, checked."""
        who = f"LayerNormalization '{self.name}'"
        ndim = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"{who}: 'axis' {a} is out of range for inputs of shape {input_shape} ({ndim} axes)")
        canonical = sorted(a % ndim for a in axes)
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"{who}: duplicate axes are not allowed, got axis={self.axis}")
        if canonical != list(range(canonical[0], ndim)):
            raise ValueError(f"{who}: axis={self.axis} must be the last axis or a run of trailing axes of the inputs "
                             f"of shape {input_shape} (fastnn's kernel normalises trailing axes only)")
        if canonical[0] == 0 or any(input_shape[a] is None for a in canonical):
            raise ValueError(f"{who}: the normalised axes {canonical} of the input shape {input_shape} must have "
                             f"known sizes (axis 0 is the batch axis)")
        return canonical

    def build(self, input_shape):
        axes = self._axes(input_shape)
        self.axis = axes
        self._first_axis = axes[0]
        shape = tuple(input_shape[a] for a in axes)
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
                                         name="gamma")
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer,
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint,
                                        name="beta")

    def compute_output_shape(self, input_shape):
        axes = self._axes(input_shape)
        if self.built:
            built = tuple(self.input_shape[self._first_axis:])
            if len(input_shape) != len(self.input_shape) or tuple(input_shape[axes[0]:]) != built:
                raise ValueError(f"LayerNormalization '{self.name}': built for inputs of shape {self.input_shape} "
                                 f"(normalised axes {self.axis} of sizes {built}), got inputs of shape {input_shape}")
        return tuple(input_shape)

    def _mode(self):
        return "rms_scaling" if self.rms_scaling else "standard"

    def forward(self, x, training=False, keep_cache=False):
        first = self._first_axis
        if x.ndim != len(self.input_shape) or x.shape[first:] != tuple(self.input_shape[first:]):
            raise ValueError(f"LayerNormalization '{self.name}': built for inputs of shape {self.input_shape} "
                             f"(normalised axes {self.axis}), got shape {x.shape}")
        gamma = self.gamma.value if self.gamma is not None else None
        beta = self.beta.value if self.beta is not None else None
        y, mean, invstd = ops.layer_norm_forward(x, gamma, beta, first, self.epsilon, self._mode())
        return y, ((x, mean, invstd) if training or keep_cache else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        x, mean, invstd = cache
        gamma = self.gamma.value if self.gamma is not None else None
        return ops.layer_norm_backward(dy, x, mean, invstd, gamma, self._first_axis, self._mode(),
                                       trainable_grad(self.gamma), trainable_grad(self.beta), accumulate,
                                       need_input_grad)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, epsilon=self.epsilon, center=self.center, scale=self.scale,
                   rms_scaling=self.rms_scaling,
                   beta_initializer=initializers.serialize(self.beta_initializer),
                   gamma_initializer=initializers.serialize(self.gamma_initializer),
                   beta_regularizer=regularizers.serialize(self.beta_regularizer),
                   gamma_regularizer=regularizers.serialize(self.gamma_regularizer),
                   beta_constraint=constraints.serialize(self.beta_constraint),
                   gamma_constraint=constraints.serialize(self.gamma_constraint))
        return cfg
