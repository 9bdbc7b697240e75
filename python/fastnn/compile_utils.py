"""What ``compile`` configured, per model output: its loss, loss weight and metrics, the names
they are logged under, and where a softmax/sigmoid can be fused with its cross-entropy.

Keras' rules: ``loss`` is one loss (for every output), a list in output order, or a dict
keyed by output name (None: the output is not trained); ``loss_weights`` likewise (default
1.0); ``metrics`` a list (for one output, or applied to each), a list of lists, or a dict.
The total loss is the weighted sum of the outputs' losses. With one output the logs are
``loss`` and the metrics' names; with several, also ``<output>_loss`` and
``<output>_<metric>``.
"""

import copy

from . import losses as losses_module
from . import metrics as metrics_module


class OutputConfig:
    """One output's loss, loss weight and metrics."""

    __slots__ = ("name", "loss", "weight", "metrics", "weighted_metrics")

    def __init__(self, name, loss, weight, metrics, weighted_metrics):
        self.name, self.loss, self.weight = name, loss, weight
        self.metrics, self.weighted_metrics = metrics, weighted_metrics


def _is_structure(value):
    return isinstance(value, (list, tuple, dict))


def _per_output(value, names, what, default=None):
    """value spread over the outputs: one value for all, a list in order, or a dict by name."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile: '{what}' names outputs {unknown} the model does not have; its outputs "
                             f"are {names}")
        return [value.get(name, default) for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"compile: '{what}' has {len(value)} entries but the model has {len(names)} outputs "
                             f"{names}; give one per output (or a dict keyed by output name)")
        return list(value)
    return [value] * len(names)


def _metric_list(value):
    if value is None:
        return []
    if isinstance(value, (str, metrics_module.Metric)) or callable(value):
        return [value]
    return list(value)


def _fresh(metric, first):
    """A metric for one output: instances are copied for every output after the first."""
    if isinstance(metric, metrics_module.Metric) and not first:
        return copy.deepcopy(metric)
    return metrics_module.get(metric)


class CompiledOutputs:
    """compile()'s arguments resolved per output (once the outputs are known).

    Args:
        model: the model being compiled.
        loss, loss_weights, metrics, weighted_metrics: compile()'s arguments.
    """

    def __init__(self, model, loss, loss_weights, metrics, weighted_metrics):
        self._args = (loss, loss_weights, metrics, weighted_metrics)
        self.loss_structure = _resolve_loss_structure(loss)
        self.outputs = None
        self._plans = {}
        names = _known_output_names(model)
        if names is not None:
            self.resolve(names)
        elif not any(isinstance(m, (list, tuple, dict)) for m in _metric_list(metrics)) and \
                not isinstance(metrics, dict) and not _is_structure(loss):
            self.resolve(["output"])  # one output until the model says otherwise

    def resolve(self, names):
        """Spreads the arguments over the outputs called `names`."""
        loss, loss_weights, metrics, weighted_metrics = self._args
        if self.outputs is not None and [o.name for o in self.outputs] == list(names):
            return
        if len(names) == 1 and isinstance(loss, (list, tuple)) and len(loss) != 1:
            raise ValueError(f"compile: one output, so 'loss' needs one loss, got {len(loss)}")
        loss_list = _per_output(self.loss_structure, names, "loss")
        if len(names) == 1 and isinstance(loss_weights, (list, tuple)) and len(loss_weights) != 1:
            raise ValueError(f"compile: one output, so 'loss_weights' needs one value, got {loss_weights}")
        weights = _per_output(loss_weights, names, "loss_weights", default=1.0)
        weights = [1.0 if w is None else float(w) for w in weights]
        per_metrics = self._spread_metrics(metrics, names, "metrics")
        per_weighted = self._spread_metrics(weighted_metrics, names, "weighted_metrics")
        if all(entry is None for entry in loss_list):
            raise ValueError(f"compile: no output has a loss (outputs {names})")
        self.outputs = [OutputConfig(n, lo, w, m, wm)
                        for n, lo, w, m, wm in zip(names, loss_list, weights, per_metrics, per_weighted)]
        self._plans = {}

    @staticmethod
    def _spread_metrics(metrics, names, what):
        if metrics is None:
            return [[] for _ in names]
        if isinstance(metrics, dict):
            spread = _per_output(metrics, names, what)
            return [[_fresh(m, True) for m in _metric_list(entry)] for entry in spread]
        items = _metric_list(metrics)
        if len(names) > 1 and items and all(isinstance(m, (list, tuple)) or m is None for m in items):
            if len(items) != len(names):
                raise ValueError(f"compile: '{what}' has {len(items)} lists but the model has {len(names)} outputs")
            return [[_fresh(m, True) for m in _metric_list(entry)] for entry in items]
        return [[_fresh(m, i == 0) for m in items] for i in range(len(names))]

    # ---- what the model and the trainer read ----------------------------------------------------------
    @property
    def single(self):
        return len(self.outputs) == 1

    @property
    def all_metrics(self):
        return [m for o in (self.outputs or []) for m in o.metrics]

    @property
    def all_weighted_metrics(self):
        return [m for o in (self.outputs or []) for m in o.weighted_metrics]

    def metric_key(self, output, metric):
        return metric.name if self.single else f"{output.name}_{metric.name}"

    def log_names(self):
        """The names of evaluate()'s values, in order: loss, per-output losses, metrics."""
        names = ["loss"]
        if not self.single:
            names += [f"{o.name}_loss" for o in self.outputs if o.loss is not None]
        for o in self.outputs:
            names += [self.metric_key(o, m) for m in o.metrics + o.weighted_metrics]
        return names

    def fusion(self, graph):
        """Per output: (the loss to compute, whether it takes logits), and the graph steps that
        output logits. A softmax (sigmoid) output whose loss is the matching cross-entropy is
        fused when nothing else reads that output and it has no activity regularizer."""
        plan = self._plans.get(id(graph))
        if plan is not None and plan[0] is graph:
            return plan[1], plan[2]
        effective, logits = [], set()
        for out, tensor, slot in zip(self.outputs, graph.outputs, graph.output_slots):
            loss = out.loss
            k = graph.step_of(tensor)
            activation = None
            if k is not None:
                op = graph.steps[k].op
                if hasattr(op, "output_activation") and op.activity_regularizer is None \
                        and graph.consumers[slot] == 1 and graph.steps[k].single_out:
                    activation = op.output_activation()
            if _fusable(loss, activation):
                effective.append((loss.with_logits(), True))
                logits.add(k)
            else:
                effective.append((loss, False))
        self._plans[id(graph)] = (graph, effective, logits)
        return effective, logits



def _fusable(loss, activation):
    if not isinstance(loss, losses_module._KernelLoss) or loss.from_logits or loss.reduction is None:
        return False
    if activation == "softmax":
        return isinstance(loss, (losses_module.CategoricalCrossentropy, losses_module.SparseCategoricalCrossentropy))
    if activation == "sigmoid":
        return isinstance(loss, losses_module.BinaryCrossentropy)
    return False


def _resolve_loss_structure(loss):
    if isinstance(loss, dict):
        return {k: None if v is None else losses_module.get(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [None if v is None else losses_module.get(v) for v in loss]
    return losses_module.get(loss)


def _known_output_names(model):
    if model._functional:
        return model.output_names
    if model.built and getattr(model, "_input_specs", None) is not None:
        return model.output_names
    return None
