"""A video's outputs, written whole or not at all: the overlay video and its frames' label PNGs.

Everything is written into a hidden folder beside the outputs, ``.NAME.part/``, and moved into
place by :meth:`VideoOutputs.finish`: a run that fails (a truncated input, an inference error)
or is killed leaves no output under the final names, and the next run of the same video
removes the folder. An MP4 is only playable once closed (its index is written last), so a
half-written one must never carry the final name. The overlay is encoded by OpenCV with the
first of :data:`CODECS` that the installed build writes, probed once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pspnet.errors import OutputError
from pspnet.files import atomic_write, fsync_file, fsync_folder, make_folder
from pspnet.video.frames import VideoFrame
from pspnet.visualize import label_png, overlay

# (fourcc, container): MPEG-4 Part 2, which every FFmpeg build encodes, then Motion JPEG.
CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))


@functools.cache
def video_codec() -> tuple[str, str]:
    """(fourcc, extension) of the first of :data:`CODECS` the installed OpenCV writes.

    Raises:
        OutputError: it writes none of them (a build without FFmpeg).
    """
    with tempfile.TemporaryDirectory(prefix="pspnet-codec-") as folder:
        for fourcc, extension in CODECS:
            path = os.path.join(folder, f"probe{extension}")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10, (16, 16))
            opened = writer.isOpened()
            if opened:
                writer.write(np.zeros((16, 16, 3), np.uint8))
            writer.release()
            if opened and os.path.getsize(path) > 0:
                return fourcc, extension
    tried = ", ".join(f"{fourcc} in {extension}" for fourcc, extension in CODECS)
    raise OutputError(
        f"this OpenCV build writes no video (tried {tried}); install opencv-python-headless, "
        "whose wheels include FFmpeg"
    )


class VideoOutputs:
    """One video's overlay, ``NAME_overlay.EXT``, and label PNGs, ``NAME/NNNNNN_label.png``.

    The overlay has the frames' size (OpenCV's FFmpeg encoders drop an odd last column or
    row) and the given rate; each label PNG is palette-indexed like ``predict``'s
    ``NAME_label.png``, named by the frame's index in the source.

    Args:
        out_dir: the output folder.
        name: the video's outputs' name (subfolders included), as ``output_names`` gives it.
        fps: the overlay's frame rate.
        size: (height, width) of the frames.
        save_labels: also write each frame's label PNG.

    Raises:
        OutputError: an output's place holds a folder or a file in the way, or OpenCV cannot
            write a video there.
    """

    def __init__(
        self, out_dir: Path, name: str | Path, fps: float, size: tuple[int, int], save_labels: bool
    ):
        self.codec, extension = video_codec()
        self.overlay = Path(out_dir) / f"{name}_overlay{extension}"
        self.labels = Path(out_dir) / name if save_labels else None
        self.staging = self.overlay.parent / f".{Path(name).name}.part"
        self.frames = 0
        if self.overlay.is_dir():
            raise OutputError(f"{self.overlay}: is a folder; move it away")
        if self.labels is not None and self.labels.exists() and not self.labels.is_dir():
            raise OutputError(f"{self.labels}: is a file, where the label PNGs' folder goes")
        shutil.rmtree(self.staging, ignore_errors=True)  # what a killed run left
        make_folder(self.staging)
        self._part = self.staging / f"overlay{extension}"
        height, width = size
        fourcc = cv2.VideoWriter_fourcc(*self.codec)
        self._writer = cv2.VideoWriter(str(self._part), fourcc, fps, (width, height))
        if not self._writer.isOpened():
            self.discard()
            raise OutputError(f"{self.overlay}: OpenCV cannot write a {self.codec} video here")

    def add(self, frame: VideoFrame) -> None:
        """Encode a frame's overlay (no legend: the video keeps the frames' size), write its
        label PNG. Ctrl+C waits for both, so a stopped recording has a label per frame."""
        result = frame.segmentation
        picture = overlay(frame.image, result.labels, result.palette, legend=False)
        png = label_png(result.labels, result.palette) if self.labels is not None else None
        with interrupt_after():
            self._writer.write(cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR))
            if png is not None:
                target = self.staging / f"{frame.index:06d}_label.png"
                atomic_write(target, lambda tmp: png.save(tmp, format="PNG"))
            self.frames += 1

    def finish(self) -> None:
        """Close the overlay and move the outputs into place: the labels first, the overlay
        last (its presence marks the video done). Nothing is kept when no frame was added."""
        self._writer.release()
        if self.frames:
            if self.labels is not None:
                make_folder(self.labels)
                for png in sorted(self.staging.glob("*_label.png")):
                    os.replace(png, self.labels / png.name)
                fsync_folder(self.labels)
            fsync_file(self._part)
            os.replace(self._part, self.overlay)
            fsync_folder(self.overlay.parent)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """Close and remove everything written so far."""
        self._writer.release()
        shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """Ctrl+C inside the block raises :class:`KeyboardInterrupt` when the block ends.

    Only the main thread receives signals; on another thread the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if caught:
        raise KeyboardInterrupt
