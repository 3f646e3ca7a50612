"""From the network's stride logits to labels, confidence and (when asked) probabilities, in
bands of output rows, so memory grows with the image's pixels and never with classes x pixels.

Each output band is built from what it needs: for every scale, the rows of that scale's
probabilities the final resize reads; for those, the rows of each window's upsampled logits
(softmax, mirror averaged, summed over the windows and divided by how many covered a pixel).
The arithmetic is the protocol's (:mod:`pspnet.inference.protocol`) in the same order, with
bilinear resizes computed as ``F.interpolate`` computes them (columns first, then rows, with
its source coordinates), so labels and probabilities equal those of the whole-image buffers to
float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Floats of one (C, rows, W) band buffer: bounds each temporary to 32 MiB.
BAND_ELEMENTS = 1 << 23
# Rows of a block when a whole-width band would be shorter (see band_blocks).
BLOCK_ROWS = 16


@dataclass(frozen=True)
class Taps:
    """Bilinear resize of one axis: output ``i`` = ``(1 - weight[i]) * in[lower[i]] +
    weight[i] * in[upper[i]]``.
    """

    lower: torch.Tensor  # (out,) int64
    upper: torch.Tensor  # (out,) int64
    weight: torch.Tensor  # (out,) float32, the upper input's weight


def bilinear_taps(out_size: int, in_size: int, align_corners: bool, device: torch.device) -> Taps:
    """The taps of ``F.interpolate(mode="bilinear")`` along one axis, in its float32 arithmetic.

    The source coordinate of output ``i`` is ``i * (in - 1) / (out - 1)`` with
    ``align_corners`` and ``(i + 0.5) * in / out - 0.5`` clamped at 0 without; the input below
    it and the next (the last standing in past the end) share it by distance.
    """
    index = torch.arange(out_size, dtype=torch.float32, device=device)
    size = torch.tensor(in_size, dtype=torch.float32, device=device)  # float32 division, too
    if align_corners:
        scale = (size - 1) / (out_size - 1) if out_size > 1 else torch.zeros_like(size)
        source = scale * index
    else:
        scale = size / out_size
        source = (scale * (index + 0.5) - 0.5).clamp(min=0)
    lower = source.floor().long().clamp(max=in_size - 1)
    weight = (source - lower).clamp(0, 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return Taps(lower, upper, weight)


def resize_band(
    x: torch.Tensor,
    rows: Taps,
    width: int,
    align_corners: bool,
    first_row: int,
    columns: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Rows ``rows`` (a slice of an axis's taps) of the bilinear resize of ``x`` (C, k, w) to
    ``width`` columns, or only its columns [``columns``) of them.

    ``x`` holds the input rows from ``first_row`` on, at least those the taps read. Columns
    are resized first, by ``F.interpolate`` itself (the rows kept as they are), then rows, as
    PyTorch's kernel nests them; the rows by one small matrix product (two non-zero weights a
    row), far faster than gathering them.

    Returns:
        (C, len(rows), width or the columns') float32.
    """
    if x.shape[-1] != width:
        x = F.interpolate(
            x[None], (x.shape[1], width), mode="bilinear", align_corners=align_corners
        )[0]  # (C, k, width)
    if columns is not None and columns != (0, width):
        x = x[..., columns[0] : columns[1]].contiguous()
    count = len(rows.weight)
    weights = torch.zeros(count, x.shape[1], device=x.device)  # (rows, k)
    index = torch.arange(count, device=x.device)
    weights.index_put_((index, rows.lower - first_row), 1 - rows.weight, accumulate=True)
    weights.index_put_((index, rows.upper - first_row), rows.weight, accumulate=True)
    return torch.matmul(weights, x)  # (C, rows, width)


def slice_taps(taps: Taps, start: int, stop: int) -> Taps:
    return Taps(taps.lower[start:stop], taps.upper[start:stop], taps.weight[start:stop])


def rows_read(taps: Taps) -> tuple[int, int]:
    """The input rows [first, last + 1) that ``taps`` read."""
    return int(taps.lower.min()), int(taps.upper.max()) + 1


def band_rows(num_classes: int, width: int) -> int:
    """Output rows per band: a (C, rows, W) buffer within ``BAND_ELEMENTS``, at least one row."""
    return max(1, BAND_ELEMENTS // max(1, num_classes * width))


def band_blocks(num_classes: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the blocks a band is built in: the whole width while a band of it
    is at least ``BLOCK_ROWS`` tall, else ``BLOCK_ROWS`` rows in as many columns as the
    buffer allows, so every window is not cut into one-row slices on a wide scene with many
    classes (one row a band at 150 classes and 40,000 columns)."""
    rows = band_rows(num_classes, width)
    if rows >= BLOCK_ROWS:
        return rows, width
    return BLOCK_ROWS, max(1, BAND_ELEMENTS // (num_classes * BLOCK_ROWS))
