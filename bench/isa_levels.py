"""The portable build's instruction-set levels against a native build, side by side in one run.

    FASTNN_ARCH=portable pip wheel . -w dist       # the portable wheel (kernels for v2, v3, v4)
    python bench/isa_levels.py --portable dist/fastnn-*.whl --native python

times the same bench rows (GEMM 1024³, the MLP epoch, the conv and LSTM forward+backward rows of
bench_gemm.py, bench_mlp.py, bench_conv.py and bench_rnn.py) with the native build (``--native``: a
folder holding a ``fastnn`` package built with ``FASTNN_ARCH=native``, by default this checkout's
``python`` folder after a development build) and with the portable wheel at its best level and at
each level below it (``FASTNN_ISA``). Each configuration runs in its own process (two builds of the
extension cannot share one); the processes alternate, round after round, and the table gives
medians and the median of the per-round ratios, so that a slow spell of the shared machine hits
every configuration alike. Writes bench/ISA.md (``--out``).

Not a ``bench_`` family: run.py times peers inside one process.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = {  # bench module -> (its size, the rows (Case names) timed here)
    "bench_gemm": ("quick", ["matmul 1024×1024 @ 1024×1024 f32"]),
    "bench_mlp": ("quick", ["epoch MLP 784-256-128-10, 12,000 samples, batch 128, Adam"]),
    "bench_conv": ("quick", ["conv fwd+bwd 64×28×28×1 → 32 3×3 same", "conv fwd+bwd 64×14×14×32 → 64 3×3 same",
                             "conv fwd+bwd 64×32×32×3 → 64 3×3 same"]),
    "bench_rnn": ("full", ["LSTM 32×100×128 → 256 f32 fwd+bwd"]),
}
THREADS = (1, 2)


def worker(threads, batch_seconds):
    """Times every row at every thread count in this process; prints one JSON line."""
    import importlib

    import fastnn
    from harness import set_threads

    result = {"level": fastnn.isa.level(), "flags": fastnn._core.build_info()["flags"], "cpu": fastnn.isa.cpu_name(),
              "seconds": {}}
    # A fixed thread count: the levels are compared, not the tuner's reading of a shared machine.
    fastnn.config.set_adaptive_threads(False)
    cases = []
    for module, (size, names) in ROWS.items():
        found = {case.name: case for case in importlib.import_module(module).cases(None, size)}
        missing = [name for name in names if name not in found]
        if missing:
            raise SystemExit(f"{module} has no row named {missing}: update isa_levels.ROWS")
        cases += [found[name] for name in names]
    for n in threads:
        set_threads(n)
        for case in cases:
            fn = case.run["fastnn"]
            fn()  # warm: scratch buffers, packed weights, thread pool
            start = time.perf_counter()
            fn()
            once = time.perf_counter() - start
            calls = max(1, int(batch_seconds / max(once, 1e-7)))
            batches = []
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                batches.append((time.perf_counter() - start) / calls)
            result["seconds"][f"{case.name}|{n}"] = min(batches)
    print("RESULT " + json.dumps(result), flush=True)


def _package_dir(path, scratch):
    """A folder holding the fastnn package: ``path`` itself, or a wheel's contents."""
    if path.endswith(".whl"):
        target = os.path.join(scratch, os.path.basename(path)[:-4])
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(target)
        return target
    if not os.path.isdir(os.path.join(path, "fastnn")):
        raise SystemExit(f"--native/--portable: {path} holds no fastnn package")
    return path


def _run(config, threads, batch_seconds):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([config["path"], HERE]))
    env.pop("FASTNN_ISA", None)
    if config["isa"]:
        env["FASTNN_ISA"] = config["isa"]
    out = subprocess.run([sys.executable, __file__, "--worker", "--threads", ",".join(map(str, threads)),
                          "--batch-seconds", str(batch_seconds)],
                         env=env, capture_output=True, text=True, check=False)
    line = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{config['label']} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def _levels(path):
    out = subprocess.run([sys.executable, "-c", "import fastnn; print(' '.join(fastnn.isa.runnable_levels()))"],
                         env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True, check=True)
    return out.stdout.split()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--native", default=os.path.join(HERE, "..", "python"),
                        help="folder with the native build's fastnn package (default: this checkout's python/)")
    parser.add_argument("--portable", required="--worker" not in sys.argv,
                        help="the portable wheel (.whl) or a folder with its fastnn package")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of alternating processes (default 5)")
    parser.add_argument("--batch-seconds", type=float, default=0.3, help="time per timed batch (default 0.3)")
    parser.add_argument("--threads", default=",".join(map(str, THREADS)), help="thread counts (default 1,2)")
    parser.add_argument("--out", default=os.path.join(HERE, "ISA.md"), help="Markdown output (default bench/ISA.md)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if args.worker:
        worker(threads, args.batch_seconds)
        return
    with tempfile.TemporaryDirectory() as scratch:
        portable = _package_dir(os.path.abspath(args.portable), scratch)
        native = _package_dir(os.path.abspath(args.native), scratch)
        levels = _levels(portable)
        configs = [{"label": "native", "path": native, "isa": None}]
        configs += [{"label": f"portable {level}", "path": portable, "isa": level} for level in levels]
        samples = {c["label"]: [] for c in configs}
        info = {}
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for config in order:
                result = _run(config, threads, args.batch_seconds)
                samples[config["label"]].append(result["seconds"])
                info[config["label"]] = result["flags"]
                cpu = result["cpu"]
                print(f"round {r + 1}/{args.rounds}: {config['label']} done", file=sys.stderr, flush=True)
    table = _table(configs, samples, levels)
    header = (f"# Instruction-set levels: the portable wheel against a native build\n\n"
              f"{datetime.date.today()}, {cpu} ({platform.machine()}), "
              f"{os.cpu_count()} cores; {args.rounds} rounds of alternating processes, the best of 3 timed "
              f"batches of ≥ {args.batch_seconds} s per row in each; medians over rounds, ms per call.\n"
              f"Ratios are medians of the per-round ratios (< 1.00: faster than native).\n\n"
              + "".join(f"- {label}: `{flags.strip()}`\n" for label, flags in info.items()) + "\n")
    text = header + table
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


def _table(configs, samples, levels):
    best = f"portable {levels[0]}"
    labels = [c["label"] for c in configs]
    keys = list(samples["native"][0])
    head = ["row", "threads"] + [f"{label} ms" for label in labels] + [f"{label} / native" for label in labels[1:]]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: |" + " ---: |" * (len(head) - 2)]
    for key in keys:
        name, threads = key.rsplit("|", 1)
        medians = [statistics.median(s[key] for s in samples[label]) * 1e3 for label in labels]
        ratios = [statistics.median(a[key] / b[key] for a, b in zip(samples[label], samples["native"]))
                  for label in labels[1:]]
        cells = [name, threads] + [f"{m:.4g}" for m in medians] + [f"{r:.3f}" for r in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    worst = max(statistics.median(a[k] / b[k] for a, b in zip(samples[best], samples["native"])) for k in keys)
    return "\n".join(lines) + f"\n\nThe slowest row of {best} against native: {worst:.3f}×.\n"


if __name__ == "__main__":
    main()
