"""Metrics, stateful over an epoch (Keras names and defaults).

``update_state(y_true, y_pred)`` accumulates counts or sums, ``result()`` reads them and
``reset_state()`` starts over: precision over an epoch is computed from the epoch's true
and false positives, not averaged over batches. Computed with NumPy on each batch's
predictions (a few microseconds a batch).
"""

import numpy as np

from . import config
from .saving import registration


class Metric:
    """Base class: ``update_state``, ``result``, ``reset_state``; ``name`` keys the logs.

    ``_state`` names the attributes ``reset_state`` creates, which hold sums over the samples
    seen (data-parallel training adds them up over the processes to get the global metric);
    None (the default) means: the public numeric attributes that are not in ``get_config()``.
    """

    _state = None

    def __init__(self, name=None, dtype=None):
        import re

        self.name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        self.dtype = dtype
        self.reset_state()

    def reset_state(self):
        """Forgets everything accumulated."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates one batch."""

    def result(self):
        """The metric over everything accumulated since the last reset."""
        return 0.0

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The metric of one batch alone (the state is left as it was)."""
        saved = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in vars(self).items()}
        self.reset_state()
        self.update_state(y_true, y_pred, sample_weight)
        value = self.result()
        vars(self).update(saved)
        return value

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own metrics register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "metric")


registration.register_builtin(Metric, "metric")


def _arrays(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true)
    return y_true, y_pred


def _weights(sample_weight, n):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.size != n:
        w = np.broadcast_to(w, (n,))
    return w


class Mean(Metric):
    """Weighted mean of the values given to ``update_state(values, sample_weight=None)``."""

    _state = ("total", "count")

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        w = _weights(sample_weight, values.size)
        self.total += float(values.sum() if w is None else (values * w).sum())
        self.count += float(values.size if w is None else w.sum())

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The running mean of a per-sample function ``fn(y_true, y_pred)``."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", "metric"), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = np.asarray(self._fn(y_true, y_pred, **self._fn_kwargs), dtype=np.float64)
        if values.ndim > 1 and sample_weight is not None and np.shape(sample_weight) == values.shape:
            # one weight per value (e.g. a mask over time steps): the weighted mean of the values
            return super().update_state(values.reshape(-1), np.asarray(sample_weight).reshape(-1))
        rows = values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values.reshape(-1)
        super().update_state(rows, sample_weight)

    def get_config(self):
        """{'name', 'dtype', 'fn': the function's name, and the function's extra keyword arguments}."""
        return {"name": self.name, "dtype": self.dtype, "fn": getattr(self._fn, "__name__", repr(self._fn)),
                **self._fn_kwargs}

    @classmethod
    def from_config(cls, config):
        """Rebuilds from get_config(); a function given by name must be one of fastnn.metrics'.

        (``fastnn.saving.load_model`` also finds registered and custom functions.)
        """
        config = dict(config)
        fn = config.get("fn")
        if isinstance(fn, str):
            found = globals().get(fn)
            if fn.startswith("_") or not callable(found) or isinstance(found, type):
                raise ValueError(f"MeanMetricWrapper: unknown metric function {fn!r}; pass the function itself "
                                 "(or load the model with custom_objects={...})")
            config["fn"] = found
        return cls(**config)


class _FixedFunctionMetric(MeanMetricWrapper):
    """A MeanMetricWrapper subclass whose function is fixed: its config is name and dtype."""

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---- per-sample functions -----------------------------------------------------------------
def _squeeze_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """mean(y_true == (y_pred > threshold)) over the last axis."""
    y_true, y_pred = _arrays(y_true, y_pred)
    if y_true.ndim == y_pred.ndim - 1:
        y_true = y_true[..., None]
    elif y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return np.mean(y_true == (y_pred > threshold), axis=-1)


def categorical_accuracy(y_true, y_pred):
    """1 where argmax(y_true) == argmax(y_pred)."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """1 where the integer label equals argmax(y_pred)."""
    y_true, y_pred = _arrays(y_true, y_pred)
    y_true = _squeeze_labels(y_true, y_pred)
    return (y_true.astype(np.int64) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def _in_top_k(labels, y_pred, k):
    # A label is in the top k when fewer than k classes score strictly higher.
    target = np.take_along_axis(y_pred, labels[..., None].astype(np.int64), axis=-1)
    return ((y_pred > target).sum(axis=-1) < k).astype(np.float64)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where argmax(y_true) is among the k highest predictions."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return _in_top_k(np.argmax(y_true, axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where the integer label is among the k highest predictions."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return _in_top_k(_squeeze_labels(y_true, y_pred), y_pred, k)


def mean_squared_error(y_true, y_pred):
    """mean((y_pred - y_true)², axis=-1)."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return np.mean(np.square(y_pred - y_true.reshape(y_pred.shape)), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_pred - y_true|, axis=-1)."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return np.mean(np.abs(y_pred - y_true.reshape(y_pred.shape)), axis=-1)


# ---- classes --------------------------------------------------------------------------------
class Accuracy(_FixedFunctionMetric):
    """Fraction of predictions exactly equal to the targets."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(lambda t, p: (np.asarray(t) == np.asarray(p)).astype(np.float64), name, dtype)


class BinaryAccuracy(_FixedFunctionMetric):
    """Fraction of (y_pred > threshold) equal to y_true (default threshold 0.5)."""

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        if not 0 < threshold < 1:
            raise ValueError(f"BinaryAccuracy: 'threshold' must be in (0, 1), got {threshold}")
        self.threshold = threshold
        super().__init__(binary_accuracy, name, dtype, threshold=threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class CategoricalAccuracy(_FixedFunctionMetric):
    """Fraction where argmax(y_true) == argmax(y_pred)."""

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name, dtype)


class SparseCategoricalAccuracy(_FixedFunctionMetric):
    """Fraction where the integer label == argmax(y_pred)."""

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name, dtype)


class TopKCategoricalAccuracy(_FixedFunctionMetric):
    """Fraction where the target class is among the k best (default k=5)."""

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        self.k = k
        super().__init__(top_k_categorical_accuracy, name, dtype, k=k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class SparseTopKCategoricalAccuracy(_FixedFunctionMetric):
    """Fraction where the integer label is among the k best (default k=5)."""

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        self.k = k
        super().__init__(sparse_top_k_categorical_accuracy, name, dtype, k=k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class MeanSquaredError(_FixedFunctionMetric):
    """Running mean of the per-sample mean squared error."""

    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name, dtype)


class MeanAbsoluteError(_FixedFunctionMetric):
    """Running mean of the per-sample mean absolute error."""

    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, name, dtype)


class RootMeanSquaredError(_FixedFunctionMetric):
    """sqrt of the running mean of the per-sample mean squared error."""

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name, dtype)

    def result(self):
        return float(np.sqrt(super().result()))


class _Confusion(Metric):
    """True/false positives/negatives at thresholds, accumulated over an epoch."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        default = [0.5] if top_k is None else [-np.inf]
        self._single = thresholds is None or np.isscalar(thresholds)
        self.thresholds = np.asarray(default if thresholds is None else np.atleast_1d(thresholds), np.float64)
        self.top_k, self.class_id = top_k, class_id
        super().__init__(name=name, dtype=dtype)

    _state = ("tp", "fp", "fn", "tn")

    def reset_state(self):
        n = len(self.thresholds)
        self.tp, self.fp, self.fn, self.tn = (np.zeros(n) for _ in range(4))

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _arrays(y_true, y_pred)
        y_true = y_true.reshape(y_pred.shape) if y_true.size == y_pred.size else y_true
        if self.top_k is not None:  # only the k best of each row (lowest index on ties)
            best = np.argsort(-y_pred, axis=-1, kind="stable")[..., :self.top_k]
            keep = np.zeros(y_pred.shape, bool)
            np.put_along_axis(keep, best, True, axis=-1)
            y_pred = np.where(keep, y_pred, -np.inf)
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
        truth = y_true.astype(bool).reshape(-1)
        pred = y_pred.reshape(-1)
        rows = y_pred.shape[0] if y_pred.ndim else 1
        if sample_weight is None:
            w = np.ones(pred.size)
        else:  # one weight per sample, repeated over its values
            per_sample = np.broadcast_to(np.asarray(sample_weight, np.float64).reshape(-1), (rows,))
            w = np.repeat(per_sample, pred.size // max(rows, 1))
        above = pred[None, :] > self.thresholds[:, None]
        self.tp += (above & truth) @ w
        self.fp += (above & ~truth) @ w
        self.fn += (~above & truth) @ w
        self.tn += (~above & ~truth) @ w

    def _out(self, values):
        return float(values[0]) if self._single else values

    def get_config(self):
        default = 0.5 if self.top_k is None else -np.inf
        if self._single:  # a single threshold stays a float (result() then returns a float)
            thresholds = None if self.thresholds[0] == default else float(self.thresholds[0])
        else:
            thresholds = self.thresholds.tolist()
        return {"thresholds": thresholds, "top_k": self.top_k, "class_id": self.class_id, "name": self.name,
                "dtype": self.dtype}


def _divide(a, b):
    return np.divide(a, b, out=np.zeros_like(np.asarray(a, np.float64)), where=np.asarray(b) != 0)


class Precision(_Confusion):
    """tp / (tp + fp) over the epoch; positive means y_pred > threshold (default 0.5).

    Args:
        thresholds: float or list of floats, default 0.5.
        top_k: int or None: only a row's k best predictions count as positive.
        class_id: int or None: one class (a column) only.
    """

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="precision", dtype=None):
        super().__init__(thresholds, top_k, class_id, name, dtype)

    def result(self):
        return self._out(_divide(self.tp, self.tp + self.fp))


class Recall(_Confusion):
    """tp / (tp + fn) over the epoch (arguments as Precision)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="recall", dtype=None):
        super().__init__(thresholds, top_k, class_id, name, dtype)

    def result(self):
        return self._out(_divide(self.tp, self.tp + self.fn))


class F1Score(Metric):
    """F1 per class from the epoch's counts (Keras' F1Score).

    Args:
        average: None (default: one score per class), "micro", "macro" or "weighted".
        threshold: None (default: each row's argmax is the positive class) or a float:
            predictions above it are positive.
    """

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"F1Score: 'average' must be None, micro, macro or weighted, got {average!r}")
        self.average, self.threshold = average, threshold
        super().__init__(name=name, dtype=dtype)

    _state = ("tp", "fp", "fn", "support")

    def reset_state(self):
        self.tp = self.fp = self.fn = self.support = None

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _arrays(y_true, y_pred)
        if y_pred.ndim != 2:
            raise ValueError(f"F1Score: expects 2-D predictions (batch, classes), got shape {y_pred.shape}")
        if self.threshold is None:
            pred = (y_pred >= y_pred.max(axis=-1, keepdims=True)) & (np.abs(y_pred) > 1e-9)
        else:
            pred = y_pred > self.threshold
        truth = y_true.reshape(y_pred.shape).astype(np.float64)
        w = np.ones((y_pred.shape[0], 1)) if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1, 1)
        pred = pred.astype(np.float64)
        if self.tp is None:
            self.tp, self.fp, self.fn, self.support = (np.zeros(y_pred.shape[1]) for _ in range(4))
        self.tp += (pred * truth * w).sum(axis=0)
        self.fp += (pred * (1 - truth) * w).sum(axis=0)
        self.fn += ((1 - pred) * truth * w).sum(axis=0)
        self.support += (truth * w).sum(axis=0)

    def result(self):
        if self.tp is None:
            return 0.0
        eps = config.epsilon()
        tp, fp, fn = self.tp, self.fp, self.fn
        if self.average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        p = tp / (tp + fp + eps)
        r = tp / (tp + fn + eps)
        f = 2 * p * r / (p + r + eps)
        if self.average == "weighted":
            return float(np.sum(f * self.support / (self.support.sum() + eps)))
        if self.average in ("micro", "macro"):
            return float(np.mean(f))
        return f

    def get_config(self):
        return {"average": self.average, "threshold": self.threshold, "name": self.name, "dtype": self.dtype}


class AUC(Metric):
    """Area under the ROC (or precision-recall) curve from counts at fixed thresholds.

    Args:
        num_thresholds: int > 1, default 200 (evenly spaced on [0, 1], plus the ends ±ε).
        curve: "ROC" (default) or "PR".
        summation_method: "interpolation" (default, trapezoids), "minoring" or "majoring".
        from_logits: bool, default False: apply a sigmoid to predictions first.
    """

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name="auc",
                 dtype=None, thresholds=None, from_logits=False):
        if curve not in ("ROC", "PR"):
            raise ValueError(f"AUC: 'curve' must be ROC or PR, got {curve!r}")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"AUC: unknown summation_method {summation_method!r}")
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(float(t) for t in thresholds)
        else:
            if num_thresholds <= 1:
                raise ValueError(f"AUC: 'num_thresholds' must be > 1, got {num_thresholds}")
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        eps = config.epsilon()
        self.thresholds = np.array([0.0 - eps] + inner + [1.0 + eps])
        self.curve, self.summation_method, self.from_logits = curve, summation_method, from_logits
        self.num_thresholds = len(self.thresholds)
        super().__init__(name=name, dtype=dtype)

    _state = ("tp", "fp", "fn", "tn")

    def reset_state(self):
        self.tp, self.fp, self.fn, self.tn = (np.zeros(len(self.thresholds)) for _ in range(4))

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _arrays(y_true, y_pred)
        if self.from_logits:
            y_pred = 1 / (1 + np.exp(-y_pred))
        pred = np.clip(y_pred, 0, 1).reshape(-1)
        truth = y_true.reshape(-1).astype(bool) if y_true.size == pred.size else y_true.astype(bool).reshape(-1)
        w = np.ones(pred.size) if sample_weight is None else np.broadcast_to(
            np.asarray(sample_weight, np.float64).reshape(-1, *([1] * (y_pred.ndim - 1))), y_pred.shape).reshape(-1)
        # Counts above each threshold via a sort instead of a thresholds × samples matrix.
        order = np.argsort(pred)
        sorted_pred, t_w, f_w = pred[order], (w * truth)[order], (w * ~truth)[order]
        pos_after = np.concatenate([np.cumsum(t_w[::-1])[::-1], [0.0]])
        neg_after = np.concatenate([np.cumsum(f_w[::-1])[::-1], [0.0]])
        first_above = np.searchsorted(sorted_pred, self.thresholds, side="right")
        tp, fp = pos_after[first_above], neg_after[first_above]
        self.tp += tp
        self.fp += fp
        self.fn += t_w.sum() - tp
        self.tn += f_w.sum() - fp

    def result(self):
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            dp = p[:-1] - p[1:]
            slope = _divide(dtp, np.maximum(dp, 0))
            intercept = tp[1:] - slope * p[1:]
            ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _divide(p[:-1], np.maximum(p[1:], 0)), 1.0)
            return float(np.sum(_divide(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))))
        recall = _divide(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide(fp, fp + tn), recall
        else:
            x, y = recall, _divide(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return float(np.sum((x[:-1] - x[1:]) * heights))

    def get_config(self):
        config = {"num_thresholds": self.num_thresholds, "curve": self.curve,
                  "summation_method": self.summation_method, "name": self.name, "dtype": self.dtype,
                  "from_logits": self.from_logits}
        if self._init_from_thresholds:  # the given thresholds, without the ends added around them
            config["thresholds"] = self.thresholds[1:-1].tolist()
        return config


class _AccuracyByShape(MeanMetricWrapper):
    """compile(metrics=['accuracy']): binary, sparse or categorical, chosen on the first batch
    from the shapes of y_true and y_pred (as Keras does)."""

    def __init__(self, name="accuracy"):
        self._chosen = None
        super().__init__(None, name=name)

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self._chosen is None:
            y_true_arr, y_pred_arr = np.asarray(y_true), np.asarray(y_pred)
            if y_pred_arr.shape[-1:] == (1,) or y_pred_arr.ndim == 1:
                self._chosen = binary_accuracy
            elif y_true_arr.ndim < y_pred_arr.ndim or (y_true_arr.shape[-1:] == (1,) and y_pred_arr.shape[-1] > 1):
                self._chosen = sparse_categorical_accuracy
            else:
                self._chosen = categorical_accuracy
            self._fn = self._chosen
        super().update_state(y_true, y_pred, sample_weight)


_BY_NAME = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "root_mean_squared_error": RootMeanSquaredError, "rmse": RootMeanSquaredError,
    "precision": Precision, "recall": Recall, "f1_score": F1Score, "auc": AUC,
}


def get(identifier):
    """A Metric from a name ("accuracy", "precision", "mae"...), class, instance or function."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            return _AccuracyByShape(name=identifier)
        if key not in _BY_NAME:
            raise ValueError(f"Unknown metric {identifier!r}; expected 'accuracy' or one of: {', '.join(sorted(_BY_NAME))}")
        metric = _BY_NAME[key]()
        if key in ("mse", "mae", "rmse"):
            metric.name = key
        return metric
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"metric must be a name, a Metric or a function, got {type(identifier).__name__}")


__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
           "MeanSquaredError", "MeanAbsoluteError", "RootMeanSquaredError", "Precision", "Recall", "F1Score",
           "AUC", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "mean_squared_error",
           "mean_absolute_error", "get"]
