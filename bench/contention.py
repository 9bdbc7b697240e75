"""Training epochs on a busy machine: the MLP and CNN epochs of bench_mlp / bench_cnn, quiet and
with a competing busy process pinned to the last core, fastnn and PyTorch with default settings.

What a user sees when another program shares the machine: a parallel region waits for its
slowest thread, and the thread that shares a core with the busy process is slow. Each figure
is the median epoch of one fresh process (the OpenMP runtime reads its settings when it
loads), the configurations alternating round by round:

- fastnn: the defaults (bounded OpenMP spinning; fit adapts its thread count by timing steps);
- fastnn, fixed threads + spin 300k: what fastnn did before (GNU OpenMP's default spinning,
  all threads on every step), for the quiet-machine comparison;
- fastnn 1 thread, torch, torch 1 thread.

Goal: with the busy neighbour, fastnn's epoch within 2x of its quiet 1-thread epoch; quiet,
its 2-thread epoch unchanged (within 3 %) against the fixed-threads configuration. The quiet
comparison is made twice: across fresh processes (the spin setting can only change at load;
±5-10 % between processes on a shared machine), and in one process with epochs alternating
between the adaptive and the fixed thread count (the tuner's own cost, without that noise).

Run: python bench/contention.py [--rounds 3] [--epochs 3]  (Linux; needs os.sched_setaffinity)
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = {"mlp": "bench_mlp", "cnn": "bench_cnn"}
CONFIGS = {  # name -> (peer, environment)
    "fastnn": ("fastnn", {}),
    "fastnn, fixed threads + spin 300k": ("fastnn", {"FASTNN_ADAPTIVE_THREADS": "0", "GOMP_SPINCOUNT": "300000"}),
    "fastnn 1 thread": ("fastnn", {"OMP_NUM_THREADS": "1"}),
    "torch": ("torch", {}),
    "torch 1 thread": ("torch", {"OMP_NUM_THREADS": "1"}),
}
CLEAN = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "FASTNN_ADAPTIVE_THREADS",
         "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _worker(family, peer, epochs):
    """In a fresh process: the family's epoch case for one peer; prints the epoch times (s)."""
    sys.path.insert(0, HERE)
    torch = None
    if peer == "torch":
        import torch

        torch.set_flush_denormal(True)
        if "OMP_NUM_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    module = __import__(FAMILIES[family])
    case = next(c for c in module.cases(torch, "quick") if "epoch" in c.name)
    run = case.run[peer]
    run()  # warm-up: first-call allocations, and the thread tuner's first probes
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps({"case": case.name, "times": times}))


def _overhead_worker(family, rounds):
    """In one process: epochs alternating with the adaptive thread count on and off (the
    tuner's cost on a quiet machine, free of the differences between processes)."""
    sys.path.insert(0, HERE)
    import fastnn

    module = __import__(FAMILIES[family])
    case = next(c for c in module.cases(None, "quick") if "epoch" in c.name)
    run = case.run["fastnn"]
    run()
    times = {True: [], False: []}
    for r in range(rounds):
        for adaptive in ((True, False) if r % 2 == 0 else (False, True)):
            fastnn.config.set_adaptive_threads(adaptive)
            start = time.perf_counter()
            run()
            times[adaptive].append(time.perf_counter() - start)
    print(json.dumps({"case": case.name, "on": times[True], "off": times[False]}))


def _measure(family, config, epochs):
    peer, extra = CONFIGS[config]
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(extra)
    out = subprocess.run([sys.executable, __file__, "--worker", family, peer, str(epochs)], env=env,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["case"], statistics.median(result["times"])


def _busy_neighbour(core):
    code = f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per configuration (default 3)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process (default 3)")
    parser.add_argument("--families", default="mlp,cnn", help="comma-separated: mlp, cnn (default both)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--quiet-only", action="store_true", help="no busy neighbour (the quiet comparison only)")
    parser.add_argument("--output", default=os.path.join(HERE, "CONTENTION.md"),
                        help="where to write the tables (default bench/CONTENTION.md; '' to print only)")
    args = parser.parse_args(argv)
    lines = []

    def emit(line=""):
        print(line)
        lines.append(line)

    configs = [c for c in CONFIGS if not (args.no_torch and CONFIGS[c][0] == "torch")]
    core = max(os.sched_getaffinity(0))
    samples = {}  # (family, condition, config) -> [seconds]
    names = {}
    conditions = ("quiet",) if args.quiet_only else ("quiet", "busy neighbour")
    for condition in conditions:
        neighbour = _busy_neighbour(core) if condition != "quiet" else None
        try:
            time.sleep(0.5)
            for _ in range(args.rounds):
                for family in args.families.split(","):
                    for config in configs:
                        names[family], seconds = _measure(family, config, args.epochs)
                        samples.setdefault((family, condition, config), []).append(seconds)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    emit(f"| case | configuration | quiet ms | busy neighbour ms | busy / quiet | busy / quiet fastnn 1 thread |")
    emit("| --- | --- | ---: | ---: | ---: | ---: |")
    for family in args.families.split(",") if not args.quiet_only else ():
        one = statistics.median(samples[(family, "quiet", "fastnn 1 thread")])
        for config in configs:
            quiet = statistics.median(samples[(family, "quiet", config)])
            busy = statistics.median(samples[(family, "busy neighbour", config)])
            emit(f"| {names[family]} | {config} | {quiet * 1e3:.0f} | {busy * 1e3:.0f} | {busy / quiet:.2f}x "
                  f"| {busy / one:.2f}x |")
    emit()
    emit("| case | quiet, one process: adaptive threads ms | fixed threads ms | ratio |")
    emit("| --- | ---: | ---: | ---: |")
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    for family in args.families.split(","):
        out = subprocess.run([sys.executable, __file__, "--overhead", family, str(10 * args.epochs)], env=env,
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        on, off = statistics.median(result["on"]), statistics.median(result["off"])
        emit(f"| {result['case']} | {on * 1e3:.1f} | {off * 1e3:.1f} | {on / off:.3f} |")
    emit()
    emit("| case | quiet: fastnn ms | quiet: fixed threads + spin 300k ms | ratio |")
    emit("| --- | ---: | ---: | ---: |")
    for family in args.families.split(","):
        new = statistics.median(samples[(family, "quiet", "fastnn")])
        old = statistics.median(samples[(family, "quiet", "fastnn, fixed threads + spin 300k")])
        emit(f"| {names[family]} | {new * 1e3:.0f} | {old * 1e3:.0f} | {new / old:.3f} |")
    if args.output:
        sys.path.insert(0, HERE)
        import harness

        try:
            import torch
        except ImportError:
            torch = None
        header = [f"# Training on a busy machine ({datetime.date.today()})", "",
                  f"`python bench/contention.py --rounds {args.rounds} --epochs {args.epochs}`: each figure the "
                  f"median epoch of fresh processes, default settings; the busy neighbour is a pure-Python loop "
                  f"pinned to the last core.", ""] + harness.machine_description(torch)[1:] + [""]
        with open(args.output, "w") as f:
            f.write("\n".join(header + lines) + "\n")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--overhead":
        _overhead_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
