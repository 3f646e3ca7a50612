"""The service's ASGI layers, driven in-process by hand-made ASGI messages: no server."""

import asyncio
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from pspnet.serve.app import create_app  # noqa: E402
from pspnet.serve.middleware import (  # noqa: E402
    SEND_PIECE_BYTES,
    Admission,
    Places,
    host_name,
    uploaded,
)
from pspnet.serve.settings import ServiceLimits  # noqa: E402


def scope(method: str, path: str, headers: dict[str, str]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def ask(app, method: str, path: str, body: bytes = b"", headers=None) -> dict:
    """One request to an ASGI app whose client stays: {"status", "headers", "body"}."""
    sent, stays = [b""], asyncio.Event()
    answer = {}

    async def receive():
        if sent[0] is not None:
            chunk, sent[0] = body, None
            return {"type": "http.request", "body": chunk, "more_body": False}
        await stays.wait()  # the client never leaves

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    headers = {"Host": "127.0.0.1:8000", "Content-Length": str(len(body)), **(headers or {})}
    await app(scope(method, path, headers), receive, send)
    return answer


class FailingSegmenter:
    """Loads and warms up, then fails on every image as a broken runtime would."""

    def probs(self, image):
        return np.zeros((1, *image.shape[:2]), np.float32)

    def segment(self, image, unknown_below=None, progress=None):
        raise RuntimeError("the runtime failed in /srv/models/secret.onnx")


def test_an_unexpected_failure_is_a_json_500_and_logged(caplog):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")

    async def exercise():
        app = create_app(FailingSegmenter, ServiceLimits(max_pixels=10**6))
        async with app.router.lifespan_context(app):
            while not app.state.worker.ready:
                await asyncio.sleep(0.01)
            return await ask(
                app, "POST", "/v1/segment", buffer.getvalue(), {"Content-Type": "image/png"}
            )

    with caplog.at_level(logging.ERROR, logger="pspnet.serve"):
        answer = asyncio.run(asyncio.wait_for(exercise(), timeout=60))
    assert answer["status"] == 500
    assert answer["headers"]["content-type"] == "application/json"
    assert json.loads(answer["body"]) == {"error": "internal error", "status": 500}
    logged = [r for r in caplog.records if r.name == "pspnet.serve" and r.exc_info]
    assert logged and "secret.onnx" in str(logged[0].exc_info[1])  # the details: in the log


def test_a_place_is_held_until_the_answer_is_sent_and_freed_when_it_is_not_read(caplog):
    body = b"x" * (4 * SEND_PIECE_BYTES)

    places = Places(queue=1, reading=4)

    async def answer(scope, receive, send):
        uploaded(scope, places)  # the body is read: a queue place, as the route takes it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def exercise():
        admission = Admission(answer, "/v1/segment", places=places, send_seconds=0.3)
        read, stalled = [], asyncio.Event()

        async def unread(message):  # the client reads one piece, then nothing
            if message["type"] == "http.response.body":
                if read:
                    stalled.set()
                    await asyncio.Event().wait()
                read.append(len(message["body"]))

        async def nothing():
            await asyncio.Event().wait()

        slow = asyncio.create_task(admission(scope("POST", "/v1/segment", {}), nothing, unread))
        await stalled.wait()
        held = places.queued
        refused = await ask(admission, "POST", "/v1/segment")
        await asyncio.wait_for(slow, timeout=5)
        return held, refused, read, places.queued + places.uploading

    with caplog.at_level(logging.WARNING, logger="pspnet.serve"):
        held, refused, read, after = asyncio.run(asyncio.wait_for(exercise(), timeout=10))
    assert held == 1 and refused["status"] == 503  # the answer was computed, not yet sent
    assert read == [SEND_PIECE_BYTES]  # sent in pieces, the next once the last was read
    assert after == 0  # the deadline passed: the place is free again
    assert any("did not read its answer" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("LocalHost.", "localhost"),
        ("seg.example.com", "seg.example.com"),
        ("::1", "::1"),
        ("", ""),
    ],
)
def test_host_name(header, host):
    assert host_name(header) == host
