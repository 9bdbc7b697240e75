"""Merging layers (python/fastnn/layers/merging.py) against NumPy, with float64 central finite
differences of every input's gradient, broadcasting, masks, function forms and bad shapes."""

import numpy as np
import pytest

import fastnn
from fastnn import layers
from finite_differences import numeric_gradient


def numeric_grads(layer, xs, dy):
    """Central differences of sum(layer(xs) * dy) with respect to each input."""
    return [numeric_gradient(lambda: float(np.sum(layer.forward(xs)[0] * dy)), x) for x in xs]


def check(layer, xs, reference, rng):
    xs = [np.ascontiguousarray(x, np.float64) for x in xs]
    y = layer(xs)
    np.testing.assert_allclose(y, reference(*xs), rtol=1e-12, atol=1e-12)
    y, cache = layer.forward(xs, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dxs = layer.backward(cache, dy)
    assert len(dxs) == len(xs)
    for dx, fd, x in zip(dxs, numeric_grads(layer, xs, dy), xs):
        assert dx.shape == x.shape and dx.dtype == x.dtype
        np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)
    return y


ELEMENTWISE = {
    "Add": (layers.Add, lambda *xs: sum(xs)),
    "Subtract": (layers.Subtract, lambda a, b: a - b),
    "Multiply": (layers.Multiply, lambda *xs: np.prod(np.broadcast_arrays(*xs), axis=0)),
    "Average": (layers.Average, lambda *xs: sum(xs) / len(xs)),
    "Maximum": (layers.Maximum, lambda *xs: np.max(np.broadcast_arrays(*xs), axis=0)),
    "Minimum": (layers.Minimum, lambda *xs: np.min(np.broadcast_arrays(*xs), axis=0)),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize("shapes", [[(4, 3), (4, 3)], [(2, 3, 5), (2, 3, 5), (2, 3, 5)], [(3, 4, 5), (3, 1, 5)],
                                    [(3, 4, 5), (3, 5)]], ids=str)
def test_elementwise_merges_match_numpy_and_finite_differences(rng, name, shapes):
    cls, reference = ELEMENTWISE[name]
    if name == "Subtract" and len(shapes) != 2:
        shapes = shapes[:2]
    xs = [rng.standard_normal(s) for s in shapes]
    aligned = [x if x.ndim == 3 or len(shapes[0]) == 2 else x[:, None, :] for x in xs]  # Keras: axes after batch

    def ref(*arrays):
        return reference(*[a if a.ndim == arrays[0].ndim else a[:, None, :] for a in arrays])

    y = check(cls(dtype="float64"), xs, ref, rng)
    assert y.shape == np.broadcast_shapes(*(a.shape for a in aligned))


def test_maximum_sends_the_gradient_to_the_first_of_tied_inputs():
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[1.0, 5.0, 0.0]])
    layer = layers.Maximum(dtype="float64")
    _, cache = layer.forward([a, b], training=True)
    da, db = layer.backward(cache, np.ones((1, 3)))
    np.testing.assert_array_equal(da, [[1, 0, 1]])
    np.testing.assert_array_equal(db, [[0, 1, 0]])


@pytest.mark.parametrize("axis,shapes", [(-1, [(3, 4), (3, 2)]), (1, [(2, 3, 4), (2, 5, 4)]),
                                         (2, [(2, 3, 1), (2, 3, 2), (2, 3, 3)])], ids=str)
def test_concatenate(rng, axis, shapes):
    xs = [rng.standard_normal(s) for s in shapes]
    check(layers.Concatenate(axis=axis, dtype="float64"), xs, lambda *a: np.concatenate(a, axis=axis), rng)


def _batch_dot_reference(x, y, axes, normalize):
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=axes[0], keepdims=True), 1e-7)
        y = y / np.maximum(np.linalg.norm(y, axis=axes[1], keepdims=True), 1e-7)
    out = []
    for a, b in zip(x, y):
        out.append(np.tensordot(a, b, axes=(axes[0] - 1, axes[1] - 1)))
    out = np.array(out)
    return out[:, None] if out.ndim == 1 else out


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("shapes,axes", [([(4, 5), (4, 5)], 1), ([(3, 4, 5), (3, 6, 5)], (2, 2)),
                                         ([(3, 4, 5), (3, 4, 6)], (1, 1)), ([(2, 5), (2, 3, 5)], (1, 2)),
                                         ([(2, 3, 4), (2, 4)], (-1, -1))], ids=str)
def test_dot(rng, shapes, axes, normalize):
    xs = [rng.standard_normal(s) for s in shapes]
    pair = axes if isinstance(axes, tuple) else (axes, axes)
    pair = (pair[0] % len(shapes[0]), pair[1] % len(shapes[1]))
    layer = layers.Dot(axes=axes, normalize=normalize, dtype="float64")
    y = check(layer, xs, lambda a, b: _batch_dot_reference(a, b, pair, normalize), rng)
    symbolic = layers.Dot(axes=axes, normalize=normalize)([fastnn.Input(s[1:]) for s in shapes])
    assert symbolic.shape == (None,) + y.shape[1:]


def test_dot_with_normalize_is_the_cosine_similarity(rng):
    a, b = rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    got = layers.Dot(axes=1, normalize=True, dtype="float64")([a, b])
    np.testing.assert_allclose(got[:, 0], cosine, rtol=1e-12)


@pytest.mark.parametrize("fn,cls", [(layers.add, layers.Add), (layers.subtract, layers.Subtract),
                                    (layers.multiply, layers.Multiply), (layers.average, layers.Average),
                                    (layers.maximum, layers.Maximum), (layers.minimum, layers.Minimum),
                                    (layers.concatenate, layers.Concatenate), (layers.dot, layers.Dot)])
def test_function_forms_make_the_layer(fn, cls):
    a, b = fastnn.Input((4,)), fastnn.Input((4,))
    out = fn([a, b])
    assert isinstance(out, fastnn.KerasTensor) and isinstance(out._keras_history[0], cls)
    x, y = np.ones((2, 4), np.float32), np.full((2, 4), 2.0, np.float32)
    np.testing.assert_allclose(fastnn.Model([a, b], out).predict([x, y]), cls(**({"axes": -1} if cls is layers.Dot
                                                                                  else {}))([x, y]))


def test_mismatched_shapes_are_a_clear_error_when_the_graph_is_built():
    a, b = fastnn.Input((4,), name="left"), fastnn.Input((5,), name="right")
    with pytest.raises(ValueError, match=r"Layer 'sum_of_branches' \(Add\) cannot be called on inputs of shape "
                                         r"\[\(None, 4\), \(None, 5\)\].*incompatible shapes"):
        layers.Add(name="sum_of_branches")([a, b])
    with pytest.raises(ValueError, match="must agree except on the concatenation axis"):
        layers.Concatenate(axis=1)([fastnn.Input((3, 4)), fastnn.Input((2, 5))])
    with pytest.raises(ValueError, match=r"the dot axes differ in size: 4 .* vs 5"):
        layers.Dot(axes=1)([a, b])
    with pytest.raises(ValueError, match="called on a list of tensors"):
        layers.Add()(a)
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        layers.Subtract()([a, a, a])
    with pytest.raises(ValueError, match="cannot include the batch axis"):
        layers.Dot(axes=0)([a, a])


def test_merge_masks_are_ored_and_concatenate_joins_them():
    x = np.ones((2, 3, 4))
    m1 = np.array([[1, 1, 0], [1, 0, 0]], bool)
    m2 = np.array([[0, 1, 0], [0, 0, 1]], bool)
    np.testing.assert_array_equal(layers.Add().compute_mask([x, x], [m1, m2]), m1 | m2)
    assert layers.Add().compute_mask([x, x], [m1, None]) is None
    joined = layers.Concatenate(axis=1).compute_mask([x, x], [m1, None])
    np.testing.assert_array_equal(joined, np.concatenate([m1, np.ones((2, 3), bool)], axis=1))


def test_configs_round_trip():
    for layer in (layers.Concatenate(axis=2), layers.Dot(axes=(1, 2), normalize=True), layers.Add(name="plus")):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config


def keras_concatenate_mask(inputs, masks, axis):
    """Concatenate.compute_mask (keras/src/layers/merging/concatenate.py): a missing mask is all
    True over its input; a mask with fewer axes gets a last axis broadcast to the input; the
    masks are joined along `axis` and reduced with any() over the last axis."""
    full = []
    for x, m in zip(inputs, masks):
        if m is None:
            m = np.ones(x.shape, bool)
        elif m.ndim < x.ndim:
            m = np.logical_or(m[..., None], np.zeros(x.shape, bool))
        full.append(m)
    return np.any(np.concatenate(full, axis=axis), axis=-1)


@pytest.mark.parametrize("cls", [layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum,
                                 layers.Minimum])
def test_elementwise_merge_masks_as_keras(rng, cls):
    """base_merge.compute_mask: None without masks or when any input has none, else the OR; a
    mask that is not a list, or not one per input, is a ValueError (Keras' checks)."""
    x = rng.standard_normal((2, 4, 3))
    m1, m2 = rng.random((2, 4)) < 0.5, rng.random((2, 4)) < 0.5
    layer = cls()
    assert layer.supports_masking
    np.testing.assert_array_equal(layer.compute_mask([x, x], [m1, m2]), m1 | m2)
    assert layer.compute_mask([x, x], [m1, None]) is None
    assert layer.compute_mask([x, x], None) is None
    with pytest.raises(ValueError, match=r"'mask' must be a list \(one mask or None per input\), got ndarray"):
        layer.compute_mask([x, x], m1)
    with pytest.raises(ValueError, match=r"'mask' must hold one entry per input \(2\), got 3"):
        layer.compute_mask([x, x], [m1, m2, m1])
    with pytest.raises(ValueError, match="'inputs' must be a list, got ndarray"):
        layer.compute_mask(x, [m1, m2])


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_mask_as_keras(rng, axis):
    a, b = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    m1, m2 = rng.random((2, 4)) < 0.5, rng.random((2, 4)) < 0.5
    layer = layers.Concatenate(axis=axis)
    for masks in ([m1, m2], [m1, None], [None, m2], [rng.random((2, 4, 3)) < 0.5, m2]):
        np.testing.assert_array_equal(layer.compute_mask([a, b], masks), keras_concatenate_mask([a, b], masks, axis))
    assert layer.compute_mask([a, b], [None, None]) is None
    with pytest.raises(ValueError, match="'mask' must hold one entry per input"):
        layer.compute_mask([a, b], [m1])


def test_dot_supports_masking_but_its_output_has_no_mask(rng):
    x = rng.standard_normal((2, 4))
    layer = layers.Dot(axes=1)
    assert layer.supports_masking  # Keras: True, and compute_mask returns None
    assert layer.compute_mask([x, x], [np.ones(2, bool), np.ones(2, bool)]) is None


def test_merged_embedding_masks_reach_a_recurrent_layer(rng):
    """Two padded sequences merged (Add: the OR; Concatenate along time: joined) feed an LSTM
    that skips exactly the steps Keras' merged mask says."""
    from rnn_reference import lstm_reference

    a_in, b_in = fastnn.Input((4,), dtype="int32"), fastnn.Input((4,), dtype="int32")
    emb_a = layers.Embedding(9, 3, mask_zero=True, dtype="float64")
    emb_b = layers.Embedding(9, 3, mask_zero=True, dtype="float64")
    ea, eb = emb_a(a_in), emb_b(b_in)
    a = np.array([[1, 2, 0, 0], [3, 0, 5, 0]])
    b = np.array([[0, 4, 6, 0], [0, 0, 0, 0]])
    va, vb = emb_a.get_weights()[0][a], emb_b.get_weights()[0][b]
    for merged, x, mask in ((layers.Add()([ea, eb]), va + vb, (a != 0) | (b != 0)),
                            (layers.Concatenate(axis=1)([ea, eb]), np.concatenate([va, vb], 1),
                             np.concatenate([a != 0, b != 0], 1))):
        lstm = layers.LSTM(2, return_sequences=True, dtype="float64")
        model = fastnn.Model([a_in, b_in], lstm(merged))
        want = lstm_reference(x, lstm.kernel.numpy(), lstm.recurrent_kernel.numpy(), lstm.bias.numpy(), mask=mask)[0]
        np.testing.assert_allclose(model.predict([a, b], verbose=0), want, rtol=1e-12, atol=1e-15)
