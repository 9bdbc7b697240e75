"""Conv1D and Conv2D layers: Keras layouts and arguments, gradients by finite differences,
configs, and clear errors. The kernels themselves are tested in test_ops_conv.py."""

import numpy as np
import pytest

import fastnn
from fastnn import layers
from test_layers_core import REFERENCE, check_gradients, custom_activation, roundtrip
from test_ops_conv import reference_conv


@pytest.mark.parametrize("padding, strides, dilation", [("valid", 1, 1), ("same", 2, 1), ("same", 1, 2),
                                                         ("valid", (2, 3), 1)])
def test_conv2d_forward_is_keras(rng, padding, strides, dilation):
    layer = layers.Conv2D(4, (3, 2), strides=strides, padding=padding, dilation_rate=dilation, dtype="float64")
    x = rng.standard_normal((2, 9, 8, 3))
    y = layer(x)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 2, 3, 4) and bias.shape == (4,)  # (kh, kw, in, out), as Keras
    assert [v.name for v in layer.weights] == [f"{layer.name}/kernel", f"{layer.name}/bias"]
    limit = np.sqrt(6 / (3 * 2 * 3 + 3 * 2 * 4))  # glorot_uniform over the receptive field
    assert np.all(np.abs(kernel) <= limit) and np.abs(kernel).max() > limit / 2
    strides2 = (strides, strides) if isinstance(strides, int) else strides
    ref = reference_conv(x, kernel, bias, strides2, padding, (dilation, dilation))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert layer.output_shape == (None,) + ref.shape[1:]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softmax", "gelu", None])
def test_conv2d_gradients(rng, activation):
    layer = layers.Conv2D(3, 3, strides=(1, 2), padding="same", activation=activation, dtype="float64")
    x = rng.standard_normal((2, 5, 6, 2))
    layer.ensure_built(x.shape)
    kernel = rng.uniform(-0.5, 0.5, layer.kernel.shape)
    bias = rng.uniform(-0.3, 0.3, 3)
    layer.set_weights([kernel, bias])
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    ref = reference_conv(x, kernel, bias, (1, 2), "same", (1, 1))
    np.testing.assert_allclose(y, REFERENCE[activation](ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_conv1d_forward_and_gradients(rng, padding):
    layer = layers.Conv1D(3, 3, padding=padding, dilation_rate=2, activation="tanh", dtype="float64")
    x = rng.standard_normal((2, 9, 4))
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 4, 3)  # (k, in, out)
    if padding == "causal":  # output t sees inputs t - 4 .. t only
        ref = reference_conv(np.pad(x, ((0, 0), (4, 0), (0, 0)))[:, None], kernel[None], bias, (1, 1), "valid",
                             (1, 2))
    else:
        ref = reference_conv(x[:, None], kernel[None], bias, (1, 1), padding, (1, 2))
    np.testing.assert_allclose(y, np.tanh(ref[:, 0]), rtol=1e-12, atol=1e-12)
    assert layer.output_shape == (None,) + y.shape[1:]


def test_conv1d_strided(rng):
    layer = layers.Conv1D(2, 4, strides=3, dtype="float64")
    x = rng.standard_normal((3, 14, 2))
    y, _ = check_gradients(layer, x, rng)
    kernel, bias = layer.get_weights()
    ref = reference_conv(x[:, None], kernel[None], bias, (1, 3), "valid", (1, 1))[:, 0]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_conv2d_without_bias_and_frozen(rng):
    layer = layers.Conv2D(2, 2, use_bias=False, dtype="float64")
    x = rng.standard_normal((2, 4, 4, 3))
    check_gradients(layer, x, rng, expect_weights=1)
    frozen = layers.Conv2D(2, 2, dtype="float64", trainable=False)
    frozen(x)
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 2
    for g in frozen.grads:
        if g is not None:
            g[...] = 7.0
    _, cache = frozen.forward(x, training=True)
    assert frozen.backward(cache, np.ones((2, 3, 3, 2))).shape == x.shape
    assert all(g is None or np.all(g == 7.0) for g in frozen.grads)


@pytest.mark.parametrize("make, shape", [
    (lambda: layers.Conv2D(3, 3, strides=2, padding="same", activation="relu"), (4, 9, 8, 2)),
    (lambda: layers.Conv2D(2, (2, 3), dilation_rate=2, activation=custom_activation), (3, 8, 9, 3)),
    (lambda: layers.Conv1D(4, 3, padding="causal", activation="tanh"), (3, 10, 5)),
], ids=["conv2d", "conv2d-custom-activation", "conv1d"])
def test_backward_accumulates_and_can_skip_the_input_gradient(rng, make, shape):
    layer = make()
    x = rng.standard_normal(shape).astype(np.float32)
    layer(x)
    y, cache = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(cache, dy)
    once = [v.grad.copy() for v in layer.weights]
    assert len(once) == 2 and all(np.any(g != 0) for g in once)
    np.testing.assert_array_equal(layer.backward(cache, dy, accumulate=True), dx)
    for var, g in zip(layer.weights, once):  # the same gradients added to the first ones
        np.testing.assert_array_equal(var.grad, 2 * g)
    assert layer.backward(cache, dy, need_input_grad=False) is None
    for var, g in zip(layer.weights, once):  # written, and the same as with dx
        np.testing.assert_array_equal(var.grad, g)
    assert layer.backward(cache, dy, need_input_grad=False, accumulate=True) is None
    for var, g in zip(layer.weights, once):
        np.testing.assert_array_equal(var.grad, 2 * g)
    layer.bias.trainable = False  # only the weights trainable now get gradients
    layer.bias.grad[...] = 7.0
    layer.backward(cache, dy)
    np.testing.assert_array_equal(layer.kernel.grad, once[0])
    assert np.all(layer.bias.grad == 7.0)


def test_a_conv_layer_shared_by_images_of_two_sizes(rng):
    conv = layers.Conv2D(4, 3, strides=2, activation="relu")
    small, large = fastnn.Input((9, 9, 3)), fastnn.Input((17, 13, 3))
    a, b = conv(small), conv(large)
    assert a.shape == (None, 4, 4, 4) and b.shape == (None, 8, 6, 4)  # each call its own shape
    assert conv.compute_output_shape((None, 9, 9, 3)) == (None, 4, 4, 4)
    assert conv.compute_output_shape((None, None, 21, 3)) == (None, None, 10, 4)
    with pytest.raises(ValueError, match="built for 3 input channels"):
        conv(fastnn.Input((9, 9, 2)))
    model = fastnn.Model([small, large], [a, b])
    xs, xl = rng.standard_normal((5, 9, 9, 3)), rng.standard_normal((5, 17, 13, 3))
    kernel, bias = conv.get_weights()
    want = [np.maximum(reference_conv(x, kernel, bias, (2, 2), "valid", (1, 1)), 0) for x in (xs, xl)]
    for got, ref in zip(model.predict([xs, xl], verbose=0), want):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # One SGD step on the sum of both outputs' losses: the kernel's gradient is the sum of the
    # two calls' gradients (the second call's backward adds to the first's).
    ts, tl = rng.standard_normal(want[0].shape), rng.standard_normal(want[1].shape)
    grads = []
    for x, ref, t in ((xs, want[0], ts), (xl, want[1], tl)):
        _, cache = conv.forward(x.astype(np.float32), training=True)
        conv.backward(cache, (2 * (ref - t) / ref.size).astype(np.float32), need_input_grad=False)
        grads.append([g.astype(np.float64) for g in conv.grads])
    model.compile(optimizer=fastnn.optimizers.SGD(0.5), loss=["mse", "mse"])
    model.fit([xs, xl], [ts, tl], batch_size=5, epochs=1, shuffle=False, verbose=0)
    for before, after, g1, g2 in zip((kernel, bias), conv.get_weights(), *grads):
        np.testing.assert_allclose(after, before - 0.5 * (g1 + g2), rtol=1e-5, atol=1e-6)


def test_conv2d_float32_default(rng):
    layer = layers.Conv2D(8, 3, padding="same")
    x = rng.standard_normal((4, 7, 7, 3)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and layer.kernel.value.dtype == np.float32
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(y, reference_conv(x, kernel, bias, (1, 1), "same", (1, 1)), rtol=1e-4, atol=1e-5)


def test_conv_config_roundtrip(rng):
    layer = layers.Conv2D(5, (3, 1), strides=(2, 1), padding="same", activation="relu", use_bias=True,
                          kernel_initializer="he_normal", bias_initializer="ones", kernel_regularizer="l2",
                          dtype="float64")
    x = rng.standard_normal((2, 6, 5, 2))
    layer(x)
    config = roundtrip(layer, x).get_config()
    assert config["kernel_size"] == (3, 1) and config["strides"] == (2, 1) and config["padding"] == "same"
    layer1 = layers.Conv1D(3, 5, padding="causal", dilation_rate=2, dtype="float64")
    x1 = rng.standard_normal((2, 11, 4))
    layer1(x1)
    assert roundtrip(layer1, x1).get_config()["dilation_rate"] == (2,)


def test_kernel_regularizer_in_the_loss(rng):
    model = fastnn.Sequential([layers.Input((6, 6, 1)),
                               layers.Conv2D(2, 3, kernel_regularizer=fastnn.regularizers.L2(0.1)),
                               layers.Flatten(), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = rng.standard_normal((4, 6, 6, 1)), rng.standard_normal((4, 1))
    plain = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    penalty = 0.1 * float(np.sum(model.layers[0].get_weights()[0].astype(np.float64) ** 2))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(plain + penalty, rel=1e-5)


def test_bad_arguments():
    for filters in (0, -1, 2.5, None, True):
        with pytest.raises((ValueError, TypeError), match="'filters'"):
            layers.Conv2D(filters, 3)
    with pytest.raises(ValueError, match="'padding'"):
        layers.Conv2D(2, 3, padding="causal")
    with pytest.raises(ValueError, match="'padding'"):
        layers.Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="'kernel_size'"):
        layers.Conv2D(2, (3, 3, 3))
    with pytest.raises(ValueError, match="'strides'"):
        layers.Conv2D(2, 3, strides=0)
    with pytest.raises(TypeError, match="'kernel_size'"):
        layers.Conv2D(2, "3")
    with pytest.raises(ValueError, match="data_format"):
        layers.Conv2D(2, 3, data_format="NCHW")
    with pytest.raises(ValueError, match="dilation_rate"):
        layers.Conv2D(2, 3, strides=2, dilation_rate=2)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="4-D input"):
        layers.Conv2D(2, 3)(rng.standard_normal((2, 8, 8)))
    with pytest.raises(ValueError, match="3-D input"):
        layers.Conv1D(2, 3)(rng.standard_normal((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="spans 5 positions"):
        layers.Conv2D(2, 5)(rng.standard_normal((2, 4, 8, 1)))
    layer = layers.Conv2D(2, 3)
    layer(rng.standard_normal((2, 8, 8, 3)))
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(ValueError, match="built for 3 input channels, got inputs of shape"):
        layer(rng.standard_normal((2, 8, 8, 4)))
    with pytest.raises(ValueError, match="expects 4-D input"):
        layer(rng.standard_normal((2, 8, 3)))
    for old, new in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert layer(rng.standard_normal((1, 10, 9, 3))).shape == (1, 8, 7, 2)  # other image sizes are fine


def grouped_reference(x, kernel, bias, strides, padding, dilation, groups):
    """Keras' grouped convolution in NumPy: group g's filters convolve group g's channels only."""
    cg, fg = x.shape[-1] // groups, kernel.shape[-1] // groups
    outs = [reference_conv(x[..., g * cg:(g + 1) * cg], kernel[..., g * fg:(g + 1) * fg],
                           None if bias is None else bias[g * fg:(g + 1) * fg], strides, padding, dilation)
            for g in range(groups)]
    return np.concatenate(outs, axis=-1)


@pytest.mark.parametrize("channels, filters, groups, kernel, strides, padding, dilation", [
    (4, 6, 2, (3, 3), (1, 1), "same", (1, 1)),
    (6, 6, 3, (2, 3), (2, 1), "valid", (1, 1)),
    (5, 10, 5, (3, 3), (1, 1), "same", (2, 2)),    # depthwise, 2 outputs per channel
    (32, 32, 32, (3, 3), (1, 1), "same", (1, 1)),  # depthwise with >= 16 channels (the col2im path)
    (32, 64, 4, (3, 3), (1, 1), "same", (1, 1)),   # wide groups (no Winograd for groups > 1)
    (8, 4, 4, (1, 1), (1, 1), "valid", (1, 1)),    # 1×1 grouped: not the pointwise fast path
])
def test_grouped_conv2d_is_per_group_numpy(rng, channels, filters, groups, kernel, strides, padding, dilation):
    layer = layers.Conv2D(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                          bias_initializer="random_normal", dtype="float64")
    x = rng.standard_normal((3, 7, 6, channels))
    y = layer(x)
    kernel_value, bias = layer.get_weights()
    assert kernel_value.shape == kernel + (channels // groups, filters)  # Keras' grouped kernel shape
    ref = grouped_reference(x, kernel_value, bias, strides, padding, dilation, groups)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert layer.output_shape == (None,) + ref.shape[1:]
    assert layer.get_config()["groups"] == groups
    roundtrip(layer, x)


@pytest.mark.parametrize("groups, activation, padding, strides", [(2, "relu", "same", (1, 1)),
                                                                 (3, None, "valid", (2, 2)),
                                                                 (6, "tanh", "same", (1, 2))])
def test_grouped_conv2d_gradients(rng, groups, activation, padding, strides):
    layer = layers.Conv2D(6, 3, strides=strides, padding=padding, groups=groups, activation=activation,
                          bias_initializer="random_normal", dtype="float64")
    x = rng.standard_normal((2, 6, 5, 6))
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    kernel, bias = layer.get_weights()
    ref = grouped_reference(x, kernel, bias, strides, padding, (1, 1), groups)
    np.testing.assert_allclose(y, REFERENCE[activation](ref), rtol=1e-12, atol=1e-12)


def test_grouped_conv1d_forward_and_gradients(rng):
    layer = layers.Conv1D(4, 3, padding="causal", groups=2, dtype="float64")
    x = rng.standard_normal((2, 9, 6))
    y, _ = check_gradients(layer, x, rng, expect_weights=2)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 3, 4)
    xp = np.pad(x, ((0, 0), (2, 0), (0, 0)))[:, None]
    ref = grouped_reference(xp, kernel[None], bias, (1, 1), "valid", (1, 1), 2)[:, 0]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [2, 32])
def test_grouped_conv_is_bit_identical_on_1_and_2_threads(rng, threads, groups):
    layer = layers.Conv2D(64, 3, padding="same", groups=groups, activation="relu")
    x = rng.standard_normal((48, 12, 12, 32)).astype("float32")  # several chunks of the batch
    layer(x)
    results = []
    for n in (1, 2):
        threads(n)
        y, cache = layer.forward(x, training=True)
        dx = layer.backward(cache, np.ones_like(y) * 0.1)
        results.append((y, dx, [np.array(g) for g in layer.grads]))
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


def test_grouped_conv_errors_are_keras():
    with pytest.raises(ValueError, match=r"Conv2D: the number of filters must be evenly divisible by the number "
                                         r"of groups. Received: groups=4, filters=6."):
        layers.Conv2D(6, 3, groups=4)
    layer = layers.Conv2D(6, 3, groups=3)
    with pytest.raises(ValueError, match=r"the number of input channels must be evenly divisible by the number "
                                         r"of groups. Received groups=3, but the input has 4 channels \(full "
                                         r"input shape is \(None, 8, 8, 4\)\)."):
        layer.build((None, 8, 8, 4))
    with pytest.raises(ValueError, match=r"conv: 'inputs' has 5 channels .* the channels must be a multiple of that "
                                         r"number"):
        fastnn.ops.conv(np.zeros((1, 4, 4, 5)), np.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match=r"conv: 'inputs' has 0 channels"):  # not 0 groups (a division by 0)
        fastnn.ops.conv(np.zeros((1, 4, 4, 0)), np.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match=r"needs a number of filters divisible by 2"):
        fastnn.ops.conv(np.zeros((1, 4, 4, 4)), np.zeros((3, 3, 2, 3)))


def test_grouped_conv_channels_first(rng):
    last = layers.Conv2D(4, 3, groups=2, dtype="float64")
    first = layers.Conv2D(4, 3, groups=2, data_format="channels_first", dtype="float64")
    x = rng.standard_normal((2, 6, 5, 4))
    y = last(x)
    first.ensure_built((2, 4, 6, 5))
    first.set_weights(last.get_weights())
    np.testing.assert_allclose(first(np.moveaxis(x, -1, 1)), np.moveaxis(y, -1, 1), rtol=1e-13, atol=1e-13)
