"""Writing files so that a reader never sees half of one, and a crash never loses the last good
copy: checkpoints, exports, training states, predictions, the download cache.

A write goes to a temporary file beside the destination, is flushed to the disk (``fsync``),
renamed over the destination, and then the folder's entry is flushed too, as databases do: after
a power loss the destination holds either the old file or the whole new one, never an empty one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from pspnet.errors import OutputError


def _read_umask() -> int:
    """The process umask, read without changing it where the system says it (Linux 4.7+)."""
    try:
        found = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        found = None
    if found:
        return int(found[1], 8)
    umask = os.umask(0)  # elsewhere: once, at import, before any writer thread exists
    os.umask(umask)
    return umask


# Read once: setting the umask to read it would race between the writer threads.
UMASK = _read_umask()


def make_folder(path: str | Path) -> Path:
    """Create folder ``path`` and its parents if needed; refuse a file in its place.

    Raises:
        OutputError: ``path`` (or a parent) is a file, or the system refuses to create it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputError(f"{path}: exists and is not a folder") from err
    except OSError as err:
        raise OutputError(f"{path}: cannot create the folder ({err.strerror or err})") from err
    return path


def fsync_file(path: str | Path) -> None:
    """Flush a written file's contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk, where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a system without folder handles (Windows): the rename is what it offers
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the file itself is flushed
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``: never a half-written file.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic), is
    flushed to the disk before the rename and the folder after it, and is removed if ``write``
    raises. The parent folder is created.

    Args:
        path: the destination.
        write: writes the whole file to the path it is given.

    Raises:
        OutputError: ``path`` is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"{path}: cannot write here ({err.strerror or err})") from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 would hide the file from other users
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
