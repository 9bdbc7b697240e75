"""Keras 3 weight compatibility: ``fastnn_layer.set_weights(keras_layer.get_weights())``.

The independent reference is the table ``KERAS`` below: for each public layer of
fastnn.layers with weights, a representative configuration (and the variants that change
Keras' weight list), the input shape(s) it is built on, and the weights Keras 3 creates for
it, in order: (name, shape, trainable), written down from the ``add_weight`` calls of the
Keras file cited per entry (keras-team/keras, ``keras/src/layers/...``) and from Keras'
``Layer.weights`` (keras/src/layers/layer.py: a layer's own trainable weights, its own
non-trainable ones, then its sublayers' weights in tracking order). Every public layer class
must appear either there or in ``NO_WEIGHTS`` (checked to have none), so a new layer is
caught. Then ``set_weights`` with arrays of those shapes round-trips, and for Dense, Conv1D,
Conv2D, EinsumDense, Embedding, SimpleRNN, LSTM, GRU, Bidirectional, BatchNormalization,
LayerNormalization, PReLU, Normalization and MultiHeadAttention the outputs are those of a
NumPy transcription of Keras' formula with the weights set.

The last section checks masks through BatchNormalization, Rescaling and Normalization
(Keras 3: ``supports_masking = True``; BatchNormalization's training moments over the
unmasked positions only, keras/src/layers/normalization/batch_normalization.py
``_moments(inputs, mask)``).
"""

import inspect

import numpy as np
import pytest

import fastnn
from fastnn import layers
from finite_differences import numeric_gradient

B, T = 2, 5  # batch and steps of the inputs the layers are built on


def case(id, make, shapes, weights, source):
    """One row of the table: `make()` builds the layer, called on inputs of `shapes` (a list:
    several inputs); `weights` = Keras' [(name, shape, trainable)]; `source` = the Keras file."""
    return pytest.param(make, shapes, weights, id=id), source


def _rows():
    L = layers
    rows = [
        # keras/src/layers/core/dense.py, Dense.build: kernel (input_dim, units), bias (units,)
        case("Dense", lambda: L.Dense(3), [(B, 4)], [("kernel", (4, 3), True), ("bias", (3,), True)],
             "core/dense.py"),
        case("Dense-use_bias=False", lambda: L.Dense(3, use_bias=False), [(B, 4)], [("kernel", (4, 3), True)],
             "core/dense.py"),
        case("Dense-3d", lambda: L.Dense(3), [(B, T, 4)], [("kernel", (4, 3), True), ("bias", (3,), True)],
             "core/dense.py"),
        # keras/src/layers/core/einsum_dense.py, EinsumDense.build: kernel from the equation's
        # weight term, bias over bias_axes (broadcast to the output's trailing axes)
        case("EinsumDense", lambda: L.EinsumDense("ab,bc->ac", 3, bias_axes="c"), [(B, 4)],
             [("kernel", (4, 3), True), ("bias", (3,), True)], "core/einsum_dense.py"),
        case("EinsumDense-heads", lambda: L.EinsumDense("abc,cde->abde", (T, 2, 3), bias_axes="de"), [(B, T, 4)],
             [("kernel", (4, 2, 3), True), ("bias", (2, 3), True)], "core/einsum_dense.py"),
        case("EinsumDense-no_bias", lambda: L.EinsumDense("abc,cd->abd", (T, 3)), [(B, T, 4)],
             [("kernel", (4, 3), True)], "core/einsum_dense.py"),
        # keras/src/layers/core/embedding.py, Embedding.build: embeddings (input_dim, output_dim)
        case("Embedding", lambda: L.Embedding(10, 3), [(B, T)], [("embeddings", (10, 3), True)],
             "core/embedding.py"),
        case("Embedding-mask_zero", lambda: L.Embedding(10, 3, mask_zero=True), [(B, T)],
             [("embeddings", (10, 3), True)], "core/embedding.py"),
        # keras/src/layers/convolutional/base_conv.py, BaseConv.build:
        # kernel kernel_size + (input_channel // groups, filters), bias (filters,)
        case("Conv1D", lambda: L.Conv1D(4, 3), [(B, 8, 2)], [("kernel", (3, 2, 4), True), ("bias", (4,), True)],
             "convolutional/base_conv.py"),
        case("Conv1D-use_bias=False", lambda: L.Conv1D(4, 3, use_bias=False), [(B, 8, 2)],
             [("kernel", (3, 2, 4), True)], "convolutional/base_conv.py"),
        case("Conv2D", lambda: L.Conv2D(4, (2, 3)), [(B, 6, 7, 2)],
             [("kernel", (2, 3, 2, 4), True), ("bias", (4,), True)], "convolutional/base_conv.py"),
        case("Conv2D-use_bias=False", lambda: L.Conv2D(4, 3, use_bias=False), [(B, 6, 7, 2)],
             [("kernel", (3, 3, 2, 4), True)], "convolutional/base_conv.py"),
        case("Conv1D-groups", lambda: L.Conv1D(4, 3, groups=2), [(B, 8, 6)],
             [("kernel", (3, 3, 4), True), ("bias", (4,), True)], "convolutional/base_conv.py"),
        case("Conv2D-groups", lambda: L.Conv2D(4, 3, groups=2), [(B, 6, 7, 6)],
             [("kernel", (3, 3, 3, 4), True), ("bias", (4,), True)], "convolutional/base_conv.py"),
        case("Conv2D-channels_first", lambda: L.Conv2D(4, 3, data_format="channels_first"), [(B, 2, 6, 7)],
             [("kernel", (3, 3, 2, 4), True), ("bias", (4,), True)], "convolutional/base_conv.py"),
        # keras/src/layers/rnn/simple_rnn.py, SimpleRNNCell.build: kernel (input_dim, units),
        # recurrent_kernel (units, units), bias (units,) (the RNN's weights are its cell's)
        case("SimpleRNN", lambda: L.SimpleRNN(3), [(B, T, 4)],
             [("kernel", (4, 3), True), ("recurrent_kernel", (3, 3), True), ("bias", (3,), True)],
             "rnn/simple_rnn.py"),
        case("SimpleRNN-use_bias=False", lambda: L.SimpleRNN(3, use_bias=False), [(B, T, 4)],
             [("kernel", (4, 3), True), ("recurrent_kernel", (3, 3), True)], "rnn/simple_rnn.py"),
        # keras/src/layers/rnn/lstm.py, LSTMCell.build: kernel (input_dim, 4 units),
        # recurrent_kernel (units, 4 units), bias (4 units,)
        case("LSTM", lambda: L.LSTM(3), [(B, T, 4)],
             [("kernel", (4, 12), True), ("recurrent_kernel", (3, 12), True), ("bias", (12,), True)], "rnn/lstm.py"),
        case("LSTM-use_bias=False", lambda: L.LSTM(3, use_bias=False), [(B, T, 4)],
             [("kernel", (4, 12), True), ("recurrent_kernel", (3, 12), True)], "rnn/lstm.py"),
        # keras/src/layers/rnn/gru.py, GRUCell.build: kernel (input_dim, 3 units), recurrent_kernel
        # (units, 3 units), bias (2, 3 units) with reset_after=True, (3 units,) without
        case("GRU", lambda: L.GRU(3), [(B, T, 4)],
             [("kernel", (4, 9), True), ("recurrent_kernel", (3, 9), True), ("bias", (2, 9), True)], "rnn/gru.py"),
        case("GRU-use_bias=False", lambda: L.GRU(3, use_bias=False), [(B, T, 4)],
             [("kernel", (4, 9), True), ("recurrent_kernel", (3, 9), True)], "rnn/gru.py"),
        case("GRU-reset_after=False", lambda: L.GRU(3, reset_after=False), [(B, T, 4)],
             [("kernel", (4, 9), True), ("recurrent_kernel", (3, 9), True), ("bias", (9,), True)], "rnn/gru.py"),
        # keras/src/layers/rnn/bidirectional.py: forward_layer then backward_layer (sublayers, in
        # Layer.weights' order), each with its own cell's weights
        case("Bidirectional-LSTM", lambda: L.Bidirectional(L.LSTM(3)), [(B, T, 4)],
             [("kernel", (4, 12), True), ("recurrent_kernel", (3, 12), True), ("bias", (12,), True)] * 2,
             "rnn/bidirectional.py"),
        case("Bidirectional-GRU", lambda: L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
             [(B, T, 4)], [("kernel", (4, 9), True), ("recurrent_kernel", (3, 9), True), ("bias", (2, 9), True)] * 2,
             "rnn/bidirectional.py"),
        # keras/src/layers/rnn/time_distributed.py: the wrapped layer's weights (built per step)
        case("TimeDistributed-Dense", lambda: L.TimeDistributed(L.Dense(3)), [(B, T, 4)],
             [("kernel", (4, 3), True), ("bias", (3,), True)], "rnn/time_distributed.py"),
        # keras/src/layers/normalization/batch_normalization.py, BatchNormalization.build: gamma
        # (scale), beta (center), moving_mean, moving_variance (non-trainable), all (channels,);
        # renorm adds moving_stddev, renorm_mean, renorm_stddev (non-trainable)
        case("BatchNormalization", lambda: L.BatchNormalization(), [(B, 4)],
             [("gamma", (4,), True), ("beta", (4,), True), ("moving_mean", (4,), False),
              ("moving_variance", (4,), False)], "normalization/batch_normalization.py"),
        case("BatchNormalization-center=False", lambda: L.BatchNormalization(center=False), [(B, 4)],
             [("gamma", (4,), True), ("moving_mean", (4,), False), ("moving_variance", (4,), False)],
             "normalization/batch_normalization.py"),
        case("BatchNormalization-scale=False", lambda: L.BatchNormalization(scale=False), [(B, 4)],
             [("beta", (4,), True), ("moving_mean", (4,), False), ("moving_variance", (4,), False)],
             "normalization/batch_normalization.py"),
        case("BatchNormalization-no_affine", lambda: L.BatchNormalization(center=False, scale=False), [(B, 4)],
             [("moving_mean", (4,), False), ("moving_variance", (4,), False)], "normalization/batch_normalization.py"),
        case("BatchNormalization-axis=1", lambda: L.BatchNormalization(axis=1), [(B, 3, 6, 6)],
             [("gamma", (3,), True), ("beta", (3,), True), ("moving_mean", (3,), False),
              ("moving_variance", (3,), False)], "normalization/batch_normalization.py"),
        case("BatchNormalization-renorm", lambda: L.BatchNormalization(renorm=True), [(B, 4)],
             [("gamma", (4,), True), ("beta", (4,), True), ("moving_mean", (4,), False),
              ("moving_variance", (4,), False), ("moving_stddev", (4,), False), ("renorm_mean", (4,), False),
              ("renorm_stddev", (4,), False)], "normalization/batch_normalization.py"),
        case("TimeDistributed-BatchNormalization", lambda: L.TimeDistributed(L.BatchNormalization()), [(B, T, 4)],
             [("gamma", (4,), True), ("beta", (4,), True), ("moving_mean", (4,), False),
              ("moving_variance", (4,), False)], "rnn/time_distributed.py + normalization/batch_normalization.py"),
        # keras/src/layers/normalization/layer_normalization.py, LayerNormalization.build: gamma
        # (scale or rms_scaling), beta (center and not rms_scaling), shape = the normalised axes'
        case("LayerNormalization", lambda: L.LayerNormalization(), [(B, T, 4)],
             [("gamma", (4,), True), ("beta", (4,), True)], "normalization/layer_normalization.py"),
        case("LayerNormalization-axes", lambda: L.LayerNormalization(axis=[1, 2]), [(B, T, 4)],
             [("gamma", (T, 4), True), ("beta", (T, 4), True)], "normalization/layer_normalization.py"),
        case("LayerNormalization-center=False", lambda: L.LayerNormalization(center=False), [(B, 4)],
             [("gamma", (4,), True)], "normalization/layer_normalization.py"),
        case("LayerNormalization-scale=False", lambda: L.LayerNormalization(scale=False), [(B, 4)],
             [("beta", (4,), True)], "normalization/layer_normalization.py"),
        case("LayerNormalization-rms_scaling", lambda: L.LayerNormalization(rms_scaling=True, scale=False), [(B, 4)],
             [("gamma", (4,), True)], "normalization/layer_normalization.py"),
        # keras/src/layers/activations/prelu.py, PReLU.build: alpha input_shape[1:] with the
        # shared axes set to 1
        case("PReLU", lambda: L.PReLU(), [(B, T, 4)], [("alpha", (T, 4), True)], "activations/prelu.py"),
        case("PReLU-shared_axes", lambda: L.PReLU(shared_axes=[1]), [(B, T, 4)], [("alpha", (1, 4), True)],
             "activations/prelu.py"),
        case("PReLU-shared_axes-image", lambda: L.PReLU(shared_axes=[1, 2]), [(B, 6, 6, 3)],
             [("alpha", (1, 1, 3), True)], "activations/prelu.py"),
        # keras/src/layers/preprocessing/normalization.py, Normalization.build (no mean/variance
        # given): mean, variance of the kept axes' shape, count () (int64 in Keras), non-trainable;
        # with mean and variance given: no weights
        case("Normalization", lambda: L.Normalization(), [(B, T, 4)],
             [("mean", (4,), False), ("variance", (4,), False), ("count", (), False)],
             "preprocessing/normalization.py"),
        case("Normalization-axis=None", lambda: L.Normalization(axis=None), [(B, T, 4)],
             [("mean", (), False), ("variance", (), False), ("count", (), False)], "preprocessing/normalization.py"),
        case("Normalization-axis=(1,2)", lambda: L.Normalization(axis=(1, 2)), [(B, T, 4)],
             [("mean", (T, 4), False), ("variance", (T, 4), False), ("count", (), False)],
             "preprocessing/normalization.py"),
        case("Normalization-given", lambda: L.Normalization(mean=1.0, variance=4.0), [(B, 4)], [],
             "preprocessing/normalization.py"),
        # keras/src/layers/attention/multi_head_attention.py, MultiHeadAttention.build: EinsumDense
        # sublayers query (q_dim, heads, key_dim), key (k_dim, heads, key_dim), value (v_dim, heads,
        # value_dim) with biases (heads, dim), then attention_output (heads, value_dim, out) with
        # bias (out,) (out = output_shape or q_dim); no biases with use_bias=False
        case("MultiHeadAttention", lambda: L.MultiHeadAttention(2, 3), [(B, T, 4), (B, 6, 5)],
             [("kernel", (4, 2, 3), True), ("bias", (2, 3), True), ("kernel", (5, 2, 3), True), ("bias", (2, 3), True),
              ("kernel", (5, 2, 3), True), ("bias", (2, 3), True), ("kernel", (2, 3, 4), True), ("bias", (4,), True)],
             "attention/multi_head_attention.py"),
        case("MultiHeadAttention-value_dim-output_shape-no_bias",
             lambda: L.MultiHeadAttention(2, 3, value_dim=5, output_shape=7, use_bias=False), [(B, T, 4), (B, 6, 4)],
             [("kernel", (4, 2, 3), True), ("kernel", (4, 2, 3), True), ("kernel", (4, 2, 5), True),
              ("kernel", (2, 5, 7), True)], "attention/multi_head_attention.py"),
    ]
    return rows


ROWS = _rows()
CASES = [param for param, _ in ROWS]
WEIGHTED = {"Dense", "EinsumDense", "Embedding", "Conv1D", "Conv2D", "SimpleRNN", "LSTM", "GRU", "Bidirectional",
            "TimeDistributed", "BatchNormalization", "LayerNormalization", "PReLU", "Normalization",
            "MultiHeadAttention"}


def _no_weights():
    """Every public layer class without weights: how to build it, and its inputs' shapes."""
    L = layers
    two = [(B, T, 4), (B, T, 4)]
    return {
        "Activation": (lambda: L.Activation("relu"), [(B, 4)]), "Dropout": (lambda: L.Dropout(0.5), [(B, 4)]),
        "Flatten": (lambda: L.Flatten(), [(B, T, 4)]), "Identity": (lambda: L.Identity(), [(B, 4)]),
        "InputLayer": (lambda: L.InputLayer(shape=(4,)), None), "Reshape": (lambda: L.Reshape((4, T)), [(B, T, 4)]),
        "ReLU": (lambda: L.ReLU(), [(B, 4)]), "LeakyReLU": (lambda: L.LeakyReLU(), [(B, 4)]),
        "ELU": (lambda: L.ELU(), [(B, 4)]), "Softmax": (lambda: L.Softmax(), [(B, 4)]),
        "Rescaling": (lambda: L.Rescaling(0.5), [(B, 4)]), "Lambda": (lambda: L.Lambda(lambda x: 2 * x), [(B, 4)]),
        "Masking": (lambda: L.Masking(), [(B, T, 4)]),
        "RandomFlip": (lambda: L.RandomFlip(), [(B, 6, 6, 3)]),
        "RandomRotation": (lambda: L.RandomRotation(0.1), [(B, 6, 6, 3)]),
        "RandomTranslation": (lambda: L.RandomTranslation(0.1, 0.1), [(B, 6, 6, 3)]),
        "RandomZoom": (lambda: L.RandomZoom(0.1), [(B, 6, 6, 3)]),
        "RandomCrop": (lambda: L.RandomCrop(4, 4), [(B, 6, 6, 3)]),
        "RandomContrast": (lambda: L.RandomContrast(0.1), [(B, 6, 6, 3)]),
        "MaxPooling1D": (lambda: L.MaxPooling1D(), [(B, 6, 3)]),
        "MaxPooling2D": (lambda: L.MaxPooling2D(), [(B, 6, 6, 3)]),
        "AveragePooling1D": (lambda: L.AveragePooling1D(), [(B, 6, 3)]),
        "AveragePooling2D": (lambda: L.AveragePooling2D(), [(B, 6, 6, 3)]),
        "GlobalMaxPooling1D": (lambda: L.GlobalMaxPooling1D(), [(B, 6, 3)]),
        "GlobalMaxPooling2D": (lambda: L.GlobalMaxPooling2D(), [(B, 6, 6, 3)]),
        "GlobalAveragePooling1D": (lambda: L.GlobalAveragePooling1D(), [(B, 6, 3)]),
        "GlobalAveragePooling2D": (lambda: L.GlobalAveragePooling2D(), [(B, 6, 6, 3)]),
        "ZeroPadding2D": (lambda: L.ZeroPadding2D(), [(B, 6, 6, 3)]),
        "UpSampling2D": (lambda: L.UpSampling2D(), [(B, 6, 6, 3)]),
        "Add": (lambda: L.Add(), two), "Subtract": (lambda: L.Subtract(), two),
        "Multiply": (lambda: L.Multiply(), two), "Average": (lambda: L.Average(), two),
        "Maximum": (lambda: L.Maximum(), two), "Minimum": (lambda: L.Minimum(), two),
        "Concatenate": (lambda: L.Concatenate(), two), "Dot": (lambda: L.Dot(axes=-1), two),
        "Permute": (lambda: L.Permute((2, 1)), [(B, T, 4)]), "RepeatVector": (lambda: L.RepeatVector(3), [(B, 4)]),
        "Cropping1D": (lambda: L.Cropping1D(1), [(B, T, 4)]),
        "Cropping2D": (lambda: L.Cropping2D(1), [(B, 6, 6, 3)]),
    }


NO_WEIGHTS = _no_weights()


def _public_layer_classes():
    """The public layer classes of fastnn.layers (aliases such as Conv2D/Convolution2D once)."""
    out = {}
    for name in layers.__all__:
        obj = getattr(layers, name)
        if inspect.isclass(obj) and issubclass(obj, layers.Layer) and obj is not layers.Layer:
            out[obj.__name__] = obj
    return out


def _inputs(shapes, rng, ids=False):
    if ids:
        return [rng.integers(0, 10, size=s) for s in shapes]
    return [rng.standard_normal(s).astype("float32") for s in shapes]


def _build(make, shapes, rng):
    """The layer, built by a call on random inputs of `shapes`, and those inputs."""
    layer = make()
    inputs = _inputs(shapes, rng, ids=isinstance(layer, layers.Embedding))
    layer(*inputs)
    return layer, inputs


def test_every_public_layer_is_in_the_table():
    """A new layer must be added to KERAS (with its Keras weights) or to NO_WEIGHTS."""
    public = set(_public_layer_classes())
    tabled = {type(make()).__name__ for make, *_ in (p.values for p in CASES) if _constructible(make)}
    tabled |= WEIGHTED
    assert public == tabled | set(NO_WEIGHTS), (sorted(public - tabled - set(NO_WEIGHTS)),
                                                 sorted((tabled | set(NO_WEIGHTS)) - public))
    assert not WEIGHTED & set(NO_WEIGHTS)
    for name in WEIGHTED:  # each weighted class has at least one row
        assert any(p.id.split("-")[0] == name for p in CASES), name


def _constructible(make):
    try:
        make()
        return True
    except ValueError:
        return False


def test_the_table_cites_keras_files():
    """Each row names the Keras file its weights come from (a file of keras/src/layers/)."""
    assert len(ROWS) >= 45
    for param, source in ROWS:
        assert source.endswith(".py"), param.id


@pytest.mark.parametrize("name", sorted(NO_WEIGHTS))
def test_layers_without_weights_have_none(name, rng):
    make, shapes = NO_WEIGHTS[name]
    layer = make()
    if shapes is not None:
        inputs = _inputs(shapes, rng)
        layer(inputs if len(inputs) > 1 else inputs[0])
    assert layer.weights == [] and layer.get_weights() == [] and layer.count_params() == 0


@pytest.mark.parametrize("make, shapes, keras_weights", CASES)
def test_weights_order_names_and_shapes_are_keras(make, shapes, keras_weights, rng):
    layer, _ = _build(make, shapes, rng)
    got = [(w.name.rsplit("/", 1)[-1], tuple(w.shape), w.trainable) for w in layer.weights]
    assert got == [(n, tuple(s), t) for n, s, t in keras_weights]
    assert [a.shape for a in layer.get_weights()] == [tuple(s) for _, s, _ in keras_weights]
    assert [w.name for w in layer.trainable_weights] == [w.name for w, (_, _, t) in
                                                         zip(layer.weights, keras_weights) if t]


def _keras_like_arrays(keras_weights, rng):
    """Arrays of Keras' shapes, as a Keras layer's get_weights() returns them (variances > 0;
    Normalization's count an int64, as Keras stores it)."""
    out = []
    for name, shape, _ in keras_weights:
        if name == "count":
            out.append(np.array(7, np.int64))
        elif name in ("moving_variance", "variance", "moving_stddev", "renorm_stddev"):
            out.append(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            out.append(rng.standard_normal(shape).astype("float32"))
    return out


@pytest.mark.parametrize("make, shapes, keras_weights", CASES)
def test_set_weights_of_keras_shapes_round_trips_and_changes_the_outputs(make, shapes, keras_weights, rng):
    layer, inputs = _build(make, shapes, rng)
    before = np.asarray(layer(*inputs))
    arrays = _keras_like_arrays(keras_weights, rng)
    layer.set_weights(arrays)
    for got, want in zip(layer.get_weights(), arrays):
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    if keras_weights:
        assert not np.allclose(np.asarray(layer(*inputs)), before)
    with pytest.raises(ValueError, match="weight"):  # a wrong count or shape changes nothing
        layer.set_weights(arrays[:-1] + [np.zeros((3, 3, 3, 3))])
    for got, want in zip(layer.get_weights(), arrays):
        np.testing.assert_array_equal(got, want.astype(got.dtype))


# ---- outputs with the weights set: NumPy transcriptions of Keras' formulas ------------------------
def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _set(layer, x, *weights):
    layer(x) if not isinstance(x, list) else layer(*x)
    layer.set_weights([np.asarray(w, "float32") for w in weights])


def close(got, want, tol=2e-5):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


def test_dense_and_einsum_dense_outputs(rng):
    # keras/src/layers/core/dense.py call: activation(inputs @ kernel + bias)
    x = rng.standard_normal((3, T, 4)).astype("float32")
    w, b = rng.standard_normal((4, 6)), rng.standard_normal(6)
    dense = layers.Dense(6, activation="relu")
    _set(dense, x, w, b)
    close(dense(x), np.maximum(x @ w + b, 0))
    # keras/src/layers/core/einsum_dense.py call: einsum(equation, inputs, kernel) + bias
    w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((2, 3))
    einsum = layers.EinsumDense("abc,cde->abde", (T, 2, 3), bias_axes="de")
    _set(einsum, x, w, b)
    close(einsum(x), np.einsum("abc,cde->abde", x, w) + b)


def test_embedding_outputs(rng):
    # keras/src/layers/core/embedding.py call: take(embeddings, inputs, axis=0)
    ids = rng.integers(0, 10, (3, T))
    table = rng.standard_normal((10, 4))
    emb = layers.Embedding(10, 4)
    emb(ids)
    emb.set_weights([table])
    close(emb(ids), table[ids])


def conv_reference(x, kernel, bias, strides):
    """keras/src/layers/convolutional/base_conv.py call: ops.conv (cross-correlation, 'valid',
    channels_last) + bias, for any number of spatial axes."""
    spatial = kernel.shape[:-2]
    out_sizes = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], spatial, strides)]
    y = np.zeros((x.shape[0], *out_sizes, kernel.shape[-1]))
    for offset in np.ndindex(*spatial):
        window = tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out_sizes))
        y += np.einsum("b...c,co->b...o", x[(slice(None),) + window], kernel[offset])
    return y + bias


def test_conv_outputs(rng):
    x1 = rng.standard_normal((2, 9, 3)).astype("float32")
    k1, b1 = rng.standard_normal((3, 3, 4)), rng.standard_normal(4)
    conv1 = layers.Conv1D(4, 3, strides=2)
    _set(conv1, x1, k1, b1)
    close(conv1(x1), conv_reference(x1, k1, b1, (2,)), 1e-4)
    x2 = rng.standard_normal((2, 7, 8, 3)).astype("float32")
    k2, b2 = rng.standard_normal((2, 3, 3, 5)), rng.standard_normal(5)
    conv2 = layers.Conv2D(5, (2, 3), strides=(1, 2))
    _set(conv2, x2, k2, b2)
    close(conv2(x2), conv_reference(x2, k2, b2, (1, 2)), 1e-4)


def rnn_reference(kind, x, kernel, recurrent, bias, units, go_backwards=False):
    """The sequences of h of Keras' cells (tanh activation, sigmoid recurrent activation), from
    zero states: keras/src/layers/rnn/simple_rnn.py, lstm.py (gates i, f, c, o), gru.py
    (reset_after=True: bias[0] on the inputs, bias[1] on the recurrent part, r applied after
    the recurrent matmul; z, r, h order)."""
    batch, steps = x.shape[:2]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    outputs = []
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for t in order:
        xt = x[:, t]
        if kind == "SimpleRNN":
            h = np.tanh(xt @ kernel + h @ recurrent + bias)
        elif kind == "LSTM":
            z = xt @ kernel + h @ recurrent + bias
            i, f, g, o = np.split(z, 4, axis=-1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            x_z, x_r, x_h = np.split(xt @ kernel + bias[0], 3, axis=-1)
            r_z, r_r, r_h = np.split(h @ recurrent + bias[1], 3, axis=-1)
            z = sigmoid(x_z + r_z)
            r = sigmoid(x_r + r_r)
            hh = np.tanh(x_h + r * r_h)
            h = z * h + (1 - z) * hh
        outputs.append(h)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("kind, gates", [("SimpleRNN", 1), ("LSTM", 4), ("GRU", 3)])
def test_recurrent_outputs(kind, gates, rng):
    units = 3
    x = rng.standard_normal((2, T, 4)).astype("float32")
    kernel = rng.standard_normal((4, gates * units)) * 0.5
    recurrent = rng.standard_normal((units, gates * units)) * 0.5
    bias = rng.standard_normal((2, 3 * units) if kind == "GRU" else (gates * units,)) * 0.5
    layer = getattr(layers, kind)(units, return_sequences=True)
    _set(layer, x, kernel, recurrent, bias)
    close(layer(x), rnn_reference(kind, x, kernel, recurrent, bias, units))


def test_bidirectional_outputs(rng):
    # keras/src/layers/rnn/bidirectional.py: forward weights, then backward ones; the backward
    # layer reads the sequence reversed; merge_mode="concat" of the last outputs
    units = 3
    x = rng.standard_normal((2, T, 4)).astype("float32")
    shapes = [(4, 4 * units), (units, 4 * units), (4 * units,)]
    fwd = [rng.standard_normal(s) * 0.5 for s in shapes]
    bwd = [rng.standard_normal(s) * 0.5 for s in shapes]
    layer = layers.Bidirectional(layers.LSTM(units))
    _set(layer, x, *fwd, *bwd)
    want = np.concatenate([rnn_reference("LSTM", x, *fwd, units)[:, -1],
                           rnn_reference("LSTM", x, *bwd, units, go_backwards=True)[:, -1]], axis=-1)
    close(layer(x), want)


def bn_reference(x, axis, gamma, beta, mean, variance, epsilon):
    shape = [1] * x.ndim
    shape[axis] = -1
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    return y * gamma.reshape(shape) + beta.reshape(shape)


def test_batch_normalization_outputs_and_moving_statistics(rng):
    # keras/src/layers/normalization/batch_normalization.py call: inference with the moving
    # statistics; training with the batch moments, moving = moving * momentum + batch * (1 - momentum)
    x = rng.standard_normal((6, 4, 3)).astype("float32") * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean, variance = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    bn = layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    _set(bn, x, gamma, beta, mean, variance)
    close(bn(x), bn_reference(x, 2, gamma, beta, mean, variance, 1e-3))
    batch_mean, batch_var = x.mean(axis=(0, 1), dtype=np.float64), x.var(axis=(0, 1), dtype=np.float64)
    close(bn(x, training=True), bn_reference(x, 2, gamma, beta, batch_mean, batch_var, 1e-3), 1e-4)
    close(bn.moving_mean.value, mean * 0.9 + batch_mean * 0.1)
    close(bn.moving_variance.value, variance * 0.9 + batch_var * 0.1)


def test_layer_normalization_outputs(rng):
    # keras/src/layers/normalization/layer_normalization.py: ops.layer_normalization
    x = rng.standard_normal((3, T, 4)).astype("float32")
    gamma, beta = rng.standard_normal((T, 4)), rng.standard_normal((T, 4))
    ln = layers.LayerNormalization(axis=[1, 2], epsilon=1e-3)
    _set(ln, x, gamma, beta)
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    var = x.var(axis=(1, 2), keepdims=True, dtype=np.float64)
    close(ln(x), (x - mean) / np.sqrt(var + 1e-3) * gamma + beta, 1e-4)
    # rms_scaling (keras/src/ops/nn.py _layer_normalization): x * rsqrt(var(x) + epsilon) * gamma,
    # the variance about the mean but no mean subtracted, no beta
    rms = layers.LayerNormalization(rms_scaling=True, epsilon=1e-3)
    g = rng.standard_normal(4)
    _set(rms, x, g)
    close(rms(x), x / np.sqrt(x.var(axis=-1, keepdims=True, dtype=np.float64) + 1e-3) * g, 1e-4)


def test_prelu_and_normalization_outputs(rng):
    # keras/src/layers/activations/prelu.py: relu(x) - alpha * relu(-x)
    x = rng.standard_normal((3, T, 4)).astype("float32")
    alpha = rng.standard_normal((1, 4))
    prelu = layers.PReLU(shared_axes=[1])
    _set(prelu, x, alpha)
    close(prelu(x), np.maximum(x, 0) - alpha * np.maximum(-x, 0))
    # keras/src/layers/preprocessing/normalization.py: (x - mean) / maximum(sqrt(variance), epsilon)
    mean, variance = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    norm = layers.Normalization()
    norm(x)
    norm.set_weights([mean.astype("float32"), variance.astype("float32"), np.array(0, np.int64)])
    close(norm(x), (x - mean) / np.sqrt(variance))


def test_multi_head_attention_outputs(rng):
    # keras/src/layers/attention/multi_head_attention.py: query/key/value projections
    # (EinsumDense "abc,cde->abde"), query scaled by 1/sqrt(key_dim), scores einsum
    # "aecd,abcd->acbe" (key, query), softmax over the keys, einsum "acbe,aecd->abcd"
    # (scores, value), output projection "abcd,cde->abe"
    heads, key_dim, value_dim = 2, 3, 4
    q_in = rng.standard_normal((2, T, 4)).astype("float32")
    v_in = rng.standard_normal((2, 6, 5)).astype("float32")
    wq, bq = rng.standard_normal((4, heads, key_dim)), rng.standard_normal((heads, key_dim))
    wk, bk = rng.standard_normal((5, heads, key_dim)), rng.standard_normal((heads, key_dim))
    wv, bv = rng.standard_normal((5, heads, value_dim)), rng.standard_normal((heads, value_dim))
    wo, bo = rng.standard_normal((heads, value_dim, 4)), rng.standard_normal(4)
    mha = layers.MultiHeadAttention(heads, key_dim, value_dim=value_dim)
    _set(mha, [q_in, v_in], wq, bq, wk, bk, wv, bv, wo, bo)
    q = (np.einsum("abc,cde->abde", q_in, wq) + bq) / np.sqrt(key_dim)
    k = np.einsum("abc,cde->abde", v_in, wk) + bk
    v = np.einsum("abc,cde->abde", v_in, wv) + bv
    scores = np.einsum("aecd,abcd->acbe", k, q)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    want = np.einsum("abcd,cde->abe", np.einsum("acbe,aecd->abcd", scores, v), wo) + bo
    close(mha(q_in, v_in), want, 1e-4)


# ---- masks through BatchNormalization, Rescaling, Normalization (Keras: supports_masking) --------
def masked_moments(x, mask, epsilon=1e-7):
    """keras/src/layers/normalization/batch_normalization.py _moments(inputs, mask): the mask
    expanded on the last axis, sums over every axis but the channels' divided by
    (unmasked count + backend.epsilon())."""
    w = np.broadcast_to(mask[..., None], x.shape).astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    count = w.sum(axis=axes) + epsilon
    mean = (w * x).sum(axis=axes) / count
    variance = (w * np.square(x - mean)).sum(axis=axes) / count
    return mean, variance


MASK_PASSING = {
    "BatchNormalization": lambda: layers.BatchNormalization(),
    "Rescaling": lambda: layers.Rescaling(0.5, offset=1.0),
    "Normalization": lambda: layers.Normalization(mean=0.5, variance=2.0),
    "Normalization-adapted": lambda: layers.Normalization(),
}


@pytest.mark.parametrize("name", sorted(MASK_PASSING))
def test_embedding_mask_passes_through_to_the_lstm(name, rng):
    """Embedding(mask_zero=True) -> layer -> LSTM: the LSTM skips the padded steps, so padded and
    unpadded sequences give the same output (each layer acts per position at inference)."""
    ids = fastnn.Input(shape=(None,), dtype="int32")
    middle = MASK_PASSING[name]()
    if name == "Normalization-adapted":
        middle.adapt(rng.standard_normal((20, 4, 4)) * 3 + 1)
    outputs = layers.LSTM(3)(middle(layers.Embedding(10, 4, mask_zero=True)(ids)))
    model = fastnn.Model(ids, outputs)
    padded = np.array([[3, 5, 2, 0, 0], [7, 1, 4, 8, 0]])
    got = model.predict(padded, verbose=0)
    for row, n in zip(range(2), (3, 4)):
        np.testing.assert_allclose(got[row], model.predict(padded[row:row + 1, :n], verbose=0)[0], rtol=1e-5,
                                   atol=1e-6)
    mask = np.array([[True, False]])
    assert middle.supports_masking and middle.compute_mask(np.zeros((1, 2, 4)), mask) is mask


def test_masked_batch_normalization_moments_and_moving_statistics(rng):
    x = (rng.standard_normal((3, 6, 4)) * 2 + 1).astype("float32")
    mask = rng.random((3, 6)) > 0.4
    mask[0] = False  # a whole sequence masked: only the others count
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    mm, mv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    bn = layers.BatchNormalization(momentum=0.8, epsilon=1e-3)
    _set(bn, x, gamma, beta, mm, mv)
    mean, variance = masked_moments(x.astype(np.float64), mask)
    assert not np.allclose(mean, x.mean(axis=(0, 1)), atol=1e-3)  # the mask matters here
    y = bn(x, training=True, mask=mask)
    close(y, bn_reference(x, 2, gamma, beta, mean, variance, 1e-3), 1e-4)  # masked positions too
    close(bn.moving_mean.value, mm * 0.8 + mean * 0.2)
    close(bn.moving_variance.value, mv * 0.8 + variance * 0.2)
    # inference: the moving statistics, whatever the mask; the statistics stay
    moving = bn.get_weights()
    close(bn(x, mask=mask), bn_reference(x, 2, gamma, beta, moving[2], moving[3], 1e-3))
    for got, want in zip(bn.get_weights(), moving):
        np.testing.assert_array_equal(got, want)
    # an all-True mask is the unmasked batch normalization (up to Keras' epsilon in the count)
    bn2 = layers.BatchNormalization()
    close(bn2(x, training=True, mask=np.ones((3, 6), bool)), bn2(x, training=True), 1e-4)


def test_masked_batch_renormalization_vs_numpy(rng):
    # Keras: the masked moments feed _renorm_correction_and_moments and _update_renorm_statistics
    x = (rng.standard_normal((4, 5, 3)) * 2 + 1).astype("float32")
    mask = rng.random((4, 5)) > 0.3
    eps, m, rm = 1e-3, 0.9, 0.7
    bn = layers.BatchNormalization(renorm=True, renorm_clipping={"rmax": 1.5, "dmax": 0.5}, momentum=m,
                                   renorm_momentum=rm, epsilon=eps)
    weights = [rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.5, 2, 3),
               rng.uniform(0.5, 2, 3), rng.standard_normal(3), rng.uniform(0.5, 2, 3)]
    _set(bn, x, *weights)
    gamma, beta, mm, _, ms, renorm_mean, renorm_std = weights
    mean, variance = masked_moments(x.astype(np.float64), mask)
    std = np.sqrt(variance + eps)
    r = np.minimum(std / np.maximum(renorm_std, np.sqrt(eps)), 1.5)
    d = np.clip((mean - renorm_mean) / np.maximum(renorm_std, np.sqrt(eps)), -0.5, 0.5)
    want = (x - mean) / std * (r * gamma) + (d * gamma + beta)
    close(bn(x, training=True, mask=mask), want, 1e-4)
    new_ms = ms * m + std * (1 - m)
    expected = [mm * m + mean * (1 - m), np.maximum(new_ms ** 2 - eps, 0), new_ms,
                renorm_mean * rm + mean * (1 - rm), renorm_std * rm + std * (1 - rm)]
    for got, want in zip(bn.get_weights()[2:], expected):
        close(got, want, 1e-5)


@pytest.mark.parametrize("renorm", [False, True])
def test_masked_batch_normalization_gradients_vs_finite_differences(renorm, rng):
    """The gradient flows through the masked moments (Keras differentiates its _moments); with
    renorm, r and d are constants (Keras' stop_gradient). float64, central differences of
    sum(y * g) of a NumPy transcription of Keras' training output."""
    x = rng.standard_normal((3, 4, 2))
    mask = rng.random((3, 4)) > 0.4
    g = rng.standard_normal(x.shape)
    bn = layers.BatchNormalization(dtype="float64", renorm=renorm, epsilon=1e-3)
    bn(x)
    gamma, beta = rng.standard_normal(2), rng.standard_normal(2)
    bn.set_weights([gamma, beta] + bn.get_weights()[2:])
    if renorm:
        renorm_mean, renorm_std = bn.renorm_mean.numpy() + 0.3, bn.renorm_stddev.numpy() * 1.5
        bn.renorm_mean.assign(renorm_mean)
        bn.renorm_stddev.assign(renorm_std)
        mean, variance = masked_moments(x, mask)
        r = np.sqrt(variance + 1e-3) / renorm_std  # at x: constants of the gradient
        d = (mean - renorm_mean) / renorm_std
    else:
        r, d = np.ones(2), np.zeros(2)

    def loss():
        mean, variance = masked_moments(x, mask)
        x_hat = (x - mean) / np.sqrt(variance + 1e-3)
        return float(np.sum(g * (x_hat * (r * gamma) + d * gamma + beta)))

    y, cache = bn.forward(x, training=True, mask=mask)
    np.testing.assert_allclose(np.sum(y * g), loss(), rtol=1e-12)
    dx = bn.backward(cache, g)
    np.testing.assert_allclose(dx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.gamma.grad, numeric_gradient(loss, gamma), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.beta.grad, numeric_gradient(loss, beta), rtol=1e-6, atol=1e-7)


def test_masked_batch_normalization_in_a_model_trains_on_unmasked_steps(rng):
    """Embedding(mask_zero=True) -> BatchNormalization -> LSTM -> Dense: fit's forward gives the
    BatchNormalization the mask, so its moving statistics are the masked moments'."""
    ids = fastnn.Input(shape=(6,), dtype="int32")
    embedding = layers.Embedding(10, 4, mask_zero=True)
    bn = layers.BatchNormalization(momentum=0.5)
    outputs = layers.Dense(1)(layers.LSTM(3)(bn(embedding(ids))))
    model = fastnn.Model(ids, outputs)
    tokens = rng.integers(1, 10, (8, 6))
    tokens[:, 4:] = 0
    tokens[:3, 2:] = 0
    model(tokens)
    table = embedding.get_weights()[0].astype(np.float64)
    mean, variance = masked_moments(table[tokens], tokens != 0)
    model(tokens, training=True)
    close(bn.moving_mean.value, mean * 0.5, 1e-5)
    close(bn.moving_variance.value, 0.5 + variance * 0.5, 1e-5)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(tokens, rng.standard_normal((8, 1)), epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_batch_normalization_refuses_a_mask_of_the_wrong_rank(rng):
    bn = layers.BatchNormalization()
    x = rng.standard_normal((2, 3, 4)).astype("float32")
    with pytest.raises(ValueError, match="'mask'.*one axis fewer"):
        bn(x, training=True, mask=np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match="'mask'"):
        bn(x, training=True, mask=np.ones((2, 5), bool))


# ---- known differences (README, "Use"): in base.py / models, outside this change ------------------
def test_model_weights_are_in_keras_layer_by_layer_order():
    model = fastnn.Sequential([layers.Dense(3, input_shape=(4,)), layers.BatchNormalization(), layers.Dense(2)])
    names = [w.name.rsplit("/", 1)[-1] for w in model.weights]
    assert names == ["kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "kernel", "bias"]


def test_a_frozen_variable_keeps_its_place_in_weights():
    dense = layers.Dense(3)
    dense.ensure_built((None, 4))
    dense.kernel.trainable = False
    assert [w.name.rsplit("/", 1)[-1] for w in dense.weights] == ["kernel", "bias"]


def test_copying_a_model_layer_by_layer_follows_keras_order(rng):
    """The README's workaround: per layer, the Keras order holds (BatchNormalization mid-model)."""
    model = fastnn.Sequential([layers.Dense(3, input_shape=(4,)), layers.BatchNormalization(), layers.Dense(2)])
    keras_order = [[rng.standard_normal((4, 3)), rng.standard_normal(3)],
                   [rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.5, 2, 3)],
                   [rng.standard_normal((3, 2)), rng.standard_normal(2)]]
    weighted = [layer for layer in model.layers if layer.weights]
    for layer, arrays in zip(weighted, keras_order):
        layer.set_weights(arrays)
    x = rng.standard_normal((5, 4)).astype("float32")
    (k1, b1), (g, b, mm, mv), (k2, b2) = keras_order
    want = bn_reference(x @ k1 + b1, 1, g, b, mm, mv, 1e-3) @ k2 + b2
    close(model.predict(x, verbose=0), want, 1e-4)
