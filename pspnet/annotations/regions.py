"""A label map's connected regions: one shape per region, as a mask or as an outline.

A region is a 4-connected component of one class; pixels labelled 255 belong to none, so the
annotator sees where the model left them unlabelled. 4-connectivity, not 8, because then
regions nest cleanly: a region of another class inside a region's hole cannot slip out
through a diagonal gap, so painting the outlines outermost first (by :attr:`Region.depth`)
gives back every region, holes included.

Coordinates are pixels with integer values at pixel centres, as the importers read them
(:mod:`pspnet.data.importers.samples`): an outline runs through the centres of the region's
border pixels, and filling it with its border (``cv2.fillPoly``) paints the region exactly,
holes filled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

UNLABELLED = 255  # predict's ignore / unknown value: no region


@dataclass(frozen=True, eq=False)  # arrays: compared by identity
class Region:
    """One connected region of one class (its arrays live only while an image is added).

    Attributes:
        label: class index.
        left: column of the box's first column.
        top: row of the box's first row.
        mask: (height, width) bool over the region's bounding box, True on the region.
        score: mean confidence over the region's pixels.
        outline: (K, 2) int32 x, y of the outer border's pixel centres, image coordinates;
            None unless outlines were asked for.
        depth: how many other regions enclose it in a hole (0 unless outlines were asked for).
    """

    label: int
    left: int
    top: int
    mask: np.ndarray
    score: float
    outline: np.ndarray | None = None
    depth: int = 0

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def find_regions(
    labels: np.ndarray, confidence: np.ndarray, *, outlines: bool = False
) -> list[Region]:
    """Every 4-connected region of every class, by class, then in raster order of its first pixel.

    Args:
        labels: (H, W) uint8 class indices; 255 is no region.
        confidence: (H, W) each pixel's confidence, averaged per region.
        outlines: trace each region's outer border and count what encloses it; the regions
            come outermost first (by depth), so later outlines are painted on top.
    """
    ids = np.zeros(labels.shape, np.int32)  # (H, W) region number + 1; 0: unlabelled
    boxes: list[tuple[int, int, int, int, int]] = []  # (label, left, top, width, height)
    for label in np.unique(labels).tolist():
        if label == UNLABELLED:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (labels == label).view(np.uint8), connectivity=4, ltype=cv2.CV_32S
        )
        inside = components > 0
        ids[inside] = components[inside] + len(boxes)
        boxes += [(label, *map(int, stat[:4])) for stat in stats[1:count]]
    sums = np.bincount(ids.ravel(), weights=confidence.ravel(), minlength=len(boxes) + 1)
    counts = np.bincount(ids.ravel(), minlength=len(boxes) + 1)
    regions = []
    for number, (label, left, top, width, height) in enumerate(boxes, start=1):
        mask = ids[top : top + height, left : left + width] == number
        score = float(sums[number] / counts[number])
        outline = _outline(mask, left, top) if outlines else None
        regions.append(Region(label, left, top, mask, score, outline))
    if outlines:
        depths = _depths(regions, ids)
        regions = [replace(r, depth=d) for r, d in zip(regions, depths, strict=True)]
        regions.sort(key=lambda region: region.depth)  # stable: raster order within a depth
    return regions


def _outline(mask: np.ndarray, left: int, top: int) -> np.ndarray:
    """(K, 2) int32 x, y of the region's outer border, one point per turn (CHAIN_APPROX_SIMPLE)."""
    # Padded so that a region touching the box's (or the image's) edge is traced whole.
    padded = np.pad(mask.view(np.uint8), 1)
    contours, _ = cv2.findContours(
        padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(left - 1, top - 1)
    )
    # One region is one 8-connected blob, so one outer contour; the longest, to be safe.
    return max(contours, key=len).reshape(-1, 2).astype(np.int32)


def _depths(regions: list[Region], ids: np.ndarray) -> list[int]:
    """For each region, how many regions hold it in one of their holes."""
    depths = [0] * len(regions)
    for region in regions:
        height, width = region.mask.shape
        filled = np.zeros((height, width), np.uint8)
        cv2.fillPoly(filled, [region.outline - (region.left, region.top)], 1)
        holes = filled.astype(bool) & ~region.mask
        if not holes.any():
            continue
        box = ids[region.top : region.top + height, region.left : region.left + width]
        for number in np.unique(box[holes]).tolist():
            if number:  # 0: unlabelled pixels in the hole
                depths[number - 1] += 1
    return depths


def polygon(region: Region, tolerance: float) -> np.ndarray:
    """The region's outline simplified by ``tolerance`` pixels: (K, 2) int32 x, y, K >= 3.

    ``cv2.approxPolyDP`` drops vertices closer than ``tolerance`` to the simplified line. A
    region whose outline has fewer than 3 points (a single pixel, a straight 1-pixel line)
    repeats its points: filled with its border, the degenerate polygon still paints those
    pixels, and every tool and importer asks for at least 3 points.

    Args:
        region: a region found with ``outlines=True``.
        tolerance: the largest distance, in pixels, of a dropped vertex; 0 keeps every turn.
    """
    outline = region.outline
    if outline is None:
        raise ValueError("the region was found without outlines; pass outlines=True")
    if tolerance > 0:
        simple = cv2.approxPolyDP(outline.reshape(-1, 1, 2), tolerance, True).reshape(-1, 2)
        if len(simple) >= 3:
            return simple.astype(np.int32)
    if len(outline) >= 3:
        return outline
    return np.concatenate([outline, outline[::-1], outline])[:3]


def run_lengths(mask: np.ndarray, offset: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths of ``mask`` placed in a larger zero array, read row by row, background first.

    The first run counts background (0 when the first pixel is set); runs then alternate and the
    last one is never empty. CVAT reads its box this way, COCO the image's transpose (column by
    column) and Label Studio the whole image: one routine for the three, working on the mask's
    box only, never on an image-sized array.

    Args:
        mask: (h, w) bool.
        offset: (row, column) of the mask's first pixel in the larger array.
        size: (rows, columns) of the larger array.

    Returns:
        (R,) int64 run lengths summing to rows * columns.
    """
    rows, columns = size
    row0, column0 = offset
    height, width = mask.shape
    steps = np.diff(np.pad(mask.view(np.int8), ((0, 0), (1, 1))), axis=1)  # (h, w + 1)
    start_rows, start_columns = np.nonzero(steps == 1)  # row-major, so starts and ends pair up
    end_rows, end_columns = np.nonzero(steps == -1)
    starts = (row0 + start_rows) * columns + column0 + start_columns
    ends = (row0 + end_rows) * columns + column0 + end_columns
    joined = np.flatnonzero(ends[:-1] == starts[1:])  # a run that goes on on the next row
    starts, ends = np.delete(starts, joined + 1), np.delete(ends, joined)
    edges = np.empty(2 * len(starts) + 2, np.int64)
    edges[0], edges[-1] = 0, rows * columns
    edges[1:-1:2], edges[2:-1:2] = starts, ends
    lengths = np.diff(edges)
    return lengths[:-1] if lengths[-1] == 0 else lengths
