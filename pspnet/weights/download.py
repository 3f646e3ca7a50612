"""Downloading weights into a verified cache: streamed, hashed, renamed into place, shared safely.

The cache is ``$PSPNET_HOME`` (default ``~/.cache/pspnet``). A URL is cached under a folder
named for a digest of its full address, so two URLs ending in the same file name never share
a file. A download streams to a temporary file beside its destination, is checked against
the expected SHA-256 (the registry's prefix, or the ``-<hex>.`` prefix in the file name, as
torch.hub checks), and only then is renamed into place: an interrupted, truncated or wrong
transfer leaves nothing in the cache. Processes fetching the same file (torchrun ranks) take
turns on a lock file, and the later ones find the finished file.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pspnet.errors import CheckpointError

HOME_VARIABLE = "PSPNET_HOME"
OFFLINE_VARIABLE = "PSPNET_OFFLINE"
# torch.hub's rule: the first "-<hex>." in a file name is a prefix of the file's SHA-256.
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 30

Progress = Callable[[int, int | None], None]


def cache_dir() -> Path:
    """Where downloads are kept: ``$PSPNET_HOME``, else ``~/.cache/pspnet``."""
    home = os.environ.get(HOME_VARIABLE)
    return Path(home) if home else Path.home() / ".cache" / "pspnet"


def offline() -> bool:
    """Whether ``$PSPNET_OFFLINE`` forbids the network (any value but "", "0", "false")."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


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


def fetch(url: str, sha256: str | None = None, progress: Progress | None = None) -> Path:
    """The cached file of ``url``, downloaded and verified first if it is not cached yet.

    Args:
        url: an http(s) address.
        sha256: the file's SHA-256 hex digest or a prefix of it; by default the ``-<hex>.``
            in the file name, as torch.hub checks; no check when neither exists.
        progress: called as ``progress(bytes_done, bytes_total or None)`` while downloading.

    Raises:
        CheckpointError: offline with nothing cached, a network or HTTP error, a truncated
            body or a hash mismatch, each naming the URL (and the cache path to fill by hand).
    """
    path = cache_path(url)
    if path.is_file():
        return path
    if offline():
        raise CheckpointError(
            f"{url}: not in the cache and {OFFLINE_VARIABLE} is set; download it by hand to {path}"
        )
    locks = cache_dir() / "locks"  # apart from the files: a failed download leaves none
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{cache_dir()}: cannot create the cache folder ({err})") from err
    with open(locks / f"{path.parent.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same file
        if not path.is_file():
            _download(url, path, expected_hash(url, sha256), progress)
    return path


def _download(url: str, path: Path, sha256: str | None, progress: Progress | None) -> None:
    """Stream ``url`` into a temporary file beside ``path``, verify it, rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size, total = _stream(url, out, progress, path)
        if total is not None and size != total:
            raise CheckpointError(
                f"{url}: the transfer stopped at {size:,} of {total:,} bytes; nothing was cached, "
                "try again"
            )
        found = digest.hexdigest()
        if sha256 and not found.startswith(sha256):
            raise CheckpointError(
                f"{url}: SHA-256 {found[: max(8, len(sha256))]}... does not match the expected "
                f"{sha256}; the file was not cached (a corrupt or substituted download)"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _stream(url: str, out, progress: Progress | None, path: Path):
    """Copy the response body into ``out``; returns (sha256, bytes read, Content-Length)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pspnet"})
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(size, total)
    except urllib.error.HTTPError as err:
        raise CheckpointError(f"{url}: the server answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(
            f"{url}: cannot download ({reason}); without a network, put the file at {path}"
        ) from err
    except (http.client.HTTPException, OSError) as err:  # IncompleteRead: a body cut short
        raise CheckpointError(f"{url}: the transfer broke off ({err}); nothing was cached") from err
    return digest, size, total
