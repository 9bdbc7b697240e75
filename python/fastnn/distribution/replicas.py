"""What fit and evaluate do differently when a DataParallel distribution spans processes.

Every process holds the whole model. Per training step:

- ``batch_size`` is the global batch: every process draws the same shuffled order (the
  global generators are made identical at the start of fit) and takes its share of each
  batch, contiguous and balanced (``share``); an uneven last batch splits as evenly as it can.
- Each output's loss gradient is scaled by share/batch (``gradient_scale``) for the mean
  reductions, so the gradients summed over the processes are exactly those of the global
  batch's mean loss; a "sum" loss is summed as it is. (A masked output averages over the
  process's own valid steps, so there the sum is close to the global mean, not equal: the
  exact one would need the valid count of every process before the backward.)
- One all-reduce of the flat gradient buffer, in rank order (``World.sum_in_rank_order``),
  or the same sums in buckets overlapped with the backward (``buckets``); then the weight
  penalties (once, identical everywhere) and the fused optimizer step, so the weights stay
  identical on every process without being sent again.
- The logs (loss, metrics) are the global ones: each process's running sums (samples,
  weighted loss, the metrics' states) are added up over the processes, at each batch when
  a callback reads the batch's logs, else at the end of the epoch.
- stop_training is agreed by every process at each batch when a callback might set it on
  one process alone; those that decide from their (global) logs need no agreement.

At the start of fit the weights, the optimizer's state and the generators' state go from
rank 0 to the others (after checking that every process built the same model); dropout and
augmentation then draw different numbers on each process (``rng.set_process_stream``). At
each epoch's end the BatchNormalization moving statistics are averaged over the processes.
"""

import numpy as np

from ..utils import rng
from . import buckets as buckets_module
from . import distribution_lib
from . import world as world_module


def for_model(model=None):
    """The Replicas of a fit/evaluate, or None (no distribution, or one process)."""
    distribution = distribution_lib.distribution()
    if distribution is None:
        return None
    world = world_module.world()
    if world.size == 1:
        return None
    return Replicas(world, distribution)


class Replicas:
    """This process's part in a data-parallel loop (see the module's docstring)."""

    def __init__(self, world, distribution):
        self.world = world
        self.rank, self.size = world.rank, world.size
        self.auto_shard = distribution.auto_shard_dataset
        self.bucket_bytes = distribution.bucket_bytes
        self._buckets = None  # (plan, its epoch, the gradient buffer, Buckets) of the last step

    def describe(self):
        return self.world.describe()

    # ---- the start: the same model, weights and generators everywhere ----------------------------
    def synchronize(self, model, who, training=True):
        """Checks that every process built the same model, then copies rank 0's weights to the
        others; for training also its optimizer state and global generator (the same shuffles
        everywhere), after which drawn seeds differ by process."""
        variables = model._variables
        meta = {"parameters": int(sum(v.value.size for v in variables)),
                "shapes": [list(v.shape) for v in variables],
                "dtype": str(model._params.dtype) if model._params is not None else None}
        optimizer = model.optimizer if training else None
        state = optimizer._state if optimizer is not None and optimizer.built else {}
        if training:
            meta["optimizer"] = {name: int(value.size) for name, value in sorted(state.items())}
        metas = self.world.allgather_json(meta)
        for r, other in enumerate(metas):
            if other != metas[0]:
                raise collective(ValueError(
                    f"{who}: the processes built different models: rank {r} has {_describe(other)}, rank 0 has "
                    f"{_describe(metas[0])} (every process must build the same model; build them from the same "
                    "code)"))
        if model._params is not None:
            self.world.broadcast(model._params)
        if not training:
            return
        if optimizer is not None:
            for name in sorted(state):
                self.world.broadcast(state[name])
            scalars = self.world.broadcast_json({"iterations": int(optimizer.iterations),
                                                 "scalars": optimizer._scalar_state()})
            optimizer.iterations = scalars["iterations"]
            for key, value in scalars["scalars"].items():
                setattr(optimizer, key, float(value))
        rng.set_generator_state(self.world.broadcast_json(rng.generator_state()))
        rng.set_process_stream(self.rank)

    # ---- sharding -----------------------------------------------------------------------------------
    def share(self, m):
        """(start, stop) of this process's share of a global batch of m samples."""
        base, extra = divmod(m, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def local(self, rows):
        """This process's share of a global batch given as row indices (or a range's rows)."""
        start, stop = self.share(len(rows))
        return rows[start:stop]

    # ---- per step -------------------------------------------------------------------------------------
    def reduce_gradients(self, grads):
        self.world.sum_in_rank_order(grads)

    def overlapped_sum(self, model, graph):
        """The sum of this step's gradients overlapped with its backward (buckets module), or
        None (bucket_bytes=None: one all-reduce after the backward)."""
        if not self.bucket_bytes:
            return None
        plan = graph.plan((False,) * len(graph.inputs))  # fit's backward: no input gradients
        cached = self._buckets
        if cached is None or cached[0] is not plan or cached[1] != plan.epoch or cached[2] is not model._grads:
            found = buckets_module.Buckets(plan, model._grads, model._packed, self.bucket_bytes)
            cached = self._buckets = (plan, plan.epoch, model._grads, found)
        return _StepSum(self.world, model._grads, cached[3], plan)

    def global_logs(self, step, local_logs):
        """local_logs() computed from the sums over the processes of the running loss and the
        metrics' states (restored to this process's own afterwards)."""
        metrics = [m for output in step.compiled.outputs for m in output.metrics + output.weighted_metrics]
        header = [float(step.seen), float(step.total)] + [float(v) for v in step.per_output]
        saved = (step.seen, step.total, list(step.per_output))
        with self._summed(metrics, header) as sums:
            step.seen, step.total, step.per_output = sums[0], sums[1], list(sums[2:])
            try:
                return local_logs()
            finally:
                step.seen, step.total, step.per_output = saved

    def mean_logs(self, logs, weight, step):
        """A train_step override's logs over the processes: a metric of the model's (compiled,
        or an attribute such as a loss tracker) by its states summed over the processes, any
        other number as the mean weighted by each process's share of the batch."""
        metrics = _model_metrics(step.model)
        by_name = {m.name: m for m in metrics}
        numbers = {k: float(v) for k, v in logs.items() if k not in by_name and np.ndim(v) == 0}
        reports = self.world.allgather_json({"weight": weight, "numbers": numbers})
        with self._summed(metrics, []):
            merged = {}
            for key, value in logs.items():
                if key in by_name:
                    merged[key] = _float(by_name[key].result())
                elif key in numbers:
                    pairs = [(r["weight"], r["numbers"][key]) for r in reports if key in r["numbers"]]
                    total = sum(w for w, _ in pairs)
                    merged[key] = sum(w * v for w, v in pairs) / total if total else value
                else:
                    merged[key] = value
            for report in reports:  # keys only some processes had (this one had no share)
                for key, v in report["numbers"].items():
                    merged.setdefault(key, v)
            return merged

    def _summed(self, metrics, header):
        return _SummedStates(self.world, metrics, header)

    # ---- epoch ends -------------------------------------------------------------------------------------
    def average_moving_statistics(self, model):
        """Sets every BatchNormalization's moving mean and variance to their mean over the
        processes (each process normalised its own share of the batches)."""
        from ..layers.normalization import BatchNormalization

        arrays = [v.value for layer in model._weight_groups() if isinstance(layer, BatchNormalization)
                  for v in (layer.moving_mean, layer.moving_variance)]
        if not arrays:
            return
        flat = np.concatenate([a.ravel() for a in arrays])
        self.world.sum_in_rank_order(flat, gradients=False)
        flat *= flat.dtype.type(1.0 / self.size)
        offset = 0
        for a in arrays:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size

    def global_size(self, share):
        """With per-process data: the global batch, the sum of the processes' shares."""
        return int(sum(int(v[0]) for v in self.world.allgather_vector([share])))

    def agree_steps(self, steps):
        """With per-process data (auto_shard_dataset=False) the processes may have different
        numbers of batches: all run the largest (a process out of data contributes nothing)."""
        counts = self.world.allgather_json(int(steps))
        return max(counts)


class _StepSum(buckets_module.OverlappedSum):
    """OverlappedSum for fit's plan: the graph's hook (plan, i) -> after_node(i)."""

    def __init__(self, world, grads, buckets, plan):
        super().__init__(world, grads, buckets)
        self.plan = plan

    def hook(self, plan, i):
        if plan is not self.plan:  # (cannot happen in fit: its backward uses this plan)
            raise RuntimeError("data parallelism: the backward ran another plan than its buckets'")
        self.after_node(i)


def collective(error):
    """Marks an error every process raises at the same point (decided on shared figures): the
    processes stay in step, so it is not told to the others as a failure."""
    error.raised_by_every_process = True
    return error


def _describe(meta):
    return f"{meta['parameters']:,} parameters in {len(meta['shapes'])} weights" + (
        f" and optimizer state {meta['optimizer']}" if meta.get("optimizer") else "")


class _SummedStates:
    """``with _SummedStates(world, metrics, header) as sums:`` the metrics hold their states
    summed over the processes (in rank order) inside the block, their own again after it;
    `sums` are the header numbers summed the same way."""

    def __init__(self, world, metrics, header):
        self.world, self.metrics, self.header = world, metrics, header

    def __enter__(self):
        self.states = [_metric_state(m) for m in self.metrics]
        sizes, parts = [], []
        for state in self.states:
            for value in state.values():
                flat = np.zeros(0) if value is None else np.asarray(value, np.float64).ravel()
                sizes.append(-1 if value is None else flat.size)
                parts.append(flat)
        n = len(self.header)
        vector = np.concatenate([np.array(list(self.header) + sizes, np.float64)] + parts)
        sums = _sum_in_rank_order(self.world.allgather_vector(vector), n, sizes)
        k = n
        for m, state in zip(self.metrics, self.states):
            for name, value in state.items():
                total = sums[k]
                k += 1
                if total is None:
                    continue
                if isinstance(value, np.ndarray):
                    total = total.reshape(value.shape)
                elif isinstance(value, (int, float, np.integer, np.floating)):
                    total = type(value)(total[0])
                setattr(m, name, total)
        return sums[:n]

    def __exit__(self, *exc):
        for m, state in zip(self.metrics, self.states):
            for name, value in state.items():
                setattr(m, name, value)
        return False


def _model_metrics(model):
    """The model's compiled metrics and the Metric objects among its attributes (trackers)."""
    from ..metrics import Metric

    found = list(model.metrics)
    for value in vars(model).values():
        if isinstance(value, Metric) and all(value is not m for m in found):
            found.append(value)
    return found


def _float(value):
    return float(value) if np.ndim(value) == 0 else np.asarray(value).tolist()


def _metric_state(metric):
    """{attribute: value} of a metric's running sums (Metric._state, or its public numeric
    attributes outside its config for a metric that does not declare them)."""
    names = type(metric)._state if getattr(type(metric), "_state", None) is not None else None
    if names is None:
        config = set(metric.get_config())
        names = [k for k, v in vars(metric).items()
                 if not k.startswith("_") and k not in config and k not in ("name", "dtype")
                 and (isinstance(v, (float, np.floating, np.ndarray))
                      or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)))]
    return {name: getattr(metric, name) for name in names}


def _sum_in_rank_order(gathered, n_header, sizes):
    """Adds the processes' vectors (header, then the states' values) in rank order; a state
    absent on a process (None: nothing seen yet) adds nothing. Returns the header's values,
    then one array (or None) per state."""
    header = gathered[0][:n_header].copy()
    for vector in gathered[1:]:
        header += vector[:n_header]
    per_rank = []
    for vector in gathered:
        own_sizes = vector[n_header:n_header + len(sizes)].astype(np.int64)
        offset = n_header + len(sizes)
        values = []
        for size in own_sizes:
            if size < 0:
                values.append(None)
            else:
                values.append(vector[offset:offset + size])
                offset += size
        per_rank.append(values)
    states = []
    for k in range(len(sizes)):
        total = None
        for values in per_rank:
            if values[k] is not None:
                total = values[k].copy() if total is None else total + values[k]
        states.append(total)
    return [float(v) for v in header] + states


def finish():
    """The end of a data-parallel loop: drawn seeds are this process's own again."""
    rng.set_process_stream(None)
