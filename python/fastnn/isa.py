"""Which build of the kernels runs: instruction-set levels, chosen when fastnn is imported.

fastnn's kernels are compiled once per *level* into their own extension module,
``fastnn/_core_<level>``. A portable build (``FASTNN_ARCH=portable``, what wheels use) has three on
x86-64, the psABI micro-architecture levels, and one on aarch64:

=========  ==========================================================  =====================
level      needs                                                       CPUs
=========  ==========================================================  =====================
``v2``     SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF       2009 on (Nehalem, Bulldozer)
``v3``     v2 + AVX, AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE              2013 on (Haswell, Zen)
``v4``     v3 + AVX-512 F, BW, CD, DQ, VL                               Skylake-SP, Ice Lake, Zen 4
``neon``   aarch64's Advanced SIMD                                      every 64-bit Arm
=========  ==========================================================  =====================

``pip install .`` builds one module for the machine it runs on, ``native``. At import, fastnn asks
the CPU (``fastnn._cpu``: cpuid and xgetbv, so features the OS does not enable do not count) and
loads the best level it can run. ``FASTNN_ISA=v2|v3|v4`` (or ``native``, ``neon``, ...) forces one:
a level this build lacks is a ``ValueError``, one the CPU cannot run a ``RuntimeError`` naming the
missing features. ``fastnn.show_config()`` says which level runs and why.

Results are bit-identical at any thread count for a fixed level; across levels they agree to
float32 rounding (wider vectors sum in a different order and fuse multiply-adds).

The modules share no symbols (hidden visibility, each loaded on its own), so nothing compiled for
a wider level can be called on a CPU that lacks it.
"""

import importlib.machinery
import importlib.util
import os
import platform
import sys

# Features each level needs beyond the one before it, in the names fastnn._cpu reports.
_V2 = ("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16", "lahf")
_V3 = ("avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe", "osxsave")
_V4 = ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")

LEVELS = {
    "v4": _V2 + _V3 + _V4,
    "v3": _V2 + _V3,
    "v2": _V2,
    "neon": ("asimd",),
    "generic": (),
}
"""The features each named level needs (a dict of tuples). ``native`` and ``custom`` builds are not
in it: what they need is known only to the module, which checks it as it loads."""

# Preference when several are installed: a build for this very machine first, then the widest.
_ORDER = ("native", "custom", "v4", "v3", "v2", "neon", "generic")
_ALIASES = {"x86-64-v2": "v2", "x86-64-v3": "v3", "x86-64-v4": "v4", "armv8-a": "neon"}
ENV_VARIABLE = "FASTNN_ISA"

# What load() chose, for show_config.
_loaded = {"level": None, "reason": None}


def cpu_features():
    """The instruction-set features this CPU has and its operating system enables.

    Read with cpuid and xgetbv on x86-64 (AVX and AVX-512 count only when the OS saves their
    registers), from the kernel's hardware capabilities on aarch64.

    Returns:
        A frozenset of names: x86-64 ones as GCC's ``-m`` options spell them ("sse4.2", "avx2",
        "fma", "avx512f", "avx512vnni", ...), aarch64 ones as Linux does ("asimd", "sve", ...).
    """
    from . import _cpu

    return frozenset(_cpu.features())


def cpu_name():
    """The CPU's model name as it reports it (a str; its vendor, or the machine's name, where it has none)."""
    from . import _cpu

    return _cpu.brand() or _cpu.vendor() or platform.processor() or platform.machine()


def missing_features(level, features=None):
    """The features ``level`` needs that a CPU lacks.

    Args:
        level: a level name, a key of ``LEVELS`` ("v2", "v3", "v4", "neon", "generic").
        features: the CPU's features, an iterable of names. Defaults to None: this CPU's
            (``cpu_features()``).

    Returns:
        A list of feature names in the level's order; empty when the CPU runs the level.

    Raises:
        ValueError: level is not a key of ``LEVELS``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    have = cpu_features() if features is None else frozenset(features)
    return [name for name in LEVELS[level] if name not in have]


def built_levels():
    """The levels this installation has a kernel module for, best first (a tuple of str)."""
    return tuple(level for level in _ORDER if importlib.util.find_spec(f"{__package__}._core_{level}") is not None)


def runnable_levels(features=None):
    """The built levels a CPU runs, best first (a tuple of str).

    Args:
        features: the CPU's features, an iterable of names. Defaults to None: this CPU's.
    """
    return tuple(_runs(built_levels(), cpu_features() if features is None else frozenset(features)))


def choose_level(built, features, requested=None):
    """Picks the kernel module to load.

    Args:
        built: the levels installed (``built_levels()``).
        features: the CPU's features (``cpu_features()``).
        requested: the level to force (the ``FASTNN_ISA`` variable's value), or None for the best
            the CPU runs. Defaults to None.

    Returns:
        ``(level, reason)``: the level's name and a sentence saying why (for show_config).

    Raises:
        ValueError: ``requested`` is not one of the built levels.
        RuntimeError: the CPU lacks features ``requested`` needs, or runs none of the built levels.
        ImportError: ``built`` is empty (an incomplete installation).
    """
    built = tuple(built)
    if not built:
        raise ImportError("fastnn has no kernel module (fastnn/_core_<level>): the installation is incomplete; "
                          "reinstall it (pip install --force-reinstall fastnn)")
    if requested:
        level = _ALIASES.get(requested.strip().lower(), requested.strip().lower())
        if level not in built:
            raise ValueError(f"{ENV_VARIABLE} must name a level this build has ({', '.join(map(repr, built))}), "
                             f"got {requested!r}" + ("" if len(built) > 1 else
                                                     "; FASTNN_ARCH=portable builds v2, v3 and v4"))
        missing = [] if level not in LEVELS else missing_features(level, features)
        if missing:
            raise RuntimeError(f"{ENV_VARIABLE}={requested} asks for level {level}, but this CPU lacks "
                               f"{', '.join(missing)}; it runs {', '.join(_runs(built, features)) or 'none of them'}")
        return level, f"forced by {ENV_VARIABLE}={requested}"
    runs = _runs(built, features)
    if not runs:
        lowest = built[-1]
        raise RuntimeError(f"this CPU runs none of fastnn's kernel builds ({', '.join(built)}): "
                           f"level {lowest} needs {', '.join(missing_features(lowest, features))}")
    level = runs[0]
    if len(built) == 1:
        return level, "the only level of this build"
    skipped = [f"{better} needs {', '.join(missing_features(better, features))}"
               for better in built[:built.index(level)] if better in LEVELS]
    return level, f"the best of {', '.join(built)} this CPU runs" + (f" ({'; '.join(skipped)})" if skipped else "")


def _runs(built, features):
    return [level for level in built if level not in LEVELS or not missing_features(level, features)]


def load():
    """Imports the chosen kernel module as ``fastnn._core`` and returns it.

    Honours ``FASTNN_ISA``; see ``choose_level`` for the errors.
    """
    built = built_levels()
    level, reason = choose_level(built, cpu_features(), os.environ.get(ENV_VARIABLE) or None)
    spec = importlib.util.find_spec(f"{__package__}._core_{level}")
    # Every level's module exports PyInit__core: load the file under the one name the rest of
    # fastnn imports.
    name = f"{__package__}._core"
    loader = importlib.machinery.ExtensionFileLoader(name, spec.origin)
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, spec.origin, loader=loader))
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _loaded.update(level=level, reason=reason)
    return module


def level():
    """The level of the kernel module that runs (a str: "v2", "v3", "v4", "native", ...)."""
    return _loaded["level"]


def level_reason():
    """Why that level runs (a str: "the best of v4, v3, v2 this CPU runs", "forced by FASTNN_ISA=v2", ...)."""
    return _loaded["reason"]


__all__ = ["cpu_features", "cpu_name", "missing_features", "built_levels",
           "runnable_levels", "choose_level", "load", "level", "level_reason"]
