"""Layer and optimizer kernels (cpp/include/fastnn/{activation,dense,dropout,optim}.hpp).

These are the calls fastnn's layers and optimizers make; they are public for people who
write their own training loops.
"""

from .. import _core

_ACTIVATIONS = dict(_core.activation_kinds)


def _kind(activation):
    if activation is None:
        return _ACTIVATIONS["linear"]
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation]


def activation_forward(x, activation, alpha=0.0):
    """``activation(x)``, elementwise (softmax: over the last axis).

    Args:
        x: array-like.
        activation: a kernel name: linear, relu, sigmoid, tanh, leaky_relu, elu, selu, gelu,
            gelu_tanh, softplus, swish, softmax.
        alpha: float, default 0: leaky_relu's slope or elu's scale.
    """
    return _core.activation_forward(x, _kind(activation), alpha)


def activation_backward(dy, activation, y, x=None, alpha=0.0):
    """``dy * activation'(x)`` from the output y (and the input x where the derivative needs it:
    leaky_relu, elu, selu, gelu, gelu_tanh, softplus, swish)."""
    return _core.activation_backward(_kind(activation), alpha, x, y, dy)


def dense(x, w, b=None, activation=None, alpha=0.0, return_preactivation=False):
    """``activation(x @ w + b)`` over the last axis of x, in one kernel call.

    Returns y, or (y, z) with z = x @ w + b when `return_preactivation` (z is None for a
    linear activation, where it equals y).
    """
    y, z = _core.dense_forward(x, w, b, _kind(activation), alpha, return_preactivation)
    return (y, z) if return_preactivation else y


def dense_backward(x, w, dy, y, dw, db=None, activation=None, z=None, alpha=0.0, accumulate=False,
                   need_dx=True):
    """Backward of ``dense``: writes dw (and db) in place, returns dx (None unless need_dx).

    Args:
        x, w: the forward inputs. y: the forward output. z: the pre-activation (needed for
            the activations listed in activation_backward).
        dy: dL/dy. dw, db: output arrays shaped like w and b (or None to skip them).
        accumulate: add into dw/db instead of overwriting.
    """
    return _core.dense_backward(x, w, z, y, dy, _kind(activation), alpha, dw, db, accumulate, need_dx)


def dropout(x, rate, seed):
    """Inverted dropout: each value kept with probability 1 - rate and scaled by 1/(1 - rate).

    The mask is a function of (seed, position) only.
    """
    return _core.dropout_forward(x, rate, seed)


def dropout_backward(dy, rate, seed):
    """Backward of ``dropout`` with the same rate and seed (the mask is regenerated)."""
    return _core.dropout_backward(dy, rate, seed)


def sgd_update(w, g, m=None, learning_rate=0.01, momentum=0.0, nesterov=False):
    """In place: ``w -= lr·g``, or with momentum ``m = μ·m - lr·g; w += m`` (Nesterov: μ·m - lr·g)."""
    _core.sgd_update(w, g, m, learning_rate, momentum, nesterov)


def adagrad_update(w, g, acc, learning_rate=0.001, epsilon=1e-7):
    """In place: ``acc += g²; w -= lr·g / sqrt(acc + ε)``."""
    _core.adagrad_update(w, g, acc, learning_rate, epsilon)


def rmsprop_update(w, g, v, mean_g=None, m=None, learning_rate=0.001, rho=0.9, momentum=0.0,
                   epsilon=1e-7):
    """In place, Keras' RMSprop (centered when mean_g is given, with momentum when m is)."""
    _core.rmsprop_update(w, g, v, mean_g, m, learning_rate, rho, momentum, epsilon)


def adadelta_update(w, g, acc_g, acc_delta, learning_rate=0.001, rho=0.95, epsilon=1e-7):
    """In place, Keras' Adadelta."""
    _core.adadelta_update(w, g, acc_g, acc_delta, learning_rate, rho, epsilon)


def adam_update(w, g, m, v, step, v_max=None, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7, weight_decay=0.0):
    """In place, one Adam step over a flat buffer (the design's fused Adam kernel).

    ``m += (g - m)(1-β1); v += (g² - v)(1-β2); w -= lr·sqrt(1-β2ᵗ)/(1-β1ᵗ)·m/(sqrt(v)+ε)``;
    AMSGrad with v_max; AdamW's decoupled decay ``w -= lr·λ·w`` first when weight_decay.

    Args:
        w, g, m, v (, v_max): arrays of one float dtype and size; w, m, v, v_max updated.
        step: int >= 1, the step number t.
    """
    _core.adam_update(w, g, m, v, v_max, learning_rate, beta_1, beta_2, epsilon, step, weight_decay)


def nadam_update(w, g, m, v, step, u_product_t, u_product_t1, learning_rate=0.001, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
    """In place, Keras' Nadam (the caller keeps the momentum-schedule product u_product)."""
    _core.nadam_update(w, g, m, v, learning_rate, beta_1, beta_2, epsilon, step, u_product_t,
                       u_product_t1, weight_decay)
