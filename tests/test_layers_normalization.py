"""BatchNormalization (python/fastnn/layers/normalization.py).

Keras 3 semantics: defaults, weights (gamma/beta trainable, moving statistics not), batch
statistics in training and moving ones in inference, the moving-average update, a frozen
layer running in inference mode; gradients against central finite differences in float64;
configs that round-trip; bad input; and a Dense -> BatchNormalization -> Dense model that
learns the digits and keeps its moving statistics through save/load and get/set_weights.
"""

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers
from finite_differences import numeric_gradient

H = 1e-5


def ref_forward(x, axis, gamma, beta, mean=None, var=None, eps=1e-3):
    axis %= x.ndim
    red = tuple(d for d in range(x.ndim) if d != axis)
    shape = [-1 if d == axis else 1 for d in range(x.ndim)]
    if mean is None:
        mean, var = x.mean(axis=red), x.var(axis=red)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y, mean, var


def _randomise(layer, rng):
    """Non-default gamma/beta/moving statistics, so that each one matters."""
    for var in layer.weights:
        name = var.name.split("/")[-1]
        if name in ("gamma", "moving_variance"):
            var.assign(rng.uniform(0.5, 1.5, var.shape))
        else:
            var.assign(rng.uniform(-0.5, 0.5, var.shape))


# ----------------------------------------------------------------------------------------
# Construction and weights
# ----------------------------------------------------------------------------------------
def test_keras_defaults_and_weights():
    layer = layers.BatchNormalization()
    assert (layer.axis, layer.momentum, layer.epsilon, layer.center, layer.scale) == (-1, 0.99, 1e-3, True, True)
    layer.ensure_built((None, 5, 7))
    assert [v.name.split("/")[-1] for v in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.name.split("/")[-1] for v in layer.trainable_weights] == ["gamma", "beta"]
    assert [v.name.split("/")[-1] for v in layer.non_trainable_weights] == ["moving_mean", "moving_variance"]
    gamma, beta, mm, mv = layer.get_weights()
    assert all(w.shape == (7,) and w.dtype == np.float32 for w in (gamma, beta, mm, mv))
    np.testing.assert_array_equal(gamma, 1)
    np.testing.assert_array_equal(beta, 0)
    np.testing.assert_array_equal(mm, 0)
    np.testing.assert_array_equal(mv, 1)
    assert layer.count_params() == 28
    assert layer.moving_mean.grad is None and layer.moving_variance.grad is None
    assert layer.output_shape == (None, 5, 7)


@pytest.mark.parametrize("center,scale,names", [(False, True, ["gamma"]), (True, False, ["beta"]),
                                                (False, False, [])])
def test_center_and_scale_off_drop_their_weights(center, scale, names, rng):
    layer = layers.BatchNormalization(center=center, scale=scale)
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = layer(x, training=True)
    assert [v.name.split("/")[-1] for v in layer.trainable_weights] == names
    assert len(layer.weights) == len(names) + 2
    gamma = layer.gamma.value if scale else None
    beta = layer.beta.value if center else None
    np.testing.assert_allclose(y, ref_forward(x.astype(np.float64), -1, gamma, beta)[0], rtol=1e-5, atol=1e-5)


def test_initializers_and_regularizers_are_used():
    layer = layers.BatchNormalization(gamma_initializer=keras.initializers.Constant(2.0), beta_initializer="ones",
                                      moving_mean_initializer=keras.initializers.Constant(0.5),
                                      moving_variance_initializer=keras.initializers.Constant(4.0),
                                      gamma_regularizer="l2", beta_regularizer=keras.regularizers.L1(0.1))
    layer.ensure_built((None, 3))
    np.testing.assert_array_equal(layer.get_weights(), [[2.0] * 3, [1.0] * 3, [0.5] * 3, [4.0] * 3])
    assert layer.gamma.regularizer is not None and layer.beta.regularizer is not None
    assert layer.moving_mean.regularizer is None
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    expected = (x - 0.5) / np.sqrt(4.001) * 2 + 1
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------
# Forward: training, inference, moving statistics, freezing
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis", [((16, 6), -1), ((4, 5, 5, 8), -1), ((4, 8, 5, 5), 1), ((1, 6), -1),
                                        ((3, 700), -1), ((6, 4, 3), -2)])
def test_training_and_inference_forward(shape, axis, dtype, rng):
    layer = layers.BatchNormalization(axis=axis, momentum=0.9, dtype=dtype)
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    layer.ensure_built(x.shape)
    _randomise(layer, rng)
    gamma, beta, mm0, mv0 = (w.astype(np.float64) for w in layer.get_weights())
    x64 = x.astype(np.float64)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == "float64" else dict(rtol=3e-5, atol=3e-5)

    y_inf = layer(x)  # training=False: the moving statistics, unchanged
    assert y_inf.dtype == dtype
    np.testing.assert_allclose(y_inf, ref_forward(x64, axis, gamma, beta, mm0, mv0)[0], **tol)
    np.testing.assert_array_equal(layer.moving_mean.value, mm0.astype(dtype))

    y = layer(x, training=True)  # batch statistics, then the EMA update
    y_ref, mean, var = ref_forward(x64, axis, gamma, beta)
    np.testing.assert_allclose(y, y_ref, **tol)
    np.testing.assert_allclose(layer.moving_mean.value, 0.9 * mm0 + 0.1 * mean, **tol)
    np.testing.assert_allclose(layer.moving_variance.value, 0.9 * mv0 + 0.1 * var, **tol)


def test_moving_statistics_after_several_steps_equal_a_numpy_ema(rng):
    layer = layers.BatchNormalization(momentum=0.7, dtype="float64")
    mean_ema, var_ema = np.zeros(5), np.ones(5)
    batches = [rng.normal(i, 1 + i, (32, 5)) for i in range(8)]
    for x in batches:
        layer(x, training=True)
        mean_ema = 0.7 * mean_ema + 0.3 * x.mean(0)
        var_ema = 0.7 * var_ema + 0.3 * x.var(0)  # biased variance, as Keras
    np.testing.assert_allclose(layer.moving_mean.value, mean_ema, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.value, var_ema, rtol=1e-12)
    # Inference then uses them.
    x = rng.standard_normal((7, 5))
    np.testing.assert_allclose(layer(x), (x - mean_ema) / np.sqrt(var_ema + 1e-3), rtol=1e-12)


def test_frozen_layer_runs_in_inference_mode(rng):
    layer = layers.BatchNormalization(dtype="float64")
    x = rng.normal(2, 3, (10, 4))
    layer.ensure_built(x.shape)
    _randomise(layer, rng)
    before = layer.get_weights()
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4
    y, cache = layer.forward(x, training=True)
    gamma, beta, mm, mv = before
    np.testing.assert_allclose(y, ref_forward(x, -1, gamma, beta, mm, mv)[0], rtol=1e-12)
    for w, b in zip(layer.get_weights(), before):  # no moving-average update
        np.testing.assert_array_equal(w, b)
    grads_before = [g.copy() for g in (layer.gamma.grad, layer.beta.grad)]
    dy = rng.standard_normal(x.shape)
    dx = layer.backward(cache, dy)
    np.testing.assert_allclose(dx, dy * gamma / np.sqrt(mv + 1e-3), rtol=1e-12)
    np.testing.assert_array_equal(layer.gamma.grad, grads_before[0])  # frozen: no gradients written
    np.testing.assert_array_equal(layer.beta.grad, grads_before[1])


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------
def _numeric_gradient(loss, target):
    """Central differences of loss() with respect to the array `target` (perturbed in place)."""
    return numeric_gradient(loss, target, H)


def _assert_gradient(got, fd, what):
    assert got is not None, f"{what}: no gradient"
    rel = np.linalg.norm(got - fd) / max(np.linalg.norm(fd), 1e-12)
    assert rel < 1e-6, f"{what}: relative error {rel:.3g}"
    assert np.all(np.abs(got - fd) <= 1e-6 * np.abs(fd) + 1e-8), f"{what}: max error {np.abs(got - fd).max():.3g}"


@pytest.mark.parametrize("shape,axis", [((8, 5), -1), ((2, 3, 4, 6), -1), ((3, 4, 3, 2), 1), ((2, 3, 4, 2), 2)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_gradients_in_training_mode_match_finite_differences(shape, axis, center, scale, rng):
    layer = layers.BatchNormalization(axis=axis, center=center, scale=scale, dtype="float64")
    x = rng.normal(0.5, 1.5, shape)
    layer.ensure_built(x.shape)
    _randomise(layer, rng)
    _, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, shape)
    dx = layer.backward(cache, dy)
    grads = {v.name.split("/")[-1]: np.array(v.grad, copy=True) for v in layer.trainable_weights}
    assert layer.grads[len(grads):] == [None, None]  # the moving statistics have no gradient
    # accumulate=True adds the same gradients to the first; need_input_grad=False skips dx only
    np.testing.assert_array_equal(layer.backward(cache, dy, accumulate=True), dx)
    for var in layer.trainable_weights:
        np.testing.assert_array_equal(var.grad, 2 * grads[var.name.split("/")[-1]])
    assert layer.backward(cache, dy, need_input_grad=False) is None
    for var in layer.trainable_weights:
        np.testing.assert_array_equal(var.grad, grads[var.name.split("/")[-1]])

    def loss():
        return float(np.sum(layer.forward(x, training=True)[0] * dy))

    _assert_gradient(dx, _numeric_gradient(loss, x), "dx")
    for var in layer.trainable_weights:
        name = var.name.split("/")[-1]
        _assert_gradient(grads[name], _numeric_gradient(loss, var.value), f"d{name}")
    assert sorted(grads) == sorted((["gamma"] if scale else []) + (["beta"] if center else []))


def test_gradients_of_a_frozen_layer_match_finite_differences(rng):
    layer = layers.BatchNormalization(axis=1, dtype="float64")
    x = rng.normal(0.5, 1.5, (3, 4, 5))
    layer.ensure_built(x.shape)
    _randomise(layer, rng)
    layer.trainable = False
    _, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, x.shape)
    dx = layer.backward(cache, dy)
    _assert_gradient(dx, _numeric_gradient(lambda: float(np.sum(layer.forward(x, training=True)[0] * dy)), x), "dx")


def test_backward_needs_a_training_forward(rng):
    layer = layers.BatchNormalization()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer(x)
    assert layer.forward(x)[1] is None  # inference: nothing cached
    inputs = keras.Input((3,))
    graph = fastnn.graph.Graph([inputs], [layer(inputs)])
    (y,), tape = graph.forward([x])
    with pytest.raises(RuntimeError, match="needs a forward"):
        graph.backward(tape, [np.ones_like(y)])


def test_a_shared_layer_keeps_one_cache_per_call(rng):
    layer = layers.BatchNormalization(dtype="float64")
    a, b = rng.normal(1, 2, (6, 3)), rng.normal(-1, 0.5, (9, 3))
    layer.ensure_built(a.shape)
    _randomise(layer, rng)
    (_, cache_a), (_, cache_b) = layer.forward(a, training=True), layer.forward(b, training=True)
    dya, dyb = rng.uniform(-1, 1, a.shape), rng.uniform(-1, 1, b.shape)
    dxa = layer.backward(cache_a, dya)
    grads_a = [v.grad.copy() for v in layer.trainable_weights]
    dxb = layer.backward(cache_b, dyb, accumulate=True)
    summed = [v.grad.copy() for v in layer.trainable_weights]
    for x, dy, dx in ((a, dya, dxa), (b, dyb, dxb)):  # each call's dx from its own batch statistics
        _assert_gradient(dx, _numeric_gradient(lambda: float(np.sum(layer.forward(x, training=True)[0] * dy)), x),
                         "dx")
    layer.backward(cache_b, dyb)
    for var, ga, total in zip(layer.trainable_weights, grads_a, summed):  # the second call's added to the first's
        np.testing.assert_array_equal(total, ga + var.grad)


def test_bit_identical_on_one_and_two_threads(threads, rng):
    x = rng.normal(1, 2, (32, 16, 16, 32)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for n in (1, 2):
        threads(n)
        keras.utils.set_random_seed(0)
        layer = layers.BatchNormalization(name="bn")
        layer.ensure_built(x.shape)
        y, cache = layer.forward(x, training=True)
        dx = layer.backward(cache, dy)
        out.append([y, dx] + layer.get_weights() + [g.copy() for g in layer.grads if g is not None])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------
def test_wrong_channel_count_after_build(rng):
    layer = layers.BatchNormalization(name="bn_channels")
    layer(rng.standard_normal((4, 6)).astype(np.float32), training=True)
    with pytest.raises(ValueError, match=r"'bn_channels' was built for input shape \(None, 6\), got \(None, 5\)"):
        layer(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNormalization 'bn_channels': built for inputs of shape \(None, 6\) "
                                         r"\(6 channels on axis -1\), got shape \(4, 5\)"):
        layer.forward(np.zeros((4, 5), np.float32), training=True)
    np.testing.assert_array_equal(layer.gamma.value, 1)  # nothing changed


@pytest.mark.parametrize("axis", [2, -3])
def test_axis_out_of_range(axis):
    layer = layers.BatchNormalization(axis=axis, name="bn_axis")
    with pytest.raises(ValueError, match=rf"BatchNormalization 'bn_axis': 'axis' {axis} is out of range for inputs "
                                         r"of shape \(None, 4\) \(2 axes\)"):
        layer(np.zeros((3, 4), np.float32))


def test_batch_axis_cannot_be_the_channel_axis():
    with pytest.raises(ValueError, match=r"channel axis 0 .* must have a known size \(axis 0 is the batch axis\)"):
        layers.BatchNormalization(axis=0)(np.zeros((3, 4), np.float32))


@pytest.mark.parametrize("momentum", [-0.01, 1.01, 2])
def test_momentum_outside_0_1(momentum):
    with pytest.raises(ValueError, match=r"'momentum' must be in \[0, 1\], got"):
        layers.BatchNormalization(momentum=momentum)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"epsilon": 0}, ValueError, "'epsilon' must be a finite float > 0"),
    ({"epsilon": -1e-3}, ValueError, "'epsilon' must be a finite float > 0"),
    ({"momentum": "0.9"}, TypeError, "'momentum' must be a float"),
    ({"axis": [1, 2]}, TypeError, r"'axis' must be an int \(one channel axis\)"),
    ({"axis": 1.0}, TypeError, "'axis' must be an int"),
    ({"gamma_constraint": "nope"}, ValueError, "'gamma_constraint': Unknown constraint 'nope'"),
    ({"beta_constraint": 3}, TypeError, "'beta_constraint' must be None, a name"),
    ({"synchronized": True}, ValueError, "synchronized=True"),
    ({"renorm": True, "renorm_clipping": {"rmin": 2, "rmax": 1}}, ValueError, "needs rmax >= rmin"),
    ({"renorm": True, "renorm_clipping": {"dmax": -1}}, ValueError, r"renorm_clipping\['dmax'\] must be >= 0"),
    ({"renorm": True, "renorm_clipping": {"r_max": 2}}, ValueError, r"unknown keys \['r_max'\]"),
    ({"renorm": True, "renorm_clipping": 3.0}, TypeError, "'renorm_clipping' must be a dict"),
    ({"renorm": True, "renorm_clipping": {"rmax": "3"}}, TypeError, r"renorm_clipping\['rmax'\] must be a finite"),
    ({"renorm_momentum": 1.5}, ValueError, r"'renorm_momentum' must be in \[0, 1\]"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        layers.BatchNormalization(**kwargs)


def test_keras_only_arguments_at_their_defaults_are_accepted():
    layer = layers.BatchNormalization(beta_constraint=None, gamma_constraint=None, synchronized=False)
    assert layer.axis == -1


# ----------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------
def test_get_config_round_trip():
    layer = layers.BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False, scale=True,
                                      gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02, seed=3),
                                      moving_variance_initializer=keras.initializers.Constant(2.0),
                                      gamma_regularizer=keras.regularizers.L2(1e-4), name="bn_cfg",
                                      dtype="float64")
    cfg = layer.get_config()
    assert cfg["axis"] == 1 and cfg["momentum"] == 0.9 and cfg["epsilon"] == 1e-5
    assert cfg["center"] is False and cfg["scale"] is True and cfg["name"] == "bn_cfg"
    clone = layers.BatchNormalization.from_config(cfg)
    assert clone.get_config() == cfg
    again = layers.deserialize(layers.serialize(layer))
    assert type(again) is layers.BatchNormalization and again.get_config() == cfg
    default = layers.BatchNormalization()
    assert layers.BatchNormalization.from_config(default.get_config()).get_config() == default.get_config()


# ----------------------------------------------------------------------------------------
# In a model
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train = x_train.reshape(len(x_train), -1).astype("float32") / 16
    x_test = x_test.reshape(len(x_test), -1).astype("float32") / 16
    return (x_train, y_train), (x_test, y_test)


def bn_model(seed=0, **bn_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        layers.Dense(64, input_shape=(64,)),
        layers.BatchNormalization(**bn_kwargs),
        layers.Activation("relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def trained(digits):
    (x_train, y_train), _ = digits
    model = bn_model()
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    return model


def test_model_learns_the_digits(trained, digits):
    _, (x_test, y_test) = digits
    loss, accuracy = trained.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95


def test_moving_statistics_live_in_the_model_buffer_and_follow_training(trained, digits):
    bn = trained.layers[1]
    assert [v.name for v in trained.non_trainable_weights] == [bn.moving_mean.name, bn.moving_variance.name]
    assert np.shares_memory(bn.moving_mean.value, trained._params)
    assert np.shares_memory(bn.moving_variance.value, trained._params)
    (x_train, _), _ = digits
    # After training they approximate the statistics of the Dense layer's outputs.
    h = trained.layers[0](x_train)
    np.testing.assert_allclose(bn.moving_mean.value, h.mean(0), atol=0.15)
    np.testing.assert_allclose(bn.moving_variance.value, h.var(0), rtol=0.3, atol=0.05)
    # predict uses them: the model equals an independent NumPy inference pass.
    w0, b0 = trained.layers[0].get_weights()
    gamma, beta, mm, mv = bn.get_weights()
    w1, b1 = trained.layers[3].get_weights()
    z = np.maximum(((x_train @ w0 + b0) - mm) / np.sqrt(mv + 1e-3) * gamma + beta, 0) @ w1 + b1
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(trained.predict(x_train, verbose=0), e / e.sum(1, keepdims=True), atol=1e-5)


def test_summary_counts_the_moving_statistics_as_non_trainable(trained):
    lines = []
    trained.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "batch_normalization" in text  # (the table truncates the type)
    assert "Trainable params: 4,938" in text and "Non-trainable params: 128" in text


def test_moving_statistics_survive_save_and_load(trained, digits, tmp_path):
    _, (x_test, _) = digits
    path = tmp_path / "bn.fastnn"
    trained.save(path)
    loaded = fastnn.models.load_model(path)
    bn, bn2 = trained.layers[1], loaded.layers[1]
    assert isinstance(bn2, layers.BatchNormalization)
    for a, b in zip(bn.get_weights(), bn2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.all(bn2.moving_mean.value == 0)  # trained values, not the initializers'
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), trained.predict(x_test, verbose=0))
    assert np.shares_memory(bn2.moving_mean.value, loaded._params)
    # save_weights / load_weights into a fresh model
    weights_path = tmp_path / "bn.weights.fastnn"
    trained.save_weights(weights_path)
    fresh = bn_model(seed=5)
    fresh.load_weights(weights_path)
    np.testing.assert_array_equal(fresh.layers[1].moving_variance.value, bn.moving_variance.value)


def test_moving_statistics_survive_get_and_set_weights(trained, digits):
    _, (x_test, _) = digits
    weights = trained.get_weights()
    assert len(weights) == 2 + 4 + 2
    fresh = bn_model(seed=7)
    fresh.set_weights(weights)
    np.testing.assert_array_equal(fresh.layers[1].moving_mean.value, trained.layers[1].moving_mean.value)
    np.testing.assert_array_equal(fresh.predict(x_test, verbose=0), trained.predict(x_test, verbose=0))
    # ...and the restored statistics keep training in the fresh model's flat buffer.
    (x_train, y_train), _ = digits
    fresh.fit(x_train[:64], y_train[:64], epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(fresh.layers[1].moving_mean.value, trained.layers[1].moving_mean.value)


def test_optimizer_never_touches_the_moving_statistics(digits):
    (x_train, y_train), _ = digits
    # momentum=1: the moving averages never change; weight decay would shrink them if the
    # optimizer updated them.
    model = bn_model(momentum=1.0)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.5),
                  loss="sparse_categorical_crossentropy")
    model.fit(x_train[:256], y_train[:256], epochs=2, batch_size=32, verbose=0)
    bn = model.layers[1]
    np.testing.assert_array_equal(bn.moving_mean.value, 0)
    np.testing.assert_array_equal(bn.moving_variance.value, 1)
    assert not np.all(bn.gamma.value == 1)  # while gamma did train


def test_freezing_in_a_model_keeps_everything(digits):
    (x_train, y_train), _ = digits
    model = bn_model()
    model.fit(x_train[:128], y_train[:128], epochs=1, batch_size=32, verbose=0)
    bn = model.layers[1]
    bn.trainable = False
    before = bn.get_weights()
    first = model.layers[0].get_weights()[0].copy()
    model.fit(x_train[:128], y_train[:128], epochs=1, batch_size=32, verbose=0)
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.layers[0].get_weights()[0], first)  # the rest still trains
    lines = []
    model.summary(print_fn=lines.append)
    assert "Non-trainable params: 256" in "\n".join(lines)


def test_channels_first_in_a_model(rng):
    # (batch, channels, steps) with axis=1, between two Dense layers over the last axis.
    keras.utils.set_random_seed(1)
    model = keras.Sequential([layers.Dense(6, input_shape=(4, 5)), layers.BatchNormalization(axis=1),
                              layers.Flatten(), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = rng.standard_normal((64, 4, 5)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.layers[1].moving_mean.shape == (4,)


# ----------------------------------------------------------------------------------------
# Batch renormalization (Keras 3: keras/src/layers/normalization/batch_normalization.py)
# ----------------------------------------------------------------------------------------
class KerasRenorm:
    """Keras 3's renorm training step in NumPy (float64): _renorm_correction_and_moments,
    _compose_transforms, ops.batch_normalization and _update_renorm_statistics."""

    def __init__(self, channels, eps, momentum, renorm_momentum, clipping, variance_init=1.0):
        self.eps, self.m, self.rm, self.clip = eps, momentum, renorm_momentum, clipping or {}
        self.moving_mean = np.zeros(channels)
        self.moving_variance = np.full(channels, variance_init)
        self.moving_stddev = np.sqrt(self.moving_variance)
        self.renorm_mean = np.zeros(channels)
        self.renorm_stddev = np.sqrt(self.moving_variance)

    def corrections(self, x, axis):
        reduce = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
        mean, var = x.mean(axis=reduce), x.var(axis=reduce)
        stddev = np.sqrt(var + self.eps)
        s = np.maximum(self.renorm_stddev, np.sqrt(self.eps))
        r, d = stddev / s, (mean - self.renorm_mean) / s
        if self.clip.get("rmin") is not None:
            r = np.maximum(r, self.clip["rmin"])
        if self.clip.get("rmax") is not None:
            r = np.minimum(r, self.clip["rmax"])
        if self.clip.get("dmax") is not None:
            d = np.clip(d, -self.clip["dmax"], self.clip["dmax"])
        return r, d

    @staticmethod
    def output(x, axis, gamma, beta, r, d, eps):
        """With r and d given (constants, as stop_gradient makes them)."""
        reduce = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
        shape = [1] * x.ndim
        shape[axis] = -1
        mean, var = x.mean(axis=reduce, keepdims=True), x.var(axis=reduce, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * (r * gamma).reshape(shape) + (d * gamma + beta).reshape(shape)

    def step(self, x, axis, gamma, beta):
        r, d = self.corrections(x, axis)
        y = self.output(x, axis, gamma, beta, r, d, self.eps)
        reduce = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
        mean, stddev = x.mean(axis=reduce), np.sqrt(x.var(axis=reduce) + self.eps)
        self.renorm_mean = self.renorm_mean * self.rm + mean * (1 - self.rm)
        self.renorm_stddev = self.renorm_stddev * self.rm + stddev * (1 - self.rm)
        self.moving_mean = self.moving_mean * self.m + mean * (1 - self.m)
        self.moving_stddev = self.moving_stddev * self.m + stddev * (1 - self.m)
        self.moving_variance = np.maximum(self.moving_stddev ** 2 - self.eps, 0)
        return y


RENORM_NAMES = ["gamma", "beta", "moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"]


def test_renorm_weights_are_keras_list():
    layer = layers.BatchNormalization(renorm=True, moving_variance_initializer=keras.initializers.Constant(4.0),
                                      moving_mean_initializer=keras.initializers.Constant(0.5))
    layer(np.zeros((2, 3), np.float32))
    assert [w.name.split("/")[-1] for w in layer.weights] == RENORM_NAMES
    assert [w.name.split("/")[-1] for w in layer.non_trainable_weights] == RENORM_NAMES[2:]
    # Keras: moving_stddev and renorm_stddev start at sqrt(moving_variance_initializer),
    # renorm_mean at moving_mean_initializer
    expected = [1, 0, 0.5, 4, 2, 0.5, 2]
    for got, value in zip(layer.get_weights(), expected):
        np.testing.assert_array_equal(got, np.full(3, value, np.float32))
    assert layer.count_params() == 7 * 3
    plain = layers.BatchNormalization(renorm=False)
    plain(np.zeros((2, 3), np.float32))
    assert len(plain.get_weights()) == 4


@pytest.mark.parametrize("axis,shape", [(-1, (16, 3)), (1, (8, 3, 4, 2)), (-1, (4, 5, 5, 3))])
@pytest.mark.parametrize("clipping", [None, {"rmin": 0.8, "rmax": 1.25, "dmax": 0.3}, {"rmax": 1.1}])
def test_renorm_steps_match_keras_formula(axis, shape, clipping, rng):
    layer = layers.BatchNormalization(axis=axis, momentum=0.9, renorm=True, renorm_clipping=clipping,
                                      renorm_momentum=0.7, epsilon=1e-3, dtype="float64")
    channels = shape[axis]
    layer(np.zeros(shape))
    gamma, beta = rng.uniform(0.5, 2, channels), rng.normal(0, 1, channels)
    layer.set_weights([gamma, beta] + layer.get_weights()[2:])
    reference = KerasRenorm(channels, 1e-3, 0.9, 0.7, clipping)
    for step in range(4):
        x = rng.normal(step - 1.0, 1 + step, shape)  # shifting statistics: r and d differ from 1 and 0
        y, _ = layer.forward(x, training=True)
        np.testing.assert_allclose(y, reference.step(x, axis, gamma, beta), rtol=1e-12, atol=1e-12)
        got = dict(zip(RENORM_NAMES, layer.get_weights()))
        for name in RENORM_NAMES[2:]:
            np.testing.assert_allclose(got[name], getattr(reference, name), rtol=1e-12, atol=1e-14, err_msg=name)
    # inference: the moving mean and variance, as without renorm
    x = rng.normal(0, 2, shape)
    np.testing.assert_allclose(layer(x, training=False),
                               ref_forward(x, axis, gamma, beta, reference.moving_mean, reference.moving_variance)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_renorm_gradients_treat_r_and_d_as_constants(center, scale, rng):
    shape, axis, eps = (6, 4, 3), -1, 1e-3
    layer = layers.BatchNormalization(renorm=True, center=center, scale=scale, renorm_clipping={"rmax": 1.5},
                                      epsilon=eps, dtype="float64")
    layer(np.zeros(shape))
    # renorm statistics away from the batch's, so that r != 1 and d != 0
    values = {w.name.split("/")[-1]: w for w in layer.weights}
    values["renorm_mean"].assign(rng.normal(0, 0.5, 3))
    values["renorm_stddev"].assign(rng.uniform(0.7, 1.3, 3))
    gamma = rng.uniform(0.5, 2, 3) if scale else np.ones(3)
    beta = rng.normal(0, 1, 3) if center else np.zeros(3)
    if scale:
        values["gamma"].assign(gamma)
    if center:
        values["beta"].assign(beta)
    x = rng.normal(1, 2, shape)
    reference = KerasRenorm(3, eps, 0.99, 0.99, {"rmax": 1.5})
    # copies: the forward pass moves the layer's renorm statistics after using them
    reference.renorm_mean, reference.renorm_stddev = (np.array(values["renorm_mean"].value),
                                                      np.array(values["renorm_stddev"].value))
    r, d = reference.corrections(x, axis)
    assert np.all(np.abs(r - 1) > 1e-3) and np.all(np.abs(d) > 1e-3)
    y, cache = layer.forward(x, training=True)
    np.testing.assert_allclose(y, KerasRenorm.output(x, axis, gamma, beta, r, d, eps), rtol=1e-12)
    dy = rng.normal(0, 1, shape)
    dx = layer.backward(cache, dy)

    def loss():
        return float(np.sum(KerasRenorm.output(x, axis, gamma, beta, r, d, eps) * dy))

    np.testing.assert_allclose(dx, numeric_gradient(loss, x, 1e-6), rtol=1e-6, atol=1e-8)
    grads = {w.name.split("/")[-1]: np.array(w.grad) for w in layer.trainable_weights}
    if scale:
        np.testing.assert_allclose(grads["gamma"], numeric_gradient(loss, gamma, 1e-6), rtol=1e-6, atol=1e-8)
    if center:
        np.testing.assert_allclose(grads["beta"], numeric_gradient(loss, beta, 1e-6), rtol=1e-6, atol=1e-8)
    # accumulate adds the same gradients again
    layer.backward(cache, dy, accumulate=True)
    for w in layer.trainable_weights:
        np.testing.assert_allclose(w.grad, 2 * grads[w.name.split("/")[-1]], rtol=1e-13)


def test_renorm_config_round_trip_and_training_in_a_model(digits, tmp_path):
    layer = layers.BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0, "dmax": 5.0}, renorm_momentum=0.9)
    cfg = layer.get_config()
    assert cfg["renorm"] is True and cfg["renorm_clipping"] == {"rmax": 3.0, "dmax": 5.0}
    assert cfg["renorm_momentum"] == 0.9
    assert layers.BatchNormalization.from_config(cfg).get_config() == cfg
    plain = layers.BatchNormalization().get_config()
    assert plain["renorm"] is False and plain["renorm_clipping"] is None and plain["renorm_momentum"] == 0.99
    (x_train, y_train), (x_test, y_test) = digits
    model = bn_model(renorm=True, renorm_clipping={"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0})
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.9
    bn = model.layers[1]
    weights = dict(zip(RENORM_NAMES, bn.get_weights()))
    # moving_variance is derived from moving_stddev after every step
    np.testing.assert_allclose(weights["moving_variance"],
                               np.maximum(weights["moving_stddev"] ** 2 - bn.epsilon, 0), rtol=1e-5)
    model.save(tmp_path / "renorm.fastnn")
    loaded = keras.models.load_model(tmp_path / "renorm.fastnn")
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
    assert loaded.layers[1].get_config()["renorm_clipping"] == {"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}
