"""scikit-learn wrappers: a fastnn model as a scikit-learn estimator (Keras 3's ``keras.wrappers``).

``SKLearnClassifier`` and ``SKLearnRegressor`` make a compiled fastnn model usable with
``GridSearchCV``, ``RandomizedSearchCV``, ``cross_val_score``, pipelines and the rest of
scikit-learn:

    >>> import fastnn
    >>> from fastnn.wrappers import SKLearnClassifier
    >>> def build(X, y, width=32, learning_rate=1e-3):
    ...     model = fastnn.Sequential([
    ...         fastnn.Input(shape=X.shape[1:]),
    ...         fastnn.layers.Dense(width, activation="relu"),
    ...         fastnn.layers.Dense(y.shape[1], activation="softmax"),  # y is one-hot here
    ...     ])
    ...     model.compile(optimizer=fastnn.optimizers.Adam(learning_rate),
    ...                   loss="sparse_categorical_crossentropy")
    ...     return model
    >>> clf = SKLearnClassifier(build, model_kwargs={"width": 64}, fit_kwargs={"epochs": 10},
    ...                         random_state=0)
    >>> # GridSearchCV(clf, {"model_kwargs__learning_rate": [1e-3, 1e-2]}).fit(X, y)

scikit-learn is an optional dependency (``pip install "fastnn[tune]"``). Importing this
module does not import it; the first use of ``SKLearnClassifier`` or ``SKLearnRegressor``
does, and raises an ImportError naming the extra when it is missing.
"""

_PUBLIC = ("SKLearnClassifier", "SKLearnRegressor")

__all__ = list(_PUBLIC)


def __getattr__(name):
    # The classes subclass scikit-learn's BaseEstimator, so they are created on first use.
    if name in _PUBLIC:
        from . import _sklearn_wrappers

        value = getattr(_sklearn_wrappers, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
