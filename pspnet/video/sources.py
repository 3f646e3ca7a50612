"""Opening videos: files, cameras and network streams, read with OpenCV's FFmpeg backend.

A :class:`VideoSource` is one opened video and the frames a selection of it keeps (``every``,
``start``, ``duration``, ``max_frames``). A camera or a stream is read on a thread whose
frames are awaited at most ``stall_seconds``, and OpenCV's own open and read timeouts are set
to the same, so a stream that stalls is reported (:class:`StreamStalled`), never waited on
for ever; one that ends simply ends.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import cv2
import numpy as np

from pspnet.data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from pspnet.errors import ConfigError, DatasetError
from pspnet.readahead import read_ahead_on_thread

Kind = Literal["file", "camera", "stream"]
Frame = tuple[int, float, np.ndarray]  # (index in the source, seconds, (H, W, 3) uint8 RGB)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
STALL_SECONDS = 10.0
DEFAULT_FPS = 30.0  # what a source that reports no rate (some MJPEG streams) is written at
# Container signatures: ISO media (MP4, MOV) at byte 4, AVI, Matroska/WebM (EBML).
_ISO_IMAGE_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")


class StreamStalled(DatasetError):
    """A camera or stream that gave no frame for ``stall_seconds``."""


def is_video(path: Path) -> bool:
    """A video file by its extension (:data:`VIDEO_EXTENSIONS`), else by its first bytes."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
        return suffix in VIDEO_EXTENSIONS
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return False  # reported by the image reader, which names the problem
    if head[4:8] == b"ftyp":
        return head[8:12] not in _ISO_IMAGE_BRANDS  # HEIF and AVIF images are ISO media too
    return (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] == b"\x1aE\xdf\xa3"


def parse_source(text: str) -> int | str | Path:
    """``--source``'s value: a camera index ("0"), a stream URL (rtsp, http(s)) or a file."""
    if text.isdigit():
        return int(text)
    if urlparse(text).scheme.lower() in STREAM_SCHEMES:
        return text
    return Path(text)


def source_kind(source: int | str | Path) -> Kind:
    if isinstance(source, int):
        return "camera"
    if isinstance(source, str) and urlparse(source).scheme.lower() in STREAM_SCHEMES:
        return "stream"
    return "file"


def source_name(source: int | str | Path) -> str:
    """A name for a camera's or a stream's outputs: ``camera0``, the URL's last part, ``stream``."""
    if isinstance(source, int):
        return f"camera{source}"
    url = urlparse(str(source))
    if source_kind(source) == "file":
        return Path(source).stem
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(url.path).stem or url.hostname or "")
    return name.strip("._") or "stream"


class VideoSource:
    """An opened video file, camera or stream, and the frames a selection of it keeps.

    Args:
        source: a video file, a camera index, or an rtsp:// or http(s):// URL.
        every: keep every N-th frame, from the first of the selection.
        start: seconds of a file skipped first (its frames are decoded, so the cut is exact).
        duration: seconds kept: of a file's time from ``start``; of a camera's or a stream's
            recording (the wall clock from its first frame).
        max_frames: stop after keeping this many frames.
        stall_seconds: a camera or stream with no frame for this long has stalled
            (:class:`StreamStalled`); also OpenCV's open and read timeouts of a stream.

    Raises:
        ConfigError: a selection that is out of range, or ``start`` of a live source.
        DatasetError: a missing or empty file, a source OpenCV cannot open (not a video,
            truncated, a codec it cannot decode, an absent camera), naming it.
    """

    def __init__(
        self,
        source: int | str | Path,
        *,
        every: int = 1,
        start: float = 0.0,
        duration: float | None = None,
        max_frames: int | None = None,
        stall_seconds: float = STALL_SECONDS,
    ):
        self.kind = source_kind(source)
        self.name = f"camera {source}" if self.kind == "camera" else str(source)
        _check_selection(self.kind, every, start, duration, max_frames, stall_seconds)
        self.every, self.start, self.duration, self.max_frames = every, start, duration, max_frames
        self.stall_seconds = stall_seconds
        self.stop_reason: str | None = None  # "end", "duration" or "max_frames" once read
        self._capture = _open(source, self.kind, self.name, stall_seconds)
        self._threaded = False
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps_known = math.isfinite(fps) and 0 < fps <= 1000
        self.fps = fps if self.fps_known else DEFAULT_FPS
        self.size = (
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)  # a stream's is 0 or a huge negative
        known = self.kind == "file" and math.isfinite(count) and 0 < count < 2**31
        self.frame_count = int(count) if known else None

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def output_fps(self) -> float:
        """The rate of the kept frames: the source's over ``every``."""
        return self.fps / self.every

    def expected_frames(self) -> int | None:
        """How many frames the selection keeps of a file whose frame count is known."""
        if self.frame_count is None:
            return None
        first, end = self._cut()
        end = self.frame_count if end is None else min(end, self.frame_count)
        kept = max(0, math.ceil((end - first) / self.every))
        return kept if self.max_frames is None else min(kept, self.max_frames)

    def frames(self, read_ahead: int = 0) -> Iterator[Frame]:
        """(index in the source, seconds, (H, W, 3) uint8 RGB) of each kept frame, in order.

        A file's time is its index over the rate; a live source's is the wall clock since its
        first frame. Cameras and streams are always read on a thread (the stall guard).

        Args:
            read_ahead: decode up to this many frames ahead on a thread (0: in the caller's).

        Raises:
            StreamStalled: a live source gave no frame for ``stall_seconds``.
            DatasetError: a file ended before the frames its header declares (truncated).
        """
        decoded = self._decode()
        if read_ahead == 0 and not self.live:
            return decoded
        self._threaded = True  # the reader thread releases the capture
        patience = self.stall_seconds + 1 if self.live else None
        return read_ahead_on_thread(decoded, max(1, read_ahead), patience, self._stalled)

    def close(self) -> None:
        """Release the capture, unless a reader thread holds it (it releases it when it stops:
        a read on another thread must not see its capture go)."""
        if not self._threaded:
            self._capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _cut(self) -> tuple[int, int | None]:
        """A file's [first, end) frame indices from ``start`` and ``duration``."""
        first = round(self.start * self.fps)
        if self.live or self.duration is None:
            return first, None
        return first, first + max(1, round(self.duration * self.fps))

    def _decode(self) -> Iterator[Frame]:
        capture, (first, end) = self._capture, self._cut()
        kept, grabbed, began = 0, 0, None  # grabbed: frames read, the next one's index
        try:
            while True:
                if self.max_frames is not None and kept >= self.max_frames:
                    self.stop_reason = "max_frames"
                    return
                now = time.monotonic()
                recorded = now - (began or now)  # a live source's seconds so far
                past_end = end is not None and grabbed >= end
                if past_end or (self.live and self.duration and recorded >= self.duration):
                    self.stop_reason = "duration"
                    return
                if not capture.grab():  # skipped frames are decoded, not converted
                    self._ended(grabbed, time.monotonic() - now)
                    return
                index, grabbed, began = grabbed, grabbed + 1, began or now
                if index < first or (index - first) % self.every:
                    continue
                ok, bgr = capture.retrieve()
                if not ok:
                    raise DatasetError(f"{self.name}: frame {index} cannot be decoded")
                seconds = time.monotonic() - began if self.live else index / self.fps
                kept += 1
                yield index, seconds, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def _stalled(self) -> StreamStalled:
        return StreamStalled(f"{self.name}: stalled, no frame for {self.stall_seconds:g} s")

    def _ended(self, frames: int, waited: float) -> None:
        """The source gave no more frames after ``frames``: why, raised, or ``stop_reason``."""
        if self.live and waited >= 0.9 * self.stall_seconds:  # OpenCV's read timeout ran out
            raise self._stalled()
        if frames == 0:
            raise DatasetError(f"{self.name}: opened, but no frame could be decoded")
        declared = self.frame_count
        # Containers that store no frame count estimate it from the duration: a little slack.
        if declared is not None and frames < declared - max(2, declared // 50):
            raise DatasetError(
                f"{self.name}: truncated or damaged: {frames} of the {declared} frames its "
                "header declares could be decoded"
            )
        self.stop_reason = "end"


def _check_selection(kind, every, start, duration, max_frames, stall_seconds) -> None:
    if not (isinstance(every, int) and every >= 1):
        raise ConfigError(f"every must be an integer >= 1, got {every!r}")
    if not (math.isfinite(start) and start >= 0):
        raise ConfigError(f"start must be seconds >= 0, got {start!r}")
    if start and kind != "file":
        raise ConfigError("start cuts video files; a camera or stream is read from now")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ConfigError(f"duration must be seconds > 0, got {duration!r}")
    if max_frames is not None and not (isinstance(max_frames, int) and max_frames >= 1):
        raise ConfigError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if not (math.isfinite(stall_seconds) and stall_seconds > 0):
        raise ConfigError(f"stall_seconds must be > 0, got {stall_seconds!r}")


def _open(source: int | str | Path, kind: Kind, name: str, stall_seconds: float):
    if kind == "file":
        path = Path(source)
        if not path.is_file():
            raise DatasetError(f"{path}: no such video file")
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty video file")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        fix = (
            "not a video, truncated (an MP4's index is written last), or a codec this OpenCV "
            "build cannot decode; `ffprobe` tells which, `ffmpeg -i IN -c:v libx264 OUT.mp4` "
            "re-encodes it"
        )
    elif kind == "camera":
        capture = cv2.VideoCapture(int(source))
        fix = "no such camera, or another program holds it"
    else:
        milliseconds = int(stall_seconds * 1000)
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            milliseconds,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            milliseconds,
        ]
        capture = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, timeouts)
        fix = f"unreachable within {stall_seconds:g} s, refused, or not a video stream"
    if not capture.isOpened():
        capture.release()
        raise DatasetError(f"{name}: cannot be opened as a video ({fix})")
    return capture


def quiet_backend_logs() -> None:
    """Silence OpenCV's and FFmpeg's own warnings, which :class:`DatasetError` replaces.

    For the command line, which says one line per problem; FFmpeg reads its level when it is
    first used, so call this before opening any video.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
