"""Graph models: the functional API, shared layers, nested models, several inputs and outputs.

Gradients through every kind of graph are compared in float64 with central finite differences
(weights and inputs); models with branches train on the bundled digits to the accuracy of
their Sequential counterparts; compile's per-output losses, loss weights and metrics are
checked against NumPy computed from the model's own predictions; bad graphs fail clearly.
"""

import numpy as np
import pytest

import fastnn as keras
from fastnn import layers, ops
from finite_differences import numeric_gradient


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_model_gradients(model, xs, rng, input_grads=True):
    """d/dθ and d/dx of L = Σ_outputs Σ(output · r) from the model's backward, against central
    differences of L computed with the model's forward (inference mode: no Dropout here)."""
    xs = [np.ascontiguousarray(x, np.float64) for x in xs]
    inputs = xs[0] if len(xs) == 1 else xs
    outputs, cache = model.forward(inputs, training=True)
    rs = [rng.uniform(-1, 1, o.shape) for o in _as_list(outputs)]
    dys = rs[0] if len(rs) == 1 else rs
    for v in model.trainable_weights:
        v.grad[...] = 123.0  # stale values must be overwritten, not added to
    dxs = _as_list(model.backward(cache, dys, need_input_grad=input_grads))

    def loss():
        out, _ = model.forward(inputs, training=False)
        return sum(float(np.sum(o * r)) for o, r in zip(_as_list(out), rs))

    assert model.trainable_weights, "the model has no weights to check"
    for var in model.trainable_weights:
        np.testing.assert_allclose(var.grad, numeric_gradient(loss, var.value), rtol=1e-6, atol=1e-8,
                                   err_msg=var.name)
    if input_grads:
        for x, dx in zip(xs, dxs):
            np.testing.assert_allclose(dx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-8, err_msg="input gradient")


# ---- gradients through graphs --------------------------------------------------------------------
def test_gradients_through_branches_and_a_residual_connection(rng, float64):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,))
    h = layers.Dense(6, activation="tanh")(inputs)
    branch = layers.Dense(6, activation="sigmoid")(h)
    merged = layers.Add()([h, branch])  # residual
    joined = layers.Concatenate()([merged, inputs * 2.0])
    outputs = layers.Dense(3, activation="softmax")(joined)
    model = keras.Model(inputs, outputs)
    check_model_gradients(model, [rng.standard_normal((4, 5))], rng)


def test_gradients_of_a_shared_layer_are_summed_over_its_calls(rng, float64):
    keras.utils.set_random_seed(2)
    a, b = keras.Input((4,)), keras.Input((4,))
    encoder = layers.Dense(5, activation="tanh", name="encoder")  # one layer, two calls
    ea, eb = encoder(a), encoder(b)
    distance = ops.abs(ea - eb)
    outputs = layers.Dense(1, activation="sigmoid")(layers.Multiply()([distance, encoder(a + b)]))
    model = keras.Model([a, b], outputs)
    assert len(encoder._inbound_nodes) == 3
    assert model.count_params() == (4 * 5 + 5) + (5 + 1)  # counted once
    assert sum(layer is encoder for layer in model.layers) == 1
    check_model_gradients(model, [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))], rng)


def test_gradients_through_nested_models(rng, float64):
    keras.utils.set_random_seed(3)
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, layers.Dense(3, activation="tanh")(inner_in), name="inner")
    chain = keras.Sequential([layers.Dense(4, activation="relu"), layers.Dense(2)], name="chain")
    x1, x2 = keras.Input((4,)), keras.Input((4,))
    joined = layers.Concatenate()([inner(x1), inner(x2)])  # a shared nested model
    model = keras.Model([x1, x2], chain(joined))
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Functional" if False else "Model",
                                                                "InputLayer", "Concatenate", "Sequential"]
    xs = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]
    check_model_gradients(model, xs, rng)
    # the nested models predict on their own too, with the same weights
    np.testing.assert_allclose(inner.predict(xs[0]), np.tanh(xs[0] @ inner.get_weights()[0] + inner.get_weights()[1]),
                               rtol=1e-12)


class Scale(layers.Layer):
    """A custom layer written Keras' way: build/add_weight/call with ops maths."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
        self.gain = self.add_weight(shape=(self.units,), initializer="ones", name="gain")

    def call(self, inputs):
        z = ops.matmul(inputs, self.w)
        return ops.tanh(z) * self.gain + ops.mean(ops.square(z), axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Residual(keras.Model):
    """A subclassed model: layers in __init__, call() with layers, a custom layer and ops maths."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = Scale(6)
        self.dense = layers.Dense(6, activation="sigmoid")
        self.head = layers.Dense(3, activation="softmax")

    def call(self, inputs, training=False):
        h = self.scale(inputs)
        h = h + self.dense(h)
        return self.head(ops.concatenate([h, ops.exp(-ops.square(h))], axis=-1))


def test_gradients_through_a_subclassed_model_with_a_custom_layer(rng, float64):
    keras.utils.set_random_seed(4)
    model = Residual()
    x = rng.standard_normal((4, 5))
    model(x)  # builds by tracing call()
    assert [type(layer).__name__ for layer in model.layers] == ["Scale", "Dense", "Dense"]
    assert [v.name.split("/")[-1] for v in model.layers[0].weights] == ["w", "gain"]
    check_model_gradients(model, [x], rng)


def test_gradients_through_a_custom_layer_inside_a_functional_model(rng, float64):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4,))
    scale = Scale(3)
    outputs = layers.Dense(2)(scale(inputs) + scale(inputs * 0.5))  # a shared custom layer
    check_model_gradients(keras.Model(inputs, outputs), [rng.standard_normal((3, 4))], rng)


def test_gradients_of_a_two_output_model(rng, float64):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((5,))
    h = layers.Dense(4, activation="tanh")(inputs)
    model = keras.Model(inputs, [layers.Dense(3, activation="softmax")(h), layers.Dense(1)(h)])
    check_model_gradients(model, [rng.standard_normal((4, 5))], rng)


# ---- the functional API ---------------------------------------------------------------------------
def test_a_functional_chain_is_the_sequential_model(digits):
    (x, _), _ = digits
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([layers.Dense(16, activation="relu", input_shape=(64,)), layers.Dense(10, activation="softmax")])
    inputs = keras.Input((64,))
    h = layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(h))
    model.set_weights(seq.get_weights())
    np.testing.assert_array_equal(model.predict(x), seq.predict(x))
    np.testing.assert_array_equal(model(x[:3]), seq(x[:3]))
    assert model.input_shape == (None, 64) and model.output_shape == (None, 10)
    assert model.inputs[0] is inputs and model.output_names == [model.layers[-1].name]


def test_layer_outputs_make_a_feature_extractor(digits):
    (x, _), _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Dense(16, activation="relu", input_shape=(64,)), layers.Dense(10)])
    features = keras.Model(model.inputs, model.layers[0].output)
    w, b = model.layers[0].get_weights()
    np.testing.assert_allclose(features.predict(x[:20]), np.maximum(x[:20] @ w + b, 0), rtol=1e-5, atol=1e-6)


def test_residual_mlp_trains_on_the_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = layers.Dense(64, activation="relu")(inputs)
    for _ in range(2):
        h = layers.Add()([h, layers.Dense(64, activation="relu")(h)])
    outputs = layers.Dense(10, activation="softmax")(layers.Dropout(0.1)(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.002), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=15, batch_size=32, validation_split=0.1, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(np.mean(np.argmax(model.predict(x_test), 1) == y_test))


def test_two_input_model_trains_on_the_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    top, bottom = keras.Input((32,), name="top"), keras.Input((32,), name="bottom")  # the two image halves
    merged = layers.concatenate([layers.Dense(32, activation="relu")(top), layers.Dense(32, activation="relu")(bottom)])
    model = keras.Model([top, bottom], layers.Dense(10, activation="softmax")(merged))
    model.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit([x_train[:, :32], x_train[:, 32:]], y_train, epochs=15, verbose=0)
    by_list = model.evaluate([x_test[:, :32], x_test[:, 32:]], y_test, verbose=0)
    by_dict = model.evaluate({"bottom": x_test[:, 32:], "top": x_test[:, :32]}, y_test, verbose=0)
    assert by_list == by_dict and by_list[1] >= 0.93
    with pytest.raises(ValueError, match=r"the model has 2 inputs \['top', 'bottom'\]"):
        model.predict(x_test)
    with pytest.raises(ValueError, match="keys"):
        model.predict({"top": x_test[:, :32]})


def test_two_output_model_losses_weights_metrics_and_history_keys(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = layers.Dense(64, activation="relu")(inputs)
    digit = layers.Dense(10, activation="softmax", name="digit")(h)
    ink = layers.Dense(1, name="ink")(h)  # regress the mean pixel value
    model = keras.Model(inputs, {"digit": digit, "ink": ink})
    model.compile(keras.optimizers.Adam(0.002), loss={"digit": "sparse_categorical_crossentropy", "ink": "mse"},
                  loss_weights={"digit": 1.0, "ink": 0.5}, metrics={"digit": ["accuracy"], "ink": ["mae"]})
    ink_train, ink_test = x_train.mean(axis=1, keepdims=True), x_test.mean(axis=1, keepdims=True)
    history = model.fit(x_train, {"digit": y_train, "ink": ink_train}, epochs=15, verbose=0,
                        validation_data=(x_test, {"digit": y_test, "ink": ink_test}))
    assert set(history.history) == {"loss", "digit_loss", "ink_loss", "digit_accuracy", "ink_mae", "val_loss",
                                     "val_digit_loss", "val_ink_loss", "val_digit_accuracy", "val_ink_mae"}
    assert model.metrics_names == ["loss", "digit_loss", "ink_loss", "digit_accuracy", "ink_mae"]
    values = model.evaluate(x_test, [y_test, ink_test], verbose=0)
    logs = model.evaluate(x_test, {"digit": y_test, "ink": ink_test}, verbose=0, return_dict=True)
    assert values == [logs[name] for name in model.metrics_names]
    predicted = model.predict(x_test)
    assert set(predicted) == {"digit", "ink"}
    p, q = predicted["digit"].astype(np.float64), predicted["ink"].astype(np.float64)
    ce = -np.mean(np.log(p[np.arange(len(y_test)), y_test]))
    mse = np.mean((q - ink_test) ** 2)
    assert logs["digit_loss"] == pytest.approx(ce, rel=1e-5)
    assert logs["ink_loss"] == pytest.approx(mse, rel=1e-4)
    assert logs["loss"] == pytest.approx(ce + 0.5 * mse, rel=1e-5)  # the weighted sum
    assert logs["digit_accuracy"] == pytest.approx(np.mean(np.argmax(p, 1) == y_test))
    assert logs["ink_mae"] == pytest.approx(np.mean(np.abs(q - ink_test)), rel=1e-4)
    assert logs["digit_accuracy"] >= 0.93 and logs["ink_mae"] < 0.05
    assert history.history["val_loss"][-1] == pytest.approx(logs["loss"], rel=1e-6)


def test_list_losses_and_one_loss_for_every_output(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, [layers.Dense(2)(inputs), layers.Dense(2)(inputs)])
    x, y1, y2 = rng.standard_normal((8, 3)), rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    model.compile("sgd", loss=["mse", "mae"], loss_weights=[2.0, 1.0], metrics=[["mae"], []])
    p1, p2 = (p.astype(np.float64) for p in model.predict(x))
    loss, l1, l2, mae = model.evaluate(x, [y1, y2], verbose=0)
    assert l1 == pytest.approx(np.mean((p1 - y1) ** 2), rel=1e-5) and l2 == pytest.approx(np.mean(np.abs(p2 - y2)), rel=1e-5)
    assert loss == pytest.approx(2 * l1 + l2, rel=1e-6) and mae == pytest.approx(np.mean(np.abs(p1 - y1)), rel=1e-5)
    model.compile("sgd", loss="mse", metrics=["mae"])  # one loss and a flat metric list: each output
    names = model.metrics_names
    assert len(names) == 5 and names[1].endswith("_loss") and names[3].endswith("_mae")
    with pytest.raises(ValueError, match="'loss' has 3 entries but the model has 2 outputs"):
        model.compile("sgd", loss=["mse"] * 3)
    with pytest.raises(ValueError, match="names outputs \\['nope'\\]"):
        model.compile("sgd", loss={"nope": "mse"})


# ---- bad graphs -------------------------------------------------------------------------------------
def test_an_output_not_connected_to_the_inputs_is_named():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    out = layers.Dense(2, name="head")(layers.Add()([a, b]))
    with pytest.raises(ValueError, match=r"output 'head'.*is not connected to the model's inputs \('a'\): it "
                                         r"depends on the input 'b'"):
        keras.Model(a, out)


def test_inputs_and_outputs_must_be_symbolic():
    with pytest.raises(TypeError, match="'inputs' must be symbolic tensors"):
        keras.Model(np.ones((2, 3)), keras.Input((3,)))
    with pytest.raises(ValueError, match="both 'inputs' and 'outputs'"):
        keras.Model(inputs=keras.Input((3,)))


def test_value_dependent_control_flow_in_a_traced_call_is_a_clear_error():
    class Branchy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, inputs):
            if ops.sum(inputs) > 0:  # depends on the data: cannot be one graph
                return self.dense(inputs)
            return -self.dense(inputs)

    with pytest.raises(TypeError, match=r"bool\(\) \(an if/while/and/or\) on a symbolic tensor.*cannot be "
                                        r"recorded.*fastnn.ops.where"):
        Branchy().predict(np.ones((2, 3)))


def test_training_argument_reaches_dropout_in_a_traced_call(rng):
    class Dropper(keras.Model):
        def __init__(self):
            super().__init__()
            self.drop = layers.Dropout(0.5, seed=1)

        def call(self, inputs, training=False):
            return self.drop(inputs, training=training) * 1.0

    model = Dropper()
    x = np.ones((50, 40), np.float32)
    np.testing.assert_array_equal(model(x), x)  # inference: the identity
    y = model(x, training=True)
    assert 0.35 < np.mean(y == 0) < 0.65 and set(np.unique(y)) <= {0.0, 2.0}


def test_summary_shows_what_each_layer_is_connected_to():
    a, b = keras.Input((3,), name="left"), keras.Input((3,), name="right")
    shared = layers.Dense(4, name="shared")
    out = layers.Concatenate(name="join")([shared(a), shared(b)])
    model = keras.Model([a, b], layers.Dense(1, name="out")(out + 1.0))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text
    join = next(line for line in lines if line.startswith(" join (Concatenate)"))
    assert "shared[0][0], shared[1][0]" in join
    assert any(line.startswith(" add") and "(Add)" in line and "join[0][0]" in line for line in lines)
    assert "Total params: 25" in text  # the shared layer counted once: (3·4 + 4) + (8 + 1)


def test_a_layer_called_with_training_false_is_fine_tuned_in_inference_mode(rng, float64):
    """Keras' fine-tuning idiom: base(x, training=False) keeps BatchNormalization in inference mode
    (its moving statistics stay put) while gradients still flow through it into the base's weights."""
    keras.utils.set_random_seed(7)
    base_in = keras.Input((4,))
    h = layers.Dense(6)(base_in)
    h = layers.BatchNormalization()(h)
    base = keras.Model(base_in, layers.Dropout(0.5)(layers.Activation("tanh")(h)))
    inputs = keras.Input((4,))
    outputs = layers.Dense(1)(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    bn = base.layers[2]
    moving = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    x, y = rng.standard_normal((32, 4)), rng.standard_normal((32, 1))
    before = base.get_weights()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])  # inference mode: not updated
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moving[1])
    assert not np.allclose(base.get_weights()[0], before[0])  # but the base's Dense was trained
    # and the gradient is the inference-mode one (no dropout, moving statistics): finite differences
    check_model_gradients(model, [x], rng)


def test_summary_expands_nested_models_and_places_columns():
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, layers.Dense(2, name="inner_dense")(inner_in), name="inner")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layers.Dense(1, name="top")(inner(inputs)))
    lines = []
    model.summary(print_fn=lines.append, expand_nested=True, show_trainable=True)
    nested = next(line for line in lines if "inner_dense (Dense)" in line)
    assert nested.startswith(" | inner_dense (Dense)") and "(None, 2)" in nested and nested.rstrip().endswith("Y")
    lines = []
    model.summary(print_fn=lines.append, line_length=80, positions=[0.4, 0.6, 0.7, 1.0])
    header = next(line for line in lines if "Layer (type)" in line)
    assert header.index("Output Shape") == 32 and header.index("Param #") == 48


def test_a_graph_trains_bit_identically_on_1_and_2_threads(digits, threads):
    (x, y), _ = digits
    results = []
    for count in (1, 2):
        threads(count)
        keras.utils.set_random_seed(11)
        inputs = keras.Input((64,))
        h = layers.Dense(32, activation="relu")(inputs)
        h = layers.Add()([h, layers.Dense(32, activation="tanh")(h)])
        model = keras.Model(inputs, [layers.Dense(10, activation="softmax")(layers.Dropout(0.2)(h)), layers.Dense(1)(h)])
        model.compile(keras.optimizers.Adam(0.01), ["sparse_categorical_crossentropy", "mse"])
        history = model.fit(x, [y, x.mean(axis=1)], epochs=2, batch_size=64, verbose=0)
        results.append((model.get_weights(), history.history))
    for a, b in zip(results[0][0], results[1][0]):
        assert a.tobytes() == b.tobytes()
    assert list(results[0][1].values()) == list(results[1][1].values())  # (the output names differ)
