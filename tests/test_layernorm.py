"""LayerNormalization: the kernel (cpp/src/layernorm.cpp), fastnn.ops.layer_normalization /
rms_normalization / layer_norm_forward / layer_norm_backward and layers.LayerNormalization.

References: NumPy in float64 (the forward by the definition, the backward by the chain rule
through mean and variance written step by step), central finite differences in float64
through the layer, Keras' formula with given weights; plus bit-identical results on 1 and 2
threads, bad input, configs and save/load, and a small model that trains on the digits.
"""

import numpy as np
import pytest

import fastnn
import fastnn as keras
from fastnn import layers, ops
from finite_differences import numeric_gradient

MODES = ("standard", "rms_scaling", "rms")


# ----------------------------------------------------------------------------------------
# NumPy references (float64)
# ----------------------------------------------------------------------------------------
def ref_forward(x, first, gamma, beta, eps, mode):
    x = np.asarray(x, np.float64)
    red = tuple(range(first, x.ndim))
    mu = x.mean(axis=red, keepdims=True)
    if mode == "rms":
        second = (x * x).mean(axis=red, keepdims=True)
    else:
        second = ((x - mu) ** 2).mean(axis=red, keepdims=True)
    s = 1.0 / np.sqrt(second + eps)
    centred = x - mu if mode == "standard" else x
    y = centred * s
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y, mu.reshape(-1), s.reshape(-1)


def ref_backward(dy, x, first, gamma, eps, mode):
    """The chain rule, one intermediate at a time (not the closed form the kernel uses)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    red = tuple(range(first, x.ndim))
    n = int(np.prod(x.shape[first:]))
    mu = x.mean(axis=red, keepdims=True)
    ref = 0.0 if mode == "rms" else mu
    second = ((x - ref) ** 2).mean(axis=red, keepdims=True)
    s = 1.0 / np.sqrt(second + eps)
    centred = x - mu if mode == "standard" else x
    rows = tuple(range(first))
    dgamma = (dy * centred * s).sum(axis=rows)
    dbeta = dy.sum(axis=rows)
    dxhat = dy * (gamma if gamma is not None else 1.0)
    # y = centred * s: through s (via the second moment) and through centred (via mu).
    ds = (dxhat * centred).sum(axis=red, keepdims=True)
    dsecond = ds * (-0.5) * s**3
    dx = dxhat * s + dsecond * 2.0 * (x - ref) / n  # d second / dx (d ref/dx terms sum to 0)
    if mode == "standard":
        dx = dx - (dxhat * s).sum(axis=red, keepdims=True) / n
    return dx, dgamma, dbeta


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# The kernel against NumPy
# ----------------------------------------------------------------------------------------
SHAPES = [((1, 1), -1), ((5, 1), -1), ((4, 7), -1), ((3, 33), -1), ((2, 5, 257), -1), ((2, 3, 4, 5), -2),
          ((6, 1000), -1), ((3, 2, 3, 7), 1), ((1, 17), 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_kernel_matches_numpy(dtype, shape, axis, mode, center, scale, rng):
    if mode != "standard" and center:
        center = False  # the RMS modes take no beta (checked in test_bad_kernel_input)
    first = axis % len(shape)
    fshape = shape[first:]
    x = rng.normal(0.3, 2.0, shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, fshape).astype(dtype) if scale else None
    beta = rng.uniform(-0.5, 0.5, fshape).astype(dtype) if center else None
    y, mean, invstd = ops.layer_norm_forward(x, gamma, beta, axis, 1e-3, mode)
    ry, rmu, rs = ref_forward(x, first, gamma, beta, 1e-3, mode)
    assert y.dtype == dtype and y.shape == shape and mean.dtype == np.float64 and invstd.dtype == dtype
    np.testing.assert_allclose(y, ry, **_tol(dtype))
    np.testing.assert_allclose(mean, rmu, **_tol(dtype))
    np.testing.assert_allclose(invstd, rs, **_tol(dtype))

    dy = rng.uniform(-1, 1, shape).astype(dtype)
    dgamma = np.full(fshape, np.nan, dtype)
    dbeta = np.full(fshape, np.nan, dtype)
    dx = ops.layer_norm_backward(dy, x, mean, invstd, gamma, axis, mode, dgamma, dbeta)
    rdx, rdg, rdb = ref_backward(dy, x, first, gamma, 1e-3, mode)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(dx, rdx, **tol)
    np.testing.assert_allclose(dgamma, rdg, **tol)
    np.testing.assert_allclose(dbeta, rdb, **tol)
    # accumulate adds; need_dx=False returns None and still writes the sums
    assert ops.layer_norm_backward(dy, x, mean, invstd, gamma, axis, mode, dgamma, dbeta, accumulate=True,
                                   need_dx=False) is None
    np.testing.assert_allclose(dgamma, 2 * rdg, **tol)
    np.testing.assert_allclose(dbeta, 2 * rdb, **tol)


@pytest.mark.parametrize("mode", ["standard", "rms_scaling"])
def test_large_mean_loses_nothing_in_float32(mode, rng):
    """Data of mean 1e4 and std 1: the moments are one pass, yet as accurate as two passes."""
    x = rng.normal(1e4, 1.0, (64, 300)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 300).astype(np.float32)
    beta = rng.uniform(-0.5, 0.5, 300).astype(np.float32) if mode == "standard" else None
    y, mean, invstd = ops.layer_norm_forward(x, gamma, beta, -1, 1e-3, mode)
    ry, rmu, rs = ref_forward(x, 1, gamma, beta, 1e-3, mode)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, rmu, rtol=1e-12)
    np.testing.assert_allclose(invstd, rs, rtol=1e-5)
    dy = rng.uniform(-1, 1, x.shape).astype(np.float32)
    dgamma, dbeta = np.zeros(300, np.float32), np.zeros(300, np.float32)
    dx = ops.layer_norm_backward(dy, x, mean, invstd, gamma, -1, mode, dgamma, dbeta)
    rdx, rdg, rdb = ref_backward(dy, x, 1, gamma, 1e-3, mode)
    scale = np.abs(rdx).max()
    np.testing.assert_allclose(dx, rdx, rtol=1e-3, atol=1e-4 * scale)
    np.testing.assert_allclose(dgamma, rdg, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta, rdb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_bit_identical_on_one_and_two_threads(dtype, mode, threads, rng):
    # Large enough to run on two threads and to split dgamma/dbeta into many row chunks.
    x = rng.normal(1.0, 2.0, (1500, 300)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, 300).astype(dtype)
    beta = rng.uniform(-0.5, 0.5, 300).astype(dtype) if mode == "standard" else None
    dy = rng.uniform(-1, 1, x.shape).astype(dtype)
    results = []
    for n in (1, 2):
        threads(n)
        y, mean, invstd = ops.layer_norm_forward(x, gamma, beta, -1, 1e-3, mode)
        dgamma, dbeta = np.zeros(300, dtype), np.zeros(300, dtype)
        dx = ops.layer_norm_backward(dy, x, mean, invstd, gamma, -1, mode, dgamma, dbeta)
        results.append((y, mean, invstd, dx, dgamma, dbeta))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------------------------------------
# Keras' ops
# ----------------------------------------------------------------------------------------
def test_layer_normalization_op_is_keras_formula(rng):
    np.testing.assert_allclose(ops.layer_normalization(np.arange(5, dtype="float32")),
                               [-1.4142135, -0.70710677, 0.0, 0.70710677, 1.4142135], rtol=1e-6)
    x = rng.normal(size=(2, 3, 4))
    gamma, beta = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    # Keras: mean & variance over the axes, inv = rsqrt(var + eps) * gamma, x * inv - mean * inv + beta
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    inv = gamma / np.sqrt(var + 1e-7)
    np.testing.assert_allclose(ops.layer_normalization(x, gamma, beta, axis=[1, 2]), x * inv - mean * inv + beta,
                               rtol=1e-12, atol=1e-12)
    # rms_scaling=True as Keras computes it: x * rsqrt(var + eps) * gamma
    g = rng.normal(size=4)
    np.testing.assert_allclose(ops.layer_normalization(x, g, rms_scaling=True, epsilon=1e-3),
                               x / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-3) * g, rtol=1e-12)
    # rms_normalization: x * rsqrt(mean(x**2) + eps) * scale
    np.testing.assert_allclose(ops.rms_normalization(x, g, axis=-1),
                               x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-7) * g, rtol=1e-12)
    with pytest.raises(ValueError, match=r"layer_normalization: 'axis' \[0, 2\] must be the last axis or a run of "
                                         r"trailing axes"):
        ops.layer_normalization(x, axis=[0, 2])
    with pytest.raises(ValueError, match="duplicate axes"):
        ops.layer_normalization(x, axis=[-1, 2])
    with pytest.raises(TypeError, match="'axis' must be an int"):
        ops.layer_normalization(x, axis=1.0)


def test_bad_kernel_input(rng):
    x = rng.normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"layernorm_forward: 'gamma' must have shape \(6,\) \(the normalised axes, from axis 1 of 'x' of shape \(4, 6\)\), got \(5,\)"):
        ops.layer_norm_forward(x, np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"layernorm_forward: 'beta' must have shape \(3, 2\)"):
        ops.layer_norm_forward(x.reshape(4, 3, 2), None, np.ones(6, np.float32), axis=1)
    with pytest.raises(TypeError, match="layernorm_forward.*gamma"):
        ops.layer_norm_forward(x, np.ones(6, np.float64))
    for eps in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="layernorm_forward: 'epsilon' must be a finite number > 0"):
            ops.layer_norm_forward(x, epsilon=eps)
    with pytest.raises(ValueError, match=r"layernorm_forward: 'axis' \(the first normalised axis\) must be in"):
        ops.layer_norm_forward(x, axis=2)
    with pytest.raises(ValueError, match="layernorm_forward: the normalised axes of 'x'.*hold no values"):
        ops.layer_norm_forward(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="'mode' must be"):
        ops.layer_norm_forward(x, mode="group")
    with pytest.raises(ValueError, match="'beta' must be None with mode \"rms\""):
        ops.layer_norm_forward(x, None, np.zeros(6, np.float32), mode="rms")
    y, mean, invstd = ops.layer_norm_forward(x)
    with pytest.raises(ValueError, match=r"layernorm_backward: 'dy' must have shape|layernorm_backward: 'dy'"):
        ops.layer_norm_backward(np.ones((4, 5), np.float32), x, mean, invstd)
    with pytest.raises(ValueError, match="layernorm_backward: 'invstd' must hold 4 values"):
        ops.layer_norm_backward(y, x, mean, invstd[:3])
    with pytest.raises(TypeError, match="layernorm_backward: 'mean'.*is required"):
        ops.layer_norm_backward(y, x, None, invstd)
    with pytest.raises(TypeError, match="layernorm_backward.*dgamma"):
        ops.layer_norm_backward(y, x, mean, invstd, dgamma=np.zeros(6, np.float64))
    # an empty batch is fine: no rows, sums of nothing
    dgamma = np.full(6, 7.0, np.float32)
    e, em, es = ops.layer_norm_forward(np.zeros((0, 6), np.float32))
    assert e.shape == (0, 6) and em.shape == (0,)
    ops.layer_norm_backward(e, e, em, es, dgamma=dgamma)
    np.testing.assert_array_equal(dgamma, 0)


# ----------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------
def test_keras_defaults_weights_and_formula(rng):
    layer = layers.LayerNormalization()
    assert (layer.axis, layer.epsilon, layer.center, layer.scale, layer.rms_scaling) == (-1, 1e-3, True, True, False)
    layer.ensure_built((None, 5, 7))
    assert layer.axis == [2]
    assert [v.name.split("/")[-1] for v in layer.weights] == ["gamma", "beta"]
    gamma, beta = layer.get_weights()
    assert gamma.shape == beta.shape == (7,) and gamma.dtype == np.float32
    np.testing.assert_array_equal(gamma, 1)
    np.testing.assert_array_equal(beta, 0)
    # Keras' formula with given weights (set_weights in Keras' order)
    g, b = rng.uniform(0.5, 1.5, 7), rng.uniform(-1, 1, 7)
    layer.set_weights([g.astype(np.float32), b.astype(np.float32)])
    x = rng.normal(2.0, 3.0, (4, 5, 7)).astype(np.float32)
    xd = x.astype(np.float64)
    mean, var = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
    np.testing.assert_allclose(layer(x), (xd - mean) / np.sqrt(var + 1e-3) * g + b, rtol=1e-5, atol=1e-5)
    # same in training mode: no batch statistics
    np.testing.assert_array_equal(layer(x, training=True), layer(x))


@pytest.mark.parametrize("kwargs,names", [({"center": False}, ["gamma"]), ({"scale": False}, ["beta"]),
                                          ({"center": False, "scale": False}, []),
                                          ({"rms_scaling": True}, ["gamma"]),
                                          ({"rms_scaling": True, "scale": False}, ["gamma"])])
def test_weights_as_keras_creates_them(kwargs, names):
    layer = layers.LayerNormalization(**kwargs)
    layer.ensure_built((None, 3, 4))
    assert [v.name.split("/")[-1] for v in layer.weights] == names


def test_axis_list_of_trailing_axes(rng):
    layer = layers.LayerNormalization(axis=(-2, -1), epsilon=1e-6)
    x = rng.normal(size=(2, 3, 4, 5))
    y = layer(x.astype(np.float32))
    assert layer.axis == [2, 3] and layer.gamma.shape == (4, 5)
    ref, _, _ = ref_forward(x, 2, None, None, 1e-6, "standard")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"LayerNormalization 'ln_mid': axis=\[1\] must be the last axis or a run "
                                         r"of trailing axes"):
        layers.LayerNormalization(axis=[1], name="ln_mid")(x)
    with pytest.raises(ValueError, match="duplicate axes"):
        layers.LayerNormalization(axis=[3, -1])(x)
    with pytest.raises(ValueError, match="out of range"):
        layers.LayerNormalization(axis=4)(x)
    with pytest.raises(ValueError, match="must have known sizes"):
        layers.LayerNormalization(axis=[0, 1, 2, 3])(x)


@pytest.mark.parametrize("kwargs", [{"axis": 1.5}, {"axis": "last"}, {"axis": []}, {"epsilon": 0},
                                    {"epsilon": -1.0}, {"epsilon": "small"}, {"gamma_constraint": "nope"}])
def test_bad_arguments(kwargs):
    with pytest.raises((TypeError, ValueError), match="LayerNormalization"):
        layers.LayerNormalization(**kwargs)


def test_input_of_another_shape_after_build(rng):
    layer = layers.LayerNormalization(name="ln_shape")
    layer(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"'ln_shape'.*\(None, 6\).*\(None, 5\)"):
        layer(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((2, 3, 4), [1, 2]), ((3, 1), -1), ((2, 2, 3), -1)])
@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False}, {"rms_scaling": True}])
def test_gradients_match_finite_differences(shape, axis, kwargs, rng):
    layer = layers.LayerNormalization(axis=axis, dtype="float64", **kwargs)
    x = rng.normal(0.5, 1.5, shape)
    layer.ensure_built(x.shape)
    for var in layer.weights:
        var.assign(rng.uniform(0.5, 1.5, var.shape))
    _, cache = layer.forward(x, training=True)
    dy = rng.uniform(-1, 1, shape)
    dx = layer.backward(cache, dy)
    grads = {v.name.split("/")[-1]: np.array(v.grad, copy=True) for v in layer.trainable_weights}

    def loss():
        return float(np.sum(layer.forward(x)[0] * dy))

    def check(got, what, target):
        fd = numeric_gradient(loss, target, 1e-5)
        rel = np.linalg.norm(got - fd) / max(np.linalg.norm(fd), 1e-12)
        assert rel < 1e-6, f"{what}: relative error {rel:.3g}"

    if shape[-1] > 1 or kwargs.get("rms_scaling"):
        check(dx, "dx", x)
    else:  # one feature: y = beta whatever x is
        np.testing.assert_allclose(dx, 0, atol=1e-6)
    for var in layer.trainable_weights:
        name = var.name.split("/")[-1]
        check(grads[name], f"d{name}", var.value)


def test_mask_passes_through():
    inputs = keras.Input((None,), dtype="int32")
    e = layers.Embedding(10, 6, mask_zero=True)(inputs)
    n = layers.LayerNormalization()
    out = layers.LSTM(3)(n(e))
    model = keras.Model(inputs, out)
    assert n.supports_masking
    ids = np.array([[1, 2, 0, 0]])
    mask = np.array([[True, True, False, False]])
    np.testing.assert_array_equal(n.compute_mask(None, mask), mask)
    # the LSTM sees the mask: the padded sequence predicts as the unpadded one
    np.testing.assert_allclose(model.predict(ids, verbose=0), model.predict(ids[:, :2], verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_config_round_trip_and_save_load(tmp_path, rng):
    layer = layers.LayerNormalization(axis=[-2, -1], epsilon=1e-6, center=False,
                                      gamma_initializer=keras.initializers.Constant(2.0),
                                      gamma_regularizer="l2", name="ln_cfg")
    cfg = layer.get_config()
    clone = layers.LayerNormalization.from_config(cfg)
    assert clone.get_config() == cfg
    assert layers.deserialize(layers.serialize(layer)).get_config() == cfg

    inputs = keras.Input((3, 4))
    x = layers.LayerNormalization(epsilon=1e-6)(inputs)
    x = layers.Flatten()(x)
    outputs = layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    for var in model.weights:
        var.assign(rng.normal(size=var.shape))
    data = rng.normal(size=(5, 3, 4)).astype(np.float32)
    path = tmp_path / "ln.fastnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[1]) is layers.LayerNormalization
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


def test_a_model_with_layer_normalization_learns_the_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    fastnn.utils.set_random_seed(0)
    model = keras.Sequential([layers.Dense(32, input_shape=(64,)), layers.LayerNormalization(),
                              layers.Activation("relu"), layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x_test, y_test, verbose=0)
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    after = model.evaluate(x_test, y_test, verbose=0)
    assert after[0] < before[0] and after[1] > 0.9
