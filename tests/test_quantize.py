"""model.quantize("int8"): each quantized layer against Keras 3's formulas written in NumPy,
whole models on the digits data (accuracy, save/load, file size), errors and summary."""

import os
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import layers


def _abs_max(x, axis):
    """Keras 3's abs_max_quantize in NumPy float32: (int8 values, scale keepdims)."""
    x = np.asarray(x, np.float32)
    scale = np.float32(127) / (np.max(np.abs(x), axis=axis, keepdims=True) + np.float32(1e-7))
    return np.clip(np.rint(x * scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def _int8_product(x, w_q, w_scale, bias=None):
    """Keras' quantized Dense: (x_q @ w_q) / (x_scale · w_scale) + bias, exact integer product."""
    x_q, x_scale = _abs_max(x, -1)
    y = (x_q.astype(np.int64) @ w_q.astype(np.int64)).astype(np.float32) / (x_scale * w_scale)
    return y if bias is None else y + bias


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _model(layer, shape, dtype=None):
    inputs = fastnn.Input(shape, dtype=dtype)
    return fastnn.Model(inputs, layer(inputs))


@pytest.mark.parametrize("activation", [None, "relu", "softmax", "tanh"])
def test_dense_follows_keras_formula(activation):
    rng = np.random.default_rng(0)
    layer = layers.Dense(13, activation=activation)
    model = _model(layer, (37,))
    w, b = rng.normal(size=(37, 13)).astype(np.float32), rng.normal(size=13).astype(np.float32)
    model.set_weights([w, b])
    assert model.quantize("int8") == {"quantized": [layer.name], "skipped": []}
    w_q, w_scale = _abs_max(w, 0)
    assert [v.name.split("/")[-1] for v in layer.weights] == ["kernel", "bias", "kernel_scale"]
    assert layer.kernel.dtype == np.int8 and not layer.kernel.trainable and not layer.kernel_scale.trainable
    np.testing.assert_array_equal(layer.kernel.numpy(), w_q)
    np.testing.assert_array_equal(layer.kernel_scale.numpy(), w_scale.reshape(13))
    x = rng.normal(size=(9, 37)).astype(np.float32) * 3
    z = _int8_product(x, w_q, w_scale, b)
    expected = {None: z, "relu": np.maximum(z, 0), "softmax": _softmax(z), "tanh": np.tanh(z)}[activation]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=2e-6, atol=2e-6)
    assert layer.dtype_policy.name == "int8_from_float32" and layer.quantization_mode == "int8"
    assert layer.dtype == "float32"


@pytest.mark.parametrize("equation, output_shape, bias_axes, scale_shape", [
    ("abc,cde->abde", (5, 3, 4), "de", (1, 1, 3, 4)),  # attention's query projection (fused)
    ("abcd,cde->abe", (5, 6), "e", (1, 1, 6)),  # attention's output projection (fused)
    ("abc,cd->adb", (4, 5), None, (1, 4, 1)),  # the general path
])
def test_einsum_dense_follows_keras_formula(equation, output_shape, bias_axes, scale_shape):
    rng = np.random.default_rng(1)
    shape = (5, 3, 4) if equation.startswith("abcd") else (5, 8)
    layer = layers.EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes, activation="relu")
    model = _model(layer, shape)
    model.quantize("int8")
    assert layer.kernel_scale.shape == scale_shape
    kernel = layer.kernel.numpy()
    ins, rest = equation.split(",")
    ker, out = rest.split("->")
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    x_q, x_scale = _abs_max(x, tuple(i for i, d in enumerate(ins) if d not in out))
    # the input scale laid out along the output (Keras' _adjust_scale_for_quant)
    kept = [d for d in ins if d in out]
    x_scale = x_scale.reshape([n for d, n in zip(ins, x_scale.shape) if d in out])
    x_scale = x_scale.transpose([kept.index(d) for d in out if d in ins])
    x_scale = x_scale.reshape([x_scale.shape[[d for d in out if d in ins].index(d)] if d in ins else 1 for d in out])
    z = np.einsum(f"{ins},{ker}->{out}", x_q.astype(np.int64), kernel.astype(np.int64)).astype(np.float32)
    z = z / (x_scale * layer.kernel_scale.numpy())
    if bias_axes:
        z = z + layer.bias.numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), np.maximum(z, 0), rtol=2e-6, atol=2e-6)


def test_einsum_dense_kernel_is_abs_max_over_the_contracted_axes():
    layer = layers.EinsumDense("abc,cde->abde", output_shape=(None, 3, 4), bias_axes="de")
    model = _model(layer, (5, 8))
    w = layer.kernel.numpy()
    model.quantize("int8")
    w_q, w_scale = _abs_max(w, 0)
    np.testing.assert_array_equal(layer.kernel.numpy(), w_q)
    np.testing.assert_array_equal(layer.kernel_scale.numpy(), w_scale.reshape(1, 1, 3, 4))


def test_multi_head_attention_projections_are_quantized():
    inputs = fastnn.Input((6, 16))
    model = fastnn.Model(inputs, layers.MultiHeadAttention(2, 8)(inputs, inputs))
    x = np.random.default_rng(2).normal(size=(3, 6, 16)).astype(np.float32)
    before = model.predict(x, verbose=0)
    report = model.quantize("int8")
    assert sorted(report["quantized"]) == ["attention_output", "key", "query", "value"]
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=0.05)


def test_embedding_follows_keras_formula():
    layer = layers.Embedding(20, 6)
    model = _model(layer, (4,), dtype="int32")
    table = layer.embeddings.numpy()
    model.quantize("int8")
    q, scale = _abs_max(table, -1)  # one scale per row
    assert [v.name.split("/")[-1] for v in layer.weights] == ["embeddings", "embeddings_scale"]
    np.testing.assert_array_equal(layer.embeddings.numpy(), q)
    np.testing.assert_array_equal(layer.embeddings_scale.numpy(), scale.reshape(20))
    ids = np.array([[0, 3, 19, 3], [7, 7, 1, 0]])
    np.testing.assert_allclose(model.predict(ids, verbose=0), q[ids] / scale.reshape(20)[ids][..., None],
                               rtol=1e-7)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        model.predict(np.array([[20, 0, 0, 0]]), verbose=0)


def _patches_2d(x, k, stride, padding):
    """Reference im2col by loops: rows (batch, out_h, out_w) of (kh, kw, channels) patches."""
    n, h, w, c = x.shape
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        ph, pw = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - w, 0)
        x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    else:
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    rows = [x[b, i * stride:i * stride + k, j * stride:j * stride + k, :].reshape(-1)
            for b in range(n) for i in range(oh) for j in range(ow)]
    return np.array(rows, np.float32), (n, oh, ow)


@pytest.mark.parametrize("stride, padding", [(1, "valid"), (2, "same"), (1, "same")])
def test_conv2d_quantizes_per_filter_and_each_patch(stride, padding):
    rng = np.random.default_rng(3)
    layer = layers.Conv2D(5, 3, strides=stride, padding=padding, activation="relu")
    model = _model(layer, (7, 6, 8))  # patches of 3·3·8 = 72 values (shorter ones stay float)
    w, b = layer.kernel.numpy(), rng.normal(size=5).astype(np.float32)
    layer.bias.assign(b)
    model.quantize("int8")
    w_q, w_scale = _abs_max(w, (0, 1, 2))
    np.testing.assert_array_equal(layer.kernel.numpy(), w_q)
    np.testing.assert_array_equal(layer.kernel_scale.numpy(), w_scale.reshape(5))
    x = rng.normal(size=(2, 7, 6, 8)).astype(np.float32)
    patches, out = _patches_2d(x, 3, stride, padding)
    z = _int8_product(patches, w_q.reshape(-1, 5), w_scale.reshape(5), b)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.maximum(z, 0).reshape(out + (5,)), rtol=2e-6,
                               atol=2e-6)


def test_conv1d_causal_and_grouped_or_short_patch_convs_stay_float():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 9, 40)).astype(np.float32)
    layer = layers.Conv1D(3, 2, padding="causal")
    model = _model(layer, (9, 40))
    w, b = layer.kernel.numpy(), layer.bias.numpy()
    model.quantize("int8")
    w_q, w_scale = _abs_max(w, (0, 1))
    padded = np.pad(x, [(0, 0), (1, 0), (0, 0)])
    patches = np.stack([padded[:, t:t + 2].reshape(2, -1) for t in range(9)], axis=1).reshape(-1, 80)
    z = _int8_product(patches, w_q.reshape(-1, 3), w_scale.reshape(3), b).reshape(2, 9, 3)
    np.testing.assert_allclose(model.predict(x, verbose=0), z, rtol=2e-6, atol=2e-6)
    grouped = _model(layers.Conv2D(4, 3, groups=2, name="grouped"), (5, 5, 2))
    with pytest.warns(UserWarning, match=r"grouped \(Conv2D: groups > 1\)"):
        assert grouped.quantize("int8") == {"quantized": [], "skipped": ["grouped"]}
    short = _model(layers.Conv2D(4, 3, name="short"), (5, 5, 2))  # 18 multiply-adds per output
    with pytest.warns(UserWarning, match=r"short \(Conv2D: patches of 18 values \(< 64\)"):
        assert short.quantize("int8") == {"quantized": [], "skipped": ["short"]}


@pytest.mark.parametrize("make", [lambda: layers.LSTM(6, return_sequences=True), lambda: layers.GRU(5),
                                  lambda: layers.GRU(5, reset_after=False)])
def test_recurrent_input_projection_is_int8(make):
    rng = np.random.default_rng(5)
    layer = make()
    model = _model(layer, (7, 4))
    w = layer.kernel.numpy()
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.quantize("int8")
    w_q, w_scale = _abs_max(w, 0)
    assert [v.name.split("/")[-1] for v in layer.weights] == ["kernel", "recurrent_kernel", "bias", "kernel_scale"]
    np.testing.assert_array_equal(layer.kernel.numpy(), w_q)
    # the reference: the float recurrence over the int8 projections (Keras' Dense formula per step)
    projections = _int8_product(x.reshape(21, 4), w_q, w_scale.reshape(-1)).reshape(3, 7, -1)
    float_twin = make()
    twin = _model(float_twin, (7, w.shape[1]))
    twin.set_weights([np.eye(w.shape[1], dtype=np.float32), layer.recurrent_kernel.numpy(), layer.bias.numpy()])
    np.testing.assert_allclose(model.predict(x, verbose=0), twin.predict(projections, verbose=0), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=0.02)


# ---- whole models on the digits data --------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    (x, y), (x_test, y_test) = fastnn.datasets.digits.load_data()
    return (x.astype(np.float32) / 16, y), (x_test.astype(np.float32) / 16, y_test)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def _trained(model, x, y, epochs):
    fastnn.utils.set_random_seed(0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_mlp_on_digits_keeps_its_accuracy_and_saves_4x_smaller(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    x, x_test = x.reshape(-1, 64), x_test.reshape(-1, 64)
    fastnn.utils.set_random_seed(0)
    model = _trained(fastnn.Sequential([fastnn.Input((64,)), layers.Dense(512, activation="relu"),
                                        layers.Dense(256, activation="relu"), layers.Dense(10, activation="softmax")]),
                     x, y, epochs=4)
    float_accuracy = _accuracy(model, x_test, y_test)
    model.save_weights(tmp_path / "float.weights.fastnn")
    model.quantize("int8")
    accuracy = _accuracy(model, x_test, y_test)
    assert float_accuracy > 0.9
    assert abs(accuracy - float_accuracy) <= 0.01, (float_accuracy, accuracy)
    loss, metric = model.evaluate(x_test, y_test, verbose=0)
    assert abs(metric - accuracy) < 1e-6 and np.isfinite(loss)
    model.save_weights(tmp_path / "int8.weights.fastnn")
    ratio = os.path.getsize(tmp_path / "float.weights.fastnn") / os.path.getsize(tmp_path / "int8.weights.fastnn")
    assert ratio >= 3.5, ratio
    model.save(tmp_path / "int8.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "int8.fastnn")
    assert [layer.dtype_policy.name for layer in loaded.layers] == ["int8_from_float32"] * 3
    assert loaded.layers[0].kernel.dtype == np.int8
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
    # weights into a quantized model of the same architecture: repacked, the same predictions
    twin = fastnn.Sequential([fastnn.Input((64,)), layers.Dense(512, activation="relu"),
                              layers.Dense(256, activation="relu"), layers.Dense(10, activation="softmax")])
    twin.quantize("int8")
    twin.predict(x_test[:2], verbose=0)  # packs the zero kernels once
    twin.load_weights(tmp_path / "int8.weights.fastnn")
    np.testing.assert_array_equal(twin.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
    twin.set_weights([w * 0 if w.dtype == np.int8 else w for w in model.get_weights()])
    assert not np.array_equal(twin.predict(x_test[:5], verbose=0), model.predict(x_test[:5], verbose=0))
    with pytest.raises(ValueError, match="int8"):  # a float file does not load into int8 weights
        twin.load_weights(tmp_path / "float.weights.fastnn")


def test_cnn_on_digits_keeps_its_accuracy(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    x, x_test = x[..., None], x_test[..., None]
    fastnn.utils.set_random_seed(0)
    model = _trained(fastnn.Sequential([fastnn.Input((8, 8, 1)), layers.Conv2D(16, 3, activation="relu"),
                                        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.Flatten(),
                                        layers.Dense(10, activation="softmax")]), x, y, epochs=4)
    float_accuracy = _accuracy(model, x_test, y_test)
    model.quantize("int8")
    accuracy = _accuracy(model, x_test, y_test)
    assert float_accuracy > 0.9
    assert abs(accuracy - float_accuracy) <= 0.01, (float_accuracy, accuracy)
    model.save(tmp_path / "cnn.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "cnn.fastnn")
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))


# ---- errors, reports, summary ---------------------------------------------------------------------------
def _mlp():
    return fastnn.Sequential([fastnn.Input((8,)), layers.Dense(4, activation="relu", name="hidden"),
                              layers.BatchNormalization(name="norm"), layers.Dense(2, name="out")])


def test_errors_name_what_is_wrong():
    unbuilt = fastnn.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        unbuilt.quantize("int8")
    model = _mlp()
    with pytest.raises(ValueError, match="invalid quantization mode 'int4'.*'int8'"):
        model.quantize("int4")
    with pytest.warns(UserWarning, match=r"stay float.*norm \(BatchNormalization\)"):
        report = model.quantize("int8")
    assert report == {"quantized": ["hidden", "out"], "skipped": ["norm"]}
    with pytest.raises(ValueError, match=r"already quantized.*hidden \(Dense\), out \(Dense\)"):
        model.quantize("int8")
    model.compile("adam", "mse")
    x, y = np.ones((4, 8), np.float32), np.ones((4, 2), np.float32)
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.train_on_batch(x, y)):
        with pytest.raises(ValueError, match=r"cannot be trained.*hidden \(Dense\), out \(Dense\)"):
            call()
    assert np.isfinite(model.evaluate(x, y, verbose=0))
    with pytest.raises(ValueError, match="whole numbers"):
        model.layers[0].kernel.assign(np.full((8, 4), 0.5))
    with pytest.raises(NotImplementedError):
        model.layers[1].quantize("int8")


def test_filters_choose_the_layers():
    model = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the filtered-out layers are no warning
        assert model.quantize("int8", filters="^out$") == {"quantized": ["out"], "skipped": []}
    assert model.layers[0].quantization_mode is None


def test_summary_shows_the_dtypes():
    model = _mlp()
    model.quantize("int8", verbose=False)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Dtype" in text and text.count("int8_from_float32") == 2 and "float32" in text
    # 4·8 + ... bytes: the int8 kernels count one byte per value
    int8_values = 8 * 4 + 4 * 2
    floats = sum(v.value.size for v in model.weights) - int8_values
    assert f"({int8_values + 4 * floats:.2f} B)" in text
