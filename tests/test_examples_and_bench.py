"""The examples run and the benchmark harness works (its timings are not checked here)."""

import pathlib
import runpy
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_linear_regression_example_converges():
    example = runpy.run_path(str(ROOT / "examples" / "linear_regression.py"))
    mse, gap = example["main"](samples=4000, epochs=15)
    assert mse < 0.012  # the noise variance is 0.01
    assert gap < 0.02


def test_text_classification_example_reads_word_order():
    example = runpy.run_path(str(ROOT / "examples" / "text_classification.py"))
    accuracy, bag_accuracy = example["main"](samples=2000, epochs=3, verbose=0)
    assert accuracy >= 0.95
    assert bag_accuracy < 0.7  # word counts alone cannot tell


def test_bench_runs_and_prints_a_table():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--size", "smoke",
                          "--threads", "1", "--no-write", "--no-torch"],
                         capture_output=True, text=True, check=True)
    assert "| family | case | threads |" in out.stdout
    assert "| gemm | matmul 16×32 @ 32×8 f32 | 1 |" in out.stdout
    assert "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: unset" in out.stdout
    assert "OMP_PROC_BIND=true" in out.stdout
