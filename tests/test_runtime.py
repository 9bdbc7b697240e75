"""fastnn's threads in a real process: fork safety, the default thread count (CPU affinity and
cgroup quota), the OpenMP spin setting, the machine-load meter, and the adaptive thread count."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import runtime, thread_tuner

CHILD_TIMEOUT = 120  # seconds: a hang fails the test instead of stalling the suite


def _train_weights(threads):
    """A model big enough for its kernels to run on several threads, trained for one epoch."""
    fastnn.set_num_threads(threads)
    fastnn.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((1024, 784), dtype=np.float32)
    y = rng.integers(0, 10, 1024)
    model = fastnn.Sequential([fastnn.layers.Dense(256, activation="relu", input_shape=(784,)),
                               fastnn.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # 32 steps: the tuner probes
    return model.get_weights()


@pytest.fixture
def fixed_threads():
    """Two threads on every step (no adaptation), restored afterwards."""
    before, adaptive = fastnn.get_num_threads(), fastnn.config.adaptive_threads()
    fastnn.config.set_adaptive_threads(False)
    yield
    fastnn.set_num_threads(before)
    fastnn.config.set_adaptive_threads(adaptive)


def test_a_forked_child_trains_on_two_threads_after_the_parent_did(fixed_threads):
    parent = _train_weights(2)  # the parent's OpenMP pool now has a worker thread
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        child = pool.apply_async(_train_weights, (2,)).get(timeout=CHILD_TIMEOUT)
    finally:
        pool.terminate()
        pool.join()
    assert len(child) == len(parent)
    for a, b in zip(parent, child):
        np.testing.assert_array_equal(a, b)
    again = _train_weights(2)  # the parent's own threads restart after the fork
    for a, b in zip(parent, again):
        np.testing.assert_array_equal(a, b)


def test_os_fork_child_runs_parallel_kernels(fixed_threads):
    fastnn.set_num_threads(2)
    a = np.random.default_rng(1).random((300, 300), dtype=np.float32)
    expected = fastnn.ops.matmul(a, a)
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if the 2-thread product is right
        try:
            ok = np.array_equal(fastnn.ops.matmul(a, a), expected)
        finally:
            os._exit(0 if ok else 3)
    import time

    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a parallel kernel")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0


GRID_SEARCH = textwrap.dedent("""
    import sys
    import joblib
    import numpy as np
    from sklearn.model_selection import GridSearchCV
    import fastnn
    from fastnn import wrappers

    def build(width=128):  # wide enough for its kernels to run on 2 threads (batch 128)
        model = fastnn.Sequential([fastnn.layers.Dense(width, activation="relu", input_shape=(64,)),
                                   fastnn.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    fastnn.set_num_threads(2)
    (x, y), _ = fastnn.datasets.digits.load_data()
    x = x.reshape(-1, 64).astype("float32") / 16
    build(256).fit(x, y, epochs=1, batch_size=256, verbose=0)  # 2 threads started before the fork
    est = wrappers.SKLearnClassifier(build, fit_kwargs={"epochs": 10, "batch_size": 128}, random_state=0)
    with joblib.parallel_backend(sys.argv[1]):
        search = GridSearchCV(est, {"model_kwargs__width": [128, 256]}, cv=2, n_jobs=2).fit(x[:800], y[:800])
    print(round(search.best_score_, 3))
""")


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])  # multiprocessing forks on Linux
def test_grid_search_with_two_jobs_completes(backend):
    pytest.importorskip("sklearn")
    out = subprocess.run([sys.executable, "-c", GRID_SEARCH, backend], capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT * 2)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) > 0.5  # learnt (chance: 0.1)


# ---- the default thread count -----------------------------------------------------------------------------
def _cgroup(tmp_path, proc_lines, files):
    proc = tmp_path / "cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dict(cgroup_root=str(tmp_path / "fs"), proc_cgroup=str(proc))


def test_cgroup_v2_quota_of_the_process_or_an_ancestor(tmp_path):
    paths = _cgroup(tmp_path, ["0::/user/job"], {"user/job/cpu.max": "max 100000\n",
                                                 "user/cpu.max": "150000 100000\n"})
    assert runtime.cgroup_cpu_quota(**paths) == 1.5
    assert runtime.available_processors(**paths) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_without_quota(tmp_path):
    paths = _cgroup(tmp_path, ["0::/a"], {"a/cpu.max": "max 100000\n"})
    assert runtime.cgroup_cpu_quota(**paths) is None
    assert runtime.available_processors(**paths) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path):
    paths = _cgroup(tmp_path, ["4:memory:/x", "3:cpu,cpuacct:/docker/abc"],
                    {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
                     "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
                     "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert runtime.cgroup_cpu_quota(**paths) == 0.5
    assert runtime.available_processors(**paths) == 1  # at least one thread


def test_unreadable_cgroup_means_no_quota(tmp_path):
    assert runtime.cgroup_cpu_quota(str(tmp_path), str(tmp_path / "missing")) is None


def _fresh_process(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT",
                                                                 "OMP_WAIT_POLICY")}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_default_threads_follow_the_cpu_affinity():
    cpu = sorted(os.sched_getaffinity(0))[0]
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}}); import fastnn; print(fastnn.get_num_threads())"
    assert _fresh_process(code) == ["1"]
    code = "import fastnn, os; print(fastnn.get_num_threads(), len(os.sched_getaffinity(0)))"
    threads, processors = _fresh_process(code)
    assert threads == processors


def test_spin_count_is_set_for_fastnns_runtime_only():
    code = "import os, fastnn; print(fastnn.config.build_config()['openmp_wait'].split()[0], " \
           "os.environ.get('GOMP_SPINCOUNT', '-'))"
    assert _fresh_process(code) == [f"GOMP_SPINCOUNT={runtime.SPIN_COUNT}", "-"]
    assert _fresh_process(code, OMP_WAIT_POLICY="active") == ["OMP_WAIT_POLICY=active", "-"]
    assert _fresh_process(code, GOMP_SPINCOUNT="5") == ["GOMP_SPINCOUNT=5", "5"]


# ---- the load meter ---------------------------------------------------------------------------------------
def test_load_meter_subtracts_this_process(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    clock = iter([100.0, 102.0])
    own = iter([os.times_result((1.0, 0.0, 0, 0, 0)), os.times_result((2.5, 0.5, 0, 0, 0))])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(runtime.os, "times", lambda: next(own))
    #           user nice system idle iowait irq softirq steal
    stat.write_text(f"cpu  {10 * ticks} 0 0 {50 * ticks} 0 0 0 0\n")
    meter = runtime.LoadMeter(str(stat)).start()
    # 2 s later: 5 more busy CPU-seconds (1 of them stolen by the hypervisor), 2 of them ours
    stat.write_text(f"cpu  {14 * ticks} 0 0 {51 * ticks} 0 0 0 {1 * ticks}\n")
    assert meter.stop() == pytest.approx((5 - 2) / 2)


def test_load_meter_without_proc_stat(tmp_path):
    assert runtime.LoadMeter(str(tmp_path / "none")).start().stop() is None


# ---- the adaptive thread count ----------------------------------------------------------------------------
class _Machine:
    """A fake clock whose steps take seconds[threads] (the tuner only reads the clock)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.now = 0.0
        self.threads = []

    def run(self, tuner, steps):
        for _ in range(steps):
            tuner.step_begin()
            threads = fastnn._core.threads_in_use()
            self.threads.append(threads)
            self.now += self.seconds[threads]
            tuner.step_end()


QUIET = {4: 0.01, 3: 0.013, 2: 0.019, 1: 0.037}  # seconds per step at each thread count


def _tuned(seconds):
    machine = _Machine(seconds)
    return machine, thread_tuner.ThreadTuner(clock=lambda: machine.now)


@pytest.fixture
def four_threads():
    before, adaptive = fastnn.get_num_threads(), fastnn.config.adaptive_threads()
    fastnn.set_num_threads(4)
    fastnn.config.set_adaptive_threads(True)
    thread_tuner._last_choice[0] = None
    yield
    thread_tuner._apply(0)
    thread_tuner._last_choice[0] = None
    fastnn.set_num_threads(before)
    fastnn.config.set_adaptive_threads(adaptive)


def test_tuner_keeps_all_threads_on_a_quiet_machine(four_threads):
    machine, tuner = _tuned(QUIET)
    machine.run(tuner, 2000)
    tuner.close()
    assert tuner.current == 4
    tried = sum(t != 4 for t in machine.threads)
    assert 0 < tried < 0.02 * len(machine.threads)  # it probes, rarely
    assert fastnn._core.threads_in_use() == 4  # the cap is lifted after the loop


def test_tuner_drops_the_threads_a_busy_neighbour_slows(four_threads):
    # one core busy: 4 threads wait for the one sharing it; 3 run at full speed
    machine, tuner = _tuned({4: 0.05, 3: 0.013, 2: 0.019, 1: 0.037})
    machine.run(tuner, 100)
    assert tuner.current == 3
    # the neighbour leaves: the tuner goes back to 4 within a few seconds
    machine.seconds = QUIET
    machine.run(tuner, 800)
    assert tuner.current == 4
    tuner.close()


def test_tuner_walks_down_to_one_thread_and_the_next_loop_starts_there(four_threads):
    machine, tuner = _tuned({4: 0.2, 3: 0.15, 2: 0.1, 1: 0.04})
    machine.run(tuner, 200)
    tuner.close()
    assert tuner.current == 1
    assert thread_tuner.ThreadTuner().current == 1


def test_probe_schedule_is_shared_by_the_loops_of_a_process(four_threads):
    thread_tuner._schedule.update(next=0.0, interval=None)
    first = thread_tuner.ThreadTuner()
    for _ in range(20):  # real steps of ~0 s: the first probe comes after the baseline
        first.step_begin()
        first.step_end()
    first.close()
    assert thread_tuner._schedule["next"] > 0  # the decision set the next probe time
    second = thread_tuner.ThreadTuner()
    assert second._next_probe == thread_tuner._schedule["next"]  # not a probe at once
    thread_tuner._schedule.update(next=0.0, interval=None)


def test_tuner_off_uses_the_configured_count(four_threads):
    fastnn.config.set_adaptive_threads(False)
    machine, tuner = _tuned({4: 1.0, 3: 0.1, 2: 0.1, 1: 0.1})
    machine.run(tuner, 100)
    assert set(machine.threads) == {4}


def test_set_adaptive_threads_rejects_non_bools():
    with pytest.raises(TypeError, match="'enabled' must be a bool"):
        fastnn.config.set_adaptive_threads(1)


def test_adaptive_training_is_bit_identical_to_fixed_threads(fixed_threads):
    fixed = _train_weights(2)
    fastnn.config.set_adaptive_threads(True)
    thread_tuner._last_choice[0] = 1  # start on one thread: the tuner changes the count mid-epoch
    thread_tuner._schedule.update(next=0.0, interval=None)  # and probes at once
    try:
        adaptive = _train_weights(2)
    finally:
        thread_tuner._last_choice[0] = None
    for a, b in zip(fixed, adaptive):
        np.testing.assert_array_equal(a, b)
