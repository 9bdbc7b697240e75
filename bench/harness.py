"""Side-by-side timing of fastnn against NumPy and PyTorch (shared by every bench_*.py).

Each benchmark family (bench_<family>.py) defines ``cases(torch)`` returning ``Case``s: one
callable per peer computing the same thing. ``run_cases`` times the peers alternately in
one process, at each thread count, takes medians, and returns rows for the table.

Fair play: every peer runs at its best. NumPy runs with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` unset (run.py restarts itself without them, and with
``OMP_PROC_BIND=true`` so that the two OpenMP runtimes' threads keep to their cores), PyTorch with
``torch.set_flush_denormal(True)`` (and ``channels_last`` where a family says so). Each
peer's threads are limited to the same count; with more than one thread the harness pauses
after each peer's batch, so that its idle workers (OpenBLAS and OpenMP spin for a while after
a call) do not steal the next peer's cores.
"""

import dataclasses
import datetime
import os
import platform
import statistics
import time

import numpy as np

import fastnn

PEERS = ("fastnn", "numpy", "torch")
SPIN_SECONDS = 0.2  # OpenBLAS workers spin ~0.1-0.3 s after a call, OpenMP's less


@dataclasses.dataclass
class Case:
    """One benchmark: the same computation in each peer.

    Attributes:
        family: kernel family, e.g. "gemm".
        name: what is computed, e.g. "matmul 128x784 @ 784x256".
        flops: floating-point operations of one call (0 when not meaningful).
        run: peer name -> zero-argument callable. "fastnn" is required.
        check: optional (fastnn result, peer result) -> None, raising when they disagree;
            run once per peer before timing.
        rounds: optional number of rounds for slow cases (default: run_cases' rounds).
    """

    family: str
    name: str
    flops: float
    run: dict
    check: object = None
    rounds: int = None


@dataclasses.dataclass
class Row:
    family: str
    name: str
    threads: int
    samples: dict  # peer -> seconds per call, one per round
    flops: float

    @property
    def seconds(self):
        """peer -> median seconds per call."""
        return {p: statistics.median(s) for p, s in self.samples.items()}

    def ratio(self, peer):
        """How many times faster fastnn is than `peer` (> 1: fastnn wins): the median over
        rounds of the two times measured in the same round, so that a slow spell of the
        shared machine, which hits both, cancels out."""
        if peer not in self.samples:
            return None
        return statistics.median(t / f for t, f in zip(self.samples[peer], self.samples["fastnn"]))


def set_threads(n, torch=None):
    """Limits fastnn, NumPy's BLAS and PyTorch to n threads."""
    import threadpoolctl

    fastnn.set_num_threads(n)
    threadpoolctl.threadpool_limits(n)
    if torch is not None:
        torch.set_num_threads(n)


def _time_batch(fn, calls):
    # One untimed call first: after the pause between peers, thread pools are asleep, and
    # waking a virtual machine's idle core has been seen to take up to ~10 ms.
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _calls_for(fn, target_seconds):
    """Calls per batch so that a batch lasts about target_seconds."""
    per_call = _time_batch(fn, 3)
    return max(1, int(target_seconds / max(per_call, 1e-7)))


def run_cases(cases, thread_counts, torch=None, rounds=11, batch_seconds=0.03, log=print):
    """Times every case at every thread count; returns a list of Row."""
    rows = []
    for threads in thread_counts:
        set_threads(threads, torch)
        for case in cases:
            peers = [p for p in PEERS if p in case.run]
            if case.check is not None:
                reference = case.run["fastnn"]()
                for peer in peers[1:]:
                    case.check(reference, case.run[peer]())
            calls = {p: _calls_for(case.run[p], batch_seconds) for p in peers}
            samples = {p: [] for p in peers}
            for r in range(case.rounds or rounds):
                order = peers[r % len(peers):] + peers[:r % len(peers)]  # rotate who goes first
                for peer in order:
                    samples[peer].append(_time_batch(case.run[peer], calls[peer]))
                    if threads > 1:
                        time.sleep(SPIN_SECONDS)
            row = Row(case.family, case.name, threads, samples, case.flops)
            rows.append(row)
            log(format_row(row))
    return rows


HEADER = ("| family | case | threads | fastnn ms | NumPy ms | torch ms | "
          "NumPy / fastnn | torch / fastnn | fastnn GFLOP/s |")
RULE = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"


def format_row(row):
    def ms(peer):
        s = row.seconds.get(peer)
        return "—" if s is None else f"{s * 1e3:.4g}"

    def ratio(peer):
        r = row.ratio(peer)
        return "—" if r is None else f"{r:.2f}×"

    gflops = f"{row.flops / row.seconds['fastnn'] / 1e9:.1f}" if row.flops else "—"
    return (f"| {row.family} | {row.name} | {row.threads} | {ms('fastnn')} | {ms('numpy')} | "
            f"{ms('torch')} | {ratio('numpy')} | {ratio('torch')} | {gflops} |")


def normalization_inputs(rng, shape):
    """float32 inputs of a normalization benchmark over the last axis of `shape`: x (mean 0.5,
    std 2), an upstream gradient dy, and gamma, beta of the last axis' size."""
    features = shape[-1]
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, features).astype(np.float32)
    beta = rng.uniform(-0.5, 0.5, features).astype(np.float32)
    return x, dy, gamma, beta


def machine_description(torch=None):
    """Lines describing the machine and the peers' builds."""
    import threadpoolctl

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernel, "
            f"{i.get('threading_layer')})" for i in threadpoolctl.threadpool_info()
            if i.get("user_api") == "blas"]
    config = fastnn.config.build_config()
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical processors",
        f"- Python {platform.python_version()}, NumPy {np.__version__} "
        f"(BLAS: {', '.join(blas) or 'unknown'})",
        f"- fastnn {config['version']}: {config['compiler']}, FASTNN_ARCH={config['arch']}, "
        f"SIMD {' '.join(config['simd'])}",
        f"- PyTorch: {torch.__version__ if torch is not None else 'not installed'}",
        "- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: unset for this run; "
        f"OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND', 'unset')} (fastnn's and PyTorch's OpenMP threads)",
    ]
    return lines


def write_results(path, rows, description, note="", update=False):
    """Writes the table (and the machine's description and the families' notes) to `path`.

    With `update`, only the families in `rows` are replaced: the file's rows of other families
    stay, under a line saying which run they come from (rerunning one family after a change
    need not rerun them all)."""
    lines = [format_row(row) for row in rows]
    if update and os.path.exists(path):
        families = {row.family for row in rows}
        with open(path) as f:
            old = f.read().splitlines()
        table = next((i for i, line in enumerate(old) if line.startswith("| family")), len(old))
        kept = [line for line in old[table + 2:]  # the result rows (not the notes' tables)
                if line.startswith("| ") and line.split("|")[1].strip() not in families]
        marker = "the other rows are from the run of "
        earlier = next((line.split(marker, 1)[1] for line in old if marker in line), None)
        if earlier is None:
            earlier = next((line[len("- date: "):] for line in old if line.startswith("- date:")), "unknown")
        now = next(line[len("- date: "):] for line in description if line.startswith("- date:"))
        reruns = [line for line in old if line.startswith("- rerun ") and marker not in line]
        description = description + [f"- rerun at {now}: {', '.join(sorted(families))}"] + [
            line for line in reruns if not any(f in line.split(": ", 1)[-1].split(", ") for f in families)] + [
            f"- {marker}{earlier}"]
        fresh = {paragraph[:40] for paragraph in note.split("\n\n")} if note else set()
        old_notes = [p for p in _notes(old).split("\n\n") if p and p[:40] not in fresh]
        note = "\n\n".join(n for n in [note] + old_notes if n)

        def order(line):
            cells = line.split("|")
            return int(cells[3]), cells[1].strip()

        lines = sorted(kept + lines, key=order)  # (stable: each family keeps its cases' order)
    with open(path, "w") as f:
        f.write("# Benchmark results\n\n")
        f.write("Written by `python bench/run.py`. Times are medians over rounds in which the "
                "peers run alternately in one process; a ratio is the median of the per-round "
                "ratios (above 1: fastnn is faster). Compare ratios, not absolute times: the "
                "machine is shared and noisy.\n\n")
        f.write("\n".join(description) + "\n\n")
        if note:
            f.write(note + "\n\n")
        f.write(HEADER + "\n" + RULE + "\n")
        for line in lines:
            f.write(line + "\n")


def _notes(lines):
    """The notes of an existing results file: the text between its description list and its table."""
    start = max((i for i, line in enumerate(lines) if line.startswith("- ")), default=-1) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("| family")), len(lines))
    return "\n".join(lines[start:end]).strip()
