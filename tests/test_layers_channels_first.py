"""data_format="channels_first" on the image and sequence layers: every layer's channels_first
result is its channels_last result on the transposed input, transposed back (NumPy), with the
same weights in Keras' shapes; shapes, masks, gradients (finite differences) and a small fit."""

import numpy as np
import pytest

import fastnn
from fastnn import layers
from test_layers_core import check_gradients, roundtrip
from test_ops_conv import reference_conv


def first(a):
    """(batch, *spatial, channels) -> (batch, channels, *spatial)."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if a.ndim > 2 else a


# (factory taking data_format, channels_last input shape)
CASES = {
    "Conv2D": (lambda df: layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="tanh",
                                        data_format=df, dtype="float64"), (2, 7, 6, 3)),
    "Conv2D-dilated": (lambda df: layers.Conv2D(2, 3, dilation_rate=2, data_format=df, dtype="float64"),
                       (2, 8, 7, 3)),
    "Conv1D": (lambda df: layers.Conv1D(3, 3, padding="causal", activation="relu", data_format=df,
                                        dtype="float64"), (2, 9, 4)),
    "MaxPooling2D": (lambda df: layers.MaxPooling2D((2, 3), strides=(1, 2), padding="same", data_format=df,
                                                    dtype="float64"), (2, 5, 7, 3)),
    "MaxPooling1D": (lambda df: layers.MaxPooling1D(3, data_format=df, dtype="float64"), (2, 10, 3)),
    "AveragePooling2D": (lambda df: layers.AveragePooling2D(2, padding="same", data_format=df, dtype="float64"),
                         (2, 5, 5, 3)),
    "AveragePooling1D": (lambda df: layers.AveragePooling1D(2, strides=1, data_format=df, dtype="float64"),
                         (2, 7, 3)),
    "GlobalAveragePooling2D": (lambda df: layers.GlobalAveragePooling2D(data_format=df, dtype="float64"),
                               (2, 4, 5, 3)),
    "GlobalMaxPooling2D-keepdims": (lambda df: layers.GlobalMaxPooling2D(data_format=df, keepdims=True,
                                                                         dtype="float64"), (2, 4, 5, 3)),
    "GlobalAveragePooling1D-keepdims": (lambda df: layers.GlobalAveragePooling1D(data_format=df, keepdims=True,
                                                                                 dtype="float64"), (2, 6, 3)),
    "GlobalMaxPooling1D": (lambda df: layers.GlobalMaxPooling1D(data_format=df, dtype="float64"), (2, 6, 3)),
    "UpSampling2D": (lambda df: layers.UpSampling2D((2, 3), data_format=df, dtype="float64"), (2, 3, 4, 2)),
    "ZeroPadding2D": (lambda df: layers.ZeroPadding2D(((1, 0), (2, 1)), data_format=df, dtype="float64"),
                      (2, 3, 4, 2)),
    "Cropping2D": (lambda df: layers.Cropping2D(((1, 0), (2, 1)), data_format=df, dtype="float64"),
                   (2, 5, 6, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_channels_first_is_channels_last_transposed(rng, name):
    make, shape = CASES[name]
    last, first_layer = make("channels_last"), make("channels_first")
    x = rng.standard_normal(shape)
    y_last = last(x)
    first_layer.ensure_built(first(x).shape)
    assert [w.shape for w in first_layer.get_weights()] == [w.shape for w in last.get_weights()]  # Keras' shapes
    first_layer.set_weights(last.get_weights())
    y_first = first_layer(first(x))
    np.testing.assert_allclose(y_first, first(y_last), rtol=1e-13, atol=1e-13)
    # shapes: the concrete one and a symbolic batch
    assert first_layer.compute_output_shape(first(x).shape) == y_first.shape
    assert first_layer.compute_output_shape((None,) + first(x).shape[1:]) == (None,) + y_first.shape[1:]
    # backward: the same gradients, transposed
    y, cache = last.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx_last = last.backward(cache, dy)
    grads_last = [np.array(g) for g in last.grads]
    _, cache = first_layer.forward(first(x), training=True)
    dx_first = first_layer.backward(cache, first(dy))
    np.testing.assert_allclose(dx_first, first(dx_last), rtol=1e-13, atol=1e-13)
    for g_first, g_last in zip(first_layer.grads, grads_last):
        np.testing.assert_allclose(g_first, g_last, rtol=1e-12, atol=1e-13)
    config = first_layer.get_config()
    assert config["data_format"] == "channels_first"
    roundtrip(first_layer, first(x))


def test_conv2d_channels_first_against_numpy_and_finite_differences(rng):
    layer = layers.Conv2D(3, (2, 3), strides=(1, 2), padding="same", data_format="channels_first", dtype="float64")
    x = rng.standard_normal((2, 2, 5, 6))  # (batch, channels, height, width)
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (2, 3, 2, 3)
    ref = reference_conv(np.moveaxis(x, 1, -1), kernel, bias, (1, 2), "same", (1, 1))
    np.testing.assert_allclose(y, np.moveaxis(ref, -1, 1), rtol=1e-12, atol=1e-12)


def test_conv1d_and_pooling_channels_first_finite_differences(rng):
    check_gradients(layers.Conv1D(2, 3, strides=2, data_format="channels_first", dtype="float64"),
                    rng.standard_normal((2, 3, 7)), rng, expect_weights=2)
    check_gradients(layers.AveragePooling2D(2, padding="same", data_format="channels_first", dtype="float64"),
                    rng.standard_normal((2, 3, 5, 3)), rng)


def test_global_average_pooling1d_mask_applies_to_the_steps_axis(rng):
    x = rng.standard_normal((3, 5, 4))  # channels_last (batch, steps, features)
    mask = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], bool)
    ref = np.stack([x[b][mask[b]].mean(axis=0) for b in range(3)])
    layer = layers.GlobalAveragePooling1D(data_format="channels_first", dtype="float64")
    y = layer(first(x), mask=mask)  # (batch, features, steps); the mask stays (batch, steps)
    np.testing.assert_allclose(y, ref, rtol=1e-13)
    y, cache = layer.forward(first(x), training=True, mask=mask)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(cache, dy)
    expected = mask[:, None, :] * dy[:, :, None] / mask.sum(axis=1)[:, None, None]
    np.testing.assert_allclose(dx, expected, rtol=1e-13)
    assert layer.compute_mask(first(x), mask) is None


def test_errors_show_the_layers_own_layout():
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\), got shape \(2, 3, 4\)"):
        layers.MaxPooling2D(data_format="channels_first").compute_output_shape((2, 3, 4))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\), got shape \(2, 3, 4\)"):
        layers.Conv2D(2, 1, data_format="channels_first").compute_output_shape((2, 3, 4))


def test_a_channels_first_cnn_trains(rng):
    x = rng.standard_normal((64, 2, 8, 8)).astype("float32")
    y = (x[:, 0].mean(axis=(1, 2)) > x[:, 1].mean(axis=(1, 2))).astype("int64")  # which channel is brighter
    fastnn.utils.set_random_seed(3)
    model = fastnn.Sequential([
        fastnn.Input((2, 8, 8)),
        layers.Conv2D(8, 3, padding="same", activation="relu", data_format="channels_first"),
        layers.MaxPooling2D(2, data_format="channels_first"),
        layers.ZeroPadding2D(1, data_format="channels_first"),
        layers.Cropping2D(1, data_format="channels_first"),
        layers.GlobalAveragePooling2D(data_format="channels_first"),
        layers.Dense(2, activation="softmax"),
    ])
    assert model.output_shape == (None, 2)
    assert model.layers[0].kernel.shape == (3, 3, 2, 8)
    model.compile(fastnn.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert loss < 0.5 * before and accuracy > 0.9


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 3), (2, 3, 4, 5), (2, 5)])
def test_flatten_channels_first_moves_channels_last_first(rng, shape):
    """Keras' Flatten: a channels_first input of rank >= 3 is transposed to (0, 2, ..., 1) and then
    reshaped, so the values follow the channels_last order; rank 2 is flattened as it is."""
    x = rng.standard_normal(shape).astype(np.float32)
    layer = layers.Flatten(data_format="channels_first")
    want = (np.moveaxis(x, 1, -1) if x.ndim > 2 else x).reshape(shape[0], -1)
    np.testing.assert_array_equal(layer(x), want)
    assert layer.compute_output_shape(shape) == want.shape
    assert layers.Flatten(data_format="CHANNELS_FIRST").get_config()["data_format"] == "channels_first"
    check_gradients(layers.Flatten(data_format="channels_first"), x, rng)
