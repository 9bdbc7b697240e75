"""How fastnn's threads live in a process: the OpenMP runtime's settings, the default thread
count, fork, and how busy the machine is.

- Idle OpenMP workers spin before they sleep. GNU OpenMP's default, 300,000 spins (several
  milliseconds), keeps a core busy after every parallel region, and on a machine where another
  process needs that core the spinning and the waiting for a descheduled worker make training
  several times slower (fastnn.thread_tuner answers that part). fastnn loads its runtime with
  ``GOMP_SPINCOUNT`` = ``SPIN_COUNT``, a tenth of the default (a fraction of a millisecond,
  enough to bridge the gaps between a training step's kernels: the quiet MLP and CNN epochs
  measured the same with 10k, 30k, 100k and 300k within the machine's noise) unless
  the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, and removes the variable again so
  that other libraries' runtimes and child processes see the user's environment.
- The default thread count is the number of processors this process may run on: its CPU
  affinity and its control group's CPU quota (a container limited to 2 CPUs on a 64-core host
  gets 2 threads, not 64). ``OMP_NUM_THREADS`` and ``set_num_threads`` override it.
- A forked child inherits OpenMP's thread-pool bookkeeping but not its threads, and its first
  parallel region would wait for them forever. Before each fork (``os.register_at_fork``),
  fastnn ends its workers; parent and child start new ones when they next need them.
"""

import math
import os
import time

from . import isa

SPIN_COUNT = 30_000
_SPIN_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# What load_core found, for show_config.
_state = {"spin": None, "processors": None}


def load_core():
    """Imports the C++ extension with fastnn's OpenMP settings and returns it.

    The extension is the kernel module of the instruction-set level ``fastnn.isa`` chooses.

    The OpenMP runtime reads its environment once, when it is loaded, so the spin count is set
    for the duration of the import only.
    """
    # Read before the runtime loads: with OMP_PROC_BIND set it pins this thread to one CPU.
    processors = available_processors()
    user_set = next((f"{name}={os.environ[name]}" for name in _SPIN_VARIABLES if name in os.environ), None)
    if user_set is None:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        _core = isa.load()
    finally:
        if user_set is None:
            del os.environ["GOMP_SPINCOUNT"]
    _state["spin"] = user_set or f"GOMP_SPINCOUNT={SPIN_COUNT} (fastnn's default)"
    _state["processors"] = processors
    if "OMP_NUM_THREADS" not in os.environ and processors < _core.get_num_threads():
        _core.set_num_threads(processors)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_core.release_threads)
    return _core


def processors_at_start():
    """Processors the process could use when fastnn loaded (before OpenMP pinned any thread)."""
    return _state["processors"]


def spin_setting():
    """How idle OpenMP workers wait, as set when fastnn loaded (a string for show_config)."""
    return _state["spin"]


def available_processors(cgroup_root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """Processors this process may use: its CPU affinity, capped by its cgroup's CPU quota.

    Args:
        cgroup_root: where the cgroup file system is mounted. Defaults to "/sys/fs/cgroup".
        proc_cgroup: the file naming this process's cgroups. Defaults to "/proc/self/cgroup".

    Returns:
        An int >= 1.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(cgroup_root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """The CPU quota of this process's cgroup and its ancestors, in CPUs, or None when unlimited.

    Reads cgroup v2's ``cpu.max`` ("quota period" or "max period") and cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the smallest quota on the path to the root
    applies.

    Args:
        cgroup_root: where the cgroup file system is mounted. Defaults to "/sys/fs/cgroup".
        proc_cgroup: the file naming this process's cgroups. Defaults to "/proc/self/cgroup".
    """
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2
            for folder in _ancestors(cgroup_root, path):
                quotas.append(_read_v2(os.path.join(folder, "cpu.max")))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                for folder in _ancestors(os.path.join(cgroup_root, mount), path):
                    quotas.append(_read_v1(folder))
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def _ancestors(root, path):
    """root/path, its parent, ... up to root (the quota of any ancestor applies)."""
    parts = [p for p in path.split("/") if p]
    return [os.path.join(root, *parts[:i]) for i in range(len(parts), -1, -1)]


def _read_file(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


def _read_v2(path):
    fields = _read_file(path)
    if not fields or fields[0] == "max" or len(fields) < 2:
        return None
    try:
        return int(fields[0]) / int(fields[1])
    except (ValueError, ZeroDivisionError):
        return None


def _read_v1(folder):
    quota = _read_file(os.path.join(folder, "cpu.cfs_quota_us"))
    period = _read_file(os.path.join(folder, "cpu.cfs_period_us"))
    try:
        quota, period = int(quota[0]), int(period[0])
    except (TypeError, IndexError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


class LoadMeter:
    """Measures how many cores other processes (and the hypervisor) kept busy over a span.

    Reads the machine's CPU time from ``/proc/stat`` at ``start()`` and ``stop()`` and
    subtracts this process's own CPU time, so fastnn's threads do not count. On systems
    without ``/proc/stat`` the load is unknown (None).
    """

    def __init__(self, stat="/proc/stat"):
        self._stat = stat
        self._start = None

    def _snapshot(self):
        try:
            with open(self._stat) as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 4:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system (idle iowait) irq softirq steal
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        own = os.times()
        return busy / ticks, own.user + own.system, time.monotonic()

    def start(self):
        """Starts the span."""
        self._start = self._snapshot()
        return self

    def stop(self):
        """Ends the span; returns the cores others kept busy on average (a float), or None."""
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self._start, end))
        if wall <= 0:
            return None
        return max(0.0, (busy - own) / wall)
