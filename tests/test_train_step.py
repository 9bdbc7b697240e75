"""Keras 3's step overrides: a Model subclass's train_step / test_step / predict_step is called by
fit / evaluate / predict for each batch; the defaults are the fused steps, public and callable."""

import numpy as np
import pytest

import fastnn as keras

N, FEATURES, BATCH = 80, 5, 16


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(11)
    x = r.normal(size=(N, FEATURES)).astype("float32")
    y = r.integers(0, 3, N)
    return x, y, r.uniform(0.5, 2.0, N)


def _layers():
    return [keras.layers.Dense(8, activation="relu", input_shape=(FEATURES,)),
            keras.layers.Dense(3, activation="softmax")]


def make(cls=keras.Sequential, seed=4):
    keras.utils.set_random_seed(seed)
    model = cls(_layers())
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


def augment(x):
    return x * 2.0 + 0.5


class Augmented(keras.Sequential):
    """The common pattern: transform the batch, then the default step."""

    calls = []

    def train_step(self, data):
        x, y = data
        self.calls.append((x.copy(), np.array(y)))
        return super().train_step((augment(x), y))


def test_the_override_is_called_once_per_batch_with_the_batch(data):
    x, y, w = data
    Augmented.calls = []
    make(Augmented).fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert len(Augmented.calls) == 2 * N // BATCH
    for k, (xb, yb) in enumerate(Augmented.calls[:N // BATCH]):
        assert xb.dtype == np.float32
        np.testing.assert_array_equal(xb, x[k * BATCH:(k + 1) * BATCH])
        np.testing.assert_array_equal(yb, y[k * BATCH:(k + 1) * BATCH])

    seen = []

    class Weighted(keras.Sequential):
        def train_step(self, data):
            seen.append(data)
            return super().train_step(data)

    make(Weighted).fit(x, y, sample_weight=w, class_weight={0: 3.0}, batch_size=40, shuffle=False, verbose=0)
    assert [len(d) for d in seen] == [3, 3]
    expected = w[:40] * np.where(y[:40] == 0, 3.0, 1.0)  # class_weight folded into sample_weight, as Keras
    np.testing.assert_array_equal(seen[0][2], expected)


@pytest.mark.parametrize("shuffle", [False, True])
def test_super_train_step_after_augmentation_equals_fitting_augmented_arrays(data, shuffle):
    x, y, _ = data
    reference = make()
    expected = reference.fit(augment(x), y, batch_size=BATCH, epochs=3, shuffle=shuffle, verbose=0)
    model = make(Augmented)
    history = model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=shuffle, verbose=0)
    assert same_weights(model, reference)
    assert history.history == expected.history
    model = make(Augmented)  # from a generator too
    model.fit(((x[s:s + BATCH], y[s:s + BATCH]) for s in range(0, N, BATCH)), verbose=0)
    reference = make()
    reference.fit(augment(x), y, batch_size=BATCH, shuffle=False, verbose=0)
    assert same_weights(model, reference)


class Plain(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(6, activation="tanh")
        self.out = keras.layers.Dense(2)

    def call(self, inputs, training=False):
        return self.out(self.hidden(inputs))


class Handwritten(Plain):
    """A step from fastnn's public pieces: forward, loss gradient, backward, optimizer, metrics."""

    def train_step(self, data):
        x, y = data
        y_pred, cache = self.forward(x, training=True)
        loss, d_y_pred = self.compute_loss_and_grad(x, y, y_pred)
        self.backward(cache, d_y_pred, need_input_grad=False)
        self.optimizer.apply_gradients(zip([v.grad for v in self.trainable_weights], self.trainable_weights))
        return {"loss": loss, "batch_size": float(len(x)), **self.compute_metrics(x, y, y_pred)}


def _compiled(cls):
    keras.utils.set_random_seed(9)
    model = cls()
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    return model


def test_a_handwritten_step_trains_as_the_fused_one_and_its_logs_reach_history(data):
    x, _, _ = data
    target = np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5], axis=1).astype("float32")
    custom = _compiled(Handwritten)
    history = custom.fit(x, target, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    fused = _compiled(Plain)
    fused_history = fused.fit(x, target, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    by_batch = _compiled(Plain)  # the reference for the returned logs: each batch's loss before its update
    last_losses = []
    for _ in range(3):
        for s in range(0, N, BATCH):
            loss = by_batch.train_on_batch(x[s:s + BATCH], target[s:s + BATCH], return_dict=True)["loss"]
        last_losses.append(loss)
    for a, b, c in zip(custom.get_weights(), fused.get_weights(), by_batch.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)
    assert sorted(history.history) == ["batch_size", "loss", "mae"]
    assert history.history["batch_size"] == [16.0, 16.0, 16.0]
    np.testing.assert_allclose(history.history["loss"], last_losses, rtol=1e-6)
    np.testing.assert_allclose(history.history["mae"], fused_history.history["mae"], rtol=1e-6)


def test_test_step_and_predict_step_overrides(data):
    x, y, _ = data
    test_batches = []

    class Custom(keras.Sequential):
        def test_step(self, data):
            test_batches.append(len(data[0]))
            logs = super().test_step(data)
            return {**logs, "twice": 2 * logs["loss"]}

        def predict_step(self, data):
            x = keras.utils.unpack_x_y_sample_weight(data)[0]
            return {"probs": super().predict_step(x), "x": x}

    model, reference = make(Custom), make()
    logs = model.evaluate(x, y, batch_size=BATCH, return_dict=True, verbose=0)
    expected = reference.evaluate(x, y, batch_size=BATCH, return_dict=True, verbose=0)
    assert test_batches == [BATCH] * (N // BATCH)
    assert logs == {**expected, "twice": 2 * expected["loss"]}
    assert model.evaluate(x, y, batch_size=BATCH, verbose=0) == [expected["loss"], expected["accuracy"],
                                                                 2 * expected["loss"]]
    out = model.predict(x, batch_size=BATCH)
    np.testing.assert_array_equal(out["probs"], reference.predict(x, batch_size=BATCH))
    np.testing.assert_array_equal(out["x"], x)
    history = model.fit(x, y, batch_size=BATCH, validation_data=(x[:32], y[:32]), shuffle=False, verbose=0)
    reference_history = reference.fit(x, y, batch_size=BATCH, validation_data=(x[:32], y[:32]), shuffle=False,
                                      verbose=0)
    assert history.history == {**reference_history.history,
                               "val_twice": [2 * v for v in reference_history.history["val_loss"]]}


def test_the_default_steps_are_public_and_equal_the_on_batch_methods(data):
    x, y, _ = data
    a, b = make(), make()
    assert a.train_step((x[:BATCH], y[:BATCH])) == b.train_on_batch(x[:BATCH], y[:BATCH], return_dict=True)
    assert same_weights(a, b)
    assert [m.name for m in a.metrics] == ["accuracy"]
    a.reset_metrics()  # metrics are stateful across direct step calls (Keras); test_on_batch starts afresh
    assert a.metrics[0].result() == 0
    assert a.test_step((x, y)) == b.test_on_batch(x, y, return_dict=True)
    np.testing.assert_array_equal(a.predict_step(x), b.predict_on_batch(x))


def test_compute_loss_includes_the_weight_penalties_as_evaluate_does(data):
    x, y, _ = data
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.layers.Dense(3, activation="softmax", input_shape=(FEATURES,),
                                                 kernel_regularizer=keras.regularizers.L2(0.1))])
    model.compile("sgd", "sparse_categorical_crossentropy")
    y_pred = model.predict(x, batch_size=N)
    assert model.compute_loss(x, y, y_pred) == pytest.approx(model.evaluate(x, y, batch_size=N, verbose=0),
                                                             rel=1e-6)
    loss, grad = model.compute_loss_and_grad(x, y, y_pred)
    p = y_pred.astype(np.float64)
    eps = 1e-3  # d loss / d y_pred[0, y[0]] = -1 / (N p), by finite differences
    bumped = p.copy()
    bumped[0, y[0]] += eps
    numeric = (model.compute_loss(x, y, bumped) - loss) / eps
    assert grad[0, y[0]] == pytest.approx(numeric, rel=1e-2)


def test_a_step_that_returns_no_dict_is_refused(data):
    x, y, _ = data

    class Wrong(keras.Sequential):
        def train_step(self, data):
            return 0.5

    with pytest.raises(TypeError, match="train_step must return a dict of logs"):
        make(Wrong).fit(x, y, verbose=0)
