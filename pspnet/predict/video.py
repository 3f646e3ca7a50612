"""``pspnet predict`` on a video: the overlay video and, when asked, a label PNG per frame.

Decoding, the network and encoding overlap where a core is spare
(:func:`pspnet.readahead.io_threads`): the next frames are decoded on one thread and the
finished ones encoded and written on another, in order, while the network runs. The outputs
appear whole or not at all (:class:`~pspnet.video.writer.VideoOutputs`). A live source
(camera, stream) ends at its end, at ``max_frames`` or ``duration``, at a stall or at Ctrl+C,
and its outputs are finalised in every case; a file interrupted part-way leaves nothing, so
that a rerun does it again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pspnet.data.images import check_pixels
from pspnet.files import make_folder
from pspnet.inference import Segmenter
from pspnet.predict.settings import VideoSettings
from pspnet.readahead import InlineExecutor, in_order, io_threads
from pspnet.video.frames import segment_frames
from pspnet.video.sources import StreamStalled, VideoSource
from pspnet.video.writer import VideoOutputs, video_codec

Progress = Callable[[int, "int | None"], None]
Stop = Literal["end", "duration", "max_frames", "interrupted", "stalled"]


@dataclass(frozen=True)
class VideoResult:
    """What a video gave.

    Attributes:
        source: the video's name (its path, ``camera N`` or its URL).
        overlay: the overlay video (None when no frame was kept).
        labels: the folder of label PNGs (None unless asked for, or no frame was kept).
        frames: frames written.
        fps: the overlay's frame rate (the source's over ``every``).
        size: (height, width) of the frames.
        codec: the overlay's fourcc (``mp4v``, ``MJPG``).
        stopped: why reading stopped: "end", "duration", "max_frames", "interrupted" (Ctrl+C
            on a live source) or "stalled" (a live source gave no frame for its
            ``stall_seconds``).
        done_before: a file's outputs were all there, so it was not segmented again.
    """

    source: str
    overlay: Path | None
    labels: Path | None
    frames: int
    fps: float
    size: tuple[int, int]
    codec: str
    stopped: Stop
    done_before: bool = False


def predict_video(
    segmenter: Segmenter,
    video: VideoSource,
    out_dir: str | Path,
    name: str | Path,
    settings: VideoSettings,
    *,
    unknown_below: float | None = None,
    redo: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
) -> VideoResult:
    """Segment an opened video's kept frames into ``NAME_overlay.EXT`` (and ``NAME/*_label.png``).

    Args:
        segmenter: the model and its inference settings.
        video: the source and its selection of frames.
        out_dir: output folder (created).
        name: the outputs' name, as :func:`pspnet.predict.outputs.output_names` gives it.
        settings: label PNGs per frame (``save_labels``) and smoothing (``smooth``); the
            frames kept were chosen when ``video`` was opened.
        unknown_below: label pixels whose confidence is under this as unknown (255).
        redo: segment a file again even if its outputs are there.
        limit: the pixel limit of a frame (e.g. :meth:`Segmenter.pixel_limit`).
        progress: ``progress(frames_done, frames_expected or None)`` after each frame.

    Raises:
        DatasetError: a truncated file, or frames over ``limit`` (nothing written).
        OutputError: the outputs cannot be written (nothing left behind).
        InferenceError: the model failed on a frame, naming it (nothing left behind).
    """
    check_pixels(*video.size, video.name, limit)
    out_dir = make_folder(out_dir)
    codec, extension = video_codec()
    overlay = out_dir / f"{name}_overlay{extension}"
    labels = out_dir / name if settings.save_labels else None
    result = dict(source=video.name, fps=video.output_fps, size=video.size, codec=codec)
    if not (redo or video.live) and overlay.is_file() and (labels is None or labels.is_dir()):
        return VideoResult(
            overlay=overlay, labels=labels, frames=0, stopped="end", done_before=True, **result
        )
    outputs = VideoOutputs(out_dir, name, video.output_fps, video.size, settings.save_labels)
    try:
        stopped = _run(segmenter, video, outputs, settings.smooth, unknown_below, progress)
    except BaseException:
        outputs.discard()
        raise
    outputs.finish()
    written = outputs.frames > 0
    return VideoResult(
        overlay=overlay if written else None,
        labels=labels if written else None,
        frames=outputs.frames,
        stopped=stopped,
        **result,
    )


def _run(segmenter, video, outputs, smooth, unknown_below, progress) -> Stop:
    """Every kept frame segmented and handed to ``outputs``; why the reading stopped."""
    expected = video.expected_frames()
    frames = segment_frames(segmenter, video, smooth=smooth, unknown_below=unknown_below)
    # One writer thread at most: frames are encoded in order.
    writer = ThreadPoolExecutor(1, "pspnet-video-write") if io_threads(segmenter.device) else None
    with writer or InlineExecutor() as io:
        try:
            for done, _ in enumerate(in_order(io, outputs.add, frames), start=1):
                if progress is not None:
                    progress(done, expected)
            return video.stop_reason or "end"
        except StreamStalled:
            return "stalled"  # a live source's end too: its frames so far are kept
        except KeyboardInterrupt:
            if not video.live:
                raise
            return "interrupted"  # how a camera or stream is stopped by hand
        finally:
            frames.close()  # stops the reader thread and releases the capture
