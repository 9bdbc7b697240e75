"""``python -m fastnn``: prints the build configuration and checks a GEMM against NumPy."""

import time

import numpy as np

import fastnn


def _best_time(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    fastnn.show_config()
    print()
    rng = np.random.default_rng(0)
    n = 512
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    ours = fastnn.ops.matmul(a, b)
    theirs = a @ b
    error = float(np.abs(ours - theirs).max())
    t_ours = _best_time(lambda: fastnn.ops.matmul(a, b))
    t_numpy = _best_time(lambda: a @ b)
    gflop = 2 * n**3 / 1e9
    print(f"GEMM {n}x{n}x{n} float32: max |fastnn - numpy| = {error:.2e}")
    print(f"  fastnn {t_ours * 1e3:7.2f} ms  ({gflop / t_ours:6.1f} GFLOP/s)")
    print(f"  NumPy  {t_numpy * 1e3:7.2f} ms  ({gflop / t_numpy:6.1f} GFLOP/s)")
    if not error < 1e-2:
        raise SystemExit("fastnn and NumPy disagree")


if __name__ == "__main__":
    main()
