"""Data-parallel training on this machine: ``python bench/distributed.py [--update]``.

Times one training epoch of the MLP (bench_mlp.py: 784-256-128-10, 60,000 samples, batch 128,
Adam) and of the CNN (bench_cnn.py: the Keras MNIST model, 10,000 samples 28×28×1, batch 64,
Adam), and a short epoch of the LSTM text model (bench_rnn.py: Embedding(10000, 128) →
LSTM(128) → Dense(1), batch 64, 512 of its 2,000 sequences × 256 ids, so that a run stays
short), on synthetic data of the benchmarks' shapes, at four configurations of the 2 cores:

- 1 process × 1 thread, 1 process × 2 threads (``python distributed.py --worker``),
- 2 processes × 1 thread (``mpiexec -n 2 python distributed.py --worker``, with the
  ``mpiexec`` next to ``sys.executable``; fastnn gives each process cores / processes = 1
  thread), training with ``set_distribution(DataParallel())`` on the same global batch:
  its default ``bucket_bytes="auto"``, which on one machine is one all-reduce after the backward,
- the same with the gradient buckets forced on, ``DataParallel(bucket_bytes=262144)`` (the
  buckets' all-reduces overlapped with the backward, as "auto" does across machines).

Per configuration: the epoch time (median of the timed epochs: ``--repeat`` runs of the four
configurations, interleaved, in reverse order every other repetition, each run a warm-up epoch and ``--epochs`` timed ones; an epoch's
time is the slowest rank's), the time per gradient all-reduce
(``world().stats``: allreduce_seconds / allreduce_calls, mean over the ranks; it includes the
wait for the slower rank; with buckets it is only the time spent in the bucket calls, i.e. the
communication not hidden behind the backward), its share of the epoch, the bytes per
all-reduce, and the scaling efficiency (1×1 epoch) / (epoch × cores used). The 2-process runs
also time the all-reduce alone (a barrier before each call, no training), which is the pure
cost of the collective (with buckets: the same buckets started one after the other and waited
for, with no backward to hide behind). The bucketed configuration is also compared with the
plain 2 × 1 one run by run (the runs are interleaved, so each pair saw the same spell of the
machine).

The 1×1 worker also profiles each model's training step at the per-process batches of the
strong-scaling prediction (global batch / N, N = 1, 2, 4, ..., 64): forward, backward (per
layer, with each layer's gradient bytes), optimizer step and the rest (loss, batching,
Python), medians over a few steps; and the cost of the all-reduce's summation per byte (in
cache and from memory). These are what ``bench/scaling_model.py`` reads, from
``bench/distributed_measured.json`` (written by every full run, with the table's figures).

``--update`` also writes the "Data-parallel training" section of bench/DISTRIBUTED.md (the
table, the machine, the notes) and replaces that section if the file has it.
Environment of the runs: OPENBLAS_NUM_THREADS = the threads per process (NumPy's BLAS is
not in fastnn's training path; this keeps it from oversubscribing if it were),
OMP_PROC_BIND unset (with two single-threaded processes, binding would put both on core 0).
Before each run the driver waits (up to ``--wait-idle`` s) for other processes to go quiet and
records how busy the machine was. A full run takes about 4–6 minutes here.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MEASURED = HERE / "distributed_measured.json"
RESULTS = HERE / "DISTRIBUTED.md"
SECTION = "## Data-parallel training"
MARKER = "BENCH_DISTRIBUTED_JSON "

# name: (samples per epoch, global batch) -- the bench_*.py epoch rows' sizes (LSTM: 512 of 2,000)
MODELS = {"mlp": (60_000, 128), "cnn": (10_000, 64), "lstm": (512, 64)}
QUICK = {"mlp": (12_000, 128), "cnn": (2_000, 64), "lstm": (128, 64)}
LABELS = {"mlp": "MLP 784-256-128-10, {n:,} × 784, batch 128, Adam",
          "cnn": "CNN (Keras MNIST model), {n:,} × 28×28×1, batch 64, Adam",
          "lstm": "LSTM text model Embedding(10000,128)→LSTM(128)→Dense(1), {n:,} × 256 ids, batch 64, Adam"}
BUCKETS = 256 * 1024  # the forced bucket size (fastnn.distribution.buckets.BUCKET_BYTES, "auto"'s across machines)
# (processes, threads per process, DataParallel's bucket_bytes: "auto" or an int), keys of the results
CONFIGS = ((1, 1, "auto"), (1, 2, "auto"), (2, 1, "auto"), (2, 1, BUCKETS))


def config_key(processes, threads, bucket_bytes):
    return f"{processes}x{threads}" + ("" if bucket_bytes == "auto" else f"b{bucket_bytes}")


def config_label(processes, threads, bucket_bytes):
    label = f"{processes} × {threads}"
    if bucket_bytes != "auto":
        label += f", buckets {bucket_bytes // 1024} KiB" if bucket_bytes % 1024 == 0 else f", buckets {bucket_bytes} B"
    return label
PROFILE_NODES = (1, 2, 4, 8, 16, 32, 64)


# ---- the models (the same as bench_mlp.py, bench_cnn.py, bench_rnn.py) --------------------------------
def build(name):
    import fastnn

    fastnn.utils.set_random_seed(0)
    layers = fastnn.layers
    if name == "mlp":
        model = fastnn.Sequential([layers.Dense(256, activation="relu", input_shape=(784,)),
                                   layers.Dense(128, activation="relu"),
                                   layers.Dense(10, activation="softmax")])
        model.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    elif name == "cnn":
        import bench_cnn  # (bench/ is on the path: this file runs as a script from it)

        model = bench_cnn._fastnn_model()
    elif name == "lstm":
        model = fastnn.Sequential([layers.Embedding(10_000, 128), layers.LSTM(128),
                                   layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="binary_crossentropy")
    else:
        raise ValueError(name)
    return model


def data(name, n):
    rng = np.random.default_rng(0)
    if name == "mlp":
        return rng.standard_normal((n, 784)).astype(np.float32), rng.integers(0, 10, n)
    if name == "cnn":
        return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)
    return (rng.integers(1, 10_000, (n, 256)).astype(np.int32),
            rng.integers(0, 2, (n, 1)).astype(np.float32))


# ---- inside a process of a configuration ---------------------------------------------------------------
def _epochs(world, model, x, y, batch, epochs, shuffle, log_sync):
    """Warm-up epoch, then `epochs` timed ones (shuffled as bench_*.py do): per epoch this
    rank's seconds, all-reduce stats and log synchronisations (calls and seconds)."""
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=shuffle)
    out = []
    for _ in range(epochs):
        world.barrier()
        world.stats.reset()
        log_sync.update(calls=0, seconds=0.0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=shuffle)
        seconds = time.perf_counter() - start
        out.append({"seconds": seconds, **world.stats.as_dict(), "log_sync_calls": log_sync["calls"],
                    "log_sync_seconds": log_sync["seconds"]})
    return out


def _allreduce_alone(world, nbytes, calls=40):
    """Seconds per sum_in_rank_order of nbytes (float32), each call after a barrier."""
    buffer = np.ones(max(1, nbytes // 4), np.float32)
    for _ in range(3):
        world.sum_in_rank_order(buffer)
    times = []
    for _ in range(calls):
        buffer.fill(1.0)
        world.barrier()
        start = time.perf_counter()
        world.sum_in_rank_order(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bucketed_alone(world, buckets, nbytes, calls=40):
    """Seconds per bucketed sum (fastnn.distribution.buckets.OverlappedSum with fit's buckets)
    of nbytes (float32) with no backward: every bucket started in fit's order, then waited for;
    each call after a barrier."""
    from fastnn.distribution import buckets as buckets_module

    buffer = np.ones(max(1, nbytes // 4), np.float32)
    saved = world.stats.as_dict()  # OverlappedSum.finish counts itself in world().stats

    def once():
        buckets_module.OverlappedSum(world, buffer, buckets).finish()

    for _ in range(3):
        once()
    times = []
    for _ in range(calls):
        buffer.fill(1.0)
        world.barrier()
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    world.stats.allreduce_calls, world.stats.allreduce_seconds, world.stats.allreduce_bytes = (
        saved["allreduce_calls"], saved["allreduce_seconds"], saved["allreduce_bytes"])
    return statistics.median(times)


class _Profiler:
    """Times forward, per-layer backward and the optimizer step of fit's training steps, by
    wrapping Graph.forward / Graph.backward, each layer's backward and the optimizer's
    apply_flat (perf_counter around each call; ~0.1 µs each)."""

    def __init__(self, model):
        import fastnn
        from fastnn import graph as graph_module

        self.model, self.graph_class = model, graph_module.Graph
        self.steps = []
        self.current = None
        profiler = self
        original_forward, original_backward = self.graph_class.forward, self.graph_class.backward
        self.originals = (original_forward, original_backward)

        def forward(graph, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original_forward(graph, *args, **kwargs)
            finally:
                if profiler.current is not None:
                    profiler.current["forward"] += time.perf_counter() - start

        def backward(graph, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original_backward(graph, *args, **kwargs)
            finally:
                if profiler.current is not None:
                    profiler.current["backward"] += time.perf_counter() - start

        self.graph_class.forward, self.graph_class.backward = forward, backward
        self.layers = [layer for layer in model.layers]
        for i, layer in enumerate(self.layers):
            layer_backward = layer.backward

            def timed(*args, _original=layer_backward, _i=i, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    if profiler.current is not None:
                        profiler.current["layers"][_i] += time.perf_counter() - start

            layer.backward = timed
        optimizer = model.optimizer
        apply_flat = optimizer.apply_flat

        def timed_apply():
            start = time.perf_counter()
            try:
                return apply_flat()
            finally:
                if profiler.current is not None:
                    profiler.current["optimizer"] += time.perf_counter() - start

        optimizer.apply_flat = timed_apply

        class Steps(fastnn.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                profiler.current = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0,
                                    "layers": [0.0] * len(profiler.layers), "start": time.perf_counter()}

            def on_train_batch_end(self, batch, logs=None):
                step = profiler.current
                step["step"] = time.perf_counter() - step.pop("start")
                profiler.steps.append(step)
                profiler.current = None

        self.callback = Steps()

    def close(self):
        self.graph_class.forward, self.graph_class.backward = self.originals
        for layer in self.layers:
            layer.__dict__.pop("backward", None)
        self.model.optimizer.__dict__.pop("apply_flat", None)


def _profile(name, global_batch, steps_per_batch):
    """Per per-process batch b = global_batch / N: medians of the step's parts (seconds)."""
    model = build(name)
    x, y = data(name, global_batch)
    model.fit(x, y, batch_size=global_batch, epochs=1, verbose=0)  # builds the layers (the LSTM's)
    layer_bytes = [int(sum(w.value.size * w.value.itemsize for w in layer.trainable_weights))
                   for layer in model.layers]
    out = {"layers": [f"{type(layer).__name__}" for layer in model.layers], "layer_grad_bytes": layer_bytes,
           "parameters": int(sum(layer_bytes) // 4), "global_batch": global_batch, "per_batch": {}}
    profiler = _Profiler(model)
    try:
        for nodes in PROFILE_NODES:
            b = max(1, global_batch // nodes)
            if str(b) in out["per_batch"]:
                continue
            steps = steps_per_batch if name != "lstm" else max(3, steps_per_batch // 6)
            x, y = data(name, b * (steps + 2))
            profiler.steps.clear()
            model.fit(x, y, batch_size=b, epochs=1, verbose=0, shuffle=False, callbacks=[profiler.callback])
            timed = profiler.steps[2:]  # the first steps warm up (buffers for the new batch size)
            med = {k: statistics.median(s[k] for s in timed) for k in ("forward", "backward", "optimizer", "step")}
            med["layers_backward"] = [statistics.median(s["layers"][i] for s in timed)
                                      for i in range(len(profiler.layers))]
            med["other"] = max(0.0, med["step"] - med["forward"] - med["backward"] - med["optimizer"])
            med["steps_timed"] = len(timed)
            out["per_batch"][str(b)] = med
    finally:
        profiler.close()
    return out


def _sum_cost_per_byte(nbytes):
    """Seconds per byte of `a += b` on float32 arrays of nbytes (the all-reduce's summation), 1 thread."""
    a, b = np.ones(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)
    calls = max(2, (1 << 22) // nbytes)
    for _ in range(calls):
        a += b
    times = []
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(calls):
            a += b
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times) / a.nbytes


def worker(args):
    import fastnn
    from fastnn.distribution import world as world_module

    from fastnn.distribution import buckets as buckets_module
    from fastnn.distribution import replicas as replicas_module

    bucket_bytes = args.bucket_bytes if args.bucket_bytes == "auto" else int(args.bucket_bytes)
    distribution = fastnn.distribution.DataParallel(bucket_bytes=bucket_bytes)
    fastnn.distribution.set_distribution(distribution)
    world = world_module.world()
    # the buckets fit cut the gradient buffer into (the last Buckets made: one per fit call)
    made = []
    buckets_init = buckets_module.Buckets.__init__

    def recorded_init(self, *a, **k):
        buckets_init(self, *a, **k)
        made.append(self)

    buckets_module.Buckets.__init__ = recorded_init
    # the global logs (the running loss and metrics' states summed over the ranks): a collective
    # outside world().stats, per step when a callback reads batch logs, else once per epoch (as
    # here: verbose=0, no callbacks); timed by wrapping Replicas.global_logs
    log_sync = {"calls": 0, "seconds": 0.0}
    global_logs = replicas_module.Replicas.global_logs

    def timed_global_logs(self, *a, **k):
        start = time.perf_counter()
        try:
            return global_logs(self, *a, **k)
        finally:
            log_sync["calls"] += 1
            log_sync["seconds"] += time.perf_counter() - start

    replicas_module.Replicas.global_logs = timed_global_logs
    if world.size == 1:
        fastnn.set_num_threads(args.threads)
    threads = fastnn.get_num_threads() if hasattr(fastnn, "get_num_threads") else args.threads
    sizes = QUICK if args.quick else MODELS
    result = {"processes": world.size, "threads": threads, "describe": world.describe(),
              "bucket_bytes_requested": bucket_bytes, "bucket_bytes": distribution.bucket_bytes, "models": {}}
    for name in args.models.split(","):
        n, batch = sizes[name]
        x, y = data(name, n)
        model = build(name)
        made.clear()
        epochs = _epochs(world, model, x, y, batch, args.epochs, shuffle=name != "lstm", log_sync=log_sync)
        gathered = world.allgather_json(epochs)  # [rank][epoch]
        entry = {"samples": n, "batch": batch, "ranks": gathered}
        if world.size > 1:
            nbytes = gathered[0][0]["allreduce_bytes"] // max(1, gathered[0][0]["allreduce_calls"])
            if made:  # bucketed: the buckets' bytes in the order they start, and their sum alone
                last = made[-1]
                entry["bucket_sizes"] = [(last.ranges[j][1] - last.ranges[j][0]) * 4 for j in last.order]
                entry["allreduce_alone_seconds"] = world.allgather_json(_bucketed_alone(world, last, nbytes))
            else:
                entry["allreduce_alone_seconds"] = world.allgather_json(_allreduce_alone(world, nbytes))
            entry["allreduce_tiny_seconds"] = world.allgather_json(_allreduce_alone(world, 32))
        result["models"][name] = entry
    if args.profile and world.size == 1:
        fastnn.set_num_threads(1)
        result["profile"] = {name: _profile(name, (QUICK if args.quick else MODELS)[name][1], args.profile_steps)
                             for name in args.profile.split(",")}
        # in cache (256 KB) and from memory (16 MB): scaling_model.py takes the memory figure
        result["sum_seconds_per_byte_cache"] = _sum_cost_per_byte(1 << 18)
        result["sum_seconds_per_byte"] = _sum_cost_per_byte(1 << 24)
    if world.rank == 0:
        print(MARKER + json.dumps(result), flush=True)


# ---- the driver --------------------------------------------------------------------------------------
def _run_config(processes, threads, bucket_bytes, args, profile):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "OMP_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE.parent / "python"), env.get("PYTHONPATH")] if p)
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", "--threads", str(threads),
               "--models", args.models, "--epochs", str(args.epochs), "--bucket-bytes", str(bucket_bytes)]
    if args.quick:
        command.append("--quick")
    if profile:
        command += ["--profile", profile, "--profile-steps", str(args.profile_steps)]
    if processes > 1:
        mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
        if not mpiexec.exists():
            raise SystemExit(f"no mpiexec next to {sys.executable} (pip install mpich mpi4py)")
        command = [str(mpiexec), "-n", str(processes)] + command
    before = _cpu_times()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    after = _cpu_times()
    lines = [line for line in completed.stdout.splitlines() if line.startswith(MARKER)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"{config_label(processes, threads, bucket_bytes)}: the worker failed "
                         f"(exit {completed.returncode})")
    result = json.loads(lines[-1][len(MARKER):])
    if before and after:  # the hypervisor's steal during the run, in cores (another VM's work)
        total = sum(after) - sum(before)
        result["steal_cores"] = (after[7] - before[7]) / max(1, total) * (os.cpu_count() or 1)
    return result


def _cpu_times():
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None


def _busy_cores(seconds=1.0):
    """Cores kept busy by other processes over `seconds` (from /proc/stat; None elsewhere)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)  # busy (not idle, not iowait), total

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except OSError:
        return None
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def _wait_idle(limit):
    """Waits (up to `limit` seconds) until other processes keep under a quarter of a core busy;
    returns the last reading (cores), warning when the machine stayed busy."""
    deadline = time.monotonic() + limit
    while True:
        busy = _busy_cores()
        if busy is None or busy < 0.25 or time.monotonic() > deadline:
            break
    if busy is not None and busy >= 0.25:
        print(f"warning: other processes keep {busy:.2f} cores busy: this run's figures will be slow and noisy",
              file=sys.stderr, flush=True)
    return busy


def _epoch_times(entry):
    """An entry's timed epochs: the slowest rank's seconds each."""
    return [max(rank[e]["seconds"] for rank in entry["ranks"]) for e in range(len(entry["ranks"][0]))]


def summarize(results):
    """Rows: per model and configuration, the figures of the table. results: configuration key ->
    list of worker results (one per repetition), whose epochs are pooled."""
    rows = []
    for name in results["1x1"][0]["models"]:
        base = None
        for (processes, threads, bucket_bytes) in CONFIGS:
            key = config_key(processes, threads, bucket_bytes)
            runs = [r for r in results.get(key, []) if name in r["models"]]
            if not runs:
                continue
            entries = [run["models"][name] for run in runs]
            epochs = [[rank[e] for rank in entry["ranks"]]  # per timed epoch: every rank's figures
                      for entry in entries for e in range(len(entry["ranks"][0]))]
            epoch_times = [max(rank["seconds"] for rank in epoch) for epoch in epochs]
            epoch = statistics.median(epoch_times)
            steps = -(-entries[0]["samples"] // entries[0]["batch"])
            row = {"model": name, "config": key, "label": config_label(processes, threads, bucket_bytes),
                   "processes": processes, "threads": threads,
                   "bucket_bytes": runs[0].get("bucket_bytes"),  # what DataParallel resolved it to
                   "buckets": entries[0].get("bucket_sizes"), "epoch_s": epoch,
                   "epoch_min_s": min(epoch_times), "epoch_max_s": max(epoch_times), "epochs_timed": len(epochs),
                   "samples": entries[0]["samples"], "steps": steps, "step_ms": epoch / steps * 1e3,
                   "allreduce_ms": None, "allreduce_share": None,
                   "allreduce_bytes": None, "allreduce_alone_ms": None, "allreduce_tiny_us": None,
                   "log_sync_calls_per_epoch": None, "log_sync_ms_per_call": None}
            if processes > 1:
                row["allreduce_ms"] = statistics.median(
                    statistics.mean(r["allreduce_seconds"] / r["allreduce_calls"] for r in epoch)
                    for epoch in epochs) * 1e3
                row["allreduce_share"] = statistics.median(
                    statistics.mean(r["allreduce_seconds"] / r["seconds"] for r in epoch) for epoch in epochs)
                row["allreduce_bytes"] = epochs[0][0]["allreduce_bytes"] // epochs[0][0]["allreduce_calls"]
                row["log_sync_calls_per_epoch"] = statistics.median(
                    statistics.mean(r["log_sync_calls"] for r in epoch) for epoch in epochs)
                row["log_sync_ms_per_call"] = statistics.median(
                    statistics.mean(r["log_sync_seconds"] / max(1, r["log_sync_calls"]) for r in epoch)
                    for epoch in epochs) * 1e3
                row["allreduce_alone_ms"] = statistics.median(
                    statistics.mean(entry["allreduce_alone_seconds"]) for entry in entries) * 1e3
                row["allreduce_tiny_us"] = statistics.median(
                    statistics.mean(entry["allreduce_tiny_seconds"]) for entry in entries) * 1e6
            if base is None and processes * threads == 1:
                base = epoch
            row["efficiency"] = base / (epoch * processes * threads) if base else None
            row["speedup"] = base / epoch if base else None
            rows.append(row)
    return rows


def compare_buckets(results):
    """Per model and bucketed configuration: its epoch against the same processes × threads
    without forced buckets, run by run (repetition r of each: the runs are interleaved, so a
    pair saw the same spell of the machine): the ratios of the runs' median epochs."""
    out = []
    for (processes, threads, bucket_bytes) in CONFIGS:
        if bucket_bytes == "auto":
            continue
        key, plain = config_key(processes, threads, bucket_bytes), config_key(processes, threads, "auto")
        for name in results["1x1"][0]["models"]:
            pairs = [(statistics.median(_epoch_times(b["models"][name])),
                      statistics.median(_epoch_times(a["models"][name])))
                     for b, a in zip(results.get(key, []), results.get(plain, []))
                     if name in b["models"] and name in a["models"]]
            if not pairs:
                continue
            ratios = [b / a for b, a in pairs]
            out.append({"model": name, "config": key, "against": plain, "label": config_label(processes, threads,
                                                                                              bucket_bytes),
                        "ratios": ratios, "ratio_median": statistics.median(ratios),
                        "bucketed_s": [b for b, _ in pairs], "plain_s": [a for _, a in pairs]})
    return out


def comparison_text(comparisons):
    if not comparisons:
        return ""
    lines = []
    for c in comparisons:
        ratios = ", ".join(f"{r:.3f}" for r in c["ratios"])
        lines.append(f"- {c['model'].upper()}: {c['ratio_median']:.3f} (runs: {ratios})")
    return ("Forced buckets against the default (one all-reduce) on this machine, run by run: the bucketed "
            "run's median epoch / the plain 2 × 1 run's median epoch of the same repetition (the two runs are "
            "adjacent, their order alternating; < 1: the buckets are faster); median over the repetitions, "
            "then each:\n\n" + "\n".join(lines))


HEADER = ("| model | processes × threads | epoch s (median; min–max) | step ms | speed-up vs 1×1 | "
          "scaling efficiency | all-reduce ms / call (in fit) | all-reduce share of epoch | "
          "bytes / all-reduce | all-reduce ms alone (tiny: µs) | log sync: calls / epoch × ms / call |")
RULE = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"


def format_row(row):
    def opt(value, fmt):
        return "—" if value is None else format(value, fmt)

    alone = "—" if row["allreduce_alone_ms"] is None else \
        f"{row['allreduce_alone_ms']:.3f} ({row['allreduce_tiny_us']:.0f})"
    label = LABELS[row["model"]].format(n=row["samples"])
    config = row.get("label") or f"{row['processes']} × {row['threads']}"
    if row.get("buckets"):
        config += f" ({len(row['buckets'])}: " + " + ".join(f"{b / 1e3:.0f}" for b in row["buckets"]) + " KB)"
    logs = "—" if row["log_sync_calls_per_epoch"] is None else \
        f"{row['log_sync_calls_per_epoch']:g} × {row['log_sync_ms_per_call']:.3f}"
    return (f"| {label} | {config} | {row['epoch_s']:.3f} "
            f"({row['epoch_min_s']:.3f}–{row['epoch_max_s']:.3f}) | {row['step_ms']:.2f} | "
            f"{opt(row['speedup'], '.2f')}× | {opt(row['efficiency'], '.0%')} | {opt(row['allreduce_ms'], '.3f')} | "
            f"{opt(row['allreduce_share'], '.1%')} | "
            f"{'—' if row['allreduce_bytes'] is None else format(row['allreduce_bytes'], ',')} | {alone} | "
            f"{logs} |")


def machine_lines():
    import fastnn

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        from mpi4py import MPI
        mpi = MPI.Get_library_version().splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - description only
        mpi = "unknown"
    config = fastnn.config.build_config()
    return [f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
            f"- CPU: {cpu}, {os.cpu_count()} logical processors (shared, noisy machine)",
            f"- Python {platform.python_version()}, NumPy {np.__version__}, fastnn {config['version']} "
            f"(FASTNN_ARCH={config['arch']}), MPI: {mpi}"]


NOTES = """Notes:
- The 2-process all-reduce runs between two processes on one machine, over MPICH's shared
  memory (no network): its figures are a floor for what a network adds, not a network measurement
  (bench/SCALING.md models networks).
- "2 × 1" is `DataParallel()`, whose default `bucket_bytes="auto"` resolves on one machine to one
  all-reduce of the whole flat gradient buffer after the backward. "2 × 1, buckets 256 KiB" forces
  `DataParallel(bucket_bytes=262144)`, what "auto" picks across machines: the buffer is cut between
  weights, from its end, into buckets that close once they hold at least 256 KiB (the cell lists them
  in the order they start, in KB; a large weight makes its bucket large: the MLP's upper layers,
  137 KB, and its 804 KB input kernel make a single bucket), and each bucket's reduce-scatter starts
  as soon as the backward walk has passed the last node writing it, its all-gather once its
  reduce-scatter is done; the sums are bit-identical to the single all-reduce. Both processes share
  the machine's 2 cores, so here the copies run on the cores the backward needs: this row measures
  the buckets' cost and benefit on one machine, not over a network. With one bucket (the MLP) the
  bucketed sum does the same work as the plain one, so its run-by-run ratios show the machine's noise.
- "all-reduce ms / call (in fit)" is `world().stats.allreduce_seconds / allreduce_calls` (one call per
  step), the mean over ranks. Without buckets it starts when a rank enters the all-reduce, so it
  includes waiting for the other rank to finish its backward (load imbalance, the shared machine's
  noise). With buckets it counts only the time spent in the bucket calls (starting buckets and moving
  them on between the backward's nodes, then waiting for the rest after it): the communication the
  backward did not hide, plus the same waiting. "alone" times, after a barrier (median of 40 calls),
  the same `sum_in_rank_order` on a buffer of the same size, and on 8 floats (the latency, µs); for
  the bucketed row, the same buckets summed with no backward (all started, then waited for).
- "log sync": `Replicas.global_logs` (an all-gather of the running loss and the metrics' states, not in
  `world().stats`), timed by wrapping it. With verbose=0 and no callback reading batch logs, as here,
  fit sums the logs over the ranks once per epoch (at its end), not at every step, so the column
  shows the calls per epoch (1) and the cost of one call: it is no longer a per-step cost (it was
  0.06–0.2 ms per step when every step synchronised the logs). A callback that reads batch logs
  (a progress bar with verbose=1, for instance) brings back one call per step.
- Scaling efficiency = (1×1 epoch) / (epoch × processes × threads); speed-up = (1×1 epoch) / epoch.
  An epoch's time is the slowest rank's; the table gives the median (and range) over the timed
  epochs of all runs (each run of a configuration: a new process or job, a warm-up epoch, then the
  timed epochs; the configurations' runs interleaved, in reverse order every other repetition). Each
  2-process fit call also copies the weights from rank 0 (once per epoch: ~1–6 MB, well under 1 % of
  an epoch here).
- The LSTM row trains 512 of bench_rnn.py's 2,000 sequences (8 steps) to keep the run short."""


def write_section(path, text):
    """Writes `text` as the file's "Data-parallel training" section (replacing an existing one)."""
    old = path.read_text() if path.exists() else "# Distributed training benchmarks\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + lines[end:]) + "\n"
    path.write_text(new.rstrip("\n") + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,lstm", help="comma-separated (default mlp,cnn,lstm)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up (default 3)")
    parser.add_argument("--quick", action="store_true", help="smaller epochs (a check, not a measurement)")
    parser.add_argument("--profile-steps", type=int, default=24,
                        help="steps per batch size in the 1×1 step profile (LSTM: a sixth, at least 3)")
    parser.add_argument("--no-profile", action="store_true", help="skip the step profile")
    parser.add_argument("--repeat", type=int, default=4,
                        help="runs of the four configurations, interleaved (the order reversed every other "
                             "repetition); their epochs are pooled (default 4)")
    parser.add_argument("--wait-idle", type=float, default=60.0,
                        help="before each run, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--update", action="store_true", help="write the section of bench/DISTRIBUTED.md")
    parser.add_argument("--json", default=str(MEASURED),
                        help="where to write the measurements (default bench/distributed_measured.json; "
                             "'-' for nowhere); --quick runs write nowhere unless given")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bucket-bytes", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    started = time.perf_counter()
    results = {config_key(*config): [] for config in CONFIGS}
    busy = {key: [] for key in results}
    for repeat in range(args.repeat):
        # interleaved, so that a slow spell of the machine hits every configuration; the order reversed
        # every other repetition, so that no configuration always runs right after another
        order = CONFIGS if repeat % 2 == 0 else CONFIGS[::-1]
        for processes, threads, bucket_bytes in order:
            key = config_key(processes, threads, bucket_bytes)
            profile = "" if args.no_profile or repeat or key != "1x1" else "mlp,cnn,lstm"
            print(f"[{repeat + 1}/{args.repeat}] {processes} process{'es' if processes > 1 else ''} × {threads} "
                  f"thread{'s' if threads > 1 else ''}"
                  f"{'' if bucket_bytes == 'auto' else f', buckets of {bucket_bytes} bytes'} ...",
                  file=sys.stderr, flush=True)
            busy[key].append(_wait_idle(args.wait_idle))
            results[key].append(_run_config(processes, threads, bucket_bytes, args, profile))
    rows = summarize(results)
    comparisons = compare_buckets(results)
    description = machine_lines()
    table = "\n".join([HEADER, RULE] + [format_row(row) for row in rows])
    compared = comparison_text(comparisons)
    body = table + ("\n\n" + compared if compared else "") + "\n\n" + NOTES
    print("\n".join(description) + "\n\n" + body)
    steal = {k: [r.get("steal_cores") for r in runs] for k, runs in results.items()}
    print("(hypervisor steal during the runs, cores: " + "; ".join(
        f"{k}: {', '.join('?' if v is None else f'{v:.2f}' for v in values)}" for k, values in steal.items()) + ")",
        file=sys.stderr)
    busy_text = "; ".join(f"{k}: {', '.join('?' if v is None else f'{v:.2f}' for v in values)}"
                          for k, values in busy.items())
    print(f"\n(total {time.perf_counter() - started:.0f} s; cores busy with other work just before each run: "
          f"{busy_text})", file=sys.stderr)

    json_path = None if args.json == "-" or (args.quick and args.json == str(MEASURED)) else pathlib.Path(args.json)
    if json_path is not None:
        first = results["1x1"][0]
        measured = {"machine": description, "rows": rows, "bucket_comparison": comparisons,
                    "busy_cores_before": busy, "raw": results,
                    "profile": first.get("profile"), "sum_seconds_per_byte": first.get("sum_seconds_per_byte"),
                    "sum_seconds_per_byte_cache": first.get("sum_seconds_per_byte_cache")}
        json_path.write_text(json.dumps(measured, indent=1) + "\n")
        print(f"measurements written to {json_path}", file=sys.stderr)
    if args.update:
        text = (f"{SECTION}\n\nWritten by `python bench/distributed.py --update` (the measurements, with "
                "the 1×1 step profile that bench/scaling_model.py reads, are in bench/distributed_measured.json). "
                "Synthetic data of the benchmarks' shapes; the same global batch in every configuration.\n\n"
                + "\n".join(description) + "\n\n" + body + "\n")
        write_section(RESULTS, text)
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
