"""Threads, version and build description (python/fastnn/_config.py)."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

import fastnn


def test_version_matches_the_installed_distribution():
    assert fastnn.__version__ == importlib.metadata.version("fastnn")
    assert fastnn._core.build_info()["version"] == fastnn.__version__


def test_set_and_get_num_threads(threads):
    for n in (1, 3, 2):
        threads(n)
        assert fastnn.get_num_threads() == n


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                       (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_set_num_threads_rejects_bad_values(threads, bad, error):
    before = fastnn.get_num_threads()
    with pytest.raises(error, match=r"set_num_threads: 'n' must be an int in \[1, 65536\]"):
        fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before


def test_omp_num_threads_sets_the_default():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", "import fastnn; print(fastnn.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_show_config_reports_the_compiled_simd(capsys):
    fastnn.show_config()
    text = capsys.readouterr().out
    info = fastnn._core.build_info()
    for line_start in ("fastnn", "compiler", "flags", "ISA level", "CPU", "FASTNN_ARCH", "SIMD (Eigen)", "Eigen",
                       "OpenMP", "threads"):
        assert any(line.startswith(line_start) for line in text.splitlines()), line_start
    assert info["simd"], "at least one SIMD level or 'none (scalar)'"
    assert " ".join(info["simd"]) in text
    if info["level"] != "generic":  # test_isa.py checks each level's -march
        assert "-march=" in info["flags"]
    assert info["eigen"].startswith("3.4")
