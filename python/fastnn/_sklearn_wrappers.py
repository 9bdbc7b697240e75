"""The scikit-learn estimators behind ``fastnn.wrappers`` (this module imports scikit-learn).

``fastnn.wrappers`` imports this module the first time ``SKLearnClassifier`` or
``SKLearnRegressor`` is used, so that ``import fastnn`` never imports scikit-learn.
"""

import contextlib
import copy
import inspect
import random

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, check_random_state
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('fastnn.wrappers needs scikit-learn, an optional dependency of fastnn: '
                      'install it with pip install "fastnn[tune]" (or pip install scikit-learn)') from exc

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

from . import losses as losses_module
from .models import Model
from .utils import rng as rng_module
from .utils.rng import set_random_seed

_FLOATS = (np.float32, np.float64)  # X is converted to float32 unless it is float64 already
_NESTED = ("model_kwargs", "fit_kwargs")  # dict params settable one key at a time: model_kwargs__width


# ---- helpers ------------------------------------------------------------------------------------
def _validate_data(estimator, X, y="no_validation", reset=True, **kwargs):
    """scikit-learn's input validation (sets or checks n_features_in_ and feature_names_in_).

    As in scikit-learn, y="no_validation" validates X alone and y=None is an error.
    """
    if _sk_validate_data is not None:
        return _sk_validate_data(estimator, X, y, reset=reset, **kwargs)
    return estimator._validate_data(X, y, reset=reset, **kwargs)  # pragma: no cover - scikit-learn < 1.6


def _seed_from(random_state):
    """An int seed from random_state (None: no seeding)."""
    if random_state is None:
        return None
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def _seeded(random_state):
    """Runs the block under ``set_random_seed(seed)``, then restores the previous random state.

    Building and training a model inside the block is then reproducible, and the caller's
    random streams (fastnn's, Python's and NumPy's global ones) continue where they were.
    """
    seed = _seed_from(random_state)
    if seed is None:
        yield
        return
    saved = rng_module.global_generator(), random.getstate(), np.random.get_state()
    set_random_seed(seed)
    try:
        yield
    finally:
        rng_module._generator = saved[0]
        random.setstate(saved[1])
        np.random.set_state(saved[2])


def _copy_model(model):
    """An independent copy of a model: architecture, weights, compile settings, optimizer state."""
    return copy.deepcopy(model)  # Model re-links a copy's weights to its own flat buffer


def _call_builder(builder, X, y, kwargs):
    """Calls the user's model-building function with model_kwargs, plus X and y if it takes them."""
    kwargs = dict(kwargs)
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass model_kwargs only
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, value in (("X", X), ("y", y)):
        if name in kwargs:
            continue
        if name in params or takes_any:
            kwargs[name] = value
        elif name == "X" and "x" in params and "x" not in kwargs:
            kwargs["x"] = value
    return builder(**kwargs)


def _output_width(model, X):
    """The size of the model's last output axis (the model is built on X when it is not yet)."""
    shape = getattr(model, "output_shape", None) if model.built else None
    if shape is None:
        shape = model.predict(X[:1], verbose=0).shape
    if len(shape) != 2:
        raise ValueError(f"the model's output must have shape (batch, units), got {tuple(shape)}")
    return shape[-1]


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# ---- the shared base ------------------------------------------------------------------------------
class SKLBase(BaseEstimator):
    """Base class of the scikit-learn wrappers (see SKLearnClassifier and SKLearnRegressor)."""

    _required_parameters = ["model"]

    def __init__(self, model, warm_start=False, model_kwargs=None, fit_kwargs=None, random_state=None):
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.random_state = random_state

    # ---- parameters: nested dict keys, cloning, pickling -----------------------------------------
    def get_params(self, deep=True):
        """Parameters of this estimator (scikit-learn's get_params).

        Args:
            deep: bool, default True: also list each entry of ``model_kwargs`` and
                ``fit_kwargs`` as ``model_kwargs__<key>`` / ``fit_kwargs__<key>``.

        Returns:
            dict name -> value.
        """
        params = super().get_params(deep=deep)
        if deep:
            for name in _NESTED:
                value = getattr(self, name, None)
                if isinstance(value, dict):
                    params.update({f"{name}__{key}": item for key, item in value.items()})
        return params

    def set_params(self, **params):
        """Sets parameters (scikit-learn's set_params); returns self.

        Besides the constructor's arguments, one entry of ``model_kwargs`` or ``fit_kwargs``
        can be set alone: ``set_params(model_kwargs__width=64, fit_kwargs__epochs=20)``
        (a new dict is made: the previous one is not modified). This is how a search
        tunes them: ``GridSearchCV(est, {"model_kwargs__learning_rate": [1e-3, 1e-2]})``.
        """
        nested = {}
        for key in list(params):
            name, delim, sub_key = key.partition("__")
            if delim and name in _NESTED:
                nested.setdefault(name, {})[sub_key] = params.pop(key)
        super().set_params(**params)
        for name, updates in nested.items():
            current = getattr(self, name)
            if current is not None and not isinstance(current, dict):
                raise ValueError(f"{type(self).__name__}.set_params: '{name}' is not a dict, so "
                                 f"'{name}__...' cannot be set")
            setattr(self, name, {**(current or {}), **updates})
        return self

    # ---- tags --------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"non_deterministic": self.random_state is None, "poor_score": True}

    # ---- fit / predict ------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None, **kwargs):
        """Builds (or reuses, with warm_start) the model and trains it on (X, y).

        Args:
            X: array-like of shape (n_samples, n_features) (or (n_samples, ...) for a model
                that takes images): the inputs.
            y: array-like of shape (n_samples,) (a regressor also takes (n_samples, n_outputs)):
                the targets.
            sample_weight: array-like of shape (n_samples,), default None: per-sample loss
                weights.
            **kwargs: arguments of the model's ``fit`` (``epochs``, ``batch_size``,
                ``callbacks``, ``validation_split``...). They take precedence over
                ``fit_kwargs``. ``verbose`` defaults to 0.

        Returns:
            self.
        """
        reuse = bool(self.warm_start) and hasattr(self, "model_")
        self._check_params()
        X, y = _validate_data(self, X, y, reset=not reuse, allow_nd=True, dtype=_FLOATS, **self._y_checks)
        codes = self._encode_target(y, reset=not reuse)
        fit_kwargs = {"verbose": 0, **(self.fit_kwargs or {}), **kwargs}
        for name in ("x", "y", "X"):
            if name in fit_kwargs:
                raise TypeError(f"{type(self).__name__}.fit: '{name}' cannot be given in fit_kwargs")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.ndim == 0:  # a scalar weighs every sample alike
                sample_weight = np.full(len(X), sample_weight)
            if sample_weight.size and not np.any(sample_weight):
                raise ValueError(f"{type(self).__name__}.fit: sample_weight is all zero: there is nothing to fit")
            fit_kwargs["sample_weight"] = sample_weight  # the model's fit checks shape, finiteness and sign
        with _seeded(self.random_state):
            model = self.model_ if reuse else self._build_model(X, self._builder_target(codes))
            width = _output_width(model, X)
            self._check_outputs(width, codes)
            target = self._training_target(model, width, codes)
            fit_kwargs = self._adapt_fit_kwargs(model, width, fit_kwargs, codes)
            history = model.fit(X, target, **fit_kwargs)
        self.model_ = model
        self.history_ = {key: list(values) for key, values in history.history.items()}
        return self

    def _check_params(self):
        who = type(self).__name__
        if not isinstance(self.model, Model) and not callable(self.model):
            raise TypeError(f"{who}: 'model' must be a compiled fastnn Model or a callable returning one, "
                            f"got {type(self.model).__name__}")
        for name in _NESTED:
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{who}: '{name}' must be a dict or None, got {type(value).__name__}")
        if isinstance(self.model, Model) and self.model_kwargs:
            raise ValueError(f"{who}: 'model_kwargs' are arguments of a model-building function, but "
                             f"'model' is a model instance")

    def _build_model(self, X, y):
        who = type(self).__name__
        if isinstance(self.model, Model):
            model = _copy_model(self.model)
        else:
            model = _call_builder(self.model, X, y, self.model_kwargs or {})
            if not isinstance(model, Model):
                raise TypeError(f"{who}: the 'model' function must return a fastnn Model, "
                                f"it returned {type(model).__name__}")
        if model.optimizer is None or getattr(model, "loss", None) is None:
            raise ValueError(f"{who}: the model must be compiled: call model.compile(optimizer=..., loss=...) "
                             f"before passing it (or in the function that builds it)")
        return model

    def _predict_raw(self, X):
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, allow_nd=True, dtype=_FLOATS)
        return np.asarray(self.model_.predict(X, verbose=0), dtype=np.float64)

    # Subclasses define how targets are encoded and decoded.
    _y_checks = {}

    def _encode_target(self, y, reset):
        return y

    def _builder_target(self, codes):
        return codes

    def _check_outputs(self, width, codes):
        pass

    def _training_target(self, model, width, codes):
        return codes

    def _adapt_fit_kwargs(self, model, width, fit_kwargs, codes):
        return fit_kwargs


_BASE_ARGS = """
    Args:
        model: a compiled fastnn ``Model``, or a callable returning one. A callable is
            called at each ``fit`` with ``model_kwargs`` as keyword arguments, plus ``X`` and
            ``y`` (the training data, to read shapes from) when it has parameters of those
            names or ``**kwargs``, as in Keras. A model instance is copied, weights included,
            at each ``fit`` (the instance itself is never trained), so every fit starts from
            the same weights.
        warm_start: bool, default False. If True, a second ``fit`` continues training the
            model of the first one (``model_``) instead of building a new one.
        model_kwargs: dict, default None: keyword arguments of ``model`` when it is a
            callable. One entry can be set alone with
            ``set_params(model_kwargs__<name>=value)``, so a search can tune it.
        fit_kwargs: dict, default None: keyword arguments of the model's ``fit``
            (``epochs``, ``batch_size``, ``callbacks``...). Arguments given to this
            estimator's ``fit`` take precedence. ``verbose`` defaults to 0. Settable one
            entry at a time too: ``fit_kwargs__epochs``.
        random_state: int, RandomState or None, default None. With an int, each ``fit``
            builds and trains under ``fastnn.utils.set_random_seed(random_state)`` (the
            previous random state is restored afterwards), so fitting the same data gives
            the same model, whatever the order of a search's fits. With None, fits draw from
            fastnn's global generator: call ``fastnn.utils.set_random_seed`` once before a
            sequential search to make it reproducible.
"""


# ---- the classifier ---------------------------------------------------------------------------------
class SKLearnClassifier(ClassifierMixin, SKLBase):
    __doc__ = """scikit-learn compatible classifier wrapping a fastnn model (Keras' ``SKLearnClassifier``).

    Labels may be of any type scikit-learn accepts (ints, strings...): they are encoded
    as 0..n_classes-1 for the model, ``classes_`` keeps them, and ``predict`` returns
    them. ``score`` is the accuracy.

    The function that builds the model receives ``y`` one-hot encoded, shape
    (n_samples, n_classes), as in Keras, so ``y.shape[1]`` is the number of output units.
    What the model is trained on follows its loss:

    - ``sparse_categorical_crossentropy``: integer class indices;
    - a single output unit (binary problems, e.g. sigmoid + ``binary_crossentropy``):
      0/1, the probability of ``classes_[1]``;
    - anything else (e.g. ``categorical_crossentropy``): one-hot rows.
""" + _BASE_ARGS + """
    Attributes:
        model_: the trained fastnn model.
        history_: dict name -> list of per-epoch values (``History.history`` of the last fit).
        classes_: array of shape (n_classes,): the class labels.
        n_features_in_: int: the number of features seen in fit.

    Example:

    ```python
    import fastnn
    from fastnn.wrappers import SKLearnClassifier
    from sklearn.model_selection import GridSearchCV

    def build(X, y, width=32, learning_rate=1e-3):
        model = fastnn.Sequential([
            fastnn.Input(shape=X.shape[1:]),
            fastnn.layers.Dense(width, activation="relu"),
            fastnn.layers.Dense(y.shape[1], activation="softmax"),
        ])
        model.compile(optimizer=fastnn.optimizers.Adam(learning_rate),
                      loss="sparse_categorical_crossentropy")
        return model

    clf = SKLearnClassifier(build, fit_kwargs={"epochs": 10}, random_state=0)
    search = GridSearchCV(clf, {"model_kwargs__learning_rate": [1e-3, 1e-2],
                                "model_kwargs__width": [16, 64]}, cv=3)
    search.fit(X, y)
    ```
    """

    def predict_proba(self, X):
        """Class probabilities for X.

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            array of shape (n_samples, n_classes), columns in the order of ``classes_``
            (a model trained on logits, ``from_logits=True``, has softmax or sigmoid applied).
        """
        out = self._predict_raw(X)
        from_logits = bool(getattr(self.model_.loss, "from_logits", False))
        if out.shape[1] == 1:
            p = out[:, 0]
            if from_logits:
                p = _sigmoid(p)
            return np.stack([1 - p, p], axis=1)
        return _softmax(out) if from_logits else out

    def predict(self, X):
        """Predicted class labels for X (from ``classes_``).

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            array of shape (n_samples,).
        """
        proba = self.predict_proba(X)  # checks that the estimator is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        return tags

    # ---- targets ------------------------------------------------------------------------------
    def _encode_target(self, y, reset):
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"SKLearnClassifier: only binary and multiclass targets are supported, "
                             f"got a {kind} target")
        if reset:
            classes, codes = np.unique(y, return_inverse=True)
            if len(classes) < 2:
                raise ValueError("SKLearnClassifier can't train when only one class is present in y")
            self.classes_ = classes
            return codes.reshape(-1)
        return self._codes(y)

    def _codes(self, y):
        y = np.asarray(y).reshape(-1)
        try:
            codes = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
            unseen = np.asarray(self.classes_[codes] != y, dtype=bool).reshape(-1)
        except TypeError:  # labels of another type (numbers against strings...)
            codes, unseen = np.zeros(len(y), np.int64), np.ones(len(y), bool)
        if np.any(unseen):
            raise ValueError(f"SKLearnClassifier: y has labels {np.unique(y[unseen]).tolist()} that are not in "
                             f"classes_ {self.classes_.tolist()}")
        return codes

    def _builder_target(self, codes):
        return np.eye(len(self.classes_), dtype=np.float32)[codes]

    def _check_outputs(self, width, codes):
        n = len(self.classes_)
        if width != n and not (width == 1 and n == 2):
            raise ValueError(f"SKLearnClassifier: the model has {width} output units but y has {n} classes: "
                             f"give the last layer {n} units (y.shape[1] of the y the builder receives)"
                             + (" or 1 unit (binary)" if n == 2 else ""))

    def _training_target(self, model, width, codes):
        if width == 1:
            return codes.astype(np.float32)[:, None]
        if isinstance(model.loss, losses_module.SparseCategoricalCrossentropy):
            return codes
        return np.eye(len(self.classes_), dtype=np.float32)[codes]

    def _adapt_fit_kwargs(self, model, width, fit_kwargs, codes):
        fit_kwargs = dict(fit_kwargs)
        class_weight = fit_kwargs.get("class_weight")
        if isinstance(class_weight, str):  # scikit-learn's "balanced"
            if class_weight != "balanced":
                raise ValueError(f"SKLearnClassifier: class_weight must be a dict, 'balanced' or None, "
                                 f"got {class_weight!r}")
            weights = compute_class_weight("balanced", classes=np.arange(len(self.classes_)), y=codes)
            fit_kwargs["class_weight"] = {i: float(w) for i, w in enumerate(weights)}
        elif class_weight is not None:  # keyed by the original labels
            fit_kwargs["class_weight"] = {int(self._codes(np.asarray([label]))[0]): float(w)
                                          for label, w in dict(class_weight).items()}
        validation = fit_kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
            vx = _validate_data(self, validation[0], reset=False, allow_nd=True, dtype=_FLOATS)
            vy = self._training_target(model, width, self._codes(validation[1]))
            fit_kwargs["validation_data"] = (vx, vy) + tuple(validation[2:])
        return fit_kwargs


# ---- the regressor -----------------------------------------------------------------------------------
class SKLearnRegressor(RegressorMixin, SKLBase):
    __doc__ = """scikit-learn compatible regressor wrapping a fastnn model (Keras' ``SKLearnRegressor``).

    ``score`` is the coefficient of determination R². A 1-D ``y`` is trained as a column
    against a model with one output unit, and ``predict`` returns 1-D values again; a 2-D
    ``y`` of shape (n_samples, n_outputs) needs ``n_outputs`` units. The function that
    builds the model receives ``y`` as given.
""" + _BASE_ARGS + """
    Attributes:
        model_: the trained fastnn model.
        history_: dict name -> list of per-epoch values (``History.history`` of the last fit).
        n_features_in_: int: the number of features seen in fit.

    Example:

    ```python
    import fastnn
    from fastnn.wrappers import SKLearnRegressor

    def build(X, y, learning_rate=1e-2):
        model = fastnn.Sequential([fastnn.Input(shape=X.shape[1:]), fastnn.layers.Dense(1)])
        model.compile(optimizer=fastnn.optimizers.Adam(learning_rate), loss="mse")
        return model

    reg = SKLearnRegressor(build, fit_kwargs={"epochs": 50}, random_state=0).fit(X, y)
    reg.score(X, y)
    ```
    """

    _y_checks = {"multi_output": True, "y_numeric": True}

    def predict(self, X):
        """Predictions for X.

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            array of shape (n_samples,) when fit's y was 1-D, else (n_samples, n_outputs).
        """
        out = self._predict_raw(X)
        if self._y_ndim == 1 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {**super()._more_tags(), "multioutput": True}

    def _encode_target(self, y, reset):
        y = np.asarray(y)
        if reset:
            self._y_ndim = y.ndim
        elif y.ndim != self._y_ndim:
            raise ValueError(f"SKLearnRegressor: y has {y.ndim} dimensions, the first fit's had {self._y_ndim}")
        return y

    def _check_outputs(self, width, y):
        expected = 1 if y.ndim == 1 else y.shape[1]
        if width != expected:
            raise ValueError(f"SKLearnRegressor: the model has {width} output units but y has {expected} "
                             f"target{'s' if expected != 1 else ''} per sample")

    def _training_target(self, model, width, y):
        return y[:, None] if y.ndim == 1 else y

    def _adapt_fit_kwargs(self, model, width, fit_kwargs, y):
        validation = fit_kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
            vy = np.asarray(validation[1])
            fit_kwargs = {**fit_kwargs, "validation_data": (validation[0], vy[:, None] if vy.ndim == 1 else vy)
                          + tuple(validation[2:])}
        return fit_kwargs

for _cls in (SKLearnClassifier, SKLearnRegressor):
    _cls.__module__ = "fastnn.wrappers"  # the public home (pickles refer to it)
