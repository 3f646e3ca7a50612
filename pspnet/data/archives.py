"""Extracting the folders of a zip or tar archive, refusing members that would escape.

A dataset archive comes from a server: a member named ``../../.bashrc`` or ``/etc/cron.d/x``,
or a link pointing outside, would write where the dataset has no business (the "zip slip").
:func:`extract` checks every member before it writes anything: an absolute path, a ``..``
component, or a link whose target leaves the archive refuses the whole archive. Tar members
are also checked by Python's own ``data`` filter (PEP 706: no devices, no absolute links, no
setuid bits), again after their folder is moved, so a link cannot escape by the move either.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from pspnet.errors import DatasetError

__all__ = ["Folders", "extract"]

# (folder inside the archive, folder below the destination) pairs.
Folders = tuple[tuple[str, str], ...]
CHUNK_BYTES = 1 << 20


def extract(archive: Path, dest: Path, folders: Folders) -> None:
    """Extract the members of a zip or tar(.gz, .bz2, .xz) archive that lie in ``folders``.

    Every member is checked first: one with an absolute path, a ``..`` component, or a link
    pointing outside the archive refuses the whole archive before anything is written.

    Args:
        archive: the archive file.
        dest: the folder extracted into.
        folders: (folder inside the archive, folder below ``dest``) pairs; members elsewhere
            are skipped.

    Raises:
        DatasetError: an unsafe member, or a file that is neither a zip nor a tar archive.
    """
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, folders)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, folders)
    else:
        raise DatasetError(f"{archive}: neither a zip nor a tar archive; delete it and run again")


def _moved(name: str, folders: Folders) -> str | None:
    """Where member ``name`` goes below the destination; None when it is left out."""
    name = name.rstrip("/")
    for inside, folder in folders:
        if name == inside or name.startswith(inside + "/"):
            return folder + name[len(inside) :]
    return None


def _refuse(archive: Path, name: str, why: str) -> DatasetError:
    return DatasetError(
        f"{archive}: member {name!r} {why}; the archive is refused (delete it and run again; "
        "if it came from the pinned address, report it)"
    )


def _check_name(archive: Path, name: str) -> None:
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise _refuse(archive, name, "has an absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise _refuse(archive, name, "climbs out of the folder with '..'")


def _inside(link: str, target: str) -> bool:
    """Whether symbolic link ``link`` (a relative member path) to ``target`` stays inside."""
    if PurePosixPath(target).is_absolute():
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    return resolved != ".." and not resolved.startswith("../")


def _zip_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(archive: Path, dest: Path, folders: Folders) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for info in members:
            _check_name(archive, info.filename)
            if _zip_link(info) and not _inside(info.filename, zipped.read(info).decode()):
                raise _refuse(archive, info.filename, "is a link pointing outside the folder")
        for info in members:
            moved = _moved(info.filename, folders)
            if moved is None:
                continue
            target = dest / moved
            if not target.resolve().is_relative_to(dest.resolve()):  # checked again where it lands
                raise _refuse(archive, info.filename, "would be written outside the folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if _zip_link(info):
                link = zipped.read(info).decode()
                if not _inside(moved, link):  # the moved link must stay inside as well
                    raise _refuse(archive, info.filename, "is a link pointing outside the folder")
                os.symlink(link, target)
                continue
            with zipped.open(info) as source, open(target, "wb") as copy:
                shutil.copyfileobj(source, copy, CHUNK_BYTES)


def _extract_tar(archive: Path, dest: Path, folders: Folders) -> None:
    with tarfile.open(archive) as tarred:
        members = tarred.getmembers()
        for member in members:
            _check_name(archive, member.name)
            try:  # Python's own rules (PEP 706): links outside, devices, absolute links
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as err:
                raise _refuse(archive, member.name, f"is refused ({err})") from err
        for member in members:
            moved = _moved(member.name, folders)
            if moved is None:
                continue
            changes = {"name": moved}
            if member.islnk():  # a hard link names its target by its path in the archive
                changes["linkname"] = _moved(member.linkname, folders) or member.linkname
            try:
                tarred.extract(member.replace(**changes, deep=False), dest, filter="data")
            except tarfile.FilterError as err:  # a link the move would take outside
                raise _refuse(archive, member.name, f"is refused ({err})") from err
