"""MNIST: 70,000 handwritten digits, 28×28 grayscale (LeCun, Cortes and Burges).

``load_data()`` reads the four IDX files of the original distribution from a folder:
``path`` when given, otherwise ``~/.fastnn/datasets/mnist`` (``$FASTNN_HOME/datasets/mnist``
when the environment variable FASTNN_HOME is set), where missing files are downloaded
once from a public mirror. Every file is checked against the md5 of its decompressed
bytes, so gzip and raw copies are equally accepted.

Offline use: put ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``) into
that folder, or into any folder passed as ``path``.
"""

import gzip
import hashlib
import http.client
import os
import struct
import urllib.error
import urllib.request
import zlib

import numpy as np

# The files of the original distribution, in load_data's order.
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")

# md5 of the decompressed bytes (the same for a gzip or a raw copy). Published with the
# dataset's download scripts, e.g. pralab/secml (src/secml/data/loader/c_dataloader_mnist.py);
# the t10k pair also checked against the files in the project's shared data folder.
_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Mirrors serving "<name>.gz", tried in order (the original site no longer serves plain downloads).
_MIRRORS = ("https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/")
_TIMEOUT = 60  # seconds per connection attempt

_GZIP_MAGIC = b"\x1f\x8b"
# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def load_data(path=None):
    """Loads the MNIST dataset (Keras' ``mnist.load_data``).

    Args:
        path: str or os.PathLike, default None: a folder holding the four IDX files
            (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or with
            ``.gz``); nothing is downloaded into it. None: ``~/.fastnn/datasets/mnist``
            (or ``$FASTNN_HOME/datasets/mnist``), where missing files are downloaded once.

    Returns:
        ((x_train, y_train), (x_test, y_test)): x of shape (60000, 28, 28) and
        (10000, 28, 28), dtype uint8 with values 0..255; y of shape (n,), dtype uint8 with
        labels 0..9.

    Raises:
        FileNotFoundError: a file is missing and could not be downloaded (offline, or
            `path` given); the message names the files, the folder and the fix.
        ValueError: a file whose decompressed md5 is not the original's, or that is not
            a well-formed IDX file.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, y_test[:5]
        ((60000, 28, 28), array([7, 2, 1, 0, 4], dtype=uint8))
    """
    download = path is None
    folder = _default_folder() if download else os.path.abspath(os.fspath(path))
    if not download:
        if os.path.isfile(folder):
            raise ValueError(f"mnist.load_data: 'path' must be a folder holding the four MNIST IDX files "
                             f"({', '.join(FILES)}), got the file {folder}")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"mnist.load_data: the folder {folder} does not exist. Pass a folder "
                                    f"holding {', '.join(FILES)} (each raw or .gz), or call load_data() "
                                    f"without 'path' to download them.")
    missing = [name for name in FILES if _find(folder, name) is None]
    if missing and not download:
        raise FileNotFoundError(
            f"mnist.load_data: {_missing_text(missing)} in {folder}. Put the original MNIST files there "
            f"(raw or .gz; they are served at {_MIRRORS[0]}<name>.gz), or call load_data() without 'path' "
            f"to download them into {_default_folder()}.")
    arrays = {}
    pending = {}  # name -> None (missing) or the path of a local copy with the wrong checksum
    for name in FILES:
        local = _find(folder, name)
        if local is None:
            pending[name] = None
            continue
        data = _read_bytes(local)
        digest = _md5(data)
        if digest == _MD5[name]:
            arrays[name] = _parse_idx(data, local)
        elif not download:
            raise ValueError(_mismatch_text(local, name, folder, digest))
        else:
            print(f"mnist.load_data: {local} has md5 {digest}, not {_MD5[name]}: downloading it again.")
            pending[name] = local
    for name in list(pending):
        data = _download(name, folder, pending)
        arrays[name] = _parse_idx(data, os.path.join(folder, name))
        del pending[name]
    (x_train, y_train), (x_test, y_test) = ((arrays[FILES[i]], arrays[FILES[i + 1]]) for i in (0, 2))
    for images, labels, i in ((x_train, y_train, 0), (x_test, y_test, 2)):
        if images.dtype != np.uint8 or images.ndim != 3 or labels.dtype != np.uint8 or labels.ndim != 1 \
                or len(images) != len(labels):
            raise ValueError(f"mnist.load_data: {FILES[i]} ({images.dtype} {images.shape}) and {FILES[i + 1]} "
                             f"({labels.dtype} {labels.shape}) in {folder} are not uint8 images (n, rows, "
                             f"cols) with n uint8 labels")
    return (x_train, y_train), (x_test, y_test)


def read_idx(file):
    """Reads one IDX file (the format of the MNIST files) into a NumPy array.

    The file may be gzip-compressed or raw (recognised by its content, not its name).
    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian uint32; the data follows in C order, big-endian.

    Args:
        file: str or os.PathLike: the file's path.

    Returns:
        A writable array of the header's shape and type, in native byte order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an IDX file (wrong magic number or type code), a truncated file,
            extra bytes after the data, or corrupt gzip data.

    Example:
        >>> labels = read_idx("t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        ((10000,), dtype('uint8'))
    """
    path = os.fspath(file)
    return _parse_idx(_read_bytes(path), path)


# ---- helpers -------------------------------------------------------------------------------------
def _default_folder():
    home = os.environ.get("FASTNN_HOME") or os.path.join(os.path.expanduser("~"), ".fastnn")
    return os.path.join(home, "datasets", "mnist")


def _find(folder, name):
    """The local copy of `name` in `folder` (raw first, then .gz; also the "name.idx3-ubyte" spelling)."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        full = os.path.join(folder, candidate)
        if os.path.isfile(full):
            return full
    return None


def _md5(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _missing_text(missing):
    return ("the file " if len(missing) == 1 else "the files ") + ", ".join(missing) + \
        (" is missing" if len(missing) == 1 else " are missing")


def _mismatch_text(file, name, folder, digest):
    return (f"mnist.load_data: {file} is not the original MNIST file {name}: the md5 of its decompressed "
            f"bytes is {digest}, expected {_MD5[name]}. Replace it in {folder} with the original (raw or .gz, "
            f"served at {_MIRRORS[0]}{name}.gz), or delete it and call load_data() without 'path' to "
            f"download it.")


def _read_bytes(path):
    """The file's bytes, decompressed when it is gzip."""
    with open(path, "rb") as f:
        data = f.read()
    return _decompress(data, path)


def _decompress(data, source):
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{source}: corrupt or truncated gzip data ({e})") from None


def _parse_idx(data, source):
    """An array from the bytes of an IDX file; `source` names the file in errors."""
    size = len(data)
    if size < 4:
        raise ValueError(f"{source}: not an IDX file: {size} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{source}: not an IDX file: magic number 0x{magic:08X}; expected 0x0000TTDD with "
                         f"type code TT one of {', '.join(f'{c:02X}' for c in _IDX_TYPES)} and DD dimensions")
    header = 4 + 4 * ndim
    if size < header:
        raise ValueError(f"{source}: truncated IDX file: the header declares {ndim} dimensions ({header} bytes) "
                         f"but the file has {size} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[code]
    count = 1
    for d in shape:
        count *= d
    expected = header + count * dtype.itemsize
    if size != expected:
        what = "truncated IDX file" if size < expected else "IDX file with trailing bytes"
        raise ValueError(f"{source}: {what}: the header declares shape {shape} of {dtype.name} "
                         f"({expected} bytes with the header) but the file has {size} bytes")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _download(name, folder, pending):
    """Fetches name.gz from the first mirror that serves the original bytes; returns them decompressed.

    The file is written atomically (a temporary file in `folder`, then a rename), so an
    interrupted download leaves nothing behind. `pending`: {name: None if missing, or the
    path of a corrupt local copy (removed once the new file is in place)}, for the error.
    """
    replaces = pending[name]
    failures = []
    for base in _MIRRORS:
        url = f"{base}{name}.gz"
        print(f"Downloading data from {url}")
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
                payload = response.read()
            data = _decompress(payload, url)
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(
                e, urllib.error.HTTPError) else e
            failures.append(f"{url}: {reason}")
            continue
        digest = _md5(data)
        if digest != _MD5[name]:
            failures.append(f"{url}: md5 of the decompressed bytes {digest}, expected {_MD5[name]}")
            continue
        target = os.path.join(folder, name + (".gz" if payload[:2] == _GZIP_MAGIC else ""))
        try:
            _write_atomic(target, payload)
        except OSError as e:
            raise FileNotFoundError(
                f"mnist.load_data: could not write {target} ({e}). Set FASTNN_HOME to a writable folder, or "
                f"put the MNIST files into a folder and call load_data(path=that_folder).") from None
        if replaces is not None and os.path.abspath(replaces) != os.path.abspath(target):
            try:
                os.remove(replaces)
            except OSError:
                pass
        return data
    absent = [n for n, local in pending.items() if local is None]
    corrupt = [local for local in pending.values() if local is not None]
    still = " and ".join(([_missing_text(absent) + " there"] if absent else []) +
                         ([f"{', '.join(corrupt)} {'is' if len(corrupt) == 1 else 'are'} not the original "
                           f"(wrong checksum)"] if corrupt else []))
    raise FileNotFoundError(
        f"mnist.load_data: could not download {name}.gz into {folder} ("
        + "; ".join(failures) + f"). {still[0].upper() + still[1:]}. If this machine is offline, "
        f"fetch the files elsewhere (from {' or '.join(_MIRRORS)}, each as <name>.gz) and copy them into "
        f"{folder} (raw or .gz), or pass load_data(path=...) a folder holding them.")


def _write_atomic(target, payload):
    """Writes payload to target atomically (fastnn._atomic: a temporary file beside it, renamed
    over it; the temporary files of interrupted downloads are removed by the next one)."""
    from .. import _atomic

    os.makedirs(os.path.dirname(target), exist_ok=True)
    _atomic.atomic_write(target, lambda f: f.write(payload))


__all__ = ["load_data", "read_idx"]
