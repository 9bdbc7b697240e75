"""The examples run and the benchmark harness works (its timings are not checked here)."""

import pathlib
import runpy
import subprocess
import sys

import pytest

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


def test_transformer_example_reads_word_order():
    example = runpy.run_path(str(ROOT / "examples" / "transformer_classification.py"))
    accuracy, lstm_accuracy, bag_accuracy = example["main"](samples=8000, epochs=12, verbose=0)
    assert accuracy >= 0.9
    assert lstm_accuracy >= 0.95
    assert bag_accuracy < 0.65  # word counts alone cannot tell


def test_siamese_example_tells_matching_digits_apart():
    example = runpy.run_path(str(ROOT / "examples" / "siamese_digits.py"))
    assert example["main"]() >= 0.95  # chance is 0.5


def test_bench_runs_and_prints_a_table():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--size", "smoke",
                          "--threads", "1", "--no-write", "--no-torch"],
                         capture_output=True, text=True, check=True)
    assert "| family | case | threads |" in out.stdout
    assert "| gemm | matmul 16×32 @ 32×8 f32 | 1 |" in out.stdout
    assert "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: unset" in out.stdout
    assert "OMP_PROC_BIND=true" in out.stdout


def test_isa_levels_bench_times_each_level_and_writes_a_table(tmp_path):
    # The installed build stands in for both the native and the portable one (CI's main suite
    # has one level): the script runs each configuration in its own process and tabulates them.
    import fastnn

    packages = str(pathlib.Path(fastnn.__file__).resolve().parents[1])
    out = tmp_path / "ISA.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "isa_levels.py"), "--native", packages, "--portable", packages,
                    "--rounds", "1", "--batch-seconds", "0.001", "--threads", "1", "--out", str(out)],
                   capture_output=True, text=True, check=True)
    table = out.read_text()
    level = fastnn.isa.level()
    assert f"| row | threads | native ms | portable {level} ms | portable {level} / native |" in table
    assert "| matmul 1024×1024 @ 1024×1024 f32 | 1 |" in table
    assert "| LSTM 32×100×128 → 256 f32 fwd+bwd | 1 |" in table
    assert f"The slowest row of portable {level} against native:" in table


def test_readme_graph_example_runs(tmp_path, monkeypatch):
    """README's functional / subclassing example runs as written (fewer epochs)."""
    import re
    import shutil

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Graphs"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1).replace("epochs=10", "epochs=5")
    monkeypatch.chdir(tmp_path)
    if shutil.which("dot") is None:  # plot_model then says what to install
        with pytest.raises(ImportError, match="Graphviz"):
            exec(compile(code, "README.md", "exec"), {})
        return
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "model.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(namespace["history"].history) == ["digit_accuracy", "digit_loss", "ink_loss", "loss"]
    assert namespace["mlp"].evaluate(namespace["x_test"], namespace["y_test"], verbose=0)[1] > 0.85


def test_compress_example_prunes_and_quantizes():
    example = runpy.run_path(str(ROOT / "examples" / "compress.py"))
    results = example["main"](["--dataset", "digits"])
    for kind in ("mlp", "cnn"):
        float32, pruned, int8 = results[kind].values()
        assert float32[0] > 0.9
        assert pruned[0] > float32[0] - 0.05  # 80 % of the kernels zero, fine-tuned
        assert abs(int8[0] - pruned[0]) <= 0.01  # int8 costs at most a point
        assert float32[1] > 2.5 * pruned[1] and pruned[1] > 1.5 * int8[1]  # the weights file shrinks
