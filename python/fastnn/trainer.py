"""The fit / evaluate / predict loops, kept apart from the model container.

fit converts the data once (the model's float type, C-contiguous), checks all of it before
the first update (so bad input never leaves a half-trained model), and then for each
batch: forward through the layers, loss value and gradient in one kernel call, backward
through the layers (each writing into the flat gradient buffer), one optimizer call over
the flat parameter buffer, metrics.
"""


import numpy as np

from . import _core
from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import regularizers as regularizers_module
from .layers.base import check_finite

DEFAULT_BATCH_SIZE = 32


# ---- data checks ------------------------------------------------------------------------------
def _as_array(data, name, who):
    if data is None:
        raise ValueError(f"{who}: '{name}' is required")
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], np.ndarray) and name == "x" and len(data) > 1:
        raise TypeError(f"{who}: '{name}' must be one array (this model has one input)")
    arr = np.asarray(data)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: '{name}' must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{who}: '{name}' must have a batch axis, got a scalar")
    return arr


def prepare_x(model, x, who, finite=True):
    """x as the model's float type, checked; `finite`: refuse NaN/inf (training data)."""
    dtype = np.dtype(model._input_dtype())
    if not (isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous):
        x = _as_array(x, "x", who)
        if dtype.kind in "iu" and x.dtype.kind == "f" and not np.all(np.floor(x) == x):
            raise ValueError(f"{who}: 'x' must hold integer token ids for this model (its first layer "
                             f"takes {dtype.name}), got non-integer values")
        x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim == 0:
        raise ValueError(f"{who}: 'x' must have a batch axis, got a scalar")
    if len(x) == 0:
        raise ValueError(f"{who}: 'x' is empty")
    if finite:
        check_finite(x, who, "x")
    if not model.built:
        model.build(x.shape)
    check_features(model, x, "x", who)
    return x


def check_features(model, x, name, who=None):
    expected = model.input_shape[1:]
    got = x.shape[1:]
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(f"{who or model.name}: '{name}' has per-sample shape {got} but the model expects "
                         f"{expected} (input_shape {model.input_shape})")


def prepare_y(model, loss, y, n, who):
    y = _as_array(y, "y", who)
    if len(y) != n:
        raise ValueError(f"{who}: 'x' has {n} samples but 'y' has {len(y)}")
    out_shape = model.output_shape
    if isinstance(loss, losses_module.SparseCategoricalCrossentropy):
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(np.floor(y) == y):
                raise ValueError(f"{who}: 'y' must hold integer class labels for {loss.name}")
        labels = y.astype(np.int64)
        classes = out_shape[-1]
        if labels.size and (labels.min() < 0 or (classes is not None and labels.max() >= classes)):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise ValueError(f"{who}: label {bad} in 'y' is outside [0, {classes}) for the model's "
                             f"{classes} outputs ({loss.name})")
        return labels
    y = np.ascontiguousarray(y, dtype=model._float_dtype())
    check_finite(y, who, "y")
    return y


def prepare_weights(sample_weight, n, who, name="sample_weight"):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"{who}: '{name}' must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError(f"{who}: '{name}' must be finite and >= 0")
    return w


def _prepare_training_data(model, x, y, sample_weight, class_weight, who):
    """x, y and per-sample weights (sample_weight times class_weight), checked."""
    x = prepare_x(model, x, who)
    y = prepare_y(model, model.loss, y, len(x), who)
    weights = prepare_weights(sample_weight, len(x), who)
    if class_weight is not None:
        cw = _class_weights(class_weight, y, who)
        weights = cw if weights is None else weights * cw
    return x, y, weights


def _class_weights(class_weight, y, who):
    labels = y if y.ndim == 1 else (y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1))
    labels = labels.astype(np.int64)
    w = np.ones(len(labels))
    for cls, weight in class_weight.items():
        w[labels == int(cls)] = float(weight)
    return w


def _batch_size(batch_size, who):
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{who}: 'batch_size' must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _verbose(verbose, who):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"{who}: 'verbose' must be 'auto', 0, 1 or 2, got {verbose!r}")
    return verbose


# ---- the training step ---------------------------------------------------------------------------
class _Step:
    """What a compiled model needs per batch: the effective loss and where logits are fused."""

    def __init__(self, model):
        self.model = model
        self.loss = model.loss
        self.fused = False
        last = model.layers[-1] if model.layers else None
        activation = last.output_activation() if hasattr(last, "output_activation") else None
        if last is not None and last.activity_regularizer is not None:
            activation = None  # its penalty applies to the activation's output: no fusion
        loss = model.loss
        if isinstance(loss, losses_module._KernelLoss) and not loss.from_logits and loss.reduction is not None:
            if activation == "softmax" and isinstance(loss, (losses_module.CategoricalCrossentropy,
                                                             losses_module.SparseCategoricalCrossentropy)):
                self.loss, self.fused = loss.with_logits(), True
            elif activation == "sigmoid" and isinstance(loss, losses_module.BinaryCrossentropy):
                self.loss, self.fused = loss.with_logits(), True
        self.last = last
        self.weight = getattr(model, "_loss_weight", 1.0)
        self.regularized = [v for v in model.trainable_weights if v.regularizer is not None]
        self._plan_regularization(model)

    def _plan_regularization(self, model):
        """L1/L2 penalties of weights in the flat buffer run as one fused kernel call
        (penalty and gradient in one pass); other regularizers run in Python."""
        self.fused_regularized, self.python_regularized = [], []
        params = getattr(model, "_params", None)
        segments = []
        for v in self.regularized:
            if type(v.regularizer) in (regularizers_module.L1, regularizers_module.L2, regularizers_module.L1L2) \
                    and params is not None and np.shares_memory(v.value, params):
                start = (v.value.__array_interface__["data"][0] - params.__array_interface__["data"][0]) // params.itemsize
                segments.append((start, start + v.value.size, v.regularizer.l1, v.regularizer.l2))
                self.fused_regularized.append(v)
            else:
                self.python_regularized.append(v)
        offsets, l1, l2 = [], [], []
        for start, end, a, b in sorted(segments):
            if not offsets:
                offsets.append(start)
            elif offsets[-1] != start:  # a gap: weights without a penalty
                offsets.append(start)
                l1.append(0.0)
                l2.append(0.0)
            offsets.append(end)
            l1.append(a)
            l2.append(b)
        self._reg_offsets = np.array(offsets, np.int64)
        self._reg_l1, self._reg_l2 = np.array(l1), np.array(l2)

    def __enter__(self):
        if self.fused:
            self.last._emit_logits = True
        return self

    def __exit__(self, *exc):
        if self.fused:
            self.last._emit_logits = False

    def output_mask(self, y_out):
        """The mask of the model's output rows (e.g. padded time steps), or None."""
        mask = getattr(self.model, "_output_mask", None)
        if mask is None or np.shape(mask) != y_out.shape[:-1]:
            return None
        return np.asarray(mask, bool)

    def _loss_weights(self, y_out, sample_weight):
        """Keras: masked rows weigh 0 and, for a mean, the valid ones total/valid, so that the
        loss is the mean over the valid rows."""
        mask = self.output_mask(y_out)
        if mask is None:
            return sample_weight
        weights = mask.astype(np.float64)
        if getattr(self.loss, "reduction", None) in ("sum_over_batch_size", "mean"):
            weights *= weights.size / (weights.sum() + 1e-7)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float64)
            weights = weights * sw.reshape(sw.shape + (1,) * (weights.ndim - sw.ndim))
        return weights

    def loss_and_predictions(self, y_out, y, sample_weight, want_grad):
        """(loss value, gradient, predictions for the metrics)."""
        sample_weight = self._loss_weights(y_out, sample_weight)
        if self.fused:
            value, grad, predictions = self.loss.value_and_grad(y, y_out, sample_weight, want_grad=want_grad,
                                                                want_probs=True)
        else:
            (value, grad), predictions = self.loss.value_and_grad(y, y_out, sample_weight, want_grad=want_grad), y_out
        if self.weight != 1.0:
            value = value * self.weight
            grad = None if grad is None else grad * grad.dtype.type(self.weight)
        return value, grad, predictions

    def penalty(self):
        """The weight penalties (for evaluation: no gradient)."""
        return sum(v.regularizer.penalty(v.value) for v in self.regularized)

    def regularize(self):
        """Adds the penalties' gradients to the weights' gradients; returns the penalty."""
        total = 0.0
        if self.fused_regularized:
            params, grads = self.model._params, self.model._grads
            total += _core.regularize(params[:grads.size], grads, self._reg_offsets, self._reg_l1, self._reg_l2)
        for v in self.python_regularized:
            total += v.regularizer.penalty(v.value)
            v.grad += v.regularizer.gradient(v.value).astype(v.grad.dtype, copy=False)
        return total


def _update_metrics(model, y, predictions, sample_weight, mask=None):
    """mask: the output's mask (padded steps), which every metric skips, as in Keras."""
    weighted = sample_weight
    if mask is not None:
        weighted = mask.astype(np.float64)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float64)
            weighted = weighted * sw.reshape(sw.shape + (1,) * (weighted.ndim - sw.ndim))
    for m in model.compiled_metrics:
        if mask is not None and isinstance(m, metrics_module.MeanMetricWrapper):
            m.update_state(y, predictions, mask.astype(np.float64))
        else:
            m.update_state(y, predictions)
    for m in getattr(model, "weighted_metrics", []):
        masked = mask is not None and isinstance(m, metrics_module.MeanMetricWrapper)
        m.update_state(y, predictions, weighted if masked else sample_weight)


def _metric_logs(model):
    logs = {}
    for m in model.compiled_metrics + getattr(model, "weighted_metrics", []):
        value = m.result()
        logs[m.name] = float(value) if np.ndim(value) == 0 else np.asarray(value)
    return logs


def _reset_metrics(model):
    for m in model.compiled_metrics + getattr(model, "weighted_metrics", []):
        m.reset_state()


def _check_compiled(model, who):
    if getattr(model, "loss", None) is None or model.optimizer is None:
        raise RuntimeError(f"{who}: compile the model first (model.compile(optimizer, loss))")


# ---- fit ---------------------------------------------------------------------------------------------
def fit(model, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_batch_size=None, validation_freq=1):
    who = "fit"
    _check_compiled(model, who)
    batch_size = _batch_size(batch_size, who)
    verbose = _verbose(verbose, who)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: 'epochs' must be an int >= 0, got {epochs!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: 'validation_split' must be in [0, 1), got {validation_split}")
    x, y, weights = _prepare_training_data(model, x, y, sample_weight, class_weight, who)

    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("fit: 'validation_data' must be (x_val, y_val) or (x_val, y_val, sample_weight_val)")
        vx = prepare_x(model, validation_data[0], "fit (validation_data)")
        vy = prepare_y(model, model.loss, validation_data[1], len(vx), "fit (validation_data)")
        vw = prepare_weights(validation_data[2] if len(validation_data) == 3 else None, len(vx), "fit (validation_data)")
        val = (vx, vy, vw)
    elif validation_split > 0:
        split = int(np.floor(len(x) * (1 - validation_split)))
        if split == 0 or split == len(x):
            raise ValueError(f"fit: validation_split={validation_split} leaves no training or no validation "
                             f"samples out of {len(x)}")
        val = (x[split:], y[split:], None if weights is None else weights[split:])
        x, y = x[:split], y[:split]
        weights = None if weights is None else weights[:split]

    model._ensure_packed()
    n = len(x)
    steps = -(-n // batch_size)
    if steps_per_epoch is not None:
        steps = min(steps, int(steps_per_epoch))
    history = callbacks_module.History()
    cbs = list(callbacks or [])
    if verbose:
        cbs.append(callbacks_module.ProgbarLogger(verbose))
    params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size}
    callback_list = callbacks_module.CallbackList(cbs + [history], model=model, params=params)
    model.stop_training = False
    model.history = history
    generator = _generator()

    step = _Step(model)
    x_batch = np.empty((batch_size,) + x.shape[1:], x.dtype)
    y_batch = np.empty((batch_size,) + y.shape[1:], y.dtype)
    callback_list.on_train_begin()
    logs = {}
    with step:
        for epoch in range(initial_epoch, epochs):
            _reset_metrics(model)
            callback_list.on_epoch_begin(epoch)
            order = generator.permutation(n) if shuffle else np.arange(n)
            loss_total, seen = 0.0, 0
            for b in range(steps):
                callback_list.on_train_batch_begin(b)
                idx = order[b * batch_size:(b + 1) * batch_size]
                m = len(idx)
                xb = np.take(x, idx, axis=0, out=x_batch[:m])
                yb = np.take(y, idx, axis=0, out=y_batch[:m])
                wb = None if weights is None else weights[idx]
                value = _train_step(model, step, xb, yb, wb)
                loss_total += value * m
                seen += m
                logs = {"loss": loss_total / seen, **_metric_logs(model)}
                callback_list.on_train_batch_end(b, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if val is not None and (epoch + 1 - initial_epoch) % validation_freq == 0:
                val_logs = _evaluate_arrays(model, step, *val, validation_batch_size or batch_size, callback_list)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
    callback_list.on_train_end(logs)
    model.optimizer.finalize_variable_values()
    return history


def _train_step(model, step, xb, yb, wb):
    y_out = model.forward(xb, training=True)
    value, grad, predictions = step.loss_and_predictions(y_out, yb, wb, want_grad=True)
    if not np.isfinite(value):
        value = float(value)  # reported as is (TerminateOnNaN can stop on it)
    grad = np.ascontiguousarray(grad, dtype=y_out.dtype)
    model.backward(grad)
    if step.regularized:
        value += step.regularize()
    value += model.activity_penalty
    model.optimizer.apply_flat()
    _update_metrics(model, yb, predictions, wb, step.output_mask(y_out))
    return float(value)


def _generator():
    from .utils import rng

    return rng.global_generator()


# ---- evaluate --------------------------------------------------------------------------------------
def _evaluate_arrays(model, step, x, y, weights, batch_size, callback_list=None):
    _reset_metrics(model)
    n = len(x)
    total = 0.0
    if callback_list is not None:
        callback_list.on_test_begin()
    for b, start in enumerate(range(0, n, batch_size)):
        if callback_list is not None:
            callback_list.on_test_batch_begin(b)
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        wb = None if weights is None else weights[start:start + batch_size]
        y_out = model.forward(xb, training=False, penalties=True)
        value, _, predictions = step.loss_and_predictions(y_out, yb, wb, want_grad=False)
        mask = step.output_mask(y_out)
        total += (float(value) + model.activity_penalty) * len(xb)
        _update_metrics(model, yb, predictions, wb, mask)
        if callback_list is not None:
            callback_list.on_test_batch_end(b, {"loss": total / min(n, start + batch_size), **_metric_logs(model)})
    logs = {"loss": total / n + (step.penalty() if step.regularized else 0.0), **_metric_logs(model)}
    if callback_list is not None:
        callback_list.on_test_end(logs)
    return logs


def evaluate(model, x, y, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None,
             return_dict=False):
    who = "evaluate"
    _check_compiled(model, who)
    batch_size = _batch_size(batch_size, who)
    verbose = _verbose(verbose, who)
    x = prepare_x(model, x, who)
    y = prepare_y(model, model.loss, y, len(x), who)
    weights = prepare_weights(sample_weight, len(x), who)
    if steps is not None:
        x, y = x[:steps * batch_size], y[:steps * batch_size]
        weights = None if weights is None else weights[:len(x)]
    cbs = list(callbacks or [])
    if verbose:
        cbs.append(callbacks_module.ProgbarLogger(verbose))
    callback_list = callbacks_module.CallbackList(
        cbs, model=model, params={"steps": -(-len(x) // batch_size), "verbose": verbose, "evaluating": True})
    with _Step(model) as step:
        logs = _evaluate_arrays(model, step, x, y, weights, batch_size, callback_list)
    if return_dict:
        return logs
    values = [logs["loss"]] + [logs[m.name] for m in model.compiled_metrics + getattr(model, "weighted_metrics", [])]
    return values[0] if len(values) == 1 else values


# ---- one batch --------------------------------------------------------------------------------------
def _batch_logs(model, value, return_dict):
    logs = {"loss": value, **_metric_logs(model)}
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def train_on_batch(model, x, y, sample_weight=None, class_weight=None, return_dict=False):
    who = "train_on_batch"
    _check_compiled(model, who)
    x, y, weights = _prepare_training_data(model, x, y, sample_weight, class_weight, who)
    model._ensure_packed()
    _reset_metrics(model)
    with _Step(model) as step:
        value = _train_step(model, step, x, y, weights)
    return _batch_logs(model, value, return_dict)


def test_on_batch(model, x, y, sample_weight=None, return_dict=False):
    who = "test_on_batch"
    _check_compiled(model, who)
    x = prepare_x(model, x, who)
    y = prepare_y(model, model.loss, y, len(x), who)
    weights = prepare_weights(sample_weight, len(x), who)
    with _Step(model) as step:
        logs = _evaluate_arrays(model, step, x, y, weights, max(len(x), 1))
    return _batch_logs(model, logs["loss"], return_dict)


# ---- predict ------------------------------------------------------------------------------------------
def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    who = "predict"
    batch_size = _batch_size(batch_size, who)
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"predict: 'verbose' must be 'auto', 0, 1 or 2, got {verbose!r}")
    x = prepare_x(model, x, who, finite=False)  # NaN propagates to the outputs, as in NumPy
    if steps is not None:
        x = x[:int(steps) * batch_size]
    n = len(x)
    if n <= batch_size and verbose in ("auto", 0) and not callbacks:
        return model.forward(x, training=False)  # the fast path: one call per layer
    cbs = callbacks_module.CallbackList(list(callbacks or []), model=model, params={"steps": -(-n // batch_size)})
    bar = None
    if verbose in (1, 2):
        from .utils.progbar import Progbar

        bar = Progbar(-(-n // batch_size), verbose)
    cbs.on_predict_begin()
    out = None
    for b, start in enumerate(range(0, n, batch_size)):
        cbs.on_predict_batch_begin(b)
        y = model.forward(x[start:start + batch_size], training=False)
        if out is None:
            out = np.empty((n,) + y.shape[1:], y.dtype)
        out[start:start + len(y)] = y
        cbs.on_predict_batch_end(b, {"outputs": y})
        if bar is not None:
            bar.update(b + 1, finalize=start + batch_size >= n)
    cbs.on_predict_end()
    return out
