"""layers.EinsumDense (Keras 3's EinsumDense).

References: Keras' own shape table (keras/src/layers/core/einsum_dense_test.py: kernel, bias
and output shapes), ``numpy.einsum`` in float64 for the forward pass and for the gradients
of a model's weights, central finite differences in float64 through the layer for every
gradient; plus the fused-path condition, gradients landing in the model's flat buffer,
training, configs, save/load and bad arguments.
"""

import json
import math

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers, ops
from finite_differences import numeric_gradient

# (equation, bias_axes, input_shape, output_shape, kernel_shape, bias_shape, full output shape):
# Keras' test_einsum_dense_basics parameterisations, all of them.
KERAS_CASES = [
    ("ab,b->a", None, (2, 32), (), (32,), None, (2,)),
    ("ab,bc->ac", None, (2, 32), 64, (32, 64), None, (2, 64)),
    ("abc,cde->abde", None, (2, 1, 2), (1, 3, 4), (2, 3, 4), None, (2, 1, 3, 4)),
    ("abc,cde->abde", "e", (2, 1, 2), (1, 3, 4), (2, 3, 4), (4,), (2, 1, 3, 4)),
    ("abc,cde->abde", "d", (2, 1, 2), (1, 3, 4), (2, 3, 4), (3, 1), (2, 1, 3, 4)),
    ("abc,cde->abde", "be", (2, 7, 2), (7, 3, 4), (2, 3, 4), (7, 1, 4), (2, 7, 3, 4)),
    ("BFNH,NHD->BFD", None, (2, 1, 2, 3), (1, 4), (2, 3, 4), None, (2, 1, 4)),
    ("abc,cd->abd", None, (2, 1, 2), (1, 4), (2, 4), None, (2, 1, 4)),
    ("i,d->id", None, (2,), (2,), (2,), None, (2, 2)),
    ("ibd,nd->ibn", None, (2, 2, 1), (2, 2), (2, 1), None, (2, 2, 2)),
    ("...b,bc->...c", None, (2, 32), (64,), (32, 64), None, (2, 64)),
    ("...bc,bc->...b", None, (2, 32, 64), (32,), (32, 64), None, (2, 32)),
    ("...b,bc->...c", None, (2, 3, 32), (64,), (32, 64), None, (2, 3, 64)),
    ("...c,cde->...de", None, (2, 1, 2), (3, 4), (2, 3, 4), None, (2, 1, 3, 4)),
    ("...c,cde->...de", "e", (2, 1, 2), (3, 4), (2, 3, 4), (4,), (2, 1, 3, 4)),
    ("...c,cde->...de", "d", (2, 1, 2), (3, 4), (2, 3, 4), (3, 1), (2, 1, 3, 4)),
    ("...c,cde->...de", "de", (2, 1, 2), (3, 4), (2, 3, 4), (3, 4), (2, 1, 3, 4)),
    ("bc...,cd->bd...", None, (2, 1, 2, 3), (4,), (1, 4), None, (2, 4, 2, 3)),
    ("bc...,cde->bde...", None, (2, 1, 2), (3, 4), (1, 3, 4), None, (2, 3, 4, 2)),
    ("bc...,cde->bde...", "d", (2, 1, 2), (3, 4), (1, 3, 4), (3, 1, 1), (2, 3, 4, 2)),
    ("bc...,cde->bde...", "e", (2, 1, 2), (3, 4), (1, 3, 4), (4, 1), (2, 3, 4, 2)),
    ("bc...,cde->bde...", "de", (2, 1, 2), (3, 4), (1, 3, 4), (3, 4, 1), (2, 3, 4, 2)),
]
KERAS_IDS = [f"{c[0]}|{c[1]}|{c[2]}" for c in KERAS_CASES]

# Smaller cases for the gradient checks: the fused path, and the general path's kinds
# (gemm layout with a partial bias, bias over a free axis, transposed kernel, shared axis,
# ellipses on either side, an input axis summed out, K = 1, M = 1).
GRAD_CASES = [
    ("ab,bc->ac", "c", (3, 4), (5,)),
    ("abc,cde->abde", "de", (2, 3, 4), (3, 2, 5)),
    ("abcd,cde->abe", "e", (2, 3, 2, 4), (3, 5)),
    ("...b,bc->...c", "c", (2, 3, 4), (5,)),
    ("abc,cde->abde", "e", (2, 3, 4), (3, 2, 5)),
    ("abc,cde->abde", "be", (2, 3, 4), (3, 2, 5)),
    ("abc,dc->abd", "d", (2, 3, 4), (3, 5)),
    ("...bc,bc->...b", None, (2, 3, 4), (3,)),
    ("bc...,cde->bde...", "de", (2, 3, 2), (4, 5)),
    ("abc,cd->ad", "d", (2, 3, 4), (5,)),
    ("ab,b->a", None, (3, 4), ()),
    ("i,d->id", "d", (3,), (4,)),
    ("ibd,nd->ibn", "n", (2, 3, 4), (3, 5)),
]
GRAD_IDS = [f"{c[0]}|{c[1]}" for c in GRAD_CASES]


def custom_activation(x):
    """A user activation written with fastnn.ops maths (smooth)."""
    return x * ops.sigmoid(1.702 * x) + 0.05 * ops.square(x)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_erf = np.vectorize(math.erf)
REFERENCE = {
    None: lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "gelu": lambda z: 0.5 * z * (1 + _erf(z / math.sqrt(2))),
    "softmax": _softmax,
    custom_activation: lambda z: z / (1 + np.exp(-1.702 * z)) + 0.05 * z * z,
}
ACTIVATIONS = list(REFERENCE)


def reference(equation, x, kernel, bias, activation=None):
    """np.einsum in float64, plus the bias broadcast as Keras adds it, then the activation."""
    z = np.einsum(equation, np.asarray(x, np.float64), np.asarray(kernel, np.float64))
    if bias is not None:
        z = z + np.asarray(bias, np.float64)
    return REFERENCE[activation](z)


def random_weights(layer, rng):
    weights = [rng.uniform(-1, 1, v.shape) for v in layer.weights]
    layer.set_weights(weights)
    return weights


# ----------------------------------------------------------------------------------------
# Shapes: Keras' table
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("equation,bias_axes,input_shape,output_shape,kernel_shape,bias_shape,full_shape",
                         KERAS_CASES, ids=KERAS_IDS)
def test_weight_and_output_shapes_are_keras(equation, bias_axes, input_shape, output_shape, kernel_shape, bias_shape,
                                            full_shape, rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, name="ed_shapes")
    assert layer.kernel is None and layer.bias is None  # before build
    batchless = (None,) + input_shape[1:]
    assert layer.compute_output_shape(input_shape) == full_shape  # works before build, as in Keras
    assert layer.ensure_built(input_shape) == (None,) + full_shape[1:]
    assert layer.full_output_shape == (None,) + full_shape[1:]
    assert layer.kernel.shape == kernel_shape
    assert [v.name for v in layer.weights] == ["ed_shapes/kernel"] + (["ed_shapes/bias"] if bias_shape else [])
    if bias_shape is None:
        assert layer.bias is None and len(layer.trainable_weights) == 1
    else:
        assert layer.bias.shape == bias_shape and len(layer.trainable_weights) == 2
    assert layer.non_trainable_weights == []
    assert layer.compute_output_shape(batchless) == (None,) + full_shape[1:]
    y = layer(rng.normal(size=input_shape).astype(np.float32))
    assert y.shape == full_shape and y.dtype == np.float32


@pytest.mark.parametrize("equation,bias_axes,input_shape,output_shape,kernel_shape,bias_shape,full_shape",
                         KERAS_CASES, ids=KERAS_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_einsum_with_keras_shaped_weights(equation, bias_axes, input_shape, output_shape,
                                                          kernel_shape, bias_shape, full_shape, dtype, rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, dtype=dtype)
    layer.ensure_built(input_shape)
    kernel = rng.uniform(-1, 1, kernel_shape)  # Keras' shapes, given before looking at ours
    bias = rng.uniform(-1, 1, bias_shape) if bias_shape else None
    layer.set_weights([kernel] if bias is None else [kernel, bias])
    x = rng.normal(size=input_shape)
    y = layer(x.astype(dtype))
    assert y.dtype == np.dtype(dtype) and y.shape == full_shape
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, reference(equation, x, kernel, bias), **tol)


@pytest.mark.parametrize("equation,bias_axes,input_shape,output_shape", GRAD_CASES, ids=GRAD_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_with_activation_matches_einsum(equation, bias_axes, input_shape, output_shape, activation, dtype,
                                                rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation=activation, dtype=dtype)
    layer.ensure_built(input_shape)
    weights = random_weights(layer, rng)
    x = rng.normal(size=input_shape)
    y = layer(x.astype(dtype))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    expected = reference(equation, x, weights[0], weights[1] if bias_axes else None, activation)
    np.testing.assert_allclose(y, expected, **tol)
    # training=True gives the same values (the cache path), and logits=True the pre-activation
    np.testing.assert_allclose(layer.forward(x.astype(dtype), training=True)[0], expected, **tol)
    logits, _ = layer.forward(x.astype(dtype), training=True, logits=True)
    np.testing.assert_allclose(logits, reference(equation, x, weights[0], weights[1] if bias_axes else None), **tol)


def test_none_in_output_shape_takes_the_input_size_and_free_axes_may_change(rng):
    layer = layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d")
    assert layer.compute_output_shape((None, 3, 8)) == (None, 3, 4)
    inputs = keras.Input(shape=(None, 8))
    assert tuple(layer(inputs).shape) == (None, None, 4)
    w, b = random_weights(layer, rng)
    for length in (3, 7):  # the sequence axis is free: any length after build (Keras' InputSpec fixes the rank)
        x = rng.normal(size=(2, length, 8)).astype(np.float32)
        np.testing.assert_allclose(layer(x), reference("abc,cd->abd", x, w, b), rtol=1e-5, atol=1e-5)
    assert layer(np.zeros((0, 5, 8), np.float32)).shape == (0, 5, 4)  # an empty batch


# ----------------------------------------------------------------------------------------
# The fused path
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("equation,bias_axes,input_shape,output_shape,fused", [
    ("abc,cde->abde", "de", (None, 5, 16), (5, 4, 8), True),  # attention's query/key/value projection
    ("abcd,cde->abe", "e", (None, 5, 4, 8), (5, 16), True),  # attention's output projection
    ("abc,cde->abde", None, (None, 5, 16), (5, 4, 8), True),
    ("ab,bc->ac", "c", (None, 16), (8,), True),
    ("...b,bc->...c", "c", (None, 2, 3, 16), (8,), True),
    ("BFNH,NHD->BFD", None, (None, 1, 2, 3), (1, 4), True),
    ("ab,b->a", None, (None, 32), (), True),
    ("i,d->id", "d", (None,), (4,), True),
    ("abc,cde->abde", "e", (None, 5, 16), (5, 4, 8), False),  # bias over part of the kernel's output axes
    ("abc,cde->abde", "be", (None, 5, 16), (5, 4, 8), False),  # bias over an input axis
    ("abc,dc->abd", None, (None, 5, 16), (5, 8), False),  # transposed kernel
    ("abcd,dce->abe", None, (None, 5, 4, 8), (5, 16), False),  # contracted axes in another order
    ("abc,cd->adb", None, (None, 5, 16), (8, 5), False),  # output axes in another order
    ("...bc,bc->...b", None, (None, 3, 4), (3,), False),  # a shared axis
    ("abc,cd->ad", None, (None, 3, 4), (5,), False),  # an input axis summed out
    ("bc...,cd->bd...", None, (None, 1, 2, 3), (4,), False),
])
def test_the_fused_path_is_taken_exactly_for_plain_matrix_products(equation, bias_axes, input_shape, output_shape,
                                                                    fused, rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation="gelu", dtype="float64")
    layer.ensure_built(input_shape)
    assert layer._plan.fused is fused
    weights = random_weights(layer, rng)
    x = rng.normal(size=(3,) + input_shape[1:])
    np.testing.assert_allclose(layer(x), reference(equation, x, weights[0], weights[1] if bias_axes else None, "gelu"),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Gradients: central finite differences (float64)
# ----------------------------------------------------------------------------------------
def assert_gradient(got, target, loss, what):
    fd = numeric_gradient(loss, target, 1e-5)
    if np.linalg.norm(fd) < 1e-8:  # a zero gradient (a bias constant along softmax's axis): rounding noise only
        assert np.linalg.norm(got) < 1e-8, f"{what}: expected a zero gradient, got norm {np.linalg.norm(got):.3g}"
        return
    rel = np.linalg.norm(got - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, f"{what}: relative error {rel:.3g}"


@pytest.mark.parametrize("equation,bias_axes,input_shape,output_shape", GRAD_CASES, ids=GRAD_IDS)
@pytest.mark.parametrize("activation", [None, "tanh", "gelu", "softmax", custom_activation], ids=str)
def test_gradients_match_finite_differences(equation, bias_axes, input_shape, output_shape, activation, rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation=activation, dtype="float64")
    layer.ensure_built(input_shape)
    random_weights(layer, rng)
    x = rng.normal(size=input_shape)
    y, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    grads = [np.array(v.grad, copy=True) for v in layer.weights]
    assert len(grads) == (2 if bias_axes else 1)

    def loss():
        return float(np.sum(layer.forward(x)[0] * dy))

    assert_gradient(dx, x, loss, "dx")
    for var, g in zip(layer.weights, grads):
        assert_gradient(g, var.value, loss, var.name)

    # accumulate adds the same gradients again; need_input_grad=False skips dx only
    layer.backward(layer.forward(x, training=True)[1], dy, accumulate=True)
    for var, g in zip(layer.weights, grads):
        np.testing.assert_allclose(var.grad, 2 * g, rtol=1e-13, atol=1e-14)
    assert layer.backward(cache, dy, need_input_grad=False) is None
    for var, g in zip(layer.weights, grads):
        np.testing.assert_allclose(var.grad, g, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("equation,output_shape", [("abc,cde->abde", (3, 2, 5)), ("abc,dc->abd", (3, 5))])
def test_a_frozen_layer_writes_no_weight_gradient(equation, output_shape, rng):
    layer = layers.EinsumDense(equation, output_shape, bias_axes="d", dtype="float64", trainable=False)
    x = rng.normal(size=(2, 3, 4))
    layer(x)
    y, cache = layer.forward(x, training=True)
    dx = layer.backward(cache, np.ones_like(y))
    assert dx.shape == x.shape
    assert all(not np.any(v.grad) for v in layer._variables)


# ----------------------------------------------------------------------------------------
# Inside models
# ----------------------------------------------------------------------------------------
def attention_like_model(dtype="float32"):
    """Projection to heads (fused), back (fused), a transposed kernel and a bias over the
    sequence axis (the general path, one with the kernel in order, one transposed)."""
    inputs = keras.Input(shape=(5, 6), dtype=dtype)
    x = layers.EinsumDense("abc,cde->abde", (5, 2, 3), bias_axes="de", activation="tanh", dtype=dtype)(inputs)
    x = layers.EinsumDense("abcd,cde->abe", (5, 4), bias_axes="e", dtype=dtype)(x)
    x = layers.EinsumDense("abc,dc->abd", (5, 3), bias_axes="d", activation="gelu", dtype=dtype)(x)
    outputs = layers.EinsumDense("abc,cd->abd", (5, 2), bias_axes="b", dtype=dtype)(x)
    return keras.Model(inputs, outputs)


def _einsum_grads(equation, x, kernel, dy):
    """d/dkernel and d/dx of sum(einsum(equation, x, kernel) * dy), with np.einsum."""
    ins, rest = equation.split(",")
    ker, out = rest.split("->")
    return np.einsum(f"{ins},{out}->{ker}", x, dy), np.einsum(f"{out},{ker}->{ins}", dy, kernel)


def test_model_gradients_land_in_the_flat_buffer_and_match_einsum(rng):
    model = attention_like_model("float64")
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    x = rng.normal(size=(4, 5, 6))
    target = rng.normal(size=(4, 5, 2))
    model.train_on_batch(x[:1], target[:1])  # packs the weights
    einsums = [layer for layer in model.layers if isinstance(layer, layers.EinsumDense)]
    assert [layer._plan.fused for layer in einsums] == [True, True, False, False]
    for var in model.weights:
        assert np.shares_memory(var.value, model._params)
        assert np.shares_memory(var.grad, model._grads)
    before = [v.numpy() for v in model.trainable_weights]

    # The reference: the same model in float64 with np.einsum, backward by hand.
    acts = [np.tanh, None, REFERENCE["gelu"], None]
    values, h = [], x
    for layer, act in zip(einsums, acts):
        z = np.einsum(layer.equation, h, layer.kernel.numpy()) + layer.bias.numpy()
        values.append((h, z))
        h = z if act is None else act(z)
    dh = 2 * (h - target) / h.size  # mse, mean over every element
    expected = {}
    for layer, act, (h_in, z) in reversed(list(zip(einsums, acts, values))):
        if act is np.tanh:
            dz = dh * (1 - np.tanh(z) ** 2)
        elif act is not None:  # gelu'
            dz = dh * (0.5 * (1 + _erf(z / math.sqrt(2))) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))
        else:
            dz = dh
        dk, dh = _einsum_grads(layer.equation, h_in, layer.kernel.numpy(), dz)
        lead = dz.ndim - layer.bias.ndim
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(layer.bias.shape) if n == 1)
        expected[layer.kernel.name] = dk
        expected[layer.bias.name] = dz.sum(axis=axes, keepdims=True).reshape(layer.bias.shape)

    model.train_on_batch(x, target)
    for var, old in zip(model.trainable_weights, before):
        np.testing.assert_allclose(var.grad, expected[var.name], rtol=1e-10, atol=1e-13, err_msg=var.name)
        # the optimizer read the gradient from the flat buffer: plain SGD moved by -lr * grad
        np.testing.assert_allclose(var.numpy(), old - lr * expected[var.name], rtol=1e-10, atol=1e-13,
                                   err_msg=var.name)


def test_a_functional_model_trains(rng):
    fastnn.utils.set_random_seed(1)
    model = attention_like_model()
    model.compile("adam", "mse")
    x = rng.normal(size=(64, 5, 6)).astype(np.float32)
    w = rng.normal(size=(6, 2)).astype(np.float32)
    y = np.tanh(x @ w)
    history = model.fit(x, y, epochs=20, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


def test_softmax_output_fused_with_the_cross_entropy_trains_as_dense(rng):
    """'abc,cd->abd' is Dense on the last axis: same initial kernel (same fans, same draws),
    same training; the softmax is fused with the loss (logits) in both."""
    x = rng.normal(size=(32, 3, 8)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[np.argmax(x[..., :4], axis=-1)]
    histories = []
    for make in (lambda: layers.EinsumDense("abc,cd->abd", (3, 4), bias_axes="d", activation="softmax"),
                 lambda: layers.Dense(4, activation="softmax")):
        fastnn.utils.set_random_seed(2)
        inputs = keras.Input(shape=(3, 8))
        model = keras.Model(inputs, make()(inputs))
        model.compile("adam", "categorical_crossentropy")
        histories.append(model.fit(x, labels, epochs=20, batch_size=2, verbose=0).history["loss"])
        kernel, bias = model.layers[1].get_weights()
        np.testing.assert_allclose(model.predict(x, verbose=0),
                                   _softmax(np.einsum("abc,cd->abd", x, kernel) + bias), rtol=1e-5, atol=1e-6)
    assert histories[0][-1] < 0.8 * histories[0][0]
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)


# ----------------------------------------------------------------------------------------
# Initializers, weights, configs, saving
# ----------------------------------------------------------------------------------------
def test_glorot_fans_are_the_contracted_and_output_axes_as_in_keras():
    fastnn.utils.set_random_seed(3)
    layer = layers.EinsumDense("abc,cde->abde", (5, 4, 8), bias_axes="de")
    layer.ensure_built((None, 5, 16))
    kernel = layer.kernel.numpy()
    limit = math.sqrt(6 / (16 + 4 * 8))  # fan_in = d, fan_out = heads x head size (not the conv rule)
    assert np.all(np.abs(kernel) <= limit) and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.1 * limit / math.sqrt(3)
    np.testing.assert_array_equal(layer.bias.numpy(), 0)
    other = layers.EinsumDense("ab,bc->ac", 3, kernel_initializer="ones")
    other.ensure_built((None, 2))
    np.testing.assert_array_equal(other.kernel.numpy(), 1)


def test_set_weights_checks_keras_shapes(rng):
    layer = layers.EinsumDense("abc,cde->abde", (5, 4, 8), bias_axes="d")
    layer.ensure_built((None, 5, 16))
    with pytest.raises(ValueError, match="shape"):
        layer.set_weights([np.zeros((16, 32)), np.zeros((4, 1))])
    layer.set_weights([np.ones((16, 4, 8)), np.full((4, 1), 2.0)])
    np.testing.assert_array_equal(layer(np.ones((1, 5, 16), np.float32)), 18.0)


def test_config_round_trip_has_keras_keys(rng):
    layer = layers.EinsumDense("...b,bc->...c", 8, activation="relu", bias_axes="c",
                               kernel_initializer=keras.initializers.HeNormal(seed=1), kernel_regularizer="l2",
                               name="ed_cfg")
    cfg = layer.get_config()
    assert set(cfg) == {"name", "trainable", "dtype", "output_shape", "equation", "activation", "bias_axes",
                        "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
                        "activity_regularizer", "kernel_constraint", "bias_constraint", "quantization_config"}
    assert cfg["output_shape"] == (8,) and cfg["equation"] == "...b,bc->...c" and cfg["bias_axes"] == "c"
    assert cfg["activation"] == "relu" and cfg["kernel_constraint"] is None
    clone = layers.EinsumDense.from_config(json.loads(json.dumps(cfg)))  # as read back from a file
    assert clone.get_config() == cfg
    assert layers.deserialize(layers.serialize(layer)).get_config() == cfg
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    layer(x), clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), layer(x))


def test_save_and_load_round_trip(tmp_path, rng):
    model = attention_like_model()
    for var in model.weights:
        var.assign(rng.normal(size=var.shape))
    x = rng.normal(size=(3, 5, 6)).astype(np.float32)
    path = tmp_path / "einsum.fastnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(loaded.layers, model.layers):
        assert type(a) is type(b) and a.get_config() == b.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("equation,match", [
    ("ab,bc", "invalid einsum equation 'ab,bc'"),
    ("ab->bc", "invalid einsum equation"),
    ("a b,bc->ac", "invalid einsum equation"),
    ("...ab,bc->ac", "invalid einsum equation"),
    ("a...,bc->ac...", "invalid einsum equation"),  # a trailing ellipsis needs two input labels (Keras)
    ("ab,b...->a", "invalid einsum equation"),
    ("ab,bc->ac,", "invalid einsum equation"),
    ("ab,bc->ad", "dimension 'd' was specified in the output 'ad'"),
    ("ab,bcx->ac", "weight dimension 'x' did not have a match"),
    ("aab,bc->ac", r"repeats \['a'\]"),
])
def test_bad_equation(equation, match):
    with pytest.raises(ValueError, match=match):
        layers.EinsumDense(equation, 4)


def test_equation_must_be_a_string():
    with pytest.raises(TypeError, match="'equation' must be a string"):
        layers.EinsumDense(None, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"kernel_constraint": "nope"}, "'kernel_constraint': Unknown constraint 'nope'"),
    ({"bias_constraint": "nope", "bias_axes": "c"}, "'bias_constraint': Unknown constraint 'nope'"),
    ({"lora_rank": 4}, "LoRA is not supported.*lora_rank must be None"),
    ({"quantization_config": {"mode": "int8"}}, "quantization_config must be None"),
    ({"gptq_unpacked_column_size": 8}, "gptq_unpacked_column_size must be None"),
    ({"bias_axes": "x"}, "bias dimension 'x' was requested, but is not part of the output spec 'ac'"),
    ({"bias_axes": ""}, "'bias_axes' must name at least one output label"),
    ({"output_shape": (4, -1)}, "'output_shape' entries must be ints >= 0 or None"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {"output_shape": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        layers.EinsumDense("ab,bc->ac", **kwargs)


def test_lora_alpha_alone_is_accepted_as_in_keras():
    layer = layers.EinsumDense("ab,bc->ac", 4, lora_alpha=8)
    assert layer.lora_alpha == 8 and layer.lora_rank is None and not layer.lora_enabled


@pytest.mark.parametrize("equation,output_shape,input_shape,match", [
    ("abc,cd->abd", (4,), (None, 3, 8), r"'output_shape' \(4,\) has 1 entries, but the output 'abd'.*needs 2"),
    ("abc,cd->abd", (3, 4, 5), (None, 3, 8), "has 3 entries.*needs 2"),
    ("...b,bc->...c", (4, 5), (None, 3, 8), "has 2 entries.*needs 1"),
    ("abc,cd->abd", (3, 4), (None, 8), "expects inputs with 3 axes"),
    ("...bc,cd->...bd", (3, 4), (None,), "expects inputs with at least 2 axes"),
    ("abc,cd->abd", (5, 4), (None, 3, 8), "do not match at shared dimension 'b'. Input shape is 3, and output "
                                          "shape is 5"),
    ("abc,cd->abd", (5, 4), (None, None, 8), "Input shape is None, and output shape is 5"),  # Keras too
    ("abc,cde->abde", (3, None, 4), (None, 3, 8), r"kernel .* would have shape \(8, None, 4\)"),
    ("abc,cd->abd", (None, 4), (None, 3, None), r"would have shape \(None, 4\)"),
    ("abc,cd->abd", (3, 4), (None, 3, 8), None),  # (a good one, for contrast)
])
def test_bad_shapes_at_build(equation, output_shape, input_shape, match):
    layer = layers.EinsumDense(equation, output_shape, name="ed_bad")
    if match is None:
        assert layer.ensure_built(input_shape) == (None, 3, 4)
        return
    with pytest.raises(ValueError, match=match):
        layer.ensure_built(input_shape)
    assert layer.kernel is None and layer.weights == []


def test_bias_over_the_batch_axis_is_refused():
    layer = layers.EinsumDense("ab,bc->ac", 4, bias_axes="a")
    with pytest.raises(ValueError, match=r"bias over bias_axes='a' would have shape \(None, 1\)"):
        layer.ensure_built((None, 3))


def test_a_built_layer_refuses_other_contracted_sizes_and_ranks(rng):
    layer = layers.EinsumDense("abc,cd->abd", (None, 4), name="ed_built")
    layer(np.zeros((2, 3, 8), np.float32))
    with pytest.raises(ValueError, match="ed_built"):
        layer(np.zeros((2, 3, 7), np.float32))
    with pytest.raises(ValueError, match="ed_built"):
        layer(np.zeros((2, 3, 1, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(\?, \?, 8\)"):
        layer.forward(np.zeros((2, 3, 7), np.float32))
    inputs = keras.Input(shape=(3, 9))
    with pytest.raises(ValueError, match="ed_built"):
        layer(inputs)
