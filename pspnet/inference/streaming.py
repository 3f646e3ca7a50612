"""The one inference routine over a scene read window by window, finished rows handed on.

:func:`~pspnet.inference.protocol.segment_tensor` holds the whole image; a satellite scene of
40,000 x 40,000 pixels does not fit. :func:`stream_segments` runs the same sliding-window
protocol (one scale, the scene's own resolution) over windows it asks for one at a time, and
hands on a band of output rows as soon as no later window covers them: the windows of the
current row of windows and of the rows still overlapping it are all it holds. It assembles
those rows with the routine's own code (:func:`pspnet.inference.protocol._scale_rows`), so its
labels equal :func:`~pspnet.inference.protocol.segment_tensor`'s on a scene that fits in
memory (tested). A window that holds no valid pixel (nodata borders) is not run: every pixel it
covers is invalid, so no valid pixel's average changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from pspnet.config import InferenceConfig
from pspnet.inference.bands import band_blocks
from pspnet.inference.memory import release_free_heap
from pspnet.inference.protocol import (
    Network,
    Progress,
    _cover,
    _scale_rows,
    _scale_views,
    _window_grid,
    logits_of,
)
from pspnet.inference.result import UNKNOWN

# read(top, left, height, width) of the scene -> (normalised (N, h, w) image, valid (h, w)
# bool mask or None when every pixel is valid); the window lies inside the scene.
ReadWindow = Callable[[int, int, int, int], tuple[torch.Tensor, torch.Tensor | None]]
View = tuple[int, int, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class Band:
    """Finished output rows.

    Attributes:
        first: the scene row of the band's first row.
        labels: (rows, W) int64 class indices, ``UNKNOWN`` under ``unknown_below``.
        confidence: (rows, W) float32, each pixel's largest class probability.
    """

    first: int
    labels: torch.Tensor
    confidence: torch.Tensor


def check_streamable(config: InferenceConfig) -> None:
    """Refuse settings the streamed routine does not run: it slides windows over the scene at
    its own resolution, one scale.

    Raises:
        ValueError: whole mode, several scales, or a resize (base_size, fit_within).
    """
    if config.mode != "slide":
        raise ValueError("a streamed scene is segmented by sliding windows (mode slide)")
    if tuple(config.scales) != (1.0,) or config.base_size is not None or config.fit_within:
        raise ValueError(
            "a streamed scene is segmented at its own resolution: one scale (1.0), no "
            "base_size or fit_within"
        )


def stream_segments(
    network: Network,
    read: ReadWindow,
    size: tuple[int, int],
    config: InferenceConfig,
    *,
    rows: tuple[int, int] | None = None,
    unknown_below: float | None = None,
    progress: Progress | None = None,
) -> Iterator[Band]:
    """Labels and confidence of a ``size`` (H, W) scene, band by band, top to bottom.

    Args:
        network: the model to run.
        read: reads a window of the scene (see :data:`ReadWindow`).
        size: the scene's (height, width).
        config: crop, stride and flip (see :func:`check_streamable`).
        rows: the scene rows [first, last) to give (a torchrun rank's strip); all when None.
            Windows overlapping the strip's edges are run too, so the strip equals the same
            rows of the whole scene.
        unknown_below: pixels whose confidence is under this get the label ``UNKNOWN``.
        progress: ``progress(windows_done, windows_total)`` after each forward pass.
    """
    check_streamable(config)
    height, width = size
    crop = config.crop_size
    padded = (max(height, crop[0]), max(width, crop[1]))
    top, left = (padded[0] - height) // 2, (padded[1] - width) // 2
    row_starts, column_starts = _window_grid(size, config)
    cover = _cover(padded, crop, row_starts, column_starts, network.device)
    first, last = rows or (0, height)
    low, high = first + top, last + top  # in the padded scene
    needed = [y for y in row_starts if y < high and y + crop[0] > low]
    total = len(needed) * len(column_starts)
    kept: deque[tuple[int, list[View]]] = deque()
    done = low
    for index, y in enumerate(needed):
        views = _row_views(
            network,
            read,
            y,
            column_starts=column_starts,
            padding=(top, left),
            size=size,
            config=config,
        )
        kept.append((y, views))
        if progress is not None:
            progress((index + 1) * len(column_starts), total)
        finished = needed[index + 1] if index + 1 < len(needed) else high
        finished = min(finished, high)
        if finished > done:
            windows = [view for _, row in kept for view in row]
            bands = _bands(network, windows, (done - top, finished - top), size, cover, config)
            for band in bands:
                if unknown_below is not None:
                    band.labels[band.confidence < unknown_below] = UNKNOWN
                yield band
            done = finished
        while kept and kept[0][0] + crop[0] <= done:
            kept.popleft()  # no unfinished row lies in these windows any more
        release_free_heap()  # what this row's temporaries freed: memory stays flat


def _row_views(
    network: Network,
    read: ReadWindow,
    y: int,
    *,
    column_starts: list[int],
    padding: tuple[int, int],
    size: tuple[int, int],
    config: InferenceConfig,
) -> list[View]:
    """The logits of one row of windows (those holding a valid pixel), ``window_batch`` at once.

    Windows are read as they are run, ``window_batch`` at a time: a row of a 40,000-pixel-wide
    scene holds 127 windows of 473 x 473, 340 MB as float32 RGB, never held at once.
    """
    views: list[View] = []
    chunk: list[tuple[int, torch.Tensor]] = []
    for index, x in enumerate(column_starts):
        window = _read_padded(read, y, x, padding, size, config.crop_size)
        if window is not None:
            chunk.append((x, window))
        if chunk and (len(chunk) == config.window_batch or index == len(column_starts) - 1):
            crops = torch.stack([image for _, image in chunk]).to(network.device)  # (n, N, h, w)
            logits, mirrored = logits_of(network, crops, config.flip)
            views += [
                (y, left, logits[i], None if mirrored is None else mirrored[i])
                for i, (left, _) in enumerate(chunk)
            ]
            chunk = []
    return views


def _read_padded(read, y, x, padding, size, crop) -> torch.Tensor | None:
    """The window at padded (y, x) as the in-memory routine sees it: the scene's pixels, 0
    (the normalised mean) where it reaches past the scene; None when no pixel is valid."""
    top, left = padding
    row0, col0 = max(0, y - top), max(0, x - left)
    row1, col1 = min(size[0], y - top + crop[0]), min(size[1], x - left + crop[1])
    image, valid = read(row0, col0, row1 - row0, col1 - col0)
    if valid is not None and not bool(valid.any()):
        return None
    if image.shape[-2:] == tuple(crop):
        return image
    window = image.new_zeros((image.shape[0], *crop))
    window[:, row0 + top - y : row1 + top - y, col0 + left - x : col1 + left - x] = image
    return window


def _bands(network, windows, span, size, cover, config) -> Iterator[Band]:
    """Rows ``span`` = [first, last) of the scene from the windows covering them, in bands
    built block by block (:func:`~pspnet.inference.bands.band_blocks`), each block's
    (C, rows, columns) buffer bounded."""
    (first, last), (height, width) = span, size
    step, columns = band_blocks(network.num_classes, cover[1].numel())
    padded = (cover[0].numel(), cover[1].numel())
    padding = ((padded[0] - height) // 2, (padded[1] - width) // 2)
    views = None
    if windows:
        views = _scale_views(size, padding, config.crop_size, windows, cover, network)
    for start in range(first, last, step):
        stop = min(last, start + step)
        if views is None:  # every window here was nodata: so is every pixel
            labels = torch.full((stop - start, width), UNKNOWN, dtype=torch.int64)
            yield Band(start, labels, torch.zeros(stop - start, width))
            continue
        labels = torch.empty((stop - start, width), dtype=torch.int64)
        confidence = torch.empty((stop - start, width))
        for begin in range(0, width, columns):
            end = min(width, begin + columns)
            with torch.no_grad():
                probs = _scale_rows(views, start, stop, network, (begin, end))
            confidence[:, begin:end], labels[:, begin:end] = probs.max(dim=0)
        yield Band(start, labels, confidence)
