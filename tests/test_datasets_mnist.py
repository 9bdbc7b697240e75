"""fastnn.datasets.mnist: the IDX reader, load_data from a folder, the download path (offline: urlopen is faked)."""

import gzip
import hashlib
import io
import os
import pathlib
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

import fastnn
from fastnn.datasets import mnist

SHARED = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
T10K_MD5 = {"t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
         np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array):
    """The IDX encoding of `array` (big-endian header and data)."""
    array = np.asarray(array)
    header = bytes([0, 0, CODES[array.dtype.newbyteorder("=")], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, compress):
    path = pathlib.Path(str(path) + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def fake_mnist(rng):
    """Small stand-ins for the four files: {name: raw IDX bytes}, and the arrays."""
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 7, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3, dtype=np.uint8)}
    return {name: idx_bytes(a) for name, a in arrays.items()}, arrays


@pytest.fixture
def fake_checksums(monkeypatch, fake_mnist):
    """The checksum table of the fake files."""
    files, _ = fake_mnist
    monkeypatch.setattr(mnist, "_MD5", {name: md5(data) for name, data in files.items()})
    return files


@pytest.fixture
def no_network(monkeypatch):
    """urlopen fails as offline; the URLs asked for are recorded."""
    asked = []

    def offline(url, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return asked


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home folder: the default cache is <home>/.fastnn/datasets/mnist."""
    monkeypatch.delenv("FASTNN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".fastnn" / "datasets" / "mnist"


# ---- read_idx -------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("array", [
    np.arange(10, dtype=np.uint8),
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([[-3, 7]], dtype=np.int8),
    np.array([-70000, 1, 2**31 - 1], dtype=np.int32),
    np.array([[1.5, -2.25], [1e30, 0.0]], dtype=np.float32),
    np.array([np.pi], dtype=np.float64),
    np.array([-2, 300], dtype=np.int16),
    np.zeros((0, 28, 28), np.uint8),
], ids=["labels-1d", "images-3d", "int8", "int32", "float32", "float64", "int16", "empty"])
def test_read_idx_round_trip(tmp_path, array, compress):
    path = write(tmp_path / "data-idx", idx_bytes(array), compress)
    out = mnist.read_idx(path)
    assert out.shape == array.shape and out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable
    assert mnist.read_idx(str(path)).shape == array.shape  # str paths too


def test_read_idx_recognises_gzip_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4], np.uint8)
    path = tmp_path / "labels-idx1-ubyte"  # no .gz, yet compressed
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(mnist.read_idx(path), labels)


@pytest.mark.parametrize("data,message", [
    (b"\x00\x00\x08", "shorter than the 4-byte magic number"),
    (b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file: magic number 0x12340801"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file: magic number 0x00000701"),
    (b"PK\x03\x04 a zip file", "not an IDX file"),
    (b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 28), "truncated IDX file: the header declares 3 dimensions"),
    (idx_bytes(np.zeros((4, 5, 5), np.uint8))[:-1], r"truncated IDX file: the header declares shape \(4, 5, 5\)"),
    (idx_bytes(np.zeros(3, np.int32))[:-2], "truncated IDX file"),
    (idx_bytes(np.zeros(3, np.uint8)) + b"\x00", "IDX file with trailing bytes"),
])
def test_read_idx_rejects_bad_files(tmp_path, data, message):
    for compress in (False, True):
        path = write(tmp_path / f"bad-{compress}", data, compress)
        with pytest.raises(ValueError, match=message) as info:
            mnist.read_idx(path)
        assert str(path) in str(info.value)


def test_read_idx_rejects_a_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[:len(packed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip data"):
        mnist.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        mnist.read_idx(tmp_path / "absent-idx1-ubyte")


# ---- load_data from a folder ------------------------------------------------------------------------
def test_load_data_reads_a_folder_of_gzip_and_raw_files(tmp_path, fake_mnist, fake_checksums, no_network):
    files, arrays = fake_mnist
    for i, (name, data) in enumerate(files.items()):
        write(tmp_path / name, data, compress=i % 2 == 0)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=tmp_path)
    for got, name in ((x_train, "train-images-idx3-ubyte"), (y_train, "train-labels-idx1-ubyte"),
                      (x_test, "t10k-images-idx3-ubyte"), (y_test, "t10k-labels-idx1-ubyte")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[name])
    assert x_train.shape == (7, 28, 28) and y_train.shape == (7,) and x_test.shape == (3, 28, 28)
    assert no_network == []  # a folder given: never the network
    assert fastnn.datasets.mnist is mnist and "mnist" in fastnn.datasets.__all__


def test_load_data_accepts_the_dotted_file_names(tmp_path, fake_mnist, fake_checksums):
    files, arrays = fake_mnist
    for name, data in files.items():
        write(tmp_path / name.replace("-idx", ".idx"), data, compress=False)
    (_, y_train), _ = mnist.load_data(str(tmp_path))
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])


def test_checksum_mismatch_names_the_file_the_folder_and_the_fix(tmp_path, fake_mnist, fake_checksums):
    files, _ = fake_mnist
    for name, data in files.items():
        write(tmp_path / name, data, compress=True)
    other = np.zeros((3, 28, 28), np.uint8)  # a well-formed file, but not the expected one
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(other), compress=True)
    with pytest.raises(ValueError) as info:
        mnist.load_data(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert md5(idx_bytes(other)) in message and md5(files["t10k-images-idx3-ubyte"]) in message
    assert "Replace it in" in message and "cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz" in message


def test_the_real_checksums_reject_stand_in_files(tmp_path, fake_mnist):
    files, _ = fake_mnist
    for name, data in files.items():
        write(tmp_path / name, data, compress=False)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: the md5 of its decompressed bytes is .* "
                                         "expected 6bbc9ace898e44ae57da46a324031adb"):
        mnist.load_data(tmp_path)
    assert mnist._MD5 == {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                          "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624", **T10K_MD5}


def test_missing_files_in_a_given_folder(tmp_path, fake_mnist, fake_checksums, no_network):
    files, _ = fake_mnist
    write(tmp_path / "t10k-labels-idx1-ubyte", files["t10k-labels-idx1-ubyte"], compress=True)
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data(tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte are missing" in message
    assert str(tmp_path) in message and "Put the original MNIST files there" in message
    assert no_network == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load_data(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="must be a folder"):
        mnist.load_data(tmp_path / "t10k-labels-idx1-ubyte.gz")


def test_mismatched_image_and_label_counts(tmp_path, fake_mnist, monkeypatch):
    files, _ = fake_mnist
    files = dict(files, **{"t10k-labels-idx1-ubyte": idx_bytes(np.zeros(5, np.uint8))})
    monkeypatch.setattr(mnist, "_MD5", {name: md5(data) for name, data in files.items()})
    for name, data in files.items():
        write(tmp_path / name, data, compress=False)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte .* and t10k-labels-idx1-ubyte .* are not uint8"):
        mnist.load_data(tmp_path)


# ---- the default folder and downloads ---------------------------------------------------------------
def test_offline_and_absent_is_a_clear_error(home, fake_checksums, no_network):
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data()
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz into " + str(home) in message
    assert "Network is unreachable" in message
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte " \
           "are missing there" in message
    assert "offline" in message and "copy them into" in message and "load_data(path=...)" in message
    assert no_network == [m + "train-images-idx3-ubyte.gz" for m in mnist._MIRRORS]  # every mirror tried
    assert not home.exists() or not any(home.iterdir())  # nothing half-written


def test_offline_with_a_corrupt_cached_file_names_it(home, fake_mnist, fake_checksums, no_network, capsys):
    files, _ = fake_mnist
    home.mkdir(parents=True)
    for name, data in files.items():
        write(home / name, data, compress=True)
    corrupt = write(home / "t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01" + struct.pack(">I", 0), compress=True)
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data()
    message = str(info.value)
    assert f"{corrupt} is not the original (wrong checksum)" in message and "missing" not in message
    assert "has md5" in capsys.readouterr().out
    assert corrupt.exists()  # kept until a good copy replaces it


def serve(files, monkeypatch, broken=()):
    """A fake urlopen serving {name}.gz for every file; mirrors in `broken` fail; returns the URLs asked."""
    asked = []

    def urlopen(url, *args, timeout=None, **kwargs):
        asked.append(url)
        if any(url.startswith(m) for m in broken):
            raise urllib.error.HTTPError(url, 503, "Service Unavailable", {}, None)
        name = url.rsplit("/", 1)[1]
        assert name.endswith(".gz") and timeout is not None
        return io.BytesIO(gzip.compress(files[name[:-3]]))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_download_into_the_default_folder(home, fake_mnist, fake_checksums, monkeypatch, capsys):
    files, arrays = fake_mnist
    asked = serve(files, monkeypatch, broken=(mnist._MIRRORS[0],))  # the first mirror is down
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(os.listdir(home)) == sorted(name + ".gz" for name in files)  # no temporary files left
    for name, data in files.items():
        assert gzip.decompress((home / (name + ".gz")).read_bytes()) == data
    assert len(asked) == 8 and "Downloading data from" in capsys.readouterr().out
    # Second call: everything is local, the network is not touched.
    asked.clear()
    (x_again, _), _ = mnist.load_data()
    np.testing.assert_array_equal(x_again, x_train)
    assert asked == []


def test_fastnn_home_moves_the_default_folder(tmp_path, fake_mnist, fake_checksums, monkeypatch):
    files, _ = fake_mnist
    monkeypatch.setenv("FASTNN_HOME", str(tmp_path / "cache"))
    serve(files, monkeypatch)
    mnist.load_data()
    assert sorted(os.listdir(tmp_path / "cache" / "datasets" / "mnist")) == sorted(n + ".gz" for n in files)


def test_a_mirror_serving_wrong_bytes_is_skipped_and_a_corrupt_cached_file_replaced(
        home, fake_mnist, fake_checksums, monkeypatch, capsys):
    files, arrays = fake_mnist
    home.mkdir(parents=True)
    (home / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))  # corrupt, raw
    wrong = dict(files, **{"train-labels-idx1-ubyte": idx_bytes(np.ones(7, np.uint8))})
    asked = []

    def urlopen(url, *args, **kwargs):  # the first mirror serves wrong labels, the second the right ones
        asked.append(url)
        served = wrong if url.startswith(mnist._MIRRORS[0]) else files
        return io.BytesIO(gzip.compress(served[url.rsplit("/", 1)[1][:-3]]))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    (_, y_train), _ = mnist.load_data()
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    assert "has md5" in capsys.readouterr().out  # the corrupt copy was reported
    assert not (home / "train-labels-idx1-ubyte").exists()  # and replaced by the downloaded .gz
    assert gzip.decompress((home / "train-labels-idx1-ubyte.gz").read_bytes()) == files["train-labels-idx1-ubyte"]
    assert asked[1:3] == [m + "train-labels-idx1-ubyte.gz" for m in mnist._MIRRORS]  # wrong bytes: next mirror


def test_download_that_fails_everywhere_names_each_mirror(home, fake_checksums, monkeypatch):
    serve({}, monkeypatch, broken=mnist._MIRRORS)
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data()
    message = str(info.value)
    for mirror in mnist._MIRRORS:
        assert mirror + "train-images-idx3-ubyte.gz: HTTP Error 503" in message


# ---- the real t10k files ------------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED.exists(), reason="the shared MNIST test files are not present")
def test_the_real_t10k_files():
    images = mnist.read_idx(SHARED / "t10k-images-idx3-ubyte.gz")
    labels = mnist.read_idx(SHARED / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9 and len(np.unique(labels)) == 10
    assert images.max() == 255 and images.min() == 0
    np.testing.assert_array_equal(labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    for name in T10K_MD5:
        data = gzip.decompress((SHARED / (name + ".gz")).read_bytes())
        assert md5(data) == T10K_MD5[name] == mnist._MD5[name]
