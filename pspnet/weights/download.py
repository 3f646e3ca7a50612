"""Downloading weights into a verified cache: streamed, bounded, hashed, renamed into place.

The cache is ``$PSPNET_HOME`` (default ``~/.cache/pspnet``). A URL is cached under a folder
named for a digest of its full address, so two URLs ending in the same file name never share
a file. A download streams to a ``.part`` file beside its destination, bounded in size and in
time, is checked against the expected SHA-256 (the registry's, or the ``-<hex>.`` prefix in the
file name, as torch.hub checks), flushed to the disk and only then renamed into place: an
interrupted, oversized or wrong transfer leaves nothing in the cache, and the ``.part`` of a
killed one is removed by the next attempt. A redirect from https to plain http is refused, and
so is a plain-http URL with no SHA-256 to check: https without one is downloaded with a warning.
Processes fetching the same file (torchrun ranks) take turns on a lock file, and the later
ones find the finished file.

What a hash proves, and how a cached file is verified: :mod:`pspnet.weights.verify`; the HTTP
transfer itself (bounds, redirects, ``$PSPNET_OFFLINE``) is :mod:`pspnet.downloads`, shared with
the dataset downloader.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

from pspnet.downloads import (
    DOWNLOAD_TIMEOUT_VARIABLE,
    OFFLINE_VARIABLE,
    Progress,
    offline,
    positive,
    transfer,
)
from pspnet.errors import CheckpointError
from pspnet.files import UMASK, fsync_file, fsync_folder
from pspnet.weights.verify import verified, write_record

HOME_VARIABLE = "PSPNET_HOME"
MAX_BYTES_VARIABLE = "PSPNET_MAX_DOWNLOAD_BYTES"
LOCK_TIMEOUT_VARIABLE = "PSPNET_LOCK_TIMEOUT"
# torch.hub's rule: the first "-<hex>." in a file name is a prefix of the file's SHA-256.
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
DEFAULT_MAX_BYTES = 4 << 30  # for a URL outside the registry; the largest PSPNet is ~0.3 GB
DEFAULT_DOWNLOAD_SECONDS = 3600.0  # a whole download, start to end
DEFAULT_LOCK_SECONDS = 600.0  # waiting for another process's download of the same file
LOCK_POLL_SECONDS = 0.1


def cache_dir() -> Path:
    """Where downloads are kept: ``$PSPNET_HOME``, else ``~/.cache/pspnet``."""
    home = os.environ.get(HOME_VARIABLE)
    return Path(home) if home else Path.home() / ".cache" / "pspnet"


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def cache_path(url: str) -> Path:
    """The file a URL is cached as: ``downloads/<digest of the URL>/<its file name>``."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / "downloads" / digest / name


def expected_hash(url: str, sha256: str | None = None) -> str | None:
    """The hex digest (or prefix) a download must match: given, else from the file name."""
    if sha256:
        return sha256.lower()
    found = HASH_IN_NAME.search(Path(urllib.parse.urlparse(url).path).name)
    return found[1] if found else None


def download_limit(estimate: int | None = None) -> int:
    """The most bytes a download may have: ``$PSPNET_MAX_DOWNLOAD_BYTES`` when set, else twice
    ``estimate`` (a registry entry's size from its parameter count), else 4 GiB.

    Raises:
        ConfigError: ``$PSPNET_MAX_DOWNLOAD_BYTES`` is not a positive number.
    """
    if os.environ.get(MAX_BYTES_VARIABLE, "").strip():
        return int(positive(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES))
    return 2 * estimate if estimate else DEFAULT_MAX_BYTES


def fetch(
    url: str,
    sha256: str | None = None,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> Path:
    """The cached file of ``url``, verified; downloaded first if it is not cached yet.

    Args:
        url: an http(s) address.
        sha256: the file's SHA-256 hex digest or a prefix of it; by default the ``-<hex>.``
            in the file name, as torch.hub checks. A short prefix detects corruption, not
            substitution; the full digest recorded at the first check is enforced from then
            on. With neither, an https file is downloaded with a warning that it is
            unverified, and a plain-http one is refused.
        progress: called as ``progress(bytes_done, bytes_total or None)`` while downloading.
        max_bytes: the most bytes the download may have; by default :func:`download_limit`.

    Raises:
        CheckpointError: a plain-http URL with no SHA-256; a cached file that does not match
            its record or expected hash;
            offline with no usable file; a network or HTTP error, a redirect from https to
            http, a truncated, oversized or too slow transfer, a hash mismatch, another
            process holding the file's lock too long; each naming the URL or file and the fix.
        ConfigError: a bound's environment variable is not a positive number.
    """
    path = cache_path(url)
    expected = expected_hash(url, sha256)
    if expected is None and urllib.parse.urlsplit(url).scheme.lower() == "http":
        raise CheckpointError(_plain_http_message(url))
    if verified(url, path, expected):
        return path
    if offline():
        raise CheckpointError(_offline_message(url, path, expected))
    limit = download_limit() if max_bytes is None else max_bytes
    with _locked(path):
        if not verified(url, path, expected):  # another process may have fetched it meanwhile
            if expected is None:
                warnings.warn(
                    f"{url}: downloading it unverified: no SHA-256 was given and its file name "
                    "carries none",
                    UserWarning,
                    stacklevel=2,
                )
            _remove_parts(path)
            _download(url, path, expected, progress, limit)
    return path


def _plain_http_message(url: str) -> str:
    return (
        f"{url}: refused: plain http with no SHA-256 to check the file against, so anyone on "
        "the way could change it unnoticed; use its https address, its registry name (pspnet "
        "models lists them) or a file name carrying its SHA-256 prefix as torch.hub names "
        "files (name-<sha256 prefix>.pth), pass sha256= to pspnet.weights.fetch, or download "
        "it yourself and give its path"
    )


def _offline_message(url: str, path: Path, expected: str | None) -> str:
    if path.is_file():  # present, but no record and no hash: verified could not vouch for it
        return (
            f"{path}: cached with no record of a verified download, and {url} gives no SHA-256 "
            f"to check it against, so it is refused; {OFFLINE_VARIABLE} is set, so it cannot be "
            "downloaded again: unset it to download the file afresh, or load it by its path"
        )
    return f"{url}: not in the cache and {OFFLINE_VARIABLE} is set; {_by_hand(path, expected)}"


def _by_hand(path: Path, expected: str | None) -> str:
    """What to do with a copy downloaded by other means, honestly."""
    if expected is None:
        return (
            f"the URL gives no SHA-256, so a copy put at {path} by hand cannot be verified and "
            "is refused: load your copy by its path instead"
        )
    what = "SHA-256" if len(expected) == 64 else "SHA-256 prefix"
    return (
        f"put a copy at {path}: it is checked against the expected {what} {expected} on first use"
    )


# --- downloading -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock of ``path``'s download; report once, then wait up to
    ``$PSPNET_LOCK_TIMEOUT`` seconds, while another process holds it."""
    locks = cache_dir() / "locks"  # apart from the files: a failed download leaves none
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{cache_dir()}: cannot create the cache folder ({err})") from err
    lock_file = locks / f"{path.parent.name}.lock"
    timeout = positive(LOCK_TIMEOUT_VARIABLE, DEFAULT_LOCK_SECONDS)
    deadline = time.monotonic() + timeout
    with open(lock_file, "w") as lock:
        waiting = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if not waiting:
                waiting = True
                warnings.warn(
                    f"{path.name}: waiting for another process downloading the same file "
                    f"(lock {lock_file}; up to {timeout:g} s, {LOCK_TIMEOUT_VARIABLE})",
                    UserWarning,
                    stacklevel=4,  # the caller of fetch
                )
            if time.monotonic() >= deadline:
                raise CheckpointError(
                    f"{lock_file}: another process has held the download lock of {path.name} "
                    f"for {timeout:g} s ({LOCK_TIMEOUT_VARIABLE}); let it finish or stop it, "
                    "then try again"
                )
            time.sleep(LOCK_POLL_SECONDS)
        yield  # the lock goes with the file's closing


def _remove_parts(path: Path) -> None:
    """Remove the ``.part`` files a killed download of ``path`` left (the lock is held)."""
    for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        part.unlink(missing_ok=True)


def _download(
    url: str, path: Path, sha256: str | None, progress: Progress | None, max_bytes: int
) -> None:
    """Stream ``url`` into a ``.part`` file beside ``path``, verify it, flush it to the disk,
    rename it into place and record its verification."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        found = transfer(
            url,
            Path(tmp),
            error=CheckpointError,
            max_bytes=max_bytes,
            limit=(
                "twice a registry entry's estimated size, or "
                f"{MAX_BYTES_VARIABLE}; set it to allow more"
            ),
            by_hand=_by_hand(path, sha256),
            seconds=positive(DOWNLOAD_TIMEOUT_VARIABLE, DEFAULT_DOWNLOAD_SECONDS),
            progress=progress,
        )
        if sha256 and not found.startswith(sha256):
            raise CheckpointError(
                f"{url}: SHA-256 {found[: max(8, len(sha256))]}... does not match the expected "
                f"{sha256}; the file was not cached (a corrupt or substituted download)"
            )
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 would hide a shared cache's files
        fsync_file(tmp)  # before the rename: after a power loss, the whole file or none
        os.replace(tmp, path)
        fsync_folder(path.parent)
        write_record(path, url, found, sha256, path.stat())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
