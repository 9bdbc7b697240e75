"""Saving graph models: functional configs in Keras 3's layout, from_config round trips, and
save/load of functional and subclassed models (identical predictions, training resumes
identically)."""

import json

import numpy as np
import pytest

import fastnn as keras
from fastnn import layers, ops
from fastnn.saving import register_keras_serializable


@register_keras_serializable(package="TestSavingGraphs")
def halve(x):
    return x * 0.5


@register_keras_serializable(package="TestSavingGraphs")
class Gate(layers.Layer):
    """A custom layer written with call(): x · sigmoid(x·w)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")

    def call(self, inputs):
        return inputs[..., :self.units] * ops.sigmoid(ops.matmul(inputs, self.w))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register_keras_serializable(package="TestSavingGraphs")
class TwoTower(keras.Model):
    """A subclassed model with a config (Keras' rule: get_config returns the __init__ arguments)."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.left = layers.Dense(width, activation="relu")
        self.right = layers.Dense(width, activation="tanh")
        self.gate = Gate(4)
        self.head = layers.Dense(3, activation="softmax")

    def call(self, inputs, training=False):
        x, y = inputs
        return self.head(self.gate(layers.concatenate([self.left(x), self.right(y)])))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def branchy_model():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = layers.Dense(5, activation="tanh", name="shared")
    inner_in = keras.Input((5,))
    inner = keras.Model(inner_in, layers.Dense(3)(inner_in), name="inner")
    joined = layers.Concatenate(name="join")([inner(shared(a)), inner(shared(b))])
    mixed = ops.relu(joined) * 2.0 + joined[:, :1]
    gated = Gate(3)(layers.Lambda(halve)(mixed))
    outputs = {"cls": layers.Dense(2, activation="softmax", name="cls")(gated),
               "reg": layers.Dense(1, name="reg")(joined)}
    return keras.Model({"a": a, "b": b}, outputs)


@pytest.fixture
def data(rng):
    x = {"a": rng.standard_normal((40, 4)).astype(np.float32), "b": rng.standard_normal((40, 4)).astype(np.float32)}
    y = {"cls": rng.integers(0, 2, 40), "reg": rng.standard_normal((40, 1)).astype(np.float32)}
    return x, y


def test_functional_config_has_keras_layout(data):
    model = branchy_model()
    config = json.loads(json.dumps(model.get_config()))  # plain JSON
    assert set(config) >= {"name", "layers", "input_layers", "output_layers"}
    assert config["input_layers"] == {"a": ["a", 0, 0], "b": ["b", 0, 0]}
    assert config["output_layers"] == {"cls": ["cls", 0, 0], "reg": ["reg", 0, 0]}
    by_name = {entry["name"]: entry for entry in config["layers"]}
    assert by_name["a"]["class_name"] == "InputLayer" and by_name["a"]["inbound_nodes"] == []
    shared = by_name["shared"]["inbound_nodes"]
    assert len(shared) == 2  # one entry per call of the shared layer
    tensor = shared[1]["args"][0]
    assert tensor["class_name"] == "__keras_tensor__" and tensor["config"]["keras_history"] == ["b", 0, 0]
    assert tensor["config"]["shape"] == [None, 4]
    concat = by_name["join"]["inbound_nodes"][0]["args"][0]
    assert [t["config"]["keras_history"] for t in concat] == [["inner", 0, 0], ["inner", 1, 0]]
    assert by_name["inner"]["class_name"] == "Model" and "layers" in by_name["inner"]["config"]


def test_from_config_rebuilds_the_same_graph(data):
    x, _ = data
    model = branchy_model()
    clone = keras.Model.from_config(model.get_config(), custom_objects={"halve": halve})
    assert [type(layer).__name__ for layer in clone.layers] == [type(layer).__name__ for layer in model.layers]
    assert clone.count_params() == model.count_params()
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    expected, got = model.predict(x), clone.predict(x)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_functional_model_saves_loads_and_resumes_training_identically(tmp_path, data):
    x, y = data
    model = branchy_model()
    model.compile(keras.optimizers.Adam(0.01), {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.3}, metrics={"cls": ["accuracy"], "reg": ["mae"]})
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    model.save(tmp_path / "graph.fastnn")
    loaded = keras.models.load_model(tmp_path / "graph.fastnn")
    for key, value in model.predict(x).items():
        np.testing.assert_array_equal(loaded.predict(x)[key], value)
    assert loaded.metrics_names == model.metrics_names
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    h1 = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    h2 = loaded.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert h1.history == h2.history
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_saves_and_loads_through_its_config(tmp_path, rng):
    keras.utils.set_random_seed(1)
    model = TwoTower(width=6)
    x = [rng.standard_normal((30, 5)).astype(np.float32), rng.standard_normal((30, 3)).astype(np.float32)]
    y = rng.integers(0, 3, 30)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "sub.fastnn")
    loaded = keras.models.load_model(tmp_path / "sub.fastnn")
    assert type(loaded) is TwoTower and loaded.width == 6
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    h1 = model.fit(x, y, epochs=1, shuffle=False, verbose=0)
    h2 = loaded.fit(x, y, epochs=1, shuffle=False, verbose=0)
    assert h1.history == h2.history
    model.save_weights(tmp_path / "sub.weights.fastnn")
    fresh = TwoTower(width=6)
    fresh.load_weights(tmp_path / "sub.weights.fastnn")  # built from the recorded input specs
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_a_lambda_function_cannot_be_saved_but_a_registered_one_can(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layers.Lambda(lambda t: t * 2.0)(inputs))
    with pytest.raises(ValueError, match="is a lambda"):
        model.save(tmp_path / "lambda.fastnn")
    model = keras.Model(inputs, layers.Lambda(halve)(inputs))
    model.save(tmp_path / "halve.fastnn")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "halve.fastnn").predict(x), x * 0.5)


@register_keras_serializable(package="TestSavingGraphs")
class Widened(keras.Model):
    """A subclassed model without get_config: its plain __init__ arguments are its config (Keras 3)."""

    def __init__(self, width, depth=1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden = [layers.Dense(width, activation=activation) for _ in range(depth)]
        self.head = layers.Dense(2)

    def call(self, x):
        for layer in self.hidden:
            x = layer(x)
        return self.head(x)


def test_a_subclassed_model_without_get_config_saves_its_init_arguments(tmp_path, rng):
    model = Widened(7, depth=2, activation="tanh", name="wide")
    x = rng.standard_normal((4, 3)).astype(np.float32)
    model(x)
    assert model.get_config() == {"name": "wide", "trainable": True, "width": 7, "depth": 2, "activation": "tanh"}
    model.save(tmp_path / "wide.fastnn")
    loaded = keras.models.load_model(tmp_path / "wide.fastnn")
    assert len(loaded.hidden) == 2 and loaded.hidden[0].units == 7
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    class WithArray(keras.Model):
        def __init__(self, table):
            super().__init__()
            self.table = table

        def call(self, x):
            return x * 2.0

    with pytest.raises(ValueError, match="argument table=.*is not a plain value.*implement get_config"):
        WithArray(np.ones(3)).get_config()


def test_layers_and_ops_share_one_namespace_so_configs_never_collide(rng):
    a, b = keras.Input((3,)), keras.Input((3,))
    out = layers.Add()([a, b]) + a  # an Add layer and an ops.add: different names
    model = keras.Model([a, b], out)
    names = [entry["name"] for entry in model.get_config()["layers"]]
    assert len(names) == len(set(names))
    clone = keras.Model.from_config(model.get_config())
    x = [rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)]
    np.testing.assert_allclose(clone.predict(x), 2 * x[0] + x[1], rtol=1e-6)


@register_keras_serializable(package="TestSavingGraphs")
class TokenAndPositionEmbedding(layers.Layer):
    """Keras' example layer: its sublayers are auto-named (embedding_7...), and position
    embeddings of ops.arange."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        return self.token_emb(x) + self.pos_emb(ops.arange(0, self.maxlen))

    def get_config(self):
        config = super().get_config()
        config.update(maxlen=self.maxlen, vocab_size=self.vocab_size, embed_dim=self.embed_dim)
        return config


def test_custom_layers_with_auto_named_sublayers_load_in_the_same_process(tmp_path, rng):
    """The loaded model's sublayers get other automatic names than the saved ones (the process
    has made layers since): weights still match by structure, as in Keras."""
    inputs = keras.Input((8,), dtype="int32")
    model = keras.Model(inputs, layers.Dense(2)(TokenAndPositionEmbedding(8, 10, 4)(inputs)))
    model.compile("adam", "mse")
    x = rng.integers(0, 10, (16, 8))
    model.fit(x, rng.random((16, 8, 2)), epochs=1, verbose=0)
    path = tmp_path / "m.fastnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [v.name for v in loaded.weights] != [v.name for v in model.weights]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
