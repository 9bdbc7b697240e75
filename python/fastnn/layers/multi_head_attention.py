"""MultiHeadAttention (Keras 3's ``keras.layers.MultiHeadAttention``).

Four EinsumDense projections (query, key, value, output: Keras' weight shapes and order)
around fastnn's tiled attention kernel (``ops.attention_forward``): the projections write
(batch, time, heads, size), which the kernel reads in place, and the T×S probabilities are
never formed unless ``return_attention_scores`` asks for them.

Masks, as Keras combines them: the query's mask [B, T, 1], the value's [B, 1, S], the key's
[B, 1, S], ``attention_mask`` [B, T, S] and the causal mask, joined by AND; a masked logit
takes no part in the softmax and a row with every key masked gives zeros. The key-side
masks and ``attention_mask`` go to the kernel; a masked query row is zeroed afterwards
(the same result without a [B, T, S] array).
"""

import math

import numpy as np

from .. import constraints, initializers, ops, regularizers
from ..keras_tensor import KerasTensor, any_symbolic
from ..utils import rng
from . import _validation
from .base import Layer, _as_input
from .einsum_dense import EinsumDense

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al., 2017), with Keras 3's arguments and weights.

    Projects ``query`` to ``num_heads`` heads of size ``key_dim``, ``key`` likewise and
    ``value`` to heads of size ``value_dim``; each head attends with
    ``softmax(Q Kᵀ / sqrt(key_dim)) V`` (masked, with dropout on the probabilities in
    training); the heads are projected back to ``output_shape``. ``mha(x, x)`` is
    self-attention.

    Weights, in Keras' order and shapes (for inputs of shape (B, T, dim)): query/kernel
    ``(dim, num_heads, key_dim)``, query/bias ``(num_heads, key_dim)``, key/kernel, key/bias,
    (gate/kernel, gate/bias with ``use_gate``), value/kernel ``(dim, num_heads, value_dim)``,
    value/bias, attention_output/kernel ``(num_heads, value_dim, out)``,
    attention_output/bias ``(out,)``.

    Args:
        num_heads: int > 0: number of attention heads.
        key_dim: int > 0: size of each head for query and key.
        value_dim: int > 0 or None, default None (= key_dim): size of each head for value.
        dropout: float in [0, 1), default 0.0: dropout on the attention probabilities.
        use_bias: bool, default True: the projections have biases.
        output_shape: None, int or tuple, default None: the output's trailing shape
            (default: the query's last dimension).
        attention_axes: None, int or tuple, default None: the axes attention runs over
            (None: every axis but the batch and the features).
        sliding_window: None or int > 0, default None: query i attends only to keys j with
            ``|i - j| < sliding_window``.
        flash_attention: None, True or False, default None: accepted for Keras
            compatibility; fastnn's kernel is always the tiled (flash) one, with dropout and
            attention scores available.
        kernel_initializer: default "glorot_uniform". bias_initializer: default "zeros".
        kernel_regularizer, bias_regularizer: default None.
        kernel_constraint, bias_constraint: default None: fastnn.constraints constraints of
            every projection's kernel and bias, applied after each optimizer step.
        activity_regularizer: must be None (not supported).
        use_gate: bool, default False: multiply the attention output by
            ``sigmoid(gate(query))`` before the output projection (gated attention).
        seed: int or None, default None: the dropout's own seed.
        **kwargs: name, dtype, trainable.

    Call arguments:
        query: (B, T, dim) tensor. value: (B, S, dim_v) tensor. key: optional (B, S, dim_k)
            tensor, default ``value``.
        query_mask, value_mask, key_mask: optional boolean (B, T) / (B, S) masks; in a
            functional model they come from the inputs' Keras masks (Embedding with
            ``mask_zero=True``).
        attention_mask: optional boolean (B, T, S) (or broadcastable), or per head
            (B, num_heads, T, S): True = attend.
        return_attention_scores: bool, default False: also return the probabilities,
            shape (B, num_heads, T, S).
        training: bool: dropout on.
        use_causal_mask: bool, default False: query i attends to keys j <= i.

    Example:
        >>> import numpy as np
        >>> mha = fastnn.layers.MultiHeadAttention(num_heads=2, key_dim=4)
        >>> x = np.random.rand(3, 5, 8).astype("float32")
        >>> out, scores = mha(x, x, return_attention_scores=True)
        >>> out.shape, scores.shape
        ((3, 5, 8), (3, 2, 5, 5))
    """

    supports_masking = True
    _flexible_input_shape = True

    _size_arguments = ("num_heads", "key_dim", "value_dim")

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, use_gate=False, seed=None, **kwargs):
        who = "MultiHeadAttention"
        for arg, value in (("num_heads", num_heads), ("key_dim", key_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{who}: '{arg}' must be a positive integer, got {value!r}")
        if value_dim is not None and (isinstance(value_dim, bool) or not isinstance(value_dim, (int, np.integer))
                                      or value_dim <= 0):
            raise ValueError(f"{who}: 'value_dim' must be a positive integer or None, got {value_dim!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
            raise ValueError(f"{who}: 'dropout' must be a float in [0, 1), got {dropout!r}")
        self._kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint", who)
        self._bias_constraint = _validation.constraint(bias_constraint, "bias_constraint", who)
        for arg, value in (("activity_regularizer", activity_regularizer),):
            if value is not None:
                raise ValueError(f"{who}: '{arg}' is not supported (must be None), got {value!r}")
        if sliding_window is not None and (isinstance(sliding_window, bool)
                                           or not isinstance(sliding_window, (int, np.integer)) or sliding_window <= 0):
            raise ValueError(f"{who}: 'sliding_window' must be None or a positive integer, got {sliding_window!r}")
        if flash_attention not in (None, True, False):
            raise TypeError(f"{who}: 'flash_attention' must be None, True or False, got {flash_attention!r}")
        if output_shape is not None and output_shape != ():
            try:
                items = (output_shape,) if _validation.is_int(output_shape) else tuple(output_shape)
            except TypeError:
                items = None
            if items is None or isinstance(output_shape, (str, bytes)) or not all(_validation.is_int(d)
                                                                                  for d in items):
                raise ValueError(f"{who}: 'output_shape' must be an int, a tuple or a list of ints, got "
                                 f"{output_shape!r}")
            output_shape = tuple(int(d) for d in items)
            if not output_shape or any(d <= 0 for d in output_shape):
                raise ValueError(f"{who}: 'output_shape' must hold positive sizes, got {output_shape!r}")
        else:
            output_shape = None
        if _validation.is_int(attention_axes):
            attention_axes = (int(attention_axes),)
        elif attention_axes is not None:
            if not isinstance(attention_axes, (list, tuple)) or not all(
                    isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in attention_axes):
                raise ValueError(f"{who}: 'attention_axes' must be an int, list, or tuple of ints, got "
                                 f"{attention_axes!r}")
            attention_axes = tuple(int(a) for a in attention_axes)
        super().__init__(**kwargs)
        self._num_heads = int(num_heads)
        self._key_dim = int(key_dim)
        self._value_dim = int(value_dim) if value_dim else int(key_dim)
        self._dropout = float(dropout)
        self._use_bias = bool(use_bias)
        self._output_shape = output_shape
        self._attention_axes = attention_axes
        self._sliding_window = None if sliding_window is None else int(sliding_window)
        self._flash_attention = flash_attention
        self._use_gate = bool(use_gate)
        self._kernel_initializer = initializers.get(kernel_initializer)
        self._bias_initializer = initializers.get(bias_initializer)
        self._kernel_regularizer = regularizers.get(kernel_regularizer)
        self._bias_regularizer = regularizers.get(bias_regularizer)
        self.seed = _validation.seed(seed, who)
        self._generator = rng.generator_for(self.seed) if self.seed is not None else None
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(self._key_dim))
        self._query_dense = self._key_dense = self._value_dense = self._output_dense = None
        self._gate_dense = None
        self._axes = None  # after build: (attention axes, other axes) of the query's inner axes

    # Keras' read-only properties
    num_heads = property(lambda self: self._num_heads)
    key_dim = property(lambda self: self._key_dim)
    value_dim = property(lambda self: self._value_dim)
    dropout = property(lambda self: self._dropout)
    use_bias = property(lambda self: self._use_bias)
    attention_axes = property(lambda self: self._attention_axes)
    query_dense = property(lambda self: self._query_dense)
    key_dense = property(lambda self: self._key_dense)
    value_dense = property(lambda self: self._value_dense)
    output_dense = property(lambda self: self._output_dense)

    @property
    def _training_dependent(self):
        return self._dropout > 0

    # ---- building ------------------------------------------------------------------------------------
    def _projection(self, rank, bound, outputs, output_shape, name, activation=None):
        """An EinsumDense for inputs of `rank` axes contracting the last `bound` of them into
        `outputs` new axes (Keras' _build_proj_equation)."""
        free = rank - bound
        inp = _LETTERS[:free] + _LETTERS[free:rank]
        kernel = _LETTERS[free:rank] + _LETTERS[rank:rank + outputs]
        out = _LETTERS[:free] + _LETTERS[rank:rank + outputs]
        bias_axes = _LETTERS[rank:rank + outputs] if self._use_bias else None
        return EinsumDense(f"{inp},{kernel}->{out}", output_shape=(None,) * (free - 1) + tuple(output_shape),
                           bias_axes=bias_axes, activation=activation, name=name, dtype=self.dtype,
                           kernel_initializer=_clone(self._kernel_initializer),
                           bias_initializer=_clone(self._bias_initializer),
                           kernel_regularizer=self._kernel_regularizer, bias_regularizer=self._bias_regularizer,
                           kernel_constraint=self._kernel_constraint, bias_constraint=self._bias_constraint)

    def _check_shapes(self, query_shape, value_shape, key_shape):
        who = f"MultiHeadAttention '{self.name}'"
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) < 3:
                raise ValueError(f"{who}: '{name}' must have at least 3 axes (batch, time..., features), got shape "
                                 f"{tuple(shape)}")
            if shape[-1] is None:
                raise ValueError(f"{who}: the last axis of '{name}' must be known, got shape {tuple(shape)}")
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(f"{who}: all dimensions of `value` and `key`, except the last one, must be equal; got "
                             f"value_shape={tuple(value_shape)} and key_shape={tuple(key_shape)}")
        if len(query_shape) != len(value_shape):
            raise ValueError(f"{who}: 'query' and 'value' must have the same rank, got shapes {tuple(query_shape)} "
                             f"and {tuple(value_shape)}")
        return key_shape

    def build(self, query_shape, value_shape=None, key_shape=None):
        if value_shape is None and isinstance(query_shape, list):  # a list of shapes
            query_shape, value_shape, key_shape = (list(query_shape) + [None, None])[:3]
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = self._check_shapes(query_shape, value_shape, None if key_shape is None else tuple(key_shape))
        rank = len(query_shape)
        inner = list(range(1, rank - 1))
        # Keras counts a negative axis from the end of the query's shape (-2: the last inner axis)
        # and keeps the axes in the order given (the order of the scores' axes).
        axes = inner if self._attention_axes is None else [a + rank if a < 0 else a for a in self._attention_axes]
        if not axes or any(a not in inner for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"MultiHeadAttention '{self.name}': 'attention_axes' {self._attention_axes} must name "
                             f"distinct axes among {inner} of inputs of shape {query_shape}")
        self._axes = (tuple(axes), tuple(a for a in inner if a not in axes))
        self._check_other_axes(query_shape, value_shape)
        heads = self._num_heads
        self._query_dense = self._projection(rank, 1, 2, (heads, self._key_dim), "query")
        self._query_dense.ensure_built(query_shape)
        self._key_dense = self._projection(rank, 1, 2, (heads, self._key_dim), "key")
        self._key_dense.ensure_built(key_shape)
        if self._use_gate:
            self._gate_dense = self._projection(rank, 1, 2, (heads, self._value_dim), "gate", activation="sigmoid")
            self._gate_dense.ensure_built(query_shape)
        self._value_dense = self._projection(rank, 1, 2, (heads, self._value_dim), "value")
        self._value_dense.ensure_built(value_shape)
        out = self._output_shape or (query_shape[-1],)
        self._output_dense = self._projection(rank + 1, 2, len(out), out, "attention_output")
        self._output_dense.ensure_built(query_shape[:-1] + (heads, self._value_dim))
        return self.compute_output_shape(query_shape, value_shape, key_shape)

    def _check_other_axes(self, query_shape, value_shape):
        """The inner axes attention does not run over are batch axes: query and value agree on them."""
        if self._axes is None or len(query_shape) != len(value_shape):
            return
        for a in self._axes[1]:
            if None not in (query_shape[a], value_shape[a]) and query_shape[a] != value_shape[a]:
                raise ValueError(f"MultiHeadAttention '{self.name}': axis {a} is not an attention axis (attention_axes="
                                 f"{self._attention_axes}), so 'query' and 'value' must have the same size on it; "
                                 f"got shapes {tuple(query_shape)} and {tuple(value_shape)}")

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        if value_shape is None and isinstance(query_shape, list):
            query_shape, value_shape, key_shape = (list(query_shape) + [None, None])[:3]
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = self._check_shapes(query_shape, value_shape, None if key_shape is None else tuple(key_shape))
        self._check_other_axes(query_shape, value_shape)
        if self._query_dense is not None:  # built: the projections check the ranks and feature sizes
            for dense, shape in ((self._query_dense, query_shape), (self._value_dense, value_shape),
                                 (self._key_dense, key_shape)):
                dense.compute_output_shape(shape)
        return query_shape[:-1] + (self._output_shape or (query_shape[-1],))

    def _scores_shape(self, query_shape, value_shape):
        attn, other = self._axes
        return ((query_shape[0],) + tuple(query_shape[a] for a in other) + (self._num_heads,)
                + tuple(query_shape[a] for a in attn) + tuple(value_shape[a] for a in attn))

    # ---- calling -------------------------------------------------------------------------------------
    def __call__(self, query=None, value=None, key=None, **kwargs):
        """``mha(query, value, key=None, attention_mask=None, return_attention_scores=False,
        training=None, use_causal_mask=False)`` on arrays or symbolic tensors."""
        if query is None or value is None:
            raise TypeError(f"MultiHeadAttention '{self.name}': call it as mha(query, value[, key]), got "
                            f"query={type(query).__name__}, value={type(value).__name__}")
        args = (query, value) if key is None else (query, value, key)
        if any_symbolic(args, kwargs):
            return self._symbolic_attention(args, kwargs)
        training = bool(kwargs.pop("training", False) or False)
        arrays = [_as_input(a, np.dtype(self.dtype), self.name) for a in args]
        self._build_many([a.shape for a in arrays])
        outputs, _ = self.forward(*arrays, training=training, **kwargs)
        return outputs

    def _symbolic_attention(self, args, kwargs):
        from ..graph import Node

        for leaf in args:
            if not isinstance(leaf, KerasTensor):
                raise TypeError(f"MultiHeadAttention '{self.name}' was called on symbolic tensors mixed with "
                                f"{type(leaf).__name__} values")
        shapes = [tuple(a.shape) for a in args]
        try:
            out_shape = self._build_many(shapes)
        except ValueError as e:
            raise ValueError(f"Layer '{self.name}' (MultiHeadAttention) cannot be called on inputs of shape "
                             f"{shapes}: {e}") from e
        output = KerasTensor(tuple(out_shape), self.dtype, name=self.name)
        outputs = output
        if kwargs.get("return_attention_scores"):
            scores = KerasTensor(self._scores_shape(shapes[0], shapes[1]), self.dtype, name=f"{self.name}_scores")
            outputs = [output, scores]
        Node(self, args, kwargs, outputs)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return mask  # the query's mask (Keras)

    def _combined_mask(self, query, value, value_mask, key_mask, attention_mask):
        """The kernel's boolean mask (broadcast against (B, heads, T, S)) from the key-side masks,
        attention_mask and the sliding window; None when nothing is masked."""
        batch, t, s = query.shape[0], query.shape[1], value.shape[1]
        who = f"MultiHeadAttention '{self.name}'"
        mask = None
        for name, m in (("value_mask", value_mask), ("key_mask", key_mask)):
            if m is None:
                continue
            m = np.asarray(m)
            if m.shape != (batch, s):
                raise ValueError(f"{who}: '{name}' must have shape (batch, S) = {(batch, s)}, got {m.shape}")
            m = m.astype(bool).reshape(batch, 1, 1, s)
            mask = m if mask is None else mask & m
        if attention_mask is not None:
            # (B, T, S) or fewer axes, or per head (B, heads, T, S) (Keras broadcasts over the heads)
            m = np.asarray(attention_mask).astype(bool)
            full = (batch, self._num_heads, t, s) if m.ndim == 4 else (batch, t, s)
            what = "(batch, T, S)" if m.ndim != 4 else "(batch, num_heads, T, S)"
            try:
                m = np.broadcast_to(m, np.broadcast_shapes(m.shape, full))
            except ValueError:
                raise ValueError(f"{who}: 'attention_mask' must broadcast to {what} = {full}, got shape "
                                 f"{m.shape}") from None
            if m.shape != full:
                raise ValueError(f"{who}: 'attention_mask' must broadcast to {what} = {full}, got shape "
                                 f"{np.shape(attention_mask)}")
            if m.ndim == 3:
                m = m[:, None]
            mask = m if mask is None else mask & m
        if self._sliding_window is not None:
            band = np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]) < self._sliding_window
            mask = band if mask is None else mask & band
        return mask

    def forward(self, query, value, key=None, training=False, keep_cache=False, query_mask=None, value_mask=None,
                key_mask=None, attention_mask=None, return_attention_scores=False, use_causal_mask=False):
        self_key = key is None
        key = value if self_key else key
        # (an explicit key_mask applies even without a separate key, as in Keras' code, whatever
        # its docstring says; a graph fills key_mask only when a key tensor is passed)
        keep = training or keep_cache
        who = f"MultiHeadAttention '{self.name}'"
        qp, q_cache = self._query_dense.forward(query, keep)
        kp, k_cache = self._key_dense.forward(key, keep)
        gate = gate_cache = None
        if self._use_gate:
            gate, gate_cache = self._gate_dense.forward(query, keep)
        vp, v_cache = self._value_dense.forward(value, keep)
        flat = _Flattened(self._axes, qp.shape, kp.shape, vp.shape)
        q4, k4, v4 = flat.inputs(qp, kp, vp)
        if flat.general and (query_mask is not None or value_mask is not None or key_mask is not None
                             or attention_mask is not None or use_causal_mask or self._sliding_window):
            raise ValueError(f"{who}: masks, use_causal_mask and sliding_window need a single attention axis (inputs "
                             f"of shape (batch, time, features)), got attention over axes {self._axes[0]} of inputs "
                             f"of shape {query.shape}")
        mask = self._combined_mask(q4, v4, value_mask, key_mask, attention_mask)
        if query_mask is not None:
            query_mask = np.asarray(query_mask).astype(bool)
            if query_mask.shape != q4.shape[:2]:
                raise ValueError(f"{who}: 'query_mask' must have shape (batch, T) = {q4.shape[:2]}, got "
                                 f"{query_mask.shape}")
        rate = self._dropout if training else 0.0
        seed = rng.draw_seed(self._generator) if rate > 0 else 0
        o4, lse, probs = ops.attention_forward(q4, k4, v4, mask, None, self._inverse_sqrt_key_dim,
                                               bool(use_causal_mask), rate, seed, bool(return_attention_scores))
        if query_mask is not None:
            o4[~query_mask] = 0
            if probs is not None:
                probs *= query_mask[:, None, :, None]
        o = flat.output(o4)
        gated = o * gate if gate is not None else o
        y, out_cache = self._output_dense.forward(gated, keep)
        cache = None
        if keep:
            cache = (q_cache, k_cache, v_cache, out_cache, gate_cache, gate, o, flat, q4, k4, v4, o4, lse, probs, mask,
                     query_mask, bool(use_causal_mask), rate, seed, self_key, y.shape)
        if return_attention_scores:
            return [y, flat.scores(probs)], cache
        return y, cache

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        (q_cache, k_cache, v_cache, out_cache, gate_cache, gate, o, flat, q4, k4, v4, o4, lse, probs, mask,
         query_mask, causal, rate, seed, self_key, y_shape) = cache
        dy, d_scores = (dys[0], dys[1]) if isinstance(dys, (list, tuple)) else (dys, None)
        n_inputs = 2 if self_key else 3
        need = list(need_input_grad) if isinstance(need_input_grad, (list, tuple)) else [need_input_grad] * n_inputs
        need += [False] * (n_inputs - len(need))
        if dy is None:  # only the scores reach the loss: the output projection's gradients are zero
            dy = np.zeros(y_shape, o.dtype)
        d_gated = self._output_dense.backward(out_cache, dy, True, accumulate)
        d_gate = None
        if gate is not None:
            d_gate = d_gated * o
            d_gated = d_gated * gate
        do4 = np.ascontiguousarray(flat.output_grad(d_gated), dtype=o4.dtype)
        if query_mask is not None:
            do4[~query_mask] = 0
        dq4, dk4, dv4 = ops.attention_backward(do4, q4, k4, v4, o4, lse, mask, None, self._inverse_sqrt_key_dim,
                                               causal, rate, seed)
        if d_scores is not None:  # the returned probabilities are an output too
            self._scores_backward(flat.scores_grad(d_scores), probs, q4, k4, dq4, dk4)
        dqp, dkp, dvp = flat.input_grads(dq4, dk4, dv4)
        dquery = self._query_dense.backward(q_cache, dqp, need[0], accumulate)
        if d_gate is not None:
            dg = self._gate_dense.backward(gate_cache, d_gate, need[0], accumulate)
            dquery = dg if dquery is None else dquery + dg
        dvalue = self._value_dense.backward(v_cache, dvp, need[1], accumulate)
        dkey = self._key_dense.backward(k_cache, dkp, need[1] if self_key else need[2], accumulate)
        if self_key:
            dvalue = dkey if dvalue is None else (dvalue if dkey is None else dvalue + dkey)
            return [dquery, dvalue]
        return [dquery, dvalue, dkey]

    def _scores_backward(self, d_probs, probs, q4, k4, dq4, dk4):
        """Adds the gradients through the returned probabilities P = softmax(L): dL/dlogits =
        P∘(dP − rowsum(P∘dP)), then through L = scale·Q Kᵀ."""
        d_probs = np.asarray(d_probs, dtype=probs.dtype)
        ds = probs * (d_probs - np.sum(probs * d_probs, axis=-1, keepdims=True)) * self._inverse_sqrt_key_dim
        dq4 += np.einsum("bhts,bshd->bthd", ds, k4)
        dk4 += np.einsum("bhts,bthd->bshd", ds, q4)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(num_heads=self._num_heads, key_dim=self._key_dim, value_dim=self._value_dim,
                   dropout=self._dropout, use_bias=self._use_bias, use_gate=self._use_gate,
                   output_shape=self._output_shape, attention_axes=self._attention_axes,
                   sliding_window=self._sliding_window, flash_attention=self._flash_attention,
                   kernel_initializer=initializers.serialize(self._kernel_initializer),
                   bias_initializer=initializers.serialize(self._bias_initializer),
                   kernel_regularizer=regularizers.serialize(self._kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self._bias_regularizer),
                   activity_regularizer=None, kernel_constraint=constraints.serialize(self._kernel_constraint),
                   bias_constraint=constraints.serialize(self._bias_constraint), seed=self.seed)
        return cfg


def _clone(initializer):
    """A fresh copy of an initializer for each projection (as Keras does)."""
    if isinstance(initializer, initializers.Initializer):
        return type(initializer).from_config(initializer.get_config())
    return initializer


class _Flattened:
    """Projected tensors (B, inner..., heads, size) as the kernel's (B', T', heads, size): the
    axes attention does not run over join the batch, the attention axes become one time axis.
    With one attention axis (the usual (B, T, dim) inputs) these are views, not copies."""

    def __init__(self, axes, q_shape, k_shape, v_shape):
        attn, other = axes
        self.general = len(attn) != 1 or bool(other)
        rank = len(q_shape)  # B, inner..., heads, size
        self.perm = (0,) + tuple(other) + tuple(attn) + (rank - 2, rank - 1)
        self.inverse = tuple(np.argsort(self.perm))
        self.q_shape, self.k_shape, self.v_shape = q_shape, k_shape, v_shape
        self.other_sizes = tuple(q_shape[a] for a in other)
        self.q_attn = tuple(q_shape[a] for a in attn)
        self.k_attn = tuple(k_shape[a] for a in attn)

    def _to_kernel(self, x, attn_sizes):
        if not self.general:
            return x
        x = np.transpose(x, self.perm)
        return np.ascontiguousarray(x.reshape((-1, math.prod(attn_sizes)) + x.shape[-2:]))

    def _from_kernel(self, x4, attn_sizes):
        if not self.general:
            return x4
        permuted = x4.reshape((-1,) + self.other_sizes + attn_sizes + x4.shape[-2:])
        return np.ascontiguousarray(np.transpose(permuted, self.inverse))

    def inputs(self, qp, kp, vp):
        return self._to_kernel(qp, self.q_attn), self._to_kernel(kp, self.k_attn), self._to_kernel(vp, self.k_attn)

    def output(self, o4):
        return self._from_kernel(o4, self.q_attn)

    def output_grad(self, d_o):
        return self._to_kernel(d_o, self.q_attn)

    def input_grads(self, dq4, dk4, dv4):
        return self._from_kernel(dq4, self.q_attn), self._from_kernel(dk4, self.k_attn), \
            self._from_kernel(dv4, self.k_attn)

    def scores(self, probs):
        """(B', heads, T', S') -> Keras' (B, other..., heads, attn_q..., attn_k...)."""
        if probs is None or not self.general:
            return probs
        return probs.reshape((-1,) + self.other_sizes + (probs.shape[1],) + self.q_attn + self.k_attn)

    def scores_grad(self, d_scores):
        if not self.general:
            return d_scores
        heads = d_scores.shape[1 + len(self.other_sizes)]
        return np.reshape(d_scores, (-1, heads, math.prod(self.q_attn), math.prod(self.k_attn)))
