"""Subclassed models and custom layers written Keras' way (call() with fastnn.ops maths), traced
into graphs: their outputs against NumPy, their training, tracking of sublayers and weights,
the `training` argument, and what cannot be traced."""

import numpy as np
import pytest

import fastnn as keras
from fastnn import layers, ops


class Linear(layers.Layer):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal", name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b


class Block(layers.Layer):
    """A layer made of layers: a residual block with a custom sublayer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = Linear(6)
        self.norm = layers.BatchNormalization()

    def call(self, x, training=False):
        return ops.relu(x + self.norm(self.inner(x), training=training))


def test_a_custom_layer_called_on_arrays_computes_its_call(rng):
    layer = Linear(3, dtype="float64")
    x = rng.standard_normal((5, 4))
    y = layer(x)
    w, b = layer.get_weights()
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-13)
    assert [v.name for v in layer.weights] == [f"{layer.name}/w", f"{layer.name}/b"]
    assert layer.count_params() == 4 * 3 + 3 and layer.output_shape == (None, 3)


def test_sublayers_and_their_weights_are_tracked(rng):
    block = Block()
    block(rng.standard_normal((2, 6)).astype(np.float32))
    assert block._sublayers() == [block.inner, block.norm]
    names = [v.name.split("/")[-1] for v in block.weights]
    assert names == ["w", "b", "gamma", "beta", "moving_mean", "moving_variance"]
    assert len(block.trainable_weights) == 4 and len(block.non_trainable_weights) == 2
    block.trainable = False  # freezing a layer freezes what it holds (Keras)
    assert not block.inner.trainable and not block.norm.trainable and block.trainable_weights == []


class Classifier(keras.Model):
    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.stem = layers.Dense(32, activation="relu")
        self.block = Block()
        self.head = layers.Dense(classes, activation="softmax")

    def call(self, inputs, training=False):
        x = self.stem(inputs)
        x = x[:, :6]  # slicing is an op too
        return self.head(self.block(x, training=training))


def test_a_subclassed_model_trains_on_the_digits():
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train, x_test = x_train.reshape(-1, 64).astype("float32") / 16, x_test.reshape(-1, 64).astype("float32") / 16
    keras.utils.set_random_seed(0)
    model = Classifier()
    model.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.9
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Block", "Dense"]
    bn = model.block.norm
    assert not np.allclose(bn.moving_mean.numpy(), 0)  # training=True reached the BatchNormalization
    probabilities = model.predict(x_test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert accuracy == pytest.approx(np.mean(np.argmax(probabilities, 1) == y_test))


def test_build_traces_and_the_summary_lists_the_tracked_layers():
    model = Classifier(classes=3)
    assert not model.built
    model.build((None, 64))
    assert model.built and model.output_shape == (None, 3)
    lines = []
    model.summary(print_fn=lines.append)
    assert any(line.startswith(" block") and "(Block)" in line for line in lines)
    assert model.count_params() == (64 * 32 + 32) + (6 * 6 + 6 + 4 * 6) + (6 * 3 + 3)


def test_inference_and_training_are_traced_separately(rng):
    class Noisy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3)

        def call(self, x, training=False):
            if training:  # a Python branch on `training` is fine: each mode has its own trace
                return self.dense(x) * 0.0
            return self.dense(x)

    model = Noisy()
    x = rng.standard_normal((4, 5)).astype(np.float32)
    w, b = (model(x), model.get_weights())[1]
    np.testing.assert_allclose(model(x), x @ w + b, rtol=1e-5)
    np.testing.assert_array_equal(model(x, training=True), np.zeros((4, 3), np.float32))


def test_ops_on_weights_alone_are_recorded_in_a_traced_call(rng):
    class Normed(layers.Layer):
        """x · w / ||w||: the norm of the weight is recomputed at every call, not frozen at tracing."""

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 2), initializer="ones", name="w")

        def call(self, x):
            return ops.matmul(x, self.w / ops.sqrt(ops.sum(ops.square(self.w))))

    layer = Normed(dtype="float64")
    x = rng.standard_normal((3, 4))
    layer(x)
    w = rng.standard_normal((4, 2))
    layer.set_weights([w])
    np.testing.assert_allclose(layer(x), x @ w / np.sqrt(np.sum(w * w)), rtol=1e-12)


@pytest.mark.parametrize("body,message", [
    (lambda x: x if float(ops.sum(x)) > 0 else -x, r"float\(\) on a symbolic tensor"),
    (lambda x: np.tanh(x), r"Conversion to a NumPy array on a symbolic tensor"),
    (lambda x: [v for v in x], r"Iterating over a symbolic tensor"),
    (lambda x: x * 2 if (x > 0) else x, r"bool\(\)"),
])
def test_what_cannot_be_traced_says_why(body, message):
    class Bad(layers.Layer):
        def call(self, x):
            return body(x)

    with pytest.raises(TypeError, match=message):
        Bad()(np.ones((2, 3), np.float32))


def test_call_must_return_tensors_computed_from_its_inputs():
    class Constant(layers.Layer):
        def call(self, x):
            return np.zeros((2, 3))

    with pytest.raises(ValueError, match="call\\(\\) returned a ndarray, not a tensor computed from its inputs"):
        Constant()(np.ones((2, 3), np.float32))


# ---- masks through custom layers (Keras 3's rules) -----------------------------------------------
class TokenAndPositionEmbedding(layers.Layer):
    """Keras' example layer, with the padding mask of its token embedding (compute_mask)."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(vocab_size, embed_dim, mask_zero=True)
        self.pos_emb = layers.Embedding(maxlen, embed_dim)

    def call(self, x):
        return self.token_emb(x) + self.pos_emb(ops.arange(0, ops.shape(x)[-1], 1))

    def compute_mask(self, inputs, mask=None):
        return self.token_emb.compute_mask(inputs)


class MaskedAttention(layers.Layer):
    """call(inputs, mask=None) receives its input's mask; supports_masking passes it on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.att = layers.MultiHeadAttention(num_heads=2, key_dim=3)
        self.seen = []

    def call(self, inputs, mask=None):
        self.seen.append(mask)
        return inputs + self.att(inputs, inputs, query_mask=mask, value_mask=mask)


TOKENS = np.array([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 6, 6, 2, 1]])


def test_a_custom_layer_gives_the_mask_its_compute_mask_says():
    inputs = keras.Input((5,))
    embedded = TokenAndPositionEmbedding(5, 8, 4)(inputs)
    model = keras.Model(inputs, [embedded, layers.GlobalAveragePooling1D()(embedded)])
    x, pooled = model.predict(TOKENS, verbose=0)
    np.testing.assert_allclose(pooled, np.stack([x[i][TOKENS[i] != 0].mean(axis=0) for i in range(3)]), rtol=1e-6)


def test_a_custom_layer_call_receives_its_input_mask_and_passes_it_on(rng):
    inputs = keras.Input((5,))
    embedding = TokenAndPositionEmbedding(5, 8, 6)
    block = MaskedAttention()
    x = embedding(inputs)
    y = block(x)
    model = keras.Model(inputs, [x, y, layers.GlobalAveragePooling1D()(y)])
    assert block.seen[-1] is None  # traced without a mask for the output shape
    x_val, y_val, pooled = model.predict(TOKENS, verbose=0)
    assert block.seen[-1] is not None and block.seen[-1].dtype == "bool"  # traced with a symbolic mask
    mask = TOKENS != 0
    want = x_val + block.att(x_val, x_val, query_mask=mask, value_mask=mask)
    np.testing.assert_allclose(y_val, want, rtol=1e-6)
    np.testing.assert_allclose(block(x_val, mask=mask), want, rtol=1e-6)  # an explicit mask, eagerly
    np.testing.assert_allclose(pooled, np.stack([y_val[i][mask[i]].mean(axis=0) for i in range(3)]), rtol=1e-6)
    # the padded steps' values do not matter; training goes through the masked graph
    head = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling1D()(y))
    classifier = keras.Model(inputs, head)
    classifier.compile("adam", "binary_crossentropy")
    tokens = rng.integers(0, 8, (64, 5))
    history = classifier.fit(tokens, (tokens[:, -1] > 3).astype("float32"), epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))


def test_a_custom_layer_without_a_mask_argument_or_compute_mask_keeps_keras_rules():
    class Plain(layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((5,))
    y = Plain()(layers.Embedding(8, 4, mask_zero=True)(inputs))
    model = keras.Model(inputs, [y, layers.GlobalAveragePooling1D()(y)])
    y_val, pooled = model.predict(TOKENS, verbose=0)
    np.testing.assert_allclose(pooled, y_val.mean(axis=1), rtol=1e-6)  # the mask stopped at the layer
