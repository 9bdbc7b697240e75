"""Recurrent layers, Embedding, Masking, Bidirectional, TimeDistributed: Keras semantics against
NumPy step loops, gradients against finite differences (layers driven by hand on the
forward/backward contract, and inside model graphs: initial states from an encoder, shared
layers, masks), accumulate and need_input_grad, saving, bad input, training."""

import os

import numpy as np
import pytest

import fastnn
from fastnn import layers
from fastnn.preprocessing.sequence import pad_sequences
from rnn_reference import gru_reference, lstm_reference, simple_rnn_reference
from test_layers_core import assert_gradient, check_gradients, roundtrip, _numeric_gradient

REFERENCES = {"LSTM": lstm_reference, "GRU": gru_reference, "SimpleRNN": simple_rnn_reference}
MNIST1D = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist1d", "mnist1d.npz")


def reference_for(layer, x, mask=None, initial=None):
    kernel, recurrent = layer.kernel.numpy(), layer.recurrent_kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else None
    f = REFERENCES[type(layer).__name__]
    kwargs = dict(mask=mask, go_backwards=layer.go_backwards, zero_output_for_mask=layer.zero_output_for_mask)
    if isinstance(layer, layers.GRU):
        kwargs["reset_after"] = layer.reset_after
    if initial is not None:
        kwargs["h0"] = initial[0]
        if len(initial) == 2:
            kwargs["c0"] = initial[1]
    return f(np.asarray(x, np.float64), kernel, recurrent, bias, **kwargs)


# (class, extra arguments): every recurrent form, GRU's reset_after=False among them
FORMS = [(layers.LSTM, {}), (layers.GRU, {}), (layers.GRU, {"reset_after": False}), (layers.SimpleRNN, {})]
FORM_IDS = ["LSTM", "GRU", "GRU-reset_before", "SimpleRNN"]


@pytest.mark.parametrize("cls,extra", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_layer_forward_is_keras(rng, cls, extra, return_sequences, go_backwards):
    layer = cls(5, return_sequences=return_sequences, go_backwards=go_backwards, dtype="float64", **extra)
    x = rng.standard_normal((3, 7, 4))
    y = layer(x)
    outputs, *states = reference_for(layer, x)
    want = outputs if return_sequences else outputs[:, -1]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert layer.output_shape == ((None, 7, 5) if return_sequences else (None, 5))
    # weight layout and initial values as Keras: kernel (in, G·units), orthogonal recurrent kernel
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cls.__name__]
    assert layer.kernel.shape == (4, gates * 5) and layer.recurrent_kernel.shape == (5, gates * 5)
    r = layer.recurrent_kernel.numpy()
    np.testing.assert_allclose(r @ r.T, np.eye(5), atol=1e-10)
    assert layer.bias.shape == ((2, 15) if cls is layers.GRU and extra == {} else (gates * 5,))
    assert [w.shape for w in layer.get_weights()] == [(4, gates * 5), (5, gates * 5), layer.bias.shape]


def test_lstm_unit_forget_bias(rng):
    layer = layers.LSTM(3)
    layer(rng.standard_normal((1, 2, 2)))
    np.testing.assert_array_equal(layer.bias.numpy(), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    plain = layers.LSTM(3, unit_forget_bias=False)
    plain(rng.standard_normal((1, 2, 2)))
    assert not plain.bias.numpy().any()


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU, layers.SimpleRNN])
def test_return_state_and_initial_state(rng, cls):
    layer = cls(4, return_sequences=True, return_state=True, dtype="float64")
    x = rng.standard_normal((2, 5, 3))
    n_states = 2 if cls is layers.LSTM else 1
    initial = [rng.standard_normal((2, 4)) for _ in range(n_states)]
    out, *states = layer(x, initial_state=initial)
    ref_out, *ref_states = reference_for(layer, x, initial=initial)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12)
    assert len(states) == n_states
    for s, r in zip(states, ref_states):
        np.testing.assert_allclose(s, r, rtol=1e-12)


@pytest.mark.parametrize("cls,extra", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_layer_gradients(rng, cls, extra, return_sequences):
    layer = cls(3, return_sequences=return_sequences, dtype="float64", **extra)
    check_gradients(layer, rng.standard_normal((2, 4, 3)), rng, expect_weights=3)


@pytest.mark.parametrize("cls,extra", FORMS[:3], ids=FORM_IDS[:3])
def test_masked_layer_gradients_and_state_gradients(rng, cls, extra):
    layer = cls(3, return_sequences=False, return_state=True, dtype="float64", **extra)
    x = rng.standard_normal((3, 5, 2))
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    n = 2 if cls is layers.LSTM else 1
    initial = [rng.standard_normal((3, 3)) for _ in range(n)]
    layer(x, mask=mask, initial_state=initial)
    out, cache = layer.forward(x, training=True, mask=mask, initial_state=initial)
    ds = [rng.standard_normal(o.shape) for o in out]
    dx, *state_grads = layer.backward(cache, ds)  # the call's tensors: x, then the initial states
    assert len(state_grads) == n
    grads = [g.copy() for g in layer.grads]

    def loss():
        outs, _ = layer.forward(x, mask=mask, initial_state=initial)
        return sum(float(np.sum(o * d)) for o, d in zip(outs, ds))

    assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)
    for s, g in zip(initial, state_grads):
        assert_gradient(g, _numeric_gradient(loss, s), "initial state")
    # the fully masked sample: output zeros (Keras), final state = initial state
    np.testing.assert_array_equal(out[0][2], 0)
    np.testing.assert_array_equal(out[1][2], initial[0][2])
    # a shared layer's second call adds its weight gradients; the states' gradients are the call's
    again = layer.backward(cache, ds, accumulate=True)
    for g, twice in zip(grads, layer.grads):
        np.testing.assert_allclose(twice, 2 * g, rtol=1e-13, atol=1e-15)
    for g, g2 in zip([dx] + state_grads, again):
        np.testing.assert_array_equal(g2, g)
    # only the states' gradients (the input needs none), and none at all
    skipped = layer.backward(cache, ds, need_input_grad=[False] + [True] * n)
    assert skipped[0] is None
    for g, g2 in zip(state_grads, skipped[1:]):
        np.testing.assert_array_equal(g2, g)
    assert layer.backward(cache, ds, need_input_grad=False) == [None] * (n + 1)
    for g, again in zip(grads, layer.grads):
        np.testing.assert_array_equal(again, g)


def test_embedding_forward_backward_and_mask(rng):
    layer = layers.Embedding(7, 3, mask_zero=True, dtype="float64")
    ids = np.array([[0, 1, 6, 1], [2, 0, 0, 5]])
    layer(ids)
    y, cache = layer.forward(ids, training=True)
    np.testing.assert_array_equal(y, layer.embeddings.numpy()[ids])
    np.testing.assert_array_equal(layer.compute_mask(ids), ids != 0)
    assert layer._may_produce_mask()
    dy = rng.standard_normal(y.shape)
    assert layer.backward(cache, dy) is None
    want = np.zeros((7, 3))
    np.add.at(want, ids, dy)
    np.testing.assert_allclose(layer.grads[0], want, rtol=1e-12)
    # accumulate=True adds (a shared embedding); need_input_grad=False changes nothing (ids have none)
    assert layer.backward(cache, dy, accumulate=True) is None
    np.testing.assert_allclose(layer.grads[0], 2 * want, rtol=1e-12)
    assert layer.backward(cache, dy, need_input_grad=False) is None
    np.testing.assert_allclose(layer.grads[0], want, rtol=1e-12)
    # ids given as integer-valued floats (a model's float inputs) are the same ids
    y_float, cache_float = layer.forward(ids.astype(np.float32), training=True)
    np.testing.assert_array_equal(y_float, y)
    layer.backward(cache_float, dy)
    np.testing.assert_allclose(layer.grads[0], want, rtol=1e-12)
    with pytest.raises(ValueError, match="integer"):
        layer.forward(np.array([[0.5, 1.0]]))
    assert not layers.Embedding(7, 3)._may_produce_mask()
    init = layers.Embedding(10000, 8)
    init(np.array([[1]]))
    values = init.embeddings.numpy()
    assert values.min() >= -0.05 and values.max() <= 0.05 and values.std() > 0.02  # Keras' "uniform"


def test_gradients_through_embedding_and_masked_lstm(rng):
    """Central differences of a whole model's output with respect to every weight, the
    embeddings included (duplicate ids, padding masked)."""
    model = fastnn.Sequential([layers.Input((5,), dtype="int32"),
                               layers.Embedding(6, 3, mask_zero=True, dtype="float64"),
                               layers.LSTM(4, return_sequences=True, dtype="float64"),
                               layers.TimeDistributed(layers.Dense(2, dtype="float64"))])
    ids = np.array([[0, 0, 3, 3, 1], [2, 5, 5, 0, 2], [4, 1, 2, 3, 5]])
    weights = rng.standard_normal((3, 5, 2))

    def loss():
        return float(np.sum(model.forward(ids)[0] * weights))

    _, tape = model.forward(ids, training=True)
    model.backward(tape, weights)
    grads = {v.name: v.grad.copy() for v in model.trainable_weights}
    assert len(grads) == 6
    for var in model.trainable_weights:
        assert_gradient(grads[var.name], _numeric_gradient(loss, var.value), var.name)


def test_embedding_bad_ids_are_errors_and_leave_the_model_unchanged():
    model = fastnn.Sequential([layers.Embedding(5, 2, input_length=3), layers.LSTM(2), layers.Dense(1)])
    model.compile("adam", "mse")
    before = model.get_weights()
    with pytest.raises(ValueError, match="index 5 .*outside \\[0, 5\\)"):
        model.fit(np.array([[1, 2, 5]]), np.zeros(1), verbose=0)
    with pytest.raises(ValueError, match="index -1"):
        model.predict(np.array([[1, -1, 2]]))
    with pytest.raises(ValueError, match="integer"):
        model.predict(np.array([[1.5, 1, 2]]))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_recurrent_bad_input():
    with pytest.raises(ValueError, match="3-D"):
        layers.LSTM(3)(np.zeros((2, 4)))
    model = fastnn.Sequential([layers.Input((4,)), layers.Dense(3)])
    with pytest.raises(ValueError, match="3-D"):
        model.add(layers.LSTM(2))
    with pytest.raises(ValueError, match="initial_state"):
        layers.LSTM(3)(np.zeros((2, 4, 1)), initial_state=[np.zeros((2, 3))])
    with pytest.raises(ValueError, match="initial_state"):
        layers.GRU(3)(np.zeros((2, 4, 1)), initial_state=[np.zeros((2, 4))])
    with pytest.raises(ValueError, match="units"):
        layers.GRU(0)
    with pytest.raises(ValueError, match="dropout"):
        layers.LSTM(2, dropout=1.0)
    with pytest.raises(ValueError, match="activation"):
        layers.LSTM(2, activation="softmax")
    with pytest.raises(TypeError, match="reset_after"):
        layers.GRU(2, reset_after="no")
    with pytest.raises(ValueError, match="'recurrent_activation' must be one of .*hard_sigmoid"):
        layers.GRU(2, recurrent_activation="gelu")
    with pytest.raises(ValueError, match="bias"):  # reset_after=False has one bias row
        fastnn.ops.gru(np.zeros((2, 4, 1)), np.zeros((1, 6)), np.zeros((2, 6)), bias=np.zeros((2, 6)),
                       reset_after=False)
    with pytest.raises(TypeError, match="Bidirectional"):
        layers.Bidirectional(layers.Dense(3))


def test_mask_zero_skips_padding_as_keras_does(rng):
    """A model with mask_zero=True gives each sample the output of its unpadded sequence."""
    fastnn.utils.set_random_seed(3)
    model = fastnn.Sequential([layers.Input((None,), dtype="int32"),  # any length
                               layers.Embedding(20, 4, mask_zero=True, dtype="float64"),
                               layers.LSTM(5, dtype="float64")])
    seqs = [[3, 4, 5], [7, 1, 9, 2, 8], [6]]
    padded = pad_sequences(seqs, maxlen=6)  # pre-padding: zeros first
    post = pad_sequences(seqs, maxlen=6, padding="post")
    got = model.predict(padded)
    np.testing.assert_allclose(model.predict(post), got, rtol=1e-12)  # the padding makes no difference
    for i, s in enumerate(seqs):
        alone = model.predict(np.array([s]))
        np.testing.assert_allclose(got[i], alone[0], rtol=1e-12)


def test_a_mask_reaching_the_output_weights_loss_and_metrics_as_keras(rng):
    """Sequence tagging on padded sequences: padded steps count in neither the loss (the mean
    over valid steps) nor the accuracy, and get no gradient."""
    fastnn.utils.set_random_seed(2)
    model = fastnn.Sequential([layers.Input((6,), dtype="int32"), layers.Embedding(10, 4, mask_zero=True),
                               layers.LSTM(5, return_sequences=True),
                               layers.TimeDistributed(layers.Dense(3, activation="softmax"))])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = pad_sequences([[1, 2, 3], [4, 5, 6, 7, 8, 9], [2, 2]], maxlen=6)
    y = rng.integers(0, 3, size=(3, 6))
    valid = x != 0
    p = model.predict(x)
    picked = np.take_along_axis(p, y[..., None], axis=-1)[..., 0]
    loss, accuracy = model.evaluate(x, y, batch_size=3, verbose=0)
    assert loss == pytest.approx(float(np.mean(-np.log(picked[valid]))), rel=1e-5)
    assert accuracy == pytest.approx(float(np.mean(np.argmax(p, -1)[valid] == y[valid])))
    # the padded targets do not matter to training either
    y2 = y.copy()
    y2[~valid] = (y2[~valid] + 1) % 3
    weights = model.get_weights()
    first = model.train_on_batch(x, y)
    after_first = model.get_weights()
    model.set_weights(weights)
    model.optimizer = None
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    second = model.train_on_batch(x, y2)
    assert first == pytest.approx(second)
    for a, b in zip(after_first, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_masking_layer_skips_all_zero_steps(rng):
    x = rng.standard_normal((3, 6, 2))
    x[0, :2] = 0  # leading padding
    x[1, 4:] = 0  # trailing padding
    x[2, 3] = 0   # a gap
    model = fastnn.Sequential([layers.Masking(0.0, input_shape=(6, 2), dtype="float64"),
                               layers.GRU(4, return_sequences=True, dtype="float64")])
    got = model.predict(x)
    gru = model.layers[1]
    want = reference_for(gru, x, mask=np.any(x != 0, axis=-1))[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # (the mask is not differentiable at the masked steps: check the gradient's definition)
    masking = layers.Masking(0.0, dtype="float64")
    masking(x)
    y, cache = masking.forward(x, training=True)
    np.testing.assert_array_equal(y, x * np.any(x != 0, axis=-1, keepdims=True))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(masking.backward(cache, dy), dy * np.any(x != 0, axis=-1, keepdims=True))
    assert masking._may_produce_mask()


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_forward_and_gradients(rng, merge_mode, return_sequences):
    layer = layers.Bidirectional(layers.GRU(3, return_sequences=return_sequences, dtype="float64"),
                                 merge_mode=merge_mode)
    x = rng.standard_normal((2, 4, 3))
    y = layer(x)
    y_f = reference_for(layer.forward_layer, x)[0]
    y_b = reference_for(layer.backward_layer, x)[0]
    if return_sequences:
        y_b = y_b[:, ::-1]  # back in input order
    else:
        y_f, y_b = y_f[:, -1], y_b[:, -1]
    want = {"concat": np.concatenate([y_f, y_b], -1), "sum": y_f + y_b, "mul": y_f * y_b,
            "ave": (y_f + y_b) / 2, None: [y_f, y_b]}[merge_mode]
    if merge_mode is None:
        for a, b in zip(y, want):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        return
    np.testing.assert_allclose(y, want, rtol=1e-12)
    assert len(layer.weights) == 6
    check_gradients(layer, x, rng, expect_weights=6)


@pytest.mark.parametrize("merge_mode", ["concat", None])
@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU])
def test_bidirectional_states_in_and_out(rng, merge_mode, cls):
    """return_state: [merged output(s), forward states, backward states]; initial_state: the
    forward layer's states then the backward layer's; backward: [dx, their gradients]."""
    layer = layers.Bidirectional(cls(3, return_sequences=True, return_state=True, dtype="float64"),
                                 merge_mode=merge_mode)
    n = 2 if cls is layers.LSTM else 1
    x = rng.standard_normal((2, 4, 3))
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool)
    initial = [rng.standard_normal((2, 3)) for _ in range(2 * n)]
    out = layer(x, mask=mask, initial_state=initial)
    n_out = 2 if merge_mode is None else 1
    assert len(out) == n_out + 2 * n
    assert layer.compute_output_shape((None, 4, 3)) == [(None, 4, 6 if merge_mode else 3)] * n_out + [(None, 3)] * 2 * n
    assert layer.compute_mask(x, mask)[n_out:] == [None] * 2 * n
    f_out, *f_states = reference_for(layer.forward_layer, x, mask=mask, initial=initial[:n])
    b_out, *b_states = reference_for(layer.backward_layer, x, mask=mask, initial=initial[n:])
    for got, want in zip(out[n_out:], f_states + b_states):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    merged = [f_out, b_out[:, ::-1]] if merge_mode is None else [np.concatenate([f_out, b_out[:, ::-1]], -1)]
    for got, want in zip(out, merged):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # gradients of every output, the weights and the initial states
    out, cache = layer.forward(x, training=True, mask=mask, initial_state=initial)
    ds = [rng.standard_normal(o.shape) for o in out]
    ds[n_out] = None  # an output without a gradient (the forward layer's h)
    dx, *d_initial = layer.backward(cache, ds)
    grads = [g.copy() for g in layer.grads]

    def loss():
        outs, _ = layer.forward(x, mask=mask, initial_state=initial)
        return sum(float(np.sum(o * d)) for o, d in zip(outs, ds) if d is not None)

    assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)
    for state, g in zip(initial, d_initial):
        assert_gradient(g, _numeric_gradient(loss, state), "initial state")
    layer.backward(cache, ds, accumulate=True)
    for g, twice in zip(grads, layer.grads):
        np.testing.assert_allclose(twice, 2 * g, rtol=1e-13, atol=1e-15)
    assert layer.backward(cache, ds, need_input_grad=False) == [None] * (1 + 2 * n)


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU, layers.SimpleRNN])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("with_initial", [False, True])
def test_zero_output_for_mask_is_keras(rng, cls, return_sequences, go_backwards, with_initial):
    """Keras (backend.rnn): a masked step outputs where(is_masked, zeros, output_t) and carries
    the states; the last output is outputs[-1], zeros when the last processed step is masked.
    Unmasked steps and the final states are those of zero_output_for_mask=False."""
    layer = cls(3, return_sequences=return_sequences, go_backwards=go_backwards, return_state=True,
                zero_output_for_mask=True, dtype="float64")
    assert layer.zero_output_for_mask is True and cls(3).zero_output_for_mask is False  # Keras' default
    x = rng.standard_normal((4, 5, 2))
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], bool)
    n = 2 if cls is layers.LSTM else 1
    initial = [rng.standard_normal((4, 3)) for _ in range(n)] if with_initial else None
    out, *states = layer(x, mask=mask, initial_state=initial)
    want, *want_states = reference_for(layer, x, mask=mask, initial=initial)
    np.testing.assert_allclose(out, want if return_sequences else want[:, -1], rtol=1e-12, atol=1e-15)
    for got, w in zip(states, want_states):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-15)
    processing = mask[:, ::-1] if go_backwards else mask
    plain = cls.from_config({**layer.get_config(), "zero_output_for_mask": False})
    plain(x[:1])
    plain.set_weights(layer.get_weights())
    before, *plain_states = plain(x, mask=mask, initial_state=initial)
    if return_sequences:
        np.testing.assert_array_equal(out[~processing], 0)
        np.testing.assert_array_equal(out[processing], before[processing])  # unmasked steps unchanged
    else:
        np.testing.assert_array_equal(out[~processing[:, -1]], 0)
        np.testing.assert_array_equal(out[processing[:, -1]], before[processing[:, -1]])
    for a, b in zip(states, plain_states):
        np.testing.assert_array_equal(a, b)
    # gradients (dx, every weight, the initial states) against central differences
    outs, cache = layer.forward(x, training=True, mask=mask, initial_state=initial)
    ds = [rng.standard_normal(o.shape) for o in outs]
    grads_in = layer.backward(cache, ds)
    dx, d_initial = (grads_in[0], grads_in[1:]) if with_initial else (grads_in, [])
    grads = [g.copy() for g in layer.grads]

    def loss():
        ys, _ = layer.forward(x, mask=mask, initial_state=initial)
        return sum(float(np.sum(o * d)) for o, d in zip(ys, ds))

    assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)
    for state, g in zip(initial or [], d_initial):
        assert_gradient(g, _numeric_gradient(loss, state), "initial state")
    assert cls.from_config(layer.get_config()).zero_output_for_mask is True


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_sets_zero_output_for_mask_as_keras(rng, return_sequences):
    """Keras' Bidirectional forces zero_output_for_mask = return_sequences on both layers (a
    given backward_layer too), so a masked step's merged output is zeros."""
    layer = layers.Bidirectional(layers.GRU(3, return_sequences=return_sequences, dtype="float64"),
                                 backward_layer=layers.GRU(3, return_sequences=return_sequences, go_backwards=True,
                                                           zero_output_for_mask=not return_sequences,
                                                           dtype="float64"))
    assert layer.forward_layer.zero_output_for_mask is return_sequences
    assert layer.backward_layer.zero_output_for_mask is return_sequences
    x = rng.standard_normal((3, 5, 2))
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], bool)
    y = layer(x, mask=mask)
    f_out = reference_for(layer.forward_layer, x, mask=mask)[0]
    b_out = reference_for(layer.backward_layer, x, mask=mask)[0]
    if return_sequences:
        np.testing.assert_allclose(y, np.concatenate([f_out, b_out[:, ::-1]], -1), rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(y[~mask], 0)
    else:  # the last outputs: each direction's last unmasked step's
        np.testing.assert_allclose(y, np.concatenate([f_out[:, -1], b_out[:, -1]], -1), rtol=1e-12, atol=1e-15)
        assert np.all(np.abs(y) > 0)
    clone = roundtrip(layer, x)
    assert clone.forward_layer.zero_output_for_mask is return_sequences


def test_a_bidirectional_lstm_after_mask_zero_outputs_zeros_at_padded_steps(rng):
    """Embedding(mask_zero=True) -> Bidirectional(LSTM(return_sequences=True)) -> Dense: the
    Bidirectional output is zeros at padded steps (Keras), the rest is what each sequence gives
    alone; the model trains and the padded targets do not matter."""
    fastnn.utils.set_random_seed(4)
    inputs = fastnn.Input((None,), dtype="int32")
    hidden = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bi")(
        layers.Embedding(12, 3, mask_zero=True)(inputs))
    outputs = layers.Dense(2, activation="softmax")(hidden)
    model = fastnn.Model(inputs, outputs)
    seqs = [[3, 4, 5], [7, 1, 9, 2, 8, 11], [6]]
    x = pad_sequences(seqs, maxlen=6, padding="post")
    padded = x == 0
    bi = fastnn.Model(inputs, hidden)
    h = bi.predict(x, verbose=0)
    np.testing.assert_array_equal(h[padded], 0)
    assert np.all(np.any(h[~padded] != 0, axis=-1))
    for i, s in enumerate(seqs):  # the valid steps: as the unpadded sequence alone
        alone = bi.predict(np.array([s]), verbose=0)[0]
        np.testing.assert_allclose(h[i, :len(s)], alone, rtol=2e-6, atol=1e-7)
    model.compile("adam", "sparse_categorical_crossentropy")
    y = rng.integers(0, 2, size=x.shape)
    y2 = np.where(padded, 1 - y, y)
    weights = model.get_weights()
    first = model.train_on_batch(x, y)
    after = model.get_weights()
    model.set_weights(weights)
    model.compile("adam", "sparse_categorical_crossentropy")
    assert model.train_on_batch(x, y2) == pytest.approx(first)
    for a, b in zip(after, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_recurrent_layer_given_a_mask_tensor_passes_its_gradient_back(rng):
    """A mask given as a tensor argument in a model (a node with two input tensors) gives the
    gradient to the sequence, not row by row (graph backward)."""
    x_in, m_in = fastnn.Input((4, 2), dtype="float64"), fastnn.Input((4,), dtype="float64")
    dense = layers.Dense(3, dtype="float64")
    lstm = layers.LSTM(2, dtype="float64")
    model = fastnn.Model([x_in, m_in], lstm(dense(x_in), mask=m_in))
    model.compile(fastnn.optimizers.SGD(1.0), "mse")
    x, m = rng.standard_normal((3, 4, 2)), np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], np.float64)
    y = rng.standard_normal((3, 2))

    def reference_loss():
        z = x @ dense.kernel.value + dense.bias.value
        return float(np.mean((reference_for(lstm, z, mask=m != 0)[0][:, -1] - y) ** 2))

    kernel = dense.kernel.value.copy()
    fd = _numeric_gradient(reference_loss, dense.kernel.value)
    model.train_on_batch([x, m], y)
    np.testing.assert_allclose(dense.kernel.value, kernel - fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls,extra", FORMS, ids=FORM_IDS)
def test_stateful_halves_equal_the_whole_and_reset_states_restores_zeros(rng, cls, extra):
    """Keras' stateful=True: each batch row's final states start that row in the next call, so a
    sequence run in two halves is the sequence run whole; reset_state() (and Keras' alias
    reset_states()) sets them to zeros; the states' gradients stay in their call."""
    layer = cls(4, stateful=True, return_sequences=True, dtype="float64", **extra)
    x = rng.standard_normal((3, 8, 2))
    mask = rng.random((3, 8)) < 0.8
    mask[:, 4] = True  # (a call's masked steps before its first unmasked one output zeros, as Keras)
    first, second = layer(x[:, :4], mask=mask[:, :4]), layer(x[:, 4:], mask=mask[:, 4:])
    whole, *states = reference_for(layer, x, mask=mask)
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, rtol=1e-12, atol=1e-15)
    for got, want in zip(layer.states, states):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert len(layer.states) == (2 if cls is layers.LSTM else 1)
    for reset in (layer.reset_states, layer.reset_state):
        reset()
        for state in layer.states:
            np.testing.assert_array_equal(state, np.zeros((3, 4)))
        np.testing.assert_allclose(layer(x[:, :4], mask=mask[:, :4]), first, rtol=1e-15, atol=0)
    # backward of a call that started from carried states: dx and the weights, no state gradients
    carried = [np.array(s) for s in layer.states]
    x2 = np.ascontiguousarray(x[:, 4:])
    y, cache = layer.forward(x2, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(cache, dy)
    grads = [g.copy() for g in layer.grads]

    def loss():
        layer.states = [np.array(s) for s in carried]
        return float(np.sum(layer.forward(x2)[0] * dy))

    assert_gradient(dx, _numeric_gradient(loss, x2), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)
    assert not any("state" in w.name for w in layer.weights)  # the states are not weights (Keras)
    clone = cls.from_config(layer.get_config())
    assert clone.stateful is True and getattr(clone, "reset_after", None) == getattr(layer, "reset_after", None)


def test_stateful_needs_a_fixed_batch_size():
    x = np.zeros((3, 4, 2))
    layer = layers.LSTM(2, stateful=True)
    layer(x)
    with pytest.raises(ValueError, match=r"stateful=True keeps states for a batch size of 3; got inputs of shape "
                                         r"\(2, 4, 2\)"):
        layer(x[:2])
    inputs = fastnn.Input((4, 2))
    with pytest.raises(ValueError, match=r"stateful=True needs a fixed batch size \(give Input\(batch_size=...\), or "
                                         r"batch_size=... to the layer\); got input shape \(None, 4, 2\)"):
        layers.GRU(3, stateful=True)(inputs)
    fixed = layers.GRU(3, stateful=True)
    fixed(fastnn.Input((4, 2), batch_size=5))
    assert fixed._expected_batch_size == 5
    own = layers.SimpleRNN(3, stateful=True, batch_size=6)
    own(inputs)
    assert own._expected_batch_size == 6
    with pytest.raises(AttributeError, match=r"reset_state\(\) needs a stateful layer"):
        layers.Bidirectional(layers.LSTM(2)).reset_state()
    with pytest.raises(ValueError, match="'backward_layer' must have the stateful of 'layer'"):
        layers.Bidirectional(layers.LSTM(2, stateful=True), backward_layer=layers.LSTM(2, go_backwards=True))


def test_stateful_fit_with_shuffle_false_carries_the_states_across_batches(rng):
    """fit(shuffle=False) runs the batches in order and carries each row's states from batch to
    batch: the same weights and states as train_on_batch on each batch in turn; with a zero
    learning rate the states are the NumPy reference run batch after batch."""
    def make():
        fastnn.utils.set_random_seed(7)
        inputs = fastnn.Input((5, 2), batch_size=2, dtype="float64")
        lstm = layers.LSTM(3, stateful=True, dtype="float64")
        model = fastnn.Model(inputs, layers.Dense(1, dtype="float64")(lstm(inputs)))
        return model, lstm

    x, y = rng.standard_normal((6, 5, 2)), rng.standard_normal((6, 1))
    fitted, lstm = make()
    fitted.compile(fastnn.optimizers.SGD(0.1), "mse")
    fitted.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    by_hand, lstm2 = make()
    by_hand.compile(fastnn.optimizers.SGD(0.1), "mse")
    for start in range(0, 6, 2):
        by_hand.train_on_batch(x[start:start + 2], y[start:start + 2])
    for a, b in zip(fitted.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    for a, b in zip(lstm.states, lstm2.states):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    frozen, lstm = make()
    frozen.compile(fastnn.optimizers.SGD(0.0), "mse")
    frozen.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    h = c = np.zeros((2, 3))
    for start in range(0, 6, 2):
        _, h, c = reference_for(lstm, x[start:start + 2], initial=[h, c])
    np.testing.assert_allclose(lstm.states[0], h, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lstm.states[1], c, rtol=1e-12, atol=1e-15)
    lstm.reset_states()
    np.testing.assert_array_equal(lstm.states[0], 0)


def test_a_stateful_bidirectional_carries_both_directions(rng):
    layer = layers.Bidirectional(layers.GRU(3, stateful=True, dtype="float64"))
    x = rng.standard_normal((2, 4, 2))
    first = layer(x)
    assert layer.stateful and len(layer.states) == 2
    fwd, *f_states = reference_for(layer.forward_layer, x)
    bwd, *b_states = reference_for(layer.backward_layer, x)
    np.testing.assert_allclose(layer.states[0], f_states[0], rtol=1e-12)
    np.testing.assert_allclose(layer.states[1], b_states[0], rtol=1e-12)
    second = layer(x)
    want = np.concatenate([reference_for(layer.forward_layer, x, initial=f_states)[0][:, -1],
                           reference_for(layer.backward_layer, x, initial=b_states)[0][:, -1]], -1)
    np.testing.assert_allclose(second, want, rtol=1e-12, atol=1e-15)
    layer.reset_states()
    np.testing.assert_allclose(layer(x), first, rtol=1e-15, atol=0)


def test_time_distributed_checks_the_mask_and_hands_each_step_its_slice(rng):
    """Keras' TimeDistributed: the mask must start with the input's (batch, timesteps); it is the
    output's mask; an inner layer with a mask argument gets mask[:, t] at step t."""
    x = rng.standard_normal((2, 3, 4, 2))  # (batch, timesteps, inner steps, features)
    mask = rng.random((2, 3, 4)) < 0.6
    layer = layers.TimeDistributed(layers.LSTM(3, return_sequences=True, dtype="float64"))
    y = layer(x, mask=mask)
    for t in range(3):
        want = reference_for(layer.layer, x[:, t], mask=mask[:, t])[0]
        np.testing.assert_allclose(y[:, t], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(layer.compute_mask(x, mask), mask)
    # backward with the mask against central differences
    y, cache = layer.forward(x, training=True, mask=mask)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(cache, dy)
    grads = [g.copy() for g in layer.grads]

    def loss():
        return float(np.sum(layer.forward(x, mask=mask)[0] * dy))

    assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)
    dense = layers.TimeDistributed(layers.Dense(2, dtype="float64"))  # no mask argument: the mask only passes on
    np.testing.assert_array_equal(dense(x[..., 0], mask=mask[..., 0]), dense(x[..., 0]))
    with pytest.raises(ValueError, match=r"'mask' must have at least 2 axes \(batch, timesteps\), got shape \(2,\)"):
        layer(x, mask=mask[:, 0, 0])
    with pytest.raises(ValueError, match=r"'mask' must start with the input's \(batch, timesteps\) = \(2, 3\), got "
                                         r"shape \(2, 4\)"):
        dense(x[..., 0], mask=mask[:, 0])


def test_the_layers_keras_makes_mask_aware_carry_an_embedding_mask_to_a_recurrent_layer(rng, float64):
    """Embedding(mask_zero=True) -> ReLU -> PReLU -> Dense -> Dropout -> ELU -> LeakyReLU ->
    Activation -> Identity -> TimeDistributed(Dense) -> GRU: the padding is skipped (each
    sample's output is that of its unpadded sequence alone). A Reshape drops the mask (Keras)."""
    fastnn.utils.set_random_seed(5)
    stack = [layers.Embedding(10, 3, mask_zero=True), layers.ReLU(), layers.PReLU(shared_axes=[1]),
             layers.Dense(4), layers.Dropout(0.3), layers.ELU(), layers.LeakyReLU(), layers.Activation("tanh"),
             layers.Identity(), layers.TimeDistributed(layers.Dense(3)), layers.GRU(2)]
    model = fastnn.Sequential([layers.Input((None,), dtype="int32")] + stack)
    seqs = [[3, 4, 5], [7, 1, 9, 2, 8], [6]]
    got = model.predict(pad_sequences(seqs, maxlen=6, padding="post"), verbose=0)
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(got[i], model.predict(np.array([seq]), verbose=0)[0], rtol=1e-12, atol=1e-15)
    gru = layers.GRU(2)
    dropped = fastnn.Sequential([layers.Input((6,), dtype="int32"), layers.Embedding(10, 3, mask_zero=True),
                                 layers.Reshape((6, 3)), gru])
    x = pad_sequences(seqs, maxlen=6, padding="post")
    emb = dropped.layers[0].get_weights()[0]
    want = reference_for(gru, emb[x])[0][:, -1]  # every step, padding included
    np.testing.assert_allclose(dropped.predict(x, verbose=0), want, rtol=1e-12, atol=1e-15)


def test_time_distributed_dense(rng):
    layer = layers.TimeDistributed(layers.Dense(4, activation="tanh", dtype="float64"))
    x = rng.standard_normal((3, 5, 2))
    y = layer(x)
    np.testing.assert_allclose(y, np.tanh(x @ layer.layer.kernel.numpy() + layer.layer.bias.numpy()), rtol=1e-12)
    assert layer.output_shape == (None, 5, 4)
    check_gradients(layer, x, rng, expect_weights=2)


@pytest.mark.parametrize("make", [
    lambda: layers.LSTM(4, return_sequences=True, go_backwards=True, dtype="float64"),
    lambda: layers.GRU(4, recurrent_activation="tanh", dtype="float64"),
    lambda: layers.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True, dtype="float64"),
    lambda: layers.SimpleRNN(4, activation="relu", dtype="float64"),
    lambda: layers.Bidirectional(layers.LSTM(4, return_sequences=True, dtype="float64"), merge_mode="sum"),
    lambda: layers.TimeDistributed(layers.Dense(3, dtype="float64")),
])
def test_config_roundtrip(rng, make):
    layer, x = make(), rng.standard_normal((2, 3, 5))
    layer(x)
    roundtrip(layer, x)


def test_model_with_recurrent_layers_saves_and_loads(rng, tmp_path):
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([layers.Embedding(30, 6, mask_zero=True, input_length=7),
                               layers.Bidirectional(layers.LSTM(5, return_sequences=True)),
                               layers.TimeDistributed(layers.Dense(3)), layers.GRU(4, return_sequences=True),
                               layers.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid"),
                               layers.Dense(2)])
    model.compile("adam", "mse")
    x = rng.integers(0, 30, size=(16, 7))
    model.fit(x, rng.standard_normal((16, 2)), epochs=1, verbose=0)
    path = tmp_path / "rnn.fastnn"
    model.save(path)
    loaded = fastnn.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_dropout_is_seeded_training_only_and_reproducible(rng):
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    layer = layers.LSTM(5, dropout=0.5, recurrent_dropout=0.5, seed=1)
    inference = layer(x)
    np.testing.assert_array_equal(layer(x), inference)  # no dropout at inference
    a = layer(x, training=True)
    assert not np.allclose(a, inference)
    other = layers.LSTM(5, dropout=0.5, recurrent_dropout=0.5, seed=1)
    other(x)
    other.set_weights(layer.get_weights())
    layer2 = layers.LSTM(5, dropout=0.5, recurrent_dropout=0.5, seed=1)
    layer2(x)
    layer2.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer2(x, training=True), a)  # the same seed, the same masks


@pytest.mark.parametrize("reset_after", [True, False])
def test_recurrent_dropout_gradients(rng, reset_after):
    """With fixed masks (a seeded layer reseeded before each pass) the gradients are exact."""
    layer = layers.GRU(3, dropout=0.3, recurrent_dropout=0.3, seed=5, dtype="float64", reset_after=reset_after)
    x = rng.standard_normal((2, 4, 3))
    layer(x)

    def run():
        layer._generator = np.random.default_rng(5)
        return layer.forward(x, training=True)

    y, cache = run()
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(cache, dy)
    grads = [g.copy() for g in layer.grads]

    def loss():
        return float(np.sum(run()[0] * dy))

    assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), var.name)


def encoder_decoder(dtype="float32", units=12, steps=6, out_steps=3):
    """Keras' encoder-decoder: the encoder LSTM's final states start the decoder LSTM, whose
    inputs are zeros: what it outputs can only come through the states."""
    encoder_inputs = fastnn.Input((steps, 2), dtype=dtype)
    decoder_inputs = fastnn.Input((out_steps, 1), dtype=dtype)
    encoder = layers.LSTM(units, return_state=True, dtype=dtype, name="encoder")
    _, state_h, state_c = encoder(encoder_inputs)
    decoder = layers.LSTM(units, return_sequences=True, dtype=dtype, name="decoder")
    decoded = decoder(decoder_inputs, initial_state=[state_h, state_c])
    outputs = layers.Dense(1, dtype=dtype)(decoded)
    return fastnn.Model([encoder_inputs, decoder_inputs], outputs), encoder, decoder


def test_encoder_states_initialise_a_decoder_in_a_functional_model(rng, tmp_path):
    fastnn.utils.set_random_seed(0)
    x = rng.uniform(-1, 1, (512, 6, 2)).astype(np.float32)
    zeros = np.zeros((512, 3, 1), np.float32)
    # decoder step k outputs the mean of the encoder's feature 0 over the first 2k+2 steps
    y = np.stack([x[:, :2 * k + 2, 0].mean(axis=1) for k in range(3)], axis=1)[..., None]
    model, encoder, decoder = encoder_decoder()
    assert len(encoder.output) == 3 and encoder.output[1].shape == (None, 12)
    model.compile(fastnn.optimizers.Adam(1e-2), "mse")
    baseline = float(np.mean((y - y.mean()) ** 2))
    history = model.fit([x, zeros], y, batch_size=32, epochs=40, verbose=0)
    assert history.history["loss"][-1] < 0.05 * baseline
    # the decoder's outputs are its step loop started from the encoder's states
    _, h, c = encoder(x[:4])
    got = model.predict([x[:4], zeros[:4]])
    decoded = reference_for(decoder, zeros[:4], initial=[h, c])[0]
    dense = model.layers[-1]
    np.testing.assert_allclose(got, decoded @ dense.kernel.numpy() + dense.bias.numpy(), rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "seq2seq.fastnn")  # the states' connections are saved too
    loaded = fastnn.models.load_model(tmp_path / "seq2seq.fastnn")
    np.testing.assert_array_equal(loaded.predict([x[:4], zeros[:4]]), got)

    # float64: central differences of an encoder weight reached only through the states
    model64, encoder64, _ = encoder_decoder("float64")
    model64.set_weights(model.get_weights())
    xe, xd = x[:5].astype(np.float64), rng.standard_normal((5, 3, 1))
    out, tape = model64.forward([xe, xd], training=True)
    dy = rng.standard_normal(out.shape)
    model64.backward(tape, dy)
    got = encoder64.recurrent_kernel.grad.copy()
    assert np.abs(got).max() > 1e-3

    def loss():
        return float(np.sum(model64.forward([xe, xd])[0] * dy))

    assert_gradient(got, _numeric_gradient(loss, encoder64.recurrent_kernel.value), "encoder recurrent kernel")


def test_recurrent_layers_in_a_graph_shared_with_states_and_masks(rng):
    """One graph: an LSTM shared by two inputs (its weight gradients add up), a Bidirectional
    GRU's states (a multi-output node) added to the shared LSTM's output to start a GRU over a
    masked embedding. Central differences of every weight and input."""
    d = "float64"
    a, b = fastnn.Input((5, 3), dtype=d), fastnn.Input((5, 3), dtype=d)
    ids = fastnn.Input((4,), dtype="int32")
    shared = layers.LSTM(4, dtype=d)
    h_a, h_b = shared(a), shared(b)
    merged, h_f, h_r = layers.Bidirectional(layers.GRU(4, return_state=True, dtype=d), merge_mode="sum")(a)
    embedded = layers.Embedding(6, 3, mask_zero=True, dtype=d)(ids)
    decoded = layers.GRU(4, return_sequences=True, dtype=d)(embedded, initial_state=[layers.Add()([h_f, h_a])])
    outputs = layers.Concatenate()([layers.Flatten()(decoded), h_b, merged, h_r])
    model = fastnn.Model([a, b, ids], outputs)
    xa, xb = rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 5, 3))
    xi = np.array([[0, 1, 2, 3], [4, 5, 0, 0], [0, 0, 0, 0]])
    out, tape = model.forward([xa, xb, xi], training=True)
    dy = rng.standard_normal(out.shape)
    dxa, dxb, _ = model.backward(tape, dy)
    grads = {v.name: v.grad.copy() for v in model.trainable_weights}
    assert len(grads) == 13

    def loss():
        return float(np.sum(model.forward([xa, xb, xi])[0] * dy))

    assert_gradient(dxa, _numeric_gradient(loss, xa), "dx a")
    assert_gradient(dxb, _numeric_gradient(loss, xb), "dx b")
    for var in model.trainable_weights:
        assert_gradient(grads[var.name], _numeric_gradient(loss, var.value), var.name)


def test_a_symbolic_mask_before_the_initial_state(rng):
    d = "float64"
    x, h, m = fastnn.Input((5, 3), dtype=d), fastnn.Input((4,), dtype=d), fastnn.Input((5,), dtype=d)
    y = layers.GRU(4, dtype=d)(x, mask=fastnn.ops.greater(m, 0.5), initial_state=[h])
    model = fastnn.Model([x, h, m], y)
    xa, ha = rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 4))
    ma = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 0, 0]], float)
    out, tape = model.forward([xa, ha, ma], training=True)
    dy = rng.standard_normal(out.shape)
    dxa, dha, _ = model.backward(tape, dy)

    def loss():
        return float(np.sum(model.forward([xa, ha, ma])[0] * dy))

    assert_gradient(dxa, _numeric_gradient(loss, xa), "dx")
    assert_gradient(dha, _numeric_gradient(loss, ha), "dh0")


def order_task(rng, n, vocab=20, maxlen=32):
    """Random token sequences with markers 1 and 2 once each: is 1 before 2? Word counts alone
    cannot tell."""
    seqs, labels = [], []
    for _ in range(n):
        length = rng.integers(5, maxlen + 1)
        s = rng.integers(3, vocab + 1, size=length)
        i, j = rng.choice(length, 2, replace=False)
        s[i], s[j] = 1, 2
        seqs.append(list(s))
        labels.append(int(i < j))
    return pad_sequences(seqs, maxlen=maxlen), np.array(labels)


def test_seed_bidirectional_lstm_learns_an_order_dependent_task():
    rng = np.random.default_rng(0)
    vocab, maxlen, dim = 20, 32, 16
    x, y = order_task(rng, 3000, vocab, maxlen)
    x_test, y_test = order_task(rng, 1000, vocab, maxlen)
    fastnn.utils.set_random_seed(1)
    model = fastnn.Sequential([
        layers.Embedding(vocab + 1, dim, input_length=maxlen),
        layers.Bidirectional(layers.LSTM(units=dim, dropout=0.2)),
        layers.Dense(units=64, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Dense(units=1, activation="sigmoid"),
    ])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.95
    # the same data without order (mean of the embeddings) stays near chance
    bag = fastnn.Sequential([layers.Embedding(vocab + 1, dim, input_length=maxlen),
                             layers.GlobalAveragePooling1D(), layers.Dense(64, activation="relu"),
                             layers.Dense(1, activation="sigmoid")])
    bag.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    bag.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert bag.evaluate(x_test, y_test, verbose=0)[1] < 0.7


@pytest.mark.skipif(not os.path.exists(MNIST1D), reason="MNIST-1D is not in ../shared/data")
def test_bidirectional_gru_on_mnist1d():
    data = np.load(MNIST1D)
    x, y = data["x"][..., None], data["y"]
    x_test, y_test = data["x_test"][..., None], data["y_test"]
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([layers.Input((40, 1)), layers.Bidirectional(layers.GRU(6, return_sequences=True)),
                               layers.Flatten(), layers.Dense(10)])
    model.compile(fastnn.optimizers.Adam(1e-2), fastnn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=100, epochs=25, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.85


def test_gru_reset_after_false_is_bit_identical_on_one_and_two_threads(rng, threads):
    # batch 32: each thread runs its own slice of the batch; batch 6 with 1024 units: every
    # step's products and gate maths are shared out instead.
    for batch, units in ((32, 64), (6, 1024)):
        x = rng.standard_normal((batch, 7, 5)).astype(np.float32)
        mask = rng.random((batch, 7)) < 0.8
        h0 = rng.standard_normal((batch, units)).astype(np.float32)
        layer = layers.GRU(units, reset_after=False, return_sequences=True, recurrent_dropout=0.2, seed=3)
        layer(x)
        dy = rng.standard_normal((batch, 7, units)).astype(np.float32)
        results = []
        for n in (1, 2):
            threads(n)
            layer._generator = np.random.default_rng(9)  # the same recurrent dropout mask
            y, cache = layer.forward(x, training=True, mask=mask, initial_state=[h0])
            dx, dh0 = layer.backward(cache, dy)
            results.append([y, dx, dh0] + [np.array(g) for g in layer.grads])
        for a, b in zip(*results):
            assert a.tobytes() == b.tobytes()


def test_a_gru_reset_after_false_model_trains(rng):
    """Keras 2's GRU (reset_after=False, hard_sigmoid gates) learns a running sum's sign."""
    x = rng.standard_normal((512, 12, 2)).astype(np.float32)
    y = (x[..., 0].sum(1) > 0).astype(np.float32)[:, None]
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([layers.Input((12, 2)),
                               layers.GRU(16, reset_after=False, recurrent_activation="hard_sigmoid"),
                               layers.Dense(1, activation="sigmoid")])
    model.compile(fastnn.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert model.evaluate(x, y, verbose=0)[1] >= 0.9


@pytest.mark.parametrize("cls,extra", FORMS, ids=FORM_IDS)
def test_keras_2_style_activations_are_keras(rng, cls, extra):
    """recurrent_activation="hard_sigmoid" (Keras 2 scripts; Keras 3's relu6(x + 3)/6), given by
    name or as the fastnn.activations function, with a softsign activation: Keras' formulas."""
    gates = {"recurrent_activation": fastnn.activations.hard_sigmoid} if cls is not layers.SimpleRNN else {}
    layer = cls(4, activation="softsign", return_sequences=True, dtype="float64", **gates, **extra)
    x = rng.standard_normal((3, 6, 2)) * 3
    y = layer(x)
    assert layer.get_config()["activation"] == "softsign"
    if gates:
        assert layer.get_config()["recurrent_activation"] == "hard_sigmoid"
    hard_sigmoid = lambda v: np.clip(v + 3, 0, 6) / 6  # noqa: E731
    f = REFERENCES[cls.__name__]
    kwargs = dict(activation=lambda v: v / (np.abs(v) + 1))
    if gates:
        kwargs["recurrent_activation"] = hard_sigmoid
    if extra:
        kwargs.update(extra)
    bias = layer.bias.numpy()
    want = f(x, layer.kernel.numpy(), layer.recurrent_kernel.numpy(), bias, **kwargs)[0]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
    check_gradients(layer, x, rng, expect_weights=3)


def test_activations_the_kernel_lacks_name_the_argument_and_the_choices():
    for bad in ("gelu", "swish", fastnn.activations.mish, lambda v: v):
        with pytest.raises(ValueError, match=r"LSTM: 'recurrent_activation' must be one of tanh, sigmoid, relu, "
                                             r"linear, hard_sigmoid, softsign, elu, selu, softplus, leaky_relu, "
                                             r"relu6, hard_tanh \(or None\)"):
            layers.LSTM(2, recurrent_activation=bad)
    with pytest.raises(ValueError, match=r"SimpleRNN: 'activation' must be one of .*hard_tanh"):
        layers.SimpleRNN(2, activation="gelu")
