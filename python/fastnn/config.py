"""Global settings: default float type, thread count, build description."""

import os
import platform

import numpy as np

from . import _core, isa, runtime, thread_tuner

_FLOATX = "float32"
_EPSILON = 1e-7


def floatx():
    """Returns the default float type of new layers and models, as a string ("float32")."""
    return _FLOATX


def set_floatx(value):
    """Sets the default float type of layers built afterwards.

    Args:
        value: "float32" (the default) or "float64" (used by gradient checks).

    Raises:
        ValueError: any other value.
    """
    global _FLOATX
    name = np.dtype(value).name if value in ("float32", "float64", np.float32, np.float64) else None
    if name is None:
        raise ValueError(f"set_floatx: expected 'float32' or 'float64', got {value!r}")
    _FLOATX = name


def epsilon():
    """The fuzz factor of the losses' clipping, 1e-7 as in Keras."""
    return _EPSILON


def set_num_threads(n):
    """Sets the number of threads fastnn's kernels use.

    One setting for all kernels: fastnn runs its own OpenMP threads (Eigen, used for its
    SIMD primitives, never starts threads of its own). Results are identical bit for bit
    for any thread count. Operations under ~1.5 MFLOP run on one thread whatever this
    says: waking a second thread would cost more than it saves.

    Args:
        n: int >= 1.

    Raises:
        TypeError: n is not an int.
        ValueError: n < 1.

    Example:
        >>> import fastnn
        >>> fastnn.set_num_threads(1); fastnn.get_num_threads()
        1
    """
    _core.set_num_threads(n)


def get_num_threads():
    """Returns the number of threads fastnn's kernels use.

    The default is ``OMP_NUM_THREADS`` when set, else the number of processors this process
    may run on (its CPU affinity, capped by its container's CPU quota). While other processes
    keep cores busy, the training loops may use fewer (see ``set_adaptive_threads``).
    """
    return _core.get_num_threads()


def set_adaptive_threads(enabled):
    """Lets the fit / evaluate / predict loops use fewer threads while the machine is busy.

    A parallel region waits for its slowest thread, and a thread sharing its core with another
    busy process is slow: on 2 cores with one busy neighbour, 2 threads trained an MLP 4-5x
    slower than 1. With this on (the default; the environment variable
    ``FASTNN_ADAPTIVE_THREADS=0`` turns it off at start), the loops time their steps, now and
    then try one thread fewer or more for a few steps, and keep the faster count, up to
    ``get_num_threads()``. Results are bit-identical at any thread count, so this changes
    speed only.

    Args:
        enabled: bool.

    Raises:
        TypeError: enabled is not a bool.
    """
    thread_tuner.set_enabled(enabled)


def adaptive_threads():
    """Whether the training loops adapt their thread count to the machine's load (a bool)."""
    return thread_tuner.enabled()


def build_config():
    """Returns the build and runtime configuration as a dict (what ``show_config`` prints)."""
    import numpy

    info = dict(_core.build_info())
    info.update(
        isa_level=isa.level(),
        isa_reason=isa.level_reason(),
        isa_levels=isa.built_levels(),
        cpu=isa.cpu_name(),
        cpu_features=sorted(isa.cpu_features()),
        threads=get_num_threads(),
        processors=_core.num_processors(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        available_processors=runtime.processors_at_start(),
        adaptive_threads=thread_tuner.enabled(),
        openmp_wait=runtime.spin_setting(),
        numpy=numpy.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    return info


def show_config():
    """Prints how fastnn was built and how it will run.

    Shows the instruction-set level that runs and why (``fastnn.isa``: the best of the build's
    levels this CPU runs, or the one ``FASTNN_ISA`` forces), the CPU, the compiler and the level's
    flags, ``FASTNN_ARCH``, the SIMD instruction sets Eigen actually compiled in (read from its
    ``EIGEN_VECTORIZE_*`` macros), the Eigen and OpenMP versions, and the thread count.
    """
    c = build_config()
    rows = [
        ("fastnn", c["version"]),
        ("compiler", c["compiler"]),
        ("flags", " ".join(c["flags"].split())),
        ("ISA level", f"{c['isa_level']}: {c['isa_reason']}"),
        ("CPU", c["cpu"] or "unknown"),
        ("FASTNN_ARCH", f"{c['arch']} (levels built: {', '.join(c['isa_levels'])})"),
        ("SIMD (Eigen)", " ".join(c["simd"])),
        ("Eigen", c["eigen"]),
        ("OpenMP", c["openmp"] or "not available (kernels run on one thread)"),
        ("threads", f"{c['threads']} ({c['available_processors']} processors available to this process"
                    + (f", OMP_NUM_THREADS={c['omp_num_threads']}" if c["omp_num_threads"] else "") + ")"),
        ("adaptive", "on: fewer threads while other processes keep cores busy" if c["adaptive_threads"]
                     else "off (set_adaptive_threads)"),
        ("OpenMP wait", c["openmp_wait"]),
        ("NumPy", c["numpy"]),
        ("Python", f"{c['python']} ({c['machine']})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


__all__ = ["floatx", "set_floatx", "epsilon", "get_num_threads", "set_num_threads", "set_adaptive_threads",
           "adaptive_threads", "build_config", "show_config"]
