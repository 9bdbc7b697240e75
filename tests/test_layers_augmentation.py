"""Image augmentation layers: RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
RandomCrop, RandomContrast (fastnn/layers/augmentation.py)."""

import json

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers
from test_layers_pooling import spy_backward

ALL = [
    lambda **kw: layers.RandomFlip(**kw),
    lambda **kw: layers.RandomRotation(0.2, **kw),
    lambda **kw: layers.RandomTranslation(0.2, 0.3, **kw),
    lambda **kw: layers.RandomZoom(0.3, **kw),
    lambda **kw: layers.RandomCrop(5, 6, **kw),
    lambda **kw: layers.RandomContrast(0.4, value_range=(0, 1), **kw),
]
IDS = ["flip", "rotation", "translation", "zoom", "crop", "contrast"]


def keras_rotation(angle, h, w):
    cos, sin = np.cos(angle), np.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
    return np.stack([cos, -sin, x_off, sin, cos, y_off, 0 * cos, 0 * cos], axis=-1)


def resize_reference(x, height, width):
    """Bilinear resize with half-pixel centres, taps clamped to the image (TF's formulation)."""
    _, h, w, _ = x.shape

    def axis(out, size):
        src = (np.arange(out) + 0.5) * (size / out) - 0.5
        lo = np.floor(src)
        frac = src - lo
        return (np.clip(lo, 0, size - 1).astype(int), np.clip(lo + 1, 0, size - 1).astype(int), frac)

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture
def images(rng):
    return rng.random((6, 9, 11, 3)).astype(np.float32)


# ---- inference, reproducibility, per-image parameters ------------------------------------------
@pytest.mark.parametrize("make", ALL[:4] + ALL[5:], ids=IDS[:4] + IDS[5:])
def test_identity_at_inference(make, images):
    layer = make(seed=1)
    assert layer(images) is images
    assert layer(images, training=False) is images
    y, cache = layer.forward(images)
    assert y is images and cache is None  # inference keeps nothing
    np.testing.assert_array_equal(layer.backward(cache, images * 2), images * 2)  # the gradient passes through


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_seeded_layers_reproduce_and_vary_between_calls(make, images):
    a, b = make(seed=7), make(seed=7)
    first = a(images, training=True)
    np.testing.assert_array_equal(first, b(images, training=True))
    assert not np.array_equal(first, a(images, training=True))  # the next batch draws anew


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_set_random_seed_makes_unseeded_layers_reproducible(make, images):
    outputs = []
    for _ in range(2):
        fastnn.utils.set_random_seed(123)
        layer = make()
        outputs.append([layer(images, training=True) for _ in range(2)])
    for one, two in zip(*outputs):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_each_image_of_a_batch_gets_its_own_parameters(make, rng):
    one = rng.random((1, 9, 11, 3)).astype(np.float32)
    batch = np.repeat(one, 16, axis=0)
    out = make(seed=3)(batch, training=True)
    distinct = {out[i].tobytes() for i in range(len(out))}
    kind = type(make())
    assert len(distinct) >= {layers.RandomFlip: 3, layers.RandomCrop: 8}.get(kind, 16)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_float64_and_shapes(make, rng):
    x = rng.random((4, 9, 11, 2))
    layer = make(seed=0, dtype="float64")
    y = layer(x, training=True)
    assert y.dtype == np.float64
    expected = (4, 5, 6, 2) if isinstance(layer, layers.RandomCrop) else x.shape
    assert y.shape == expected
    assert layer.output_shape == (None,) + expected[1:]
    empty = layer(np.zeros((0, 9, 11, 2)), training=True)
    assert empty.shape == (0,) + expected[1:]


# ---- each layer's maths -----------------------------------------------------------------------
def test_flip_flips_about_half_the_images_per_axis():
    x = np.arange(2 * 3, dtype=np.float32).reshape(1, 2, 3, 1)
    batch = np.repeat(x, 4000, axis=0)
    h_flipped, v_flipped = x[:, :, ::-1], x[:, ::-1]
    out = layers.RandomFlip("horizontal", seed=0)(batch, training=True)
    is_h = np.all(out == h_flipped, axis=(1, 2, 3))
    assert np.all(is_h | np.all(out == x, axis=(1, 2, 3)))
    assert 0.46 < is_h.mean() < 0.54
    out = layers.RandomFlip("vertical", seed=0)(batch, training=True)
    is_v = np.all(out == v_flipped, axis=(1, 2, 3))
    assert np.all(is_v | np.all(out == x, axis=(1, 2, 3))) and 0.46 < is_v.mean() < 0.54
    out = layers.RandomFlip(seed=0)(batch, training=True)  # horizontal_and_vertical: independent draws
    kinds = [np.all(out == ref, axis=(1, 2, 3)) for ref in (x, h_flipped, v_flipped, x[:, ::-1, ::-1])]
    assert np.all(np.sum(kinds, axis=0) == 1)
    for kind in kinds:
        assert 0.21 < kind.mean() < 0.29


def test_rotation_draws_angles_as_a_fraction_of_a_full_turn(images):
    n, h, w, _ = images.shape
    layer = layers.RandomRotation((-0.1, 0.3), fill_mode="constant", interpolation="nearest", seed=5, fill_value=2.0)
    angles = np.random.default_rng(5).uniform(-0.1, 0.3, n) * 2 * np.pi
    expected = fastnn.ops.affine_transform(images, keras_rotation(angles, h, w), "nearest", "constant", 2.0)
    np.testing.assert_array_equal(layer(images, training=True), expected)
    # factor 0.25 exactly: a quarter turn counter-clockwise (positive angles), as np.rot90.
    square = images[:, :9, :9]
    quarter = layers.RandomRotation((0.25, 0.25), interpolation="nearest")(square, training=True)
    np.testing.assert_array_equal(quarter, np.rot90(square, k=1, axes=(1, 2)))
    assert layers.RandomRotation(0.3)._lower == -0.3  # a number f means [-f, f]


@pytest.mark.parametrize("layer", [layers.RandomRotation(0.0), layers.RandomZoom(0.0), layers.RandomZoom(0, 0),
                                   layers.RandomTranslation(0.0, 0.0), layers.RandomRotation((0, 0), "constant")])
def test_zero_factors_are_the_identity_in_training(layer, images):
    np.testing.assert_array_equal(layer(images, training=True), images)


def test_translation_shifts_down_and_right_for_positive_factors(images):
    n, h, w, _ = images.shape  # 9 x 11
    layer = layers.RandomTranslation((2 / 9, 2 / 9), (-3 / 11, -3 / 11), fill_mode="constant", fill_value=-1.0)
    y = layer(images, training=True)
    np.testing.assert_allclose(y[:, 2:, :-3], images[:, :-2, 3:], rtol=1e-6)  # down 2, left 3
    assert np.all(y[:, :2] == -1) and np.all(y[:, :, -3:] == -1)
    # bounds and per-image draws: height shift = uniform(lower, upper) * height
    layer = layers.RandomTranslation(0.2, (0.1, 0.3), seed=4)
    g = np.random.default_rng(4)
    dy, dx = g.uniform(-0.2, 0.2, n) * h, g.uniform(0.1, 0.3, n) * w
    t = np.stack([np.ones(n), 0 * dx, -dx, 0 * dx, np.ones(n), -dy, 0 * dx, 0 * dx], axis=1)
    np.testing.assert_array_equal(layer(images, training=True), fastnn.ops.affine_transform(images, t, "bilinear", "reflect"))


def test_zoom_in_and_out(images):
    n, h, w, _ = images.shape
    # height_factor -0.5: zoom 0.5 (in); the centre pixel stays, its neighbours spread out.
    zoom_in = layers.RandomZoom((-0.5, -0.5), interpolation="nearest")(images, training=True)
    t = np.array([0.5, 0, (w - 1) / 4, 0, 0.5, (h - 1) / 4, 0, 0])
    np.testing.assert_array_equal(zoom_in, fastnn.ops.affine_transform(images, t, "nearest", "reflect"))
    np.testing.assert_array_equal(zoom_in[:, 4, 5], images[:, 4, 5])
    # positive: zoom out, the borders read outside the image
    out = layers.RandomZoom((1.0, 1.0), fill_mode="constant", fill_value=7.0)(images, training=True)
    assert np.all(out[:, 0] == 7) and np.all(out[:, :, 0] == 7)
    np.testing.assert_allclose(out[:, 4, 5], images[:, 4, 5])
    # width_factor None keeps the aspect ratio (one draw for both axes); a separate one does not
    layer = layers.RandomZoom(0.3, seed=2)
    zy = 1 + np.random.default_rng(2).uniform(-0.3, 0.3, n)
    t = np.stack([zy, 0 * zy, (w - 1) / 2 * (1 - zy), 0 * zy, zy, (h - 1) / 2 * (1 - zy), 0 * zy, 0 * zy], axis=1)
    np.testing.assert_array_equal(layer(images, training=True), fastnn.ops.affine_transform(images, t, "bilinear", "reflect"))
    layer = layers.RandomZoom(0.3, (0.1, 0.2), seed=2)
    g = np.random.default_rng(2)
    zy, zx = 1 + g.uniform(-0.3, 0.3, n), 1 + g.uniform(0.1, 0.2, n)
    t = np.stack([zx, 0 * zy, (w - 1) / 2 * (1 - zx), 0 * zy, zy, (h - 1) / 2 * (1 - zy), 0 * zy, 0 * zy], axis=1)
    np.testing.assert_array_equal(layer(images, training=True), fastnn.ops.affine_transform(images, t, "bilinear", "reflect"))


def test_crop_training_takes_a_window_of_each_image(images):
    layer = layers.RandomCrop(5, 6, seed=0)
    out = layer(np.repeat(images[:1], 50, axis=0), training=True)
    assert out.shape == (50, 5, 6, 3)
    found = set()
    for crop in out:
        hits = [(t, l) for t in range(9 - 5 + 1) for l in range(11 - 6 + 1)
                if np.array_equal(images[0, t:t + 5, l:l + 6], crop)]
        assert len(hits) == 1
        found.add(hits[0])
    assert len(found) > 10  # offsets differ between the images of a batch
    assert {t for t, _ in found} == set(range(5)) and {l for _, l in found} == set(range(6))


def test_crop_inference_resizes_the_centred_window(images):
    # 9 x 11 -> 5 x 6: the largest centred window with aspect 5:6 is 9 x 10 (cols 0..9)
    y = layers.RandomCrop(5, 6)(images)
    assert y.shape == (6, 5, 6, 3)
    np.testing.assert_allclose(y, resize_reference(images[:, :, 0:10], 5, 6), rtol=1e-5, atol=1e-6)
    # a target of the input's size passes it through at inference
    same = layers.RandomCrop(9, 11)
    assert same(images) is images
    # upscaling (input smaller than the target): the same resize, in training too
    layer = layers.RandomCrop(12, 30, seed=0)
    expected = resize_reference(images[:, 2:6], 12, 30)  # window 4 x 11 (aspect 12:30 = 0.4)
    np.testing.assert_allclose(layer(images, training=True), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer(images), expected, rtol=1e-5, atol=1e-6)


def test_contrast_matches_the_formula_and_clips(images):
    n = images.shape[0]
    layer = layers.RandomContrast(0.5, value_range=(0, 1), seed=9)
    c = np.random.default_rng(9).uniform(0.5, 1.5, n).astype(np.float32).reshape(n, 1, 1, 1)
    mean = images.mean(axis=(1, 2), keepdims=True)
    expected = np.clip((images - mean) * c + mean, 0, 1)
    np.testing.assert_allclose(layer(images, training=True), expected, rtol=1e-6, atol=1e-6)
    # factors below and above 1 both occur (f means [1 - f, 1 + f])
    wide = layers.RandomContrast(0.5, value_range=(-100, 100), seed=1)
    x = np.repeat(images[:1], 200, axis=0)
    out = wide(x, training=True)
    ratio = out.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    assert 0.5 <= ratio.min() < 0.6 and 1.4 < ratio.max() <= 1.5
    # channel means are kept (without clipping)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layers.RandomContrast(0.0)(images * 255, training=True), images * 255, rtol=1e-5)
    # default value_range (0, 255)
    big = layers.RandomContrast((0.9, 1.0), seed=0)(images * 1000, training=True)
    assert big.min() >= 0 and big.max() == 255


# ---- backward ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ALL + [lambda **kw: layers.RandomRotation(0.3, "constant", fill_value=0.5, **kw),
                                        lambda **kw: layers.RandomZoom((0.5, 0.8), fill_mode="wrap", **kw),
                                        lambda **kw: layers.RandomCrop(12, 30, **kw),
                                        lambda **kw: layers.RandomContrast(0.4, value_range=(0.2, 0.8), **kw)],
                         ids=IDS + ["rotation-constant", "zoom-wrap", "crop-resize", "contrast-clipping"])
def test_backward_matches_finite_differences(make, rng):
    x = rng.random((3, 9, 11, 2))
    layer = make(dtype="float64")

    def run(value):
        layer._generator = np.random.default_rng(11)  # the same random parameters every call
        return layer.forward(value, training=True)

    layer(x)
    y, cache = run(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(cache, dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    eps = 1e-6
    for _ in range(4):
        v = rng.standard_normal(x.shape)
        numeric = np.vdot(run(x + eps * v)[0] - run(x - eps * v)[0], dy) / (2 * eps)
        assert np.vdot(dx, v) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_a_first_layer_computes_no_input_gradient(images, digits):
    layer = layers.RandomRotation(0.2, seed=0)
    _, cache = layer.forward(images, training=True)
    assert layer.backward(cache, images, need_input_grad=False) is None
    (x_train, y_train), _ = digits
    first = layers.RandomFlip(input_shape=(8, 8, 1))
    model = keras.Sequential([first, layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    calls = spy_backward(first)
    model.fit(x_train[:64], y_train[:64], epochs=1, batch_size=32, verbose=0)
    assert all(need is False and dx is None for need, dx in calls)  # no dx asked for (or no call at all)


def test_gradients_reach_the_layers_before_the_augmentation(digits):
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    conv = layers.Conv2D(4, 3, padding="same", input_shape=(8, 8, 1))
    augmentation = [layers.RandomFlip(), layers.RandomRotation(0.1), layers.RandomTranslation(0.1, 0.1),
                    layers.RandomZoom(0.1), layers.RandomCrop(7, 7), layers.RandomContrast(0.2, value_range=(-1, 2))]
    model = keras.Sequential([conv] + augmentation + [layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    calls = [spy_backward(layer) for layer in augmentation]
    before = conv.get_weights()[0]
    model.fit(x_train[:64], y_train[:64], epochs=1, batch_size=32, verbose=0)
    assert np.abs(conv.get_weights()[0] - before).max() > 1e-4
    shapes = [(32, 8, 8, 4)] * 5 + [(32, 7, 7, 4)]
    for layer_calls, shape in zip(calls, shapes):  # every augmentation layer passed dx on, each batch
        assert len(layer_calls) == 2 and all(need and dx.shape == shape for need, dx in layer_calls)


# ---- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda: layers.RandomRotation(1.5), r"'factor' must be in \[-1.0, 1.0\], got 1.5"),
    (lambda: layers.RandomRotation((-2, 0.1)), r"'factor' must be in \[-1.0, 1.0\]"),
    (lambda: layers.RandomRotation((0.1, 0.2, 0.3)), "'factor' must be a number or a pair of numbers"),
    (lambda: layers.RandomRotation("0.1"), "'factor' must be a number or a pair"),
    (lambda: layers.RandomRotation(0.1, fill_mode="mirror"), "'fill_mode' must be one of 'reflect', 'wrap', "
                                                            "'constant', 'nearest', got 'mirror'"),
    (lambda: layers.RandomRotation(0.1, interpolation="bicubic"), "'interpolation' must be one of 'nearest', "
                                                                  "'bilinear', got 'bicubic'"),
    (lambda: layers.RandomRotation(0.1, fill_value="zero"), "'fill_value' must be a finite number"),
    (lambda: layers.RandomTranslation(0.1, 1.2), r"'width_factor' must be in \[-1.0, 1.0\]"),
    (lambda: layers.RandomTranslation(-1.1, 0.1), r"'height_factor' must be in"),
    (lambda: layers.RandomZoom(0.1, (0.1, 2)), r"'width_factor' must be in"),
    (lambda: layers.RandomZoom(None), "'height_factor' must be a number"),
    (lambda: layers.RandomZoom(0.1, fill_mode="edge"), "'fill_mode' must be one of"),
    (lambda: layers.RandomFlip("diagonal"), "'mode' must be one of 'horizontal', 'vertical', "
                                            "'horizontal_and_vertical', got 'diagonal'"),
    (lambda: layers.RandomCrop(0, 4), "'height' must be a positive int, got 0"),
    (lambda: layers.RandomCrop(4, 2.5), "'width' must be a positive int, got 2.5"),
    (lambda: layers.RandomContrast(1.5), r"'factor' must be in \[0, 1\]"),
    (lambda: layers.RandomContrast(-0.1), r"'factor' must be in \[0, 1\]"),
    (lambda: layers.RandomContrast(0.1, value_range=(1, 0)), "'value_range' must be a pair"),
    (lambda: layers.RandomFlip(seed=-1), "'seed' must be None or an int >= 0, got -1"),
    (lambda: layers.RandomFlip(seed=1.5), "'seed' must be None or an int"),
    (lambda: layers.RandomFlip(data_format="channels_first"), "'data_format' must be 'channels_last'"),
])
def test_bad_arguments_raise_value_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_inputs_must_be_batches_of_images():
    with pytest.raises(ValueError, match=r"expects a batch of NHWC images .* got input shape \(None, 8, 3\)"):
        layers.RandomRotation(0.1)(np.zeros((8, 8, 3)), training=True)
    assert layers.RandomFlip(data_format="channels_last")(np.zeros((1, 2, 2, 1))).shape == (1, 2, 2, 1)


# ---- configs and saving ------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [
    layers.RandomFlip("vertical", seed=3, name="flip"),
    layers.RandomRotation((-0.2, 0.1), fill_mode="constant", interpolation="nearest", seed=1, fill_value=0.5),
    layers.RandomTranslation(0.1, (0.0, 0.2), fill_mode="wrap"),
    layers.RandomZoom(-0.2, None, fill_mode="nearest", seed=4),
    layers.RandomZoom((0.1, 0.3), [-0.2, 0.2]),
    layers.RandomCrop(24, 20, seed=5),
    layers.RandomContrast((0.1, 0.4), value_range=[0, 1], seed=0),
], ids=["flip", "rotation", "translation", "zoom", "zoom-pair", "crop", "contrast"])
def test_get_config_round_trips(layer):
    cfg = layer.get_config()
    through_json = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(through_json)
    assert type(clone) is type(layer)
    assert json.loads(json.dumps(clone.get_config())) == json.loads(json.dumps(cfg))
    assert type(layer).from_config(cfg).get_config() == cfg
    x = np.random.default_rng(0).random((4, 30, 30, 1)).astype(np.float32)
    if layer.seed is not None:
        np.testing.assert_array_equal(type(layer).from_config(cfg)(x, training=True),
                                      type(layer).from_config(cfg)(x, training=True))


def test_config_keeps_keras_defaults():
    cfg = layers.RandomRotation(0.1).get_config()
    assert (cfg["fill_mode"], cfg["interpolation"], cfg["fill_value"], cfg["seed"]) == ("reflect", "bilinear", 0.0, None)
    assert layers.RandomFlip().get_config()["mode"] == "horizontal_and_vertical"
    assert layers.RandomContrast(0.2).get_config()["value_range"] == (0.0, 255.0)
    assert layers.RandomZoom(0.2).get_config()["width_factor"] is None
    assert layers.RandomRotation(0.1).name.startswith("random_rotation")


# ---- in a model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    return ((x_train.reshape(-1, 8, 8, 1).astype("float32") / 16, y_train),
            (x_test.reshape(-1, 8, 8, 1).astype("float32") / 16, y_test))


def test_a_model_starting_with_augmentation_trains_on_the_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        layers.RandomFlip("horizontal", input_shape=(8, 8, 1)),
        layers.RandomRotation(0.05),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    loss = history.history["loss"]
    assert loss[-1] < 0.4 * loss[0]
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.85
    # inference does not augment: predictions repeat exactly
    np.testing.assert_array_equal(model.predict(x_test, verbose=0), model.predict(x_test, verbose=0))


def test_training_is_reproducible_and_augmentation_can_sit_after_other_layers(digits, tmp_path):
    (x_train, y_train), (x_test, _) = digits

    def train():
        keras.utils.set_random_seed(3)
        model = keras.Sequential([
            layers.Rescaling(2.0, input_shape=(8, 8, 1)),
            layers.RandomTranslation(0.1, 0.1),  # not first (the gradient's way through: see above)
            layers.RandomZoom(0.1),
            layers.RandomCrop(7, 7),
            layers.RandomContrast(0.2, value_range=(0, 2)),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x_train[:256], y_train[:256], epochs=2, batch_size=32, verbose=0)
        return model

    first, second = train(), train()
    np.testing.assert_array_equal(first.get_weights()[0], second.get_weights()[0])
    assert first.output_shape == (None, 10)
    first.save(tmp_path / "aug.fastnn")
    loaded = keras.models.load_model(tmp_path / "aug.fastnn")
    assert [type(layer).__name__ for layer in loaded.layers][1:5] == ["RandomTranslation", "RandomZoom", "RandomCrop",
                                                                      "RandomContrast"]
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), first.predict(x_test, verbose=0))


def test_layers_are_bit_identical_on_1_and_2_threads(threads, rng):
    x = rng.random((64, 32, 32, 3)).astype(np.float32)
    outs = []
    for n in (1, 2):
        threads(n)
        layer = layers.RandomRotation(0.3, seed=0)
        y, cache = layer.forward(x, training=True)
        outs.append((y, layer.backward(cache, y)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
