"""Recurrent layers: LSTM, GRU, SimpleRNN (kernels: cpp/include/fastnn/rnn.hpp).

Each runs the whole sequence in one C++ call, forward and backward through time. Weight
layouts are Keras' (kernel (features, G·units), recurrent_kernel (units, G·units), gates
side by side: LSTM i, f, c, o; GRU z, r, h), so Keras weights load with set_weights.
"""

import abc

import numpy as np

from .. import constraints, initializers, ops, quantizers, regularizers
from ..ops import rnn as ops_rnn
from ..ops.rnn import RNN_ACTIVATIONS
from ..utils import rng
from . import _quantization, _validation
from .base import Layer, trainable_grad

# The kernel computes each with Keras' default parameters: a partial (elu with another
# alpha) or a custom callable is refused rather than silently changed.
_SUPPORTED = ("tanh", "sigmoid", "relu", "linear") + tuple(
    n for n in RNN_ACTIVATIONS if n not in ("tanh", "sigmoid", "relu", "linear"))


def _activation_name(value, arg, who):
    spec = _validation.activation(value, arg, who)
    if spec.name not in _SUPPORTED:
        raise ValueError(f"{who}: '{arg}' must be one of {', '.join(_SUPPORTED)} (or None), got {value!r}")
    return spec.name


def _rate(value, arg, who):
    # [0, 1): Keras clips to [0, 1] and skips dropout at 1.0; fastnn refuses what is out of range.
    return _validation.rate(value, arg, who)


class _UnitForgetBias(initializers.Initializer):
    """The LSTM bias with unit_forget_bias: the initializer's values, ones for the forget gate."""

    def __init__(self, base, units):
        self.base, self.units = base, units

    def __call__(self, shape, dtype=None):
        u = self.units
        parts = [self.base((u,), dtype), np.ones((u,)), self.base((2 * u,), dtype)]
        return np.concatenate([np.asarray(p, dtype=dtype or "float32") for p in parts])


class RNN(Layer, metaclass=abc.ABCMeta):
    """Base of LSTM, GRU and SimpleRNN: the arguments they share (Keras names).

    Args:
        units: int > 0, the state size.
        activation: default "tanh"; recurrent_activation (LSTM, GRU): default "sigmoid".
            Supported (by name or as the fastnn.activations function, Keras' default
            parameters): tanh, sigmoid, linear (None), relu, hard_sigmoid (Keras 3's
            relu6(x + 3)/6, common in Keras 2 scripts as recurrent_activation), softsign,
            elu, selu, softplus, leaky_relu, relu6, hard_tanh. Others (gelu, swish, ...)
            are a ValueError: the kernel derives each derivative from the activation's output.
        use_bias: bool, default True.
        kernel_initializer: default "glorot_uniform"; recurrent_initializer: default
            "orthogonal"; bias_initializer: default "zeros".
        kernel_regularizer, recurrent_regularizer, bias_regularizer: default None.
        kernel_constraint, recurrent_constraint, bias_constraint: default None:
            fastnn.constraints constraints applied after each optimizer step.
        dropout: float in [0, 1): dropout of the inputs (one mask per sequence, as Keras).
        recurrent_dropout: float in [0, 1): dropout of h where it enters the recurrent
            product (one mask per sequence).
        seed: optional int for the dropout masks.
        return_sequences: bool, default False: output every step (batch, timesteps, units)
            rather than the last (batch, units).
        return_state: bool, default False: also return the final states ([output, h] or
            [output, h, c]); the layer's call then has several outputs.
        go_backwards: bool, default False: process the sequence last step first (with
            return_sequences the outputs come in that order, as in Keras).
        stateful: bool, default False: the final states of each batch row are the initial
            states of that row in the next call (Keras), until ``reset_state()`` (alias
            ``reset_states()``) sets them to zeros. Needs a fixed batch size: an
            ``Input(batch_size=...)``, the layer's ``batch_size=...``, or a call on an array;
            every later call must have that batch size. Fit with ``shuffle=False``. Gradients
            do not flow into earlier batches (truncated backpropagation through time).
        unroll: accepted for compatibility; the C++ loop is the same either way.
        zero_output_for_mask: bool, default False: masked steps output zeros rather than the
            previous step's output (the states carry over either way). Keras' semantics: the
            last output (return_sequences=False) is then zeros too when the last step is
            masked. Bidirectional sets it to return_sequences on both of its layers.
        **kwargs: name, dtype, trainable, input_shape.

    Masks: after ``Embedding(mask_zero=True)`` (or given as ``layer(x, mask=...)``) masked
    steps leave the states unchanged and output the previous step's output (or zeros, see
    zero_output_for_mask), as Keras does.

    Initial states: ``layer(x, initial_state=[h0(, c0)])`` takes arrays, or in a functional
    model symbolic tensors (an encoder's final states starting a decoder, as in Keras); the
    backward pass of such a call returns ``[dx, dh0(, dc0)]``.

    Example:
        >>> encoder_inputs = fastnn.Input((None, 8))
        >>> _, h, c = fastnn.layers.LSTM(16, return_state=True)(encoder_inputs)
        >>> decoder_inputs = fastnn.Input((None, 8))
        >>> y = fastnn.layers.LSTM(16, return_sequences=True)(decoder_inputs, initial_state=[h, c])
    """

    _gates = 1
    _n_states = 1
    _has_recurrent_activation = True
    supports_masking = True
    _consumes_mask = True
    _training_dependent = True  # dropout and recurrent_dropout
    _size_arguments = ("units",)

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{who}: 'units' must be a positive int, got {units!r}")
        self.kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint", who)
        self.recurrent_constraint = _validation.constraint(recurrent_constraint, "recurrent_constraint", who)
        self.bias_constraint = _validation.constraint(bias_constraint, "bias_constraint", who)
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
        self.seed = _validation.seed(seed, who)
        self._generator = rng.generator_for(self.seed) if self.seed is not None else None
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.stateful = bool(stateful)
        self.states = None  # stateful: the states carried to the next call, [h(, c)] each (batch, units)
        self._expected_batch_size = None
        self.kernel = self.recurrent_kernel = self.bias = None

    # ---- the kernels (fastnn.ops faces), per subclass ---------------------------------------
    @staticmethod
    @abc.abstractmethod
    def _run(inputs, kernel, recurrent_kernel, **kwargs):
        """The ops function over a sequence: (outputs, *final states, cache)."""

    @staticmethod
    @abc.abstractmethod
    def _run_backward(cache, d_outputs, **kwargs):
        """The ops backward of ``_run``: dict of gradients."""

    # ---- weights and shapes --------------------------------------------------------------------
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        width = self._gates * self.units
        if self._quantization_mode:
            self.kernel = self._add_int8_weight("kernel", (input_shape[-1], width))
        else:
            self.kernel = self.add_weight(shape=(input_shape[-1], width), initializer=self.kernel_initializer,
                                          regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                          name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width), initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint, name="recurrent_kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=self._bias_shape(), initializer=self._bias_initializer(),
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                        name="bias")
        if self._quantization_mode:
            self.kernel_scale = self._add_scale_weight("kernel_scale", (width,))

    # ---- int8 (LSTM, GRU) --------------------------------------------------------------------------
    def _int8_quantize(self):
        values, scale = quantizers.abs_max_quantize(self.kernel.value, axis=0)  # per gate column
        self._swap_to_int8([("kernel", values)], [("kernel_scale", scale.reshape(-1))])

    def _int8_projection(self, x):
        """(x·kernel of every step as one int8 product, the marker telling the recurrent
        kernel that its inputs are these projections)."""
        batch, steps, features = x.shape
        width = self.kernel.shape[1]
        projected = quantizers.int8_dense(x.reshape(batch * steps, features), self._int8_packed(self.kernel.value),
                                          self.kernel_scale.value)
        return projected.reshape(batch, steps, width).astype(self._dtype, copy=False), ops_rnn.PROJECTED_INPUTS

    def ensure_built(self, input_shape, dtypes=None):
        # A stateful layer keeps states per batch row: it needs the batch size, which the
        # shapes lose from here on (build sees the batch axis as unknown).
        if self.stateful and not self.built:
            batch = input_shape[0] if isinstance(input_shape, tuple) and input_shape else None
            batch = batch if batch is not None else self._batch_size
            if batch is None:
                raise ValueError(f"{type(self).__name__} '{self.name}': stateful=True needs a fixed batch size (give "
                                 "Input(batch_size=...), or batch_size=... to the layer); got input shape "
                                 f"{input_shape}")
            self._expected_batch_size = int(batch)
        return super().ensure_built(input_shape, dtypes)

    def reset_state(self):
        """Sets the carried states of a stateful layer to zeros (Keras' ``reset_state``)."""
        if self.stateful and self._expected_batch_size is not None:
            shape = (self._expected_batch_size, self.units)
            self.states = [np.zeros(shape, self._dtype) for _ in range(self._n_states)]

    def reset_states(self):
        """Keras' compatibility alias of ``reset_state()``."""
        self.reset_state()

    def compute_output_shape(self, input_shape):
        who = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != 3:
            raise ValueError(f"{who}: expects 3-D input (batch, timesteps, features), got shape {input_shape}")
        if input_shape[-1] is None:
            raise ValueError(f"{who}: the features axis must be known, got {input_shape}")
        if self.kernel is not None and input_shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"{who}: built for {self.kernel.shape[0]} features, got inputs of shape {input_shape}")
        batch = input_shape[0]
        out = (batch, input_shape[1], self.units) if self.return_sequences else (batch, self.units)
        return [out] + [(batch, self.units)] * self._n_states if self.return_state else out

    def compute_mask(self, inputs, mask=None):
        out = mask if self.return_sequences else None
        return [out] + [None] * self._n_states if self.return_state else out

    # ---- forward / backward -----------------------------------------------------------------
    def _dropout_mask(self, rate, shape):
        return ops.dropout(np.ones(shape, self._dtype), rate, rng.draw_seed(self._generator))

    def forward(self, x, training=False, mask=None, initial_state=None, keep_cache=False):
        """(output, cache): x (batch, timesteps, features); optional mask (batch, timesteps)
        and initial_state ([h] or [h, c]). With return_state the output is [y, h(, c)]."""
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': expects 3-D input (batch, timesteps, "
                             f"features), got shape {x.shape}")
        batch, steps = x.shape[:2]
        has_initial = initial_state is not None  # given to the call: the backward returns their gradients
        if initial_state is not None:  # the layer's dtype (Keras casts too)
            if isinstance(initial_state, np.ndarray) or not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            initial_state = [np.ascontiguousarray(s, self._dtype) for s in initial_state]
        if self.stateful:
            if batch != self._expected_batch_size:
                raise ValueError(f"{type(self).__name__} '{self.name}': stateful=True keeps states for a batch size of "
                                 f"{self._expected_batch_size}; got inputs of shape {x.shape}")
            if self.states is None:
                self.reset_state()
            if initial_state is None:
                initial_state = self.states
        input_mask = None
        if training and self.dropout > 0:
            input_mask = self._dropout_mask(self.dropout, (batch, x.shape[2]))
            x = x * input_mask[:, None, :]
        scale = None
        if training and self.recurrent_dropout > 0:
            scale = self._dropout_mask(self.recurrent_dropout, (batch, self.units))
        kwargs = {"recurrent_activation": self.recurrent_activation} if self._has_recurrent_activation else {}
        kernel = self.kernel.value
        if self._quantization_mode:
            x, kernel = self._int8_projection(x)
        outputs, *finals, rnn_cache = self._run(x, kernel, self.recurrent_kernel.value,
                                                bias=self.bias.value if self.use_bias else None,
                                                initial_state=initial_state, mask=mask, go_backwards=self.go_backwards,
                                                activation=self.activation, recurrent_dropout_mask=scale,
                                                return_cache=True, **kwargs)
        kept = None  # (batch, timesteps, 1) in processing order: the steps whose output is not zeroed
        if mask is not None and self.zero_output_for_mask:
            kept = (np.asarray(mask) != 0)[:, ::-1] if self.go_backwards else np.asarray(mask) != 0
            kept = kept[..., None]
            outputs = np.where(kept, outputs, outputs.dtype.type(0))
        if self.return_sequences:
            out = outputs
        else:  # the last output (with a mask: the last unmasked step's; no steps: the state)
            out = np.ascontiguousarray(outputs[:, -1]) if steps else finals[0]
        y = [out] + finals if self.return_state else out
        if self.stateful:  # copies: the kernel's tape is the cache's
            self.states = [np.array(f, self._dtype) for f in finals]
        if not (training or keep_cache):
            return y, None
        # With a mask and initial states, an output before a sample's first step is zeros, not
        # the state (see ops.rnn): then the last output is not the final state.
        # Nor is it under zero_output_for_mask (a masked last step outputs zeros).
        last_is_state = steps == 0 or ((mask is None or initial_state is None) and kept is None)
        return y, (rnn_cache, input_mask, has_initial, last_is_state, batch, steps, kept)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if self._quantization_mode:
            raise self._int8_backward_error()
        rnn_cache, input_mask, has_initial, last_is_state, batch, steps, kept = cache
        n = self._n_states
        needs = list(need_input_grad) if isinstance(need_input_grad, (list, tuple)) else [need_input_grad] * (1 + n)
        d_states = [None] * n
        if self.return_state:
            dy, *d_states = list(dy) + [None] * (n + 1 - len(dy))
        d_outputs, d_h = None, d_states[0]
        if dy is not None:
            dy = np.asarray(dy)
            if self.return_sequences:
                d_outputs = dy
            elif last_is_state:
                d_h = dy if d_h is None else d_h + dy
            else:
                d_outputs = np.zeros((batch, steps, self.units), dy.dtype)
                d_outputs[:, -1] = dy
            if kept is not None and d_outputs is not None:  # a zeroed output is a constant
                d_outputs = np.where(kept, d_outputs, d_outputs.dtype.type(0))
        state_grads = {"d_h": d_h, "d_c": d_states[1]} if n == 2 else {"d_h": d_h}
        grads = self._run_backward(rnn_cache, d_outputs, need_dx=bool(needs[0]), dkernel=trainable_grad(self.kernel),
                                   drecurrent_kernel=trainable_grad(self.recurrent_kernel), dbias=trainable_grad(self.bias),
                                   accumulate=accumulate, **state_grads)
        dx = grads["dx"]
        if dx is not None and input_mask is not None:
            dx *= input_mask[:, None, :]
        if not has_initial:
            return dx
        d_initial = [grads["h0"], grads.get("c0")][:n]
        return [dx] + [d if need else None for d, need in zip(d_initial, needs[1:])]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   recurrent_initializer=initializers.serialize(self.recurrent_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   recurrent_regularizer=regularizers.serialize(self.recurrent_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer),
                   kernel_constraint=constraints.serialize(self.kernel_constraint),
                   recurrent_constraint=constraints.serialize(self.recurrent_constraint),
                   bias_constraint=constraints.serialize(self.bias_constraint),
                   dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
                   return_sequences=self.return_sequences, return_state=self.return_state,
                   go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
                   zero_output_for_mask=self.zero_output_for_mask)
        if self._has_recurrent_activation:
            cfg["recurrent_activation"] = self.recurrent_activation
        return cfg


class LSTM(_quantization.Int8Quantizable, RNN):
    """Long Short-Term Memory layer (Hochreiter 1997), Keras' arguments and weight layout.

    Quantized (``model.quantize("int8")``; fastnn's extension, Keras does not quantize
    recurrent layers): the input kernel (features, 4·units) is int8 with one scale per
    column (``kernel_scale``); weights kernel, recurrent_kernel, bias, kernel_scale. The
    input projections of all steps are one ``fastnn.quantizers.int8_dense`` call (each
    step's input quantized per row); the recurrent kernel stays float32. The recurrent C++
    kernel has no entry for precomputed projections, so they go in as its inputs with an
    identity (4·units, 4·units) kernel: exact, but an extra float product per step.
    Inference only.

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

    _gates = 4
    _n_states = 2
    _run = staticmethod(ops.lstm)
    _run_backward = staticmethod(ops.lstm_backward)

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


class GRU(_quantization.Int8Quantizable, RNN):
    """Gated Recurrent Unit (Cho et al. 2014), Keras' two forms (gates z, r, h).

    Quantized (``model.quantize("int8")``): as LSTM, the input kernel (features, 3·units)
    int8 per column, its projections through ``int8_dense``; inference only.

    ``reset_after=True`` (Keras' default since TF 2): ``xz = x·kernel + bias[0]``,
    ``rh = h·recurrent_kernel + bias[1]``; ``z, r = recurrent_activation(xz + rh)``,
    ``ĥ = activation(xz_h + r·rh_h)``, ``h = z·h + (1 − z)·ĥ``; the bias has shape
    (2, 3·units). This is also PyTorch's nn.GRU formula (with its gates ordered r, z, n).

    ``reset_after=False`` (Keras 1/2's default, and their saved models' weights):
    ``xz = x·kernel + bias``, ``z, r = recurrent_activation(xz + h·R_zr)``,
    ``ĥ = activation(xz_h + (r·h)·R_h)``, ``h = z·h + (1 − z)·ĥ``; the bias has shape
    (3·units,). Each step needs two recurrent products (ĥ's waits for r).

    Args:
        units and the rest: see ``RNN``.
        reset_after: bool, default True: the form above.
    """

    _gates = 3
    _run_backward = staticmethod(ops.gru_backward)

    def __init__(self, units, reset_after=True, **kwargs):
        if not isinstance(reset_after, (bool, np.bool_)):
            raise TypeError(f"GRU: 'reset_after' must be a bool, got {reset_after!r}")
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def _run(self, inputs, kernel, recurrent_kernel, **kwargs):
        return ops.gru(inputs, kernel, recurrent_kernel, reset_after=self.reset_after, **kwargs)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def get_config(self):
        cfg = super().get_config()
        cfg["reset_after"] = self.reset_after
        return cfg


class SimpleRNN(RNN):
    """Fully connected RNN: ``h = activation(x·kernel + h·recurrent_kernel + bias)``.

    Args:
        units and the rest: see ``RNN`` (no recurrent_activation).
    """

    _gates = 1
    _has_recurrent_activation = False
    _run = staticmethod(ops.simple_rnn)
    _run_backward = staticmethod(ops.simple_rnn_backward)

    def __init__(self, units, activation="tanh", **kwargs):
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)
