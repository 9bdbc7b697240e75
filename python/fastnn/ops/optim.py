"""Optimizer kernels (cpp/include/fastnn/optim.hpp): fused steps over flat buffers.

fastnn's optimizers make these calls, each over a model's whole flat parameter (or
gradient) buffer, once per training step; they are public for people who write their
own training loops.

These kernels work in place. The arrays they update (parameters ``w``, optimizer state,
the gradients that ``clip_by_value`` and ``scale_segments`` rescale, ``ema``) must be
writeable C-contiguous NumPy arrays of float32 or float64 and are never copied; the
read-only inputs (``g``, ``w`` of ``ema_update``) follow the package's input contract.
Every array of a call has the dtype of the first one and its number of values (any shape).
"""

import math

import numpy as np

from .. import _core


def _step(fn, step):
    """The step number t: an int >= 1 (t = 0 divides by 1 - β^0 = 0; a float t is a bug upstream)."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"{fn}: 'step' must be an int >= 1, got {step!r}")
    if step < 1:
        raise ValueError(f"{fn}: 'step' must be an int >= 1, got {step!r}")
    return int(step)


def _real(fn, name, value, low=None, high=None, low_open=False, high_open=False):
    """A scalar hyperparameter: a finite real number in range (TypeError / ValueError naming it)."""
    if low is not None and high is not None:
        expected = f"a float in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"a float {'>' if low_open else '>='} {low:g}"
    else:
        expected = "a finite float"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: '{name}' must be {expected}, got {value!r}")
    v = float(value)
    if (not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low))
            or (high is not None and (v >= high if high_open else v > high))):
        raise ValueError(f"{fn}: '{name}' must be {expected}, got {value!r}")
    return v


_UNUSED = object()  # an update without that scalar


def _hyper(fn, learning_rate=_UNUSED, epsilon=_UNUSED, weight_decay=_UNUSED, **rates):
    """Checks an update's scalars: learning_rate and weight_decay >= 0, epsilon > 0, and each
    of `rates` (name=(value, high_open)) in [0, 1] or [0, 1)."""
    if learning_rate is not _UNUSED:
        _real(fn, "learning_rate", learning_rate, low=0.0)
    if epsilon is not _UNUSED:
        _real(fn, "epsilon", epsilon, low=0.0, low_open=True)
    if weight_decay is not _UNUSED:
        _real(fn, "weight_decay", weight_decay, low=0.0)
    for name, (value, high_open) in rates.items():
        _real(fn, name, value, 0.0, 1.0, high_open=high_open)


# ---- updates ---------------------------------------------------------------------------------
def sgd_update(w, g, m=None, learning_rate=0.01, momentum=0.0, nesterov=False):
    """One step of stochastic gradient descent, in place.

    ``w -= lr·g``; with momentum ``m = μ·m - lr·g; w += m`` (Nesterov: ``w += μ·m - lr·g``).

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        m: the momentum buffer, updated in place, or None (default) for plain SGD.
        learning_rate: float >= 0, default 0.01.
        momentum: float in [0, 1], default 0.0.
        nesterov: bool, default False.

    Returns:
        None.
    """
    _hyper("sgd_update", learning_rate, momentum=(momentum, False))
    _core.sgd_update(w, g, m, learning_rate, momentum, nesterov)


def adagrad_update(w, g, acc, learning_rate=0.001, epsilon=1e-7):
    """One Adagrad step, in place: ``acc += g²; w -= lr·g / sqrt(acc + ε)``.

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        acc: the sum of squared gradients, updated in place.
        learning_rate: float >= 0, default 0.001.
        epsilon: float > 0, default 1e-7 (inside the square root).

    Returns:
        None.
    """
    _hyper("adagrad_update", learning_rate, epsilon)
    _core.adagrad_update(w, g, acc, learning_rate, epsilon)


def rmsprop_update(w, g, v, mean_g=None, m=None, learning_rate=0.001, rho=0.9, momentum=0.0,
                   epsilon=1e-7):
    """One step of Keras' RMSprop, in place.

    ``v = ρ·v + (1-ρ)·g²``; the step ``lr·g / sqrt(v + ε)`` (centered: ``v - mean_g²``
    under the root) is taken directly, or through the momentum buffer.

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        v: the moving average of g², updated in place.
        mean_g: the moving average of g (centered RMSprop), updated in place, or None
            (default).
        m: the momentum buffer, updated in place, or None (default).
        learning_rate: float >= 0, default 0.001.
        rho: float in [0, 1], default 0.9.
        momentum: float in [0, 1], default 0.0 (used with m).
        epsilon: float > 0, default 1e-7 (inside the square root).

    Returns:
        None.
    """
    _hyper("rmsprop_update", learning_rate, epsilon, rho=(rho, False), momentum=(momentum, False))
    _core.rmsprop_update(w, g, v, mean_g, m, learning_rate, rho, momentum, epsilon)


def adadelta_update(w, g, acc_g, acc_delta, learning_rate=0.001, rho=0.95, epsilon=1e-7):
    """One step of Keras' Adadelta, in place.

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        acc_g: the moving average of g², updated in place.
        acc_delta: the moving average of the squared steps, updated in place.
        learning_rate: float >= 0, default 0.001.
        rho: float in [0, 1], default 0.95.
        epsilon: float > 0, default 1e-7.

    Returns:
        None.
    """
    _hyper("adadelta_update", learning_rate, epsilon, rho=(rho, False))
    _core.adadelta_update(w, g, acc_g, acc_delta, learning_rate, rho, epsilon)


def adam_update(w, g, m, v, step, v_max=None, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7, weight_decay=0.0):
    """One Adam step over a flat buffer, in place (the design's fused Adam kernel).

    ``m += (g - m)(1-β1); v += (g² - v)(1-β2); w -= lr·sqrt(1-β2ᵗ)/(1-β1ᵗ)·m/(sqrt(v)+ε)``;
    AMSGrad with v_max; AdamW's decoupled decay ``w -= lr·λ·w`` first when weight_decay.

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        m: the first moment, updated in place.
        v: the second moment, updated in place.
        step: int >= 1, the step number t (bias correction).
        v_max: the running maximum of v (AMSGrad), updated in place, or None (default).
        learning_rate: float >= 0, default 0.001.
        beta_1: float in [0, 1), default 0.9.
        beta_2: float in [0, 1), default 0.999.
        epsilon: float > 0, default 1e-7 (added to sqrt(v) before bias correction, as Keras).
        weight_decay: float >= 0, default 0.0: decoupled decay λ.

    Returns:
        None.

    Raises:
        TypeError: `step` is not an int, or a scalar not a number.
        ValueError: `step` < 1 (the bias correction would divide by zero), or a scalar out
            of range or not finite.
    """
    step = _step("adam_update", step)
    _hyper("adam_update", learning_rate, epsilon, weight_decay, beta_1=(beta_1, True), beta_2=(beta_2, True))
    _core.adam_update(w, g, m, v, v_max, learning_rate, beta_1, beta_2, epsilon, step, weight_decay)


def nadam_update(w, g, m, v, step, u_product_t, u_product_t1, learning_rate=0.001, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
    """One step of Keras' Nadam, in place.

    The caller keeps the momentum schedule: ``u_t = β1·(1 - 0.5·0.96ᵗ)`` and its running
    product.

    Args:
        w: the parameters, updated in place.
        g: the gradient, shaped like w.
        m: the first moment, updated in place.
        v: the second moment, updated in place.
        step: int >= 1, the step number t.
        u_product_t: float in [0, 1), the product u_1·…·u_t.
        u_product_t1: float in [0, 1), the product u_1·…·u_(t+1).
        learning_rate: float >= 0, default 0.001.
        beta_1: float in [0, 1), default 0.9.
        beta_2: float in [0, 1), default 0.999.
        epsilon: float > 0, default 1e-7.
        weight_decay: float >= 0, default 0.0: decoupled decay ``w -= lr·λ·w`` first.

    Returns:
        None.

    Raises:
        TypeError: `step` is not an int, or a scalar not a number.
        ValueError: `step` < 1, or a scalar out of range or not finite (a product of 1
            would divide by 1 - 1 = 0).
    """
    step = _step("nadam_update", step)
    _hyper("nadam_update", learning_rate, epsilon, weight_decay, beta_1=(beta_1, True), beta_2=(beta_2, True),
           u_product_t=(u_product_t, True), u_product_t1=(u_product_t1, True))
    _core.nadam_update(w, g, m, v, learning_rate, beta_1, beta_2, epsilon, step, u_product_t,
                       u_product_t1, weight_decay)


# ---- what every optimizer shares: clipping, per-variable scaling, moving average ------------
def clip_by_value(g, clipvalue):
    """Clips values to [-clipvalue, clipvalue], in place (an optimizer's ``clipvalue``).

    Args:
        g: the array (gradients), updated in place.
        clipvalue: float > 0.

    Returns:
        None.
    """
    _real("clip_by_value", "clipvalue", clipvalue, low=0.0, low_open=True)
    _core.clip_by_value(g, clipvalue)


def sum_squares(g, offsets):
    """The sum of squares of each segment ``g[offsets[s]:offsets[s + 1]]``, in double precision.

    With a model's flat gradient buffer and its variables' offsets, the square roots are
    the per-variable gradient norms (``clipnorm``); with ``[0, g.size]``, the global norm
    squared (``global_clipnorm``).

    Args:
        g: a float32 or float64 array, read as flat.
        offsets: 1-D integer array of increasing positions within g, first and last included
            (so ``len(offsets) - 1`` segments).

    Returns:
        A float64 array of ``len(offsets) - 1`` sums.
    """
    return _core.sum_squares(g, offsets)


def scale_segments(g, offsets, factors):
    """Multiplies each segment ``g[offsets[s]:offsets[s + 1]]`` by ``factors[s]``, in place.

    One pass over a flat buffer: clipping by norm (gradients) or per-variable weight decay
    (parameters).

    Args:
        g: the array, updated in place.
        offsets: 1-D integer array of increasing positions within g, first and last included.
        factors: 1-D float array of ``len(offsets) - 1`` factors.

    Returns:
        None.
    """
    _core.scale_segments(g, offsets, factors)


def ema_update(ema, w, momentum):
    """Exponential moving average, in place: ``ema = momentum·ema + (1 - momentum)·w``.

    Args:
        ema: the average, updated in place.
        w: the current values, with as many values as ema.
        momentum: float in [0, 1]; 0 copies w into ema.

    Returns:
        None.
    """
    _hyper("ema_update", momentum=(momentum, False))
    _core.ema_update(ema, w, momentum)


# ---- weight penalties -----------------------------------------------------------------------------
def l1_l2_regularize(w, g, offsets, l1, l2):
    """L1/L2 weight penalties of segments of a flat buffer, and their gradients, in one pass.

    For each segment ``s`` (values ``offsets[s]:offsets[s+1]`` of w), adds
    ``l1[s]·sign(w) + 2·l2[s]·w`` to g in place and returns the total penalty
    ``Σ_s l1[s]·Σ|w| + l2[s]·Σw²`` (summed in a fixed order: the same on any thread count).

    Args:
        w: the parameters (flat).
        g: their gradient, updated in place (writeable, C-contiguous, w's dtype).
        offsets: int64 array of segment boundaries, len(l1) + 1 entries, increasing.
        l1, l2: float arrays, one factor per segment.

    Returns:
        float: the penalty.
    """
    return _core.regularize(w, g, offsets, l1, l2)
