"""Thread count and build description."""

import os
import platform

from . import _core


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

    The default is ``OMP_NUM_THREADS`` when set, else the number of processors.
    """
    return _core.get_num_threads()


def config():
    """Returns the build and runtime configuration as a dict (what ``show_config`` prints)."""
    import numpy

    info = dict(_core.build_info())
    info.update(
        threads=get_num_threads(),
        processors=_core.num_processors(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        numpy=numpy.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    return info


def show_config():
    """Prints how fastnn was built and how it will run.

    Shows the compiler and flags, ``FASTNN_ARCH``, the SIMD instruction sets Eigen
    actually compiled in (read from its ``EIGEN_VECTORIZE_*`` macros), the Eigen and
    OpenMP versions, and the thread count.
    """
    c = config()
    rows = [
        ("fastnn", c["version"]),
        ("compiler", c["compiler"]),
        ("flags", " ".join(c["flags"].split())),
        ("FASTNN_ARCH", c["arch"]),
        ("SIMD (Eigen)", " ".join(c["simd"])),
        ("Eigen", c["eigen"]),
        ("OpenMP", c["openmp"] or "not available (kernels run on one thread)"),
        ("threads", f"{c['threads']} of {c['processors']} processors"
                    + (f" (OMP_NUM_THREADS={c['omp_num_threads']})" if c["omp_num_threads"] else "")),
        ("NumPy", c["numpy"]),
        ("Python", f"{c['python']} ({c['machine']})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
