"""Regularizers: penalties in the loss and exactly their derivatives in the gradients."""

import numpy as np
import pytest

import fastnn
from fastnn import layers, regularizers


@pytest.mark.parametrize("reg,l1,l2", [(regularizers.L2(0.01), 0, 0.01), (regularizers.L1(0.02), 0.02, 0),
                                       (regularizers.L1L2(l1=0.01, l2=0.03), 0.01, 0.03),
                                       (regularizers.get("l2"), 0, 0.01), (regularizers.get("l1_l2"), 0.01, 0.01)])
def test_penalty_and_gradient_formulas(rng, reg, l1, l2):
    w = rng.standard_normal((5, 4))
    assert reg(w) == pytest.approx(l1 * np.abs(w).sum() + l2 * np.square(w).sum())
    np.testing.assert_allclose(reg.gradient(w), l1 * np.sign(w) + 2 * l2 * w)


def _one_step_grads(regularizer, bias_regularizer=None):
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([layers.Dense(3, input_shape=(4,), kernel_regularizer=regularizer,
                                            bias_regularizer=bias_regularizer),
                               layers.Dense(2, kernel_regularizer=regularizer)])
    model.compile(fastnn.optimizers.SGD(0.0), "mse")  # lr 0: the step changes nothing but the gradients
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model, [g.copy() for layer in model.layers for g in layer.grads], history.history["loss"][0], x, y


def test_l2_changes_gradients_by_exactly_2_lambda_w():
    lam = 0.05
    plain, g0, loss0, x, y = _one_step_grads(None)
    reg, g1, loss1, _, _ = _one_step_grads(regularizers.L2(lam), regularizers.L2(lam))
    weights = reg.get_weights()
    for a, b, w in zip(g0, g1, weights):
        np.testing.assert_allclose(b - a, 2 * lam * w, rtol=1e-5, atol=1e-7)
    assert loss1 - loss0 == pytest.approx(lam * sum(np.square(w.astype(np.float64)).sum() for w in weights), rel=1e-5)


def test_l1_adds_lambda_sign_w_and_unregularized_weights_are_untouched():
    lam = 0.03
    _, g0, _, _, _ = _one_step_grads(None)
    model, g1, _, _, _ = _one_step_grads(regularizers.L1(lam))  # kernels only, biases not
    kernel0, bias0, kernel1, bias1 = model.get_weights()
    np.testing.assert_allclose(g1[0] - g0[0], lam * np.sign(kernel0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(g1[1], g0[1])  # the gap between regularised kernels
    np.testing.assert_allclose(g1[2] - g0[2], lam * np.sign(kernel1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(g1[3], g0[3])


def test_custom_regularizer_runs_in_python():
    class Quartic(regularizers.Regularizer):
        def penalty(self, w):
            return 0.1 * float(np.sum(w.astype(np.float64) ** 4))

        def gradient(self, w):
            return 0.4 * w ** 3

    _, g0, _, _, _ = _one_step_grads(None)
    model, g1, _, _, _ = _one_step_grads(Quartic())
    np.testing.assert_allclose(g1[0] - g0[0], 0.4 * model.get_weights()[0] ** 3, rtol=1e-5, atol=1e-7)


def test_fused_kernel_matches_python_and_rejects_bad_segments(rng):
    w = rng.standard_normal(1000).astype(np.float64)
    g = np.zeros_like(w)
    total = fastnn._core.regularize(w, g, np.array([0, 300, 700, 1000]), np.array([0.1, 0.0, 0.0]),
                                    np.array([0.2, 0.0, 0.5]))
    expected = 0.1 * np.abs(w[:300]).sum() + 0.2 * np.square(w[:300]).sum() + 0.5 * np.square(w[700:]).sum()
    assert total == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(g[:300], 0.1 * np.sign(w[:300]) + 0.4 * w[:300])
    np.testing.assert_array_equal(g[300:700], 0)
    np.testing.assert_allclose(g[700:], 1.0 * w[700:])
    with pytest.raises(ValueError, match="offsets"):
        fastnn._core.regularize(w, g, np.array([0, 2000]), np.array([0.1]), np.array([0.1]))
    with pytest.raises(TypeError, match="'w' is float64 but 'g' is float32"):
        fastnn._core.regularize(w, g.astype(np.float32), np.array([0, 10]), np.array([0.1]), np.array([0.1]))


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_bad_factors_are_refused(bad):
    with pytest.raises(ValueError, match="'l2' must be a finite float >= 0"):
        regularizers.L2(bad)


def test_activity_regularizer_adds_its_penalty_and_gradient():
    """L1 on a layer's output: the reported loss grows by l1·Σ|output| and the
    gradient equals finite differences of (mse + penalty) in float64."""
    fastnn.config.set_floatx("float64")
    try:
        fastnn.utils.set_random_seed(0)
        model = fastnn.Sequential([layers.Dense(3, activation="tanh", input_shape=(4,),
                                                activity_regularizer=regularizers.L1(0.05)),
                                   layers.Dense(2)])
    finally:
        fastnn.config.set_floatx("float32")
    model.compile(fastnn.optimizers.SGD(0.0), "mse")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    hidden = np.tanh(x @ model.get_weights()[0] + model.get_weights()[1])
    mse = model.loss(y, model.predict(x))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse + 0.05 * np.abs(hidden).sum(), rel=1e-10)
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    analytic = [g.copy() for g in model.layers[0].grads]

    def objective():
        out, tape = model.forward(x, training=False, penalties=True)
        return model.loss(y, out) + tape.penalty

    for var, grad in zip(model.layers[0].weights, analytic):
        numeric = np.zeros_like(var.value)
        for i in np.ndindex(var.shape):
            old = var.value[i]
            var.value[i] = old + 1e-6
            up = objective()
            var.value[i] = old - 1e-6
            down = objective()
            var.value[i] = old
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
