"""Data-parallel training (fastnn.distribution) on 2 MPI processes against the same script on
one process: the one-process run is the reference (the global batch's mean gradient).

The 2-process runs start ``mpiexec -n 2`` (MPICH from the ``mpi`` extra, in the test extra)
on tests/distributed_worker.py; they are skipped only when the extra is not installed.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn as keras
from fastnn.distribution import distribution_lib, world as world_module

import distributed_worker as worker

HERE = pathlib.Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("mpiexec")


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (the mpi extra: pip install \".[mpi]\")"
    if MPIEXEC is None:
        return "no mpiexec (the mpi extra installs MPICH's: pip install \".[mpi]\")"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def _environment(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
    package_root = str(pathlib.Path(keras.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                      else []))
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra or {})
    return env


def _launch(mode, out, *args, timeout=120, env=None):
    command = [MPIEXEC, "-n", "2", sys.executable, str(HERE / "distributed_worker.py"), mode, str(out),
               *[str(a) for a in args]]
    return subprocess.run(command, env=_environment(env), capture_output=True, text=True, timeout=timeout)


def _run(mode, out, *args, **kwargs):
    result = _launch(mode, out, *args, **kwargs)
    assert result.returncode == 0, f"mpiexec failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def _views(out):
    return [json.loads(pathlib.Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]


def _single(mode, out, *args):
    """The same scenario on this process alone, the distribution set as in the script."""
    try:
        getattr(worker, f"mode_{mode}")(str(out), *args)
    finally:
        distribution_lib.set_distribution(None)
    return dict(np.load(f"{out}.npz" if not str(out).endswith(".npz") else out))


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---- on 2 processes -------------------------------------------------------------------------------------------
@needs_mpi
def test_one_step_on_two_processes_equals_the_global_batch_on_one(tmp_path):
    # one step of a batch of 64 (32 per process); the models start from different seeds per
    # rank, rank 0's weights are broadcast; an L2 penalty is added once
    _run("fit", tmp_path / "two", 64, 64, 1, 0, 1)
    two = dict(np.load(tmp_path / "two.npz"))
    one = _single("fit", tmp_path / "one", 64, 64, 1, 0, 0)
    assert _relative(two["weights"], one["weights"]) <= 1e-5
    start = worker.flat_weights(worker.mlp(7))
    assert _relative(one["weights"], start) > 1e-3  # the step moved the weights


@needs_mpi
def test_an_epoch_with_an_uneven_last_batch_follows_the_one_process_curve(tmp_path):
    # 200 samples in batches of 48: the last has 8 (4 per process); shuffled with the shared
    # generator; validation sharded and reduced; History holds the global figures
    _run("fit", tmp_path / "two", 200, 48, 3, 1, 1)
    two = dict(np.load(tmp_path / "two.npz"))
    one = _single("fit", tmp_path / "one", 200, 48, 3, 1, 0)
    for key in ("history_loss", "history_accuracy", "history_val_loss", "history_val_accuracy"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, err_msg=key)
    assert _relative(two["weights"], one["weights"]) <= 1e-4
    np.testing.assert_allclose(two["evaluate_loss"], one["evaluate_loss"], rtol=1e-5)
    assert two["evaluate_accuracy"] == one["evaluate_accuracy"]


@needs_mpi
def test_a_last_batch_smaller_than_the_processes(tmp_path):
    # 65 samples in batches of 64: the last batch is one sample, and one process has none
    _run("fit", tmp_path / "two", 65, 64, 2, 0, 1)
    two = dict(np.load(tmp_path / "two.npz"))
    one = _single("fit", tmp_path / "one", 65, 64, 2, 0, 0)
    assert _relative(two["weights"], one["weights"]) <= 1e-5
    np.testing.assert_allclose(two["history_loss"], one["history_loss"], rtol=1e-5)


@needs_mpi
def test_two_process_runs_are_bit_identical_and_ranks_agree(tmp_path):
    _run("fit", tmp_path / "a", 200, 48, 2, 1, 1)
    _run("fit", tmp_path / "b", 200, 48, 2, 1, 1)
    a, b = dict(np.load(tmp_path / "a.npz")), dict(np.load(tmp_path / "b.npz"))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    views = _views(tmp_path / "a")
    assert views[0]["weights_sum"] == views[1]["weights_sum"]
    # two processes on this machine share its cores
    assert views[0]["threads"] == max(1, keras.config.runtime.available_processors() // 2)


@needs_mpi
def test_dropout_and_augmentation_draw_per_process_and_the_same_on_a_rerun(tmp_path):
    _run("dropout", tmp_path / "a")
    _run("dropout", tmp_path / "b")
    a, b = _views(tmp_path / "a"), _views(tmp_path / "b")
    assert a == b  # reruns: the same numbers
    assert a[0]["drawn"] != a[1]["drawn"]  # but each process its own
    assert a[0]["weights"] == a[1]["weights"]  # with the weights in step


@needs_mpi
def test_callbacks_reading_batch_logs_get_the_global_ones(tmp_path):
    _run("batch_logs", tmp_path / "two")
    two = dict(np.load(tmp_path / "two.npz"))
    one = _single("batch_logs", tmp_path / "one")
    assert two["seen"].shape == one["seen"].shape == (2 * (5 + 2), 2)
    np.testing.assert_allclose(two["seen"], one["seen"], rtol=1e-5)


@needs_mpi
def test_the_bucketed_all_reduce_is_bit_identical_to_one_after_the_backward(tmp_path):
    _run("buckets", tmp_path / "b")
    weights = dict(np.load(tmp_path / "b.npz"))
    assert np.array_equal(weights["64"], weights["None"]) and np.array_equal(weights["1000000000"], weights["None"])
    one = _single("buckets", tmp_path / "one")
    assert _relative(weights["64"], one["None"]) <= 1e-4


@needs_mpi
def test_a_stop_decided_on_one_process_stops_every_process_at_that_batch(tmp_path):
    _run("stop", tmp_path / "s")
    views = _views(tmp_path / "s")
    assert views[0] == views[1]
    assert views[0]["batches"] == 7 and views[0]["epochs"] == 1


@needs_mpi
def test_batch_normalization_statistics_agree_across_processes(tmp_path):
    _run("batchnorm", tmp_path / "bn")
    views = _views(tmp_path / "bn")
    assert views[0]["moving"] == views[1]["moving"]
    assert views[0]["predictions"] == views[1]["predictions"]
    # the mean of the processes' own statistics (each normalised its own share of the batches)
    local = np.array([views[0]["local"], views[1]["local"]], np.float32)
    assert not np.array_equal(local[0], local[1])
    np.testing.assert_allclose(views[0]["moving"], local.mean(axis=0), rtol=1e-6)


@needs_mpi
def test_rank_zero_alone_prints_the_progress_and_says_how_training_is_split(tmp_path):
    output = _run("progress", tmp_path / "p").stdout
    threads = max(1, keras.config.runtime.available_processors() // 2)
    line = f"Data-parallel training: rank 0 of 2 processes × {threads} thread"
    assert output.count(line) == 1
    assert output.count("Epoch 1/2") == 1 and output.count("Epoch 2/2") == 1


@needs_mpi
def test_only_rank_zero_writes_and_every_rank_loads(tmp_path):
    _run("writers", tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "rank0-epoch1.fastnn" in names and "rank0-epoch2.fastnn" in names and "rank0.csv" in names
    assert not [n for n in names if n.startswith("rank1")]
    views = _views(tmp_path / "view")
    assert views[0]["same"] and views[1]["same"]
    assert views[0]["predictions"] == views[1]["predictions"]
    rows = (tmp_path / "rank0.csv").read_text().splitlines()
    assert rows[0].startswith("epoch") and len(rows) == 3


@needs_mpi
@pytest.mark.parametrize("at_start, message", [(0, "rank 1's broken data"), (1, "NaN")])
def test_a_raising_rank_stops_every_rank_naming_itself(tmp_path, at_start, message):
    result = _launch("raise", tmp_path / "r", at_start, timeout=60)  # (a hang fails by the timeout)
    assert result.returncode != 0
    assert "rank 1 of 2: an unhandled ValueError" in result.stderr  # the failing rank's traceback
    assert message in result.stderr
    # and rank 0 stopped with an error naming it, instead of waiting in a collective
    assert "stopped on rank 0: rank 1 failed with ValueError" in result.stderr


@needs_mpi
def test_different_models_are_refused_at_the_first_broadcast(tmp_path):
    _run("mismatch", tmp_path / "m")
    for view in _views(tmp_path / "m"):
        assert view["error"] is not None
        assert "different models" in view["error"] and "rank 1 has 429 parameters" in view["error"]


@needs_mpi
def test_ctrl_c_ends_every_rank(tmp_path):
    started = tmp_path / "started"
    command = [MPIEXEC, "-n", "2", sys.executable, str(HERE / "distributed_worker.py"), "sleep", str(started)]
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert started.exists(), process.communicate(timeout=10)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0


@needs_mpi
@pytest.mark.parametrize("custom", [0, 1], ids=["generator", "train_step override"])
def test_batches_from_a_generator_and_a_train_step_override(tmp_path, custom):
    _run("sources", tmp_path / "two", custom)
    two = dict(np.load(tmp_path / "two.npz"))
    one = _single("sources", tmp_path / "one", custom)
    assert _relative(two["weights"], one["weights"]) <= 1e-5
    assert sorted(two) == sorted(one)
    for key in one:
        if key != "weights":  # History (validation too, by test_step when overridden), evaluate
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, err_msg=key)


@needs_mpi
def test_processes_given_their_own_data(tmp_path):
    _run("own_shards", tmp_path / "two")
    two = dict(np.load(tmp_path / "two.npz"))
    # the same global batches on one process: rank 0's 16 rows, then rank 1's
    x, y = worker.data(128)
    order = np.concatenate([np.concatenate([np.arange(0, 128, 2)[b * 16:(b + 1) * 16],
                                            np.arange(1, 128, 2)[b * 16:(b + 1) * 16]]) for b in range(4)])
    model = worker.mlp(7)
    model.fit(x[order], y[order], batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert _relative(two["weights"], worker.flat_weights(model)) <= 1e-5


# ---- on one process -------------------------------------------------------------------------------------------
def test_a_world_of_one_trains_exactly_as_without_a_distribution():
    x, y = worker.data(100)

    def train(distributed):
        model = worker.mlp(3, dropout=0.2)
        keras.utils.set_random_seed(4)
        if distributed:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        finally:
            keras.distribution.set_distribution(None)
        return worker.flat_weights(model), history.history

    (w1, h1), (w2, h2) = train(False), train(True)
    assert np.array_equal(w1, w2) and h1 == h2


@pytest.mark.skipif(world_module.launched_by_mpi(), reason="this test runs outside mpiexec")
def test_the_world_api_on_one_process():
    assert keras.distribution.process_id() == 0 and keras.distribution.num_processes() == 1
    assert keras.distribution.list_devices() == ["cpu:0"] and keras.distribution.list_devices("cpu") == ["cpu:0"]
    assert keras.distribution.get_device_count() == 1
    keras.distribution.initialize(num_processes=1, process_id=0)
    with pytest.raises(ValueError, match="num_processes.*mpiexec"):
        keras.distribution.initialize(num_processes=4)
    with pytest.raises(ValueError, match="device_type"):
        keras.distribution.list_devices("gpu")
    dp = keras.distribution.DataParallel()
    assert dp.num_processes == 1 and dp.data_shard_id == 0 and dp.device_mesh.shape == (1,)
    assert dp.device_mesh.axis_names == ["batch"]
    with dp.scope():
        assert keras.distribution.distribution() is dp
    assert keras.distribution.distribution() is None
    mesh = keras.distribution.DeviceMesh((1,), ["data"])
    assert keras.distribution.DataParallel(device_mesh=mesh).batch_dim_name == "data"
    with pytest.raises(ValueError, match="every process"):
        keras.distribution.DataParallel(devices=["cpu:1"])
    with pytest.raises(ValueError, match="not both"):
        keras.distribution.DataParallel(device_mesh=mesh, devices=["cpu:0"])
    with pytest.raises(ValueError, match="1-D"):
        keras.distribution.DataParallel(device_mesh=keras.distribution.DeviceMesh((1, 1), ["a", "b"]))
    with pytest.raises(TypeError, match="set_distribution"):
        keras.distribution.set_distribution("data_parallel")
    with pytest.raises(TypeError, match="auto_shard_dataset"):
        keras.distribution.DataParallel(auto_shard_dataset="yes")
    for wrong in (0, -1, 2.5, True, "big"):
        with pytest.raises(ValueError, match="bucket_bytes"):
            keras.distribution.DataParallel(bucket_bytes=wrong)
    assert keras.distribution.DataParallel().bucket_bytes is None  # one machine: one all-reduce
    assert keras.distribution.DataParallel(bucket_bytes=1024).bucket_bytes == 1024


def test_launch_detection_reads_the_launchers_variables():
    assert not world_module.launched_by_mpi({})
    assert world_module.launched_by_mpi({"PMI_RANK": "0"})
    assert world_module.launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4"})
    assert world_module.launched_by_mpi({"PMIX_RANK": "3"})


@needs_mpi
def test_the_data_parallel_example_trains_on_two_processes(tmp_path):
    command = [MPIEXEC, "-n", "2", sys.executable, str(HERE.parent / "examples" / "data_parallel.py"), "--epochs", "3"]
    result = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = [row for row in result.stdout.splitlines() if "process(es): test accuracy" in row]
    assert len(line) == 1 and line[0].startswith("2 process(es)")  # printed by rank 0 alone
    assert float(line[0].split("test accuracy ")[1].split(",")[0]) > 0.85
