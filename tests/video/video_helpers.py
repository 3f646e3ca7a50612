"""Short synthetic clips and a local MJPEG server for the video tests.

Imported as ``from video_helpers import ...`` (pytest puts tests/video on ``sys.path``).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

SIZE = (48, 64)  # (height, width)


def scene(index: int, size=SIZE) -> np.ndarray:
    """Frame ``index`` of a synthetic street: sky, road, a block moving right, some noise.
    (H, W, 3) uint8 RGB."""
    height, width = size
    rng = np.random.default_rng(index)
    frame = np.empty((height, width, 3), np.uint8)
    frame[: height // 3] = (120, 160, 230)
    frame[height // 3 :] = (90, 90, 90)
    left = (4 * index) % (width - 12)
    frame[height // 2 : height // 2 + 10, left : left + 12] = (200, 40, 30)
    noise = rng.integers(-12, 13, frame.shape)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: int, fps: float = 12.0, fourcc: str = "mp4v") -> Path:
    """A clip of :func:`scene` frames, written by OpenCV."""
    height, width = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), path
    for index in range(frames):
        writer.write(cv2.cvtColor(scene(index), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as OpenCV decodes it, (H, W, 3) uint8 RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def video_facts(path: Path) -> tuple[int, tuple[int, int], float]:
    """(frames decoded, (height, width), frames per second) of a video file."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = decoded_frames(path)
    return len(frames), frames[0].shape[:2] if frames else (0, 0), fps


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/live.mjpg``: frames at 25 fps while the server runs; ``/stall.mjpg``: 5 frames, then
    silence; ``/FILE``: a file of the served folder."""

    folder: Path
    stopping: threading.Event

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith(".mjpg"):
            self._mjpeg(stall_after=5 if "stall" in self.path else None)
            return
        path = self.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _mjpeg(self, stall_after: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        index, deadline = 0, time.monotonic() + 60  # bounded, whatever the client does
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if index == stall_after:
                self.stopping.wait(30)  # silence, the connection kept open
                return
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(scene(index), cv2.COLOR_RGB2BGR))
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
            try:
                self.wfile.write(part % len(jpeg) + jpeg.tobytes() + b"\r\n")
                self.wfile.flush()
            except OSError:  # the client left
                return
            index += 1
            time.sleep(0.04)


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """A server on 127.0.0.1 (a free port) for the duration; yields its base URL."""
    stopping = threading.Event()
    handler = type("Handler", (_Handler,), {"folder": folder, "stopping": stopping})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
