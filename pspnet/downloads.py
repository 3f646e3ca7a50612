"""Streaming an http(s) file to the disk within bounds: the package's one HTTP client.

The weights cache (:mod:`pspnet.weights.download`) and the dataset downloader
(:mod:`pspnet.data.download`) both fetch through :func:`transfer`. A transfer is bounded in
size (the caller's limit, checked against the announced length before the body and again as
it arrives) and in time (a read waiting longer than ``TIMEOUT_SECONDS`` is a stall; the whole
transfer has a deadline), and a redirect from https to plain http is refused. With ``resume``,
a ``.part`` file already holding the first bytes is continued with an HTTP Range request, as
``curl -C -`` and ``wget -c`` do; a server that ignores the range sends the whole file, which
replaces the part. The caller decides what the digest must match and where the file goes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pspnet.errors import ConfigError, PSPNetError

OFFLINE_VARIABLE = "PSPNET_OFFLINE"
DOWNLOAD_TIMEOUT_VARIABLE = "PSPNET_DOWNLOAD_TIMEOUT"
TIMEOUT_SECONDS = 30  # the longest a connection or a read may wait for the server: a stall
CHUNK_BYTES = 1 << 20
RANGE_NOT_SATISFIABLE = 416

Progress = Callable[[int, int | None], None]


def offline() -> bool:
    """Whether ``$PSPNET_OFFLINE`` forbids the network (any value but "", "0", "false")."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def positive(variable: str, default: float) -> float:
    """The positive number in ``$variable``, else ``default``.

    Raises:
        ConfigError: the variable holds something else.
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ConfigError(f"{variable}={text!r}: must be a positive number")
    return value


def transfer(
    url: str,
    part: Path,
    *,
    error: type[PSPNetError],
    max_bytes: int,
    limit: str,
    by_hand: str,
    seconds: float,
    resume: bool = False,
    algorithm: str = "sha256",
    progress: Progress | None = None,
) -> str:
    """Download ``url`` into ``part``; the hex digest of the whole file.

    Args:
        url: an http(s) address.
        part: the file written; with ``resume``, the bytes it already holds are kept and the
            rest asked for (HTTP Range), otherwise it is overwritten.
        error: the exception raised, the caller's boundary type (``DatasetError``).
        max_bytes: the most bytes the whole file may have.
        limit: why ``max_bytes`` is what it is, for the message that refuses a larger file.
        by_hand: what to do without a network, for the message when the server is unreachable.
        seconds: the deadline of the whole transfer, connecting included.
        resume: continue a ``part`` left by an earlier, interrupted transfer.
        algorithm: the ``hashlib`` digest returned (``"sha256"``, ``"md5"``).
        progress: called as ``progress(bytes_done, bytes_total or None)``, counting the bytes
            ``part`` held before.

    Raises:
        PSPNetError: as ``error``: a network or HTTP error, a redirect from https to http, an
            oversized, truncated, stalled or too slow transfer, each naming the URL; with
            ``resume`` the bytes received are kept in ``part`` and the message says so.
    """
    job = _Job(url, part, error, max_bytes, limit, seconds, resume)
    deadline = time.monotonic() + seconds
    start = part.stat().st_size if resume and part.is_file() else 0
    digest = hashlib.new(algorithm)
    response = job.open(start, by_hand)
    if start and response.status == 206:
        job.check_range(response, start)
        _hash_file(part, digest)
    else:
        start = 0  # asked for the whole file, or the server ignored the range and sent it all
    with response:
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise error(
                f"{url}: the server announces {total:,} bytes, over the limit of "
                f"{max_bytes:,} bytes ({limit}); nothing was downloaded"
            )
        with open(part, "ab" if start else "wb") as out:
            done = job.copy(
                response,
                out,
                digest,
                start=start,
                total=total,
                deadline=deadline,
                progress=progress,
            )
    if total is not None and done != total:
        raise error(f"{url}: the transfer stopped at {done:,} of {total:,} bytes; {job.kept(done)}")
    return digest.hexdigest()


@dataclass(frozen=True)
class _Job:
    """One transfer's request and bounds, which its messages name."""

    url: str
    part: Path
    error: type[PSPNetError]
    max_bytes: int
    limit: str
    seconds: float
    resume: bool

    @property
    def stall_seconds(self) -> float:
        return min(TIMEOUT_SECONDS, self.seconds)

    def open(self, start: int, by_hand: str):
        """The server's response to a GET of the URL, from byte ``start`` on when it is not 0."""
        headers = {"User-Agent": "pspnet"}
        if start:
            headers["Range"] = f"bytes={start}-"
        opener = urllib.request.build_opener(HttpsRedirectHandler(self.error))
        request = urllib.request.Request(self.url, headers=headers)
        try:
            return opener.open(request, timeout=self.stall_seconds)
        except urllib.error.HTTPError as err:
            if start and err.code == RANGE_NOT_SATISFIABLE:  # the part is whole, or too long
                return self.open(0, by_hand)
            answer = f"{self.url}: the server answered HTTP {err.code} {err.reason}"
            raise self.error(answer) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise self.error(
                f"{self.url}: cannot download ({reason}); without a network, {by_hand}"
            ) from err

    def check_range(self, response, start: int) -> None:
        """Refuse a partial answer that does not begin where the part ends (RFC 9110 14.4)."""
        found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if found is None or int(found[1]) != start:
            response.close()
            raise self.error(
                f"{self.url}: asked for the bytes from {start:,} on, the server sent "
                f"{response.headers.get('Content-Range')!r}; delete {self.part} and run again"
            )

    def copy(
        self,
        response,
        out,
        digest,
        *,
        start: int,
        total: int | None,
        deadline: float,
        progress: Progress | None,
    ) -> int:
        """Copy the body into ``out`` within the bounds; the file's size after it."""
        url, max_bytes, done = self.url, self.max_bytes, start
        try:
            # read1 returns what has arrived, so the deadline is checked while a server trickles.
            while chunk := response.read1(min(CHUNK_BYTES, max_bytes + 1 - done)):
                if done + len(chunk) > max_bytes:
                    raise self.error(
                        f"{url}: the transfer passed {max_bytes:,} bytes and was cut off, over "
                        f"the limit of {max_bytes:,} bytes ({self.limit})"
                    )
                if time.monotonic() > deadline:
                    raise self.error(
                        f"{url}: the download took longer than {self.seconds:g} s "
                        f"({DOWNLOAD_TIMEOUT_VARIABLE}) and was stopped at {done:,} bytes; "
                        f"{self.kept(done)}"
                    )
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        except TimeoutError as err:
            raise self.error(
                f"{url}: the transfer stalled (no data for {self.stall_seconds:g} s) at "
                f"{done:,} bytes; {self.kept(done)}"
            ) from err
        except (http.client.HTTPException, OSError) as err:  # IncompleteRead: a body cut short
            raise self.error(f"{url}: the transfer broke off ({err}); {self.kept(done)}") from err
        return done

    def kept(self, done: int) -> str:
        """What an interrupted transfer leaves, and what to do."""
        if self.resume and done:
            return f"the {done:,} bytes received are kept in {self.part}: run again to resume"
        return "nothing was kept, try again"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib``'s ``algorithm``)."""
    digest = hashlib.new(algorithm)
    _hash_file(path, digest)
    return digest.hexdigest()


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)


class HttpsRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, except from https to plain http, which it refuses:
    the file would travel where anyone on the way can change it."""

    def __init__(self, error: type[PSPNetError] = PSPNetError) -> None:
        self.error = error

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlparse(req.full_url), urllib.parse.urlparse(newurl)
        if old.scheme == "https" and new.scheme != "https":
            fp.close()
            raise self.error(
                f"{req.full_url}: the server redirected to {newurl}, from https to plain "
                f"{new.scheme}; refused (the file could be altered on the way); ask for an "
                "https address"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)
