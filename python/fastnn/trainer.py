"""The fit / evaluate / predict loops, kept apart from the model container.

They talk to a model through a small protocol: ``prepare_inputs`` (the data as one array per
model input, building an unbuilt model from it), ``model._execution_graph(training)`` (the
graph that runs it), ``model._structure_outputs`` and the compile configuration
(``fastnn.compile_utils``). fit converts the data once (the inputs' dtypes, C-contiguous),
checks all of it before the first update (so bad input never leaves a half-trained model),
and then for each batch: the graph's forward pass, each output's loss value and gradient in
one kernel call (softmax/sigmoid fused with cross-entropy where the output allows it), the
graph's backward pass (weight gradients into the flat buffer), one optimizer call over the
flat parameter buffer, metrics.

Data that yields batches (a generator, a re-iterable iterable, a PyDataset: see
``fastnn.data_adapters``) comes as an iterator of raw batches per epoch; each batch is checked
and converted as arrays are (the messages name the batch) and runs the same fused step.

A model class that overrides ``train_step`` / ``test_step`` / ``predict_step`` (Keras 3) gets
each batch (arrays too, cut into batches) through its override; the defaults are the fused
steps (``train_step`` & co. below), which take the running loop's state from the step context
(``fastnn.loop_guard``: per model and thread). The override is detected once per call, so that
a model without one keeps the fast path.

Which loops may run on a model at once (predict and evaluate from fit's callbacks or from
other threads; one training loop at a time) is ``fastnn.loop_guard``'s: the training loops
hold the model and its step lock, the inference passes go through ``loop_guard.infer``.
"""

import numpy as np

from . import callbacks as callbacks_module
from . import data_adapters
from . import loop_guard
from . import losses as losses_module
from . import metrics as metrics_module
from . import ops
from . import regularizers as regularizers_module
from .distribution import replicas as replicas_module
from .distribution.world import DistributedError
from .layers.base import check_finite
from .structure import flatten, map_leaves, pack_like
from .thread_tuner import ThreadTuner

DEFAULT_BATCH_SIZE = 32


# ---- inputs ------------------------------------------------------------------------------------------
def _as_array(data, name, who):
    if data is None:
        raise ValueError(f"{who}: '{name}' is required")
    arr = np.asarray(data)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: '{name}' must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{who}: '{name}' must have a batch axis, got a scalar")
    return arr


def _is_arrays(data):
    """A list/tuple of several arrays (several inputs), rather than nested lists of numbers."""
    return isinstance(data, (list, tuple)) and any(isinstance(item, np.ndarray) or hasattr(item, "__array__")
                                                   and not isinstance(item, (list, tuple)) for item in data)


def _data_structure(x, who):
    """(flat list, structure) of the data given for the inputs of an unbuilt model."""
    if isinstance(x, dict):
        return list(x.values()), {k: None for k in x}
    if _is_arrays(x):
        return list(x), [None] * len(x)
    return [x], None


def _align_inputs(model, x, who):
    """The data as a flat list in the order of the model's inputs."""
    count = model._input_count()
    names = model.input_names or []
    if isinstance(x, dict):
        if count == 1 and len(x) == 1:
            return list(x.values())
        missing = [n for n in names if n not in x]
        if missing or len(names) != count:
            raise ValueError(f"{who}: 'x' is a dict with keys {sorted(x)}, but the model's inputs are {names}")
        return [x[n] for n in names]
    if _is_arrays(x):
        if len(x) != count:
            if count == 1:
                raise TypeError(f"{who}: 'x' must be one array (this model has one input), got {len(x)} arrays")
            raise ValueError(f"{who}: the model has {count} inputs {names}, got {len(x)} arrays in 'x'")
        return list(x)
    if count != 1:
        raise ValueError(f"{who}: the model has {count} inputs {names}: give 'x' as a list (or a dict keyed by "
                         f"input name) of {count} arrays")
    return [x]


def _convert_input(x, dtype, name, who, finite):
    if not (isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous):
        x = _as_array(x, name, who)
        if dtype.kind in "iu" and x.dtype.kind == "f" and not np.all(np.floor(x) == x):
            raise ValueError(f"{who}: '{name}' must hold integer token ids for this model (its input is read as "
                             f"{dtype.name}), got non-integer values")
        x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim == 0:
        raise ValueError(f"{who}: '{name}' must have a batch axis, got a scalar")
    if len(x) == 0:
        raise ValueError(f"{who}: '{name}' is empty")
    if finite:
        check_finite(x, who, name)
    return x


def _data_dtype(x, float_dtype):
    kind = np.asarray(x).dtype.kind if not isinstance(x, np.ndarray) else x.dtype.kind
    return np.dtype("int64") if kind in "iub" else np.dtype(float_dtype)


def prepare_inputs(model, x, who, finite=True):
    """x as a list of arrays, one per model input, converted to the inputs' dtypes and checked
    (`finite`: refuse NaN/inf, for training data). An unbuilt model is built from x."""
    if x is None:
        raise ValueError(f"{who}: 'x' is required")
    if not model.built:
        flat, structure = _data_structure(x, who)
        names = [f"x[{i}]" for i in range(len(flat))] if len(flat) > 1 else ["x"]
        flat = [_convert_input(v, _data_dtype(v, model.dtype), n, who, finite) for v, n in zip(flat, names)]
        model._build_on_data(flat, structure)
    specs = model._flat_input_specs
    if len(specs) == 1 and isinstance(x, np.ndarray):  # the common case, kept cheap (predict latency)
        shape, dtype = specs[0]
        if x.dtype == dtype and x.flags.c_contiguous and len(x) and x.shape[1:] == shape[1:]:
            if finite:
                check_finite(x, who, "x")
            return [x]
    flat = _align_inputs(model, x, who)
    names = ["x"] if len(flat) == 1 else [f"x[{name!r}]" for name in (model.input_names or range(len(flat)))]
    arrays = [_convert_input(v, dtype, name, who, finite) for v, (shape, dtype), name in zip(flat, specs, names)]
    for arr, (shape, _), name in zip(arrays, specs, names):
        _check_features(arr, shape, name, who, model)
    n = len(arrays[0])
    for arr, name in zip(arrays[1:], names[1:]):
        if len(arr) != n:
            raise ValueError(f"{who}: the inputs have different numbers of samples ({names[0]}: {n}, {name}: "
                             f"{len(arr)})")
    return arrays


def _check_features(x, shape, name, who, model):
    expected = tuple(shape[1:])
    got = x.shape[1:]
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(f"{who}: '{name}' has per-sample shape {got} but the model expects {expected} "
                         f"(input_shape {model.input_shape})")


# ---- targets and weights -----------------------------------------------------------------------------
def _align_targets(compiled, y, who):
    outputs = compiled.outputs
    names = [o.name for o in outputs]
    if len(outputs) == 1:
        if isinstance(y, dict) and len(y) == 1:
            return list(y.values())
        if isinstance(y, (list, tuple)) and len(y) == 1 and isinstance(y[0], np.ndarray):
            return [y[0]]
        return [y]
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise ValueError(f"{who}: 'y' has keys {unknown} that are not outputs of the model; its outputs are "
                             f"{names}")
        return [y.get(n) for n in names]
    if isinstance(y, (list, tuple)) and len(y) == len(outputs):
        return list(y)
    raise ValueError(f"{who}: the model has {len(outputs)} outputs {names}: give 'y' as a list (or a dict keyed by "
                     f"output name) of {len(outputs)} arrays")


def prepare_targets(model, compiled, y, n, who):
    """y as a list, one array per output (None for an output without a loss), checked."""
    if y is None:
        raise ValueError(f"{who}: 'y' is required")
    ys = _align_targets(compiled, y, who)
    shapes = _output_shapes(model)
    out = []
    single = len(ys) == 1
    for output, target, shape in zip(compiled.outputs, ys, shapes):
        name = "y" if single else f"y[{output.name!r}]"
        if output.loss is None:
            out.append(None)
            continue
        if target is None:
            raise ValueError(f"{who}: no target for output '{output.name}', which has a loss")
        out.append(_prepare_target(model, output.loss, target, n, shape, name, who))
    return out


def _output_shapes(model):
    graph = model._execution_graph(False)
    return [t.shape for t in graph.outputs]


def _prepare_target(model, loss, y, n, out_shape, name, who):
    y = _as_array(y, name, who)
    if len(y) != n:
        raise ValueError(f"{who}: 'x' has {n} samples but '{name}' has {len(y)}")
    if isinstance(loss, losses_module.SparseCategoricalCrossentropy):
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(np.floor(y) == y):
                raise ValueError(f"{who}: '{name}' must hold integer class labels for {loss.name}")
        labels = y.astype(np.int64)
        classes = out_shape[-1]
        if labels.size and (labels.min() < 0 or (classes is not None and labels.max() >= classes)):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise ValueError(f"{who}: label {bad} in '{name}' is outside [0, {classes}) for the model's "
                             f"{classes} outputs ({loss.name})")
        return labels
    y = np.ascontiguousarray(y, dtype=model._float_dtype())
    check_finite(y, who, name)
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


def _prepare_output_weights(compiled, sample_weight, n, who, name="sample_weight"):
    """One weight array (or None) per output: one array for all, or a list / dict per output."""
    outputs = compiled.outputs
    if isinstance(sample_weight, dict):
        return [prepare_weights(sample_weight.get(o.name), n, who, f"{name}[{o.name!r}]") for o in outputs]
    if isinstance(sample_weight, (list, tuple)) and len(outputs) > 1 and len(sample_weight) == len(outputs) \
            and all(w is None or np.ndim(w) >= 1 for w in sample_weight) and _is_arrays(sample_weight):
        return [prepare_weights(w, n, who, f"{name}[{i}]") for i, w in enumerate(sample_weight)]
    w = prepare_weights(sample_weight, n, who, name)
    return [w] * len(outputs)


def _class_weights(class_weight, y, who):
    labels = y if y.ndim == 1 else (y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1))
    labels = labels.astype(np.int64)
    w = np.ones(len(labels))
    for cls, weight in class_weight.items():
        w[labels == int(cls)] = float(weight)
    return w


def _prepare_data(model, x, y, sample_weight, who):
    """Inputs, targets and per-output sample weights, checked (the model built from x if needed)."""
    xs = prepare_inputs(model, x, who)
    compiled = _resolve_compiled(model)
    n = len(xs[0])
    return xs, prepare_targets(model, compiled, y, n, who), _prepare_output_weights(compiled, sample_weight, n, who)


def _prepare_training_data(model, x, y, sample_weight, class_weight, who):
    """Inputs, targets and per-output sample weights (sample_weight times class_weight), checked."""
    xs, ys, weights = _prepare_data(model, x, y, sample_weight, who)
    if class_weight is not None:
        if len(ys) != 1:
            raise ValueError(f"{who}: 'class_weight' is for models with one output; give sample_weight per output "
                             "instead")
        cw = _class_weights(class_weight, ys[0], who)
        weights = [cw if weights[0] is None else weights[0] * cw]
    return xs, ys, weights


def _resolve_compiled(model):
    """The compile configuration spread over the model's (now known) outputs."""
    compiled = model._compiled
    compiled.resolve(model.output_names)
    model.loss = compiled.loss_structure
    model.compiled_metrics = compiled.all_metrics
    model.weighted_metrics = compiled.all_weighted_metrics
    return compiled


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


# ---- the training step ---------------------------------------------------------------------------------
class _Regularization:
    """Weight penalties: L1/L2 of weights in the flat buffer as one fused kernel call (penalty and
    gradient in one pass); other regularizers in Python."""

    def __init__(self, model):
        self.model = model
        self.regularized = [v for v in model.trainable_weights if v.regularizer is not None]
        self.fused, self.python = [], []
        params = model._params
        segments = []
        for v in self.regularized:
            if type(v.regularizer) in (regularizers_module.L1, regularizers_module.L2, regularizers_module.L1L2) \
                    and params is not None and np.shares_memory(v.value, params):
                start = (v.value.__array_interface__["data"][0] - params.__array_interface__["data"][0]) // params.itemsize
                segments.append((start, start + v.value.size, v.regularizer.l1, v.regularizer.l2))
                self.fused.append(v)
            else:
                self.python.append(v)
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
        self._offsets = np.array(offsets, np.int64)
        self._l1, self._l2 = np.array(l1), np.array(l2)

    def penalty(self):
        """The weight penalties (for evaluation: no gradient)."""
        return sum(v.regularizer.penalty(v.value) for v in self.regularized)

    def apply(self):
        """Adds the penalties' gradients to the weights' gradients; returns the penalty."""
        total = 0.0
        if self.fused:
            params, grads = self.model._params, self.model._grads
            total += ops.l1_l2_regularize(params[:grads.size], grads, self._offsets, self._l1, self._l2)
        for v in self.python:
            total += v.regularizer.penalty(v.value)
            v.grad += v.regularizer.gradient(v.value).astype(v.grad.dtype, copy=False)
        return total


class _Step:
    """What a compiled model needs per batch: the graphs, each output's effective loss, the
    steps that output logits, the regularization plan, and the running logs.

    private_metrics: the compiled metrics are another loop's (fit's, while this evaluate runs
    from its callback or another thread): accumulate into fresh copies of them instead.
    """

    def __init__(self, model, training, private_metrics=False):
        self.model = model
        self.training = training
        self.guard = loop_guard.guard(model)
        self.compiled = _resolve_compiled(model)
        if private_metrics:
            self.compiled = loop_guard.private_compiled(self.compiled)
        self.outputs = self.compiled.outputs
        self.graph = model._execution_graph(training)
        self.effective, logits = self.compiled.fusion(self.graph)
        self.logits = logits or None
        self.regularization = _Regularization(model)
        self.eval_graph = model._execution_graph(False) if training else self.graph
        self.eval_effective, eval_logits = self.compiled.fusion(self.eval_graph)
        self.eval_logits = eval_logits or None
        # data parallelism (fastnn.distribution.replicas): set by the loop when it spans processes
        self.replicas = None
        self.gradient_scale = 1.0  # this process's share of the global batch, for mean losses
        self.sync_batch_logs = True  # sum each batch's logs over the processes (some callback reads them)
        self.sync_test_logs = True  # the same for evaluation batches
        self.agree_stop = True  # agree on stop_training at each batch (some callback may set it alone)
        self.reset_logs()

    def reset_logs(self):
        self.seen = 0
        self.total = 0.0
        self.per_output = [0.0] * len(self.outputs)

    @staticmethod
    def _loss_weights(loss, mask, y_out, sample_weight):
        """Keras: masked rows weigh 0 and, for a mean, the valid ones total/valid, so that the
        loss is the mean over the valid rows."""
        if np.shape(mask) != y_out.shape[:-1]:
            return sample_weight, None
        mask = np.asarray(mask, bool)
        weights = mask.astype(np.float64)
        if getattr(loss, "reduction", None) in ("sum_over_batch_size", "mean"):
            weights *= weights.size / (weights.sum() + 1e-7)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float64)
            weights = weights * sw.reshape(sw.shape + (1,) * (weights.ndim - sw.ndim))
        return weights, mask

    def losses(self, outputs, masks, ys, ws, effective, want_grad):
        """(total, per-output values, gradients, predictions, masks) of one batch."""
        total, values, grads, predictions, used_masks = 0.0, [], [], [], []
        for i, (out, (loss, fused)) in enumerate(zip(outputs, effective)):
            config = self.outputs[i]
            if loss is None:
                values.append(None)
                grads.append(None)
                predictions.append(out)
                used_masks.append(None)
                continue
            weights, mask = ws[i], None
            if masks is not None and masks[i] is not None:
                weights, mask = self._loss_weights(loss, masks[i], out, ws[i])
            if fused:
                value, grad, pred = loss.value_and_grad(ys[i], out, weights, want_grad=want_grad, want_probs=True)
            else:
                (value, grad), pred = loss.value_and_grad(ys[i], out, weights, want_grad=want_grad), out
            value = float(value)  # NaN or inf reported as they are (TerminateOnNaN can stop on them)
            total += value * config.weight
            if grad is not None:
                factor = config.weight
                if self.gradient_scale != 1.0 and getattr(loss, "reduction", None) == "sum_over_batch_size":
                    factor *= self.gradient_scale  # the global batch's mean over the processes' shares
                if factor != 1.0:
                    grad = grad * grad.dtype.type(factor)
                grad = np.ascontiguousarray(grad, dtype=out.dtype)
            values.append(value)
            grads.append(grad)
            predictions.append(pred)
            used_masks.append(mask)
        return total, values, grads, predictions, used_masks

    def record(self, total, values, m):
        self.total += total * m
        self.seen += m
        for i, v in enumerate(values):
            if v is not None:
                self.per_output[i] += v * m

    def logs(self, sync=True):
        """The running loss and metrics: over every process's share in data-parallel loops
        (sync=False: this process's share alone, for batches no callback reads)."""
        if self.replicas is not None and sync:
            return self.replicas.global_logs(self, self._local_logs)
        return self._local_logs()

    def _local_logs(self):
        logs = {"loss": self.total / self.seen if self.seen else 0.0}
        if not self.compiled.single:
            for o, v in zip(self.outputs, self.per_output):
                if o.loss is not None:
                    logs[f"{o.name}_loss"] = v / self.seen if self.seen else 0.0
        logs.update(_metric_logs(self.compiled))
        return logs


def _update_metrics(compiled, ys, predictions, ws, masks):
    """Each output's metrics; a mask (padded steps) is skipped by every metric, as in Keras."""
    for output, y, pred, sample_weight, mask in zip(compiled.outputs, ys, predictions, ws, masks):
        if y is None:
            continue
        weighted = sample_weight
        if mask is not None:
            weighted = mask.astype(np.float64)
            if sample_weight is not None:
                sw = np.asarray(sample_weight, np.float64)
                weighted = weighted * sw.reshape(sw.shape + (1,) * (weighted.ndim - sw.ndim))
        for m in output.metrics:
            if mask is not None and isinstance(m, metrics_module.MeanMetricWrapper):
                m.update_state(y, pred, mask.astype(np.float64))
            else:
                m.update_state(y, pred)
        for m in output.weighted_metrics:
            masked = mask is not None and isinstance(m, metrics_module.MeanMetricWrapper)
            m.update_state(y, pred, weighted if masked else sample_weight)


def _metric_logs(compiled):
    logs = {}
    for output in compiled.outputs:
        for m in output.metrics + output.weighted_metrics:
            value = m.result()
            logs[compiled.metric_key(output, m)] = float(value) if np.ndim(value) == 0 else np.asarray(value)
    return logs


def _reset_metrics(compiled):
    for m in compiled.all_metrics + compiled.all_weighted_metrics:
        m.reset_state()


def _check_compiled(model, who):
    if model._compiled is None or model.optimizer is None:
        raise RuntimeError(f"{who}: compile the model first (model.compile(optimizer, loss))")


class _Metrics:
    """``with _Metrics(model) as private:`` the loop uses the compiled metrics, or (private True)
    fresh copies of them when another loop (fit, an evaluate in another thread) is using them."""

    __slots__ = ("model", "claimed")

    def __init__(self, model):
        self.model = model
        self.claimed = False

    def __enter__(self):
        self.claimed = loop_guard.claim_metrics(self.model)
        return not self.claimed

    def __exit__(self, *exc):
        if self.claimed:
            loop_guard.release_metrics(self.model)
        return False


def _ensure_packed(model):
    """model._ensure_packed() (which may move the weights to new buffers) under the step lock."""
    guard = loop_guard.guard(model)
    loop_guard.step_begin(guard)
    try:
        model._ensure_packed()
    finally:
        loop_guard.step_end(guard)


def _train_step(model, step, xs, ys, ws):
    guard = step.guard
    replicas = step.replicas
    loop_guard.step_begin(guard)  # the weights change: inference from other threads waits for the step
    try:
        overlapped = None if replicas is None else replicas.overlapped_sum(model, step.graph)
        penalty = 0.0
        if xs is None:  # data parallelism: no share of this batch on this process (it adds zeros)
            total, values = 0.0, [None] * len(step.outputs)
            model._grads.fill(0)
        else:
            outputs, tape = step.graph.forward(xs, True, logits=step.logits, recycle=True)
            total, values, grads, predictions, masks = step.losses(outputs, tape.output_masks, ys, ws,
                                                                   step.effective, True)
            step.graph.backward(tape, grads, after_node=None if overlapped is None else overlapped.hook)
            # activity penalties are sums over the batch: each process's counts whole in the logs
            penalty = tape.penalty / step.gradient_scale if replicas is not None else tape.penalty
        if overlapped is not None:
            overlapped.finish()  # the gradients summed over the processes, bucket by bucket
        elif replicas is not None:
            replicas.reduce_gradients(model._grads)  # the hook after the backward: one all-reduce
        if step.regularization.regularized:
            total += step.regularization.apply()  # after the all-reduce: the weight penalty once
        total += penalty
        model.optimizer.apply_flat()
    finally:
        loop_guard.step_end(guard)
    if xs is not None:
        _update_metrics(step.compiled, ys, predictions, ws, masks)
    return float(total), values


def _custom_train_step(model, step, data, who):
    """A train_step override's call: in the loop's step context (for the default train_step it
    may call), under the step lock (as the fused step)."""
    context = _enter_context(model, step, who)
    loop_guard.step_begin(step.guard)
    try:
        return _step_logs(model.train_step(data), "train_step")
    finally:
        loop_guard.step_end(step.guard)
        _leave_context(model, context)


def _in_context(model, step, who, fn, *args):
    """fn(*args) (a test_step / predict_step override) in the loop's step context."""
    context = _enter_context(model, step, who)
    try:
        return fn(*args)
    finally:
        _leave_context(model, context)


# ---- batch sources and step overrides ----------------------------------------------------------------------
DEFAULT_STEPS = {}  # name -> Model's own train_step / test_step / predict_step (models/model.py fills it)


def _overridden(model, name):
    """Whether the model's class overrides Model's step method `name` (fit and co. then call it)."""
    return getattr(type(model), name) is not DEFAULT_STEPS[name]


class _StepContext:
    """What the default train_step / test_step, called by an override, take from the running loop:
    its step state (so that the running loss and metrics are the loop's) and the batch's name.
    Kept per model and thread (a predict in another thread has its own)."""

    __slots__ = ("step", "who", "saved")

    def __init__(self, model, step, who):
        self.step, self.who = step, who
        self.saved = loop_guard.context(model)


def _enter_context(model, step, who):
    context = _StepContext(model, step, who)
    loop_guard.set_context(model, context)
    return context


def _leave_context(model, context):
    loop_guard.set_context(model, context.saved)


def _steps(value, name, who):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: '{name}' must be a positive int or None, got {value!r}")
    return int(value)


def _as_structure(data):
    """`data` (an array-like, or a list / dict of them) with NumPy arrays as leaves."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: None if v is None else np.asarray(v) for k, v in data.items()}
    if _is_arrays(data):
        return [None if v is None else np.asarray(v) for v in data]
    return np.asarray(data)


def _cut(structure, start, stop):
    """Samples start:stop of each array in `structure`."""
    return map_leaves(structure, lambda a: None if a is None else a[start:stop])


def _restructure_inputs(model, x, flat):
    """The converted inputs `flat` in the structure the user gave x in (a dict by input name, a
    list, or one array), as step overrides receive them."""
    if isinstance(x, dict):
        keys = list(x) if len(flat) == 1 and len(x) == 1 else model.input_names
        return dict(zip(keys, flat))
    if _is_arrays(x):
        return type(x)(flat) if isinstance(x, (list, tuple)) else list(flat)
    return flat[0]


def _source(adapter, steps, who, name="'x'", restart=False):
    return data_adapters.EpochIterator(adapter, steps, restart=restart, who=who, name=name)


def _first_batch(model, source, who, targets):
    """Checks that the source yields a batch; builds an unbuilt model from it."""
    batch = source.first_batch()
    if batch is None:
        raise ValueError(f"{who}: {source.description} yielded no batch")
    if not model.built:
        x, _, _ = data_adapters.standardize_batch(batch, f"{who} (batch 0 of {source.description})", targets)
        prepare_inputs(model, x, f"{who} (batch 0 of {source.description})", finite=False)


def _batch_who(who, source, b, epoch=None):
    where = f"batch {b} of {source.description}" if epoch is None else \
        f"epoch {epoch + 1}, batch {b} of {source.description}"
    return f"{who} ({where})"


def _step_data(model, batch, who, targets, class_weight=None):
    """A raw batch as a step override receives it: ``(x, y[, sample_weight])`` (or x), x checked
    and converted to the model's input dtypes in the structure given, y and sample_weight as
    NumPy arrays (sample_weight times class_weight)."""
    x, y, sample_weight = data_adapters.standardize_batch(batch, who, targets)
    x = _restructure_inputs(model, x, prepare_inputs(model, x, who, finite=targets))
    if not targets:
        return data_adapters.pack_x_y_sample_weight(x)
    if class_weight is not None:
        xs, ys, ws = _prepare_training_data(model, x, y, sample_weight, class_weight, who)
        sample_weight = ws[0]
    return data_adapters.pack_x_y_sample_weight(x, y, sample_weight)


def _step_logs(logs, name):
    if logs is None:
        return {}
    if not isinstance(logs, dict):
        raise TypeError(f"{name} must return a dict of logs (e.g. {{'loss': value}}), got {type(logs).__name__}")
    return logs


# ---- the steps fit / evaluate / predict run per batch (Model.train_step & co. default to these) -----
def train_step(model, data):
    """One fused training step on the batch `data` (Model.train_step's default); returns the logs."""
    x, y, sample_weight = data_adapters.unpack_x_y_sample_weight(data)
    context = loop_guard.context(model)
    if context is None or context.step is None or not context.step.training:  # called directly, not by fit
        _check_compiled(model, "train_step")
        with loop_guard.Training(model, "train_step"):
            xs, ys, ws = _prepare_data(model, x, y, sample_weight, "train_step")
            _ensure_packed(model)
            with _Metrics(model) as private:
                step = _Step(model, training=True, private_metrics=private)
                total, values = _train_step(model, step, xs, ys, ws)
                step.record(total, values, len(xs[0]))
                return step.logs()
    step = context.step
    xs, ys, ws = _prepare_data(model, x, y, sample_weight, context.who)
    total, values = _train_step(model, step, xs, ys, ws)
    step.record(total, values, len(xs[0]))
    return step.logs()


def _test_batch(step, xb, yb, wb):
    outputs, tape = loop_guard.infer(step.model, step.eval_graph.forward, xb, False, logits=step.eval_logits,
                                     penalties=True)
    total, values, _, predictions, masks = step.losses(outputs, tape.output_masks, yb, wb, step.eval_effective, False)
    step.record(total + tape.penalty, values, len(xb[0]))
    _update_metrics(step.compiled, yb, predictions, wb, masks)


def _evaluation_logs(step):
    logs = step.logs()
    if step.regularization.regularized:
        logs["loss"] += loop_guard.infer(step.model, step.regularization.penalty)
    return logs


def test_step(model, data):
    """One evaluation step on the batch `data` (Model.test_step's default); returns the logs."""
    x, y, sample_weight = data_adapters.unpack_x_y_sample_weight(data)
    context = loop_guard.context(model)
    if context is None or context.step is None:  # called directly, not by evaluate or fit's validation
        if model._compiled is None:
            raise RuntimeError("test_step: compile the model first (model.compile(optimizer, loss))")
        xs, ys, ws = _prepare_data(model, x, y, sample_weight, "test_step")
        with _Metrics(model) as private:
            step = _Step(model, training=False, private_metrics=private)
            _test_batch(step, xs, ys, ws)
            return _evaluation_logs(step)
    step = context.step
    xs, ys, ws = _prepare_data(model, x, y, sample_weight, context.who)
    _test_batch(step, xs, ys, ws)
    return _evaluation_logs(step)


def predict_step(model, data):
    """The model's outputs for the batch `data` (Model.predict_step's default)."""
    x, _, _ = data_adapters.unpack_x_y_sample_weight(data)
    context = loop_guard.context(model)
    xs = prepare_inputs(model, x, "predict_step" if context is None else context.who, finite=False)
    outputs, _ = loop_guard.infer(model, model._execution_graph(False).forward, xs)
    return model._structure_outputs(outputs)


def compute_loss(model, x, y, y_pred, sample_weight, want_grad, who):
    """(total loss, its gradient with respect to y_pred or None) for Model.compute_loss and
    compute_loss_and_grad: the compiled losses, weighted, plus the weight regularizers' penalties."""
    if model._compiled is None:
        raise RuntimeError(f"{who}: compile the model first (model.compile(optimizer, loss))")
    compiled = _resolve_compiled(model)
    preds = [np.asarray(p) for p in _align_targets(compiled, y_pred, f"{who} ('y_pred')")]
    n = len(preds[0])
    ys = prepare_targets(model, compiled, y, n, who)
    ws = _prepare_output_weights(compiled, sample_weight, n, who)
    total, grads = 0.0, []
    for output, target, pred, weight in zip(compiled.outputs, ys, preds, ws):
        if output.loss is None:
            grads.append(None)
            continue
        value, grad = output.loss.value_and_grad(target, pred, weight, want_grad=want_grad)
        total += float(value) * output.weight
        if grad is not None and output.weight != 1.0:
            grad = grad * grad.dtype.type(output.weight)
        grads.append(grad)
    total += _Regularization(model).penalty()
    if not want_grad:
        return total, None
    if len(grads) == 1 and not isinstance(y_pred, (list, tuple, dict)):
        return total, grads[0]
    if isinstance(y_pred, dict):
        return total, dict(zip(model.output_names, grads))
    return total, grads


def compute_metrics(model, x, y, y_pred, sample_weight):
    """Updates the compiled metrics with one batch; returns their results (Model.compute_metrics)."""
    if model._compiled is None:
        raise RuntimeError("compute_metrics: compile the model first (model.compile(optimizer, loss))")
    compiled = _resolve_compiled(model)
    context = loop_guard.context(model)
    if context is not None and context.step is not None:  # from a step override: the running loop's metrics
        compiled = context.step.compiled
    preds = [np.asarray(p) for p in _align_targets(compiled, y_pred, "compute_metrics ('y_pred')")]
    n = len(preds[0])
    ys = prepare_targets(model, compiled, y, n, "compute_metrics")
    ws = _prepare_output_weights(compiled, sample_weight, n, "compute_metrics")
    _update_metrics(compiled, ys, preds, ws, [None] * len(preds))
    return _metric_logs(compiled)


# ---- fit ---------------------------------------------------------------------------------------------------
def _take(arrays, idx, buffers):
    """The batch `idx` of each array, gathered into its preallocated buffer."""
    m = len(idx)
    if len(arrays) == 1 and arrays[0] is not None:  # the common case, without the loop
        return [np.take(arrays[0], idx, axis=0, out=buffers[0][:m])]
    return [None if a is None else np.take(a, idx, axis=0, out=b[:m]) for a, b in zip(arrays, buffers)]


def _buffers(arrays, batch_size):
    return [None if a is None else np.empty((batch_size,) + a.shape[1:], a.dtype) for a in arrays]


def _slice(arrays, start, stop):
    return [None if a is None else a[start:stop] for a in arrays]


def fit(model, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
    """Model.fit: holds the model for training (a second training loop on it meanwhile raises) and
    its compiled metrics (an evaluate meanwhile uses copies), then trains (_fit)."""
    _check_compiled(model, "fit")
    with loop_guard.Training(model, "fit"), _Metrics(model) as private, _failures_told():
        return _fit(model, x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle,
                    class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_steps,
                    validation_batch_size, validation_freq, private)


class _failures_told:
    """``with _failures_told():`` an error in a data-parallel loop is told to the other processes
    (which would otherwise wait for this one in the next collective) before it propagates."""

    def __enter__(self):
        self.replicas = replicas_module.for_model(None)
        return self

    def __exit__(self, kind, error, tb):
        if self.replicas is not None and error is not None and not isinstance(error, DistributedError) \
                and not getattr(error, "raised_by_every_process", False):
            self.replicas.world.fail(error)
        return False


def _start_replicas(model, step, who, optimizer):
    """Data parallelism: the same model and weights everywhere (rank 0's), then the loop's step
    knows its replicas. Returns them (None on one process)."""
    replicas = replicas_module.for_model(model)
    if replicas is not None:
        loop_guard.step_begin(step.guard)
        try:
            replicas.synchronize(model, who, training=optimizer)
        finally:
            loop_guard.step_end(step.guard)
        step.replicas = replicas
    return replicas


def _rank_zero_callbacks(callbacks, replicas, step=None, training=True):
    """The callbacks that write (progress bar, logs, TensorBoard) run on rank 0 only. With
    `step`, also agrees with the other processes whether any callback reads each batch's logs
    (else they are summed over the processes once, at the end) and whether any may stop
    training on its own (else stop_training needs no agreement at each batch)."""
    if replicas is None:
        return callbacks
    if replicas.rank != 0:
        callbacks = [cb for cb in callbacks if not getattr(cb, "rank_zero_only", False)]
    if step is not None:
        reads = any(cb._reads_batch_logs(True) for cb in callbacks) if training else False
        reads_test = any(cb._reads_batch_logs(False) for cb in callbacks)
        stops = training and any(cb._may_stop_on_its_own() for cb in callbacks)
        flags = replicas.world.allgather_json([reads, reads_test, stops])
        step.sync_batch_logs = any(f[0] for f in flags)
        step.sync_test_logs = any(f[1] for f in flags)
        step.agree_stop = any(f[2] for f in flags)
    return callbacks


def _fit(model, x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle,
         class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_steps, validation_batch_size,
         validation_freq, private_metrics):
    who = "fit"
    verbose = _verbose(verbose, who)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: 'epochs' must be an int >= 0, got {epochs!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: 'validation_split' must be in [0, 1), got {validation_split}")
    steps_per_epoch = _steps(steps_per_epoch, "steps_per_epoch", who)
    validation_steps = _steps(validation_steps, "validation_steps", who)
    adapter = data_adapters.get_data_adapter(x, who, y=y, sample_weight=sample_weight, batch_size=batch_size,
                                             shuffle=shuffle, validation_split=validation_split)
    custom = _overridden(model, "train_step")
    val_arrays = val_user = None
    if adapter is None:
        batch_size = _batch_size(batch_size, who)
        xs, ys, weights, val_arrays, val_user, adapter = _training_arrays(
            model, x, y, sample_weight, class_weight, validation_split if validation_data is None else 0.0,
            batch_size, shuffle, custom, who)
        if adapter is not None:  # the override's batches: class weights are in their sample weights
            class_weight = None
            steps_per_epoch = min(steps_per_epoch or adapter.num_batches, adapter.num_batches)
    source = None if adapter is None else _source(adapter, steps_per_epoch, who)
    validation = None
    try:
        if source is not None:
            _first_batch(model, source, who, targets=True)
        validation = _Validation(model, validation_data, val_arrays, val_user, validation_steps, batch_size,
                                 validation_batch_size)
        _ensure_packed(model)
        step = _Step(model, training=True, private_metrics=private_metrics)
        replicas = _start_replicas(model, step, who, optimizer=True)
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        if source is None:
            n = len(xs[0])
            steps = -(-n // batch_size)
            if replicas is not None and not replicas.auto_shard:  # each process its own data
                steps = replicas.agree_steps(-(-n // max(1, replicas.share(batch_size)[1]
                                                         - replicas.share(batch_size)[0])))
            if steps_per_epoch is not None:
                steps = min(steps, int(steps_per_epoch))
        else:
            steps = source.num_batches
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size}
        if replicas is not None:
            params["processes"] = replicas.describe()
        callback_list = callbacks_module.CallbackList(_rank_zero_callbacks(cbs, replicas, step) + [history],
                                                      model=model, params=params)
        model.stop_training = False
        model.history = history
        if source is None:
            run_epoch = _array_epochs(model, step, callback_list, xs, ys, weights, n, steps, batch_size, shuffle)
        else:
            run_epoch = _source_epochs(model, step, callback_list, source, who, class_weight, custom)
        _train_epochs(model, step, callback_list, epochs, initial_epoch, run_epoch, validation, validation_freq,
                      source)
    finally:
        replicas_module.finish()
        if source is not None:
            source.close()
        if validation is not None:
            validation.close()
    return history


def _training_arrays(model, x, y, sample_weight, class_weight, validation_split, batch_size, shuffle, custom, who):
    """fit's arrays, converted and checked: (xs, ys, weights, validation arrays or None, the
    validation data as a test_step override gets it or None, the training batches for a
    train_step override (an ArrayAdapter) or None)."""
    xs, ys, weights = _prepare_training_data(model, x, y, sample_weight, class_weight, who)
    user_y, user_weight = (_as_structure(y), _as_structure(sample_weight)) if custom else (None, None)
    val_arrays = val_user = adapter = None
    if validation_split > 0:
        n_all = len(xs[0])
        split = int(np.floor(n_all * (1 - validation_split)))
        if split == 0 or split == n_all:
            raise ValueError(f"fit: validation_split={validation_split} leaves no training or no validation "
                             f"samples out of {n_all}")
        val_arrays = (_slice(xs, split, None), _slice(ys, split, None), _slice(weights, split, None))
        val_user = (_restructure_inputs(model, x, val_arrays[0]), _cut(user_y, split, None),
                    _cut(user_weight, split, None))
        user_y, user_weight = _cut(user_y, 0, split), _cut(user_weight, 0, split)
        xs, ys, weights = _slice(xs, 0, split), _slice(ys, 0, split), _slice(weights, 0, split)
    if custom:  # batches of the arrays as given (class weights folded into the sample weights)
        adapter = data_adapters.ArrayAdapter(_restructure_inputs(model, x, xs), user_y,
                                             weights[0] if class_weight is not None else user_weight,
                                             len(xs[0]), batch_size, shuffle=shuffle)
    return xs, ys, weights, val_arrays, val_user, adapter


def _array_epochs(model, step, callback_list, xs, ys, weights, n, steps, batch_size, shuffle):
    """One epoch over arrays: the fast path (batches gathered into preallocated buffers)."""
    generator = _generator()
    x_buffers, y_buffers = _buffers(xs, batch_size), _buffers(ys, batch_size)
    unweighted = all(w is None for w in weights)

    replicas = step.replicas
    local_batch = batch_size
    if replicas is not None and not replicas.auto_shard:  # each process its own data: its share per step
        start, stop = replicas.share(batch_size)
        local_batch = max(1, stop - start)

    def run_epoch(epoch, tuner):
        logs = {}
        order = generator.permutation(n) if shuffle else np.arange(n)
        for b in range(steps):
            callback_list.on_train_batch_begin(b)
            idx = order[b * local_batch:(b + 1) * local_batch]
            global_size = len(idx)
            if replicas is not None:
                if replicas.auto_shard:
                    idx = replicas.local(idx)
                else:
                    global_size = replicas.global_size(len(idx))
                step.gradient_scale = len(idx) / global_size if global_size else 0.0
            tuner.step_begin()
            if len(idx):
                xb, yb = _take(xs, idx, x_buffers), _take(ys, idx, y_buffers)
                wb = weights if unweighted else [None if w is None else w[idx] for w in weights]
            else:
                xb = yb = wb = None
            total, values = _train_step(model, step, xb, yb, wb)
            tuner.step_end(measure=len(idx) == local_batch)
            step.record(total, values, len(idx))
            logs = step.logs(sync=step.sync_batch_logs)
            callback_list.on_train_batch_end(b, logs)
            if _stopping(model, step):
                break
        return _epoch_logs(step, logs)

    return run_epoch


def _epoch_logs(step, logs):
    """The epoch's logs over every process (already, when each batch's were)."""
    if step.replicas is None or step.sync_batch_logs or not logs:
        return logs
    return step.logs()


def _source_epochs(model, step, callback_list, source, who, class_weight, custom):
    """One epoch over the batches of a source, each checked as arrays are (naming the batch), or
    handed to the model's train_step override. The thread tuner times the steps alone (not the
    wait for a batch), and only those of the first batch's size."""
    sizes = []

    def run_epoch(epoch, tuner):
        logs = {}
        batches = source.epoch()
        for b, batch in batches:
            callback_list.on_train_batch_begin(b)
            batch_who = _batch_who(who, source, b, epoch)
            if custom:
                data = _step_data(model, batch, batch_who, True, class_weight)
                size = len(flatten(data[0])[0])
                tuner.step_begin()
                if step.replicas is not None:
                    data, share = _shared_data(step, data, size)
                    logs = _replicated_custom_step(model, step, data, share, size, batch_who)
                else:
                    logs = _custom_train_step(model, step, data, batch_who)
            else:
                x, y, sample_weight = data_adapters.standardize_batch(batch, batch_who, targets=True)
                xb, yb, wb = _prepare_training_data(model, x, y, sample_weight, class_weight, batch_who)
                size = len(xb[0])
                share = size
                if step.replicas is not None:
                    xb, yb, wb, share = _shared_arrays(step, xb, yb, wb)
                    step.gradient_scale = share / size if size else 0.0
                tuner.step_begin()
                total, values = _train_step(model, step, xb, yb, wb)
                step.record(total, values, share)
                logs = step.logs(sync=step.sync_batch_logs)
            sizes[:] = sizes or [size]
            tuner.step_end(measure=size == sizes[0])
            callback_list.on_train_batch_end(b, logs)
            if _stopping(model, step):
                break
        batches.close()
        return logs if custom else _epoch_logs(step, logs)

    return run_epoch


def _stopping(model, step):
    """model.stop_training, in data parallelism agreed by every process (a callback may set it on
    one alone, from what that process saw): all stop when one does, at the same batch."""
    if step.replicas is None or not step.agree_stop:
        return model.stop_training
    model.stop_training = step.replicas.world.any(bool(model.stop_training))
    return model.stop_training


def _shared_arrays(step, xs, ys, ws):
    """This process's share of a batch of arrays (None for none): (xs, ys, ws, share)."""
    start, stop = step.replicas.share(len(xs[0]))
    if start == stop:
        return None, None, None, 0
    return _slice(xs, start, stop), _slice(ys, start, stop), _slice(ws, start, stop), stop - start


def _shared_data(step, data, size):
    """This process's share of a batch as a train_step override gets it: (data, share)."""
    start, stop = step.replicas.share(size)
    return tuple(_cut(part, start, stop) for part in data), stop - start


def _replicated_custom_step(model, step, data, share, size, who):
    """A train_step override in data parallelism: the gradients it gives the optimizer are
    averaged over the processes, each weighted by its share of the batch (a mean loss over the
    share, penalties included, becomes the global batch's); its logs are the processes'
    weighted mean (the compiled metrics': their global values)."""
    optimizer = model.optimizer
    world = step.replicas.world

    def reduce(flat_grads):
        flat_grads *= flat_grads.dtype.type(share / size)
        world.sum_in_rank_order(flat_grads)

    optimizer._gradient_reducer = reduce
    try:
        logs = _custom_train_step(model, step, data, who) if share else _empty_custom_step(model, optimizer)
    finally:
        optimizer._gradient_reducer = None
    return step.replicas.mean_logs(logs, share / size, step)


def _empty_custom_step(model, optimizer):
    """No share of this batch: the optimizer step with zero gradients (the others' sum arrives)."""
    optimizer.apply([np.zeros(v.shape, v.dtype) for v in model.trainable_weights], model.trainable_weights)
    return {}


def _train_epochs(model, step, callback_list, epochs, initial_epoch, run_epoch, validation, validation_freq, source):
    """The epochs: hooks, metrics reset, one epoch's batches, validation, stopping."""
    compiled = step.compiled
    callback_list.on_train_begin()
    logs = {}
    tuner = ThreadTuner()  # the thread count the steps run fastest at (fastnn.thread_tuner)
    try:
        for epoch in range(initial_epoch, epochs):
            if source is not None and source.exhausted():
                break
            _reset_metrics(compiled)
            step.reset_logs()
            callback_list.on_epoch_begin(epoch)
            logs = run_epoch(epoch, tuner)
            if step.replicas is not None:
                step.replicas.average_moving_statistics(model)
            epoch_logs = dict(logs)
            if validation.given and (epoch + 1 - initial_epoch) % validation_freq == 0:
                val_logs = validation(step, callback_list)
                if val_logs is not None:
                    epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if _stopping(model, step):
                break
    finally:
        tuner.close()  # lifts its thread cap, also after an error
    step.graph.release()
    callback_list.on_train_end(logs)
    model.optimizer.finalize_variable_values()


class _Validation:
    """fit's validation: arrays (the fast path), or a generator / iterable / PyDataset (or arrays
    cut into batches for a test_step override) evaluated batch by batch, from the start of a
    pass each time.

    Args:
        val_arrays: (xs, ys, weights) held out by validation_split, or None.
        val_user: the same as a test_step override gets them (x in the structure given, y and
            sample_weight as given), or None.
    """

    def __init__(self, model, validation_data, val_arrays, val_user, steps, batch_size, validation_batch_size):
        who = "fit (validation_data)"
        self.model, self.who = model, who
        self.custom = _overridden(model, "test_step")
        self.arrays, self.source, user = val_arrays, None, val_user
        if validation_data is not None:
            adapter = data_adapters.get_data_adapter(validation_data, who, batch_size=validation_batch_size,
                                                     name="validation_data")
            if adapter is not None:
                self.source = _source(adapter, steps, who, "'validation_data'", restart=True)
            else:
                if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                    raise ValueError("fit: 'validation_data' must be (x_val, y_val), (x_val, y_val, "
                                     "sample_weight_val), a generator, an iterable of batches or a PyDataset")
                vx, vy = validation_data[0], validation_data[1]
                vw = validation_data[2] if len(validation_data) == 3 else None
                self.arrays = _prepare_data(model, vx, vy, vw, who)
                user = (_restructure_inputs(model, vx, self.arrays[0]), _as_structure(vy), _as_structure(vw))
        self.batch_size = _batch_size(validation_batch_size or batch_size, who)
        if self.arrays is not None:
            n = len(self.arrays[0][0])
            if steps is not None:
                n = min(n, steps * self.batch_size)
                self.arrays = tuple(_slice(part, 0, n) for part in self.arrays)
            if self.custom:
                x_user, y_user, w_user = user
                adapter = data_adapters.ArrayAdapter(_cut(x_user, 0, n), _cut(y_user, 0, n), _cut(w_user, 0, n), n,
                                                     self.batch_size)
                self.source, self.arrays = _source(adapter, None, who, "'validation_data'", restart=True), None
        self.given = self.arrays is not None or self.source is not None

    def __call__(self, step, callback_list):
        if self.arrays is not None:
            return _evaluate_arrays(self.model, step, *self.arrays, self.batch_size, callback_list)
        if self.source.exhausted("no validation from now on"):
            return None
        return _evaluate_source(self.model, step, self.source, callback_list, self.who, self.custom)

    def close(self):
        if self.source is not None:
            self.source.close()


def _generator():
    from .utils import rng

    return rng.global_generator()


# ---- evaluate ------------------------------------------------------------------------------------------------
def _evaluate_loop(model, step, batches, callback_list, run_batch, fused):
    """The evaluation skeleton: metrics reset, per-batch hooks; the final logs (the running loss
    saved and restored around it: fit's validation leaves the training logs as they were)."""
    _reset_metrics(step.compiled)
    saved = (step.seen, step.total, list(step.per_output))
    step.reset_logs()
    if callback_list is not None:
        callback_list.on_test_begin()
    logs = {}
    tuner = ThreadTuner()
    try:
        for b, item in batches:
            if callback_list is not None:
                callback_list.on_test_batch_begin(b)
            tuner.step_begin()
            logs = run_batch(b, item)
            tuner.step_end()  # (a smaller last batch is one sample among the medians' eight)
            if callback_list is not None:
                callback_list.on_test_batch_end(b, logs)
    finally:
        tuner.close()
    if fused:
        logs = _evaluation_logs(step)
    step.seen, step.total, step.per_output = saved
    if callback_list is not None:
        callback_list.on_test_end(logs)
    return logs


def _evaluate_arrays(model, step, xs, ys, ws, batch_size, callback_list=None):
    replicas = step.replicas

    def batches():
        n = len(xs[0])
        for b, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            if replicas is not None:  # this process's share of the batch
                first, last = replicas.share(stop - start)
                start, stop = start + first, start + last
            yield b, (_slice(xs, start, stop), _slice(ys, start, stop), _slice(ws, start, stop))

    def run_batch(b, item):
        if len(item[0][0]):
            _test_batch(step, *item)
        return step.logs(sync=step.sync_test_logs)

    return _evaluate_loop(model, step, batches(), callback_list, run_batch, fused=True)


def _evaluate_source(model, step, source, callback_list, who, custom):
    def run_batch(b, batch):
        batch_who = _batch_who(who, source, b)
        if custom:
            data = _step_data(model, batch, batch_who, True)
            if step.replicas is None:
                return _step_logs(loop_guard.infer(model, _in_context, model, step, batch_who, model.test_step,
                                                   data), "test_step")
            size = len(flatten(data[0])[0])
            data, share = _shared_data(step, data, size)
            logs = _step_logs(loop_guard.infer(model, _in_context, model, step, batch_who, model.test_step, data),
                              "test_step") if share else {}
            return step.replicas.mean_logs(logs, share / size if size else 0.0, step)
        x, y, sample_weight = data_adapters.standardize_batch(batch, batch_who, targets=True)
        xb, yb, wb = _prepare_data(model, x, y, sample_weight, batch_who)
        if step.replicas is not None:
            xb, yb, wb, _ = _shared_arrays(step, xb, yb, wb)
        if xb is not None:
            _test_batch(step, xb, yb, wb)
        return step.logs(sync=step.sync_test_logs)

    batches = source.epoch()
    logs = _evaluate_loop(model, step, batches, callback_list, run_batch, fused=not custom)
    batches.close()
    return logs


def _ordered(compiled, logs):
    return [logs[name] for name in compiled.log_names()]


def _result(compiled, logs, return_dict):
    """evaluate's value: the dict, or the values in metrics_names order (a custom test_step's
    other keys after them, sorted, as Keras); one value alone as a scalar."""
    if return_dict:
        return logs
    names = compiled.log_names()
    values = [logs[name] for name in names if name in logs] + [logs[k] for k in sorted(logs) if k not in names]
    return values[0] if len(values) == 1 else values


def evaluate(model, x, y, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None,
             return_dict=False):
    with _failures_told():
        return _evaluate(model, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict)


def _evaluate(model, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict):
    """evaluate; data-parallel (each process its share of every batch) under DataParallel."""
    who = "evaluate"
    _check_compiled(model, who)
    verbose = _verbose(verbose, who)
    steps = _steps(steps, "steps", who)
    adapter = data_adapters.get_data_adapter(x, who, y=y, sample_weight=sample_weight, batch_size=batch_size)
    custom = _overridden(model, "test_step")
    if adapter is None:
        batch_size = _batch_size(batch_size, who)
        xs, ys, ws = _prepare_data(model, x, y, sample_weight, who)
        if steps is not None:
            limit = steps * batch_size
            xs, ys, ws = _slice(xs, 0, limit), _slice(ys, 0, limit), _slice(ws, 0, limit)
        if custom:
            n = len(xs[0])
            adapter = data_adapters.ArrayAdapter(_restructure_inputs(model, x, xs), _cut(_as_structure(y), 0, n),
                                                 _cut(_as_structure(sample_weight), 0, n), n, batch_size)
    cbs = list(callbacks or [])
    if verbose:
        cbs.append(callbacks_module.ProgbarLogger(verbose))
    if adapter is None:
        with _Metrics(model) as private:  # (fit's, when called from its callback: then copies)
            step = _Step(model, training=False, private_metrics=private)
            replicas = _start_replicas(model, step, who, optimizer=False)
            callback_list = callbacks_module.CallbackList(
                _rank_zero_callbacks(cbs, replicas, step, training=False), model=model,
                params={"steps": -(-len(xs[0]) // batch_size), "verbose": verbose, "evaluating": True})
            logs = _evaluate_arrays(model, step, xs, ys, ws, batch_size, callback_list)
        return _result(step.compiled, logs, return_dict)
    source = _source(adapter, steps, who, restart=True)
    try:
        _first_batch(model, source, who, targets=True)
        with _Metrics(model) as private:
            step = _Step(model, training=False, private_metrics=private)
            replicas = _start_replicas(model, step, who, optimizer=False)
            callback_list = callbacks_module.CallbackList(
                _rank_zero_callbacks(cbs, replicas, step, training=False), model=model,
                params={"steps": source.num_batches, "verbose": verbose, "evaluating": True})
            logs = _evaluate_source(model, step, source, callback_list, who, custom)
    finally:
        source.close()
    return _result(step.compiled, logs, return_dict)


# ---- one batch -----------------------------------------------------------------------------------------------
def _batch_logs(compiled, logs, return_dict):
    if return_dict:
        return logs
    values = _ordered(compiled, logs)
    return values[0] if len(values) == 1 else values


def train_on_batch(model, x, y, sample_weight=None, class_weight=None, return_dict=False):
    who = "train_on_batch"
    _check_compiled(model, who)
    with loop_guard.Training(model, who):
        xs, ys, ws = _prepare_training_data(model, x, y, sample_weight, class_weight, who)
        _ensure_packed(model)
        with _Metrics(model) as private:
            step = _Step(model, training=True, private_metrics=private)
            _reset_metrics(step.compiled)
            total, values = _train_step(model, step, xs, ys, ws)
            step.record(total, values, len(xs[0]))
            return _batch_logs(step.compiled, step.logs(), return_dict)


def test_on_batch(model, x, y, sample_weight=None, return_dict=False):
    who = "test_on_batch"
    _check_compiled(model, who)
    xs, ys, ws = _prepare_data(model, x, y, sample_weight, who)
    with _Metrics(model) as private:
        step = _Step(model, training=False, private_metrics=private)
        logs = _evaluate_arrays(model, step, xs, ys, ws, max(len(xs[0]), 1))
    return _batch_logs(step.compiled, logs, return_dict)


# ---- predict ---------------------------------------------------------------------------------------------------
def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    who = "predict"
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"predict: 'verbose' must be 'auto', 0, 1 or 2, got {verbose!r}")
    adapter = None if type(x) is np.ndarray else data_adapters.get_data_adapter(x, who, batch_size=batch_size)
    steps = None if steps is None else _steps(steps, "steps", who)
    if adapter is None:
        batch_size = _batch_size(batch_size, who)
        xs = prepare_inputs(model, x, who, finite=False)  # NaN propagates to the outputs, as in NumPy
        if steps is not None:
            xs = _slice(xs, 0, steps * batch_size)
        if type(model).predict_step is DEFAULT_STEPS["predict_step"]:  # (_overridden, inline: predict latency)
            if len(xs[0]) <= batch_size and verbose in ("auto", 0) and not callbacks:
                # the fast path: one call per layer
                outputs, _ = loop_guard.infer(model, model._execution_graph(False).forward, xs)
                return model._structure_outputs(outputs)
            return _predict_arrays(model, xs, batch_size, verbose, callbacks)
        adapter = data_adapters.ArrayAdapter(_restructure_inputs(model, x, xs), None, None, len(xs[0]), batch_size,
                                             targets=False)
    source = _source(adapter, steps, who, restart=True)
    try:
        _first_batch(model, source, who, targets=False)
        return _predict_source(model, source, verbose, callbacks, who)
    finally:
        source.close()


def _predict_arrays(model, xs, batch_size, verbose, callbacks):
    """predict over arrays, batch by batch, into preallocated outputs."""
    n = len(xs[0])
    graph = model._execution_graph(False)
    cbs = callbacks_module.CallbackList(list(callbacks or []), model=model, params={"steps": -(-n // batch_size)})
    bar = None
    if verbose in (1, 2):
        from .utils.progbar import Progbar

        bar = Progbar(-(-n // batch_size), verbose)
    cbs.on_predict_begin()
    results = None
    tuner = ThreadTuner()
    try:
        for b, start in enumerate(range(0, n, batch_size)):
            cbs.on_predict_batch_begin(b)
            tuner.step_begin()
            outputs, _ = loop_guard.infer(model, graph.forward, _slice(xs, start, start + batch_size))
            tuner.step_end(measure=start + batch_size <= n)
            if results is None:
                results = [np.empty((n,) + y.shape[1:], y.dtype) for y in outputs]
            for out, y in zip(results, outputs):
                out[start:start + len(y)] = y
            cbs.on_predict_batch_end(b, {"outputs": model._structure_outputs(outputs)})
            if bar is not None:
                bar.update(b + 1, finalize=start + batch_size >= n)
    finally:
        tuner.close()
    cbs.on_predict_end()
    return model._structure_outputs(results)


def _predict_source(model, source, verbose, callbacks, who):
    """predict over a source: each batch's outputs (from predict_step when overridden), joined."""
    custom = _overridden(model, "predict_step")
    cbs = callbacks_module.CallbackList(list(callbacks or []), model=model, params={"steps": source.num_batches})
    bar = None
    if verbose in (1, 2):
        from .utils.progbar import Progbar

        bar = Progbar(source.num_batches, verbose)
    graph = model._execution_graph(False)
    parts = []
    tuner = ThreadTuner()
    try:
        cbs.on_predict_begin()
        batches = source.epoch()
        for b, batch in batches:
            cbs.on_predict_batch_begin(b)
            batch_who = _batch_who(who, source, b)
            if custom:
                data = _step_data(model, batch, batch_who, False)
                tuner.step_begin()
                outputs = loop_guard.infer(model, _in_context, model, None, batch_who, model.predict_step, data)
            else:
                x, _, _ = data_adapters.standardize_batch(batch, batch_who, targets=False)
                xs = prepare_inputs(model, x, batch_who, finite=False)
                tuner.step_begin()
                flat, _ = loop_guard.infer(model, graph.forward, xs)
                outputs = model._structure_outputs(flat)
            tuner.step_end()
            parts.append(outputs)
            cbs.on_predict_batch_end(b, {"outputs": outputs})
            if bar is not None:
                bar.update(b + 1)
        batches.close()
    finally:
        tuner.close()
    if bar is not None:
        bar.update(len(parts), finalize=True)
    cbs.on_predict_end()
    leaves = [flatten(p) for p in parts]
    return pack_like(parts[0], [np.concatenate([part[i] for part in leaves]) for i in range(len(leaves[0]))])
