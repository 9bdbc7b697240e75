"""fastnn.wrappers (scikit-learn estimators) and the tuning examples (GridSearchCV, Optuna)."""

import pathlib
import pickle
import runpy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import wrappers
from fastnn.datasets import digits

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def sk():
    return pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digit_rows():
    """The digits as rows of 64 floats in [0, 1]: (x_train, y_train), (x_test, y_test)."""
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    return ((x_train.reshape(len(x_train), -1) / 16, y_train),
            (x_test.reshape(len(x_test), -1) / 16, y_test))


# Model-building functions live at module level: estimators are cloned and pickled.
def build_classifier(X, y, width=16, learning_rate=1e-2, loss="sparse_categorical_crossentropy"):
    model = fastnn.Sequential([
        fastnn.Input(shape=X.shape[1:]),
        fastnn.layers.Dense(width, activation="relu"),
        fastnn.layers.Dense(y.shape[1], activation="softmax"),
    ])
    model.compile(optimizer=fastnn.optimizers.Adam(learning_rate), loss=loss)
    return model


def build_regressor(X, y, width=0, learning_rate=1e-2):
    outputs = 1 if y.ndim == 1 else y.shape[1]
    hidden = [fastnn.layers.Dense(width, activation="relu")] if width else []
    model = fastnn.Sequential([fastnn.Input(shape=X.shape[1:]), *hidden, fastnn.layers.Dense(outputs)])
    model.compile(optimizer=fastnn.optimizers.Adam(learning_rate), loss="mse")
    return model


def build_without_data(width=8):
    model = fastnn.Sequential([fastnn.Input(shape=(64,)), fastnn.layers.Dense(width, activation="relu"),
                               fastnn.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


# ---- optional dependency ----------------------------------------------------------------------------
def test_importing_fastnn_and_the_wrappers_module_imports_no_optional_dependency():
    out = _run("""
        import sys
        import fastnn, fastnn.wrappers, fastnn.utils.plotting
        from fastnn import wrappers
        assert "SKLearnClassifier" in dir(wrappers)
        print(sorted(m for m in ("sklearn", "optuna", "matplotlib", "scipy") if m in sys.modules))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_sklearn_is_a_clear_import_error_naming_the_extra():
    out = _run("""
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        import fastnn.wrappers
        try:
            from fastnn.wrappers import SKLearnClassifier
        except ImportError as exc:
            print(exc)
        else:
            print("no error")
    """)
    assert out.returncode == 0, out.stderr
    assert 'pip install "fastnn[tune]"' in out.stdout


def test_unknown_attribute_of_the_wrappers_module():
    with pytest.raises(AttributeError, match="SKLearnTransformer"):
        wrappers.SKLearnTransformer


# ---- parameters and cloning -------------------------------------------------------------------------
def test_get_params_set_params_and_clone(sk):
    from sklearn.base import clone

    kwargs = {"width": 8}
    est = wrappers.SKLearnClassifier(build_classifier, model_kwargs=kwargs, fit_kwargs={"epochs": 2})
    assert est.get_params(deep=False) == {"model": build_classifier, "warm_start": False, "model_kwargs": kwargs,
                                          "fit_kwargs": {"epochs": 2}, "random_state": None}
    deep = est.get_params()
    assert deep["model_kwargs__width"] == 8 and deep["fit_kwargs__epochs"] == 2

    assert est.set_params(model_kwargs__width=32, model_kwargs__learning_rate=0.1, fit_kwargs__epochs=3) is est
    assert est.model_kwargs == {"width": 32, "learning_rate": 0.1}
    assert kwargs == {"width": 8}  # a new dict: the caller's one is untouched
    assert est.fit_kwargs == {"epochs": 3}
    est.set_params(warm_start=True, random_state=7)
    assert est.warm_start is True and est.random_state == 7
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(no_such_param=1)

    twin = clone(est)
    assert type(twin) is type(est)
    assert twin.get_params() == est.get_params()
    assert twin.model is build_classifier
    assert twin.model_kwargs is not est.model_kwargs  # deep-copied, as scikit-learn does

    est2 = wrappers.SKLearnRegressor(build_regressor)
    assert clone(est2).get_params(deep=False) == est2.get_params(deep=False)
    assert "SKLearnRegressor(model=<function build_regressor" in repr(est2)


def test_clone_of_a_fitted_estimator_is_unfitted(sk, digit_rows):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    (x, y), _ = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 1}, random_state=0).fit(x, y)
    twin = clone(est)
    assert not hasattr(twin, "model_") and not hasattr(twin, "classes_")
    with pytest.raises(NotFittedError):
        twin.predict(x)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_sklearn_estimator_checks(sk, kind):
    from sklearn.utils.estimator_checks import check_estimator

    if kind == "classifier":
        est = wrappers.SKLearnClassifier(build_classifier, model_kwargs={"width": 8}, fit_kwargs={"epochs": 2},
                                         random_state=0)
    else:
        est = wrappers.SKLearnRegressor(build_regressor, model_kwargs={"width": 8}, fit_kwargs={"epochs": 2},
                                        random_state=0)
    # Mini-batch training on weighted samples is not training on repeated samples.
    expected = {"check_sample_weight_equivalence_on_dense_data": "mini-batch gradient descent"}
    results = check_estimator(est, expected_failed_checks=expected, on_fail=None, on_skip=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 40


# ---- model instances ------------------------------------------------------------------------------------
def test_a_model_instance_is_copied_not_trained(sk, digit_rows):
    from sklearn.base import clone

    (x, y), (xt, yt) = digit_rows
    fastnn.utils.set_random_seed(0)
    model = build_classifier(x, np.zeros((1, 10)), width=32)
    before = model.get_weights()
    est = wrappers.SKLearnClassifier(model, fit_kwargs={"epochs": 5})
    est.fit(x, y)
    assert est.model_ is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert est.score(xt, yt) > 0.85

    twin = clone(est)  # the model is copied with its weights, and the copy trains
    assert twin.model is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, twin.model.get_weights()))
    assert twin.fit(x, y).score(xt, yt) > 0.85
    with pytest.raises(ValueError, match="model_kwargs"):
        wrappers.SKLearnClassifier(model, model_kwargs={"width": 3}).fit(x, y)


def test_builders_receive_x_and_y_only_when_they_take_them(sk, digit_rows):
    (x, y), (xt, yt) = digit_rows
    est = wrappers.SKLearnClassifier(build_without_data, model_kwargs={"width": 16}, fit_kwargs={"epochs": 10},
                                     random_state=0)
    assert est.fit(x, y).score(xt, yt) > 0.8
    seen = {}

    def build_any(**kwargs):
        seen.update(kwargs)
        return build_classifier(**kwargs)

    wrappers.SKLearnClassifier(build_any, model_kwargs={"width": 4}, fit_kwargs={"epochs": 1}).fit(x[:50], y[:50])
    assert seen["X"].shape == (50, 64) and seen["y"].shape == (50, len(np.unique(y[:50])))
    assert seen["width"] == 4


# ---- model selection on the digits ---------------------------------------------------------------------
def test_grid_search_over_learning_rate_and_width(sk, digit_rows):
    from sklearn.model_selection import GridSearchCV

    (x, y), (xt, yt) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 10}, random_state=0)
    search = GridSearchCV(est, {"model_kwargs__learning_rate": [1e-3, 1e-2], "model_kwargs__width": [16, 32]},
                          cv=3)
    search.fit(x, y)
    assert set(search.best_params_) == {"model_kwargs__learning_rate", "model_kwargs__width"}
    assert search.best_score_ > 0.9
    assert search.score(xt, yt) > 0.9
    assert search.best_estimator_.model_kwargs == {"learning_rate": search.best_params_["model_kwargs__learning_rate"],
                                                   "width": search.best_params_["model_kwargs__width"]}
    assert est.model_kwargs is None  # the base estimator is not modified
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all(np.isfinite(scores))


def test_grid_search_is_reproducible_with_random_state(sk, digit_rows):
    from sklearn.model_selection import GridSearchCV

    (x, y), _ = digit_rows
    runs = []
    for _ in range(2):
        est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2}, random_state=3)
        search = GridSearchCV(est, {"model_kwargs__width": [8, 16]}, cv=2).fit(x[:600], y[:600])
        runs.append(search.cv_results_["split0_test_score"])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_cross_val_score(sk, digit_rows):
    from sklearn.model_selection import cross_val_score

    (x, y), _ = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, model_kwargs={"width": 32}, fit_kwargs={"epochs": 8},
                                     random_state=0)
    scores = cross_val_score(est, x, y, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.9


def test_randomized_search(sk, digit_rows):
    from scipy.stats import loguniform
    from sklearn.model_selection import RandomizedSearchCV

    (x, y), _ = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 8}, random_state=0)
    search = RandomizedSearchCV(est, {"model_kwargs__learning_rate": loguniform(3e-3, 3e-2),
                                      "model_kwargs__width": [16, 32, 64]},
                                n_iter=3, cv=2, random_state=0)
    search.fit(x, y)
    assert len(search.cv_results_["params"]) == 3
    assert 3e-3 <= search.best_params_["model_kwargs__learning_rate"] <= 3e-2
    assert search.best_score_ > 0.85


def test_pipeline_with_nested_parameters(sk, digit_rows):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (xt, yt) = digit_rows
    pipe = Pipeline([("scale", StandardScaler()),
                     ("net", wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 5}, random_state=0))])
    search = GridSearchCV(pipe, {"net__model_kwargs__width": [8, 32]}, cv=2).fit(x, y)
    assert search.best_params_["net__model_kwargs__width"] in (8, 32)
    assert search.score(xt, yt) > 0.85


# ---- the classifier ------------------------------------------------------------------------------------------
NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


def test_string_labels_come_back_as_labels(sk, digit_rows):
    (x, y), (xt, yt) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, model_kwargs={"width": 32}, fit_kwargs={"epochs": 8},
                                     random_state=0)
    est.fit(x, NAMES[y])
    assert list(est.classes_) == sorted(NAMES)
    predicted = est.predict(xt)
    assert predicted.shape == (len(xt),) and set(predicted) <= set(NAMES)
    assert np.mean(predicted == NAMES[yt]) > 0.9
    assert est.score(xt, NAMES[yt]) == pytest.approx(np.mean(predicted == NAMES[yt]))
    proba = est.predict_proba(xt)
    assert proba.shape == (len(xt), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], predicted)
    assert est.n_features_in_ == 64
    assert len(est.history_["loss"]) == 8


def test_validation_data_and_class_weight_use_the_original_labels(sk, digit_rows):
    (x, y), (xt, yt) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2}, random_state=0)
    est.fit(x, NAMES[y], validation_data=(xt, NAMES[yt]), class_weight={name: 1.0 for name in NAMES})
    assert len(est.history_["val_loss"]) == 2
    est.fit(x, NAMES[y], class_weight="balanced")
    with pytest.raises(ValueError, match="not in classes_"):
        est.fit(x, NAMES[y], class_weight={"eleven": 2.0})


@pytest.mark.parametrize("loss", ["binary_crossentropy", "logits"])
def test_binary_problem_with_one_output_unit(sk, loss):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2))
    y = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")

    def build(X, y):
        if loss == "logits":
            last, loss_fn = fastnn.layers.Dense(1), fastnn.losses.BinaryCrossentropy(from_logits=True)
        else:
            last, loss_fn = fastnn.layers.Dense(1, activation="sigmoid"), "binary_crossentropy"
        model = fastnn.Sequential([fastnn.Input(shape=(2,)), last])
        model.compile(optimizer=fastnn.optimizers.Adam(0.05), loss=loss_fn)
        return model

    est = wrappers.SKLearnClassifier(build, fit_kwargs={"epochs": 20}, random_state=0).fit(x, y)
    proba = est.predict_proba(x)
    assert proba.shape == (400, 2)
    assert proba.min() >= 0 and proba.max() <= 1
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    assert est.score(x, y) > 0.95


def test_categorical_and_from_logits_losses(sk, digit_rows):
    (x, y), (xt, yt) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, model_kwargs={"loss": "categorical_crossentropy"},
                                     fit_kwargs={"epochs": 5}, random_state=0)
    assert est.fit(x, y).score(xt, yt) > 0.9

    def build_logits(X, y):
        model = fastnn.Sequential([fastnn.Input(shape=(64,)), fastnn.layers.Dense(32, activation="relu"),
                                   fastnn.layers.Dense(10)])
        model.compile(optimizer=fastnn.optimizers.Adam(1e-2),
                      loss=fastnn.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    est = wrappers.SKLearnClassifier(build_logits, fit_kwargs={"epochs": 5}, random_state=0).fit(x, y)
    proba = est.predict_proba(xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    assert est.score(xt, yt) > 0.9


def test_classifier_errors(sk, digit_rows):
    from sklearn.exceptions import NotFittedError

    (x, y), _ = digit_rows
    with pytest.raises(NotFittedError):
        wrappers.SKLearnClassifier(build_classifier).predict(x)
    with pytest.raises(ValueError, match="one class"):
        wrappers.SKLearnClassifier(build_classifier).fit(x[:5], np.zeros(5))
    with pytest.raises(ValueError, match="Unknown label type"):
        wrappers.SKLearnClassifier(build_classifier).fit(x[:20], np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="3 output units but y has 10 classes"):
        wrappers.SKLearnClassifier(lambda X, y: build_regressor(X, np.zeros((1, 3)))).fit(x, y)
    with pytest.raises(TypeError, match="must return a fastnn Model"):
        wrappers.SKLearnClassifier(lambda: "not a model").fit(x, y)
    with pytest.raises(TypeError, match="'model' must be"):
        wrappers.SKLearnClassifier("adam").fit(x, y)

    def uncompiled(X, y):
        return fastnn.Sequential([fastnn.Input(shape=(64,)), fastnn.layers.Dense(10, activation="softmax")])

    with pytest.raises(ValueError, match="must be compiled"):
        wrappers.SKLearnClassifier(uncompiled).fit(x, y)
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 1}).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(x[:, :10])


# ---- the regressor ------------------------------------------------------------------------------------------
def test_regressor_fits_a_linear_problem(sk):
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(1)
    x = rng.standard_normal((800, 5))
    y = x @ np.array([1.5, -2.0, 0.5, 0.0, 3.0]) + 0.7 + 0.1 * rng.standard_normal(800)
    est = wrappers.SKLearnRegressor(build_regressor, model_kwargs={"learning_rate": 0.05},
                                    fit_kwargs={"epochs": 30}, random_state=0)
    est.fit(x[:600], y[:600])
    predicted = est.predict(x[600:])
    assert predicted.shape == (200,)
    assert est.score(x[600:], y[600:]) > 0.95
    assert est.score(x[600:], y[600:]) == pytest.approx(r2_score(y[600:], predicted))


def test_regressor_with_several_outputs(sk):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 3))
    y = np.stack([x[:, 0] - x[:, 1], 2 * x[:, 2] + 1], axis=1)
    est = wrappers.SKLearnRegressor(build_regressor, model_kwargs={"learning_rate": 0.05},
                                    fit_kwargs={"epochs": 30}, random_state=0).fit(x, y)
    assert est.predict(x).shape == (500, 2)
    assert est.score(x, y) > 0.95
    with pytest.raises(ValueError, match="1 output units but y has 2 targets"):
        wrappers.SKLearnRegressor(lambda X, y: build_regressor(X, y[:, 0])).fit(x, y)


# ---- reproducibility, warm start, pickling ------------------------------------------------------------------
def test_random_state_makes_fits_reproducible_and_restores_the_global_state(sk, digit_rows):
    (x, y), (xt, _) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2}, random_state=11)
    fastnn.utils.set_random_seed(5)
    expected = (fastnn.utils.rng.global_generator().random(), np.random.random())
    fastnn.utils.set_random_seed(5)
    first = est.fit(x, y).predict_proba(xt)
    assert (fastnn.utils.rng.global_generator().random(), np.random.random()) == expected
    second = est.fit(x, y).predict_proba(xt)
    np.testing.assert_array_equal(first, second)
    other = est.set_params(random_state=12).fit(x, y).predict_proba(xt)
    assert not np.array_equal(first, other)


def test_without_random_state_the_global_seed_makes_fits_reproducible(sk, digit_rows):
    (x, y), (xt, _) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2})
    runs = []
    for _ in range(2):
        fastnn.utils.set_random_seed(21)
        runs.append(est.fit(x, y).predict_proba(xt))
    np.testing.assert_array_equal(*runs)


def test_warm_start_continues_training(sk, digit_rows):
    (x, y), _ = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2}, random_state=0)
    est.fit(x, y)
    model, loss = est.model_, est.history_["loss"][-1]
    est.fit(x, y)
    assert est.model_ is not model  # without warm_start: a new model
    est.set_params(warm_start=True)
    model, loss = est.model_, est.history_["loss"][-1]
    est.fit(x, y)
    assert est.model_ is model
    assert est.history_["loss"][0] < loss
    with pytest.raises(ValueError, match="not in classes_"):
        est.fit(x, np.where(y == 0, 99, y))


def test_pickled_estimator_predicts_the_same_and_still_trains(sk, digit_rows):
    (x, y), (xt, _) = digit_rows
    est = wrappers.SKLearnClassifier(build_classifier, fit_kwargs={"epochs": 2}, random_state=0).fit(x, y)
    copy = pickle.loads(pickle.dumps(est))
    assert type(copy) is wrappers.SKLearnClassifier
    np.testing.assert_array_equal(copy.predict_proba(xt), est.predict_proba(xt))
    # the copy's weights are views of its flat buffer again: training changes its predictions
    before = copy.model_.get_weights()
    copy.set_params(warm_start=True).fit(x, y)
    assert not np.array_equal(before[0], copy.model_.get_weights()[0])
    np.testing.assert_array_equal(est.model_.get_weights()[0], pickle.loads(pickle.dumps(est)).model_.get_weights()[0])


# ---- the examples ----------------------------------------------------------------------------------------
def test_grid_search_example(sk):
    example = runpy.run_path(str(ROOT / "examples" / "grid_search.py"))
    result = example["main"](learning_rates=(1e-2,), widths=(16, 32), epochs=8, cv=2, verbose=False)
    assert set(result["best_params"]) == {"learning_rate", "width"}
    assert result["best_params"]["width"] in (16, 32)
    assert result["best_score"] > 0.9
    assert result["test_accuracy"] > 0.9


def test_optuna_example():
    pytest.importorskip("optuna")
    example = runpy.run_path(str(ROOT / "examples" / "tune_with_optuna.py"))
    result = example["main"](n_trials=3, epochs=5, seed=0, verbose=False)
    params = result["best_params"]
    assert set(params) == {"learning_rate", "width"}
    assert 1e-4 <= params["learning_rate"] <= 3e-2 and 8 <= params["width"] <= 128
    assert 0.8 < result["test_accuracy"] <= 1.0
    assert 0.8 < result["best_score"] <= 1.0
    assert example["main"](n_trials=3, epochs=5, seed=0, verbose=False) == result  # seeded: reproducible
