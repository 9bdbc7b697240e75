"""Instruction-set levels (python/fastnn/isa.py, cpp/cpu/cpu_module.cpp): the CPU probe, the choice
of a kernel module, FASTNN_ISA, and the results of every level this build has.

The comparison across levels needs a portable build (FASTNN_ARCH=portable: v2, v3, v4); on a
one-level build only it skips. FASTNN_REQUIRE_LEVELS (e.g. "v2,v3,v4", as .ci/quick sets it) makes
a missing level a failure.
"""

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import isa

HERE = os.path.dirname(os.path.abspath(__file__))

# fastnn._cpu's names -> the flags Linux prints in /proc/cpuinfo (osxsave has none there).
CPUINFO_FLAGS = {
    "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2",
    "popcnt": "popcnt", "cx16": "cx16", "lahf": "lahf_lm", "movbe": "movbe", "bmi1": "bmi1",
    "bmi2": "bmi2", "lzcnt": "abm", "avx": "avx", "fma": "fma", "f16c": "f16c", "avx2": "avx2",
    "avxvnni": "avx_vnni", "avx512f": "avx512f", "avx512dq": "avx512dq", "avx512cd": "avx512cd",
    "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
}
V4_CPU = frozenset(isa.LEVELS["v4"]) | {"sse2"}
V3_CPU = frozenset(isa.LEVELS["v3"]) | {"sse2"}
PORTABLE = ("v4", "v3", "v2")


def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or _cpuinfo_flags() is None,
                    reason="compares cpuid with Linux's /proc/cpuinfo on x86-64")
def test_cpu_features_agree_with_the_kernel():
    flags = _cpuinfo_flags()
    features = isa.cpu_features()
    for name, flag in CPUINFO_FLAGS.items():
        assert (name in features) == (flag in flags), f"{name}: cpuid says {name in features}, Linux {flag in flags}"
    assert "sse2" in features  # every x86-64 CPU
    assert isa.cpu_name()


def test_the_loaded_module_is_the_chosen_level():
    info = fastnn._core.build_info()
    assert info["level"] == isa.level()
    assert isa.level() in isa.built_levels()
    assert os.path.basename(fastnn._core.__file__).startswith(f"_core_{isa.level()}.")
    march = {"v2": "x86-64-v2", "v3": "x86-64-v3", "v4": "x86-64-v4", "neon": "armv8-a"}.get(isa.level())
    if march:
        assert f"-march={march}" in info["flags"]
    if isa.level() in isa.LEVELS:
        assert isa.missing_features(isa.level()) == []


@pytest.mark.skipif(shutil.which("nm") is None or sys.platform != "linux", reason="reads ELF symbols with binutils' nm")
def test_the_modules_export_their_init_function_only():
    # Anything else exported could be bound across modules (or by other libraries in the process)
    # to a copy compiled for another instruction set.
    for path in (fastnn._core.__file__, fastnn._cpu.__file__):
        out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True)
        symbols = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
        assert symbols == ["PyInit_" + os.path.basename(path).split(".")[0].replace("_core_" + isa.level(), "_core")]


def test_show_config_says_which_level_runs_and_why(capsys):
    fastnn.show_config()
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.startswith("ISA level"))
    assert isa.level() in line and isa.level_reason() in line
    assert fastnn.config.build_config()["isa_levels"] == isa.built_levels()


# ---- the choice, on made-up CPUs ------------------------------------------------------------------------

def test_the_best_level_the_cpu_runs_is_chosen():
    assert isa.choose_level(PORTABLE, V4_CPU)[0] == "v4"
    level, reason = isa.choose_level(PORTABLE, V3_CPU)
    assert level == "v3"
    assert "v4 needs avx512f, avx512bw, avx512cd, avx512dq, avx512vl" in reason
    level, reason = isa.choose_level(PORTABLE, frozenset(isa.LEVELS["v2"]) | {"avx", "avx2"})
    assert level == "v2" and "v3 needs fma, bmi1" in reason
    assert isa.choose_level(("native",), frozenset()) == ("native", "the only level of this build")


def test_a_forced_level_is_loaded_when_the_cpu_runs_it():
    assert isa.choose_level(PORTABLE, V4_CPU, "v2") == ("v2", "forced by FASTNN_ISA=v2")
    assert isa.choose_level(PORTABLE, V4_CPU, " X86-64-V3 ")[0] == "v3"


def test_a_forced_level_the_cpu_cannot_run_names_the_missing_features():
    cpu = V3_CPU - {"fma"}
    with pytest.raises(RuntimeError, match=r"FASTNN_ISA=v4 asks for level v4, but this CPU lacks fma, avx512f, "
                                           r"avx512bw, avx512cd, avx512dq, avx512vl; it runs v2"):
        isa.choose_level(PORTABLE, cpu, "v4")


def test_a_level_the_build_lacks_is_a_value_error():
    with pytest.raises(ValueError, match=r"FASTNN_ISA must name a level this build has \('v4', 'v3', 'v2'\), got 'v5'"):
        isa.choose_level(PORTABLE, V4_CPU, "v5")
    with pytest.raises(ValueError, match=r"got 'v2'; FASTNN_ARCH=portable builds v2, v3 and v4"):
        isa.choose_level(("native",), V4_CPU, "v2")


def test_a_cpu_below_every_level_is_refused():
    with pytest.raises(RuntimeError, match=r"runs none of fastnn's kernel builds \(v4, v3, v2\): level v2 needs "
                                           r"sse4.1, sse4.2"):
        isa.choose_level(PORTABLE, {"sse2", "sse3", "ssse3", "popcnt", "cx16", "lahf"})
    with pytest.raises(ImportError, match="no kernel module"):
        isa.choose_level((), V4_CPU)


def test_missing_features_checks_its_level():
    assert isa.missing_features("v3", V4_CPU) == []
    assert isa.missing_features("v4", V3_CPU) == list(isa.LEVELS["v4"][-5:])
    with pytest.raises(ValueError, match=r"level must be one of 'v4', 'v3', 'v2', 'neon', 'generic', got 'v9'"):
        isa.missing_features("v9")


def _import_fastnn(env_isa):
    env = dict(os.environ, FASTNN_ISA=env_isa)
    return subprocess.run([sys.executable, "-c", "import fastnn; print(fastnn.isa.level(), '|', fastnn.isa.level_reason())"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_fastnn_isa_forces_the_level_at_import():
    run = _import_fastnn(isa.level())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{isa.level()} | forced by FASTNN_ISA={isa.level()}"
    run = _import_fastnn("v7")
    assert run.returncode != 0
    assert "ValueError: FASTNN_ISA must name a level this build has" in run.stderr and "got 'v7'" in run.stderr


# ---- every level of this build -----------------------------------------------------------------------------

def _required_levels():
    value = os.environ.get("FASTNN_REQUIRE_LEVELS", "")
    return [level for level in value.split(",") if level]


@pytest.fixture(scope="module")
def level_results(tmp_path_factory):
    """Every level this CPU runs, each computed in its own process (FASTNN_ISA), by level name."""
    levels = isa.runnable_levels()
    required = _required_levels()
    assert set(required) <= set(levels), f"FASTNN_REQUIRE_LEVELS={required}, this build and CPU run {levels}"
    results = {}
    for level in levels:
        out = tmp_path_factory.mktemp(f"isa_{level}") / "results.npz"
        run = subprocess.run([sys.executable, os.path.join(HERE, "isa_worker.py"), str(out)],
                             env=dict(os.environ, FASTNN_ISA=level), capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        with np.load(out) as data:
            results[level] = dict(data)
        assert str(results[level]["level"]) == level
    return results


def test_each_level_is_bit_identical_on_one_and_two_threads(level_results):
    for level, results in level_results.items():
        names = sorted(key[:-2] for key in results if key.endswith("@1"))
        assert len(names) >= 15
        for name in names:
            np.testing.assert_array_equal(results[f"{name}@1"], results[f"{name}@2"], err_msg=f"{level}: {name}")


def test_levels_agree_to_float32_rounding(level_results):
    levels = list(level_results)
    if len(levels) < 2:
        pytest.skip(f"this build has one level ({', '.join(isa.built_levels())}) to compare; "
                    "FASTNN_ARCH=portable builds three (CI tests them through .ci/quick)")
    reference = level_results[levels[-1]]  # the narrowest
    for level in levels[:-1]:
        for key, expected in reference.items():
            if key == "level":
                continue
            actual = level_results[level][key]
            assert actual.shape == expected.shape and actual.dtype == expected.dtype, key
            # Wider vectors sum in another order and fuse multiply-adds: float32 rounding, a few
            # units of 1e-7 relative per operation; two epochs of Adam carry it into the weights.
            tol = 1e-4 if key.startswith("mlp.") else 2e-5
            np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max(),
                                       err_msg=f"{level} against {levels[-1]}: {key}")
        assert any(not np.array_equal(level_results[level][key], reference[key])
                   for key in reference if key.startswith("gemm.")) or level in ("native",), \
            "different instruction sets should round at least one GEMM result differently"
