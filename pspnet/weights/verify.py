"""The verification of a cached weights file: its full SHA-256 on record beside it.

What a hash proves: the registry's hashes are the 8 hex digits the publisher's file names
carry. A prefix that short detects corruption (a truncated or damaged file), not substitution:
a different file matching 32 bits is cheap to make. So the first time a file is verified, its
full SHA-256 is recorded beside it in ``<file>.verified.json`` with its size and modification
time, and every later use is checked against that record: an unchanged size and mtime are
trusted (as ``make`` trusts them), anything else is hashed again and must match the recorded
digest. A file found in the cache without a record (placed by hand, or cached by an earlier
version) is hashed on first use and must match the expected hash; where there is none it
cannot be verified and is downloaded again (refused offline). A URL with no expected hash is
downloaded with a warning that it is unverified; its digest is recorded all the same, so later
corruption is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pspnet.errors import CheckpointError, OutputError
from pspnet.files import atomic_write

RECORD_SUFFIX = ".verified.json"
CHUNK_BYTES = 1 << 20


def record_path(path: Path) -> Path:
    """The record of a cached file's verification: ``<file>.verified.json`` beside it."""
    return path.with_name(path.name + RECORD_SUFFIX)


def verified(url: str, path: Path, expected: str | None) -> bool:
    """Whether the cached file may be used: checked now or before; False when absent, or when
    nothing can verify it (no record and no expected hash).

    Raises:
        CheckpointError: the file does not match its record or the expected hash.
    """
    if not path.is_file():
        return False
    stat = path.stat()  # before hashing: a change made while hashing shows at the next use
    record = _read_record(path)
    if record is None:
        if expected is None:
            return False
        found = file_sha256(path)
        if not found.startswith(expected):
            raise CheckpointError(_mismatch(path, f"{url} expects SHA-256 {expected}", found))
        write_record(path, url, found, expected, stat)
        return True
    if expected and not record["sha256"].startswith(expected):
        raise CheckpointError(
            f"{path}: verified earlier as SHA-256 {record['sha256']}, but {url} now expects "
            f"{expected} (its registry entry or file name changed); {_fix(path)}"
        )
    if (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
        return True
    found = file_sha256(path)  # touched or rewritten since it was verified: look inside
    if found != record["sha256"]:
        raise CheckpointError(
            _mismatch(path, f"it was verified as SHA-256 {record['sha256']} when cached", found)
        )
    write_record(path, url, found, record.get("expected"), stat)
    return True


def _mismatch(path: Path, expected: str, found: str) -> str:
    return (
        f"{path}: {expected}, but the file's SHA-256 is {found} ({path.stat().st_size:,} bytes): "
        f"it is corrupt (truncated or damaged) or a different file, and was not used; {_fix(path)}"
    )


def _fix(path: Path) -> str:
    # The folder holds this URL's file and its record only: a copy put back by hand is checked
    # against the expected hash again, not against the record of the file it replaces.
    return f"delete the folder {path.parent} and run again online to download the file afresh"


def _read_record(path: Path) -> dict[str, Any] | None:
    """The file's verification record, or None if it has none (or one that cannot be read)."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(record, dict)
        and isinstance(record.get("size"), int)
        and isinstance(record.get("mtime_ns"), int)
        and re.fullmatch(r"[0-9a-f]{64}", str(record.get("sha256")))
    )
    return record if valid else None


def write_record(
    path: Path, url: str, sha256: str, expected: str | None, stat: os.stat_result
) -> None:
    """Write the verification record of ``path``, atomically and durably.

    A read-only cache (one an administrator shares) cannot take a record: the file is used all
    the same, and hashed again at its next use.
    """
    record = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "expected": expected,
        "url": url,
    }
    text = json.dumps(record, indent=2) + "\n"
    try:
        atomic_write(record_path(path), lambda tmp: Path(tmp).write_text(text))
    except OutputError:
        pass


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
