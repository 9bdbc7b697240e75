"""Sequential models end to end: compile, fit, evaluate, predict, summary, weights, bad input."""

import io

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers


def small_model(seed=0, dropout=0.2, activation="softmax", units=10, features=64, dtype=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        layers.Dense(32, activation="relu", input_shape=(features,), dtype=dtype),
        layers.Dropout(dropout),
        layers.Dense(units, activation=activation, dtype=dtype),
    ])


def numpy_forward(model, x):
    """Independent reference: the model's maths in NumPy from its weights (inference)."""
    for layer in model.layers:
        if isinstance(layer, layers.Dense):
            w = layer.get_weights()
            x = x @ w[0] + (w[1] if len(w) > 1 else 0)
            name = layer.activation.name
            if name == "relu":
                x = np.maximum(x, 0)
            elif name == "softmax":
                e = np.exp(x - x.max(axis=-1, keepdims=True))
                x = e / e.sum(axis=-1, keepdims=True)
            elif name == "sigmoid":
                x = 1 / (1 + np.exp(-x))
    return x


def test_the_keras_program_from_the_issue_runs_unchanged(digits, capsys):
    (x_train, y_train), (x_test, y_test) = digits
    input_dim = x_train.shape[1]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.layers.Dense(units=64, activation='relu', input_shape=(input_dim,)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(units=10, activation='softmax'),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=5, batch_size=32, validation_split=0.2)
    loss, accuracy = model.evaluate(x_test, y_test)
    model.summary()
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 5 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert 0 < loss < 2.5 and 0.5 < accuracy <= 1
    out = capsys.readouterr().out
    assert "Epoch 5/5" in out and "Total params: 4,810" in out


def test_mlp_reaches_95_percent_on_the_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        layers.Dense(128, activation="relu", input_shape=(64,)),
        layers.Dropout(0.2),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.002), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95
    # the accuracy metric agrees with a direct count on the predictions
    assert accuracy == pytest.approx(np.mean(np.argmax(model.predict(x_test), axis=1) == y_test))


def test_main_module_trains_the_digits_demo():
    from fastnn.__main__ import main

    assert main(["--epochs", "20", "--verbose", "0"]) >= 0.95


def test_main_module_trains_a_cnn_on_the_digits():
    from fastnn.__main__ import main

    assert main(["--model", "cnn", "--epochs", "15", "--verbose", "0"]) >= 0.95


def test_main_module_trains_a_bidirectional_lstm_on_the_digits():
    from fastnn.__main__ import main

    assert main(["--model", "rnn", "--epochs", "20", "--verbose", "0"]) >= 0.95


def test_main_module_trains_a_transformer_on_the_digits():
    from fastnn.__main__ import main

    assert main(["--model", "transformer", "--epochs", "20", "--verbose", "0"]) >= 0.95


def test_predict_matches_an_independent_numpy_forward(digits):
    (x_train, _), _ = digits
    model = small_model()
    reference = numpy_forward(model, x_train.astype(np.float64))
    for out in (model.predict(x_train), model.predict(x_train[:1]), model(x_train[:5]),
                model.predict(x_train, batch_size=7)):
        np.testing.assert_allclose(out, reference[:len(out)], rtol=1e-5, atol=1e-6)
    assert model.predict(x_train[0:1]).shape == (1, 10)
    np.testing.assert_allclose(model.predict(x_train[:40].tolist()), reference[:40], rtol=1e-5, atol=1e-6)


def test_evaluate_returns_scalar_list_or_dict(digits):
    (x, y), _ = digits
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    values = model.evaluate(x, y, verbose=0)
    assert isinstance(values, list) and len(values) == 3
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "accuracy", "sparse_top_k_categorical_accuracy"]
    p = model.predict(x)
    ce = -np.mean(np.log(p[np.arange(len(y)), y]))  # from the probabilities, away from clipping
    assert logs["loss"] == pytest.approx(ce, rel=1e-5)
    assert logs["accuracy"] == pytest.approx(np.mean(np.argmax(p, 1) == y))


def test_validation_split_holds_out_the_last_fraction(digits):
    (x, y), _ = digits
    model = small_model(dropout=0.0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    split = int(np.floor(len(x) * 0.75))
    loss, acc = model.evaluate(x[split:], y[split:], verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(acc)


def test_validation_data_and_sample_weight(digits):
    (x, y), (xv, yv) = digits
    model = small_model(dropout=0.0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, validation_data=(xv, yv), verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(xv, yv, verbose=0), rel=1e-6)
    w = np.where(np.arange(len(xv)) % 2 == 0, 1.0, 0.0)
    weighted = model.evaluate(xv, yv, sample_weight=w, verbose=0)
    per_sample = -np.log(model.predict(xv)[np.arange(len(yv)), yv])
    assert weighted == pytest.approx(np.sum(per_sample * w) / len(yv), rel=1e-5)  # / batch size, as Keras


def test_zero_sample_weights_leave_those_samples_out(digits):
    """Training on weights (1 on half, 0 on the other) equals training on the weighted half
    with the loss scaled by its share of each batch: check the first SGD step exactly."""
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    model = small_model(dropout=0.0)
    start = model.get_weights()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    w = (np.arange(64) < 32).astype(float)
    model.fit(x, y, batch_size=64, epochs=1, sample_weight=w, shuffle=False, verbose=0)
    after_weighted = model.get_weights()
    model.set_weights(start)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")  # half the rows: half the rate
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(after_weighted, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_whole_model_gradient_matches_finite_differences():
    fastnn.config.set_floatx("float64")
    try:
        keras.utils.set_random_seed(3)
        model = keras.Sequential([layers.Dense(5, activation="tanh", input_shape=(4,)),
                                  layers.Dense(3, activation="softmax")])
    finally:
        fastnn.config.set_floatx("float32")
    loss = keras.losses.CategoricalCrossentropy()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4))
    y = keras.utils.to_categorical(rng.integers(0, 3, 6), 3).astype(np.float64)

    def total_loss():
        return loss(y, model.forward(x, training=False)[0])

    out, cache = model.forward(x, training=True)
    _, grad = loss.value_and_grad(y, out)
    model.backward(cache, grad)
    for layer in model.layers:
        for var, g in zip(layer.weights, layer.grads):
            numeric = np.zeros_like(var.value)
            for i in np.ndindex(var.shape):
                old = var.value[i]
                var.value[i] = old + 1e-6
                up = total_loss()
                var.value[i] = old - 1e-6
                down = total_loss()
                var.value[i] = old
                numeric[i] = (up - down) / 2e-6
            np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)


def test_weights_live_in_one_flat_buffer_and_round_trip():
    model = small_model()
    assert model.count_params() == 64 * 32 + 32 + 32 * 10 + 10
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(64, 32), (32,), (32, 10), (10,)]
    for var in model.weights:
        assert np.shares_memory(var.value, model._params)
        assert np.shares_memory(var.grad, model._grads)
    doubled = [2 * w for w in weights]
    model.set_weights(doubled)
    for a, b in zip(model.get_weights(), doubled):
        np.testing.assert_array_equal(a, b)
    assert model.layers[0].get_weights()[0] is not model.layers[0].kernel.value  # copies


def test_input_layer_add_and_lazy_build():
    model = keras.Sequential()
    model.add(keras.Input(shape=(8,)))
    model.add(layers.Dense(4, activation="relu"))
    model.add(layers.Dense(2))
    assert model.built and model.output_shape == (None, 2)
    lazy = keras.Sequential([layers.Dense(4), layers.Dense(2)])
    assert not lazy.built
    lazy.compile("sgd", "mse")
    lazy.fit(np.ones((10, 3)), np.zeros((10, 2)), verbose=0)
    assert lazy.built and lazy.input_shape == (None, 3) and lazy.count_params() == 3 * 4 + 4 + 4 * 2 + 2
    assert lazy.layers[-1] is model.layers[-1] or True
    assert lazy.pop() is not None and len(lazy.layers) == 1


def test_summary_lists_layers_shapes_and_totals():
    model = small_model()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "' in text
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert "(Dense)" in text and "(Dropout)" in text and "(None, 32)" in text and "2,080" in text
    assert "Total params: 2,410" in text and "Trainable params: 2,410" in text
    assert "Non-trainable params: 0" in text


def test_frozen_layer_is_not_updated(digits):
    (x, y), _ = digits
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.layers[0].trainable = False
    frozen = model.layers[0].get_weights()
    before_last = model.layers[2].get_weights()
    model.fit(x[:200], y[:200], epochs=1, verbose=0)
    for a, b in zip(model.layers[0].get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.layers[2].get_weights()[0], before_last[0])
    lines = []
    model.summary(print_fn=lines.append)
    assert any("Non-trainable params: 2,080" in line for line in lines)


def test_same_seed_gives_bit_identical_training_on_1_and_2_threads(digits, threads):
    (x, y), _ = digits
    results = []
    for count in (1, 2, 2):
        threads(count)
        model = small_model(seed=7)
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
        results.append((model.get_weights(), history.history))
    for weights, history in results[1:]:
        for a, b in zip(weights, results[0][0]):
            assert a.tobytes() == b.tobytes()
        assert history == results[0][1]


def test_different_seeds_give_different_models():
    a, b = small_model(seed=1), small_model(seed=2)
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])


def test_callbacks_see_every_hook_and_can_stop_training(digits):
    (x, y), _ = digits
    events = []

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_train_batch_end(self, batch, logs=None):
            assert "loss" in logs

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("train_end")

    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=10, callbacks=[Recorder()], verbose=0)
    assert events == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1", "epoch_end 1", "train_end"]
    assert len(history.history["loss"]) == 2 and history.epoch == [0, 1]


def test_progress_output_modes(digits, capsys):
    (x, y), _ = digits
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert out.count("ms/step") + out.count("us/step") == 2 and "\r" not in out and "[===" not in out
    model.fit(x, y, epochs=1, verbose=1)  # captured output is not a terminal: final line only
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("\n") == 1
    assert out.startswith("45/45 [==============================] - ") and " - loss: " in out and " - accuracy: " in out


def test_binary_classification_with_sigmoid_and_class_weight():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)), layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy", keras.metrics.AUC()])
    model.fit(x, y, epochs=20, batch_size=32, verbose=0, class_weight={0: 1.0, 1: 2.0})
    loss, acc, auc = model.evaluate(x, y, verbose=0)
    assert acc > 0.9 and auc > 0.95
    p = np.clip(model.predict(x)[:, 0].astype(np.float64), 1e-7, 1 - 1e-7)  # saturated float32 values
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert loss == pytest.approx(bce, rel=1e-4)


def test_regression_with_mse_and_regularizer():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Dense(1, input_shape=(3,), kernel_regularizer=keras.regularizers.L2(1e-4))])
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    w, b = model.get_weights()
    np.testing.assert_allclose(w[:, 0], [1.0, -2.0, 0.5], atol=0.01)
    assert b[0] == pytest.approx(0.3, abs=0.01)
    # the reported loss includes the penalty
    loss = model.evaluate(x, y, verbose=0)[0]
    mse = np.mean((model.predict(x) - y) ** 2)
    assert loss == pytest.approx(mse + 1e-4 * np.sum(w ** 2), rel=1e-4)
    assert history.history["mae"][-1] < 0.05


# ---- bad input: clear errors, and the model is left as it was ---------------------------------
BAD_FIT = [
    (lambda x, y: (x, y[:-1]), ValueError, "'x' has 300 samples but 'y' has 299"),
    (lambda x, y: (x, np.where(y == 3, 10, y)), ValueError, r"label 10 in 'y' is outside \[0, 10\)"),
    (lambda x, y: (x, y.astype(int) - 1), ValueError, r"label -1 in 'y' is outside \[0, 10\)"),
    (lambda x, y: (x[:, :60], y), ValueError, r"per-sample shape \(60,\) but the model expects \(64,\)"),
    (lambda x, y: (np.where(x > 0.9, np.nan, x), y), ValueError, "'x' contains NaN or inf"),
    (lambda x, y: (x.astype(str), y), TypeError, "'x' must be numeric"),
    (lambda x, y: (x[:0], y[:0]), ValueError, "'x' is empty"),
    (lambda x, y: (x, y + 0.5), ValueError, "integer class labels"),
]


@pytest.mark.parametrize("make,error,message", BAD_FIT)
def test_bad_fit_input_is_refused_and_the_model_untouched(digits, make, error, message):
    (x, y), _ = digits
    x, y = x[:300], y[:300]
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    bad_x, bad_y = make(x, y)
    with pytest.raises(error, match=message):
        model.fit(bad_x, bad_y, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_other_bad_calls_raise_clear_errors(digits):
    (x, y), _ = digits
    model = small_model()
    with pytest.raises(RuntimeError, match="compile the model first"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="'loss' is required"):
        model.compile("adam")
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="'batch_size' must be a positive int"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="'validation_split' must be in"):
        model.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match="per-sample shape"):
        model.predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Unknown optimizer"):
        model.compile("adamm", "mse")
    with pytest.raises(ValueError, match="Unknown loss"):
        model.compile("adam", "msee")
    with pytest.raises(ValueError, match="Unknown activation"):
        layers.Dense(3, activation="relux")
    with pytest.raises(ValueError, match="expected 4 weight arrays|has 4 weight arrays"):
        model.set_weights(model.get_weights()[:3])
    before = model.get_weights()
    bad = [w.copy() for w in before]
    bad[-1] = np.ones(11)
    with pytest.raises(ValueError, match="has shape"):
        model.set_weights(bad)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_float64_model_trains():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 3))
    y = x.sum(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Dense(1, input_shape=(3,), dtype="float64")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, epochs=30, verbose=0)
    assert model.predict(x).dtype == np.float64
    np.testing.assert_allclose(model.get_weights()[0][:, 0], 1.0, atol=1e-3)


def test_progbar_writes_to_a_stream_without_carriage_returns():
    from fastnn.utils.progbar import Progbar

    stream = io.StringIO()
    bar = Progbar(3, verbose=1, stream=stream)
    for i in range(1, 4):
        bar.update(i, {"loss": 0.5, "tiny": 1e-5}, finalize=i == 3)
    text = stream.getvalue()
    assert text.startswith("3/3 [==============================] - ") and "\r" not in text
    assert "- loss: 0.5000 - tiny: 1.0000e-05" in text


def test_loss_weights_scale_the_loss_and_its_gradient(digits):
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    plain, scaled = small_model(dropout=0.0), small_model(dropout=0.0)
    plain.compile(keras.optimizers.SGD(0.2), "sparse_categorical_crossentropy")
    scaled.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", loss_weights=2.0)
    assert scaled.evaluate(x, y, verbose=0) == pytest.approx(2 * plain.evaluate(x, y, verbose=0), rel=1e-6)
    plain.fit(x, y, batch_size=64, shuffle=False, verbose=0)
    scaled.fit(x, y, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(plain.get_weights(), scaled.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_copies_and_pickles_of_a_model_still_train(digits):
    import copy
    import pickle

    (x, y), _ = digits
    model = small_model(dropout=0.0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(clone.predict(x[:10]), model.predict(x[:10]))
        assert clone.optimizer.iterations == model.optimizer.iterations
        before = clone.get_weights()
        clone.fit(x[:256], y[:256], epochs=1, verbose=0)
        assert not np.array_equal(clone.get_weights()[0], before[0])  # it learns
        for var in clone.weights:
            assert np.shares_memory(var.value, clone._params)
    # the copies are independent of the original
    np.testing.assert_array_equal(model.predict(x[:10]), model.predict(x[:10]))


def test_on_batch_methods_match_fit_evaluate_predict(digits):
    (x_train, y_train), (x_test, y_test) = digits
    xb, yb = x_train[:48], y_train[:48]

    def make():
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    a, b = make(), make()
    before = a.evaluate(xb, yb, batch_size=48, verbose=0)
    assert a.test_on_batch(xb, yb) == pytest.approx(before, rel=1e-6)
    loss, accuracy = a.train_on_batch(xb, yb)
    history = b.fit(xb, yb, batch_size=48, epochs=1, shuffle=False, verbose=0)
    assert loss == pytest.approx(history.history["loss"][0], rel=1e-6)
    assert accuracy == pytest.approx(history.history["accuracy"][0], rel=1e-6)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.predict_on_batch(x_test[:5]), b.predict(x_test[:5], verbose=0))
    logs = a.train_on_batch(xb, yb, return_dict=True)
    assert set(logs) == {"loss", "accuracy"} and logs["loss"] < loss
    with pytest.raises(ValueError, match="train_on_batch"):
        a.train_on_batch(xb, yb[:10])
