"""Shape layers (Permute, RepeatVector, Cropping1D/2D, Identity) and Lambda against NumPy, with
finite differences, symbolic shapes and clear errors."""

import numpy as np
import pytest

import fastnn
from fastnn import layers, ops
from finite_differences import numeric_gradient


def check(layer, x, reference, rng, rebuilt=True):
    """Forward against `reference`; backward against central differences of sum(y * dy); the layer
    rebuilt from its config (`rebuilt`) gives the right symbolic shape."""
    x = np.ascontiguousarray(x, np.float64)
    y = layer(x)
    np.testing.assert_allclose(y, reference(x), rtol=1e-12, atol=1e-12)
    y, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    np.testing.assert_allclose(dx, numeric_gradient(lambda: float(np.sum(layer(x) * dy)), x), rtol=1e-6, atol=1e-8)
    clone = type(layer).from_config(layer.get_config()) if rebuilt else layer
    assert clone(fastnn.Input(x.shape[1:])).shape == (None,) + y.shape[1:]
    return y


@pytest.mark.parametrize("dims", [(2, 1), (1, 3, 2), (3, 1, 2)], ids=str)
def test_permute(rng, dims):
    x = rng.standard_normal((2,) + tuple(range(3, 3 + len(dims))))
    check(layers.Permute(dims, dtype="float64"), x, lambda a: np.transpose(a, (0,) + dims), rng)


def test_repeat_vector(rng):
    x = rng.standard_normal((3, 4))
    check(layers.RepeatVector(5, dtype="float64"), x, lambda a: np.repeat(a[:, None], 5, axis=1), rng)


@pytest.mark.parametrize("cropping,expected", [((1, 2), (1, -2)), (1, (1, -1)), ((0, 1), (0, -1))], ids=str)
def test_cropping1d(rng, cropping, expected):
    x = rng.standard_normal((2, 7, 3))
    check(layers.Cropping1D(cropping, dtype="float64"), x, lambda a: a[:, expected[0]:7 + expected[1]], rng)


@pytest.mark.parametrize("cropping,rows,cols", [(((1, 0), (2, 1)), (1, 6), (2, 5)), ((1, 2), (1, 5), (2, 4)),
                                                (1, (1, 5), (1, 5))], ids=str)
def test_cropping2d(rng, cropping, rows, cols):
    x = rng.standard_normal((2, 6, 6, 2))
    check(layers.Cropping2D(cropping, dtype="float64"), x, lambda a: a[:, rows[0]:rows[1], cols[0]:cols[1]], rng)


def test_identity(rng):
    x = rng.standard_normal((3, 4))
    check(layers.Identity(dtype="float64"), x, lambda a: a, rng)


def test_shape_layer_errors():
    with pytest.raises(ValueError, match="permutation of 1..2"):
        layers.Permute((0, 1))
    with pytest.raises(ValueError, match="permute 2 axes but the input"):
        layers.Permute((2, 1))(fastnn.Input((3, 4, 5)))
    with pytest.raises(ValueError, match="'n' must be an int >= 1, got 0"):
        layers.RepeatVector(0)
    with pytest.raises(ValueError, match="expects 2-D input"):
        layers.RepeatVector(2)(fastnn.Input((3, 4)))
    with pytest.raises(ValueError, match="leaves nothing of axis 1 of size 3"):
        layers.Cropping1D((2, 1))(fastnn.Input((3, 4)))
    with pytest.raises(ValueError, match="ints >= 0"):
        layers.Cropping2D(((1, -1), (0, 0)))


# ---- Lambda ------------------------------------------------------------------------------------------
def scaled_softplus(x, scale=1.0):
    return ops.softplus(x) * scale


def test_lambda_traces_ops_maths_and_gets_its_gradient_from_them(rng):
    layer = layers.Lambda(scaled_softplus, arguments={"scale": 2.0}, dtype="float64")
    x = rng.standard_normal((3, 4))
    check(layer, x, lambda a: 2.0 * np.logaddexp(a, 0), rng, rebuilt=False)  # a function travels by name
    assert layer.get_config()["function"] == "scaled_softplus"


def test_lambda_on_several_inputs_in_a_model(rng):
    a, b = fastnn.Input((3,)), fastnn.Input((3,))
    out = layers.Lambda(lambda xs: ops.sum(xs[0] * xs[1], axis=-1, keepdims=True))([a, b])
    assert out.shape == (None, 1)
    model = fastnn.Model([a, b], out)
    x, y = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict([x, y]), np.sum(x * y, axis=1, keepdims=True), rtol=1e-5)


def test_lambda_declared_output_shape_is_checked_when_the_graph_is_built():
    inputs = fastnn.Input((4, 6))
    ok = layers.Lambda(lambda x: ops.reshape(x, (-1, 24)), output_shape=(24,))(inputs)
    assert ok.shape == (None, 24)
    with pytest.raises(ValueError, match=r"returns tensors of shape \(None, 4, 6\) but output_shape declares "
                                         r"\(None, 12\)"):
        layers.Lambda(lambda x: x * 2, output_shape=(12,), name="wrong")(inputs)


def test_lambda_with_numpy_maths_says_to_use_ops():
    with pytest.raises(TypeError, match="symbolic tensor.*fastnn.ops"):
        layers.Lambda(lambda x: np.exp(x))(fastnn.Input((3,)))


def test_lambda_mask_is_the_output_mask_in_a_model():
    """Lambda(mask=...) says its output's mask (a function of the inputs and their mask)."""
    tokens = np.array([[0, 0, 3, 4], [1, 2, 3, 0]])
    inputs = fastnn.Input((4,))
    embedded = layers.Embedding(6, 3, mask_zero=True)(inputs)
    doubled = layers.Lambda(lambda x: x * 2.0, mask=lambda x, mask: mask)(embedded)
    unmasked = layers.Lambda(lambda x: x * 2.0)(embedded)  # no mask= : the output has none (Keras)
    model = fastnn.Model(inputs, [doubled, layers.GlobalAveragePooling1D()(doubled),
                                  layers.GlobalAveragePooling1D()(unmasked)])
    y, pooled, pooled_all = model.predict(tokens, verbose=0)
    np.testing.assert_allclose(pooled, np.stack([y[i][tokens[i] != 0].mean(axis=0) for i in range(2)]), rtol=1e-6)
    np.testing.assert_allclose(pooled_all, y.mean(axis=1), rtol=1e-6)
