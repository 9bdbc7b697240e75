"""Core and activation layers (python/fastnn/layers/{core,activation}.py).

Each layer with parameters or a non-trivial backward is built in float64, run forward
(training=True) and backward, and dx and every gradient in ``layer.grads`` are compared with
central finite differences of L = sum(forward(x) * dy). Forward passes are compared with
NumPy references (Keras formulas), configs are round-tripped, and bad input must fail clearly.
"""

import math
import re

import numpy as np
import pytest

import fastnn
from fastnn import activations, layers, ops
from finite_differences import numeric_gradient

try:  # optional: the exact erf; math.erf (vectorised) otherwise
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
H = 1e-5  # finite-difference step


# ----------------------------------------------------------------------------------------
# References and helpers
# ----------------------------------------------------------------------------------------
def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def custom_activation(x):
    """A user activation written with fastnn.ops maths (smooth): x·σ(1.702x) + 0.05·x²."""
    return x * ops.sigmoid(1.702 * x) + 0.05 * ops.square(x)


def custom_reference(x):
    return x * _sigmoid(1.702 * x) + 0.05 * x * x


REFERENCE = {  # Keras formulas (keras/src/activations/activations.py), with Keras defaults
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "leaky_relu": lambda x: np.maximum(x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "softplus": lambda x: np.logaddexp(x, 0),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
}
KINKED = {"relu", "leaky_relu", "elu", "selu"}  # a kink (or a jump in f'') at 0
ACTIVATION_NAMES = list(REFERENCE)
# fastnn.activations functions given as the activation (Keras accepts the function object).
ACTIVATION_FUNCTIONS = {"relu": activations.relu, "sigmoid": activations.sigmoid, "tanh": activations.tanh,
                        "softmax": activations.softmax, "elu": activations.elu, "selu": activations.selu,
                        "gelu": activations.gelu, "softplus": activations.softplus,
                        "swish": activations.swish, "leaky_relu": activations.leaky_relu,
                        "linear": activations.linear}


def _numeric_gradient(loss, target):
    """Central differences of loss() with respect to the array `target` (perturbed in place)."""
    return numeric_gradient(loss, target, H)


def assert_gradient(got, fd, what):
    assert got is not None, f"{what}: no gradient"
    got = np.asarray(got)
    assert got.shape == fd.shape, f"{what}: shape {got.shape}, expected {fd.shape}"
    norm = np.linalg.norm(fd)
    rel = np.linalg.norm(got - fd) / max(norm, 1e-12)
    assert rel < 1e-6, f"{what}: relative error {rel:.3g}"
    err = np.abs(got - fd)
    assert np.all(err <= 1e-6 * np.abs(fd) + 1e-8), f"{what}: max element error {err.max():.3g}"


def check_gradients(layer, x, rng, expect_weights=None):
    """Builds `layer` (float64) on x, runs forward/backward and checks dx and layer.grads; then that
    a second backward with accumulate=True adds the same gradients again, and that
    need_input_grad=False gives the same weight gradients (and no dx, for a layer with weights)."""
    x = np.ascontiguousarray(x, np.float64)
    layer(x)
    y, cache = layer.forward(x, training=True)
    assert y.dtype == np.float64
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    grads = [np.array(g, copy=True) for g in layer.grads]
    weights = layer.weights
    assert len(grads) == len(weights) == len(layer.get_weights())
    if expect_weights is not None:
        assert len(weights) == expect_weights
    for w, g in zip(layer.get_weights(), grads):
        assert g.shape == w.shape

    def loss():
        return float(np.sum(layer.forward(x, training=True)[0] * dy))

    assert_gradient(dx, _numeric_gradient(loss, x), f"{layer.name}: dx")
    for var, g in zip(weights, grads):
        assert_gradient(g, _numeric_gradient(loss, var.value), f"{layer.name}: d{var.name}")
    y, cache = layer.forward(x, training=True)
    layer.backward(cache, dy, accumulate=True)
    for g, again in zip(grads, layer.grads):
        np.testing.assert_allclose(again, 2 * g, rtol=1e-13, atol=1e-15)
    skipped = layer.backward(cache, dy, need_input_grad=False)
    assert skipped is None or not weights  # a layer with weights skips the input-gradient product
    for g, again in zip(grads, layer.grads):
        np.testing.assert_allclose(again, g, rtol=1e-13, atol=1e-15)
    return y, dx


def away_from(values, points, margin, rng):
    """Moves values closer than `margin` to any of `points` away from them."""
    values = np.array(values, np.float64)
    for p in points:
        close = np.abs(values - p) < margin
        values[close] = p + np.where(rng.random(close.sum()) < 0.5, -1, 1) * (margin + rng.random(close.sum()))
    return values


def dense_inputs(rng, shape, kernel, bias, margin=1e-3):
    """x such that no pre-activation x·W + b lies within `margin` of 0 (the kinks)."""
    for _ in range(200):
        x = rng.standard_normal(shape)
        z = x @ kernel + (0 if bias is None else bias)
        if np.min(np.abs(z)) > margin:
            return x
    raise AssertionError("could not draw kink-free inputs")


def roundtrip(layer, x):
    """A layer rebuilt from get_config(), with the same weights: the same output."""
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    via_registry = layers.deserialize(layers.serialize(layer))
    assert type(via_registry) is type(layer) and via_registry.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    # Equal up to the last bit or so (bit-for-bit reproducibility is test_ops_activation's job).
    np.testing.assert_allclose(clone(x), layer(x), rtol=4 * np.finfo(layer.dtype).eps, atol=0)
    assert clone.output_shape == layer.output_shape
    return clone


def assert_output_shape(layer, x, y):
    assert layer.built
    assert layer.input_shape == (None,) + tuple(x.shape[1:])
    assert layer.output_shape[0] is None
    assert tuple(layer.output_shape[1:]) == tuple(y.shape[1:])


# ----------------------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------------------
def test_dense_kernel_layout_and_forward_are_keras(rng):
    layer = layers.Dense(3, dtype="float64")
    x = rng.standard_normal((4, 5))
    y = layer(x)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (5, 3) and bias.shape == (3,)  # (in, units), as Keras
    assert [v.name for v in layer.weights] == [f"{layer.name}/kernel", f"{layer.name}/bias"]
    np.testing.assert_array_equal(bias, 0)  # bias_initializer="zeros"
    limit = math.sqrt(6 / (5 + 3))  # glorot_uniform
    assert np.all(np.abs(kernel) <= limit)
    np.testing.assert_allclose(y, x @ kernel + bias, rtol=1e-14, atol=1e-14)
    w = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    layer.set_weights([w, b])
    np.testing.assert_allclose(layer(x), x @ w + b, rtol=1e-13, atol=1e-13)
    assert layer.count_params() == 5 * 3 + 3
    assert_output_shape(layer, x, y)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES, ids=str)
def test_dense_gradients_every_activation(rng, activation):
    layer = layers.Dense(4, activation=activation, dtype="float64")
    assert layer.ensure_built((None, 5)) == (None, 4)
    w = rng.uniform(-0.8, 0.8, (5, 4))
    b = rng.uniform(-0.5, 0.5, 4)
    layer.set_weights([w, b])
    x = dense_inputs(rng, (3, 5), w, b)
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    np.testing.assert_allclose(y, REFERENCE[activation](x @ w + b), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", list(ACTIVATION_FUNCTIONS))
def test_dense_accepts_activation_functions(rng, name):
    layer = layers.Dense(3, activation=ACTIVATION_FUNCTIONS[name], dtype="float64")
    x = rng.standard_normal((4, 6))
    y = layer(x, training=True)
    w, b = layer.get_weights()
    np.testing.assert_allclose(y, REFERENCE[name](x @ w + b), rtol=1e-13, atol=1e-14)
    assert layer.get_config()["activation"] == name
    _, cache = layer.forward(x, training=True)
    dx = layer.backward(cache, np.ones_like(y))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))


def test_dense_custom_callable_activation(rng):
    layer = layers.Dense(3, activation=custom_activation, dtype="float64")
    x = rng.standard_normal((4, 5))
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    w, b = layer.get_weights()
    np.testing.assert_allclose(y, custom_reference(x @ w + b), rtol=1e-13, atol=1e-14)
    assert layer.get_config()["activation"] == "custom_activation"


def test_dense_without_bias(rng):
    layer = layers.Dense(4, activation="tanh", use_bias=False, dtype="float64")
    x = rng.standard_normal((3, 6))
    y, _ = check_gradients(layer, x, rng, expect_weights=1)
    (w,) = layer.get_weights()
    assert w.shape == (6, 4) and layer.bias is None
    np.testing.assert_allclose(y, np.tanh(x @ w), rtol=1e-14, atol=1e-14)
    assert layer.count_params() == 24
    assert layer.get_config()["use_bias"] is False


@pytest.mark.parametrize("activation", ["relu", "softmax", "gelu", custom_activation], ids=str)
def test_dense_nd_input_contracts_the_last_axis(rng, activation):
    layer = layers.Dense(3, activation=activation, dtype="float64")
    assert layer.ensure_built((None, 4, 5)) == (None, 4, 3)
    w = rng.uniform(-0.8, 0.8, (5, 3))
    b = rng.uniform(-0.5, 0.5, 3)
    layer.set_weights([w, b])
    x = dense_inputs(rng, (2, 4, 5), w, b)  # (batch, time, features)
    y, dx = check_gradients(layer, x, rng, expect_weights=2)
    assert y.shape == (2, 4, 3) and dx.shape == x.shape
    ref = custom_reference if callable(activation) else REFERENCE[activation]
    np.testing.assert_allclose(y, ref(np.einsum("btf,fu->btu", x, w) + b), rtol=1e-13, atol=1e-14)
    assert_output_shape(layer, x, y)


def test_dense_builds_from_the_shape_and_reports_output_shapes(rng):
    layer = layers.Dense(7, input_shape=(3, 4))
    assert layer.ensure_built((None, 3, 4)) == (None, 3, 7)
    assert layer.kernel.shape == (4, 7)
    y = layer(rng.standard_normal((5, 3, 4)).astype(np.float32))
    assert y.shape == (5, 3, 7) and y.dtype == np.float32
    assert layer.get_config()["input_shape"] == (3, 4)


def test_dense_float32_forward_matches_numpy(rng):
    layer = layers.Dense(6, activation="sigmoid", dtype="float32")
    x = rng.standard_normal((9, 11)).astype(np.float32)
    y = layer(x)
    w, b = (a.astype(np.float64) for a in layer.get_weights())
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, _sigmoid(x.astype(np.float64) @ w + b), rtol=0, atol=2e-6)


@pytest.mark.parametrize("activation", [None, "relu", "softmax", custom_activation], ids=str)
def test_dense_config_roundtrip(rng, activation):
    layer = layers.Dense(5, activation=activation, use_bias=activation != "relu", dtype="float64",
                         kernel_initializer="he_normal", bias_initializer="ones")
    x = rng.standard_normal((3, 4))
    layer(x)
    if callable(activation):  # a custom function travels by name, as in Keras (custom_objects)
        config = layer.get_config()
        assert config["activation"] == "custom_activation"
        with pytest.raises(ValueError, match="custom_activation"):
            layers.Dense.from_config(config)
        return
    clone = roundtrip(layer, x)
    config = clone.get_config()
    assert config["units"] == 5 and config["dtype"] == "float64"
    assert config["activation"] == (activation or "linear")


def test_dense_trainable_false_gives_dx_but_writes_no_gradients(rng):
    frozen = layers.Dense(3, activation="tanh", dtype="float64", trainable=False)
    x = rng.standard_normal((4, 5))
    frozen(x)
    live = layers.Dense(3, activation="tanh", dtype="float64")
    live(x)
    live.set_weights(frozen.get_weights())
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 2
    for g in frozen.grads:
        if g is not None:
            g[...] = 7.0
    y, cache = frozen.forward(x, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dx = frozen.backward(cache, dy)
    assert dx is not None
    _, live_cache = live.forward(x, training=True)
    np.testing.assert_allclose(dx, live.backward(live_cache, dy), rtol=1e-14, atol=1e-15)

    def loss():
        return float(np.sum(frozen.forward(x, training=True)[0] * dy))

    assert_gradient(dx, _numeric_gradient(loss, x), "frozen dense dx")
    for g in frozen.grads:
        assert g is None or np.all(g == 7.0), "a frozen layer wrote weight gradients"


def test_dense_bad_arguments():
    for units in (0, -3, 2.5, "4", None, True):
        with pytest.raises((ValueError, TypeError), match="'units'"):
            layers.Dense(units)
    with pytest.raises(ValueError, match="Unknown activation 'nope'"):
        layers.Dense(2, activation="nope")
    with pytest.raises(TypeError, match="Dense: 'activation' must be a string, a callable or None, got 3"):
        layers.Dense(2, activation=3)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        layers.Dense(2, unitz=3)
    with pytest.raises(ValueError, match="'dtype' must be float32 or float64"):
        layers.Dense(2, dtype="int32")


def test_dense_wrong_feature_count_after_build(rng):
    layer = layers.Dense(3)
    layer(rng.standard_normal((2, 5)))
    with pytest.raises(ValueError, match=r"built for input shape \(None, 5\), got \(None, 6\)"):
        layer(rng.standard_normal((2, 6)))
    with pytest.raises(ValueError, match="built for input shape"):
        layer(rng.standard_normal((2, 3, 5)))
    assert layer(rng.standard_normal((7, 5))).shape == (7, 3)  # another batch size is fine
    with pytest.raises(ValueError, match="at least 2 axes"):
        layers.Dense(3)(np.ones(4))


def test_inference_keeps_no_cache_and_each_call_its_own(rng):
    layer = layers.Dense(2, activation="tanh", dtype="float64")
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer(a)
    assert layer.forward(a)[1] is None  # training=False keeps nothing
    (ya, cache_a), (yb, cache_b) = layer.forward(a, training=True), layer.forward(b, training=True)
    dy = rng.standard_normal((3, 2))
    w = layer.get_weights()[0]
    # the caches are the calls', not the layer's: the first call's backward still sees a
    np.testing.assert_allclose(layer.backward(cache_a, dy), (dy * (1 - ya ** 2)) @ w.T, rtol=1e-13)
    np.testing.assert_allclose(layer.backward(cache_b, dy), (dy * (1 - yb ** 2)) @ w.T, rtol=1e-13)


@pytest.mark.parametrize("make", [lambda: layers.Dense(2), lambda: layers.Activation("relu"),
                                  lambda: layers.Dropout(0.5), lambda: layers.Flatten(),
                                  lambda: layers.Reshape((2,)), lambda: layers.ReLU(),
                                  lambda: layers.LeakyReLU(), lambda: layers.PReLU(), lambda: layers.ELU(),
                                  lambda: layers.Softmax()],
                         ids=["Dense", "Activation", "Dropout", "Flatten", "Reshape", "ReLU", "LeakyReLU",
                              "PReLU", "ELU", "Softmax"])
def test_strings_as_input_are_a_type_error(make):
    for bad in ("abc", [["a", "b"]], np.array([["1", "2"]]), [[1.0, None]]):
        with pytest.raises(TypeError, match="expected numeric input"):
            make()(bad, training=True)


# ----------------------------------------------------------------------------------------
# Activation layers
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATION_NAMES + ["custom"], ids=str)
def test_activation_layer(rng, activation):
    fn = custom_activation if activation == "custom" else activation
    ref = custom_reference if activation == "custom" else REFERENCE[activation]
    layer = layers.Activation(fn, dtype="float64")
    x = rng.uniform(-3, 3, (3, 2, 5))
    if activation in KINKED:
        x = away_from(x, [0.0], 1e-3, rng)
    y, _ = check_gradients(layer, x, rng, expect_weights=0)
    np.testing.assert_allclose(y, ref(x), rtol=1e-13, atol=1e-14)
    assert_output_shape(layer, x, y)
    if activation != "custom":
        roundtrip(layer, x)


def test_activation_layer_accepts_functions(rng):
    x = rng.standard_normal((3, 4))
    for name, fn in ACTIVATION_FUNCTIONS.items():
        layer = layers.Activation(fn, dtype="float64")
        np.testing.assert_allclose(layer(x), REFERENCE[name](x), rtol=1e-13, atol=1e-14)
        assert layer.get_config()["activation"] == name
    with pytest.raises(ValueError, match="Unknown activation 'swishy'"):
        layers.Activation("swishy")


def _keras_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """keras.src.activations.ReLU.static_call, in NumPy."""
    x = np.asarray(x, np.float64)
    if negative_slope != 0.0:
        if max_value is None and threshold == 0:
            return np.maximum(x, negative_slope * x)
        negative_part = np.maximum(-x + threshold, 0) if threshold != 0 else np.maximum(-x, 0)
    else:
        negative_part = 1
    x = x * (x > threshold) if threshold != 0 else np.maximum(x, 0)
    if max_value is not None:
        x = np.clip(x, 0, max_value)
    if negative_slope != 0.0:
        x = x - negative_slope * negative_part
    return x


RELU_ARGS = [dict(), dict(negative_slope=0.1), dict(max_value=6.0), dict(max_value=1.5, negative_slope=0.2),
             dict(threshold=0.5), dict(threshold=0.5, negative_slope=0.3),
             dict(threshold=0.25, negative_slope=0.1, max_value=2.0)]


@pytest.mark.parametrize("kwargs", RELU_ARGS, ids=str)
def test_relu_layer(rng, kwargs):
    layer = layers.ReLU(dtype="float64", **kwargs)
    x = rng.uniform(-3, 3, (4, 7))
    kinks = [0.0, kwargs.get("threshold", 0.0)] + ([kwargs["max_value"]] if "max_value" in kwargs else [])
    x = away_from(x, kinks, 1e-3, rng)
    y, _ = check_gradients(layer, x, rng, expect_weights=0)
    np.testing.assert_allclose(y, _keras_relu(x, **kwargs), rtol=1e-15, atol=1e-15)
    assert_output_shape(layer, x, y)
    clone = roundtrip(layer, x)
    for key, value in kwargs.items():
        assert clone.get_config()[key] == value


def test_relu_layer_float32(rng):
    x = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
    for kwargs in RELU_ARGS:
        y = layers.ReLU(**kwargs)(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, _keras_relu(x, **kwargs), rtol=1e-6, atol=1e-6)


def test_relu_layer_threshold_is_strict_like_keras():
    # Keras: x * (x > threshold): a value equal to the threshold gives 0 (then -slope·0).
    x = np.array([[0.0, 0.5, 1.0, 1.5]])
    for kwargs in (dict(threshold=1.0), dict(threshold=1.0, negative_slope=0.1)):
        np.testing.assert_array_equal(layers.ReLU(dtype="float64", **kwargs)(x), _keras_relu(x, **kwargs))


@pytest.mark.parametrize("arg", ["max_value", "negative_slope", "threshold"])
def test_relu_layer_rejects_negative_arguments(arg):
    with pytest.raises(ValueError, match=f"ReLU: '{arg}' must be a finite number >= 0"):
        layers.ReLU(**{arg: -1.0})


def test_leaky_relu_layer(rng):
    assert layers.LeakyReLU().negative_slope == 0.3  # the layer's Keras default (the function's is 0.2)
    np.testing.assert_allclose(layers.LeakyReLU(dtype="float64")(np.array([[-2.0, 0.0, 3.0]])), [[-0.6, 0.0, 3.0]],
                               rtol=1e-15)
    layer = layers.LeakyReLU(dtype="float64")
    x = away_from(rng.uniform(-3, 3, (4, 6)), [0.0], 1e-3, rng)
    y, _ = check_gradients(layer, x, rng, expect_weights=0)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.3 * x), rtol=1e-15)
    clone = roundtrip(layer, x)
    assert clone.negative_slope == 0.3
    for slope in (0.0, 0.05, 1.0):
        layer = layers.LeakyReLU(negative_slope=slope, dtype="float64")
        check_gradients(layer, x, rng)
        np.testing.assert_allclose(layer(x), np.where(x > 0, x, slope * x), rtol=1e-15)
        assert layers.LeakyReLU.from_config(layer.get_config()).negative_slope == slope
    np.testing.assert_allclose(layers.LeakyReLU(alpha=0.1, dtype="float64")(x), np.where(x > 0, x, 0.1 * x))
    with pytest.raises(ValueError, match="LeakyReLU: 'negative_slope' must be a finite number >= 0, got -0.1"):
        layers.LeakyReLU(negative_slope=-0.1)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu_layer(rng, alpha):
    layer = layers.ELU(alpha=alpha, dtype="float64") if alpha != 1.0 else layers.ELU(dtype="float64")
    assert layer.alpha == alpha
    x = away_from(rng.uniform(-4, 3, (3, 8)), [0.0], 1e-3, rng)
    y, _ = check_gradients(layer, x, rng, expect_weights=0)
    np.testing.assert_allclose(y, np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))), rtol=1e-14, atol=1e-15)
    clone = roundtrip(layer, x)
    assert clone.alpha == alpha


@pytest.mark.parametrize("shape,axis", [((4, 6), -1), ((4, 6), 1), ((3, 4, 5), -1), ((3, 4, 5), 1),
                                        ((3, 4, 5), -2), ((2, 3, 4, 2), 2)], ids=str)
def test_softmax_layer(rng, shape, axis):
    layer = layers.Softmax(axis=axis, dtype="float64") if axis != -1 else layers.Softmax(dtype="float64")
    x = rng.uniform(-3, 3, shape)
    y, _ = check_gradients(layer, x, rng, expect_weights=0)
    np.testing.assert_allclose(y, _softmax(x, axis), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-14)
    assert_output_shape(layer, x, y)
    assert roundtrip(layer, x).axis == axis


def test_softmax_layer_is_stable_on_huge_logits():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    layer = layers.Softmax(dtype="float64")
    y, cache = layer.forward(x, training=True)
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)
    assert np.all(np.isfinite(layer.backward(cache, np.ones_like(x))))


# Keras 3 (keras/src/layers/...): these layers set supports_masking=True and keep Layer's
# compute_mask, so their output carries their input's mask unchanged; Flatten and Reshape do
# not, so the mask stops there.
MASK_PASSING = {"ReLU": lambda: layers.ReLU(), "PReLU": lambda: layers.PReLU(), "ELU": lambda: layers.ELU(),
                "LeakyReLU": lambda: layers.LeakyReLU(), "Activation": lambda: layers.Activation("tanh"),
                "Softmax": lambda: layers.Softmax(), "Dense": lambda: layers.Dense(4),
                "Dropout": lambda: layers.Dropout(0.5), "Identity": lambda: layers.Identity()}
MASK_DROPPING = {"Flatten": lambda: layers.Flatten(), "Reshape": lambda: layers.Reshape((15,))}


@pytest.mark.parametrize("name", sorted(MASK_PASSING) + sorted(MASK_DROPPING))
def test_layers_pass_masks_on_as_keras(rng, name):
    passes = name in MASK_PASSING
    layer = (MASK_PASSING if passes else MASK_DROPPING)[name]()
    x = rng.standard_normal((2, 5, 3))
    mask = rng.random((2, 5)) < 0.5
    layer(x)
    assert bool(layer.supports_masking) is passes
    got = layer.compute_mask(x, mask)
    if passes:
        np.testing.assert_array_equal(got, mask)
    else:
        assert got is None


def _keras_masked_softmax(x, mask, axis):
    """Keras' Softmax.call with a mask (keras/src/layers/activations/softmax.py): a non-boolean
    mask is mask > 0.5; masked logits become -1e9; a multi-axis softmax is
    exp(x - logsumexp(x, axis)); masked outputs are zeroed after."""
    mask = np.asarray(mask)
    mask = mask if mask.dtype == bool else mask > 0.5
    z = np.where(mask, x, -1e9)
    if isinstance(axis, (list, tuple)) and len(axis) > 1:
        top = z.max(axis=tuple(axis), keepdims=True)
        lse = top + np.log(np.exp(z - top).sum(axis=tuple(axis), keepdims=True))
        out = np.exp(z - lse)
    else:
        out = _softmax(z, axis[0] if isinstance(axis, (list, tuple)) else axis)
    return np.where(mask, out, 0.0)


@pytest.mark.parametrize("shape,axis,mask_shape", [
    ((4, 6), -1, (4, 6)), ((4, 6), -1, (1, 6)), ((4, 6), -1, (6,)), ((3, 4, 5), 1, (3, 4, 5)),
    ((3, 4, 5), -1, (4, 1)), ((3, 4, 5), (1, 2), (3, 4, 5)), ((3, 4, 5), (2, 0), (4, 5)),
    ((3, 4, 5), (1,), (3, 1, 5))], ids=str)
def test_softmax_layer_with_a_mask_is_keras_formula_and_its_gradient(rng, shape, axis, mask_shape):
    layer = layers.Softmax(axis=axis, dtype="float64")
    x = rng.uniform(-3, 3, shape)
    mask = rng.random(mask_shape) < 0.6
    mask.flat[0] = False  # at least one masked position
    mask.flat[-1] = True
    y = layer(x, mask=mask)
    want = _keras_masked_softmax(x, mask, axis)
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-15)
    assert np.all(y[~np.broadcast_to(mask, shape)] == 0)
    # backward against central differences of L = sum(y * dy)
    y, cache = layer.forward(x, training=True, mask=mask)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    fd = _numeric_gradient(lambda: float(np.sum(layer.forward(x, training=True, mask=mask)[0] * dy)), x)
    assert_gradient(dx, fd, "Softmax with a mask: dx")


def test_softmax_layer_mask_examples_from_keras_tests():
    """keras/src/layers/activations/softmax_test.py: a tuple axis with a float mask, and a fully
    masked row that gives zeros (not a uniform distribution)."""
    x = np.array([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
    got = layers.Softmax(axis=(1, 0), dtype="float64")(x, mask=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(got, [[0.21194154, 0.0, 0.21194154], [0.0, 0.57611686, 0.0]], rtol=1e-6)
    x = np.array([[1.0, 2.0, 5.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 4.0]], np.float32)
    mask = np.array([[True, True, False, False], [False] * 4, [True] * 4])
    got = layers.Softmax()(x, mask=mask)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.268941, 0.731059, 0.0, 0.0], [0.0] * 4,
                                     [0.236883, 0.032059, 0.087144, 0.643914]], rtol=1e-5, atol=1e-7)
    # a float mask keeps what is > 0.5 (Keras), not what is nonzero
    soft = np.array([[0.3, 0.7, 0.5, 1.0]])
    np.testing.assert_allclose(layers.Softmax(dtype="float64")(x[:1].astype(np.float64), mask=soft),
                               _keras_masked_softmax(x[:1].astype(np.float64), soft, -1), rtol=1e-14)


def test_softmax_layer_refuses_masks_that_do_not_broadcast():
    layer = layers.Softmax()
    with pytest.raises(ValueError, match=r"'mask' must be broadcastable to the inputs and must not have more axes; "
                                         r"got inputs of shape \(1, 3\) and a mask of shape \(1, 1, 3\)"):
        layer(np.ones((1, 3)), mask=np.ones((1, 1, 3), bool))
    with pytest.raises(ValueError, match=r"'mask' must be broadcastable .* got inputs of shape \(1, 3\) and a mask "
                                         r"of shape \(2, 3\)"):
        layer(np.ones((1, 3)), mask=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="'mask' must be boolean or numeric, got dtype <U1"):
        layer.forward(np.ones((1, 3)), mask=np.array(["a", "b", "c"]))


def test_softmax_layer_takes_and_passes_on_the_mask_in_a_model(rng):
    """Keras passes a layer's input mask to a call with a mask argument (here a Lambda's
    full-shape mask), and Softmax passes it on (supports_masking); an explicit mask tensor
    works too. An Embedding's (batch, T) mask does not broadcast to (batch, T, F) logits by
    NumPy's rule, so Keras' check refuses it, and so does fastnn's."""
    inputs = fastnn.Input((3, 4), dtype="float64")
    marked = layers.Lambda(lambda t: t, mask=lambda t, m: t > -0.5, dtype="float64")(inputs)
    softmax = layers.Softmax(dtype="float64")
    model = fastnn.Model(inputs, softmax(marked))
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(model.predict(x, verbose=0), _keras_masked_softmax(x, x > -0.5, -1), rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_array_equal(softmax.compute_mask(x, x > -0.5), x > -0.5)
    x_in, m_in = fastnn.Input((3, 4), dtype="float64"), fastnn.Input((3, 4), dtype="float64")
    explicit = fastnn.Model([x_in, m_in], layers.Softmax(axis=1, dtype="float64")(x_in, mask=m_in))
    m = rng.random((2, 3, 4))
    np.testing.assert_allclose(explicit.predict([x, m], verbose=0), _keras_masked_softmax(x, m, 1), rtol=1e-13,
                               atol=1e-15)
    ids = fastnn.Input((5,), dtype="int32")
    padded = fastnn.Model(ids, layers.Softmax()(layers.Embedding(9, 4, mask_zero=True)(ids)))
    with pytest.raises(ValueError, match=r"'mask' must be broadcastable .* got inputs of shape \(2, 5, 4\) and a "
                                         r"mask of shape \(2, 5\)"):
        padded.predict(np.array([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]]), verbose=0)


def test_a_masked_softmax_output_fused_with_its_loss_trains_as_keras(rng):
    """As a model's output with sparse cross-entropy, the softmax is fused with the loss on the
    masked logits: loss and gradient equal Keras' (masked softmax, then cross-entropy) when the
    labels are unmasked classes."""
    x_in, m_in = fastnn.Input((4,), dtype="float64"), fastnn.Input((5,), dtype="float64")
    dense = layers.Dense(5, dtype="float64")
    model = fastnn.Model([x_in, m_in], layers.Softmax(dtype="float64")(dense(x_in), mask=m_in))
    model.compile(fastnn.optimizers.SGD(1.0), "sparse_categorical_crossentropy")
    x, m = rng.standard_normal((6, 4)), (rng.random((6, 5)) < 0.6).astype(np.float64)
    m[:, 0] = 1.0
    y = np.array([0 if not row[1:].any() else rng.choice(np.flatnonzero(row)) for row in m])
    kernel, bias = dense.get_weights()

    def reference_loss():
        p = _keras_masked_softmax(x @ kernel + bias, m, -1)
        return float(np.mean(-np.log(p[np.arange(len(y)), y])))

    assert model.evaluate([x, m], y, batch_size=6, verbose=0) == pytest.approx(reference_loss(), rel=1e-12)
    want = [kernel - _numeric_gradient(reference_loss, kernel), bias - _numeric_gradient(reference_loss, bias)]
    model.train_on_batch([x, m], y)
    for got, w in zip(dense.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("shape,shared_axes,alpha_shape",
                         [((4, 5), None, (5,)), ((3, 2, 4), None, (2, 4)), ((3, 2, 4), [1], (1, 4)),
                          ((3, 2, 4), [2], (2, 1)), ((3, 2, 4), [1, 2], (1, 1)),
                          ((2, 3, 2, 4), [1, 2], (1, 1, 4)), ((3, 2, 4), 1, (1, 4))], ids=str)
def test_prelu_layer(rng, shape, shared_axes, alpha_shape):
    layer = layers.PReLU(shared_axes=shared_axes, dtype="float64")
    x = away_from(rng.uniform(-3, 3, shape), [0.0], 1e-3, rng)
    assert layer.ensure_built(x.shape) == (None,) + shape[1:]
    (alpha,) = layer.get_weights()
    assert alpha.shape == alpha_shape  # Keras: input_shape[1:] with the shared axes set to 1
    np.testing.assert_array_equal(alpha, 0)  # alpha_initializer="zeros": starts as relu
    np.testing.assert_array_equal(layer(x), np.maximum(x, 0))
    alpha = rng.uniform(-0.5, 1.5, alpha_shape)
    layer.set_weights([alpha])
    y, _ = check_gradients(layer, x, rng, expect_weights=1)
    # Keras: relu(x) - alpha * relu(-x)
    np.testing.assert_allclose(y, np.maximum(x, 0) - alpha * np.maximum(-x, 0), rtol=1e-15, atol=1e-15)
    assert_output_shape(layer, x, y)
    clone = roundtrip(layer, x)
    assert clone.get_config()["shared_axes"] == (None if shared_axes is None else list(np.atleast_1d(shared_axes)))


def test_prelu_layer_trainable_false(rng):
    layer = layers.PReLU(shared_axes=[1], dtype="float64", trainable=False)
    x = away_from(rng.uniform(-3, 3, (3, 2, 4)), [0.0], 1e-3, rng)
    layer(x)
    alpha = rng.uniform(0.1, 0.9, (1, 4))
    layer.set_weights([alpha])
    for g in layer.grads:
        if g is not None:
            g[...] = 7.0
    y, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, y.shape)
    dx = layer.backward(cache, dy)
    np.testing.assert_allclose(dx, np.where(x > 0, dy, alpha * dy), rtol=1e-15)
    for g in layer.grads:
        assert g is None or np.all(g == 7.0), "a frozen layer wrote weight gradients"


def test_prelu_layer_bad_shared_axes():
    with pytest.raises(ValueError, match=r"'shared_axes' \[3\] holds 3, outside 1..2"):
        layers.PReLU(shared_axes=[3])(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"'shared_axes' \[0\] holds 0"):
        layers.PReLU(shared_axes=[0])(np.ones((2, 3, 4)))


# ----------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------
def test_dropout_inference_is_the_identity(rng):
    x = rng.standard_normal((8, 9))
    layer = layers.Dropout(0.5, dtype="float64")
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y, cache = layer.forward(x, training=False)
    assert cache is None
    np.testing.assert_array_equal(y, x)
    assert_output_shape(layer, x, y)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.75])
def test_dropout_training_drops_a_fraction_rate_and_scales(rng, rate):
    x = rng.uniform(1, 2, (400, 500))  # no zeros
    layer = layers.Dropout(rate, seed=4, dtype="float64")
    y, cache = layer.forward(x, training=True)
    kept = y != 0
    # Binomial(2e5, 1-rate): std < 1.2e-3; 1e-2 is > 8 standard deviations.
    assert abs(kept.mean() - (1 - rate)) < 1e-2
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-15)
    dy = rng.uniform(1, 2, x.shape)
    dx = layer.backward(cache, dy)
    np.testing.assert_array_equal(dx != 0, kept)  # the same mask
    np.testing.assert_allclose(dx[kept], dy[kept] / (1 - rate), rtol=1e-15)


def test_dropout_rate_0_is_the_identity_in_training(rng):
    x = rng.standard_normal((5, 6))
    layer = layers.Dropout(0.0, dtype="float64")
    y, cache = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(layer.backward(cache, x * 2), x * 2)


@pytest.mark.parametrize("noise_shape", [None, (None, 1, 4), (3, 1, 4), (None, 5, 1), (1, 1, 1)], ids=str)
def test_dropout_gradients(rng, noise_shape):
    """Finite differences need the same mask on every call: a fresh layer with the same seed."""
    x = rng.uniform(0.5, 1.5, (3, 5, 4))
    dy = rng.uniform(-1, 1, x.shape)

    def make():
        return layers.Dropout(0.5, noise_shape=noise_shape, seed=21, dtype="float64")

    layer = make()
    y, cache = layer.forward(x, training=True)
    dx = layer.backward(cache, dy)

    def loss():
        return float(np.sum(make()(x, training=True) * dy))

    assert_gradient(dx, _numeric_gradient(loss, x), "dropout dx")
    mask = y / x
    assert set(np.unique(mask)) <= {0.0, 2.0}
    if noise_shape is not None:
        for axis, size in enumerate(noise_shape):
            if size == 1:  # the mask is shared (broadcast) along this axis
                assert np.all(mask == mask.take([0], axis=axis))


def test_dropout_noise_shape_shares_the_mask(rng):
    x = np.ones((64, 10, 32))
    y = layers.Dropout(0.5, noise_shape=(None, 1, 32), seed=3, dtype="float64")(x, training=True)
    assert np.all(y == y[:, :1, :])  # the same mask at every time step
    assert 0.4 < np.mean(y[:, 0, :] != 0) < 0.6  # but not the same for every (batch, feature)
    assert len({tuple(row) for row in (y[:, 0, :] != 0)}) > 32


def test_dropout_seeds(rng):
    x = rng.uniform(1, 2, (50, 40))
    a = layers.Dropout(0.5, seed=7, dtype="float64")
    b = layers.Dropout(0.5, seed=7, dtype="float64")
    first = a(x, training=True)
    np.testing.assert_array_equal(first, b(x, training=True))  # same seed: same masks
    second = a(x, training=True)
    assert np.mean((first != 0) == (second != 0)) < 0.7  # the next call draws a new mask
    other = layers.Dropout(0.5, seed=8, dtype="float64")(x, training=True)
    assert np.mean((first != 0) == (other != 0)) < 0.7
    # Without a seed of its own, fastnn.utils.set_random_seed makes the masks reproducible.
    fastnn.utils.set_random_seed(123)
    u = layers.Dropout(0.5, dtype="float64")(x, training=True)
    fastnn.utils.set_random_seed(123)
    v = layers.Dropout(0.5, dtype="float64")(x, training=True)
    np.testing.assert_array_equal(u, v)


def test_dropout_config_roundtrip(rng):
    x = rng.uniform(1, 2, (6, 3, 4))
    layer = layers.Dropout(0.3, noise_shape=(None, 1, 4), seed=5, dtype="float64")
    config = layer.get_config()
    assert config["rate"] == 0.3 and config["seed"] == 5 and tuple(config["noise_shape"]) == (None, 1, 4)
    clone = layers.Dropout.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone(x, training=True), layer(x, training=True))


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan"), "0.5", None, True])
def test_dropout_bad_rate(rate):
    with pytest.raises((ValueError, TypeError), match="'rate'"):
        layers.Dropout(rate)


# ----------------------------------------------------------------------------------------
# Flatten, Reshape, Input
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (2, 1, 5, 3), (3,), (0, 3, 2)], ids=str)
def test_flatten(rng, shape):
    layer = layers.Flatten(dtype="float64")
    x = rng.standard_normal(shape)
    layer(x)
    y, cache = layer.forward(x, training=True)
    assert y.shape == (shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1)  # (batch,) -> (batch, 1)
    np.testing.assert_array_equal(y, x.reshape(y.shape))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(layer.backward(cache, dy), dy.reshape(shape))
    assert_output_shape(layer, x, y)
    roundtrip(layer, x)


def test_flatten_gradient(rng):
    check_gradients(layers.Flatten(dtype="float64"), rng.standard_normal((2, 3, 2)), rng, expect_weights=0)


@pytest.mark.parametrize("in_shape,target,out_shape",
                         [((2, 12), (3, 4), (2, 3, 4)), ((2, 12), (-1, 2), (2, 6, 2)),
                          ((3, 2, 6), (4, -1), (3, 4, 3)), ((2, 3, 4), (12,), (2, 12)),
                          ((0, 12), (-1, 2), (0, 6, 2)), ((0, 12), (6, 2), (0, 6, 2)),
                          ((2, 6), (1, 2, 3), (2, 1, 2, 3))], ids=str)
def test_reshape(rng, in_shape, target, out_shape):
    layer = layers.Reshape(target, dtype="float64")
    x = rng.standard_normal(in_shape)
    layer(x)
    y, cache = layer.forward(x, training=True)
    assert y.shape == out_shape
    np.testing.assert_array_equal(y, x.reshape(out_shape))
    assert layer.output_shape == (None,) + out_shape[1:]
    dy = rng.standard_normal(out_shape)
    np.testing.assert_array_equal(layer.backward(cache, dy), dy.reshape(in_shape))
    clone = roundtrip(layer, x)
    assert tuple(clone.target_shape) == tuple(target)
    check_gradients(layers.Reshape(target, dtype="float64"), x, rng, expect_weights=0)


def test_reshape_impossible():
    with pytest.raises(ValueError, match=r"cannot reshape \(6,\) \(6 values\) into target_shape=\(4,\) \(4 values\)"):
        layers.Reshape((4,))(np.ones((2, 6)))
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 5\) \(10 values\) into target_shape=\(-1, 4\)"):
        layers.Reshape((-1, 4))(np.ones((3, 2, 5)))
    for bad in ((-1, -1), (2, -2)):
        with pytest.raises(ValueError, match="'target_shape' must be a tuple of ints >= 0 with at most one -1"):
            layers.Reshape(bad)


def test_input_is_a_symbolic_tensor_of_an_input_layer(rng):
    inp = layers.Input(shape=(4, 3))
    assert isinstance(inp, fastnn.KerasTensor) and inp.shape == (None, 4, 3) and inp.dtype == "float32"
    layer = inp._keras_history[0]
    assert isinstance(layer, layers.InputLayer) and layer.shape == (4, 3) and layer.output is inp
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), x)
    assert layer.output_shape == (None, 4, 3)
    config = layer.get_config()
    assert config == {"batch_shape": [None, 4, 3], "dtype": "float32", "name": layer.name}  # Keras 3's layout
    clone = layers.InputLayer.from_config(config)
    assert clone.shape == (4, 3) and clone.get_config() == config
    assert layers.deserialize(layers.serialize(layer)).get_config() == config
    old = {"shape": (7,), "batch_size": 16, "dtype": "float32", "name": "pixels"}  # files of earlier versions
    assert layers.InputLayer.from_config(old).get_config() == \
        {"batch_shape": [16, 7], "dtype": "float32", "name": "pixels"}
    assert layers.Input(shape=(7,), batch_size=16, name="pixels_2").shape == (16, 7)
    assert layers.Input(shape=784).shape == (None, 784)
    assert layers.Input((None,), dtype="int32").dtype == "int32"
    with pytest.raises(ValueError, match="'shape' is required"):
        layers.Input()
    with pytest.raises(TypeError, match="a shape must be a tuple of ints"):
        layers.Input(shape=("a", 2))
    with pytest.raises(ValueError, match="shape dimensions must be >= 0"):
        layers.Input(shape=(-2,))


# ----------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------
def _keras_snake_case(name):
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def test_default_names_follow_keras():
    made = [layers.Dense(2), layers.Activation("relu"), layers.Dropout(0.1), layers.Flatten(),
            layers.Reshape((2,)), layers.ReLU(), layers.LeakyReLU(), layers.PReLU(), layers.ELU(),
            layers.Softmax(), layers.InputLayer(shape=(2,))]
    wrong = []
    for layer in made:
        expected = _keras_snake_case(type(layer).__name__)  # e.g. ReLU -> re_lu, PReLU -> p_re_lu
        if not re.fullmatch(rf"{expected}(_\d+)?", layer.name):
            wrong.append((type(layer).__name__, layer.name, expected))
    assert not wrong, f"default names differ from Keras': {wrong}"
    a, b = layers.Dense(2), layers.Dense(2)
    assert a.name != b.name  # unique


def test_weights_and_grads_share_an_order(rng):
    layer = layers.Dense(3, dtype="float64")
    x = rng.standard_normal((2, 4))
    layer(x)
    y, cache = layer.forward(x, training=True)
    layer.backward(cache, np.ones_like(y))
    assert [g.shape for g in layer.grads] == [w.shape for w in layer.get_weights()] == [(4, 3), (3,)]
    np.testing.assert_allclose(layer.grads[0], x.T @ np.ones_like(y), rtol=1e-15)
    np.testing.assert_allclose(layer.grads[1], [2.0, 2.0, 2.0], rtol=1e-15)
    with pytest.raises(ValueError, match="expected 2 weight arrays, got 1"):
        layer.set_weights([np.zeros((4, 3))])
    with pytest.raises(ValueError, match=r"has shape \(4, 3\), got \(3, 4\)"):
        layer.set_weights([np.zeros((3, 4)), np.zeros(3)])
