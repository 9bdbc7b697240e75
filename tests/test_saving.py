"""model.save / load_model / save_weights / load_weights (fastnn.saving)."""

import ast
import hashlib
import inspect
import io
import json
import os
import pathlib
import warnings
import zipfile

import numpy as np
import pytest

import fastnn
import fastnn.saving
from fastnn import layers, ops
from fastnn.saving import register_keras_serializable, registration

# ---- custom objects, registered at import (as a user's module would) -------------------------------


@register_keras_serializable(package="TestSaving")
class Scale(layers.Layer):
    """Multiplies each feature by a learned factor times a fixed `gain`."""

    def __init__(self, gain=1.0, **kwargs):
        super().__init__(**kwargs)
        self.gain = float(gain)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):  # Keras' way: its gradient comes from the traced ops
        return x * (self.scale * self.gain)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


@register_keras_serializable(package="TestSaving")
def doubled_mse(y_true, y_pred):
    return 2.0 * ops.mean(ops.square(y_pred - y_true), axis=-1)


@register_keras_serializable(package="TestSaving")
def scaled_tanh(x):
    return 1.5 * ops.tanh(x)


@register_keras_serializable(package="TestSaving")
def max_abs_error(y_true, y_pred):
    return np.max(np.abs(np.asarray(y_pred) - np.asarray(y_true)), axis=-1)


@register_keras_serializable(package="TestSaving")
class MeanPrediction(fastnn.metrics.Metric):
    """The mean of all predictions, offset by `offset`."""

    def __init__(self, offset=0.0, name="mean_prediction", dtype=None):
        self.offset = offset
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.total, self.count = 0.0, 0

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.total += float(np.sum(y_pred))
        self.count += np.size(y_pred)

    def result(self):
        return self.total / max(self.count, 1) + self.offset

    def get_config(self):
        return {"offset": self.offset, "name": self.name, "dtype": self.dtype}


@register_keras_serializable(package="TestSaving")
class HalvingSchedule(fastnn.optimizers.schedules.LearningRateSchedule):
    """`initial` halved every `every` steps."""

    def __init__(self, initial, every):
        self.initial, self.every = initial, every

    def __call__(self, step):
        return self.initial * 0.5 ** (step // self.every)

    def get_config(self):
        return {"initial": self.initial, "every": self.every}


@register_keras_serializable(package="TestSaving")
class ScaledAbsoluteError(fastnn.losses.Loss):
    """`factor` * mean |y_pred - y_true| per sample, with its gradient given."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, y_true, y_pred):
        return self.factor * np.mean(np.abs(y_pred - y_true), axis=-1)

    def gradient(self, y_true, y_pred):
        return self.factor * np.sign(y_pred - y_true) / y_pred.shape[-1]

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


# ---- helpers ---------------------------------------------------------------------------------------------
def data(n=48, features=5, classes=3, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(dtype)
    y = (np.abs(x[:, 0] * 2 + x[:, 1]).astype(np.int64) % classes)
    return x, y


def classifier(dtype="float32", optimizer=None, dropout_seed=7, metrics=("accuracy",), compile=True):
    fastnn.utils.set_random_seed(1)
    model = fastnn.Sequential([
        fastnn.Input(shape=(5,), dtype=dtype),
        layers.Dense(16, activation="relu", dtype=dtype),
        layers.Dropout(0.25, seed=dropout_seed, dtype=dtype),
        layers.Dense(8, activation="tanh", dtype=dtype),
        layers.Dropout(0.1, dtype=dtype),  # unseeded: draws from the global generator
        layers.Dense(3, activation="softmax", dtype=dtype),
    ])
    if compile:
        model.compile(optimizer=optimizer or fastnn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=list(metrics))
    return model


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(wa, wb))


def rewrite(path, members=None, header=None):
    """Rewrites a saved archive with some members replaced and/or its header edited."""
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    contents.update(members or {})
    if header is not None:
        contents["fastnn.json"] = json.dumps(header(json.loads(contents["fastnn.json"]))).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in contents.items():
            archive.writestr(name, raw)


def read_header(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("fastnn.json"))


# ---- round trips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".fastnn", ".keras", ""])
def test_save_load_gives_identical_predictions(tmp_path, suffix):
    x, y = data()
    model = classifier()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / f"model{suffix}"
    with pytest.warns(UserWarning, match="fastnn's own format") if suffix == ".keras" else warnings.catch_warnings():
        model.save(path)
    loaded = fastnn.models.load_model(path)  # fastnn's file, whatever its name
    assert type(loaded) is fastnn.Sequential and loaded.name == model.name
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.get_config() == model.get_config()
    assert same_weights(model, loaded)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(fastnn.saving.load_model(path).predict(x), model.predict(x))


def test_saving_the_same_model_twice_gives_the_same_bytes(tmp_path):
    model = classifier()
    model.fit(*data(), epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "a.fastnn")
    model.save(tmp_path / "b.fastnn")
    assert (tmp_path / "a.fastnn").read_bytes() == (tmp_path / "b.fastnn").read_bytes()


def test_file_layout_is_a_zip_of_json_and_npy(tmp_path):
    model = classifier()
    model.fit(*data(), epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    header = read_header(tmp_path / "m.fastnn")
    assert header["format"] == "fastnn" and header["format_version"] == 1 and header["kind"] == "model"
    assert header["fastnn_version"] == fastnn.__version__
    with zipfile.ZipFile(tmp_path / "m.fastnn") as archive:
        names = archive.namelist()
        assert {e["file"] for e in header["weights"]} | {e["file"] for e in header["optimizer_state"]["slots"]} \
            == set(names) - {"fastnn.json"}
        first = header["weights"][0]
        array = np.load(io.BytesIO(archive.read(first["file"])), allow_pickle=False)
    assert first["name"] == f"{model.layers[0].name}/kernel" and first["weight"] == "kernel"
    assert array.shape == (5, 16) and array.dtype == np.float32
    np.testing.assert_array_equal(array, model.get_weights()[0])


OPTIMIZERS = {
    "adam+schedule": lambda: fastnn.optimizers.Adam(
        fastnn.optimizers.schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.7)),
    "nadam": lambda: fastnn.optimizers.Nadam(0.01),
    "sgd+decay": lambda: fastnn.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01,
                                               clipnorm=1.0),
    "rmsprop+ema": lambda: fastnn.optimizers.RMSprop(0.005, momentum=0.5, centered=True, use_ema=True,
                                                     ema_overwrite_frequency=4),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resumed_training_is_bit_identical(tmp_path, name):
    x, y = data()
    model = classifier(optimizer=OPTIMIZERS[name]())
    if name == "sgd+decay":
        model.optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    resumed = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert resumed.optimizer.iterations == model.optimizer.iterations == 6

    fastnn.utils.set_random_seed(123)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    fastnn.utils.set_random_seed(123)
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert same_weights(model, resumed)
    assert resumed.optimizer.iterations == model.optimizer.iterations == 9
    for a, b in zip(model.optimizer.get_state()["slots"].values(), resumed.optimizer.get_state()["slots"].values()):
        np.testing.assert_array_equal(a, b)


def test_resume_after_freezing_a_layer_matches_the_original(tmp_path):
    # Frozen after training: the next fit rebuilds the optimizer's slots, keeping its count.
    x, y = data()
    model = classifier(optimizer=fastnn.optimizers.Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.layers[0].trainable = False
    model.save(tmp_path / "m.fastnn")
    resumed = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert resumed.layers[0].trainable is False
    for m in (model, resumed):
        fastnn.utils.set_random_seed(5)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert same_weights(model, resumed)
    assert resumed.optimizer.iterations == model.optimizer.iterations == 6


def test_compile_settings_are_restored(tmp_path):
    x, y = data()
    schedule = fastnn.optimizers.schedules.CosineDecay(0.05, decay_steps=20, alpha=0.1, warmup_target=0.1,
                                                       warmup_steps=2)
    model = classifier(compile=False)
    model.compile(optimizer=fastnn.optimizers.AdamW(schedule, weight_decay=0.02, beta_1=0.8, amsgrad=True,
                                                    global_clipnorm=2.0),
                  loss=fastnn.losses.SparseCategoricalCrossentropy(name="xent"),
                  metrics=["acc", fastnn.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
                  weighted_metrics=[fastnn.metrics.SparseCategoricalAccuracy(name="weighted_acc")],
                  loss_weights=0.5)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")

    assert type(loaded.optimizer) is fastnn.optimizers.AdamW
    config = loaded.optimizer.get_config()
    assert config == model.optimizer.get_config()
    assert config["weight_decay"] == 0.02 and config["beta_1"] == 0.8 and config["amsgrad"] is True
    assert config["global_clipnorm"] == 2.0
    restored = loaded.optimizer._learning_rate
    assert type(restored) is fastnn.optimizers.schedules.CosineDecay
    assert restored.get_config() == schedule.get_config()
    assert loaded.optimizer.learning_rate == model.optimizer.learning_rate
    assert type(loaded.loss) is fastnn.losses.SparseCategoricalCrossentropy and loaded.loss.name == "xent"
    assert loaded.metrics_names == model.metrics_names == ["loss", "acc", "top2", "weighted_acc"]
    assert loaded.compiled_metrics[1].k == 2
    assert loaded._compiled.outputs[0].weight == 0.5
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    w = np.linspace(0.5, 2.0, len(x))
    assert loaded.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True) == \
        model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)


def test_load_model_with_compile_false_is_uncompiled(tmp_path):
    x, y = data()
    model = classifier()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn", compile=False)
    assert loaded.optimizer is None and loaded.loss is None
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_model_built_by_fit_without_declared_input_shape(tmp_path):
    x, y = data()
    fastnn.utils.set_random_seed(2)
    model = fastnn.Sequential([layers.Dense(4, activation="relu"), layers.Dense(1)])
    model.compile("sgd", loss="mse", metrics=["mae"])
    model.fit(x, y.astype("float32"), epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert loaded.built and loaded.input_shape == (None, 5)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_unbuilt_uncompiled_model_round_trips(tmp_path):
    model = fastnn.Sequential([layers.Dense(4), layers.Dense(2)], name="later")
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert not loaded.built and loaded.name == "later" and [l.units for l in loaded.layers] == [4, 2]


def test_float64_model_round_trips(tmp_path):
    x, y = data(dtype="float64")
    model = classifier(dtype="float64", optimizer=fastnn.optimizers.Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert all(w.dtype == np.float64 for w in loaded.get_weights())
    assert all(s.dtype == np.float64 for s in loaded.optimizer.get_state()["slots"].values())
    assert same_weights(model, loaded)
    assert loaded.predict(x).dtype == np.float64
    for m in (model, loaded):
        fastnn.utils.set_random_seed(9)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert same_weights(model, loaded)


# ---- weights only --------------------------------------------------------------------------------------
def test_save_weights_load_weights_round_trip(tmp_path):
    x, y = data()
    model = classifier()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save_weights(tmp_path / "w.weights.fastnn")
    other = classifier(compile=False)  # same architecture, different layer names and initial weights
    assert not same_weights(model, other)
    other.load_weights(tmp_path / "w.weights.fastnn")
    assert same_weights(model, other)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    assert read_header(tmp_path / "w.weights.fastnn")["kind"] == "weights"


def test_load_weights_builds_an_unbuilt_model_and_reads_model_files(tmp_path):
    x, y = data()
    model = classifier()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    unbuilt = fastnn.Sequential([layers.Dense(16, activation="relu"), layers.Dropout(0.25, seed=7),
                                 layers.Dense(8, activation="tanh"), layers.Dense(3, activation="softmax")])
    unbuilt.load_weights(tmp_path / "m.fastnn")  # a full model file; layers without weights may differ
    assert unbuilt.built and same_weights(model, unbuilt)
    np.testing.assert_array_equal(unbuilt.predict(x), model.predict(x))


def test_load_weights_into_a_different_architecture_names_the_first_mismatch(tmp_path):
    model = classifier()
    model.save_weights(tmp_path / "w.fastnn")
    before = [w.copy() for w in model.get_weights()]
    wider = fastnn.Sequential([fastnn.Input(shape=(5,)), layers.Dense(16, name="a"), layers.Dense(9, name="b"),
                               layers.Dense(3, name="c")])
    kept = wider.get_weights()
    with pytest.raises(ValueError, match=r"'b/kernel' \(Dense, shape \(16, 9\)\).*'dense_\d*/?.*kernel'") as info:
        wider.load_weights(tmp_path / "w.fastnn")
    assert str(tmp_path / "w.fastnn") in str(info.value) and "architecture differs" in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(wider.get_weights(), kept))  # nothing changed

    shorter = fastnn.Sequential([fastnn.Input(shape=(5,)), layers.Dense(16, name="a"), layers.Dense(8, name="b")])
    with pytest.raises(ValueError, match=r"file's weight '.*kernel' \(Dense, shape \(8, 3\)\) has no counterpart"):
        shorter.load_weights(tmp_path / "w.fastnn")

    prelu = fastnn.Sequential([fastnn.Input(shape=(5,)), layers.Dense(16, name="a"), layers.PReLU(name="p"),
                               layers.Dense(8), layers.Dense(3)])
    with pytest.raises(ValueError, match=r"'p/alpha' \(PReLU, shape \(16,\)\)"):
        prelu.load_weights(tmp_path / "w.fastnn")

    with pytest.warns(UserWarning, match="skip_mismatch"):
        wider.load_weights(tmp_path / "w.fastnn", skip_mismatch=True)
    np.testing.assert_array_equal(wider.layers[0].get_weights()[0], before[0])  # the matching layer loaded


def test_load_model_refuses_a_weights_file(tmp_path):
    model = classifier()
    model.save_weights(tmp_path / "w.fastnn")
    with pytest.raises(ValueError, match="weights only.*load_weights"):
        fastnn.models.load_model(tmp_path / "w.fastnn")


# ---- atomic writes ----------------------------------------------------------------------------------------
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    x, y = data()
    model = classifier()
    path = tmp_path / "m.fastnn"
    model.save(path)
    old_bytes = path.read_bytes()
    old_predictions = model.predict(x)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # the new state differs

    original = fastnn.saving.archive._write_array
    calls = []

    def failing(archive, member, array):
        calls.append(member)
        if len(calls) == 3:
            raise OSError(28, "No space left on device (simulated)")
        return original(archive, member, array)

    monkeypatch.setattr(fastnn.saving.archive, "_write_array", failing)
    with pytest.raises(OSError, match="simulated"):
        model.save(path)
    assert len(calls) == 3
    assert os.listdir(tmp_path) == ["m.fastnn"]
    assert path.read_bytes() == old_bytes
    np.testing.assert_array_equal(fastnn.models.load_model(path).predict(x), old_predictions)

    calls.clear()
    with pytest.raises(OSError, match="simulated"):
        model.save_weights(tmp_path / "new.fastnn")  # no previous file: none appears
    assert os.listdir(tmp_path) == ["m.fastnn"]

    monkeypatch.setattr(fastnn.saving.archive, "_write_array", original)
    model.save(path)  # and a later save succeeds
    np.testing.assert_array_equal(fastnn.models.load_model(path).predict(x), model.predict(x))


def test_overwrite_false_and_bad_targets(tmp_path):
    model = classifier()
    model.save(tmp_path / "m.fastnn")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save(tmp_path / "m.fastnn", overwrite=False)
    with pytest.raises(IsADirectoryError, match="folder"):
        model.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.save(tmp_path / "no" / "such" / "m.fastnn")
    with pytest.raises(FileNotFoundError, match="No such file"):
        fastnn.models.load_model(tmp_path / "missing.fastnn")


# ---- damaged and hostile files ------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    x, _ = data()
    model = classifier()
    model.fit(x, data()[1], epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "m.fastnn"
    model.save(path)
    return path, model.predict(x), x


def test_truncated_files_raise_a_clear_error(saved):
    path, _, _ = saved
    raw = path.read_bytes()
    for size in (0, 3, 100, len(raw) // 2, len(raw) - 23, len(raw) - 1):
        path.write_bytes(raw[:size])
        with pytest.raises(ValueError) as info:
            fastnn.models.load_model(path)
        message = str(info.value)
        assert str(path) in message
        assert ("empty" if size == 0 else "truncated or corrupted" if size > 3 else "not a fastnn file") in message


def test_flipped_bytes_raise_a_clear_error_or_change_nothing(saved):
    path, predictions, x = saved
    raw = path.read_bytes()
    header = read_header(path)
    member = header["weights"][0]["file"]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    flipped = bytearray(raw)
    flipped[data_start + 200] ^= 0x10  # inside the first kernel's values
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"truncated or corrupted.*(CRC|checksum)"):
        fastnn.models.load_model(path)

    rng = np.random.default_rng(0)
    for offset in rng.choice(len(raw), size=400, replace=False):
        flipped = bytearray(raw)
        flipped[offset] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        try:
            model = fastnn.models.load_model(path)
        except ValueError as e:
            assert str(path) in str(e), (offset, e)
        else:  # a harmless byte (a date, a comment...): the model is intact
            np.testing.assert_array_equal(model.predict(x), predictions)


def test_files_that_are_not_fastnn_files(tmp_path):
    text = tmp_path / "notes.fastnn"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.fastnn' is not a fastnn file"):
        fastnn.models.load_model(text)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="HDF5"):
        fastnn.models.load_model(h5)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))  # a zip of .npy files, but not ours
    with pytest.raises(ValueError, match="arrays.npz' is not a fastnn file.*no 'fastnn.json'"):
        fastnn.models.load_model(npz)
    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ValueError, match="Keras .keras archive"):
        fastnn.models.load_model(keras)
    with pytest.raises(ValueError, match="is a folder"):
        fastnn.models.load_model(tmp_path)


# ---- Keras' file names and Keras' files -------------------------------------------------------------------
@pytest.mark.parametrize("method,name,suggestion", [
    ("save", "model.keras", "model.fastnn"), ("save", "model.h5", "model.fastnn"),
    ("save", "model.HDF5", "model.fastnn"), ("save_weights", "model.weights.h5", "model.weights.fastnn"),
    ("save_weights", "model.keras", "model.weights.fastnn"), ("save_weights", "w.weights.json", "w.weights.fastnn"),
])
def test_a_keras_file_name_is_written_with_a_warning_that_says_what_the_file_is(tmp_path, method, name, suggestion):
    model = classifier()
    model.fit(*data(), epochs=1, batch_size=16, verbose=0)
    path = tmp_path / name
    with pytest.warns(UserWarning) as caught:
        getattr(model, method)(path)
    assert len(caught) == 1 and caught[0].filename == __file__  # at the caller's line, not inside fastnn
    message = str(caught[0].message)
    assert repr(str(path)) in message and "fastnn's own format" in message and "Keras cannot read it" in message
    assert repr(str(tmp_path / suggestion)) in message and "'.fastnn' is fastnn's suffix" in message
    with zipfile.ZipFile(path) as archive:  # what was written is what the warning says: fastnn's archive
        assert "fastnn.json" in archive.namelist()
    if method == "save":
        np.testing.assert_array_equal(fastnn.models.load_model(path).predict(data()[0]), model.predict(data()[0]))
    else:
        other = classifier()
        other.load_weights(path)
        assert same_weights(model, other)


@pytest.mark.parametrize("name", ["model.fastnn", "model.weights.fastnn", "model", "model.bin", "h5model.zip"])
def test_other_names_are_written_silently(tmp_path, name):
    model = classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(tmp_path / name)
        model.save_weights(tmp_path / f"w-{name}")


def test_a_model_checkpoint_with_a_keras_name_warns_at_the_fit_call(tmp_path):
    model = classifier()
    with pytest.warns(UserWarning, match=r"best\.keras' was written in fastnn's own format") as caught:
        model.fit(*data(), epochs=2, batch_size=16, verbose=0,
                  callbacks=[fastnn.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"))])
    assert {w.filename for w in caught} == {__file__}


def keras_archive(path, version="3.5.0"):
    """A .keras file as Keras 3 writes it: a zip of config.json, metadata.json and model.weights.h5."""
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "sequential", "layers": [
                  {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 2}}]},
              "compile_config": None}
    metadata = {"date_saved": "2025-01-01@00:00:00"} if version is None else \
        {"keras_version": version, "date_saved": "2025-01-01@00:00:00"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", HDF5_MAGIC + bytes(504))
    return path


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@pytest.mark.parametrize("version,said", [("3.5.0", "(a model saved by Keras 3.5.0)"), (None, "(a model saved by Keras)")])
def test_a_keras_archive_is_refused_with_what_to_do(tmp_path, version, said):
    path = keras_archive(tmp_path / "model.keras", version)
    model = classifier()
    for load in (fastnn.models.load_model, fastnn.saving.load_model, model.load_weights):
        with pytest.raises(ValueError) as error:
            load(path)
        message = str(error.value)
        assert message.startswith(f"{str(path)!r} is a Keras .keras archive {said}, not a fastnn file")
        assert "fastnn reads only the files it writes itself" in message
        assert "rebuild it with fastnn layers" in message and "keras_model.get_weights()" in message
        assert "set_weights" in message and "save('model.fastnn')" in message


@pytest.mark.parametrize("name", ["model.h5", "model.weights.h5", "model.hdf5"])
def test_a_keras_hdf5_file_is_refused_with_what_to_do(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HDF5_MAGIC + bytes(2040))
    model = classifier()
    for load in (fastnn.models.load_model, model.load_weights):
        with pytest.raises(ValueError) as error:
            load(path)
        message = str(error.value)
        assert message.startswith(f"{str(path)!r} is an HDF5 file (the format of Keras' .h5 models and .weights.h5 "
                                  "weights), not a fastnn file: fastnn reads only the files it writes itself")
        assert "keras_model.get_weights()" in message and "set_weights" in message


def test_a_newer_format_version_is_refused(saved):
    path, _, _ = saved
    rewrite(path, header=lambda h: {**h, "format_version": 99, "fastnn_version": "9.0"})
    with pytest.raises(ValueError, match="format version 99.*Upgrade fastnn"):
        fastnn.models.load_model(path)


class _Sentinel:
    """Unpickling this touches a file: the proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _object_array_npy(marker):
    payload = np.empty(2, dtype=object)
    payload[0] = _Sentinel(marker)
    payload[1] = "x"
    buffer = io.BytesIO()
    np.save(buffer, payload, allow_pickle=True)
    return buffer.getvalue()


def test_a_pickled_object_array_is_refused_without_unpickling(saved, tmp_path):
    path, _, _ = saved
    # The crafted member really would run code if unpickled:
    probe = tmp_path / "probe-ran"
    np.load(io.BytesIO(_object_array_npy(probe)), allow_pickle=True)
    assert probe.exists()

    marker = tmp_path / "code-ran"
    evil = _object_array_npy(marker)

    member = read_header(path)["weights"][0]["file"]

    def fix_manifest(header):  # a careful attacker keeps the manifest consistent
        header["weights"][0]["sha256"] = hashlib.sha256(evil).hexdigest()
        return header

    rewrite(path, members={member: evil}, header=fix_manifest)
    for loader in (fastnn.models.load_model, classifier(compile=False).load_weights):
        with pytest.raises(ValueError, match=r"dtype.*object.*unpickling.*refused") as info:
            loader(path)
        assert str(path) in str(info.value) and member in str(info.value)
    assert not marker.exists()

    def declare_object(header):
        header["weights"][0]["dtype"] = "|O"
        return header

    rewrite(path, header=declare_object)
    with pytest.raises(ValueError, match="only plain numeric arrays"):
        fastnn.models.load_model(path)
    assert not marker.exists()


# ---- custom objects -------------------------------------------------------------------------------------
def custom_model(layer_cls=Scale, loss=doubled_mse, activation=scaled_tanh, metric=None):
    fastnn.utils.set_random_seed(3)
    model = fastnn.Sequential([fastnn.Input(shape=(5,)), layer_cls(gain=0.5, name="scale"),
                               layers.Dense(4, activation=activation), layers.Dense(2)])
    model.compile(optimizer=fastnn.optimizers.Adam(0.01), loss=loss, metrics=[metric or "mae"])
    return model


def regression_data():
    x, _ = data()
    return x, np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5], axis=1).astype("float32")


def test_registered_custom_layer_loss_and_activation_round_trip(tmp_path):
    assert fastnn.saving.get_registered_name(Scale) == "TestSaving>Scale"
    assert fastnn.saving.get_registered_object("TestSaving>doubled_mse") is doubled_mse
    x, y = regression_data()
    model = custom_model()
    model.compile(optimizer=fastnn.optimizers.Adam(HalvingSchedule(0.02, 2)), loss=doubled_mse,
                  metrics=[max_abs_error, MeanPrediction(offset=1.0)])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")  # no custom_objects needed
    assert type(loaded.layers[0]) is Scale and loaded.layers[0].gain == 0.5
    assert loaded.layers[1].activation.fn is scaled_tanh
    assert loaded.loss.fn is doubled_mse
    assert type(loaded.optimizer._learning_rate) is HalvingSchedule
    assert loaded.compiled_metrics[0]._fn is max_abs_error
    assert type(loaded.compiled_metrics[1]) is MeanPrediction and loaded.compiled_metrics[1].offset == 1.0
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(x, y, verbose=0, return_dict=True)
    assert loaded.optimizer.learning_rate == model.optimizer.learning_rate == 0.02 * 0.5 ** 1
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for m in (model, loaded):
        fastnn.utils.set_random_seed(4)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert same_weights(model, loaded)


def test_custom_objects_argument_and_unknown_object_errors(tmp_path):
    class LocalScale(Scale):  # a subclass is not registered itself
        pass

    def local_loss(y_true, y_pred):
        return ops.mean(ops.abs(y_pred - y_true), axis=-1)

    def local_metric(y_true, y_pred):
        return np.max(np.abs(y_pred - y_true), axis=-1)

    x, y = regression_data()
    model = custom_model(LocalScale, local_loss, "relu", local_metric)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "m.fastnn"
    model.save(path)

    with pytest.raises(ValueError, match=r"Unknown layer 'LocalScale'.*register_keras_serializable.*"
                                         r"custom_objects=\{'LocalScale': LocalScale\}") as info:
        fastnn.models.load_model(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, fastnn.saving.UnknownObjectError)
    with pytest.raises(ValueError, match=r"Unknown function \(fn\) 'local_loss'.*custom_objects="):
        fastnn.models.load_model(path, custom_objects={"LocalScale": LocalScale})
    uncompiled = fastnn.models.load_model(path, custom_objects={"LocalScale": LocalScale}, compile=False)
    np.testing.assert_array_equal(uncompiled.predict(x), model.predict(x))

    objects = {"LocalScale": LocalScale, "local_loss": local_loss, "local_metric": local_metric}
    loaded = fastnn.models.load_model(path, custom_objects=objects)
    assert type(loaded.layers[0]) is LocalScale and loaded.loss.fn is local_loss
    assert loaded.metrics_names == ["loss", "local_metric"]
    with fastnn.saving.custom_object_scope(objects):
        scoped = fastnn.models.load_model(path)
    for m in (model, loaded, scoped):
        fastnn.utils.set_random_seed(4)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert same_weights(model, loaded) and same_weights(model, scoped)
    assert loaded.history.history["local_metric"] == model.history.history["local_metric"]


def test_registered_loss_class_round_trips(tmp_path):
    x, y = regression_data()
    model = custom_model(loss=ScaledAbsoluteError(factor=3.0, name="sae"))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fastnn")
    assert type(loaded.loss) is ScaledAbsoluteError and loaded.loss.factor == 3.0 and loaded.loss.name == "sae"
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)


def test_tampered_optimizer_state_is_refused(saved):
    path, _, _ = saved

    def set_attribute(header):
        header["optimizer_state"]["scalars"] = {"_variables": 1.0}
        return header

    rewrite(path, header=set_attribute)
    with pytest.raises(ValueError, match="optimizer scalars .* do not fit Adam"):
        fastnn.models.load_model(path)


def test_lambdas_cannot_be_saved(tmp_path):
    model = custom_model(loss=lambda t, p: ops.mean(ops.square(p - t), axis=-1))
    with pytest.raises(ValueError, match="lambda.*save_weights"):
        model.save(tmp_path / "m.fastnn")
    assert os.listdir(tmp_path) == []
    model.save_weights(tmp_path / "w.fastnn")  # the weights alone are fine


def test_register_keras_serializable_checks_its_argument():
    with pytest.raises(ValueError, match="get_config"):
        register_keras_serializable()(type("NoConfig", (), {}))
    with pytest.raises(ValueError, match="lambda"):
        register_keras_serializable()(lambda x: x)


@pytest.mark.parametrize("metric", [
    fastnn.metrics.BinaryAccuracy(threshold=0.7), fastnn.metrics.TopKCategoricalAccuracy(k=3),
    fastnn.metrics.Precision(thresholds=0.7), fastnn.metrics.Recall(thresholds=[0.2, 0.6]),
    fastnn.metrics.AUC(thresholds=[0.3, 0.5, 0.8]), fastnn.metrics.F1Score(average="macro", threshold=0.4),
    fastnn.metrics.MeanMetricWrapper(fastnn.metrics.binary_accuracy, name="ba", threshold=0.3),
])
def test_metric_configs_round_trip(metric):
    clone = type(metric).from_config(json.loads(json.dumps(metric.get_config())))
    assert clone.get_config() == metric.get_config()
    rng = np.random.default_rng(0)
    y_true = (rng.random((20, 4)) > 0.5).astype("float32")
    y_pred = rng.random((20, 4)).astype("float32")
    np.testing.assert_array_equal(clone(y_true, y_pred), metric(y_true, y_pred))


def test_loss_function_wrapper_config_keeps_the_function_arguments():
    loss = fastnn.losses.LossFunctionWrapper(fastnn.losses.huber, delta=0.25, name="h")
    clone = fastnn.losses.LossFunctionWrapper.from_config(loss.get_config())
    assert clone.fn is fastnn.losses.huber and clone.fn_kwargs == {"delta": 0.25} and clone.name == "h"
    with pytest.raises(ValueError, match="unknown loss function 'nope'"):
        fastnn.losses.LossFunctionWrapper.from_config({"fn": "nope"})


# ---- the registry of fastnn's own classes -------------------------------------------------------------
_KIND_BASES = {"layer": layers.Layer, "loss": fastnn.losses.Loss, "metric": fastnn.metrics.Metric,
               "optimizer": fastnn.optimizers.Optimizer,
               "learning-rate schedule": fastnn.optimizers.schedules.LearningRateSchedule,
               "initializer": fastnn.initializers.Initializer, "regularizer": fastnn.regularizers.Regularizer,
               "pruning schedule": fastnn.pruning.PruningSchedule}


def _public_classes():
    """(kind, class) of every class a public name of fastnn's public modules gives, walked from ``fastnn``."""
    seen, found = set(), {}

    def walk(module):
        seen.add(module)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for value in (getattr(module, n) for n in names):
            if inspect.ismodule(value) and value.__name__.startswith("fastnn.") and value not in seen:
                walk(value)
            elif inspect.isclass(value):
                for kind, base in _KIND_BASES.items():
                    if issubclass(value, base):
                        found[value] = kind

    walk(fastnn)
    return sorted(((kind, cls) for cls, kind in found.items()),
                  key=lambda kc: (kc[0], kc[1].__module__, kc[1].__name__))


_PUBLIC_CLASSES = _public_classes()
_SCHEDULE_ARGS = {"initial_learning_rate": 0.1, "decay_steps": 10}
_MAKE = {  # the classes whose constructor needs arguments; every other class is built with none
    layers.Activation: lambda: layers.Activation("relu"), layers.Dense: lambda: layers.Dense(3),
    layers.EinsumDense: lambda: layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de"),
    layers.MultiHeadAttention: lambda: layers.MultiHeadAttention(num_heads=2, key_dim=4),
    layers.Dropout: lambda: layers.Dropout(0.5, seed=1), layers.InputLayer: lambda: layers.InputLayer(shape=(4,)),
    layers.Reshape: lambda: layers.Reshape((2, 2)), layers.Embedding: lambda: layers.Embedding(5, 2),
    layers.Lambda: lambda: layers.Lambda(fastnn.activations.relu), layers.Dot: lambda: layers.Dot(axes=1),
    layers.Permute: lambda: layers.Permute((2, 1)), layers.RepeatVector: lambda: layers.RepeatVector(3),
    layers.Conv1D: lambda: layers.Conv1D(2, 3), layers.Conv2D: lambda: layers.Conv2D(2, 3),
    layers.RandomContrast: lambda: layers.RandomContrast(0.2), layers.RandomCrop: lambda: layers.RandomCrop(2, 2),
    layers.RandomRotation: lambda: layers.RandomRotation(0.1),
    layers.RandomTranslation: lambda: layers.RandomTranslation(0.1, 0.2),
    layers.RandomZoom: lambda: layers.RandomZoom(0.1), layers.Rescaling: lambda: layers.Rescaling(0.5),
    layers.GRU: lambda: layers.GRU(2), layers.LSTM: lambda: layers.LSTM(2),
    layers.SimpleRNN: lambda: layers.SimpleRNN(2),
    layers.Bidirectional: lambda: layers.Bidirectional(layers.LSTM(2)),
    layers.TimeDistributed: lambda: layers.TimeDistributed(layers.Dense(2)),
    fastnn.losses.LossFunctionWrapper: lambda: fastnn.losses.LossFunctionWrapper(fastnn.losses.mean_squared_error),
    fastnn.metrics.MeanMetricWrapper: lambda: fastnn.metrics.MeanMetricWrapper(fastnn.metrics.mean_absolute_error),
    fastnn.optimizers.schedules.CosineDecay: lambda: fastnn.optimizers.schedules.CosineDecay(**_SCHEDULE_ARGS),
    fastnn.optimizers.schedules.CosineDecayRestarts:
        lambda: fastnn.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=10),
    fastnn.optimizers.schedules.ExponentialDecay:
        lambda: fastnn.optimizers.schedules.ExponentialDecay(**_SCHEDULE_ARGS, decay_rate=0.5),
    fastnn.optimizers.schedules.InverseTimeDecay:
        lambda: fastnn.optimizers.schedules.InverseTimeDecay(**_SCHEDULE_ARGS, decay_rate=0.5),
    fastnn.optimizers.schedules.PiecewiseConstantDecay:
        lambda: fastnn.optimizers.schedules.PiecewiseConstantDecay([10], [0.1, 0.01]),
    fastnn.optimizers.schedules.PolynomialDecay: lambda: fastnn.optimizers.schedules.PolynomialDecay(**_SCHEDULE_ARGS),
    fastnn.pruning.PruneLowMagnitude: lambda: fastnn.pruning.PruneLowMagnitude(layers.Dense(3)),
    fastnn.pruning.ConstantSparsity: lambda: fastnn.pruning.ConstantSparsity(0.5, begin_step=0),
    fastnn.pruning.PolynomialDecay: lambda: fastnn.pruning.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10),
}


def _description(obj):
    """serialize_keras_object's output as it comes back from a file's JSON."""
    return json.loads(fastnn.saving.archive.dump_json(fastnn.saving.serialize_keras_object(obj)))


def test_the_public_classes_are_found_by_walking_the_modules():
    kinds = {kind for kind, _ in _PUBLIC_CLASSES}
    assert kinds == set(_KIND_BASES)
    classes = {cls for _, cls in _PUBLIC_CLASSES}
    assert {layers.Dense, layers.Conv2D, layers.LSTM, fastnn.losses.Huber, fastnn.metrics.AUC, fastnn.optimizers.Adam,
            fastnn.optimizers.schedules.CosineDecay, fastnn.initializers.HeNormal, fastnn.regularizers.L2} <= classes


@pytest.mark.parametrize("kind, cls", _PUBLIC_CLASSES, ids=[f"{k}:{c.__name__}" for k, c in _PUBLIC_CLASSES])
def test_every_public_class_round_trips_through_the_registry_by_name(kind, cls):
    if inspect.isabstract(cls):  # nothing can rebuild it, so no config names it
        assert registration.builtin_class(kind, cls.__name__) is None
        return
    assert registration.builtin_class(kind, cls.__name__) is cls
    assert registration.builtin_classes(kind)[cls.__name__] is cls
    obj = _MAKE.get(cls, cls)()
    description = _description(obj)
    assert description["class_name"] == cls.__name__ and description["registered_name"] is None
    clone = fastnn.saving.deserialize_keras_object(description, kind=kind)  # no custom objects: by name alone
    assert type(clone) is cls
    assert _description(clone) == description


def test_keras_aliases_are_the_same_classes_and_save_under_their_class_name():
    for alias, cls, kind in [(layers.Convolution2D, layers.Conv2D, "layer"),
                             (layers.MaxPool2D, layers.MaxPooling2D, "layer"),
                             (layers.GlobalAvgPool1D, layers.GlobalAveragePooling1D, "layer"),
                             (fastnn.regularizers.l2, fastnn.regularizers.L2, "regularizer")]:
        assert alias is cls and registration.builtin_class(kind, alias.__name__) is cls
    conv = layers.Convolution2D(2, 3)
    assert layers.deserialize(layers.serialize(conv)).get_config() == conv.get_config()
    assert _description(conv)["class_name"] == "Conv2D"


def test_subclasses_outside_fastnn_are_not_builtins():
    class Doubling(layers.Dense):
        pass

    class Halving(fastnn.optimizers.schedules.ExponentialDecay):
        pass

    assert registration.builtin_class("layer", "Doubling") is None
    assert registration.builtin_class("learning-rate schedule", "Halving") is None
    assert registration.builtin_class("layer", "Scale") is None  # registered with register_keras_serializable
    with pytest.raises(fastnn.saving.UnknownObjectError, match="Doubling"):
        fastnn.saving.deserialize_keras_object(_description(Doubling(2)), kind="layer")
    assert type(fastnn.saving.deserialize_keras_object(_description(Doubling(2)), {"Doubling": Doubling},
                                                       kind="layer")) is Doubling
    with pytest.raises(ValueError, match="unknown kind"):
        registration.builtin_classes("layers")


def test_two_fastnn_classes_of_a_kind_cannot_share_a_name():
    with pytest.raises(RuntimeError, match="two layer classes named 'Dense'"):
        type("Dense", (layers.Layer,), {"__module__": "fastnn.layers.elsewhere"})
    assert registration.builtin_class("layer", "Dense") is layers.Dense


def test_registration_imports_nothing_from_fastnn():
    source = pathlib.Path(registration.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not node.module.startswith("fastnn"), ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("fastnn") for alias in node.names), ast.unparse(node)
