"""Pooling layers (python/fastnn/layers/pooling.py).

Each layer is run forward against a NumPy reference of Keras' semantics, backward
(float64) against central finite differences of L = sum(forward(x) * dy), its configs are
round-tripped, bad arguments and inputs must fail clearly, and the layers train inside
Sequential models.
"""

import math

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers, ops
from test_layers_core import check_gradients

H = 1e-5


def distinct(rng, shape):
    """float64 values in [-1, 1) without ties, far apart compared with H."""
    n = math.prod(shape)
    return rng.permutation(n).reshape(shape) * (2 / n) - 1


def numeric_gradient(layer, x, dy):
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        keep = x[idx]
        x[idx] = keep + H
        plus, _ = layer.forward(x, training=True)
        x[idx] = keep - H
        minus, _ = layer.forward(x, training=True)
        x[idx] = keep
        grad[idx] = np.sum((plus - minus) * dy) / (2 * H)
    return grad


def check_gradient(layer, x, rng):
    """Runs layer (float64) forward/backward on x; dx must match finite differences (and
    need_input_grad=False gives None)."""
    layer(x)
    y, cache = layer.forward(x, training=True)
    assert y.dtype == np.float64
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert layer.backward(cache, dy, need_input_grad=False) is None
    fd = numeric_gradient(layer, x, dy)
    err = np.abs(dx - fd)
    assert np.all(err <= 1e-6 * np.abs(fd) + 1e-9), f"{layer.name}: max error {err.max():.3g}"
    assert layer.weights == [] and layer.count_params() == 0
    return y, dx


def roundtrip(layer, x):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    again = layers.deserialize(layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config
    np.testing.assert_array_equal(clone(x), layer(x))
    assert clone.output_shape == layer.output_shape
    return config


def ref_pool(x, pool, strides, padding, mode):
    """Keras' pooling in NumPy (TensorFlow's 'same' padding; averages over in-bounds values)."""
    n, h, w, c = x.shape
    outs, pads = [], []
    for size, k, s in zip((h, w), pool, strides):
        if padding == "same":
            out = -(-size // s)
            pads.append(max((out - 1) * s + k - size, 0) // 2)
        else:
            out = (size - k) // s + 1
            pads.append(0)
        outs.append(out)
    y = np.empty((n, outs[0], outs[1], c))
    for i in range(outs[0]):
        r0 = i * strides[0] - pads[0]
        for j in range(outs[1]):
            c0 = j * strides[1] - pads[1]
            win = x[:, max(r0, 0):r0 + pool[0], max(c0, 0):c0 + pool[1], :]
            y[:, i, j] = win.max(axis=(1, 2)) if mode == "max" else win.mean(axis=(1, 2))
    return y


POOL_ARGS = [dict(), dict(pool_size=3), dict(pool_size=(3, 2), strides=1), dict(pool_size=2, padding="same"),
             dict(pool_size=(2, 3), strides=(1, 2), padding="same"), dict(pool_size=3, strides=2, padding="SAME")]


# ----------------------------------------------------------------------------------------
# MaxPooling2D / AveragePooling2D
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("args", POOL_ARGS, ids=str)
def test_pooling2d_forward_backward_config(rng, mode, args):
    cls = layers.MaxPooling2D if mode == "max" else layers.AveragePooling2D
    layer = cls(dtype="float64", **args)
    x = distinct(rng, (2, 7, 6, 3))
    y, _ = check_gradient(layer, x, rng)
    pool = layer.pool_size
    strides = layer.strides
    assert pool == ((2, 2) if "pool_size" not in args else (args["pool_size"],) * 2
                    if isinstance(args["pool_size"], int) else args["pool_size"])
    assert strides == (pool if "strides" not in args else (args["strides"],) * 2
                       if isinstance(args["strides"], int) else args["strides"])
    padding = args.get("padding", "valid").lower()
    np.testing.assert_allclose(y, ref_pool(x, pool, strides, padding, mode), rtol=1e-15, atol=1e-15)
    assert layer.output_shape == (None,) + y.shape[1:]
    config = roundtrip(layer, x)
    assert config["pool_size"] == pool and config["strides"] == strides
    assert config["padding"] == padding and config["data_format"] == "channels_last"


@pytest.mark.parametrize("cls", [layers.MaxPooling1D, layers.AveragePooling1D])
@pytest.mark.parametrize("args", [dict(), dict(pool_size=3, strides=1), dict(pool_size=4, strides=3, padding="same"),
                                  dict(pool_size=(2,), strides=(1,))], ids=str)
def test_pooling1d(rng, cls, args):
    layer = cls(dtype="float64", **args)
    x = distinct(rng, (3, 9, 4))  # (batch, steps, features)
    y, _ = check_gradient(layer, x, rng)
    (p,), (s,) = layer.pool_size, layer.strides
    mode = "max" if cls is layers.MaxPooling1D else "average"
    np.testing.assert_allclose(y, ref_pool(x[:, None], (1, p), (1, s), layer.padding, mode)[:, 0],
                               rtol=1e-15, atol=1e-15)
    assert layer.output_shape == (None,) + y.shape[1:]
    roundtrip(layer, x)


def test_pooling_float32_and_unknown_sizes(rng):
    layer = layers.MaxPooling2D(2, padding="same")
    assert layer.ensure_built((None, None, 9, 4)) == (None, None, 5, 4)
    x = rng.standard_normal((5, 6, 9, 4)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (5, 3, 5, 4)
    np.testing.assert_array_equal(y, ops.max_pool(x, 2, padding="same"))
    assert layers.AveragePooling1D(3).ensure_built((None, None, 2)) == (None, None, 2)


def test_max_pooling_routes_to_the_first_maximum_and_sums_overlaps():
    layer = layers.MaxPooling2D(pool_size=3, strides=1, dtype="float64")
    x = np.zeros((1, 4, 4, 1))
    x[0, 1, 2, 0] = 5.0  # the maximum of all four windows
    y, cache = layer.forward(x, training=True)
    np.testing.assert_array_equal(y.ravel(), [5, 5, 5, 5])
    dx = layer.backward(cache, np.ones_like(y))
    assert dx[0, 1, 2, 0] == 4 and dx.sum() == 4
    x = np.zeros((1, 4, 4, 1))  # all tied: each window's first position
    _, tied = layer.forward(x, training=True)
    dx = layer.backward(tied, np.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("make", [layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalMaxPooling2D,
                                  layers.GlobalAveragePooling2D, layers.ZeroPadding2D, layers.UpSampling2D])
def test_inference_keeps_nothing_and_backward_needs_a_training_forward(rng, make):
    layer = make()
    x = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
    y, cache = layer.forward(x)
    assert cache is None
    inputs = keras.Input((4, 4, 1))
    graph = fastnn.graph.Graph([inputs], [layer(inputs)])
    (out,), tape = graph.forward([x])
    np.testing.assert_array_equal(out, y)
    with pytest.raises(RuntimeError, match=r"backward needs a forward pass with training=True"):
        graph.backward(tape, [np.ones_like(y)], need_input_grads=[True])


def test_each_call_keeps_its_own_cache(rng):
    layer = layers.MaxPooling2D(2, dtype="float64")
    a, b = distinct(rng, (2, 4, 6, 3)), distinct(rng, (2, 8, 4, 3))  # two image sizes
    (ya, cache_a), (yb, cache_b) = layer.forward(a, training=True), layer.forward(b, training=True)
    dya, dyb = rng.uniform(-1, 1, ya.shape), rng.uniform(-1, 1, yb.shape)
    np.testing.assert_allclose(layer.backward(cache_a, dya), numeric_gradient(layer, a, dya), atol=1e-9)
    np.testing.assert_allclose(layer.backward(cache_b, dyb), numeric_gradient(layer, b, dyb), atol=1e-9)


@pytest.mark.parametrize("make, small, large", [
    (lambda: layers.MaxPooling2D(3, strides=2), (None, 9, 9, 4), (None, 16, 11, 4)),
    (lambda: layers.AveragePooling1D(2, padding="same"), (None, 7, 3), (None, 12, 3)),
    (lambda: layers.GlobalMaxPooling2D(keepdims=True), (None, 9, 9, 4), (None, 16, 11, 4)),
    (lambda: layers.ZeroPadding2D(((1, 2), (0, 3))), (None, 9, 9, 4), (None, 16, 11, 4)),
    (lambda: layers.UpSampling2D((2, 3)), (None, 9, 9, 4), (None, None, 11, 4)),
], ids=["max2d", "average1d", "global-max", "zero-padding", "upsampling"])
def test_a_layer_shared_by_inputs_of_two_sizes(rng, make, small, large):
    layer = make()
    a, b = keras.Input(small[1:]), keras.Input(large[1:])
    ya, yb = layer(a), layer(b)
    assert ya.shape == layer.compute_output_shape(small) and yb.shape == layer.compute_output_shape(large)
    assert ya.shape != yb.shape or isinstance(layer, layers.GlobalMaxPooling2D)
    model = keras.Model([a, b], [ya, yb])
    xs = [rng.standard_normal((2,) + tuple(d or 5 for d in shape[1:])).astype(np.float32) for shape in (small, large)]
    for got, x in zip(model.predict(xs, verbose=0), xs):  # the same as the layer called alone
        np.testing.assert_array_equal(got, make()(x))
    other = layer(keras.Input(small[1:-1] + (small[-1] + 1,)))  # no weights: any channel count, as Keras
    assert other.shape == ya.shape[:-1] + (small[-1] + 1,)
    with pytest.raises(ValueError, match="expects"):
        layer(keras.Input(small[1:] + (2,)))  # but not another rank


# ----------------------------------------------------------------------------------------
# Global pooling
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("cls,rank,mode", [(layers.GlobalMaxPooling2D, 2, "max"),
                                            (layers.GlobalAveragePooling2D, 2, "mean"),
                                            (layers.GlobalMaxPooling1D, 1, "max"),
                                            (layers.GlobalAveragePooling1D, 1, "mean")],
                         ids=["GlobalMaxPooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
                              "GlobalAveragePooling1D"])
def test_global_pooling(rng, cls, rank, mode, keepdims):
    layer = cls(keepdims=keepdims, dtype="float64")
    shape = (3, 4, 5, 6) if rank == 2 else (3, 7, 6)
    x = distinct(rng, shape)
    y, _ = check_gradient(layer, x, rng)
    axes = tuple(range(1, rank + 1))
    want = x.max(axis=axes, keepdims=keepdims) if mode == "max" else x.mean(axis=axes, keepdims=keepdims)
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    assert layer.output_shape == (None,) + want.shape[1:]
    config = roundtrip(layer, x)
    assert config["keepdims"] is keepdims and config["data_format"] == "channels_last"


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling1d_averages_the_unmasked_steps(rng, keepdims):
    """Keras: with a mask, the mean is over the unmasked steps only; the output has no mask."""
    layer = layers.GlobalAveragePooling1D(keepdims=keepdims, dtype="float64")
    x = distinct(rng, (3, 5, 4))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 1, 0, 0]], bool)
    want = np.stack([x[i][mask[i]].mean(axis=0) for i in range(3)])
    want = want[:, None] if keepdims else want
    np.testing.assert_allclose(layer(x, mask=mask), want, rtol=1e-14)
    y, cache = layer.forward(x, training=True, mask=mask)
    np.testing.assert_allclose(y, want, rtol=1e-14)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    assert dx.shape == x.shape and layer.backward(cache, dy, need_input_grad=False) is None
    np.testing.assert_allclose(dx, dy.reshape(3, 1, 4) * mask[..., None] / mask.sum(1)[:, None, None], rtol=1e-14)
    assert layer.compute_mask(x, mask) is None
    with pytest.raises(ValueError, match=r"the mask must have shape \(batch, steps\) = \(3, 5\)"):
        layer(x, mask=mask[:, :4])


def test_global_average_pooling1d_takes_the_mask_of_an_embedding(rng):
    """In a model, the padding mask of Embedding(mask_zero=True) reaches the pooling (as Keras):
    padded steps change neither the output nor get a gradient."""
    tokens = np.array([[0, 0, 3, 4], [1, 2, 3, 4], [0, 5, 5, 6]])
    model = keras.Sequential([keras.Input((4,)), layers.Embedding(8, 3, mask_zero=True),
                              layers.GlobalAveragePooling1D(), layers.Dense(2, activation="softmax")])
    embeddings = model.layers[0].get_weights()[0]
    pooled = np.stack([embeddings[t[t != 0]].mean(axis=0) for t in tokens])
    kernel, bias = model.layers[-1].get_weights()
    logits = pooled @ kernel + bias
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(tokens, verbose=0), want, rtol=1e-5)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(tokens, np.array([0, 1, 0]), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.layers[0].get_weights()[0][0], embeddings[0])  # padding: no gradient


def test_the_keras_text_classifier_learns_what_padding_would_otherwise_decide():
    """Keras' standard text model, Embedding(mask_zero=True) -> GlobalAveragePooling1D -> Dense.
    The label is whether the real tokens are mostly "good" (2) rather than "bad" (1); the
    positive reviews are short and padded more, so an average over every step (padding
    included) would see the label in the amount of padding. With the mask the model learns
    the words: it is right on reviews padded the other way round, and appending more padding
    changes no prediction."""
    rng = np.random.default_rng(7)

    def reviews(n, positive, length, steps):
        words = np.where(rng.random((n, length)) < 0.8, 2 if positive else 1, 1 if positive else 2)
        out = np.zeros((n, steps), np.int64)
        out[:, :length] = words
        return out

    x = np.concatenate([reviews(200, True, 3, 12), reviews(200, False, 10, 12)])
    y = np.concatenate([np.ones(200), np.zeros(200)]).astype(np.float32)
    model = keras.Sequential([keras.Input((None,)), layers.Embedding(4, 8, mask_zero=True),
                              layers.GlobalAveragePooling1D(), layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=40, verbose=0)
    swapped = np.concatenate([reviews(100, True, 10, 12), reviews(100, False, 3, 12)])
    want = np.concatenate([np.ones(100), np.zeros(100)])
    assert np.mean((model.predict(swapped, verbose=0)[:, 0] > 0.5) == want) >= 0.95
    padded = np.concatenate([swapped, np.zeros((200, 20), np.int64)], axis=1)
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(swapped, verbose=0), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------
# ZeroPadding2D and UpSampling2D
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", [1, (2, 0), ((0, 3), (1, 2)), [[1, 1], [0, 2]]], ids=str)
def test_zero_padding2d(rng, padding):
    layer = layers.ZeroPadding2D(padding, dtype="float64")
    x = rng.standard_normal((2, 3, 4, 5))
    y, _ = check_gradient(layer, x, rng)
    (t, b), (l, r) = layer.padding
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (t, b), (l, r), (0, 0))))
    assert layer.output_shape == (None,) + y.shape[1:]
    assert roundtrip(layer, x)["padding"] == ((t, b), (l, r))
    assert layers.ZeroPadding2D().padding == ((1, 1), (1, 1))


@pytest.mark.parametrize("size", [(2, 2), 3, (1, 2)], ids=str)
def test_upsampling2d(rng, size):
    layer = layers.UpSampling2D(size, dtype="float64")
    x = rng.standard_normal((2, 3, 4, 5))
    y, _ = check_gradient(layer, x, rng)
    sh, sw = layer.size
    np.testing.assert_array_equal(y, x.repeat(sh, axis=1).repeat(sw, axis=2))
    assert layer.output_shape == (None,) + y.shape[1:]
    config = roundtrip(layer, x)
    assert config["size"] == (sh, sw) and config["interpolation"] == "nearest"


# ----------------------------------------------------------------------------------------
# Bad arguments and input
# ----------------------------------------------------------------------------------------
POOLING_2D = [layers.MaxPooling2D, layers.AveragePooling2D]
ALL_2D = POOLING_2D + [layers.GlobalMaxPooling2D, layers.GlobalAveragePooling2D, layers.ZeroPadding2D,
                       layers.UpSampling2D]


@pytest.mark.parametrize("cls", POOLING_2D + [layers.MaxPooling1D, layers.AveragePooling1D])
def test_bad_pool_arguments(cls):
    name = cls.__name__
    for bad in (0, -2, (2, 0), (-1, 3)):
        with pytest.raises(ValueError, match=f"{name}: 'pool_size' must"):
            cls(pool_size=bad)
        with pytest.raises(ValueError, match=f"{name}: 'strides' must"):
            cls(pool_size=2, strides=bad)
    with pytest.raises((TypeError, ValueError), match=f"{name}: 'pool_size' must be an int or a tuple"):
        cls(pool_size="2")
    with pytest.raises(ValueError, match=f"{name}: 'padding' must be 'valid' or 'same', got 'causal'"):
        cls(padding="causal")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cls(pool=2)


@pytest.mark.parametrize("cls", ALL_2D + [layers.MaxPooling1D, layers.GlobalAveragePooling1D])
def test_data_format_is_checked_and_standardized(cls):
    with pytest.raises(ValueError, match=r"'data_format' must be one of \{'channels_first', 'channels_last'\} "
                                         r"or None, got 'NHWC'"):
        cls(data_format="NHWC")
    assert cls(data_format="channels_last").data_format == "channels_last"
    assert cls(data_format="Channels_First").data_format == "channels_first"  # Keras lower-cases it
    assert cls().data_format == "channels_last"  # None: fastnn has no image_data_format setting


@pytest.mark.parametrize("cls", ALL_2D)
def test_2d_layers_refuse_other_ranks(rng, cls):
    for shape in [(2, 8, 3), (2, 8), (1, 2, 8, 8, 3)]:
        with pytest.raises(ValueError, match=r"expects inputs with 4 dimensions \(batch, height, width, channels\), "
                                             rf"got shape \(None, {', '.join(map(str, shape[1:]))}"):
            cls()(rng.standard_normal(shape))


def test_1d_layers_refuse_images(rng):
    for cls in (layers.MaxPooling1D, layers.AveragePooling1D, layers.GlobalMaxPooling1D):
        with pytest.raises(ValueError, match=r"expects inputs with 3 dimensions \(batch, steps, features\)"):
            cls()(rng.standard_normal((2, 4, 4, 3)))


def test_a_window_larger_than_a_valid_input_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"MaxPooling2D 'max_pooling2d.*': with padding='valid' the pooling "
                                         r"window must fit in the input: pool size 5 is larger than the "
                                         r"input's height 4"):
        layers.MaxPooling2D(pool_size=5)(rng.standard_normal((1, 4, 9, 1)))
    with pytest.raises(ValueError, match="pool size 3 is larger than the input's steps 2"):
        layers.AveragePooling1D(3)(rng.standard_normal((1, 2, 1)))
    with pytest.raises(ValueError, match="pool size 5 is larger than the input's width 4"):
        keras.Sequential([layers.Input(shape=(9, 4, 1)), layers.MaxPooling2D((2, 5))])
    assert layers.MaxPooling2D(5, padding="same")(np.zeros((1, 4, 4, 1))).shape == (1, 1, 1, 1)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="UpSampling2D: interpolation='area' is not supported"):
        layers.UpSampling2D(interpolation="area")
    with pytest.raises(ValueError, match="UpSampling2D: 'size' must hold positive ints"):
        layers.UpSampling2D(0)
    for bad in (-1, (1, -1), ((1, 2), (3,)), "1"):
        with pytest.raises(ValueError, match="ZeroPadding2D: 'padding' must be an int >= 0"):
            layers.ZeroPadding2D(bad)
    with pytest.raises(ValueError, match="has no positions to pool over"):
        layers.GlobalAveragePooling1D()(np.zeros((2, 0, 3)))


@pytest.mark.parametrize("make", [layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalMaxPooling2D,
                                  layers.ZeroPadding2D, layers.UpSampling2D])
def test_strings_as_input_are_a_type_error(make):
    with pytest.raises(TypeError, match="expected numeric input"):
        make()(np.array([[[["a"]]]]), training=True)


def test_keras_short_names():
    assert layers.MaxPool2D is layers.MaxPooling2D and layers.AvgPool1D is layers.AveragePooling1D
    assert layers.GlobalAvgPool2D is layers.GlobalAveragePooling2D
    assert layers.MaxPooling2D().name.startswith("max_pooling2d")


# ----------------------------------------------------------------------------------------
# In models
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    return ((x_train.astype("float32") / 16, y_train), (x_test.astype("float32") / 16, y_test))


def test_a_model_with_every_2d_layer_trains_on_the_digits(digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    x_train, x_test = x_train.reshape(-1, 64), x_test.reshape(-1, 64)
    keras.utils.set_random_seed(0)
    # The first Dense learns feature maps through every spatial layer's backward pass.
    model = keras.Sequential([
        layers.Input(shape=(64,)),
        layers.Dense(6 * 6 * 8, activation="relu"),
        layers.Reshape((6, 6, 8)),
        layers.ZeroPadding2D(1),                                # 8x8
        layers.MaxPooling2D(2, strides=1),                      # 7x7 (overlapping windows)
        layers.UpSampling2D(2),                                 # 14x14
        layers.AveragePooling2D(3, strides=2, padding="same"),  # 7x7
        layers.MaxPool2D(2, padding="same"),                    # 4x4
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    assert model.output_shape == (None, 10) and model.layers[6].output_shape == (None, 4, 4, 8)
    first = model.layers[0].get_weights()[0]
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    assert np.abs(model.layers[0].get_weights()[0] - first).max() > 0.01  # gradients got through
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95
    path = tmp_path / "pooling.fastnn"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(again.predict(x_test, verbose=0), model.predict(x_test, verbose=0))


def test_a_sequence_model_with_1d_and_global_pooling_trains(digits):
    (x_train, y_train), (x_test, y_test) = digits  # each digit as 8 steps of 8 features
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        layers.Input(shape=(8, 8)),
        layers.Dense(64, activation="relu"),
        layers.MaxPooling1D(2, strides=1),          # 7 steps
        layers.AveragePooling1D(2, padding="same"),  # 4 steps
        layers.Dense(64, activation="relu"),
        layers.GlobalMaxPooling1D(keepdims=True),   # (1, 64)
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.85
    keras.utils.set_random_seed(0)
    gap = keras.Sequential([layers.Input(shape=(8, 8)), layers.Dense(32, activation="relu"),
                            layers.GlobalAveragePooling1D(), layers.Dense(10, activation="softmax")])
    gap.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = gap.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def spy_backward(layer):
    """A list that records (need_input_grad, the returned dx) for each backward call of `layer`."""
    calls, backward = [], layer.backward

    def spy(cache, dy, need_input_grad=True, accumulate=False):
        dx = backward(cache, dy, need_input_grad, accumulate)
        calls.append((need_input_grad, dx))
        return dx

    layer.backward = spy
    return calls


def test_a_pooling_layer_first_in_a_model_skips_its_input_gradient(rng):
    model = keras.Sequential([layers.Input(shape=(4, 4, 2)), layers.GlobalAveragePooling2D(), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    pool = model.layers[0]
    calls = spy_backward(pool)
    dense = model.layers[1].get_weights()[0]
    model.fit(rng.standard_normal((8, 4, 4, 2)), rng.standard_normal((8, 1)), epochs=1, verbose=0)
    assert not np.array_equal(model.layers[1].get_weights()[0], dense)  # the backward pass ran
    assert all(need is False and dx is None for need, dx in calls)  # no dx asked for (or no call at all)
    _, cache = pool.forward(np.ones((8, 4, 4, 2), np.float32), training=True)
    assert pool.backward(cache, np.ones((8, 2), np.float32), need_input_grad=False) is None


def keras_resize_weights(in_size, scale):
    """Keras' (NumPy backend) resize weights, antialias=False, triangle kernel: (out, in)."""
    sample = (np.arange(in_size * scale) + 0.5) / scale - 0.5
    weights = np.maximum(0, 1 - np.abs(sample[None, :] - np.arange(in_size)[:, None]))  # (in, out)
    weights = weights / weights.sum(axis=0, keepdims=True)  # taps outside the image dropped, renormalised
    return weights.T


@pytest.mark.parametrize("size, shape", [((2, 2), (2, 3, 4, 2)), ((3, 2), (1, 5, 1, 3)), ((1, 4), (2, 2, 3, 1)),
                                         ((2, 3), (1, 1, 1, 2))])
def test_upsampling2d_bilinear_is_keras_resize(rng, size, shape):
    layer = layers.UpSampling2D(size, interpolation="Bilinear", dtype="float64")
    assert layer.interpolation == "bilinear"
    x = rng.standard_normal(shape)
    y = layer(x)
    wh, ww = keras_resize_weights(shape[1], size[0]), keras_resize_weights(shape[2], size[1])
    ref = np.einsum("oh,nhwc,pw->nopc", wh, x, ww)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape(shape) == ref.shape
    y, dx = check_gradients(layer, x, rng)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    config = layer.get_config()
    assert config["interpolation"] == "bilinear"
    assert layers.UpSampling2D.from_config(config).interpolation == "bilinear"


def test_upsampling2d_bilinear_known_values_and_channels_first():
    x = np.array([[0.0, 4.0]]).reshape(1, 1, 2, 1)
    y = layers.UpSampling2D((1, 2), interpolation="bilinear", dtype="float64")(x)
    # samples at -0.25 (edge: 0), 0.25, 0.75, 1.25 (edge: 4)
    np.testing.assert_allclose(y[0, 0, :, 0], [0.0, 1.0, 3.0, 4.0])
    first = layers.UpSampling2D(2, interpolation="bilinear", data_format="channels_first", dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))  # (batch, channels, h, w)
    last = layers.UpSampling2D(2, interpolation="bilinear", dtype="float64")(np.moveaxis(x, 1, -1))
    np.testing.assert_allclose(first(x), np.moveaxis(last, -1, 1), rtol=1e-13)


def test_upsampling2d_other_interpolations_are_refused():
    with pytest.raises(ValueError, match="UpSampling2D: interpolation='bicubic' is not supported; fastnn has "
                                         "'nearest' and 'bilinear'"):
        layers.UpSampling2D(interpolation="bicubic")


def test_global_max_pooling_ignores_a_mask_as_keras_3(rng):
    # Keras 3's GlobalMaxPooling1D/2D do not support masking: the max runs over every step.
    x = rng.standard_normal((3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    layer = layers.GlobalMaxPooling1D()
    np.testing.assert_array_equal(layer(x, mask=mask), x.max(axis=1))
    assert layer.compute_mask(x, mask) is None
    ids = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    inputs = keras.Input((4,))
    embedded = layers.Embedding(10, 3, mask_zero=True)
    model = keras.Model(inputs, layers.GlobalMaxPooling1D()(embedded(inputs)))
    np.testing.assert_allclose(model.predict(ids, verbose=0), embedded(ids).max(axis=1), rtol=1e-6)


def test_average_pooling_keeps_fastnns_default_pool_size(rng):
    x = rng.standard_normal((2, 6, 4, 3))
    np.testing.assert_allclose(layers.AveragePooling2D(dtype="float64")(x),
                               x.reshape(2, 3, 2, 2, 2, 3).mean(axis=(2, 4)), rtol=1e-13)
    np.testing.assert_allclose(layers.AveragePooling1D(dtype="float64")(x[:, :, 0]),
                               x[:, :, 0].reshape(2, 3, 2, 3).mean(axis=2), rtol=1e-13)
