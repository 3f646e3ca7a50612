"""A real ``pspnet serve`` process on 127.0.0.1 and standard-library clients for it.

Imported as ``from service_helpers import ...`` (pytest puts tests/serve on ``sys.path``).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from helpers import free_port, trained_like
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.models import PSPNet

CLASS_NAMES = [f"class {i}" for i in range(11)]
PALETTE = [(20 * i, 255 - 20 * i, 73 * i % 256) for i in range(11)]
# One forward pass of the whole image, no mirror: a 1000 x 1000 image takes ~0.3 s on 2 cores.
INFERENCE = {"mode": "whole", "flip": False}


def write_tiny_checkpoint(path: Path, base_width: int = 4) -> Path:
    """A resnet18 PSPNet (width ``base_width``) whose random weights give a scene several classes.

    PSPNet's own init gives every class nearly the same score, so one class wins everywhere;
    random BN statistics and a unit-variance classifier spread the argmax over classes.
    """
    torch.manual_seed(0)
    model = trained_like(PSPNet(len(CLASS_NAMES), backbone="resnet18", base_width=base_width))
    with torch.no_grad():
        model.head.classifier.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
        model.head.classifier.bias.zero_()
    metadata = {
        "class_names": json.dumps(CLASS_NAMES),
        "palette": json.dumps(PALETTE),
        "inference": json.dumps(INFERENCE),
    }
    save_model(model, path, metadata)
    return path


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 of random 16-pixel blocks: compresses well, gives several classes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(16, 0).repeat(16, 1)[:height, :width])


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 of random pixels: a PNG of it is as large as the raw pixels."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: np.ndarray | Image.Image, kind: str = "PNG", **options) -> bytes:
    """The image's file bytes (PIL's ``save`` options, e.g. ``exif=`` or ``compress_level=``)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format=kind, **options)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A PNG's pixel values as they are stored (palette indices for a palette PNG)."""
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG", picture.format
        return np.asarray(picture)


def pixel_bomb(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = zlib.compress(b"\x00" * 1024)  # a sliver of the first row; decoding never gets here
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def multipart(data: bytes, filename: str, content_type: str, field: str = "image"):
    """``(body, Content-Type)`` of a multipart/form-data upload of one file."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Reply:
    """One request on a fresh connection; the whole body is read."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        names = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, names, data, time.perf_counter() - start)
    finally:
        connection.close()


def segment(
    port: int,
    data: bytes,
    format: str = "png",  # noqa: A002 (the API's word)
    content_type: str = "image/png",
    as_form: bool = False,
    timeout: float = 60.0,
    query: str = "",
) -> Reply:
    """``POST /v1/segment?format=...`` with ``data`` as the raw body or the form field ``image``."""
    if as_form:
        data, content_type = multipart(data, "upload.img", content_type)
    path = f"/v1/segment?format={format}" + (f"&{query}" if query else "")
    return call(port, "POST", path, data, {"Content-Type": content_type}, timeout)


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes):
    """A connected socket that has sent the request head and ``body`` (maybe only a part)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_status(sock: socket.socket, within: float) -> tuple[int, bytes]:
    """The status code and the bytes received once a whole response head has arrived."""
    sock.settimeout(within)
    received = b""
    deadline = time.monotonic() + within
    while b"\r\n\r\n" not in received and time.monotonic() < deadline:
        part = sock.recv(65536)
        if not part:
            break
        received += part
    assert b"\r\n\r\n" in received, f"no response head within {within} s: {received!r}"
    return int(received.split(b" ", 2)[1]), received


def metrics(port: int) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``{(name, frozenset of (label, value)): value}``."""
    reply = call(port, "GET", "/metrics", timeout=10)
    assert reply.status == 200, reply
    values = {}
    for line in reply.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = [p.split("=", 1) for p in labels.rstrip("}").split(",") if p]
        values[name, frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return values


def metric(port: int, name: str, **labels: str) -> float:
    """One series of ``/metrics``; 0 for a labelled counter not yet incremented."""
    return metrics(port).get((name, frozenset(labels.items())), 0.0)


def wait_for(condition, within: float, step: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``within`` seconds pass; its last answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's ``/proc/<pid>/status`` memory field (VmRSS, VmHWM ...) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class Service:
    """A ``pspnet serve`` subprocess; ``readyz`` holds the statuses seen while it started.

    ``headers`` go with the requests of :func:`wait_ready` (an API key).
    """

    process: subprocess.Popen
    port: int
    log: Path
    readyz: list[int]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_service(
    checkpoint: Path,
    log: Path,
    *options: str,
    backend: str | None = "eager",
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Service:
    """Start ``python -m pspnet serve`` on a free loopback port; wait with :func:`wait_ready`.

    The server runs as many threads as this process: the sums of a convolution depend on
    how it is split, and the tests compare labels with this process's own exactly.

    Args:
        backend: ``--backend``; None leaves the default.
        env: variables to set in the server's environment.
        headers: sent with :func:`wait_ready`'s requests.
    """
    port = free_port()
    variables = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})}
    command = [sys.executable, "-m", "pspnet", "serve", "--checkpoint", str(checkpoint)]
    if backend is not None:
        command += ["--backend", backend]
    command += ["--host", "127.0.0.1", "--port", str(port), *options]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=variables)
    return Service(process, port, log, [], headers or {})


def wait_ready(service: Service, within: float = 120.0) -> Service:
    """Poll ``/readyz`` until 200; raise with the server's output if it dies or never is."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and service.alive:
        try:
            reply = call(service.port, "GET", "/readyz", headers=service.headers, timeout=5)
        except OSError:
            time.sleep(0.05)  # not listening yet
            continue
        service.readyz.append(reply.status)
        if reply.status == 200:
            return service
        assert reply.status == 503 and reply.headers.get("retry-after"), reply
        time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"pspnet serve never became ready:\n{service.log.read_text()[-3000:]}")
