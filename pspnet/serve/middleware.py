"""The ASGI layers around every request: who may ask, how many at once, what a failure says.

From the outside in:

- :class:`CountRequests`: every answer by route and status, with its latency (``/metrics``);
- :class:`InternalErrors`: an unexpected exception is logged with its traceback and answered
  with the JSON 500 ``{"error": "internal error", "status": 500}``, never a trace or a path;
- :class:`Access`: the Host header must name this service, so a page of another site whose
  name was re-pointed at 127.0.0.1 (DNS rebinding) cannot use a loopback service, and so must
  a browser's Origin header, so another site's page cannot post to it either (a form post
  needs no CORS preflight); with an API key, every route but ``/healthz`` needs it;
- :class:`Admission`: a segment request holds one of a fixed number of slots from before its
  upload is read until its answer is sent, so the uploads, queued images and unsent answers in
  memory are bounded; the answer goes out in pieces, each sent once the client has read the
  last, within a deadline, so a client that never reads cannot keep its slot.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` wraps
``receive`` so that ``request.is_disconnected()`` never sees a client leave, and a queued
request could not be dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from pspnet.serve.metrics import Metrics

log = logging.getLogger("pspnet.serve")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/healthz",)  # liveness: answers "alive" to anyone (probes send no key)
RETRY_AFTER_SECONDS = 1
# An answer is sent in pieces of this size; the server waits for the client to read each (its
# buffer holds 64 KiB), so an unread answer holds about this much memory, not all of it.
SEND_PIECE_BYTES = 64 * 2**10


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer: JSON ``{"error": message, "status": status}``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class CountRequests:
    """Counts every response by route and status, with its latency."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)


class InternalErrors:
    """An exception nothing else handled: logged with its traceback, answered as JSON 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not started:  # else the server closes the connection mid-answer
                await problem(500, "internal error")(scope, receive, send)


def host_name(value: str) -> str:
    """The host of a Host header or an address: lower case, no port, brackets or final dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


class Access:
    """Requests must name an allowed host, come from no other site's page and, when the
    service has a key, carry it.

    Args:
        hosts: names and addresses the service answers to besides the loopback ones.
        api_key: the key every route but ``/healthz`` needs, as ``Authorization: Bearer KEY``
            or ``X-API-Key: KEY``; None: no key.
    """

    def __init__(self, app, hosts: Iterable[str], api_key: str | None):
        self.app = app
        self.hosts = {host_name(h) for h in (*LOOPBACK_NAMES, *hosts)}
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        origin = headers.get(b"origin")  # browsers send it on cross-site posts
        if host not in self.hosts:
            refusal = problem(
                400,
                f"this service does not answer to the host {host[:100]!r}; reach it by the "
                "address it is bound to, or add the name to its allowed hosts",
            )
        elif origin is not None and origin_host(origin) not in self.hosts:
            refusal = problem(403, "requests from pages of other sites are refused")
        elif self.key is not None and not hmac.compare_digest(given_key(headers), self.key):
            refusal = problem(
                401,
                "missing or wrong API key; send it as 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY'",
                {"WWW-Authenticate": "Bearer"},
            )
        else:
            await self.app(scope, receive, send)
            return
        await refusal(scope, receive, send)


def origin_host(origin: bytes) -> str:
    """The host of an Origin header (``https://name:port``); empty for ``null``."""
    return host_name(urlsplit(origin.decode("latin-1")).netloc)


def given_key(headers: dict[bytes, bytes]) -> bytes:
    """The key of ``X-API-Key``, else of ``Authorization: Bearer``; empty when neither."""
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].strip()
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class SlowReader(Exception):
    """The client did not read its answer within the deadline."""


class Places:
    """The service's places: uploads being read, and requests queued or running.

    An upload takes a reading place before its body is read; once read, it needs a queue place,
    held until its answer is sent. A slow upload thus holds a reading place only, never one of
    the few queue places, so it cannot keep other clients' images waiting; reading places bound
    the memory of uploads in flight (``reading`` x the largest upload). Touched only on the
    event loop: no lock.

    Args:
        queue: requests queued or running at once (``--max-queue`` + the running one).
        reading: uploads read at once (``--max-uploads``).
    """

    def __init__(self, queue: int, reading: int):
        self.queue, self.reading = queue, reading
        self.queued = self.uploading = 0

    def full(self) -> bool:
        """Whether a new upload must be refused unread: no reading place, or the queue full."""
        return self.uploading >= self.reading or self.queued >= self.queue


class Admission:
    """POSTs to ``path`` take a reading place before their body is read (503 unread when the
    service is full) and give it back once read or abandoned; see :class:`Places`.

    Args:
        path: the route admitted (the others are not counted).
        places: the service's reading and queue places; the route takes its queue place with
            :func:`uploaded` once the body is read.
        send_seconds: the time a client has to read its answer; then the connection closes.
    """

    def __init__(self, app, path: str, places: Places, send_seconds: float):
        self.app, self.path, self.places, self.send_seconds = app, path, places, send_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.places.full():
            await busy(self.places)(scope, receive, send)
            return
        self.places.uploading += 1
        held = scope.setdefault("state", {})["pspnet.places"] = {"reading": True, "queued": False}
        try:
            await self.app(scope, receive, self._paced(send))
        except SlowReader:
            log.warning("a client did not read its answer within %g s; closed", self.send_seconds)
        finally:
            if held["reading"]:
                self.places.uploading -= 1
            if held["queued"]:
                self.places.queued -= 1

    def _paced(self, send):
        """``send`` in pieces of :data:`SEND_PIECE_BYTES`, all within the send deadline."""
        deadline = None

        async def sending(message):
            nonlocal deadline
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.send_seconds
            for piece in in_pieces(message):
                try:
                    async with asyncio.timeout_at(deadline):
                        await send(piece)  # waits while the client's buffer is full
                except TimeoutError:
                    raise SlowReader from None

        return sending


def in_pieces(message: dict):
    """An ASGI body message as messages of :data:`SEND_PIECE_BYTES` at most, sliced lazily."""
    if message["type"] != "http.response.body":
        yield message
        return
    body, more = message.get("body", b""), message.get("more_body", False)
    for start in range(0, max(1, len(body)), SEND_PIECE_BYTES):
        end = start + SEND_PIECE_BYTES
        last = end >= len(body)
        yield {"type": message["type"], "body": body[start:end], "more_body": more or not last}


def busy(places: Places):
    """503 with ``Retry-After``: every queue or reading place is taken."""
    return problem(503, busy_message(places), BUSY_HEADERS)


def busy_message(places: Places) -> str:
    return (
        f"busy: {places.queued} request(s) queued or running, {places.uploading} upload(s) "
        "being read; retry shortly"
    )


BUSY_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def uploaded(scope, places: Places) -> None:
    """The body is read: give back the reading place and take a queue place.

    Raises:
        Busy: the queue filled while the body was read (answered 503).
    """
    held = scope["state"]["pspnet.places"]
    if held["reading"]:
        held["reading"] = False
        places.uploading -= 1
    if places.queued >= places.queue:
        raise Busy
    places.queued += 1
    held["queued"] = True


class Busy(Exception):
    """The queue is full."""
