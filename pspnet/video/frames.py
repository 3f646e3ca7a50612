"""A video's segmentations, frame by frame: the Python API over :class:`Segmenter`.

Each kept frame goes through ``Segmenter.segment``, the one inference routine, so a frame's
labels equal ``segment`` on that decoded frame. Smoothing is opt-in: class probabilities
averaged over frames by an exponential moving average before the argmax (no peer does it:
mmsegmentation's and Ultralytics' video loops label each frame alone, and their overlays
flicker where the model hesitates between two classes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspnet.errors import ConfigError
from pspnet.inference import UNKNOWN, Segmentation, Segmenter
from pspnet.inference.result import compact_labels
from pspnet.readahead import PREFETCH, io_threads
from pspnet.video.sources import STALL_SECONDS, VideoSource


@dataclass(frozen=True)
class VideoFrame:
    """One kept frame and its segmentation.

    Attributes:
        index: the frame's number in the source, 0 for its first frame (skipped ones count).
        time: seconds: a file's index over its rate; a live source's since its first frame.
        image: (H, W, 3) uint8 RGB, as decoded.
        segmentation: labels, confidence (and probabilities when smoothing) of the frame.
    """

    index: int
    time: float
    image: np.ndarray
    segmentation: Segmentation


def segment_video(
    segmenter: Segmenter,
    source: int | str | Path,
    *,
    every: int = 1,
    start: float = 0.0,
    duration: float | None = None,
    max_frames: int | None = None,
    smooth: float | None = None,
    unknown_below: float | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> Iterator[VideoFrame]:
    """Segment the frames of a video file, a camera or a stream, one :class:`VideoFrame` each.

    ``for frame in segment_video(seg, "clip.mp4", every=2): frame.segmentation.labels``

    Args:
        segmenter: the model and its inference settings.
        source: a video file, a camera index, or an rtsp:// or http(s):// URL.
        every: keep every N-th frame.
        start: seconds of a file skipped first.
        duration: seconds kept: of a file from ``start``, of a live source's recording.
        max_frames: stop after this many kept frames.
        smooth: weight of the new frame in the exponential moving average of the class
            probabilities (1 or None: off; see :class:`ProbabilityAverage`).
        unknown_below: label pixels whose (averaged) confidence is under this as unknown.
        stall_seconds: a camera or stream with no frame for this long raises
            :class:`~pspnet.video.sources.StreamStalled`.

    Raises:
        DatasetError: the source cannot be opened, or a file is truncated (when reached).
        InferenceError: the model failed on a frame, naming it.
    """
    selection = dict(every=every, start=start, duration=duration, max_frames=max_frames)
    with VideoSource(source, **selection, stall_seconds=stall_seconds) as video:
        yield from segment_frames(segmenter, video, smooth=smooth, unknown_below=unknown_below)


def segment_frames(
    segmenter: Segmenter,
    video: VideoSource,
    *,
    smooth: float | None = None,
    unknown_below: float | None = None,
) -> Iterator[VideoFrame]:
    """:func:`segment_video` over an opened :class:`VideoSource`; its next frames are decoded
    on a thread while the network runs where a core is spare (:func:`pspnet.readahead.io_threads`).
    """
    if smooth is not None and not 0 < smooth <= 1:
        raise ConfigError(f"smooth must be in (0, 1] (1: off), got {smooth}")
    average = ProbabilityAverage(smooth) if smooth is not None and smooth < 1 else None
    read_ahead = PREFETCH if io_threads(segmenter.device) else 0
    for index, seconds, image in video.frames(read_ahead):
        name = f"{video.name} frame {index}"
        if average is None:
            result = segmenter.segment(image, unknown_below=unknown_below, name=name)
        else:
            probs = segmenter.segment(image, probs=True, name=name)
            result = average.update(probs, unknown_below)
        yield VideoFrame(index, seconds, image, result)


class ProbabilityAverage:
    """Class probabilities averaged over frames: ``p = weight * new + (1 - weight) * p``.

    The first frame starts the average. A weight of 0.5 halves a frame's say at each later
    frame, so a pixel's label changes only when the new class wins over a few frames: less
    flicker, and a lag of about ``1 / weight - 1`` frames behind moving objects
    (docs/benchmarks.md measures both).

    Args:
        weight: the new frame's weight, in (0, 1).
    """

    def __init__(self, weight: float):
        self.weight = weight
        self.probs: np.ndarray | None = None  # (C, H, W) float32

    def update(self, result: Segmentation, unknown_below: float | None = None) -> Segmentation:
        """``result`` averaged in (its probabilities are taken over, in place): labels and
        confidence of the average, pixels under ``unknown_below`` unknown."""
        probs = result.probs  # (C, H, W)
        if self.probs is not None:
            if self.probs.shape != probs.shape:
                raise ConfigError(
                    f"frames changed size from {self.probs.shape[1:]} to {probs.shape[1:]}; "
                    "smoothing needs frames of one size"
                )
            probs *= self.weight
            probs += (1 - self.weight) * self.probs
        self.probs = probs
        confidence = probs.max(axis=0)  # (H, W)
        labels = compact_labels(probs.argmax(axis=0), len(result.class_names))
        if unknown_below is not None:
            labels[confidence < unknown_below] = UNKNOWN
        return dataclasses.replace(
            result, labels=labels, confidence=confidence, probs=probs, unknown_below=unknown_below
        )
