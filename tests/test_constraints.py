"""fastnn.constraints against Keras 3's formulas (keras/src/constraints/constraints.py) and their
use by layers: applied to the weight after each optimizer step, in the model's flat buffer."""

import numpy as np
import pytest

import fastnn
from fastnn import constraints, layers

EPS = 1e-7  # Keras' backend.epsilon()


# ---- Keras' formulas, one weight vector at a time (an independent route from the vectorised code) ----
def _per_unit(w, axis, fn):
    """Applies fn to each slice of w that sums over `axis` (the weights incident to one unit)."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    axes = [a % w.ndim for a in axes]
    kept = [a for a in range(w.ndim) if a not in axes]
    moved = np.moveaxis(w, kept, list(range(len(kept))))
    out = np.empty_like(moved)
    for index in np.ndindex(moved.shape[:len(kept)]):
        out[index] = fn(moved[index])
    return np.moveaxis(out, list(range(len(kept))), kept)


def ref_max_norm(w, max_value, axis):
    def unit(v):
        n = np.sqrt(np.sum(v * v))
        return v * (min(max(n, 0), max_value) / (EPS + n))
    return _per_unit(w, axis, unit)


def ref_unit_norm(w, axis):
    return _per_unit(w, axis, lambda v: v / (EPS + np.sqrt(np.sum(v * v))))


def ref_min_max_norm(w, min_value, max_value, rate, axis):
    def unit(v):
        n = np.sqrt(np.sum(v * v))
        desired = rate * min(max(n, min_value), max_value) + (1 - rate) * n
        return v * (desired / (EPS + n))
    return _per_unit(w, axis, unit)


@pytest.mark.parametrize("shape,axis", [((5, 4), 0), ((5, 4), 1), ((3, 3, 2, 4), [0, 1, 2]), ((6,), 0)])
def test_constraints_match_keras_formulas(shape, axis, rng):
    w = rng.normal(0, 1.5, shape)
    w.reshape(-1)[0] = 0.0
    np.testing.assert_allclose(constraints.MaxNorm(1.3, axis)(w), ref_max_norm(w, 1.3, axis), rtol=1e-12)
    np.testing.assert_allclose(constraints.UnitNorm(axis)(w), ref_unit_norm(w, axis), rtol=1e-12)
    for rate in (1.0, 0.3):
        np.testing.assert_allclose(constraints.MinMaxNorm(0.8, 1.6, rate, axis)(w),
                                   ref_min_max_norm(w, 0.8, 1.6, rate, axis), rtol=1e-12)
    np.testing.assert_array_equal(constraints.NonNeg()(w), np.where(w < 0, 0, w))
    np.testing.assert_array_equal(constraints.Constraint()(w), w)


def test_keras_defaults_and_aliases():
    assert constraints.MaxNorm().get_config() == {"max_value": 2, "axis": 0}
    assert constraints.UnitNorm().get_config() == {"axis": 0}
    assert constraints.MinMaxNorm().get_config() == {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}
    assert constraints.NonNeg().get_config() == {} and constraints.Constraint().get_config() == {}
    assert constraints.max_norm is constraints.MaxNorm and constraints.non_neg is constraints.NonNeg
    assert constraints.unit_norm is constraints.UnitNorm and constraints.min_max_norm is constraints.MinMaxNorm
    for name, cls in [("max_norm", constraints.MaxNorm), ("MaxNorm", constraints.MaxNorm),
                      ("non_neg", constraints.NonNeg), ("NonNeg", constraints.NonNeg),
                      ("unit_norm", constraints.UnitNorm), ("min_max_norm", constraints.MinMaxNorm),
                      ("MinMaxNorm", constraints.MinMaxNorm)]:
        assert type(constraints.get(name)) is cls
    assert type(constraints.get(constraints.UnitNorm)) is constraints.UnitNorm  # a class: instantiated
    assert constraints.get(None) is None


@pytest.mark.parametrize("constraint", [constraints.MaxNorm(3, axis=[0, 1]), constraints.NonNeg(),
                                        constraints.UnitNorm(axis=1), constraints.MinMaxNorm(0.5, 2.0, 0.7, 0)])
def test_serialize_deserialize_round_trip(constraint, rng):
    description = constraints.serialize(constraint)
    assert description["class_name"] == type(constraint).__name__
    again = constraints.deserialize(description)
    assert type(again) is type(constraint) and again.get_config() == constraint.get_config()
    assert constraints.get(description).get_config() == constraint.get_config()
    w = rng.normal(0, 2, (4, 3))
    np.testing.assert_array_equal(again(w), constraint(w))
    assert constraints.serialize(None) is None


@pytest.mark.parametrize("call,error,match", [
    (lambda: constraints.get("nope"), ValueError, "Unknown constraint 'nope'; expected one of"),
    (lambda: constraints.get(3), TypeError, "constraint must be None, a name, a dict, a Constraint or a callable"),
    (lambda: constraints.get(dict), TypeError, "Constraint class or instance"),
    (lambda: constraints.MaxNorm("2"), TypeError, "MaxNorm: 'max_value' must be a finite number, got '2'"),
    (lambda: constraints.MaxNorm(-1), ValueError, "MaxNorm: 'max_value' must be >= 0, got -1"),
    (lambda: constraints.UnitNorm(axis=1.5), TypeError, "UnitNorm: 'axis' must be an int or a list of ints"),
    (lambda: constraints.MinMaxNorm(2, 1), ValueError, "'max_value' must be >= 'min_value'"),
    (lambda: constraints.deserialize(3), TypeError, "'config' must be a dict"),
    (lambda: layers.Dense(2, kernel_constraint="nope"), ValueError, "Dense: 'kernel_constraint': Unknown constraint"),
    (lambda: layers.Conv2D(2, 3, bias_constraint=1.5), TypeError, "Conv2D: 'bias_constraint' must be None, a name"),
])
def test_bad_arguments_name_what_was_expected(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- in layers and training --------------------------------------------------------------------------
def _regression(rng, n=128, features=8):
    x = rng.normal(0, 1, (n, features)).astype(np.float32)
    y = (x @ rng.normal(0, 3, (features, 1))).astype(np.float32)
    return x, y


def test_dense_max_norm_after_fit_keeps_column_norms_at_most_one(rng):
    x, y = _regression(rng)

    def fitted(constraint):
        fastnn.utils.set_random_seed(0)
        model = fastnn.Sequential([layers.Input((8,)), layers.Dense(6, kernel_constraint=constraint),
                                   layers.Dense(1)])
        model.compile(fastnn.optimizers.SGD(0.05), "mse")
        model.fit(x, y, epochs=5, batch_size=16, verbose=0, shuffle=False)
        return np.linalg.norm(model.layers[0].get_weights()[0], axis=0)

    assert np.all(fitted(constraints.MaxNorm(1.0)) <= 1.0 + 1e-6)
    assert np.any(fitted(None) > 1.2)  # without it, training grows the columns past the bound


def test_each_step_is_the_update_then_the_constraint(rng):
    """Keras' order: variable.assign(constraint(variable)) right after the optimizer's update."""
    x, y = _regression(rng, n=16)

    def model(kernel_constraint):
        fastnn.utils.set_random_seed(3)
        m = fastnn.Sequential([layers.Input((8,)), layers.Dense(4, kernel_constraint=kernel_constraint),
                               layers.Dense(1)])
        m.compile(fastnn.optimizers.SGD(0.1), "mse")
        return m

    free, constrained = model(None), model(constraints.MaxNorm(0.8))
    constrained.set_weights(free.get_weights())
    start = [w.copy() for w in free.get_weights()]
    free.train_on_batch(x, y)
    constrained.train_on_batch(x, y)
    expected = free.get_weights()
    expected[0] = ref_max_norm(expected[0].astype(np.float64), 0.8, 0)
    for got, want in zip(constrained.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert not np.allclose(start[0], expected[0])


def test_non_neg_keeps_weights_non_negative_through_training(rng):
    x = rng.normal(0, 1, (64, 6, 6, 2)).astype(np.float32)
    y = rng.normal(0, 1, (64, 1)).astype(np.float32) - 2  # pulls the weights negative
    fastnn.utils.set_random_seed(1)
    model = fastnn.Sequential([
        layers.Input((6, 6, 2)),
        layers.Conv2D(3, 3, kernel_constraint="non_neg", bias_constraint=constraints.NonNeg()),
        layers.BatchNormalization(gamma_constraint="non_neg", beta_constraint="non_neg"),
        layers.PReLU(alpha_constraint="non_neg", alpha_initializer="ones"),
        layers.Flatten(),
        layers.Dense(1, kernel_constraint="non_neg"),
    ])
    model.compile(fastnn.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    constrained = [w for w in model.trainable_weights if w.constraint is not None]
    assert len(constrained) == 6  # conv kernel and bias, gamma, beta, alpha, dense kernel
    for w in constrained:
        assert np.all(w.numpy() >= 0), w.name
    assert np.any(model.layers[4].get_weights()[1] < 0)  # the unconstrained bias went negative


def test_embedding_recurrent_and_layer_norm_constraints_apply(rng):
    tokens = rng.integers(0, 20, (32, 5))
    y = rng.normal(0, 1, (32, 1)).astype(np.float32)
    fastnn.utils.set_random_seed(2)
    model = fastnn.Sequential([
        layers.Input((5,), dtype="int64"),
        layers.Embedding(20, 4, embeddings_constraint=constraints.UnitNorm(axis=1)),
        layers.LSTM(3, return_sequences=True, kernel_constraint=constraints.MaxNorm(0.5),
                    recurrent_constraint=constraints.MaxNorm(0.5), bias_constraint="non_neg"),
        layers.LayerNormalization(gamma_constraint=constraints.MinMaxNorm(0.5, 0.5, axis=0)),
        layers.Flatten(),
        layers.Dense(1),
    ])
    model.compile(fastnn.optimizers.Adam(0.05), "mse")
    model.fit(tokens, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(model.layers[0].get_weights()[0], axis=1), 1.0, rtol=1e-5)
    kernel, recurrent, bias = model.layers[1].get_weights()
    assert np.all(np.linalg.norm(kernel, axis=0) <= 0.5 + 1e-6)
    assert np.all(np.linalg.norm(recurrent, axis=0) <= 0.5 + 1e-6)
    assert np.all(bias >= 0)
    np.testing.assert_allclose(np.linalg.norm(model.layers[2].get_weights()[0]), 0.5, rtol=1e-5)


def test_a_custom_constraint_and_a_plain_function(rng):
    class Clip(constraints.Constraint):
        def __init__(self, bound=0.1):
            self.bound = bound

        def __call__(self, w):
            return np.clip(w, -self.bound, self.bound)

        def get_config(self):
            return {"bound": self.bound}

    x, y = _regression(rng, n=32)
    model = fastnn.Sequential([layers.Input((8,)), layers.Dense(4, kernel_constraint=Clip(0.05),
                                                                bias_constraint=lambda b: b * 0), layers.Dense(1)])
    model.compile(fastnn.optimizers.SGD(0.1), "mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    kernel, bias = model.layers[0].get_weights()
    assert np.abs(kernel).max() <= 0.05 + 1e-7 and np.abs(kernel).max() > 0.04
    np.testing.assert_array_equal(bias, 0)


def test_a_constraint_that_changes_the_shape_is_refused(rng):
    x, y = _regression(rng, n=8)
    model = fastnn.Sequential([layers.Input((8,)), layers.Dense(2, kernel_constraint=lambda w: w[:1])])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"returned shape \(1, 2\), expected the weight's \(8, 2\)"):
        model.train_on_batch(x, np.zeros((8, 2), np.float32))


def test_no_constraint_no_work(rng):
    x, y = _regression(rng, n=8)
    model = fastnn.Sequential([layers.Input((8,)), layers.Dense(2), layers.Dense(1)])
    model.compile("sgd", "mse")
    model.train_on_batch(x, y)
    assert model.optimizer._constrained == []  # nothing is visited after the fused update


LAYERS_WITH_CONSTRAINTS = [
    (lambda: layers.Dense(3, kernel_constraint=constraints.MaxNorm(1.5), bias_constraint="non_neg"), (4,)),
    (lambda: layers.Conv1D(2, 3, kernel_constraint=constraints.UnitNorm([0, 1])), (6, 2)),
    (lambda: layers.Conv2D(2, 3, kernel_constraint=constraints.MinMaxNorm(0.1, 0.9, 0.5, [0, 1, 2])), (5, 5, 1)),
    (lambda: layers.Embedding(10, 3, embeddings_constraint="unit_norm"), None),
    (lambda: layers.PReLU(alpha_constraint="non_neg"), (4,)),
    (lambda: layers.BatchNormalization(gamma_constraint="non_neg", beta_constraint=constraints.MaxNorm(1)), (4,)),
    (lambda: layers.LayerNormalization(gamma_constraint="non_neg", beta_constraint="non_neg"), (4,)),
    (lambda: layers.GRU(2, kernel_constraint="max_norm", recurrent_constraint="unit_norm",
                        bias_constraint="non_neg"), (3, 2)),
    (lambda: layers.SimpleRNN(2, recurrent_constraint="non_neg"), (3, 2)),
    (lambda: layers.EinsumDense("ab,bc->ac", 3, bias_axes="c", kernel_constraint="non_neg",
                                bias_constraint="non_neg"), (4,)),
    (lambda: layers.MultiHeadAttention(2, 2, kernel_constraint="non_neg", bias_constraint="non_neg"), None),
]
CONSTRAINT_ARGS = ("kernel_constraint", "bias_constraint", "recurrent_constraint", "embeddings_constraint",
                   "alpha_constraint", "gamma_constraint", "beta_constraint")


@pytest.mark.parametrize("make,shape", LAYERS_WITH_CONSTRAINTS)
def test_config_round_trip_and_weights_carry_the_constraint(make, shape):
    layer = make()
    config = layer.get_config()
    given = {k: v for k, v in config.items() if k in CONSTRAINT_ARGS and v is not None}
    assert given
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    again = layers.deserialize(layers.serialize(layer))
    assert again.get_config() == config
    for arg in given:
        assert type(getattr(clone, arg, None) or getattr(clone, "_" + arg)).__name__ == config[arg]["class_name"]
    if shape is not None:
        clone(np.zeros((2,) + shape, np.float32))
        assert any(w.constraint is not None for w in clone.weights)


def test_saving_and_loading_keeps_the_constraints_and_training_resumes(rng, tmp_path):
    x, y = _regression(rng)
    model = fastnn.Sequential([layers.Input((8,)), layers.Dense(6, kernel_constraint=constraints.MaxNorm(0.7),
                                                                bias_constraint="non_neg"),
                               layers.Dense(1, kernel_constraint=constraints.MinMaxNorm(0.2, 0.4, axis=0))])
    model.compile(fastnn.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "constrained.fastnn"
    model.save(path)
    loaded = fastnn.models.load_model(path)
    assert loaded.layers[0].get_config()["kernel_constraint"] == model.layers[0].get_config()["kernel_constraint"]
    assert isinstance(loaded.layers[1].kernel.constraint, constraints.MinMaxNorm)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.fit(x, y, epochs=2, batch_size=16, verbose=0)
    kernel, bias = loaded.layers[0].get_weights()
    assert np.all(np.linalg.norm(kernel, axis=0) <= 0.7 + 1e-6) and np.all(bias >= 0)
    norm = np.linalg.norm(loaded.layers[1].get_weights()[0])
    assert 0.2 - 1e-6 <= norm <= 0.4 + 1e-6
