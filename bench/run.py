"""Benchmarks fastnn's kernels against NumPy and PyTorch (CPU): ``python bench/run.py``.

Runs every family (bench/bench_<family>.py) at 1 thread and at all threads, prints a
Markdown table and writes it, with the machine's description, to bench/RESULTS.md.
PyTorch is compared when importable (``pip install torch==2.13.0`` for the CPU build).
"""

import argparse
import importlib
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _restart_with_fair_environment():
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pin OpenBLAS to a slower kernel or cache model
    # than it would pick itself: benchmark NumPy as a user has it. OMP_PROC_BIND: with two
    # OpenMP runtimes in one process (fastnn's and PyTorch's), an idle worker was seen to
    # land on the main thread's core, and every parallel region of either library then
    # waited for the scheduler (~4 ms a call); binding keeps each on its own core. Both act
    # when the libraries load, so restart.
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_TUNING}
    env.setdefault("OMP_PROC_BIND", "true")
    if env != dict(os.environ):
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _families():
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def main(argv=None):
    _restart_with_fair_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", default=_families(),
                        help=f"families to run (default: all of {', '.join(_families())})")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated thread counts (default: 1 and all)")
    parser.add_argument("--size", choices=("full", "quick", "smoke"), default="full",
                        help="quick: fewer and smaller cases; smoke: one tiny case each (tests)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"),
                        help="Markdown file to write (default: bench/RESULTS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--update", action="store_true",
                        help="replace only these families' rows in the output file, keep the others")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    import harness

    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_flush_denormal(True)  # its float32 backward is ~10x slower on denormals
        except ImportError:
            torch = None

    threads = sorted({int(t) for t in args.threads.split(",")})
    cases, modules = [], []
    for family in args.families:
        module = importlib.import_module(f"bench_{family}")
        modules.append(module)
        cases += module.cases(torch, size=args.size)

    print("\n".join(harness.machine_description(torch)) + "\n")
    print(harness.HEADER + "\n" + harness.RULE)
    rounds, batch = (1, 0.005) if args.size == "smoke" else (11, 0.03)
    rows = harness.run_cases(cases, threads, torch, rounds=rounds, batch_seconds=batch)
    # Families may add what a time table cannot show (e.g. attention's peak memory).
    notes = [module.notes(torch, size=args.size) for module in modules if hasattr(module, "notes")]
    notes = "\n\n".join(n for n in notes if n)
    if notes:
        print("\n" + notes)
    if not args.no_write:
        harness.write_results(args.output, rows, harness.machine_description(torch), note=notes,
                              update=args.update)
        print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
