"""The fastnn file format: a zip archive of JSON and .npy arrays, written atomically, read with checks.

A file (suggested extension ``.fastnn``; any name works) is a zip archive with these
members, stored uncompressed except the arrays that are at least a quarter zeros (pruned
weights and their optimizer slots, fresh optimizer slots), which are deflated (any zip
reader, and every fastnn version, reads both):

* ``fastnn.json``: the header: the format name and version, the fastnn version, the kind of
  file ("model" or "weights"), what the writer describes (for models written by
  saving/model_io.py: the model's config, its compile config, the layers' random states),
  and a manifest of the arrays (member name, shape, dtype and SHA-256 of each, with what
  the writer adds: weight and layer names, optimizer slot);
* ``weights/<i>.npy``: the weights, layer by layer in creation order;
* ``optimizer/<i>.npy``: the optimizer's state slots (model files of compiled models).

Member dates are fixed, so the same contents give the same bytes.

Reading never runs code from the file: there is no pickle anywhere (each ``.npy`` header is
checked and object arrays are refused before ``np.load(..., allow_pickle=False)``), every
member's size, CRC, checksum, dtype and shape is checked against the manifest, and a file
of a newer format version is refused with a message that says so.

Writes are atomic: the file is written next to the target under a temporary name, flushed
to disk, then renamed over the target, so a crash mid-write leaves the previous file intact.
A writer killed mid-write leaves its temporary file (``.<name>.<pid>-<host>.<random>.tmp``);
the next write to the same target removes it once that process is gone (``fastnn._atomic``).

This module knows the file, not models: saving/model_io.py maps a model to and from it.
"""

import hashlib
import io
import json
import os
import zipfile

import numpy as np

from .. import _atomic
from .._version import __version__

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 1
_CONFIG_MEMBER = "fastnn.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same model gives the same bytes
_MAX_CONFIG_BYTES = 256 << 20
_NPY_HEADER_SLACK = 1 << 16
_ALLOWED_KINDS = "fiub"  # float, signed, unsigned, bool arrays; never objects
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # the first bytes of an HDF5 file (Keras' .h5 and .weights.h5)
# Arrays with at least this fraction of zeros are deflated: a pruned float32 kernel at 80 % zeros
# shrinks to 27 % at zlib level 1 (~100 MB/s; level 6 reaches 24 % at ~40 MB/s), while dense float
# weights would gain ~7 % at ~25 MB/s, 20× slower than storing them: they are stored as they are
# (counting the zeros runs at GB/s). Small arrays are not worth it.
_DEFLATE_ZEROS = 0.25
_DEFLATE_MIN_BYTES = 1024
_DEFLATE_LEVEL = 1


class InvalidFileError(ValueError):
    """The file cannot be read: not a fastnn file, truncated, corrupted, tampered with, or newer."""


def new_header(kind):
    """The header's first fields: format name and version, `kind` ("model" or "weights"), fastnn version."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind, "fastnn_version": __version__}


def check_target(filepath, overwrite):
    """The path to write to (a str), after checking that a file can be written there."""
    path = os.fspath(filepath)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot save to {path!r}: it is a folder; give a file name such as "
                                f"'{os.path.join(path, 'model.fastnn')}'")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"Cannot save to {path!r}: the file exists and overwrite=False")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot save to {path!r}: the folder {folder!r} does not exist")
    return path


def write_file(path, header, arrays):
    """Writes the file atomically: the arrays ((manifest entry, array) pairs), then the header.

    Each entry (from ``array_entry``) gets the SHA-256 of its member; the caller lists the
    entries in the header beforehand.
    """
    _atomic_write(path, lambda f: _write_archive(f, header, arrays))


# ---- writing ---------------------------------------------------------------------------------------------
def _atomic_write(path, write):
    """Calls write(file) on a temporary file next to `path`, then renames it over `path`
    (``fastnn._atomic``: the temporary files of interrupted writes are removed by the next one)."""
    _atomic.atomic_write(path, write)


class _HashingWriter:
    """A write-only file that hashes what passes through it."""

    def __init__(self, out):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        data = memoryview(data).cast("B")
        self.sha256.update(data)
        self.size += len(data)
        return self._out.write(data)


def _zipinfo(member, deflate=False):
    info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    if deflate:  # Python 3.13 names it compress_level; earlier versions _compresslevel
        setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", _DEFLATE_LEVEL)
    info.external_attr = 0o644 << 16
    return info


def _mostly_zeros(array):
    """Whether `array` is worth deflating: at least _DEFLATE_ZEROS of its entries are zero."""
    if array.nbytes < _DEFLATE_MIN_BYTES:
        return False
    return array.size - np.count_nonzero(array) >= _DEFLATE_ZEROS * array.size


def _write_array(archive, member, array):
    """Writes one array as a .npy member (deflated when mostly zeros); returns its SHA-256 (hex)
    (of the .npy bytes, before compression)."""
    # np.asarray(order="C"), not ascontiguousarray: that one makes a 0-d weight 1-d
    array = np.asarray(array, order="C")
    info = _zipinfo(member, deflate=_mostly_zeros(array))
    with archive.open(info, "w", force_zip64=array.nbytes > (1 << 30)) as out:
        writer = _HashingWriter(out)
        np.lib.format.write_array(writer, array, allow_pickle=False)
    return writer.sha256.hexdigest()


def _write_archive(f, header, arrays):
    """Writes the zip: every array, then fastnn.json with their checksums in the manifest."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for entry, array in arrays:
            entry["sha256"] = _write_array(archive, entry["file"], array)
        archive.writestr(_zipinfo(_CONFIG_MEMBER), dump_json(header))


def dump_json(header):
    """The header as fastnn.json's bytes (TypeError or ValueError: a value JSON cannot hold)."""
    return json.dumps(header, default=_json_default, indent=1, allow_nan=True).encode("utf-8")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in _ALLOWED_KINDS:
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"a value of type {type(value).__name__} ({value!r:.80}) cannot be written to JSON")


def array_entry(member, array, **extra):
    """The manifest entry of `array` stored as `member`, with the writer's `extra` fields."""
    array = np.asarray(array)
    return {"file": member, **extra, "shape": list(array.shape), "dtype": array.dtype.str}


# ---- reading ---------------------------------------------------------------------------------------------
class Contents:
    """A checked file: its header and arrays (every checksum, dtype and shape verified).

    Attributes:
        path: the file's path (str).
        header: the dict of fastnn.json.
        weights: list of (manifest entry, array), in the order of ``header["weights"]``.
        optimizer: list of (manifest entry, array) of the optimizer's slots (empty without).
    """

    def __init__(self, path, header, weights, optimizer):
        self.path, self.header, self.weights, self.optimizer = path, header, weights, optimizer


def keras_file_error(path, what):
    """The InvalidFileError for a file that Keras wrote (`what` it is): fastnn does not read
    Keras' formats; the message says how to bring the model over."""
    return InvalidFileError(
        f"{path!r} is {what}, not a fastnn file: fastnn reads only the files it writes itself "
        "(model.save, model.save_weights). To bring the model over, rebuild it with fastnn layers (the same "
        "layers in the same order: fastnn keeps Keras' weight layouts) and copy its weights: in Python with "
        "Keras, load the file there (keras.saving.load_model, or load_weights into the Keras model) and "
        "take keras_model.get_weights(), e.g. np.savez('weights.npz', *keras_model.get_weights()); then, in "
        "fastnn, fastnn_model.set_weights(those arrays, in order) and fastnn_model.save('model.fastnn').")


def _keras_version(archive):
    """' 3.x.y' from a .keras archive's metadata.json, or '' when it does not say."""
    try:
        if archive.getinfo("metadata.json").file_size > (1 << 20):
            return ""
        version = json.loads(archive.read("metadata.json").decode("utf-8")).get("keras_version")
    except (KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return ""
    return f" {version}" if isinstance(version, str) and len(version) < 40 else ""


def corrupt(path, detail):
    """The InvalidFileError for a file that is damaged in the way `detail` says."""
    return InvalidFileError(f"{path!r} is truncated or corrupted ({detail}); it cannot be loaded. "
                            "Use another copy of the file.")


def read_file(filepath):
    """Reads and checks a fastnn file: its Contents, or InvalidFileError (FileNotFoundError: no file)."""
    path = os.fspath(filepath)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    if os.path.isdir(path):
        raise InvalidFileError(f"{path!r} is a folder, not a fastnn file (a TensorFlow SavedModel?); fastnn "
                               "files are single files written by model.save")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] != b"PK\x03\x04":
        if not magic:
            raise InvalidFileError(f"{path!r} is empty: not a fastnn file (an interrupted copy?)")
        if magic == _HDF5_MAGIC:
            raise keras_file_error(path, "an HDF5 file (the format of Keras' .h5 models and .weights.h5 weights)")
        raise InvalidFileError(f"{path!r} is not a fastnn file: fastnn files are zip archives written "
                               "by model.save or model.save_weights")
    try:
        with zipfile.ZipFile(path) as archive:
            header = _read_header(archive, path)
            weights = [(entry, _read_array(archive, entry, path)) for entry in header["weights"]]
            state = header.get("optimizer_state")
            optimizer = [(entry, _read_array(archive, entry, path)) for entry in state["slots"]] if state else []
    except InvalidFileError:
        raise
    except zipfile.BadZipFile as e:
        raise corrupt(path, f"zip: {e}") from e
    except Exception as e:  # a damaged archive can fail in many ways inside zipfile
        raise corrupt(path, f"{type(e).__name__}: {e}") from e
    return Contents(path, header, weights, optimizer)


def _read_header(archive, path):
    names = archive.namelist()
    if _CONFIG_MEMBER not in names:
        if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
            raise keras_file_error(path, f"a Keras .keras archive (a model saved by Keras{_keras_version(archive)})")
        raise InvalidFileError(f"{path!r} is not a fastnn file: the zip archive has no {_CONFIG_MEMBER!r} member")
    info = archive.getinfo(_CONFIG_MEMBER)
    if info.file_size > _MAX_CONFIG_BYTES:
        raise corrupt(path, f"{_CONFIG_MEMBER} claims {info.file_size} bytes")
    raw = archive.read(_CONFIG_MEMBER)  # checks the CRC
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(path, f"{_CONFIG_MEMBER} is not valid JSON: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InvalidFileError(f"{path!r} is not a fastnn file: {_CONFIG_MEMBER} does not declare format "
                               f"{FORMAT_NAME!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise corrupt(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise InvalidFileError(f"{path!r} was written by fastnn {header.get('fastnn_version', '?')} in file "
                               f"format version {version}; this fastnn ({__version__}) reads versions up to "
                               f"{FORMAT_VERSION}. Upgrade fastnn to load it.")
    if header.get("kind") not in ("model", "weights"):
        raise corrupt(path, f"unknown file kind {header.get('kind')!r}")
    if not isinstance(header.get("weights"), list):
        raise corrupt(path, "no weights manifest")
    state = header.get("optimizer_state")
    if state is not None and (not isinstance(state, dict) or not isinstance(state.get("slots"), list)):
        raise corrupt(path, "invalid optimizer_state")
    layer_states = header.get("layer_states")
    if layer_states is not None and not (isinstance(layer_states, list)
                                         and all(isinstance(s, dict) for s in layer_states)):
        raise corrupt(path, "invalid layer_states")
    for entry in header["weights"] + (state["slots"] if state else []):
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("dtype"), str) and isinstance(entry.get("sha256"), str)):
            raise corrupt(path, f"invalid manifest entry {entry!r:.200}")
    return header


def _read_npy_header(buffer, member, path):
    """(shape, dtype) from a .npy header, refusing anything that could hold pickled objects."""
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
        raise corrupt(path, f"member {member!r} is not a valid .npy array: {e}") from e
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidFileError(f"{path!r}: member {member!r} holds an array of dtype {dtype!r} (Python objects "
                               "or records). Loading it would mean unpickling, which can run arbitrary code, so it "
                               "is refused: fastnn files only hold plain numeric arrays. Was this file tampered "
                               "with?")
    return tuple(shape), dtype, fortran_order


def _read_array(archive, entry, path):
    member = entry["file"]
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise corrupt(path, f"the member {member!r} listed in the manifest is missing") from None
    try:
        expected_dtype = np.dtype(entry["dtype"])
        expected_shape = tuple(int(d) for d in entry["shape"])
    except (TypeError, ValueError) as e:
        raise corrupt(path, f"invalid dtype or shape for {member!r}: {e}") from e
    if expected_dtype.hasobject or expected_dtype.kind not in _ALLOWED_KINDS:
        raise InvalidFileError(f"{path!r}: the manifest declares member {member!r} as dtype {expected_dtype!r}; "
                               "only plain numeric arrays are allowed (object arrays would need unpickling)")
    limit = int(np.prod(expected_shape, dtype=np.int64)) * expected_dtype.itemsize + _NPY_HEADER_SLACK
    if info.file_size > limit:
        raise corrupt(path, f"member {member!r} has {info.file_size} bytes, more than its manifest allows")
    data = archive.read(member)  # checks the CRC
    buffer = io.BytesIO(data)
    shape, dtype, fortran = _read_npy_header(buffer, member, path)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise corrupt(path, f"checksum mismatch in member {member!r}")
    if shape != expected_shape or dtype != expected_dtype:
        raise corrupt(path, f"member {member!r} holds {dtype} {shape}, the manifest says {expected_dtype} "
                             f"{expected_shape}")
    buffer.seek(0)
    array = np.load(buffer, allow_pickle=False)
    if buffer.read(1):
        raise corrupt(path, f"member {member!r} has trailing bytes")
    return np.asarray(array.astype(array.dtype.newbyteorder("="), copy=False), order="C")  # keeps 0-d
