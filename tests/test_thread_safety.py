"""predict, evaluate and __call__ during fit (from its callbacks and from other threads),
concurrent predicts, and what is refused (two training loops on one model): each compared
with a reference run (fastnn.loop_guard, README "Thread safety")."""

import threading

import numpy as np
import pytest

import fastnn
from fastnn import loop_guard, thread_tuner

FEATURES, CLASSES = 32, 4
TIMEOUT = 60


def make_model(seed=1, dropout=0.3, cls=fastnn.Sequential):
    """A small classifier with BatchNormalization and Dropout, so that a predict that updated the
    moving statistics or drew from the random generator would change the training after it."""
    fastnn.utils.set_random_seed(seed)
    layers = [fastnn.Input((FEATURES,)), fastnn.layers.Dense(64, activation="relu"),
              fastnn.layers.BatchNormalization()]
    if dropout:
        layers.append(fastnn.layers.Dropout(dropout))
    layers.append(fastnn.layers.Dense(CLASSES, activation="softmax"))
    model = cls(layers)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=96, seed=0):
    rs = np.random.default_rng(seed)
    x = rs.normal(size=(n, FEATURES)).astype("float32")
    y = (x[:, :CLASSES].argmax(axis=1) + (rs.random(n) < 0.2)) % CLASSES  # learnable, with noise
    return x, y


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def assert_probabilities(p):
    assert p.shape[-1] == CLASSES and np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.fixture
def two_adaptive_threads():
    """Two threads with the adaptive count on, starting capped at one thread (so that a loop that
    lifted the cap would show), restored afterwards."""
    before, adaptive = fastnn.get_num_threads(), fastnn.config.adaptive_threads()
    fastnn.set_num_threads(2)
    fastnn.config.set_adaptive_threads(True)
    thread_tuner._last_choice[0] = 1
    schedule = dict(thread_tuner._schedule)
    thread_tuner._schedule.update(next=float("inf"), interval=None)  # no probe: the cap stays at 1
    yield
    thread_tuner._schedule.clear()
    thread_tuner._schedule.update(schedule)
    thread_tuner._last_choice[0] = None
    thread_tuner._apply(0)
    fastnn.set_num_threads(before)
    fastnn.config.set_adaptive_threads(adaptive)


# ---- (1) inference from fit's callbacks returns what it returns outside fit ---------------------------------
def test_predict_from_callbacks_returns_the_probabilities_of_the_weights_of_the_moment():
    x, y = data()
    model = make_model()
    seen = []  # (epoch, predict, __call__, predict_on_batch, evaluate, weights) at each epoch's end

    def record(epoch, logs):
        seen.append((epoch, model.predict(x, verbose=0), model(x), model.predict_on_batch(x),
                     model.evaluate(x, y, verbose=0), model.get_weights()))

    batch_predictions = []
    callback = fastnn.callbacks.LambdaCallback(
        on_epoch_end=record, on_batch_end=lambda b, logs: batch_predictions.append(model.predict(x[:5], verbose=0)))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callback])
    assert len(seen) == 3 and len(batch_predictions) == 3 * 6
    for p in batch_predictions:
        assert_probabilities(p)  # probabilities, not the logits fit's fused loss works with

    for epoch, predicted, called, on_batch, evaluated, weights in seen:
        assert_probabilities(predicted)
        np.testing.assert_array_equal(called, predicted)
        np.testing.assert_array_equal(on_batch, predicted)
        # the same model trained for epoch + 1 epochs without the callback, outside fit
        reference = make_model()
        reference.fit(x, y, epochs=epoch + 1, batch_size=16, verbose=0)
        assert weights_equal(reference.get_weights(), weights)
        np.testing.assert_array_equal(reference.predict(x, verbose=0), predicted)
        assert reference.evaluate(x, y, verbose=0) == evaluated


# ---- (2) and the training after it is the one without the callback ----------------------------------------
class Overriding(fastnn.Sequential):
    """A train_step override (the fit loop then runs batches through it) calling the default."""

    def train_step(self, data):
        return super().train_step(data)


def batches(x, y, size=16):
    """The arrays as a generator of batches (fit's batch-source path; no shuffling)."""
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


@pytest.mark.parametrize("kind", ["arrays", "generator", "train_step override"])
def test_inference_from_callbacks_leaves_the_training_bit_identical(kind, two_adaptive_threads):
    x, y = data()
    xv, yv = data(40, seed=5)

    def train(with_callback):
        model = make_model(cls=Overriding if kind == "train_step override" else fastnn.Sequential)
        caps = []

        def meddle(*_):
            cap = fastnn._core.thread_limit()
            model.predict(x, verbose=0)
            model.predict(x, batch_size=7, verbose=0)
            model.evaluate(x, y, verbose=0)
            model.evaluate(batches(xv, yv), verbose=0)
            model.test_on_batch(x, y)
            model(x)
            model.predict_on_batch(x[:3])
            caps.append((cap, fastnn._core.thread_limit()))

        callbacks = [fastnn.callbacks.LambdaCallback(on_train_batch_end=meddle, on_epoch_end=meddle,
                                                     on_train_begin=meddle)] if with_callback else []
        if kind == "generator":
            history = model.fit(batches(np.tile(x, (3, 1)), np.tile(y, 3)), epochs=3, steps_per_epoch=6,
                                validation_data=(xv, yv), verbose=0, callbacks=callbacks)
        else:
            history = model.fit(x, y, epochs=3, batch_size=16, validation_data=(xv, yv), verbose=0,
                                callbacks=callbacks)
        return history.history, model.get_weights(), model, caps

    quiet_history, quiet_weights, _, _ = train(False)
    history, weights, model, caps = train(True)
    assert history == quiet_history  # losses and accuracies, training and validation, unchanged
    assert weights_equal(weights, quiet_weights)  # BatchNormalization's moving statistics included
    # the nested loops ran at fit's thread cap and left it there (they did not lift it when they ended)
    assert caps and all(before == after for before, after in caps)
    assert caps[1][0] == 1  # (the first batch ran capped at one thread)
    assert fastnn._core.thread_limit() == 0  # lifted when fit ended
    assert loop_guard.guard(model).trainer is None and not loop_guard.guard(model).readers


def test_evaluate_from_a_callback_does_not_reset_fits_running_metrics():
    x, y = data()

    def epoch_logs(meddle):
        model = make_model()
        batch_logs = []

        def on_batch_end(batch, logs):
            if meddle:
                model.evaluate(x[:8], y[:8], verbose=0)  # 8 samples: its accuracy differs from fit's
            batch_logs.append(dict(logs))

        model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                  callbacks=[fastnn.callbacks.LambdaCallback(on_train_batch_end=on_batch_end)])
        return batch_logs, [m.result() for m in model.metrics]

    assert epoch_logs(True) == epoch_logs(False)


# ---- (3) concurrent predicts; predict and evaluate in another thread while fit runs -------------------------
def run_threads(count, target):
    """Runs target(i) in `count` threads started together; returns their exceptions."""
    barrier = threading.Barrier(count)
    errors = []

    def run(i):
        try:
            barrier.wait(TIMEOUT)
            target(i)
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            errors.append(e)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert not any(w.is_alive() for w in workers)
    return errors


def test_concurrent_predicts_on_one_model_are_bit_identical_to_single_threaded(threads):
    threads(2)  # (predict on 1024 rows runs its products on 2 threads: the teams run concurrently)
    x, y = data(1024)
    model = make_model()
    model.fit(x[:96], y[:96], epochs=1, batch_size=16, verbose=0)
    inputs = [x, x[:1], x[:100]]
    expected = [model.predict(v, verbose=0) for v in inputs] + [model.predict(x, batch_size=100, verbose=0),
                                                                 model(x[:64])]
    mismatches = []

    def predict_many(i):
        for round_ in range(6):
            got = [model.predict(v, verbose=0) for v in inputs] + [model.predict(x, batch_size=100, verbose=0),
                                                                    model(x[:64])]
            mismatches.extend((i, round_, k) for k, (a, b) in enumerate(zip(got, expected)) if not np.array_equal(a, b))

    assert run_threads(4, predict_many) == []
    assert mismatches == []
    assert fastnn._core.thread_limit() == 0 and thread_tuner._owner[0] is None


def test_predict_and_evaluate_in_another_thread_while_fit_runs(two_adaptive_threads, tmp_path):
    x, y = data()
    probe = x[:24]

    def train(concurrent):
        model = make_model()
        snapshots = []  # the weights between every two steps: all a concurrent predict may see
        outputs, evaluations, weights, saved, errors = [], [], [], [], []
        started, done = threading.Event(), threading.Event()

        def reader():
            try:
                while not done.is_set():
                    outputs.append(model.predict(probe, verbose=0))
                    evaluations.append(model.evaluate(x, y, verbose=0, return_dict=True))
                    outputs.append(model(probe))
                    weights.append(model.get_weights())
                    if len(saved) < 3:
                        saved.append(tmp_path / f"during-fit-{len(saved)}.fastnn")
                        model.save(saved[-1])
                    started.set()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                started.set()

        thread = threading.Thread(target=reader)

        def on_train_begin(logs):
            snapshots.append(model.get_weights())
            if concurrent:
                thread.start()
                assert started.wait(TIMEOUT)

        callback = fastnn.callbacks.LambdaCallback(
            on_train_begin=on_train_begin, on_train_batch_end=lambda b, logs: snapshots.append(model.get_weights()))
        history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[callback])
        done.set()
        if concurrent:
            thread.join(TIMEOUT)
        return model, history.history, snapshots, outputs, evaluations, weights, saved, errors

    _, quiet_history, quiet_snapshots, *_ = train(False)
    model, history, snapshots, outputs, evaluations, weights, saved, errors = train(True)
    assert errors == []
    assert outputs and evaluations and weights and saved
    # the fit is the one without the concurrent reader: same losses, metrics and weights at every step
    assert history == quiet_history
    assert len(snapshots) == len(quiet_snapshots)
    assert all(weights_equal(a, b) for a, b in zip(snapshots, quiet_snapshots))
    # each concurrent predict is the model's probabilities for the weights between two steps, bit for
    # bit (never a mix of weights before and after an update)
    twin = make_model()
    possible = []
    for snapshot in snapshots:
        twin.set_weights(snapshot)
        possible.append(twin.predict(probe, verbose=0))
    for p in outputs:
        assert_probabilities(p)
        assert any(np.array_equal(p, q) for q in possible)
    for logs in evaluations:
        assert np.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
    # get_weights and save from that thread: the weights of one moment too (and a file that loads)
    for found in weights + [fastnn.models.load_model(path).get_weights() for path in saved]:
        assert any(weights_equal(found, w) for w in snapshots)
    assert fastnn._core.thread_limit() == 0


# ---- (4) two training loops on one model ------------------------------------------------------------------
def test_a_second_fit_on_a_model_in_training_is_a_clear_error_and_the_model_stays_usable():
    x, y = data()
    reference = make_model(dropout=0)
    reference.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model = make_model(dropout=0)  # (the same seed: the same weights and shuffles)
    before = model.get_weights()
    errors = {}

    def on_batch_end(batch, logs):
        if batch != 1:
            return
        for who, call in (("fit", lambda: model.fit(x, y, epochs=1, verbose=0)),
                          ("train_on_batch", lambda: model.train_on_batch(x[:4], y[:4])),
                          ("train_step", lambda: model.train_step((x[:4], y[:4])))):
            with pytest.raises(RuntimeError) as nested:
                call()
            errors[who] = str(nested.value)
        # and from another thread while this fit runs
        found = []

        def other():
            try:
                model.fit(x, y, epochs=1, verbose=0)
            except RuntimeError as e:
                found.append(str(e))

        thread = threading.Thread(target=other, name="second-trainer")
        thread.start()
        thread.join(TIMEOUT)
        errors["thread"] = found[0] if found else None

    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                        callbacks=[fastnn.callbacks.LambdaCallback(on_train_batch_end=on_batch_end)])
    assert set(errors) == {"fit", "train_on_batch", "train_step", "thread"}
    for who, message in errors.items():
        assert message is not None
        assert f"model '{model.name}' is already being trained" in message
        assert "a fit of it is running" in message
    assert "in this thread" in errors["fit"] and "callbacks" in errors["fit"]
    assert errors["train_on_batch"].startswith("train_on_batch: ")
    assert "another thread (MainThread)" in errors["thread"]
    # the refused calls changed nothing: the training is the one without them
    assert weights_equal(model.get_weights(), reference.get_weights())
    assert history.history["loss"] == reference.history.history["loss"]
    assert not weights_equal(before, model.get_weights())
    # and the model trains, predicts and evaluates as usual afterwards
    model.fit(x, y, epochs=1, verbose=0)
    model.train_on_batch(x[:4], y[:4])
    assert_probabilities(model.predict(x, verbose=0))
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])


def test_two_models_train_in_two_threads_as_they_do_one_after_the_other(two_adaptive_threads):
    # (no Dropout and no shuffling: both would draw from the one global generator in an order that
    # depends on the threads' timing)
    x, y = data(256)

    def train(model):
        model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
        return model.get_weights()

    first, second = make_model(1, dropout=0), make_model(2, dropout=0)
    expected = [train(make_model(1, dropout=0)), train(make_model(2, dropout=0))]
    results = {}
    errors = run_threads(2, lambda i: results.__setitem__(i, train((first, second)[i])))
    assert errors == []
    assert weights_equal(results[0], expected[0]) and weights_equal(results[1], expected[1])
    assert fastnn._core.thread_limit() == 0 and thread_tuner._owner[0] is None


# ---- the pieces: the thread cap, tracing --------------------------------------------------------------------
def test_one_tuner_at_a_time_is_in_charge_of_the_thread_cap(two_adaptive_threads):
    first = thread_tuner.ThreadTuner()
    first.step_begin()
    assert first.active and fastnn._core.thread_limit() == 1
    nested = thread_tuner.ThreadTuner()  # an evaluate inside fit, or a predict in another thread
    assert not nested.active
    nested.step_begin()
    nested.step_end()
    nested.close()
    assert fastnn._core.thread_limit() == 1  # still fit's cap
    first.close()
    assert fastnn._core.thread_limit() == 0
    again = thread_tuner.ThreadTuner()
    again.step_begin()
    assert again.active and fastnn._core.thread_limit() == 1
    del again  # dropped without close(): its cap is lifted and the next tuner takes charge
    assert fastnn._core.thread_limit() == 0
    assert thread_tuner.ThreadTuner().active


def test_a_trace_in_one_thread_leaves_eager_calls_in_another_eager():
    entered, release = threading.Event(), threading.Event()

    class Slow(fastnn.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            entered.set()
            release.wait(TIMEOUT)  # tracing (on symbolic inputs) waits here
            return fastnn.ops.multiply(inputs, self.w)

    dense = fastnn.layers.Dense(2)
    dense.build((None, 3))
    results = []
    thread = threading.Thread(target=lambda: results.append(Slow()(np.ones((2, 3), "float32"))))
    thread.start()
    try:
        assert entered.wait(TIMEOUT)
        eager = dense(np.ones((1, 3), "float32"))  # while the other thread traces
        scaled = fastnn.ops.multiply(dense.kernel, 2.0)
    finally:
        release.set()
        thread.join(TIMEOUT)
    assert isinstance(eager, np.ndarray) and eager.shape == (1, 2)
    assert isinstance(scaled, np.ndarray)
    np.testing.assert_array_equal(results[0], np.ones((2, 3), "float32"))
