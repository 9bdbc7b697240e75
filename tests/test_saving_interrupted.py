"""Interrupted saves: a writer killed mid-write leaves its temporary file beside the target (the
target itself intact); the next save to that path removes it once the writer's process is gone,
and never touches a live writer's file (fastnn._atomic)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnn
from fastnn import _atomic

PYTHON_DIR = os.path.dirname(os.path.dirname(fastnn.__file__))  # the child imports the fastnn this test imported
TIMEOUT = 60


def classifier():
    fastnn.utils.set_random_seed(3)
    model = fastnn.Sequential([fastnn.Input((6,)), fastnn.layers.Dense(8, activation="relu"),
                               fastnn.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def data():
    rs = np.random.default_rng(0)
    return rs.normal(size=(32, 6)).astype("float32"), rs.integers(0, 3, 32)


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(TIMEOUT)
    return child.pid


def temporary(path, pid, host=None, token="0123456789ab"):
    """The name a writer with `pid` gives its temporary file for `path` (as fastnn._atomic)."""
    return f".{path.name}.{pid}-{host or _atomic._host_tag()}.{token}.tmp"


def test_temporary_names_say_whose_they_are(tmp_path):
    name = os.path.basename(_atomic.temporary_name(tmp_path / "model.fastnn"))
    assert name.startswith(f".model.fastnn.{os.getpid()}-{_atomic._host_tag()}.") and name.endswith(".tmp")
    long_name = "é" * 120 + ".fastnn"  # 247 bytes: a valid name, whose temporary name stays under 255 bytes
    long = os.path.basename(_atomic.temporary_name(tmp_path / long_name))
    assert len(os.fsencode(long)) < 255 and long.startswith("." + "é" * 50 + ".")


@pytest.mark.parametrize("how", ["save", "save_weights", "ModelCheckpoint"])
def test_a_save_removes_the_stale_temporary_files_of_its_target_only(tmp_path, how):
    x, y = data()
    model = classifier()
    path = tmp_path / "m.fastnn"
    model.save(path)  # the previous file
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = dead_pid()
        stale = [temporary(path, dead), temporary(path, dead, token="fedcba987654")]
        kept = [temporary(path, live.pid),  # a save by another live process, under way
                temporary(path, os.getpid(), token="aaaaaaaaaaaa"),  # one by another thread of this process
                temporary(path, dead, host="00000000"),  # another machine's (a shared folder): its pid means nothing here
                f".other.fastnn.{dead}-{_atomic._host_tag()}.0123456789ab.tmp",  # another target's
                ".m.fastnn.backup", f".m.fastnn.{dead}.tmp"]  # not names fastnn gives
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"PK\x03\x04 half a zip")
        os.mkdir(tmp_path / temporary(path, dead, token="dddddddddddd"))  # not a file: left alone
        kept.append(temporary(path, dead, token="dddddddddddd"))

        if how == "save":
            model.save(path)
        elif how == "save_weights":
            model.save_weights(path)
        else:
            model.fit(x, y, epochs=1, verbose=0, callbacks=[fastnn.callbacks.ModelCheckpoint(str(path))])
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["m.fastnn"])
    finally:
        live.kill()
        live.wait(TIMEOUT)
    # the target is the new, complete file
    if how == "save_weights":
        restored = classifier()
        restored.load_weights(path)
    else:
        restored = fastnn.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    # and with the live writer gone, its file is stale too
    model.save(path)
    assert temporary(path, live.pid) not in os.listdir(tmp_path)


KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import fastnn
    import fastnn.saving.archive as archive

    path, ready = sys.argv[1], sys.argv[2]
    fastnn.utils.set_random_seed(3)
    model = fastnn.Sequential([fastnn.Input((6,)), fastnn.layers.Dense(8, activation="relu"),
                               fastnn.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    model.save(path)  # the previous file, complete
    np.save(path + ".predictions.npy", model.predict(x, verbose=0))
    model.fit(x, np.arange(32) % 3, epochs=2, verbose=0)  # the next save's weights differ

    write_array = archive._write_array
    def slow(zip_file, member, array):  # a writer that hangs after its first array
        write_array(zip_file, member, array)
        with open(ready, "w") as f:
            f.write("writing")
        time.sleep(600)
    archive._write_array = slow
    model.save(path)
""")


def test_a_save_killed_mid_write_leaves_the_target_intact_and_the_next_save_removes_its_temporary_file(tmp_path):
    path = tmp_path / "m.fastnn"
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path), str(ready)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child's save did not start"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # mid-write: the first array written, the rest not
    finally:
        child.kill()
        child.wait(TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    left = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert left == [temporary(path, child.pid, token=left[0].split(".")[-2])]  # the killed writer's file
    assert (tmp_path / left[0]).stat().st_size > 0

    x, y = data()
    previous = fastnn.models.load_model(path)  # the target: the previous file, intact
    np.testing.assert_array_equal(previous.predict(x, verbose=0), np.load(str(path) + ".predictions.npy"))

    previous.fit(x, y, epochs=1, verbose=0)
    previous.save(path)  # the next save to that path
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    np.testing.assert_array_equal(fastnn.models.load_model(path).predict(x, verbose=0),
                                  previous.predict(x, verbose=0))


def test_mnist_downloads_use_the_same_temporary_files(tmp_path, monkeypatch):
    target = tmp_path / "train-labels-idx1-ubyte.gz"
    stale = temporary(target, dead_pid())
    (tmp_path / stale).write_bytes(b"\x1f\x8b half a download")
    fastnn.datasets.mnist._write_atomic(str(target), b"payload")
    assert os.listdir(tmp_path) == [target.name] and target.read_bytes() == b"payload"
