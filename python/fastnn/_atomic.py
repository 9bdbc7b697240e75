"""Atomic file writes, and the clean-up of the temporary files of interrupted ones.

A file is written next to its target under a temporary name, flushed to disk, then renamed
over the target, so that a crash leaves the previous file intact. A writer killed mid-write
(SIGKILL, a power cut) cannot remove its temporary file, so its name says whose it was::

    .<target name>.<pid>-<host>.<random>.tmp

(``<host>``: 8 hex digits of the machine's name, for folders shared between machines.) Each
write removes the temporary files of earlier writes to the same target whose process is gone
from this machine; a live writer's file (a concurrent save, in this process or another) is
left alone, as is any file this scheme did not name.
"""

import contextlib
import hashlib
import os
import re
import secrets
import socket
import stat

_NAME_BYTES = 100  # of the target's name in the temporary name (the whole stays under 255 bytes)


def _host_tag():
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _prefix(path):
    """'.<target name>.' of the temporary files of `path`, the name cut to _NAME_BYTES bytes
    (on a character boundary)."""
    raw = os.fsencode(os.path.basename(path))
    cut = raw[:_NAME_BYTES]
    if len(raw) > _NAME_BYTES:
        for drop in range(4):  # a UTF-8 character is at most 4 bytes
            try:
                cut[:len(cut) - drop].decode("utf-8")
            except UnicodeDecodeError:
                continue
            cut = cut[:len(cut) - drop]
            break
    return "." + os.fsdecode(cut) + "."


def temporary_name(path):
    """A new temporary file name (a full path) for a write of `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.join(folder, f"{_prefix(path)}{os.getpid()}-{_host_tag()}.{secrets.token_hex(6)}.tmp")


def _pid_alive(pid):
    if os.name != "posix":
        return True  # (Windows: os.kill(pid, 0) would end the process; keep every file)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def remove_stale(path):
    """Removes the temporary files that writes of `path` by processes of this machine that no
    longer exist left beside it; returns their names."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(_prefix(path)) + r"(\d+)-([0-9a-f]{8})\.[0-9a-f]{12}\.tmp")
    host = _host_tag()
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match.group(2) != host or _pid_alive(int(match.group(1))):
            continue
        full = os.path.join(folder, name)
        try:
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            os.unlink(full)
            removed.append(name)
        except OSError:  # (removed meanwhile by another writer, or not ours to remove)
            continue
    return removed


def atomic_write(path, write):
    """Calls write(file) on a temporary file next to `path`, then renames it over `path`.

    The data is flushed and fsynced before the rename and the folder is fsynced after it,
    so after a crash `path` holds either the old file or the complete new one; on any
    error the temporary file is removed and the old file is untouched. Temporary files of
    earlier writes of `path` whose process is gone are removed first (see the module).
    """
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = temporary_name(path)
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for an ordinary file
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    if not hasattr(os, "O_DIRECTORY"):
        return  # e.g. Windows: folders cannot be opened, and the rename is already durable
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
