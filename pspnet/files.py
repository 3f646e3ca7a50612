"""Writing files so that a reader never sees half of one: checkpoints, exports, training states."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pspnet.errors import OutputError


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


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``: never a half-written file.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic) and is
    removed if ``write`` raises. The parent folder is created.

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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
