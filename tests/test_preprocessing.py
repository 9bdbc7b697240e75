"""Preprocessing: the Normalization and Rescaling layers, fastnn.preprocessing (min_max_scale, re-exports)."""

import numpy as np
import pytest

import fastnn
from fastnn import layers, preprocessing
from fastnn.preprocessing import Normalization, Rescaling, min_max_scale

EPS = 1e-7  # Keras' epsilon: the floor of sqrt(variance)


def numpy_normalize(x, data, reduce):
    mean = data.astype(np.float64).mean(axis=reduce, keepdims=True)
    std = np.maximum(np.sqrt(data.astype(np.float64).var(axis=reduce, keepdims=True)), EPS)
    return (x - mean) / std, mean, std


def numeric_input_gradient(layer, x, dy, h=1e-6):
    """Central differences of sum(layer.forward(x) * dy) with respect to x."""
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        plus = np.sum(layer.forward(x)[0] * dy)
        x[i] = keep - h
        minus = np.sum(layer.forward(x)[0] * dy)
        x[i] = keep
        fd[i] = (plus - minus) / (2 * h)
    return fd


# ---- Normalization: adapt and forward ----------------------------------------------------------------
@pytest.mark.parametrize("axis,shape,reduce,stats_shape", [
    (-1, (50, 5), (0,), (5,)),
    (1, (50, 5), (0,), (5,)),
    (-1, (40, 4, 3), (0, 1), (3,)),
    ((1, 2), (40, 4, 3), (0,), (4, 3)),
    ((-2, -1), (40, 4, 3), (0,), (4, 3)),
    (1, (40, 4, 3), (0, 2), (4,)),
    (None, (40, 4, 3), (0, 1, 2), ()),  # Keras 3: scalar weights for axis=None
    (None, (60,), (0,), ()),
], ids=["features", "axis1", "last-of-3d", "pixels", "pixels-negative", "middle", "none-3d", "none-1d"])
def test_adapt_then_forward_matches_numpy(rng, axis, shape, reduce, stats_shape):
    data = rng.normal(3.0, 2.5, shape) * rng.uniform(0.5, 4, shape[1:])  # features of different scales
    x = rng.normal(3.0, 5.0, (7,) + shape[1:])
    layer = Normalization(axis=axis, dtype="float64")
    layer.adapt(data)
    expected, mean, std = numpy_normalize(x, data, reduce)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert layer.adapt_mean.shape == layer.adapt_variance.shape == stats_shape
    np.testing.assert_allclose(layer.adapt_mean.value, mean.reshape(stats_shape), rtol=1e-13)
    np.testing.assert_allclose(layer.adapt_variance.value, data.var(axis=reduce), rtol=1e-12)  # population
    assert layer.mean.shape == mean.shape and layer.variance.shape == mean.shape  # Keras: broadcast shape
    # Keras 3's weights: mean, variance and count (shape (), left at 0 by adapt)
    assert [w.name for w in layer.weights] == [f"{layer.name}/mean", f"{layer.name}/variance", f"{layer.name}/count"]
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 3
    assert layer.count.shape == () and layer.count.value == 0
    assert layer.count_params() == 2 * int(np.prod(stats_shape)) + 1
    assert layer.output_shape == (None,) + shape[1:]


def test_the_keras_examples():
    layer = Normalization(axis=None)
    layer.adapt(np.array([1., 2., 3., 4., 5.], dtype="float32"))
    np.testing.assert_allclose(layer(np.array([1., 2., 3.])), [-1.4142135, -0.70710677, 0.], rtol=1e-6)
    data = np.array([[0., 7., 4.], [2., 9., 6.], [0., 7., 4.], [2., 9., 6.]], dtype="float32")
    layer = Normalization(axis=-1)
    layer.adapt(data)
    out = layer(np.array([[0., 7., 4.]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-1., -1., -1.]])
    layer = Normalization(mean=3., variance=2.)
    np.testing.assert_allclose(layer(np.array([[1.], [2.], [3.]])), [[-1.4142135], [-0.70710677], [0.]], rtol=1e-6)
    layer = Normalization(axis=-1, invert=True)
    layer.adapt(data)
    np.testing.assert_allclose(layer(np.array([[1., 2., 3.]])), [[2., 10., 8.]])


def test_float32_layer_on_uint8_images(rng):
    images = rng.integers(0, 256, (64, 6, 6), dtype=np.uint8)
    layer = Normalization(axis=(1, 2))
    layer.adapt(images)
    out = layer(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    expected, _, _ = numpy_normalize(images.astype(np.float64), images, (0,))
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)


def test_adapt_in_batches_and_from_a_generator_gives_the_same_statistics(rng):
    data = rng.normal(1e4, 3.0, (103, 4))  # a large mean: the merge must not lose the variance
    whole = Normalization(dtype="float64")
    whole.adapt(data)
    chunked = Normalization(dtype="float64")
    chunked.adapt(data, batch_size=10)
    streamed = Normalization(dtype="float64")
    streamed.adapt((data[i:i + 17], np.zeros(len(data[i:i + 17]))) for i in range(0, len(data), 17))
    listed = Normalization(dtype="float64")
    listed.adapt(data.tolist())
    for layer in (chunked, streamed, listed):
        np.testing.assert_allclose(layer.adapt_mean.value, whole.adapt_mean.value, rtol=1e-14)
        np.testing.assert_allclose(layer.adapt_variance.value, whole.adapt_variance.value, rtol=1e-10)
    np.testing.assert_allclose(whole.adapt_variance.value, data.var(axis=0), rtol=1e-10)


def test_adapt_again_replaces_the_statistics(rng):
    layer = Normalization(dtype="float64")
    layer.adapt(rng.normal(0, 1, (20, 3)))
    second = rng.normal(5, 2, (30, 3))
    layer.adapt(second)
    np.testing.assert_allclose(layer.adapt_mean.value, second.mean(axis=0), rtol=1e-13)


def test_constant_feature_does_not_divide_by_zero():
    data = np.array([[1., 5.], [3., 5.], [5., 5.]])
    layer = Normalization(dtype="float64")
    layer.adapt(data)
    assert layer.adapt_variance.value[1] == 0
    out = layer(np.array([[3., 5.], [3., 5.5]]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 1], [0.0, 0.5 / EPS])  # Keras: max(sqrt(variance), epsilon)


def test_invert_undoes_the_normalization(rng):
    data = rng.normal(-2, 7, (30, 2, 3))
    forward = Normalization(axis=(1, 2), dtype="float64")
    inverse = Normalization(axis=(1, 2), invert=True, dtype="float64")
    forward.adapt(data)
    inverse.adapt(data)
    np.testing.assert_allclose(inverse(forward(data)), data, rtol=1e-12, atol=1e-12)
    z = rng.standard_normal((4, 2, 3))
    np.testing.assert_allclose(inverse(z), z * np.sqrt(data.var(axis=0)) + data.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("axis,mean,variance,shape", [
    (-1, [1., 2., 3.], [4., 1., 0.25], (5, 3)),
    (-1, 2.0, 9.0, (5, 3)),
    ((1, 2), [1., -1., 0.5], [1., 4., 16.], (5, 2, 3)),  # aligned with the last kept axis (Keras)
    ((1, 2), [[0., 1., 2.], [3., 4., 5.]], np.full((2, 3), 2.0), (5, 2, 3)),
    (None, 3.0, 2.0, (5, 2)),
])
def test_given_mean_and_variance(rng, axis, mean, variance, shape):
    layer = Normalization(axis=axis, mean=mean, variance=variance, dtype="float64")
    x = rng.normal(0, 3, shape)
    expected = (x - np.asarray(mean)) / np.sqrt(np.asarray(variance))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-13)
    assert layer.weights == [] and layer.count_params() == 0  # fixed values live in the config (Keras)
    inverse = Normalization(axis=axis, mean=mean, variance=variance, invert=True, dtype="float64")
    np.testing.assert_allclose(inverse(layer(x)), x, rtol=1e-12, atol=1e-12)
    clone = layers.deserialize(layers.serialize(layer))
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x), layer(x))
    with pytest.raises(ValueError, match="was given 'mean' and 'variance'"):
        layer.adapt(x)


# Keras 3's Normalization.build: mean and variance of shape (input_shape[d] for the kept
# axes d), then count of shape () -- for each (axis, input shape).
KERAS_WEIGHT_SHAPES = [
    (-1, (None, 5), [(5,), (5,), ()]),
    (1, (None, 5), [(5,), (5,), ()]),
    (-1, (None, 4, 3), [(3,), (3,), ()]),
    (1, (None, 4, 3), [(4,), (4,), ()]),
    ((1, 2), (None, 4, 3), [(4, 3), (4, 3), ()]),
    ((-1, 1), (None, 4, 3), [(4, 3), (4, 3), ()]),  # kept axes sorted, as Keras
    (None, (None, 5), [(), (), ()]),
    (None, (None, 4, 3), [(), (), ()]),
]


@pytest.mark.parametrize("axis,input_shape,shapes", KERAS_WEIGHT_SHAPES)
def test_weights_are_keras_mean_variance_count(axis, input_shape, shapes, rng):
    layer = Normalization(axis=axis)
    layer(np.zeros((1,) + input_shape[1:], np.float32))
    assert [w.shape for w in layer.get_weights()] == shapes
    assert [w.name.split("/")[-1] for w in layer.weights] == ["mean", "variance", "count"]
    # set_weights takes Keras' list (count as Keras' int) and the layer then computes with it
    mean = rng.normal(0, 2, shapes[0])
    variance = rng.uniform(0.5, 3, shapes[0])
    layer.set_weights([mean.astype(np.float32), variance.astype(np.float32), np.array(7, np.int32)])
    x = rng.normal(0, 3, (6,) + input_shape[1:])
    keep = sorted(a % len(input_shape) for a in layer.axis)
    broadcast = [input_shape[d] if d in keep else 1 for d in range(len(input_shape))]
    expected = (x - mean.reshape(broadcast)) / np.sqrt(variance.reshape(broadcast))
    np.testing.assert_allclose(layer(x.astype(np.float32)), expected, rtol=1e-5, atol=1e-5)
    assert layer.get_weights()[2] == 7


def test_set_weights_refuses_the_old_two_weight_list_and_wrong_shapes():
    layer = Normalization(axis=None)
    layer(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="expected 3 weight arrays, got 2"):
        layer.set_weights([np.zeros(()), np.ones(())])
    with pytest.raises(ValueError, match=r"weight '\w+/mean' has shape \(\), got \(1,\)"):
        layer.set_weights([np.zeros(1), np.ones(1), np.zeros(())])


def test_adapt_one_dimensional_data_with_a_kept_batch_axis_is_refused(rng):
    # Keras would keep one mean per batch index here (its docstring calls this a pitfall and
    # suggests axis=None); fastnn says so instead of building for one batch size.
    with pytest.raises(ValueError, match=r"axis 0 is kept .* unknown .* use axis=None"):
        Normalization().adapt(rng.normal(0, 1, (10,)))


@pytest.mark.parametrize("source", ["list", "generator", "tuples"])
def test_adapt_over_batches_matches_numpy_over_all_of_them(rng, source):
    batches = [rng.normal(i, 1 + i, (n, 4, 3)) for i, n in enumerate([5, 9, 1, 7])]
    everything = np.concatenate(batches)
    layer = Normalization(axis=(1, 2), dtype="float64")
    data = {"list": batches, "generator": (b for b in batches),
            "tuples": ((b, np.zeros(len(b))) for b in batches)}[source]
    layer.adapt(data)
    assert layer.input_shape == (None, 4, 3)  # built from one batch, not from the stacked list
    mean, variance, count = layer.get_weights()
    np.testing.assert_allclose(mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(variance, everything.var(axis=0), rtol=1e-12)
    assert count == 0  # Keras 3 leaves count alone


def test_adapt_replaces_rather_than_accumulates(rng):
    layer = Normalization(axis=None, dtype="float64")
    layer.adapt(rng.normal(5, 2, (30, 2)))
    second = rng.normal(-1, 0.5, (20, 2))
    layer.adapt(second)
    np.testing.assert_allclose(layer.get_weights()[:2], [second.mean(), second.var()], rtol=1e-12)


def test_scalar_statistics_survive_saving(rng, tmp_path):
    data = rng.normal(3, 2, (32, 3)).astype(np.float32)
    norm = Normalization(axis=None)
    norm.adapt(data)
    model = fastnn.Sequential([fastnn.Input(shape=(3,)), norm, layers.Dense(1)])
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")
    weights = loaded.layers[0].get_weights()
    assert [w.shape for w in weights] == [(), (), ()]
    np.testing.assert_allclose(weights[:2], [data.astype(np.float64).mean(), data.astype(np.float64).var()],
                               rtol=1e-6)
    model.save_weights(tmp_path / "w.weights.fastnn")
    loaded.load_weights(tmp_path / "w.weights.fastnn")
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))

def test_config_round_trip_and_weights_after_adapt(rng):
    data = rng.normal(2, 3, (20, 4))
    layer = Normalization(axis=-1, invert=False, name="norm")
    layer.adapt(data)
    config = layer.get_config()
    assert config["axis"] == (-1,) and config["mean"] is None and config["variance"] is None
    clone = layers.deserialize(layers.serialize(layer))
    assert type(clone) is Normalization and clone.get_config() == config
    clone(data[:2])
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(data), layer(data))


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("axis,shape", [(-1, (4, 3)), ((1, 2), (3, 2, 3)), (None, (3, 4)), (1, (3, 2, 2))])
def test_backward_is_the_input_gradient(rng, axis, shape, invert):
    layer = Normalization(axis=axis, invert=invert, dtype="float64")
    layer.adapt(rng.normal(1, 3, (10,) + shape[1:]))
    x = rng.normal(0, 2, shape)
    y, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert layer.backward(cache, dy, need_input_grad=False) is None
    np.testing.assert_allclose(dx, numeric_input_gradient(layer, x, dy), rtol=1e-7, atol=1e-9)


def test_normalization_inside_a_model_that_trains(rng):
    x = rng.normal(0, 1, (256, 4)) * [1, 10, 100, 1000] + [0, -50, 500, 2e4]  # raw features, wildly scaled
    y = (x - [0, -50, 500, 2e4]) / [1, 10, 100, 1000] @ np.array([[1.0], [-2.0], [0.5], [1.5]])
    norm = Normalization(name="norm")
    norm.adapt(x)
    stats = norm.get_weights()
    model = fastnn.Sequential([fastnn.Input(shape=(4,)), norm, layers.Dense(16, activation="tanh"), layers.Dense(1)])
    model.compile(fastnn.optimizers.Adam(0.01), "mse")
    assert model.count_params() == 8 + 1 + 4 * 16 + 16 + 16 + 1  # mean, variance, count
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "norm (Normalization)" in text
    assert "Non-trainable params: 9" in text and f"Trainable params: {4 * 16 + 16 + 16 + 1}" in text
    assert len(model.non_trainable_weights) == 3 and all(v.trainable for v in model.trainable_weights)
    history = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.05 * losses[0]
    for after, before in zip(norm.get_weights(), stats):  # never changed by the optimizer
        np.testing.assert_array_equal(after, before)
    # The statistics are model weights: they travel with get_weights / set_weights.
    twin = fastnn.Sequential([fastnn.Input(shape=(4,)), Normalization(), layers.Dense(16, activation="tanh"),
                              layers.Dense(1)])
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_array_equal(twin.layers[0].get_weights()[0], stats[0])


def test_adapt_after_the_model_is_built_writes_into_its_weights(rng):
    model = fastnn.Sequential([fastnn.Input(shape=(3,)), Normalization(), layers.Dense(2)])
    data = rng.normal(4, 2, (40, 3))
    model.layers[0].adapt(data)
    np.testing.assert_allclose(model.get_weights()[0], data.mean(axis=0), rtol=1e-6)
    assert np.shares_memory(model.layers[0].adapt_mean.value, model._params)


@pytest.mark.parametrize("make,error,message", [
    (lambda: Normalization(mean=1.0), ValueError, "give both 'mean' and 'variance'"),
    (lambda: Normalization(mean=[1., 2.], variance=[1.]), ValueError, "same shape"),
    (lambda: Normalization(axis=-1, mean=np.ones((2, 2)), variance=np.ones((2, 2))), ValueError, "dimensions"),
    (lambda: Normalization(mean=0., variance=-1.), ValueError, "must be >= 0"),
    (lambda: Normalization(axis=(1, 1)), ValueError, "repeats"),
    (lambda: Normalization(axis="last"), TypeError, "'axis' must be"),
    (lambda: Normalization(axis=1.5), TypeError, "'axis' must be"),
])
def test_normalization_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_normalization_bad_data(rng):
    with pytest.raises(ValueError, match="batch axis: for inputs without feature axes use axis=None"):
        Normalization(axis=-1).adapt(np.arange(5.0))  # 1-D data: only the batch axis
    with pytest.raises(ValueError, match="out of range"):
        Normalization(axis=2).adapt(np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        Normalization().adapt(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="empty"):
        Normalization().adapt(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="batch_size"):
        Normalization().adapt(np.ones((3, 2)), batch_size=0)
    layer = Normalization(axis=-1)
    layer.adapt(rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(None, 3\)"):
        layer.adapt(rng.normal(size=(10, 4)))
    with pytest.raises(TypeError, match="numeric"):
        Normalization().adapt(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="does not broadcast"):
        Normalization(axis=-1, mean=[1., 2.], variance=[1., 1.])(np.ones((2, 3)))


# ---- Rescaling -----------------------------------------------------------------------------------------
def test_rescaling_forward_backward_and_config(rng):
    layer = Rescaling(1 / 127.5, offset=-1)
    images = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    out = layer(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, images / 127.5 - 1, rtol=1e-6, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1
    assert layer.weights == [] and layer.count_params() == 0
    config = layer.get_config()
    assert config["scale"] == 1 / 127.5 and config["offset"] == -1.0
    clone = layers.deserialize(layers.serialize(layer))
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone(images), out)

    per_channel = Rescaling([1.0, 0.5, 2.0], offset=[0.0, 1.0, -1.0], dtype="float64")
    x = rng.normal(size=(3, 2, 3))
    np.testing.assert_allclose(per_channel(x, training=True), x * [1.0, 0.5, 2.0] + [0.0, 1.0, -1.0])
    y, cache = per_channel.forward(x, training=True)
    np.testing.assert_allclose(y, x * [1.0, 0.5, 2.0] + [0.0, 1.0, -1.0])
    dy = rng.uniform(-1, 1, x.shape)
    dx = per_channel.backward(cache, dy)
    assert per_channel.backward(cache, dy, need_input_grad=False) is None
    np.testing.assert_allclose(dx, numeric_input_gradient(per_channel, x, dy), rtol=1e-8, atol=1e-10)
    assert layers.deserialize(layers.serialize(per_channel)).get_config()["scale"] == [1.0, 0.5, 2.0]


def test_rescaling_in_a_model(rng):
    x = rng.integers(0, 256, (64, 8), dtype=np.uint8)
    y = (x[:, :1] / 255.0 > 0.5).astype(np.float32)
    model = fastnn.Sequential([fastnn.Input(shape=(8,)), Rescaling(1 / 255), layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    history = model.fit(x, y, epochs=5, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.count_params() == 9


def test_rescaling_bad_arguments():
    with pytest.raises(ValueError, match="finite"):
        Rescaling(np.inf)
    with pytest.raises(TypeError, match="numeric"):
        Rescaling("1/255")
    with pytest.raises(ValueError, match="does not broadcast"):
        Rescaling([1.0, 2.0])(np.ones((2, 3)))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        Rescaling(np.ones((2, 3)))(np.ones((2, 3)))


# ---- fastnn.preprocessing --------------------------------------------------------------------------------
def test_the_namespace():
    assert preprocessing.Normalization is layers.Normalization
    assert preprocessing.Rescaling is layers.Rescaling
    assert preprocessing.to_categorical is fastnn.utils.to_categorical
    assert set(preprocessing.__all__) == {"Normalization", "Rescaling", "to_categorical", "min_max_scale",
                                          "pad_sequences", "sequence"}
    assert not hasattr(preprocessing, "train_test_split")
    assert {"Normalization", "Rescaling"} <= set(layers.__all__)


def test_min_max_scale_per_feature_with_a_constant_column():
    x = np.array([[1., 10., -3.], [3., 10., 0.], [5., 10., 3.]])
    out = min_max_scale(x)
    np.testing.assert_allclose(out, [[0., 0., 0.], [0.5, 0., 0.5], [1., 0., 1.]])
    assert out.dtype == np.float64
    out = min_max_scale(x, feature_range=(-1, 1))
    np.testing.assert_allclose(out[:, 0], [-1., 0., 1.])
    np.testing.assert_array_equal(out[:, 1], -1.0)  # a constant feature maps to low
    assert np.all(np.isfinite(min_max_scale(np.full((4, 2), 7.0))))


def test_min_max_scale_matches_the_formula(rng):
    x = rng.normal(0, 5, (30, 4)).astype(np.float32)
    lo, hi = x.min(axis=0), x.max(axis=0)
    out = min_max_scale(x, feature_range=(-2, 3))
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, (x - lo) / (hi - lo) * 5 - 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.min(axis=0), -2, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=0), 3, atol=1e-6)


def test_min_max_scale_axes_and_given_ranges(rng):
    images = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    out = min_max_scale(images, axis=None)
    assert out.dtype == np.float32  # integers: floatx
    np.testing.assert_allclose(out, (images - images.min()) / float(images.max() - images.min()), rtol=1e-6)
    per_image = min_max_scale(images, axis=(1, 2))
    np.testing.assert_allclose(per_image.reshape(5, -1).min(axis=1), 0)
    np.testing.assert_allclose(per_image.reshape(5, -1).max(axis=1), 1)
    rows = rng.normal(size=(3, 6))
    by_row = min_max_scale(rows, axis=1)
    np.testing.assert_allclose(by_row, (rows - rows.min(1, keepdims=True)) / np.ptp(rows, 1, keepdims=True))
    # The range of the training data, reused on test data (outside it: outside feature_range).
    train, test = rng.normal(size=(20, 3)), rng.normal(size=(5, 3)) * 3
    out = min_max_scale(test, data_min=train.min(axis=0), data_max=train.max(axis=0))
    np.testing.assert_allclose(out, (test - train.min(0)) / np.ptp(train, 0))
    # axis=1 with per-row ranges of the reduced shape (3,): aligned with the rows, not the columns.
    np.testing.assert_allclose(min_max_scale(rows, axis=1, data_min=rows.min(1), data_max=rows.max(1)), by_row)
    np.testing.assert_allclose(min_max_scale([0., 5., 10.], data_min=0, data_max=20), [0., 0.25, 0.5])
    np.testing.assert_allclose(min_max_scale(np.zeros((0, 3)), data_min=0, data_max=1), np.zeros((0, 3)))


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(feature_range=(1, 1)), ValueError, "low < high"),
    (dict(feature_range=(0,)), ValueError, "two numbers"),
    (dict(data_min=[5., 5.], data_max=[1., 1.]), ValueError, "greater than"),
    (dict(data_min=[0., 0., 0.]), ValueError, "does not match"),
    (dict(axis=2), ValueError, "out of range"),
    (dict(axis=(0, 0)), ValueError, "repeats"),
    (dict(axis="rows"), TypeError, "'axis' must be"),
])
def test_min_max_scale_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        min_max_scale(np.ones((4, 2)), **kwargs)


def test_min_max_scale_bad_data():
    with pytest.raises(ValueError, match="empty"):
        min_max_scale(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        min_max_scale(np.array([[1.0], [np.nan]]))
    with pytest.raises(TypeError, match="numeric"):
        min_max_scale(np.array(["a"]))
