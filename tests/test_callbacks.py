"""Callbacks, learning-rate schedules and the moving average of weights."""

import csv
import math
import struct

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, layers, optimizers
from fastnn.optimizers import schedules


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x[:200], y[:200], x[200:], y[200:]


def make_model(seed=0, optimizer=None):
    fastnn.utils.set_random_seed(seed)
    model = fastnn.Sequential([layers.Dense(8, activation="relu", input_shape=(6,)),
                               layers.Dense(2, activation="softmax")])
    model.compile(optimizer or optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Scripted(callbacks.Callback):
    """Replaces the monitored value by a script, to exercise the callbacks' logic exactly."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


# ---- EarlyStopping ----------------------------------------------------------------------------
def test_early_stopping_stops_after_patience_and_restores_the_best(data):
    x, y, xv, yv = data
    model = make_model()
    weights = []
    record = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    stop = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    script = Scripted([1.0, 0.8, 0.5, 0.6, 0.55, 0.4, 0.3])  # best at epoch 2, no better for 2 epochs
    history = model.fit(x, y, epochs=7, validation_data=(xv, yv), callbacks=[script, record, stop], verbose=0)
    assert len(history.history["loss"]) == 5 and stop.stopped_epoch == 4 and stop.best_epoch == 2
    for a, b in zip(model.get_weights(), weights[2]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_the_best_also_when_training_runs_to_the_end(data):
    x, y, xv, yv = data
    model = make_model()
    weights = []
    record = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    stop = callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    model.fit(x, y, epochs=4, validation_data=(xv, yv), verbose=0,
              callbacks=[Scripted([0.9, 0.3, 0.5, 0.6]), record, stop])
    assert stop.stopped_epoch == 0
    for a, b in zip(model.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_modes_min_delta_baseline_and_start_epoch(data):
    x, y, _, _ = data
    model = make_model()
    up = callbacks.EarlyStopping(monitor="accuracy", patience=1, min_delta=0.1)  # auto: accuracy goes up
    model.fit(x, y, epochs=5, callbacks=[Scripted([0.5, 0.55, 0.58, 0.9, 0.95], "accuracy"), up], verbose=0)
    assert up.stopped_epoch == 1  # +0.05 is below min_delta: patience 1 runs out
    losses = [0.5, 0.4, 0.45, 0.45, 0.45]
    plain = callbacks.EarlyStopping(monitor="loss", patience=2)
    model.fit(x, y, epochs=5, callbacks=[Scripted(losses, "loss"), plain], verbose=0)
    baseline = callbacks.EarlyStopping(monitor="loss", patience=2, baseline=0.1)
    model.fit(x, y, epochs=5, callbacks=[Scripted(losses, "loss"), baseline], verbose=0)
    assert (plain.stopped_epoch, baseline.stopped_epoch) == (3, 2)  # above the baseline, patience never resets
    late = callbacks.EarlyStopping(monitor="loss", patience=0, start_from_epoch=3)
    model.fit(x, y, epochs=5, callbacks=[Scripted([1, 2, 3, 4, 5], "loss"), late], verbose=0)
    assert late.stopped_epoch == 4
    with pytest.raises(ValueError, match="'mode'"):
        callbacks.EarlyStopping(mode="up")


# ---- LearningRateScheduler / ReduceLROnPlateau --------------------------------------------------
def test_learning_rate_scheduler_sets_and_logs_the_rate(data):
    x, y, _, _ = data
    model = make_model(optimizer=optimizers.SGD(0.1))
    seen = []
    probe = callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(model.optimizer.learning_rate))
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    history = model.fit(x, y, epochs=3, callbacks=[sched, probe], verbose=0)
    assert seen == [0.1, 0.05, 0.025]
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]
    only_epoch = callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    model.fit(x, y, epochs=2, callbacks=[only_epoch], verbose=0)
    assert model.optimizer.learning_rate == pytest.approx(0.02)


def test_reduce_lr_on_plateau(data):
    x, y, _, _ = data
    model = make_model(optimizer=optimizers.SGD(1.0))
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    history = model.fit(x, y, epochs=8, verbose=0,
                        callbacks=[Scripted([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "loss"), reduce])
    # The rate is logged before each epoch's decision. Plateau from epoch 1: reduce at 2;
    # the cooldown epoch (3) resets the wait and counts again; reduce at 4, at 6 (to the floor).
    assert history.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]
    assert model.optimizer.learning_rate == pytest.approx(0.2)


# ---- CSVLogger / TerminateOnNaN / LambdaCallback -------------------------------------------------
def test_csv_logger_writes_one_row_per_epoch_and_appends(data, tmp_path):
    x, y, xv, yv = data
    path = tmp_path / "log.csv"
    model = make_model()
    history = model.fit(x, y, epochs=3, validation_data=(xv, yv), callbacks=[callbacks.CSVLogger(path)], verbose=0)
    rows = list(csv.DictReader(open(path)))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history.history["val_loss"])
    model.fit(x, y, epochs=2, callbacks=[callbacks.CSVLogger(path, append=True)], verbose=0)
    lines = open(path).read().splitlines()
    assert len(lines) == 1 + 3 + 2 and lines.count(lines[0]) == 1


def test_terminate_on_nan_stops_at_the_first_bad_batch(data, capsys):
    x, y, _, _ = data
    model = make_model(optimizer=optimizers.SGD(1e30))  # the loss overflows within a few batches
    batches = []
    model.fit(x, y, epochs=5, batch_size=8, verbose=0,
              callbacks=[callbacks.TerminateOnNaN(), callbacks.LambdaCallback(
                  on_train_batch_end=lambda b, logs: batches.append(logs["loss"]))])
    assert not np.isfinite(batches[-1]) and all(np.isfinite(batches[:-1]))
    assert len(batches) < 5 * 25
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_lambda_callback_rejects_unknown_hooks():
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_finish'"):
        callbacks.LambdaCallback(on_epoch_finish=print)


def test_validation_fires_the_test_hooks(data):
    x, y, xv, yv = data
    events = []
    hooks = callbacks.LambdaCallback(on_test_begin=lambda logs: events.append("begin"),
                                     on_test_end=lambda logs: events.append(("end", round(logs["loss"], 6))))
    model = make_model()
    history = model.fit(x, y, epochs=2, validation_data=(xv, yv), callbacks=[hooks], verbose=0)
    assert events == ["begin", ("end", round(history.history["val_loss"][0], 6)), "begin",
                      ("end", round(history.history["val_loss"][1], 6))]


# ---- TensorBoard -------------------------------------------------------------------------------------
def _scalars(folder):
    """(tag, step, value) from tfevents files, parsed with tensorboardX's protobuf."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.append((value.tag, event.step, value.simple_value))
    return out


def test_tensorboard_writes_scalars_tensorboard_reads(data, tmp_path):
    pytest.importorskip("tensorboardX")
    x, y, xv, yv = data
    model = make_model()
    history = model.fit(x, y, epochs=3, validation_data=(xv, yv), verbose=0,
                        callbacks=[callbacks.TensorBoard(tmp_path, update_freq="batch", histogram_freq=1)])
    train, val = _scalars(tmp_path / "train"), _scalars(tmp_path / "validation")
    epoch_loss = sorted((s, v) for tag, s, v in train if tag == "epoch_loss")
    assert [v for _, v in epoch_loss] == pytest.approx(history.history["loss"], rel=1e-6)
    assert sorted(v for tag, s, v in val if tag == "epoch_accuracy") == pytest.approx(
        sorted(history.history["val_accuracy"]), rel=1e-6)
    assert sum(tag == "batch_loss" for tag, _, _ in train) == 3 * 7


# ---- schedules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule,step,expected", [
    (schedules.ExponentialDecay(0.1, 10, 0.5), 15, 0.1 * 0.5 ** 1.5),
    (schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True), 15, 0.05),
    (schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1]), 10, 1.0),
    (schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1]), 11, 0.5),
    (schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1]), 21, 0.1),
    (schedules.InverseTimeDecay(0.1, 10, 0.5), 15, 0.1 / (1 + 0.5 * 1.5)),
    (schedules.InverseTimeDecay(0.1, 10, 0.5, staircase=True), 15, 0.1 / 1.5),
    (schedules.PolynomialDecay(0.1, 100, 0.01, power=2.0), 50, (0.1 - 0.01) * 0.25 + 0.01),
    (schedules.PolynomialDecay(0.1, 100, 0.01), 500, 0.01),
    (schedules.PolynomialDecay(0.1, 100, 0.01, cycle=True), 150, (0.1 - 0.01) * (1 - 150 / 200) + 0.01),
    (schedules.CosineDecay(0.1, 100, alpha=0.1), 50, 0.1 * (0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)) + 0.1)),
    (schedules.CosineDecay(0.1, 100), 1000, 0.0),
    (schedules.CosineDecay(0.0, 100, warmup_target=0.2, warmup_steps=10), 5, 0.1),
    (schedules.CosineDecay(0.0, 100, warmup_target=0.2, warmup_steps=10), 60, 0.2 * 0.5 * (1 + math.cos(math.pi * 0.5))),
    (schedules.CosineDecayRestarts(0.1, 10, t_mul=1.0), 15, 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5))),
    (schedules.CosineDecayRestarts(0.1, 10, t_mul=2.0, m_mul=0.5), 20, 0.1 * 0.5 * 0.5 * (1 + math.cos(math.pi * 0.5))),
])
def test_schedules_match_their_formulas(schedule, step, expected):
    assert schedule(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_optimizer_uses_a_schedule_at_its_iteration_count(data):
    x, y, _, _ = data
    lr = schedules.PiecewiseConstantDecay([3], [0.5, 0.0])
    model = make_model(optimizer=optimizers.SGD(lr))
    before = model.get_weights()
    model.fit(x[:32], y[:32], batch_size=8, epochs=1, shuffle=False, verbose=0)  # steps at lr 0.5, 0.5, 0.5, 0.0
    mid = model.get_weights()
    model.fit(x[:32], y[:32], batch_size=8, epochs=1, shuffle=False, verbose=0)  # lr 0: nothing moves
    assert not np.array_equal(before[0], mid[0])
    for a, b in zip(mid, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    restored = optimizers.SGD.from_config(model.optimizer.get_config())
    assert isinstance(restored._learning_rate, schedules.PiecewiseConstantDecay)


# ---- moving average of weights -----------------------------------------------------------------------
def test_ema_weights_equal_a_numpy_ema_of_the_trajectory(data):
    x, y, _, _ = data
    model = make_model(optimizer=optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9))
    trajectory = []
    record = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: trajectory.append(model.get_weights()))
    model.fit(x, y, batch_size=20, epochs=3, callbacks=[record], verbose=0)
    ema = [w.astype(np.float64) for w in trajectory[0]]  # Keras: the first step copies
    for step in trajectory[1:]:
        ema = [0.9 * e + 0.1 * w for e, w in zip(ema, step)]
    for a, b in zip(model.get_weights(), ema):  # fit ends by writing the average into the weights
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_swap_ema_weights_for_validation(data):
    x, y, xv, yv = data
    model = make_model(optimizer=optimizers.Adam(0.05, use_ema=True, ema_momentum=0.5))
    seen = []

    class Probe(callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen.append(("test", model.get_weights()[0].copy()))

        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch", model.get_weights()[0].copy(), model.optimizer.variables_state(0)["ema"].copy()))

    model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0, callbacks=[callbacks.SwapEMAWeights(), Probe()])
    # During validation the average was in place; after it the raw weights came back.
    test_weights, epoch_weights, ema_after = seen[0][1], seen[1][1], seen[1][2]
    np.testing.assert_array_equal(test_weights, ema_after)
    assert not np.array_equal(epoch_weights, ema_after)


def test_ema_overwrite_frequency_copies_the_average_in(data):
    x, y, _, _ = data
    model = make_model(optimizer=optimizers.SGD(0.1, use_ema=True, ema_momentum=0.99, ema_overwrite_frequency=5))
    copies = []
    record = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: copies.append(
        np.array_equal(model.get_weights()[0], model.optimizer.variables_state(0)["ema"])))
    model.fit(x, y, batch_size=20, epochs=1, callbacks=[record], verbose=0)
    assert copies == [i == 0 or i % 5 == 4 for i in range(10)]  # the first step copies the weights


# ---- ModelCheckpoint ----------------------------------------------------------------------------------
def test_model_checkpoint_names_files_from_epoch_and_logs(data, tmp_path):
    x, y, xv, yv = data
    model = make_model()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.fastnn")
    history = model.fit(x, y, epochs=3, validation_data=(xv, yv), verbose=0,
                        callbacks=[callbacks.ModelCheckpoint(pattern)])
    expected = {f"ckpt-{e + 1:02d}-{v:.3f}.fastnn" for e, v in enumerate(history.history["val_loss"])}
    assert {p.name for p in tmp_path.iterdir()} == expected
    last = fastnn.models.load_model(tmp_path / sorted(expected)[-1])
    np.testing.assert_array_equal(last.predict(xv), model.predict(xv))


def test_model_checkpoint_save_best_only_and_weights_only(data, tmp_path):
    x, y, xv, yv = data
    model = make_model()
    path = tmp_path / "best.weights.fastnn"
    saved = []
    check = callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True, save_weights_only=True)
    probe = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: saved.append(path.exists() and path.stat().st_mtime_ns))
    model.fit(x, y, epochs=4, validation_data=(xv, yv), verbose=0,
              callbacks=[Scripted([0.5, 0.4, 0.6, 0.45]), check, probe])
    assert saved[0] and saved[1] != saved[0] and saved[2] == saved[1] == saved[3]  # epochs 0 and 1 improved
    fresh = make_model(seed=5)
    fresh.load_weights(path)
    assert check.best == pytest.approx(0.4)


def test_model_checkpoint_every_n_batches(data, tmp_path):
    x, y, _, _ = data
    model = make_model()
    model.fit(x, y, epochs=2, batch_size=20, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.fastnn"), save_freq=4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["e1-b4.fastnn", "e1-b8.fastnn", "e2-b2.fastnn", "e2-b6.fastnn", "e2-b10.fastnn"])
