"""Recurrent layers: LSTM, GRU, SimpleRNN (kernels: cpp/include/fastnn/rnn.hpp).

Each runs the whole sequence in one C++ call, forward and backward through time. Weight
layouts are Keras' (kernel (features, G·units), recurrent_kernel (units, G·units), gates
side by side: LSTM i, f, c, o; GRU z, r, h), so Keras weights load with set_weights.
"""

import numpy as np

from .. import _core, activations, initializers, regularizers
from ..ops import rnn as rnn_ops
from ..utils import rng
from .base import Layer, _as_input

_SUPPORTED = ("tanh", "sigmoid", "relu", "linear")


def _activation_name(value, arg, who):
    spec = activations.get(value)
    if spec.name not in _SUPPORTED:
        raise ValueError(f"{who}: '{arg}' must be one of {', '.join(_SUPPORTED)} (or None), got {value!r}")
    return spec.name


def _rate(value, arg, who):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{who}: '{arg}' must be a float in [0, 1), got {value!r}")
    return float(value)


class _UnitForgetBias(initializers.Initializer):
    """The LSTM bias with unit_forget_bias: the initializer's values, ones for the forget gate."""

    def __init__(self, base, units):
        self.base, self.units = base, units

    def __call__(self, shape, dtype=None):
        u = self.units
        parts = [self.base((u,), dtype), np.ones((u,)), self.base((2 * u,), dtype)]
        return np.concatenate([np.asarray(p, dtype=dtype or "float32") for p in parts])


class RNN(Layer):
    """Base of LSTM, GRU and SimpleRNN: the arguments they share (Keras names).

    Args:
        units: int > 0, the state size.
        activation: default "tanh"; recurrent_activation (LSTM, GRU): default "sigmoid".
            Supported: tanh, sigmoid, relu, linear (None).
        use_bias: bool, default True.
        kernel_initializer: default "glorot_uniform"; recurrent_initializer: default
            "orthogonal"; bias_initializer: default "zeros".
        kernel_regularizer, recurrent_regularizer, bias_regularizer: default None.
        dropout: float in [0, 1): dropout of the inputs (one mask per sequence, as Keras).
        recurrent_dropout: float in [0, 1): dropout of h where it enters the recurrent
            product (one mask per sequence).
        seed: optional int for the dropout masks.
        return_sequences: bool, default False: output every step (batch, timesteps, units)
            rather than the last (batch, units).
        return_state: bool, default False: also return the final states ([output, h] or
            [output, h, c]).
        go_backwards: bool, default False: process the sequence last step first (with
            return_sequences the outputs come in that order, as in Keras).
        unroll: accepted for compatibility; the C++ loop is the same either way.
        **kwargs: name, dtype, trainable, input_shape.

    Masks: after ``Embedding(mask_zero=True)`` (or given as ``layer(x, mask=...)``) masked
    steps leave the states unchanged and output the previous step's output, as Keras does.
    Calling the layer directly also takes ``initial_state=[h0(, c0)]``; after a backward
    pass their gradients are in ``initial_state_grads``.
    """

    _kind = None
    _gates = 1
    supports_masking = True
    _consumes_mask = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{who}: 'units' must be a positive int, got {units!r}")
        if stateful:
            raise ValueError(f"{who}: stateful=True is not supported (pass initial_state instead)")
        if any(c is not None for c in (kernel_constraint, recurrent_constraint, bias_constraint)):
            raise ValueError(f"{who}: weight constraints are not supported")
        self.units = int(units)
        self.activation = _activation_name(activation, "activation", who)
        self.recurrent_activation = _activation_name(recurrent_activation, "recurrent_activation", who)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.dropout = _rate(dropout, "dropout", who)
        self.recurrent_dropout = _rate(recurrent_dropout, "recurrent_dropout", who)
        self.seed = seed
        self._generator = rng.generator_for(seed) if seed is not None else None
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.kernel = self.recurrent_kernel = self.bias = None
        self.initial_state_grads = None

    # ---- weights --------------------------------------------------------------------------
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != 3:
            raise ValueError(f"{who}: expects 3-D input (batch, timesteps, features), got shape {input_shape}")
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"{who}: the features axis must be known, got {input_shape}")
        width = self._gates * self.units
        self.kernel = self.add_weight("kernel", (features, width), self.kernel_initializer, self.kernel_regularizer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, width), self.recurrent_initializer,
                                                self.recurrent_regularizer)
        if self.use_bias:
            self.bias = self.add_weight("bias", self._bias_shape(), self._bias_initializer(), self.bias_regularizer)
        out = (input_shape[0], input_shape[1], self.units) if self.return_sequences else (input_shape[0], self.units)
        return out

    @property
    def _n_states(self):
        return 2 if self._kind == rnn_ops._LSTM else 1

    # ---- forward / backward -----------------------------------------------------------------
    def __call__(self, x, training=False, mask=None, initial_state=None):
        """Runs the layer: x (batch, timesteps, features); optional mask (batch, timesteps)
        and initial_state ([h] or [h, c])."""
        x = _as_input(x, self._dtype, self.name)
        self._check_3d(x)  # before building: a clearer message than the build's
        self.ensure_built(x.shape)
        return self.forward(x, training=training, mask=mask, initial_state=initial_state)

    def _dropout_mask(self, rate, shape):
        seed = rng.draw_seed(self._generator)
        return _core.dropout_forward(np.ones(shape, self._dtype), rate, seed)

    def _check_3d(self, x):
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': expects 3-D input (batch, timesteps, "
                             f"features), got shape {x.shape}")

    def forward(self, x, training=False, mask=None, initial_state=None):
        self._check_3d(x)
        batch = x.shape[0]
        if initial_state is not None:  # the layer's dtype (Keras casts too)
            if isinstance(initial_state, np.ndarray) or not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            initial_state = [np.ascontiguousarray(s, self._dtype) for s in initial_state]
        input_mask = None
        if training and self.dropout > 0:
            input_mask = self._dropout_mask(self.dropout, (batch, x.shape[2]))
            x = x * input_mask[:, None, :]
        scale = None
        if training and self.recurrent_dropout > 0:
            scale = self._dropout_mask(self.recurrent_dropout, (batch, self.units))
        bias = self.bias.value if self.use_bias else None
        outputs, finals, cache = rnn_ops._forward(self._kind, x, self.kernel.value, self.recurrent_kernel.value,
                                                  bias, initial_state, mask, self.go_backwards, self.activation,
                                                  self.recurrent_activation, scale)
        if training:
            self._cache = (cache, input_mask)
        if self.return_sequences:
            out = outputs
        else:  # the last output (with a mask: the last unmasked step's; no steps: the state)
            out = np.ascontiguousarray(outputs[:, -1]) if outputs.shape[1] else finals[0]
        if self.return_state:
            return [out] + finals
        return out

    def backward(self, dy):
        cache, input_mask = self._check_cache()
        d_states = [None] * self._n_states
        if self.return_state:
            dy, *d_states = list(dy) + [None] * (self._n_states + 1 - len(dy))
        d_outputs, d_h = None, d_states[0]
        steps, batch = cache.tape[0].shape[0] - 1, cache.tape[0].shape[1]
        if dy is not None:
            dy = np.asarray(dy)
            if self.return_sequences:
                d_outputs = dy
            elif cache.seen is None or steps == 0:  # the output is the final state
                d_h = dy if d_h is None else d_h + dy
            else:  # the last output may be zeros rather than the state (see ops.rnn)
                d_outputs = np.zeros((batch, steps, self.units), dy.dtype)
                d_outputs[:, -1] = dy
        grads = tuple(v.grad if v is not None else None for v in (self.kernel, self.recurrent_kernel, self.bias))
        out = rnn_ops._backward(cache, d_outputs, d_h, d_states[1] if self._n_states == 2 else None,
                                self._need_input_grad, grads=grads)
        self.initial_state_grads = [out["h0"]] + ([out["c0"]] if self._n_states == 2 else [])
        dx = out["dx"]
        if dx is not None and input_mask is not None:
            dx *= input_mask[:, None, :]
        return dx

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   recurrent_initializer=initializers.serialize(self.recurrent_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   recurrent_regularizer=regularizers.serialize(self.recurrent_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer),
                   dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
                   return_sequences=self.return_sequences, return_state=self.return_state,
                   go_backwards=self.go_backwards, unroll=self.unroll)
        if self._kind != rnn_ops._SIMPLE:
            cfg["recurrent_activation"] = self.recurrent_activation
        return cfg


class LSTM(RNN):
    """Long Short-Term Memory layer (Hochreiter 1997), Keras' arguments and weight layout.

    Per step: ``z = x·kernel + h·recurrent_kernel + bias`` with gates i, f, c, o;
    ``c = f·c + i·activation(z_c)``, ``h = o·activation(c)`` (i, f, o through
    recurrent_activation). The whole sequence runs in one C++ call.

    Args:
        units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
        kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
        bias_initializer="zeros", unit_forget_bias=True (forget-gate bias starts at 1),
        regularizers, dropout, recurrent_dropout, seed, return_sequences, return_state,
        go_backwards: see ``RNN``.

    Example:
        >>> model = fastnn.Sequential([fastnn.layers.Embedding(10000, 64, mask_zero=True),
        ...                            fastnn.layers.LSTM(64), fastnn.layers.Dense(1, activation="sigmoid")])
    """

    _kind = rnn_ops._LSTM
    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.units)
        return self.bias_initializer

    def get_config(self):
        cfg = super().get_config()
        cfg["unit_forget_bias"] = self.unit_forget_bias
        return cfg


class GRU(RNN):
    """Gated Recurrent Unit (Cho et al. 2014) in Keras' default ``reset_after=True`` form.

    Per step: ``xz = x·kernel + bias[0]``, ``rh = h·recurrent_kernel + bias[1]`` (gates z, r,
    h); ``z, r = recurrent_activation(xz + rh)``, ``ĥ = activation(xz_h + r·rh_h)``,
    ``h = z·h + (1 − z)·ĥ``. The bias has shape (2, 3·units) as in Keras. This is also
    PyTorch's nn.GRU formula (with its gates ordered r, z, n).

    Args:
        units and the rest: see ``RNN``. reset_after: must be True (the form the kernel
        computes; Keras' default since TF 2).
    """

    _kind = rnn_ops._GRU
    _gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        if not reset_after:
            raise ValueError("GRU: only reset_after=True (Keras' default) is supported")
        super().__init__(units, **kwargs)
        self.reset_after = True

    def _bias_shape(self):
        return (2, 3 * self.units)

    def get_config(self):
        cfg = super().get_config()
        cfg["reset_after"] = True
        return cfg


class SimpleRNN(RNN):
    """Fully connected RNN: ``h = activation(x·kernel + h·recurrent_kernel + bias)``.

    Args:
        units and the rest: see ``RNN`` (no recurrent_activation).
    """

    _kind = rnn_ops._SIMPLE
    _gates = 1

    def __init__(self, units, activation="tanh", **kwargs):
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)
