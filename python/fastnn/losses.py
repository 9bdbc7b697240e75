"""Losses (Keras names, semantics and defaults).

A loss maps (y_true, y_pred) to one value per sample (reduced over the last axis), then
weights them by ``sample_weight`` and reduces: "sum_over_batch_size" (the default, the sum
divided by the number of samples, whatever the weights), "sum", or None.

The built-in losses compute value and gradient in one C++ call. When a model's last
activation is softmax (sigmoid) and its loss the matching cross-entropy, the model trains
on the logits: the kernel applies the activation stably and the gradient is p - y.

Custom losses: a function ``loss(y_true, y_pred)`` written with ``fastnn.ops`` maths trains
as is (its gradient is derived by ``fastnn.autodiff``); a ``Loss`` subclass implements
``call`` and may give ``gradient`` itself.
"""

import numpy as np

from . import _core, autodiff, config
from .saving import registration

_KINDS = dict(_core.loss_kinds)
_REDUCTIONS = ("sum_over_batch_size", "sum", "none", None)


class Loss:
    """Base class.

    Subclasses implement ``call(y_true, y_pred)`` returning per-sample losses (written with
    ``fastnn.ops`` maths for an automatic gradient), and may implement
    ``gradient(y_true, y_pred)`` returning ∂loss_r/∂y_pred for each sample r (same shape as
    y_pred), which then replaces the automatic one.

    Args:
        name: str, default the snake-case class name.
        reduction: "sum_over_batch_size" (default), "sum" or None.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: 'reduction' must be one of {_REDUCTIONS}, got {reduction!r}")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def call(self, y_true, y_pred):
        """Per-sample losses; the default is no loss at all (override it)."""
        raise TypeError(f"{type(self).__name__} must implement call(y_true, y_pred)")

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The reduced loss value (a float, or per-sample values for reduction=None).

        Called on an ``autodiff.Tensor`` (inside ``autodiff.grad``, e.g. a custom training
        loop's loss), it returns a Tensor whose derivative is the loss's own gradient, so
        built-in losses (one C++ call for value and gradient) combine with other terms.
        """
        if isinstance(y_pred, autodiff.Tensor):
            return self._traced(y_true, y_pred, sample_weight)
        value, _ = self.value_and_grad(y_true, y_pred, sample_weight, want_grad=False)
        return value

    def _traced(self, y_true, y_pred, sample_weight):
        value, grad = self.value_and_grad(autodiff.value_of(y_true), y_pred.value, sample_weight, want_grad=True)
        value = np.asarray(value, dtype=np.float64)
        if value.ndim == 0:
            local = lambda g: np.asarray(g) * grad  # noqa: E731
        else:  # per-sample values: each depends on its own row of y_pred
            local = lambda g: np.asarray(g).reshape(value.shape + (1,) * (grad.ndim - value.ndim)) * grad  # noqa: E731
        return autodiff.Tensor(value, ((y_pred, local),))

    # ---- value and gradient -----------------------------------------------------------------
    def value_and_grad(self, y_true, y_pred, sample_weight=None, want_grad=True):
        """(reduced loss, d loss / d y_pred or None). The trainer's entry point."""
        y_pred = _as_float(y_pred, "y_pred")
        y_true = self._prepare_true(y_true, y_pred)
        rows_shape = y_pred.shape[:-1] if y_pred.ndim else ()
        weights = _row_weights(sample_weight, rows_shape, y_pred.dtype)
        count = max(int(np.prod(rows_shape, dtype=np.int64)), 1)
        scale = 1.0 / count if self.reduction == "sum_over_batch_size" else 1.0
        has_gradient = type(self).gradient is not Loss.gradient
        if has_gradient:
            per_row = np.asarray(self.call(y_true, y_pred), dtype=np.float64).reshape(rows_shape)
            grad = None
            if want_grad:
                w = np.ones(rows_shape) if weights is None else weights.reshape(rows_shape)
                grad = np.asarray(self.gradient(y_true, y_pred), dtype=y_pred.dtype) * (w * scale)[..., None]
            return self._reduce(per_row, weights, count), grad
        leaf = autodiff.Tensor(y_pred)
        per_row = self.call(y_true, leaf)
        values = np.asarray(autodiff.value_of(per_row), dtype=np.float64)
        if values.ndim == 0:
            # A loss that is already one number is not divided again (Keras returns it
            # as is); sample weights scale it by their mean (their sum for "sum").
            factor = 1.0
            if weights is not None:
                factor = float(weights.mean() if self.reduction == "sum_over_batch_size" else weights.sum())
            grad = None
            if want_grad:
                grad = autodiff.backward(per_row, np.asarray(factor)).get(id(leaf)) if isinstance(per_row, autodiff.Tensor) else None
                grad = np.zeros_like(y_pred) if grad is None else np.asarray(grad, dtype=y_pred.dtype)
            value = float(values) * factor
            return (np.asarray(value) if self.reduction in (None, "none") else value), grad
        if values.shape != tuple(rows_shape) and values.size == int(np.prod(rows_shape, dtype=np.int64)):
            values = values.reshape(rows_shape)
        grad = None
        if want_grad and isinstance(per_row, autodiff.Tensor):
            seed = np.ones(values.shape) if weights is None else np.broadcast_to(weights.reshape(rows_shape), values.shape)
            grad = autodiff.backward(per_row, seed * scale).get(id(leaf))
            grad = np.zeros_like(y_pred) if grad is None else np.asarray(grad, dtype=y_pred.dtype)
        elif want_grad:
            grad = np.zeros_like(y_pred)
        return self._reduce(values, weights, count), grad

    def gradient(self, y_true, y_pred):
        """∂loss_r/∂y_pred per sample r (optional: the default derives it automatically)."""
        return None

    def _prepare_true(self, y_true, y_pred):
        y_true = _as_float(y_true, "y_true", y_pred.dtype)
        if y_true.shape != y_pred.shape and y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
            y_true = y_true[..., None]  # Keras: (N,) targets for (N, 1) predictions
        if y_true.shape != y_pred.shape:
            raise ValueError(f"{self.name}: y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
        return y_true

    def _reduce(self, per_row, weights, count):
        values = per_row if weights is None else per_row * weights.reshape(per_row.shape)
        if self.reduction in (None, "none"):
            return values
        total = float(np.sum(values, dtype=np.float64))
        return total / count if self.reduction == "sum_over_batch_size" else total

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own losses register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "loss")


registration.register_builtin(Loss, "loss")


class _KernelLoss(Loss):
    """A built-in loss: value and gradient from one C++ call."""

    _kind = None
    _sparse = False

    def __init__(self, name=None, reduction="sum_over_batch_size", from_logits=False, label_smoothing=0.0,
                 delta=1.0, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        who = type(self).__name__
        label_smoothing, delta = _real(who, "label_smoothing", label_smoothing), _real(who, "delta", delta)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"{who}: 'label_smoothing' must be in [0, 1], got {label_smoothing}")
        if not isinstance(from_logits, (bool, np.bool_, int, np.integer)):
            raise TypeError(f"{who}: 'from_logits' must be a bool, got {from_logits!r}")
        self.from_logits = bool(from_logits)
        self.label_smoothing = label_smoothing
        self.delta = delta

    def _prepare_true(self, y_true, y_pred):
        if self._sparse:
            labels = np.asarray(y_true)
            if labels.dtype.kind not in "iuf":
                raise TypeError(f"{self.name}: y_true must hold integer class labels, got dtype {labels.dtype}")
            if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
                labels = labels[..., 0]
            if labels.shape != y_pred.shape[:-1]:
                raise ValueError(f"{self.name}: y_true has shape {labels.shape} but y_pred {y_pred.shape} "
                                 f"needs one label per row, shape {y_pred.shape[:-1]}")
            return labels
        return super()._prepare_true(y_true, y_pred)

    def value_and_grad(self, y_true, y_pred, sample_weight=None, want_grad=True, want_probs=False):
        y_pred = _as_float(y_pred, "y_pred")
        if y_pred.ndim == 0:
            y_pred = y_pred.reshape(1, 1)
        y_true = self._prepare_true(y_true, y_pred)
        rows_shape = y_pred.shape[:-1]
        weights = _row_weights(sample_weight, rows_shape, y_pred.dtype)
        count = max(int(np.prod(rows_shape, dtype=np.int64)), 1)
        scale = 1.0 / count if self.reduction == "sum_over_batch_size" else 1.0
        unreduced = self.reduction in (None, "none")
        total, grad, probs, rows = _core.loss(self._kind, y_true, y_pred, weights, self.from_logits,
                                              self.label_smoothing, self.delta, scale, want_grad,
                                              want_probs, unreduced)
        value = rows if unreduced else total / count if self.reduction == "sum_over_batch_size" else total
        return (value, grad, probs) if want_probs else (value, grad)

    def call(self, y_true, y_pred):
        """Per-sample losses, shape y_pred.shape[:-1]."""
        y_pred = _as_float(y_pred, "y_pred")
        y_true = self._prepare_true(y_true, y_pred)
        return _core.loss(self._kind, y_true, y_pred, None, self.from_logits, self.label_smoothing,
                          self.delta, 1.0, False, False, True)[3]

    def with_logits(self):
        """The same loss computed from logits (a model fusing it with its last activation)."""
        twin = type(self).from_config(self.get_config())
        twin.from_logits = True
        return twin


class MeanSquaredError(_KernelLoss):
    """mean((y_pred - y_true)², axis=-1)."""

    _kind = _KINDS["mean_squared_error"]

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class MeanAbsoluteError(_KernelLoss):
    """mean(|y_pred - y_true|, axis=-1)."""

    _kind = _KINDS["mean_absolute_error"]

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class Huber(_KernelLoss):
    """mean(0.5·e² if |e| <= delta else delta·|e| - 0.5·delta², axis=-1), e = y_pred - y_true.

    Args:
        delta: float > 0, default 1.0.
    """

    _kind = _KINDS["huber"]

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        delta = _real("Huber", "delta", delta)
        if not delta > 0:
            raise ValueError(f"Huber: 'delta' must be > 0, got {delta}")
        super().__init__(name=name, reduction=reduction, delta=delta, dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class BinaryCrossentropy(_KernelLoss):
    """Binary cross-entropy, the mean over the last axis.

    Args:
        from_logits: bool, default False (y_pred holds probabilities, clipped to
            [1e-7, 1 - 1e-7]).
        label_smoothing: float in [0, 1], default 0: targets become y·(1-ls) + 0.5·ls.
    """

    _kind = _KINDS["binary_crossentropy"]

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, from_logits=from_logits,
                         label_smoothing=label_smoothing, dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(_KernelLoss):
    """-Σ y_true·log(y_pred) over the last axis (y_pred renormalised and clipped, as Keras).

    Args:
        from_logits: bool, default False.
        label_smoothing: float in [0, 1], default 0: targets become y·(1-ls) + ls/classes.
    """

    _kind = _KINDS["categorical_crossentropy"]

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, from_logits=from_logits,
                         label_smoothing=label_smoothing, dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(_KernelLoss):
    """Categorical cross-entropy with integer labels (shape y_pred.shape[:-1], or a trailing 1).

    Args:
        from_logits: bool, default False.
    """

    _kind = _KINDS["sparse_categorical_crossentropy"]
    _sparse = True

    def __init__(self, from_logits=False, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, from_logits=from_logits, dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class KLDivergence(_KernelLoss):
    """Σ y_true·log(y_true / y_pred) over the last axis, both clipped to [1e-7, 1]."""

    _kind = _KINDS["kl_divergence"]

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class LossFunctionWrapper(Loss):
    """A plain function ``fn(y_true, y_pred) -> per-sample losses`` as a Loss (autodiff gradient)."""

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype)
        self.fn = fn
        self.fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        """{'name', 'reduction', 'fn': the function's name, and the function's extra keyword arguments}."""
        return {**super().get_config(), "fn": getattr(self.fn, "__name__", repr(self.fn)), **self.fn_kwargs}

    @classmethod
    def from_config(cls, config):
        """Rebuilds from get_config(); a function given by name must be one of fastnn.losses'.

        (``fastnn.saving.load_model`` also finds registered and custom functions.)
        """
        config = dict(config)
        fn = config.get("fn")
        if isinstance(fn, str):
            found = globals().get(fn)
            if fn.startswith("_") or not callable(found) or isinstance(found, type):
                raise ValueError(f"LossFunctionWrapper: unknown loss function {fn!r}; pass the function itself "
                                 "(or load the model with custom_objects={...})")
            config["fn"] = found
        return cls(**config)


# ---- function forms (per-sample values), as keras.losses.<name> ------------------------------
def mean_squared_error(y_true, y_pred):
    """Per-sample mean squared error."""
    return MeanSquaredError().call(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """Per-sample mean absolute error."""
    return MeanAbsoluteError().call(y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    """Per-sample Huber loss."""
    return Huber(delta=delta).call(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-sample binary cross-entropy."""
    return BinaryCrossentropy(from_logits, label_smoothing).call(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-sample categorical cross-entropy."""
    return CategoricalCrossentropy(from_logits, label_smoothing).call(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample sparse categorical cross-entropy."""
    return SparseCategoricalCrossentropy(from_logits).call(y_true, y_pred)


def kl_divergence(y_true, y_pred):
    """Per-sample KL divergence."""
    return KLDivergence().call(y_true, y_pred)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
kld = KLD = kullback_leibler_divergence = kl_divergence

_BY_NAME = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber, "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
}
_BY_FUNCTION = {mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
                huber: Huber, binary_crossentropy: BinaryCrossentropy,
                categorical_crossentropy: CategoricalCrossentropy,
                sparse_categorical_crossentropy: SparseCategoricalCrossentropy, kl_divergence: KLDivergence}


def get(identifier):
    """A Loss from a name ("mse", "sparse_categorical_crossentropy"), class, instance or function."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"Unknown loss {identifier!r}; expected one of: {', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[key]()
    if callable(identifier):
        if identifier in _BY_FUNCTION:
            return _BY_FUNCTION[identifier]()
        return LossFunctionWrapper(identifier)
    raise TypeError(f"loss must be a name, a Loss or a function, got {type(identifier).__name__}")


def serialize(loss):
    """A loss as a JSON-ready description (Keras' ``keras.losses.serialize``).

    Args:
        loss: a Loss instance.

    Returns:
        ``{"class_name": ..., "config": loss.get_config()}``.
    """
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


# ---- helpers ------------------------------------------------------------------------------------
def _snake(name):
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _real(who, name, value):
    """A float argument: a real number (not a string, None or an array), as a float."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        raise TypeError(f"{who}: '{name}' must be a float, got {value!r}")
    return float(value)


def _as_float(x, what, dtype=None):
    arr = np.asarray(autodiff.value_of(x))
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"loss: '{what}' must be numeric, got dtype {arr.dtype}")
    target = dtype or (arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(config.floatx()))
    return np.ascontiguousarray(arr, dtype=target)


def _row_weights(sample_weight, rows_shape, dtype):
    """Per-row weights (flattened), from a sample_weight of shape (N,), (N, 1) or rows_shape."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"loss: 'sample_weight' must be numeric, got dtype {w.dtype}")
    w = w.astype(dtype)
    if w.ndim == len(rows_shape) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim < len(rows_shape):
        w = w.reshape(w.shape + (1,) * (len(rows_shape) - w.ndim))
    try:
        w = np.broadcast_to(w, rows_shape)
    except ValueError:
        raise ValueError(f"loss: sample_weight of shape {np.shape(sample_weight)} does not fit "
                         f"predictions with rows {rows_shape}") from None
    if not np.all(np.isfinite(w)):
        raise ValueError("loss: sample_weight contains NaN or inf")
    return np.ascontiguousarray(w.ravel())


__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "MeanAbsoluteError", "Huber",
           "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "KLDivergence",
           "mean_squared_error", "mean_absolute_error", "huber", "binary_crossentropy",
           "categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence", "mse", "MSE",
           "mae", "MAE", "kld", "KLD", "kullback_leibler_divergence", "get", "serialize"]
