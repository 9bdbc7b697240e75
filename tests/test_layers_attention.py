"""layers.MultiHeadAttention (Keras 3's MultiHeadAttention).

References: Keras' formula written out in float64 NumPy from the layer's own weights (its
projection einsums, its attention einsum equations for any ``attention_axes`` -- copied from
keras/src/layers/attention/multi_head_attention.py -- and its masked softmax: masked logits set
to -1e9, softmax, times the mask), Keras' rule for combining the query, value and key masks,
``attention_mask``, the causal mask and the sliding window, central finite differences in
float64 for every gradient, the unpadded sequence for the padded one, and a bag-of-words
baseline for the trained Transformer; plus dropout, configs, Keras-shaped weights, save/load and
bad input.
"""

import json
import pathlib
import runpy

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers, ops
from finite_differences import numeric_gradient

MHA = layers.MultiHeadAttention


# ----------------------------------------------------------------------------------------
# The reference: Keras' MultiHeadAttention in float64 NumPy
# ----------------------------------------------------------------------------------------
def keras_attention_equation(rank, attn_axes):
    """Keras' _build_attention_equation: (dot-product equation, combine equation, scores rank)
    for projected tensors of `rank` axes (batch, inner..., heads, size)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    target = letters[:rank]
    batch_dims = tuple(np.delete(range(rank), attn_axes + (rank - 1,)))
    offset, source = rank, ""
    for i in range(rank):
        if i in batch_dims or i == rank - 1:
            source += target[i]
        else:
            source += letters[offset]
            offset += 1
    product = "".join([target[i] for i in batch_dims] + [target[i] for i in attn_axes]
                      + [source[i] for i in attn_axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}", len(product)


def keras_mask(batch, t, s, query_mask=None, value_mask=None, key_mask=None, attention_mask=None, causal=False,
               sliding_window=None):
    """Keras' _compute_attention_mask: every mask given, joined by AND, as (B, T, S) (None if none)."""
    parts = []
    if query_mask is not None:
        parts.append(np.asarray(query_mask, bool)[:, :, None])
    if value_mask is not None:
        parts.append(np.asarray(value_mask, bool)[:, None, :])
    if key_mask is not None:
        parts.append(np.asarray(key_mask, bool)[:, None, :])
    if causal:
        parts.append(np.tril(np.ones((t, s), bool))[None])
    if sliding_window is not None:
        parts.append((np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]) < sliding_window)[None])
    if attention_mask is not None:
        parts.append(np.asarray(attention_mask, bool))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out & p
    return np.broadcast_to(out, (batch, t, s))


def reference(weights, query, value, key=None, *, key_dim, use_bias=True, use_gate=False, attention_axes=None,
              mask=None, keep=None, rate=0.0):
    """Keras' MultiHeadAttention.call in float64: (output, attention scores).

    weights: the layer's get_weights() (Keras' order: query, key, [gate,] value, output).
    mask: the combined boolean mask (as keras_mask returns), broadcast from the heads axis on.
    keep, rate: an explicit dropout keep-mask of the scores' shape and its rate."""
    it = iter([np.asarray(w, np.float64) for w in weights])

    def project(x, bound=1):
        kernel = next(it)
        y = np.tensordot(x, kernel, axes=(list(range(x.ndim - bound, x.ndim)), list(range(bound))))
        return y + next(it) if use_bias else y

    query, value = np.asarray(query, np.float64), np.asarray(value, np.float64)
    key = value if key is None else np.asarray(key, np.float64)
    q = project(query)
    k = project(key)
    gate = 1 / (1 + np.exp(-project(query))) if use_gate else None
    v = project(value)
    rank = q.ndim
    if attention_axes is None:
        axes = tuple(range(1, rank - 2))
    else:  # Keras' _build_attention (an int is a 1-tuple)
        attention_axes = (attention_axes,) if isinstance(attention_axes, int) else attention_axes
        axes = tuple(a if a >= 0 else (rank - 1) + a for a in attention_axes)
    dot, combine, scores_rank = keras_attention_equation(rank, axes)
    logits = np.einsum(dot, k, q / np.sqrt(key_dim))
    norm = tuple(range(scores_rank - len(axes), scores_rank))
    if mask is not None:
        m = np.asarray(mask, bool)
        while m.ndim < logits.ndim:
            m = np.expand_dims(m, -len(axes) * 2 - 1)
        logits = np.where(m, logits, -1e9)
    e = np.exp(logits - logits.max(axis=norm, keepdims=True))
    probs = e / e.sum(axis=norm, keepdims=True)
    if mask is not None:
        probs = np.where(m, probs, 0.0)
    dropped = probs if keep is None else probs * keep / (1 - rate)
    o = np.einsum(combine, dropped, v)
    if use_gate:
        o = o * gate
    return project(o, 2), probs


def random_weights(layer, rng, scale=1.0):
    weights = [rng.uniform(-scale, scale, v.shape) for v in layer.weights]
    layer.set_weights(weights)
    return layer.get_weights()


def tol(dtype):
    return dict(rtol=1e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-11, atol=1e-12)


# ----------------------------------------------------------------------------------------
# 1. Outputs: Keras' formula
# ----------------------------------------------------------------------------------------
# (layer kwargs, query shape, value shape, key shape or None)
FORWARD_CASES = {
    "self": (dict(num_heads=2, key_dim=4), (2, 5, 8), None, None),
    "cross": (dict(num_heads=3, key_dim=2), (2, 5, 6), (2, 7, 8), (2, 7, 9)),
    "value_dim": (dict(num_heads=2, key_dim=3, value_dim=5), (2, 4, 6), (2, 6, 7), None),
    "output_int": (dict(num_heads=2, key_dim=3, output_shape=10), (2, 4, 6), (2, 5, 6), None),
    "output_tuple": (dict(num_heads=2, key_dim=3, output_shape=(2, 3)), (2, 4, 6), (2, 5, 7), (2, 5, 4)),
    "no_bias": (dict(num_heads=2, key_dim=3, use_bias=False), (2, 4, 6), (2, 5, 7), (2, 5, 3)),
    "gate": (dict(num_heads=2, key_dim=3, value_dim=4, use_gate=True), (2, 4, 6), (2, 5, 7), (2, 5, 3)),
    "gate_no_bias": (dict(num_heads=2, key_dim=3, use_gate=True, use_bias=False), (2, 4, 6), (2, 4, 6), None),
    "rank4_axes12": (dict(num_heads=2, key_dim=3, attention_axes=(1, 2)), (2, 3, 4, 6), (2, 2, 5, 6), None),
    "rank4_axis2": (dict(num_heads=2, key_dim=3, attention_axes=(2,)), (2, 3, 4, 6), (2, 3, 5, 7), (2, 3, 5, 4)),
    "rank4_axis1": (dict(num_heads=2, key_dim=3, attention_axes=1, use_gate=True), (2, 3, 4, 6), (2, 5, 4, 6),
                    None),
    "rank4_default": (dict(num_heads=1, key_dim=3, output_shape=(2, 2)), (2, 3, 4, 6), (2, 2, 2, 6), None),
    "rank4_negative": (dict(num_heads=2, key_dim=3, attention_axes=-2), (2, 3, 4, 6), (2, 3, 5, 6), None),
    "rank4_negative_pair": (dict(num_heads=2, key_dim=3, attention_axes=(-3, -2)), (2, 3, 4, 6), (2, 2, 5, 6), None),
    "rank4_axes21": (dict(num_heads=2, key_dim=3, attention_axes=(2, 1)), (2, 3, 4, 6), (2, 2, 5, 6), None),
    "rank5_axes23": (dict(num_heads=2, key_dim=2, attention_axes=(2, 3)), (2, 2, 3, 2, 4), (2, 2, 2, 3, 4),
                     None),
    "one_step": (dict(num_heads=1, key_dim=1), (1, 1, 3), (1, 1, 2), None),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_and_scores_are_keras_formula(case, dtype, rng):
    kwargs, q_shape, v_shape, k_shape = FORWARD_CASES[case]
    layer = MHA(**kwargs, dtype=dtype)
    query = rng.normal(size=q_shape).astype(dtype)
    value = query if v_shape is None else rng.normal(size=v_shape).astype(dtype)
    key = None if k_shape is None else rng.normal(size=k_shape).astype(dtype)
    layer(query, value, key)
    weights = random_weights(layer, rng)
    out, scores = layer(query, value, key, return_attention_scores=True)
    ref_out, ref_scores = reference(weights, query, value, key, key_dim=kwargs["key_dim"],
                                    use_bias=kwargs.get("use_bias", True), use_gate=kwargs.get("use_gate", False),
                                    attention_axes=kwargs.get("attention_axes"))
    out_shape = kwargs.get("output_shape", q_shape[-1])
    out_shape = (out_shape,) if isinstance(out_shape, int) else out_shape
    assert out.shape == q_shape[:-1] + tuple(out_shape) and out.dtype == np.dtype(dtype)
    assert scores.shape == ref_scores.shape and scores.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, ref_out, **tol(dtype))
    np.testing.assert_allclose(scores, ref_scores, **tol(dtype))
    # without the scores: the same output
    np.testing.assert_allclose(layer(query, value, key), out, **tol(dtype))
    assert layer.compute_output_shape(q_shape, v_shape or q_shape, k_shape) == out.shape


def test_scores_shape_is_batch_heads_t_s(rng):
    layer = MHA(num_heads=3, key_dim=2)
    q, v = rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 6, 5))
    out, scores = layer(q, v, return_attention_scores=True)
    assert out.shape == (2, 4, 5) and scores.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(scores.sum(axis=-1), 1, rtol=1e-6)
    # symbolic: the same shapes
    qi, vi = keras.Input((4, 5)), keras.Input((6, 5))
    o, s = MHA(num_heads=3, key_dim=2)(qi, vi, return_attention_scores=True)
    assert tuple(o.shape) == (None, 4, 5) and tuple(s.shape) == (None, 3, 4, 6)


def test_weights_are_keras_shapes_and_order(rng):
    layer = MHA(num_heads=3, key_dim=2, value_dim=4, use_gate=True, output_shape=(2, 5))
    layer(rng.normal(size=(1, 4, 6)), rng.normal(size=(1, 3, 7)), rng.normal(size=(1, 3, 8)))
    assert [(w.name, w.shape) for w in layer.weights] == [
        ("query/kernel", (6, 3, 2)), ("query/bias", (3, 2)), ("key/kernel", (8, 3, 2)), ("key/bias", (3, 2)),
        ("gate/kernel", (6, 3, 4)), ("gate/bias", (3, 4)), ("value/kernel", (7, 3, 4)), ("value/bias", (3, 4)),
        ("attention_output/kernel", (3, 4, 2, 5)), ("attention_output/bias", (2, 5))]
    assert len(layer.trainable_weights) == 10 and not layer.non_trainable_weights
    assert layer.num_heads == 3 and layer.key_dim == 2 and layer.value_dim == 4
    assert isinstance(layer.query_dense, layers.EinsumDense) and layer.output_dense.name == "attention_output"


@pytest.mark.parametrize("window,causal", [(1, False), (2, False), (3, True), (10, False)])
def test_sliding_window(window, causal, rng):
    t = 6
    layer = MHA(num_heads=2, key_dim=3, sliding_window=window, dtype="float64")
    x = rng.normal(size=(2, t, 5))
    layer(x, x)
    weights = random_weights(layer, rng)
    out, scores = layer(x, x, return_attention_scores=True, use_causal_mask=causal)
    mask = keras_mask(2, t, t, causal=causal, sliding_window=window)
    ref_out, ref_scores = reference(weights, x, x, key_dim=3, mask=mask)
    np.testing.assert_allclose(out, ref_out, **tol("float64"))
    np.testing.assert_allclose(scores, ref_scores, **tol("float64"))
    allowed = np.abs(np.arange(t)[:, None] - np.arange(t)[None]) < window
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))
    assert np.all(scores[:, :, ~allowed] == 0) and np.all(scores[:, :, allowed] > 0)


# ----------------------------------------------------------------------------------------
# 2. Masks, as Keras combines them
# ----------------------------------------------------------------------------------------
B, T, S = 3, 5, 4


def random_masks(rng):
    """query (B, T), value and key (B, S), attention (B, T, S) masks; batch 1's value mask is
    all False (every row of it fully masked), batch 0's query mask hides its last two steps."""
    query_mask = np.ones((B, T), bool)
    query_mask[0, -2:] = False
    query_mask[2, 1] = False
    value_mask = rng.uniform(size=(B, S)) > 0.3
    value_mask[:, 0] = True
    value_mask[1] = False
    key_mask = rng.uniform(size=(B, S)) > 0.3
    attention_mask = rng.uniform(size=(B, T, S)) > 0.3
    return dict(query_mask=query_mask, value_mask=value_mask, key_mask=key_mask, attention_mask=attention_mask)


MASK_COMBINATIONS = {
    "query": ("query_mask",),
    "value": ("value_mask",),
    "key": ("key_mask",),
    "attention": ("attention_mask",),
    "causal": ("causal",),
    "query_value": ("query_mask", "value_mask"),
    "value_key_causal": ("value_mask", "key_mask", "causal"),
    "all": ("query_mask", "value_mask", "key_mask", "attention_mask", "causal"),
}


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no_key"])
@pytest.mark.parametrize("combination", list(MASK_COMBINATIONS))
def test_masks_are_combined_as_keras(combination, with_key, rng):
    names = MASK_COMBINATIONS[combination]
    layer = MHA(num_heads=2, key_dim=3, value_dim=2, dtype="float64")
    query, value = rng.normal(size=(B, T, 6)), rng.normal(size=(B, S, 5))
    key = rng.normal(size=(B, S, 4)) if with_key else None
    layer(query, value, key)
    weights = random_weights(layer, rng)
    masks = {k: m for k, m in random_masks(rng).items() if k in names}
    causal = "causal" in names
    out, scores = layer(query, value, key, return_attention_scores=True, use_causal_mask=causal, **masks)
    # Keras applies an explicit key_mask whether or not a key is given (its
    # _compute_attention_mask ANDs every mask it receives).
    combined = keras_mask(B, T, S, causal=causal, **masks)
    ref_out, ref_scores = reference(weights, query, value, key, key_dim=3, mask=combined)
    np.testing.assert_allclose(out, ref_out, **tol("float64"))
    np.testing.assert_allclose(scores, ref_scores, **tol("float64"))
    # a fully masked row gives zero scores and an output of the output bias alone
    empty = ~combined.any(axis=-1)  # (B, T)
    assert np.all(scores[np.broadcast_to(empty[:, None], scores.shape[:3])] == 0)
    np.testing.assert_allclose(out[empty], np.broadcast_to(weights[-1], out[empty].shape), rtol=1e-12, atol=1e-12)
    if combination == "all":
        assert empty[1].all() and empty[0, -2:].all() and empty.sum() > 5


def test_a_fully_masked_row_gives_the_output_bias_in_float32(rng):
    layer = MHA(num_heads=2, key_dim=3, use_gate=True)
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    layer(x, x)
    weights = random_weights(layer, rng)
    value_mask = np.array([[False] * 4, [True, True, False, False]])
    out, scores = layer(x, x, value_mask=value_mask, return_attention_scores=True)
    np.testing.assert_array_equal(out[0], np.broadcast_to(weights[-1], (4, 6)))
    assert np.all(scores[0] == 0) and np.all(scores[1, :, :, 2:] == 0)
    np.testing.assert_allclose(scores[1].sum(axis=-1), 1, rtol=1e-6)


@pytest.mark.parametrize("shape", [(T, S), (1, T, S), (B, T, S), (B, 1, T, S), (1, 2, T, S), (B, 2, T, S)])
def test_attention_mask_broadcasts_as_keras(shape, rng):
    """Keras' mask of (T, S) broadcasts over the batch, (B, 1, T, S) and (B, heads, T, S) are
    per head (Keras' test_masking_with_different_shapes)."""
    layer = MHA(num_heads=2, key_dim=3, dtype="float64")
    q, v = rng.normal(size=(B, T, 6)), rng.normal(size=(B, S, 6))
    layer(q, v)
    weights = random_weights(layer, rng)
    mask = rng.uniform(size=shape) > 0.4
    out, scores = layer(q, v, attention_mask=mask, return_attention_scores=True)
    per_head = np.broadcast_to(mask, (B, 2, T, S)) if len(shape) == 4 else np.broadcast_to(mask, (B, T, S))
    ref_out, ref_scores = reference(weights, q, v, key_dim=3, mask=per_head)
    np.testing.assert_allclose(out, ref_out, **tol("float64"))
    np.testing.assert_allclose(scores, ref_scores, **tol("float64"))
    # integer masks are booleans (nonzero = attend)
    np.testing.assert_allclose(layer(q, v, attention_mask=mask.astype(np.int32)), out, rtol=1e-13, atol=1e-13)


def test_causal_mask_with_t_different_from_s(rng):
    """Keras' causal mask is the lower triangle of the (T, S) ones, also when T != S."""
    layer = MHA(num_heads=1, key_dim=4, dtype="float64")
    for t, s in ((3, 6), (6, 3)):
        q, v = rng.normal(size=(2, t, 5)), rng.normal(size=(2, s, 5))
        layer(q, v)
        weights = random_weights(layer, rng)
        out, scores = layer(q, v, use_causal_mask=True, return_attention_scores=True)
        ref_out, ref_scores = reference(weights, q, v, key_dim=4, mask=keras_mask(2, t, s, causal=True))
        np.testing.assert_allclose(out, ref_out, **tol("float64"))
        np.testing.assert_allclose(scores, ref_scores, **tol("float64"))
        assert np.all(scores[..., np.triu(np.ones((t, s), bool), 1)] == 0)


def masked_tokens():
    return np.array([[3, 1, 4, 1, 5, 0, 0], [2, 6, 5, 3, 5, 8, 9], [7, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])


def test_embedding_masks_reach_the_layer_in_a_functional_model(rng):
    """Embedding(mask_zero=True) -> mha(x, x): the query and value masks come from the tokens;
    the output's mask is the query's (a following LSTM skips the padding)."""
    keras.utils.set_random_seed(3)
    tokens = masked_tokens()
    inputs = keras.Input((7,), dtype="int32")
    embedding = layers.Embedding(10, 6, mask_zero=True)
    mha = MHA(num_heads=2, key_dim=3)
    lstm = layers.LSTM(4)
    attended = mha(embedding(inputs), embedding(inputs))
    model = keras.Model(inputs, attended)
    with_lstm = keras.Model(inputs, lstm(attended))
    random_weights(mha, rng)

    got = model.predict(tokens, verbose=0)
    e = embedding(tokens)
    mask = tokens != 0
    explicit = mha(e, e, query_mask=mask, value_mask=mask)
    np.testing.assert_allclose(got, explicit, rtol=1e-6, atol=1e-6)
    ref, _ = reference(mha.get_weights(), e, e, key_dim=3, mask=keras_mask(4, 7, 7, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, mha(e, e), atol=1e-3)  # the masks matter
    np.testing.assert_allclose(got[3], np.broadcast_to(mha.get_weights()[-1], (7, 6)), atol=1e-6)

    _, tape = model.forward(tokens)
    np.testing.assert_array_equal(tape.output_masks[0], mask)  # the query's mask (Keras)
    np.testing.assert_allclose(with_lstm.predict(tokens, verbose=0), lstm(explicit, mask=mask), rtol=1e-5,
                               atol=1e-6)


class _AttentionBlock(layers.Layer):
    """A custom layer calling MultiHeadAttention inside its call() (Keras' TransformerBlock)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.att = MHA(num_heads=2, key_dim=3)

    def call(self, x):
        return self.att(x, x)


@pytest.mark.parametrize("wrapper", ["layer", "subclassed_model"])
def test_masks_reach_a_layer_inside_a_custom_layer_call(wrapper, rng):
    """Keras' layers inside a custom call() see their inputs' masks: Embedding(mask_zero=True)
    -> Block()(x) attends as mha(e, e, query_mask, value_mask), and the block's output carries
    the query's mask on (a following LSTM skips the padding)."""
    keras.utils.set_random_seed(4)
    tokens = masked_tokens()
    inputs = keras.Input((7,), dtype="int32")
    embedding = layers.Embedding(10, 6, mask_zero=True)
    if wrapper == "layer":
        block = _AttentionBlock()
        attention = block.att
    else:
        class Block(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.att = MHA(num_heads=2, key_dim=3)

            def call(self, x):
                return self.att(x, x)

        block = Block()
        attention = block.att
    lstm = layers.LSTM(4)
    attended = block(embedding(inputs))
    model = keras.Model(inputs, attended)
    with_lstm = keras.Model(inputs, lstm(attended))
    random_weights(attention, rng)

    e = embedding(tokens)
    mask = tokens != 0
    explicit = attention(e, e, query_mask=mask, value_mask=mask)
    np.testing.assert_allclose(model.predict(tokens, verbose=0), explicit, rtol=1e-6, atol=1e-6)
    assert not np.allclose(explicit, attention(e, e), atol=1e-3)  # the masks matter
    np.testing.assert_allclose(with_lstm.predict(tokens, verbose=0), lstm(explicit, mask=mask), rtol=1e-5,
                               atol=1e-6)


def test_query_value_and_key_masks_come_from_their_own_tensors(rng):
    """Cross-attention with three token inputs: query_mask, value_mask and key_mask are each
    the mask of the tensor passed in that place; an explicit mask argument wins (Keras)."""
    keras.utils.set_random_seed(4)
    tq = np.array([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8]])
    tv = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0], [7, 0, 0, 0, 0]])
    tk = np.array([[1, 0, 3, 4, 5], [6, 7, 8, 0, 0], [0, 2, 3, 0, 0]])
    iq, iv, ik = (keras.Input((n,), dtype="int32") for n in (4, 5, 5))
    eq, ev, ek = (layers.Embedding(10, d, mask_zero=True) for d in (6, 5, 3))
    mha = MHA(num_heads=2, key_dim=2, value_dim=3)
    model = keras.Model([iq, iv, ik], mha(eq(iq), ev(iv), ek(ik)))
    random_weights(mha, rng)
    xq, xv, xk = eq(tq), ev(tv), ek(tk)
    got = model.predict([tq, tv, tk], verbose=0)
    mask = keras_mask(3, 4, 5, query_mask=tq != 0, value_mask=tv != 0, key_mask=tk != 0)
    ref, _ = reference(mha.get_weights(), xq, xv, xk, key_dim=2, mask=mask)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    # an explicit value_mask replaces the one the value tensor carries
    all_value = np.ones((3, 5), bool)
    model2 = keras.Model([iq, iv, ik], mha(eq(iq), ev(iv), ek(ik), value_mask=all_value))
    ref2, _ = reference(mha.get_weights(), xq, xv, xk, key_dim=2,
                        mask=keras_mask(3, 4, 5, query_mask=tq != 0, value_mask=all_value, key_mask=tk != 0))
    np.testing.assert_allclose(model2.predict([tq, tv, tk], verbose=0), ref2, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------
# 3. Padding changes nothing
# ----------------------------------------------------------------------------------------
def masked_classifier(maxlen=None, causal=False):
    """Embedding(mask_zero) -> self-attention with a residual and LayerNormalization -> LSTM
    (which skips masked steps) -> Dense."""
    inputs = keras.Input((maxlen,), dtype="int32")
    x = layers.Embedding(20, 8, mask_zero=True)(inputs)
    attended = MHA(num_heads=2, key_dim=4, name="mha")(x, x, use_causal_mask=causal)
    x = layers.LayerNormalization()(layers.Add()([x, attended]))
    x = layers.LSTM(6)(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("causal", [False, True])
def test_a_padded_sequence_predicts_as_the_unpadded_one(causal, rng):
    keras.utils.set_random_seed(5)
    model = masked_classifier(causal=causal)
    random_weights(model.get_layer("mha"), rng, 0.5)
    for length in (1, 3, 6):
        seq = rng.integers(1, 20, size=(1, length))
        alone = model.predict(seq, verbose=0)
        for pad in (1, 4):
            padded = np.concatenate([seq, np.zeros((1, pad), seq.dtype)], axis=1)
            np.testing.assert_allclose(model.predict(padded, verbose=0), alone, rtol=2e-5, atol=2e-6)
    # a batch of sequences of different lengths, padded together, predicts as each alone
    seqs = [rng.integers(1, 20, size=n) for n in (2, 7, 4)]
    for padding in ("post", "pre"):
        batch = keras.preprocessing.sequence.pad_sequences(seqs, maxlen=9, padding=padding)
        together = model.predict(batch, verbose=0)
        for row, seq in zip(together, seqs):
            np.testing.assert_allclose(row, model.predict(seq[None], verbose=0)[0], rtol=2e-5, atol=2e-6)


def test_padding_changes_nothing_at_the_layer(rng):
    """The unpadded steps of a padded query (padded value masked) equal the unpadded call."""
    layer = MHA(num_heads=2, key_dim=3, use_gate=True)
    q, v = rng.normal(size=(1, 4, 6)).astype(np.float32), rng.normal(size=(1, 3, 5)).astype(np.float32)
    alone = layer(q, v, use_causal_mask=True)
    qp = np.concatenate([q, rng.normal(size=(1, 3, 6)).astype(np.float32)], axis=1)
    vp = np.concatenate([v, rng.normal(size=(1, 5, 5)).astype(np.float32)], axis=1)
    padded = layer(qp, vp, value_mask=np.arange(8)[None] < 3, query_mask=np.arange(7)[None] < 4,
                   use_causal_mask=True)
    np.testing.assert_allclose(padded[:, :4], alone, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------
# 4. Gradients: central finite differences (float64)
# ----------------------------------------------------------------------------------------
def assert_gradient(got, target, loss, what):
    fd = numeric_gradient(loss, target, 1e-6)
    if np.linalg.norm(fd) < 1e-8:  # e.g. the key bias: constant along the softmax's axis
        assert np.linalg.norm(got) < 1e-8, f"{what}: expected a zero gradient, got norm {np.linalg.norm(got):.3g}"
        return
    rel = np.linalg.norm(got - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, f"{what}: relative error {rel:.3g}"


def check_layer_gradients(layer, query, value, key, rng, scores_loss=False, before_forward=None, **kwargs):
    """forward/backward of sum(out * r) (+ sum(scores * r2)) against central differences of
    every input and weight; `before_forward` runs before each forward (a dropout seed)."""
    kwargs = dict(kwargs, return_attention_scores=scores_loss)
    before = before_forward or (lambda: None)
    before()
    outputs, cache = layer.forward(query, value, key, training=True, **kwargs)
    out, scores = outputs if scores_loss else (outputs, None)
    r_out = rng.uniform(-1, 1, out.shape)
    r_scores = rng.uniform(-1, 1, scores.shape) if scores_loss else None
    for var in layer.weights:
        var.grad[...] = 123.0  # a stale gradient must be overwritten
    grads = layer.backward(cache, [r_out, r_scores] if scores_loss else r_out, True, False)
    assert len(grads) == (2 if key is None else 3)
    weight_grads = [np.array(v.grad, copy=True) for v in layer.weights]

    def loss():
        before()
        outputs, _ = layer.forward(query, value, key, training=True, **kwargs)
        if scores_loss:
            return float(np.sum(outputs[0] * r_out) + np.sum(outputs[1] * r_scores))
        return float(np.sum(outputs * r_out))

    if query is value:  # self-attention on one array: its gradient is the sum of both places
        assert_gradient(grads[0] + grads[1], query, loss, "d(query = value)")
    else:
        for name, x, g in zip(("query", "value", "key"), (query, value, key), grads):
            assert g.shape == x.shape and g.dtype == np.float64
            assert_gradient(g, x, loss, f"d{name}")
    for var, g in zip(layer.weights, weight_grads):
        assert_gradient(g, var.value, loss, var.name)
    return grads


GRAD_CASES = {
    "cross": (dict(num_heads=2, key_dim=2, value_dim=3), (2, 3, 4), (2, 4, 3), (2, 4, 5)),
    "self_key_none": (dict(num_heads=2, key_dim=3), (2, 4, 5), (2, 3, 5), None),
    "output_tuple_no_bias": (dict(num_heads=2, key_dim=2, output_shape=(2, 3), use_bias=False), (2, 3, 4),
                             (2, 4, 3), (2, 4, 2)),
    "gate": (dict(num_heads=2, key_dim=2, value_dim=3, use_gate=True), (2, 3, 4), (2, 4, 3), (2, 4, 5)),
    "sliding_window": (dict(num_heads=2, key_dim=2, sliding_window=2), (2, 4, 4), (2, 4, 3), None),
    "rank4_axes12": (dict(num_heads=2, key_dim=2, attention_axes=(1, 2), use_gate=True), (2, 2, 3, 4),
                     (2, 3, 2, 3), None),
    "rank4_axis2": (dict(num_heads=2, key_dim=2, attention_axes=(2,)), (2, 2, 3, 4), (2, 2, 4, 3), (2, 2, 4, 5)),
}


@pytest.mark.parametrize("scores_loss", [False, True], ids=["output", "output_and_scores"])
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradients_match_finite_differences(case, scores_loss, rng):
    kwargs, q_shape, v_shape, k_shape = GRAD_CASES[case]
    layer = MHA(**kwargs, dtype="float64")
    query, value = rng.normal(size=q_shape), rng.normal(size=v_shape)
    key = None if k_shape is None else rng.normal(size=k_shape)
    layer(query, value, key)
    random_weights(layer, rng)
    check_layer_gradients(layer, query, value, key, rng, scores_loss)


@pytest.mark.parametrize("scores_loss", [False, True], ids=["output", "output_and_scores"])
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no_key"])
def test_gradients_with_every_mask_and_causal(with_key, scores_loss, rng):
    layer = MHA(num_heads=2, key_dim=2, value_dim=3, use_gate=True, dtype="float64")
    query, value = rng.normal(size=(B, T, 4)), rng.normal(size=(B, S, 3))
    key = rng.normal(size=(B, S, 5)) if with_key else None
    layer(query, value, key)
    random_weights(layer, rng)
    check_layer_gradients(layer, query, value, key, rng, scores_loss, use_causal_mask=True, **random_masks(rng))


def test_self_attention_gradient_when_query_is_value(rng):
    layer = MHA(num_heads=2, key_dim=3, dtype="float64")
    x = rng.normal(size=(2, 4, 5))
    layer(x, x)
    random_weights(layer, rng)
    dq, dv = check_layer_gradients(layer, x, x, None, rng, use_causal_mask=True,
                                   query_mask=np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool))
    assert np.abs(dq).max() > 1e-3 and np.abs(dv).max() > 1e-3


def check_model_gradients(model, inputs, rng):
    """d/dθ and d/dx of Σ_outputs Σ(output · r) from model.forward/backward against central
    differences (inference-mode forward)."""
    outputs, tape = model.forward(inputs, training=True)
    outs = outputs if isinstance(outputs, list) else [outputs]
    rs = [rng.uniform(-1, 1, o.shape) for o in outs]
    float_inputs = [x for x in (inputs if isinstance(inputs, list) else [inputs]) if x.dtype == np.float64]
    d_inputs = model.backward(tape, rs if isinstance(outputs, list) else rs[0], need_input_grad=True)
    d_inputs = d_inputs if isinstance(d_inputs, list) else [d_inputs]
    grads = {v.name + str(i): np.array(v.grad, copy=True) for i, v in enumerate(model.trainable_weights)}

    def loss():
        out, _ = model.forward(inputs)
        out = out if isinstance(out, list) else [out]
        return sum(float(np.sum(o * r)) for o, r in zip(out, rs))

    for i, var in enumerate(model.trainable_weights):
        assert_gradient(grads[var.name + str(i)], var.value, loss, var.name)
    for x, dx in zip(float_inputs, d_inputs):
        assert_gradient(dx, x, loss, "input")


def test_gradients_of_self_attention_in_a_functional_model(rng):
    """mha(x, x) on the model's input (its gradient adds the query's and the value's) and on a
    Dense of it, with the attention scores as a second output."""
    inputs = keras.Input((4, 5), dtype="float64")
    h = layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    a = MHA(num_heads=2, key_dim=3, dtype="float64")(inputs, inputs, use_causal_mask=True)
    b, scores = MHA(num_heads=2, key_dim=2, value_dim=3, dtype="float64")(h, h, return_attention_scores=True)
    model = keras.Model(inputs, [layers.Add()([a, b]), scores])
    for var in model.weights:
        var.assign(rng.uniform(-1, 1, var.shape))
    check_model_gradients(model, rng.normal(size=(2, 4, 5)), rng)


def test_gradients_through_embedding_masks_in_a_functional_model(rng):
    inputs = keras.Input((6,), dtype="int32")
    x = layers.Embedding(8, 5, mask_zero=True, dtype="float64")(inputs)
    y = MHA(num_heads=2, key_dim=2, dtype="float64")(x, x)
    model = keras.Model(inputs, layers.LSTM(3, dtype="float64")(y))
    for var in model.weights:
        var.assign(rng.uniform(-1, 1, var.shape))
    tokens = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 1, 2], [3, 0, 0, 0, 0, 0]])
    check_model_gradients(model, tokens, rng)


def test_gradients_of_a_shared_layer_add_up(rng):
    """One MHA called twice in a graph (self- and cross-attention): its weight gradients sum."""
    inputs = keras.Input((4, 5), dtype="float64")
    h = layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    shared = MHA(num_heads=2, key_dim=2, dtype="float64")
    y = layers.Add()([shared(inputs, inputs, use_causal_mask=True), shared(h, inputs)])
    model = keras.Model(inputs, y)
    for var in model.weights:
        var.assign(rng.uniform(-1, 1, var.shape))
    check_model_gradients(model, rng.normal(size=(2, 4, 5)), rng)


def test_backward_accumulates_and_skips_input_gradients(rng):
    layer = MHA(num_heads=2, key_dim=2, use_gate=True, dtype="float64")
    q, v, k = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 2))
    layer(q, v, k)
    random_weights(layer, rng)
    y, cache = layer.forward(q, v, k, training=True, use_causal_mask=True)
    dy = rng.normal(size=y.shape)
    full = layer.backward(cache, dy)
    grads = [np.array(var.grad, copy=True) for var in layer.weights]
    assert layer.backward(cache, dy, accumulate=True)[0].shape == q.shape
    for var, g in zip(layer.weights, grads):
        np.testing.assert_allclose(var.grad, 2 * g, rtol=1e-13, atol=1e-15, err_msg=var.name)
    partial = layer.backward(cache, dy, need_input_grad=[False, True, False])
    assert partial[0] is None and partial[2] is None
    np.testing.assert_allclose(partial[1], full[1], rtol=1e-13, atol=1e-15)
    for var, g in zip(layer.weights, grads):
        np.testing.assert_allclose(var.grad, g, rtol=1e-13, atol=1e-15, err_msg=var.name)


def test_float32_gradients_agree_with_float64(rng):
    kwargs = dict(num_heads=2, key_dim=4, value_dim=3, use_gate=True)
    l32, l64 = MHA(**kwargs), MHA(**kwargs, dtype="float64")
    q, v = rng.normal(size=(2, 9, 6)), rng.normal(size=(2, 7, 5))
    l32(q, v)
    l64(q, v)
    weights = random_weights(l64, rng, 0.5)
    l32.set_weights(weights)
    masks = dict(value_mask=rng.uniform(size=(2, 7)) > 0.3, query_mask=rng.uniform(size=(2, 9)) > 0.2)
    dy = rng.normal(size=(2, 9, 6))
    grads = []
    for layer, dtype in ((l32, np.float32), (l64, np.float64)):
        y, cache = layer.forward(q.astype(dtype), v.astype(dtype), training=True, use_causal_mask=True, **masks)
        d = layer.backward(cache, dy.astype(dtype))
        assert d[0].dtype == dtype and all(var.grad.dtype == dtype for var in layer.weights)
        grads.append(d + [np.array(var.grad, copy=True) for var in layer.weights])
    scale = max(np.abs(g).max() for g in grads[1])
    for g32, g64 in zip(*grads):  # (the key bias's gradient is zero: float32 rounding only)
        np.testing.assert_allclose(g32, g64, rtol=2e-4, atol=2e-6 * scale)


def test_bit_identical_on_one_and_two_threads(threads, rng):
    q = rng.normal(size=(8, 160, 32)).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        keras.utils.set_random_seed(0)  # the same weights and dropout seeds
        layer = MHA(num_heads=4, key_dim=16, dropout=0.2)
        layer(q, q)
        y, cache = layer.forward(q, q, training=True, use_causal_mask=True, return_attention_scores=True)
        d = layer.backward(cache, [np.ones_like(y[0]), np.ones_like(y[1])])
        results.append(y + d + [np.array(var.grad, copy=True) for var in layer.weights])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_large_logits_are_stable(rng):
    """Logits of a few hundred: the masked softmax stays finite and equals Keras'."""
    layer = MHA(num_heads=2, key_dim=4)
    q, v = rng.normal(size=(2, 6, 8)).astype(np.float32), rng.normal(size=(2, 5, 8)).astype(np.float32)
    layer(q, v)
    weights = random_weights(layer, rng, 4.0)
    value_mask = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
    mask = keras_mask(2, 6, 5, value_mask=value_mask, causal=True)
    out, scores = layer(q, v, value_mask=value_mask, use_causal_mask=True, return_attention_scores=True)
    ref_out, ref_scores = reference(weights, q, v, key_dim=4, mask=mask)
    assert np.abs(np.einsum("bshd,bthd->bhts", layer.key_dense(v), layer.query_dense(q))).max() > 300
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------------------
# 5. Dropout (on the attention probabilities, as Keras' Dropout after the softmax)
# ----------------------------------------------------------------------------------------
def test_dropout_only_in_training(rng):
    layer = MHA(num_heads=2, key_dim=3, dropout=0.5, seed=3, dtype="float64")
    q, v = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 6, 4))
    layer(q, v)
    weights = random_weights(layer, rng)
    ref_out, ref_scores = reference(weights, q, v, key_dim=3)
    np.testing.assert_allclose(layer(q, v), ref_out, **tol("float64"))
    np.testing.assert_allclose(layer(q, v, training=False), ref_out, **tol("float64"))
    out, scores = layer(q, v, training=True, return_attention_scores=True)
    assert np.abs(out - ref_out).max() > 1e-2
    np.testing.assert_allclose(scores, ref_scores, **tol("float64"))  # the scores before dropout (Keras)
    # in a model: predict is inference, fit's forward is training
    qi, vi = keras.Input((5, 6), dtype="float64"), keras.Input((6, 4), dtype="float64")
    model = keras.Model([qi, vi], layer(qi, vi))
    np.testing.assert_allclose(model.predict([q, v], verbose=0), ref_out, **tol("float64"))
    assert np.abs(model.forward([q, v], training=True)[0] - ref_out).max() > 1e-2


def test_dropout_is_reproducible_with_a_seed(rng):
    q = rng.normal(size=(2, 5, 6)).astype(np.float32)
    a, b = (MHA(num_heads=2, key_dim=3, dropout=0.4, seed=11) for _ in range(2))
    a(q, q)
    b(q, q)
    b.set_weights(a.get_weights())
    first = a(q, q, training=True)
    np.testing.assert_array_equal(b(q, q, training=True), first)  # the same seed, the same masks
    second = a(q, q, training=True)
    np.testing.assert_array_equal(b(q, q, training=True), second)
    assert np.abs(second - first).max() > 1e-3  # each call draws a new mask (Keras' SeedGenerator)
    c = MHA(num_heads=2, key_dim=3, dropout=0.4, seed=12)
    c(q, q)
    c.set_weights(a.get_weights())
    assert np.abs(c(q, q, training=True) - first).max() > 1e-3
    # without a seed of its own: the global seed
    d = MHA(num_heads=2, key_dim=3, dropout=0.4)
    d(q, q)
    keras.utils.set_random_seed(5)
    once = d(q, q, training=True)
    keras.utils.set_random_seed(5)
    np.testing.assert_array_equal(d(q, q, training=True), once)


def test_dropout_drops_probabilities_and_rescales_as_keras(rng):
    """The dropped probabilities (read through the kernel with an identity value) are 0 or
    p / (1 - rate), about `rate` of them dropped; the layer's output is Keras' formula with
    that keep-mask."""
    rate, (b, t, s, heads) = 0.3, (2, 16, 12, 2)
    layer = MHA(num_heads=heads, key_dim=3, dropout=rate, dtype="float64")
    q, v = rng.normal(size=(b, t, 6)), rng.normal(size=(b, s, 6))
    layer(q, v)
    weights = random_weights(layer, rng)
    keras.utils.set_random_seed(21)
    seed = fastnn.utils.rng.draw_seed()  # what the layer draws after the same reseeding
    keras.utils.set_random_seed(21)
    out = layer(q, v, training=True)

    qp, kp = layer.query_dense(q), layer.key_dense(v)
    eye = np.ascontiguousarray(np.broadcast_to(np.eye(s)[None, :, None, :], (b, s, heads, s)))
    dropped, _, probs = ops.attention_forward(qp, kp, eye, None, None, 1 / np.sqrt(3), False, rate, seed, True)
    dropped = dropped.transpose(0, 2, 1, 3)  # (B, T, heads, S) -> (B, heads, T, S)
    keep = dropped != 0
    np.testing.assert_allclose(dropped[keep], probs[keep] / (1 - rate), rtol=1e-12)
    assert abs((~keep).mean() - rate) < 0.06
    ref_out, _ = reference(weights, q, v, key_dim=3, keep=keep, rate=rate)
    np.testing.assert_allclose(out, ref_out, **tol("float64"))


def test_gradients_with_dropout_match_finite_differences(rng):
    """With the global seed reset before every forward the dropout masks are fixed."""
    layer = MHA(num_heads=2, key_dim=2, value_dim=3, dropout=0.3, use_gate=True, dtype="float64")
    query, value, key = rng.normal(size=(B, T, 4)), rng.normal(size=(B, S, 3)), rng.normal(size=(B, S, 5))
    layer(query, value, key)
    random_weights(layer, rng)

    def reseed():
        keras.utils.set_random_seed(8)

    reseed()
    assert np.abs(layer(query, value, key, training=True) - layer(query, value, key)).max() > 1e-3
    check_layer_gradients(layer, query, value, key, rng, scores_loss=True, before_forward=reseed,
                          use_causal_mask=True, **random_masks(rng))


# ----------------------------------------------------------------------------------------
# 6. Training: a small Transformer reads the order of the tokens
# ----------------------------------------------------------------------------------------
@fastnn.saving.register_keras_serializable(package="TestAttention")
class TokenAndPositionEmbedding(layers.Layer):
    """Keras' example layer (text_classification_with_transformer): token embedding plus the
    embedding of ops.arange(length), in call()."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        # Named sublayers: fastnn's loader matches a custom layer's sublayer weights by their
        # names, so auto-named ones ("embedding_3") fail to load in the process that saved them.
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim, name="token_emb")
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim, name="pos_emb")

    def call(self, x):
        positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
        return self.token_emb(x) + positions

    def get_config(self):
        return {**super().get_config(), "maxlen": self.maxlen, "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim}


# The reviews of examples/text_classification.py: label 1 when token 1 comes before token 2.
make_reviews = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / "examples"
                                  / "text_classification.py"))["make_reviews"]


class TransformerBlock(layers.Layer):
    """Keras' example block, verbatim (its gradient comes from tracing call)."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output)
        return self.layernorm2(out1 + ffn_output)


def transformer_classifier(maxlen, vocab_size, dim=16, block=False):
    """The functional Transformer (block=False), or Keras' example with its TransformerBlock."""
    inputs = keras.Input((maxlen,), dtype="int32")
    embedding = TokenAndPositionEmbedding(maxlen, vocab_size, dim)
    x = embedding(inputs)
    if block:
        x = TransformerBlock(dim, 2, 32)(x)
    else:
        attended = MHA(num_heads=2, key_dim=dim, dropout=0.1)(x, x)
        x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, attended]))
        ffn = layers.Dense(dim)(layers.Dense(32, activation="relu")(x))
        x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, ffn]))
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x)), embedding


@pytest.mark.parametrize("block", [False, True], ids=["functional", "keras_example_block"])
def test_a_transformer_learns_word_order_a_bag_of_words_cannot(block):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    vocab, maxlen = 30, 16
    reviews, y = make_reviews(rng, 3000, vocab, maxlen)
    x = keras.preprocessing.sequence.pad_sequences(reviews, maxlen=maxlen, padding="post")
    split = 2400
    model, embedding = transformer_classifier(maxlen, vocab + 1, block=block)
    positions_before = embedding.pos_emb.get_weights()[0].copy()
    tokens_before = embedding.token_emb.get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:split], y[:split], epochs=12, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x[split:], y[split:], verbose=0)
    # the position embedding (a layer called on ops.arange inside call) trained
    assert np.abs(embedding.pos_emb.get_weights()[0] - positions_before).max() > 0.05
    assert np.abs(embedding.token_emb.get_weights()[0] - tokens_before).max() > 0.05

    bag = keras.Sequential([layers.Embedding(vocab + 1, 16), layers.GlobalAveragePooling1D(),
                            layers.Dense(32, activation="relu"), layers.Dense(2, activation="softmax")])
    bag.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    bag.fit(x[:split], y[:split], epochs=12, batch_size=32, verbose=0)
    _, bag_accuracy = bag.evaluate(x[split:], y[split:], verbose=0)
    assert accuracy >= 0.9 and bag_accuracy < 0.65, (accuracy, bag_accuracy)


def test_every_weight_of_the_layer_trains_in_a_masked_model(rng):
    """Every weight of the layer moves (gate, key, value...), the masked model's loss falls."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6,), dtype="int32")
    x = layers.Embedding(12, 8, mask_zero=True)(inputs)
    mha = MHA(num_heads=2, key_dim=4, use_gate=True)
    x = layers.LSTM(4)(mha(x, x, use_causal_mask=True))
    model = keras.Model(inputs, layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    tokens = rng.integers(0, 12, size=(64, 6))
    target = (tokens[:, :3].sum(axis=1, keepdims=True) / 20.0).astype(np.float32)
    before = [w.copy() for w in mha.get_weights()]
    first = model.evaluate(tokens, target, verbose=0)
    model.fit(tokens, target, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(tokens, target, verbose=0) < 0.5 * first
    for var, old in zip(mha.weights, before):
        if var.name != "key/bias":  # constant along the softmax: no gradient (as in Keras)
            assert np.abs(var.numpy() - old).max() > 1e-2, var.name


# ----------------------------------------------------------------------------------------
# 7. Keras weights, configs, saving, summary
# ----------------------------------------------------------------------------------------
def test_set_weights_with_keras_shapes_and_bad_shapes(rng):
    layer = MHA(num_heads=2, key_dim=3, value_dim=4)
    layer(np.zeros((1, 5, 6), np.float32), np.zeros((1, 7, 8), np.float32))
    keras_shapes = [(6, 2, 3), (2, 3), (8, 2, 3), (2, 3), (8, 2, 4), (2, 4), (2, 4, 6), (6,)]
    assert [w.shape for w in layer.get_weights()] == keras_shapes
    weights = [rng.normal(size=s).astype(np.float32) for s in keras_shapes]
    layer.set_weights(weights)
    for got, want in zip(layer.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    q, v = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 7, 8))
    np.testing.assert_allclose(layer(q, v), reference(weights, q, v, key_dim=3)[0], rtol=1e-5, atol=1e-5)
    bad = list(weights)
    bad[2] = np.zeros((6, 2, 3))  # the query's kernel shape in the key's place
    with pytest.raises(ValueError, match=r"weight 'key/kernel' has shape \(8, 2, 3\), got \(6, 2, 3\)"):
        layer.set_weights(bad)
    with pytest.raises(ValueError, match="expected 8 weight arrays, got 7"):
        layer.set_weights(weights[:7])


CONFIGS = [
    dict(num_heads=2, key_dim=3),
    dict(num_heads=3, key_dim=2, value_dim=5, dropout=0.25, use_bias=False, output_shape=(2, 3), seed=7,
         use_gate=True, kernel_initializer="he_normal", bias_initializer="ones", kernel_regularizer="l2"),
    dict(num_heads=1, key_dim=4, output_shape=5, attention_axes=(1, 2), sliding_window=None),
    dict(num_heads=2, key_dim=2, attention_axes=-2, sliding_window=3, flash_attention=False),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_config_round_trip(kwargs, rng):
    layer = MHA(**kwargs, name="att")
    cfg = layer.get_config()
    for key in ("num_heads", "key_dim", "value_dim", "dropout", "use_bias", "use_gate", "output_shape",
                "attention_axes", "sliding_window", "kernel_initializer", "bias_initializer", "kernel_regularizer",
                "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint", "seed"):
        assert key in cfg, key  # Keras' keys
    assert cfg["value_dim"] == kwargs.get("value_dim", kwargs["key_dim"])
    out = kwargs.get("output_shape")
    assert cfg["output_shape"] == (None if out is None else (out,) if isinstance(out, int) else tuple(out))
    axes = kwargs.get("attention_axes")
    assert cfg["attention_axes"] == (None if axes is None else (axes,) if isinstance(axes, int) else tuple(axes))
    assert cfg["dropout"] == kwargs.get("dropout", 0.0) and cfg["seed"] == kwargs.get("seed")
    clone = MHA.from_config(json.loads(json.dumps(cfg)))  # as read back from a file
    assert clone.get_config() == cfg
    assert layers.deserialize(layers.serialize(layer)).get_config() == cfg
    shape = (2, 3, 4, 6) if kwargs.get("attention_axes") == (1, 2) else (2, 4, 6)
    x = rng.normal(size=shape).astype(np.float32)
    layer(x, x)
    clone(x, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x, x), layer(x, x))
    assert layer.get_config() == cfg  # unchanged by building (Keras would normalise attention_axes here)


def test_save_and_load_a_model_with_attention(tmp_path, rng):
    keras.utils.set_random_seed(6)
    model = masked_classifier(maxlen=7, causal=True)
    for var in model.weights:
        var.assign(rng.uniform(-0.5, 0.5, var.shape))
    tokens = masked_tokens()
    model.save(tmp_path / "mha.fastnn")
    loaded = keras.models.load_model(tmp_path / "mha.fastnn")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(tokens, verbose=0), model.predict(tokens, verbose=0))

    # the Transformer: a custom layer, dropout, a gate, attention scores as an output
    transformer, _ = transformer_classifier(8, 10)
    inputs = transformer.inputs[0]
    x = transformer.layers[1].output
    cross = MHA(num_heads=2, key_dim=3, value_dim=2, use_gate=True, output_shape=(2, 4), seed=3, dropout=0.2)
    y, scores = cross(x, x, x, return_attention_scores=True, use_causal_mask=True)
    model = keras.Model(inputs, [transformer.outputs[0], y, scores])
    for var in model.weights:
        var.assign(rng.uniform(-0.5, 0.5, var.shape))
    tokens = rng.integers(0, 10, size=(3, 8))
    model.save(tmp_path / "transformer.fastnn")
    loaded = keras.models.load_model(tmp_path / "transformer.fastnn")
    for got, want in zip(loaded.predict(tokens, verbose=0), model.predict(tokens, verbose=0)):
        np.testing.assert_array_equal(got, want)
    assert [l.get_config() for l in loaded.layers] == [l.get_config() for l in model.layers]


def test_summary(capsys):
    model, _ = transformer_classifier(8, 10)
    model.summary()
    text = capsys.readouterr().out
    mha = [l for l in model.layers if isinstance(l, MHA)][0]
    assert "MultiHeadAttention" in text and f"{mha.count_params():,}" in text
    assert mha.count_params() == 4 * (16 * 2 * 16 + 2 * 16) - 2 * 16 + 16  # Keras' count (output bias is (16,))


# ----------------------------------------------------------------------------------------
# 8. Bad input
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=0, key_dim=2), "'num_heads' must be a positive integer, got 0"),
    (dict(num_heads=-1, key_dim=2), "'num_heads' must be a positive integer"),
    (dict(num_heads=2.0, key_dim=2), "'num_heads' must be a positive integer, got 2.0"),
    (dict(num_heads=True, key_dim=2), "'num_heads' must be a positive integer"),
    (dict(num_heads="2", key_dim=2), "'num_heads' must be a positive integer"),
    (dict(num_heads=2, key_dim=0), "'key_dim' must be a positive integer, got 0"),
    (dict(num_heads=2, key_dim=1.5), "'key_dim' must be a positive integer"),
    (dict(num_heads=2, key_dim=None), "'key_dim' must be a positive integer"),
    (dict(num_heads=2, key_dim=2, value_dim=0), "'value_dim' must be a positive integer or None, got 0"),
    (dict(num_heads=2, key_dim=2, value_dim=-3), "'value_dim' must be a positive integer or None"),
    (dict(num_heads=2, key_dim=2, dropout=1.0), r"'dropout' must be a float in \[0, 1\), got 1.0"),
    (dict(num_heads=2, key_dim=2, dropout=-0.1), "'dropout' must be a float"),
    (dict(num_heads=2, key_dim=2, dropout="0.1"), "'dropout' must be a float"),
    (dict(num_heads=2, key_dim=2, kernel_constraint="nope"), "'kernel_constraint': Unknown constraint 'nope'"),
    (dict(num_heads=2, key_dim=2, bias_constraint="nope"), "'bias_constraint': Unknown constraint 'nope'"),
    (dict(num_heads=2, key_dim=2, activity_regularizer="l2"), "'activity_regularizer' is not supported"),
    (dict(num_heads=2, key_dim=2, sliding_window=0), "'sliding_window' must be None or a positive integer"),
    (dict(num_heads=2, key_dim=2, output_shape="abc"), "'output_shape' must be an int, a tuple or a list"),
    (dict(num_heads=2, key_dim=2, output_shape=(4, 0)), "'output_shape' must hold positive sizes"),
    (dict(num_heads=2, key_dim=2, attention_axes="1"), "'attention_axes' must be an int, list, or tuple"),
    (dict(num_heads=2, key_dim=2, attention_axes=(1.0,)), "'attention_axes' must be an int, list, or tuple"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MHA(**kwargs)


def test_bad_flash_attention():
    with pytest.raises(TypeError, match="'flash_attention' must be None, True or False"):
        MHA(num_heads=2, key_dim=2, flash_attention="yes")


@pytest.mark.parametrize("axes,shape", [((0,), (2, 3, 4)), ((2,), (2, 3, 4)), (-1, (2, 3, 4)), ((1, 1), (2, 3, 4, 5)),
                                        ((3,), (2, 3, 4, 5)), ((-4,), (2, 3, 4, 5))])
def test_bad_attention_axes_for_the_inputs(axes, shape):
    layer = MHA(num_heads=2, key_dim=2, attention_axes=axes)
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="'attention_axes' .* must name distinct axes among"):
        layer(x, x)


@pytest.mark.parametrize("q_shape,v_shape,k_shape,match", [
    ((2, 3, 4), (2, 3, 4, 5), None, "'query' and 'value' must have the same rank"),
    ((2, 3, 4, 5), (2, 3, 4), None, "'query' and 'value' must have the same rank"),
    ((2, 3, 4), (2, 5, 4), (2, 6, 4), "all dimensions of `value` and `key`, except the last one, must be equal"),
    ((2, 4), (2, 4), None, "'query' must have at least 3 axes"),
    ((2, 3, 4), (2, 4), None, "'value' must have at least 3 axes"),
])
def test_bad_input_shapes(q_shape, v_shape, k_shape, match):
    key = None if k_shape is None else np.zeros(k_shape, np.float32)
    with pytest.raises(ValueError, match=match):
        MHA(num_heads=2, key_dim=2)(np.zeros(q_shape, np.float32), np.zeros(v_shape, np.float32), key)
    # symbolic: the same message, at the call that builds the model
    k_input = None if k_shape is None else keras.Input(k_shape[1:])
    with pytest.raises(ValueError, match=match):
        MHA(num_heads=2, key_dim=2)(keras.Input(q_shape[1:]), keras.Input(v_shape[1:]), k_input)


def test_a_non_attention_axis_must_agree_between_query_and_value():
    layer = MHA(num_heads=2, key_dim=2, attention_axes=(2,))
    with pytest.raises(ValueError, match="axis 1 is not an attention axis .* must have the same size"):
        layer(np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 6, 4, 5), np.float32))


def test_a_built_layer_refuses_inputs_of_other_feature_sizes():
    layer = MHA(num_heads=2, key_dim=2)
    layer(np.zeros((1, 5, 6), np.float32), np.zeros((1, 4, 3), np.float32))
    with pytest.raises(ValueError, match="EinsumDense 'value'.* got inputs of shape"):
        layer(keras.Input((5, 6)), keras.Input((4, 6)))  # at the symbolic call, not at predict
    with pytest.raises(ValueError, match="EinsumDense 'key'.* got inputs of shape"):
        layer(np.zeros((1, 5, 6), np.float32), np.zeros((1, 4, 3), np.float32), np.zeros((1, 4, 5), np.float32))
    with pytest.raises(ValueError, match="EinsumDense 'query'.* got inputs of shape"):
        layer(np.zeros((1, 5, 7), np.float32), np.zeros((1, 4, 3), np.float32))


@pytest.mark.parametrize("mask_kwargs,match", [
    (dict(query_mask=np.ones((B, T + 1), bool)), r"'query_mask' must have shape \(batch, T\) = \(3, 5\), got \(3, 6\)"),
    (dict(query_mask=np.ones((T,), bool)), r"'query_mask' must have shape \(batch, T\)"),
    (dict(value_mask=np.ones((B, S - 1), bool)), r"'value_mask' must have shape \(batch, S\) = \(3, 4\), got \(3, 3\)"),
    (dict(value_mask=np.ones((B, T, S), bool)), r"'value_mask' must have shape \(batch, S\)"),
    (dict(key_mask=np.ones((1, S), bool)), r"'key_mask' must have shape \(batch, S\) = \(3, 4\), got \(1, 4\)"),
    (dict(attention_mask=np.ones((B, T, S + 1), bool)), r"'attention_mask' must broadcast to \(batch, T, S\)"),
    (dict(attention_mask=np.ones((B, S, T), bool)), r"'attention_mask' must broadcast to \(batch, T, S\)"),
    (dict(attention_mask=np.ones((B, 3, T, S), bool)),
     r"'attention_mask' must broadcast to \(batch, num_heads, T, S\) = \(3, 2, 5, 4\)"),
    (dict(attention_mask=np.ones((1, B, 2, T, S), bool)), r"'attention_mask' must broadcast to \(batch, T, S\)"),
])
def test_masks_of_the_wrong_shape(mask_kwargs, match, rng):
    layer = MHA(num_heads=2, key_dim=2)
    q, v = rng.normal(size=(B, T, 6)), rng.normal(size=(B, S, 6))
    with pytest.raises(ValueError, match=match):
        layer(q, v, v, **mask_kwargs)


@pytest.mark.parametrize("kwargs", [dict(query_mask=np.ones((2, 12), bool)), dict(value_mask=np.ones((2, 12), bool)),
                                    dict(attention_mask=np.ones((2, 12, 12), bool)), dict(use_causal_mask=True)])
def test_masks_with_attention_over_two_axes_are_refused(kwargs, rng):
    layer = MHA(num_heads=2, key_dim=2, attention_axes=(1, 2))
    x = rng.normal(size=(2, 3, 4, 5))
    layer(x, x)
    with pytest.raises(ValueError, match="masks, use_causal_mask and sliding_window need a single attention axis"):
        layer(x, x, **kwargs)
    windowed = MHA(num_heads=2, key_dim=2, attention_axes=(1, 2), sliding_window=2)
    with pytest.raises(ValueError, match="need a single attention axis"):
        windowed(x, x)


def test_calling_without_value():
    layer = MHA(num_heads=2, key_dim=2)
    x = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(TypeError, match=r"call it as mha\(query, value\[, key\]\), got query=ndarray, value=NoneType"):
        layer(x)
    with pytest.raises(TypeError, match=r"call it as mha\(query, value"):
        layer(keras.Input((3, 4)))
    with pytest.raises(TypeError, match="symbolic tensors mixed with ndarray"):
        layer(keras.Input((3, 4)), x)
