"""Predictions as pre-annotations: files CVAT, COCO tools, LabelMe and Label Studio import as
editable shapes, named by the checkpoint's classes.

Each connected region of a class (:func:`~pspnet.annotations.regions.find_regions`) becomes one
shape: an exact mask in the tool's own encoding (shapes="masks") or an outline simplified by
``tolerance`` pixels (shapes="polygons"). Pixels labelled 255 (unknown or ignored) belong to
no shape, so the annotator sees where the model was unsure. Images are written least
confident first (mean of each pixel's largest class probability).

- :mod:`.cvat`: ``annotations.xml``, CVAT for images 1.1;
- :mod:`.coco`: ``instances.json``, COCO instances with scores;
- :mod:`.labelme`: ``labelme/NAME.json`` per image and ``labelme_config.yaml``;
- :mod:`.labelstudio`: ``labelstudio.json`` tasks with predictions and
  ``labelstudio_config.xml``.

Holes: masks are exact, holes included. An outline has no holes (none of the four tools'
polygons does), so what lies in a region's hole is drawn on top of it: outlines come by
depth (a region inside another's hole after it; CVAT's ``z_order`` is that depth) and the
importers paint later shapes over earlier ones. Unlabelled (255) pixels inside a hole are
covered by the region around them in the polygon forms.

A writer keeps only the encoded shapes, never the label maps, so large collections fit. Under
torchrun every rank writes its part (``annotation_writer(..., rank=RANK)``; ``finish()``
writes :func:`part_path`), then rank 0 merges them with :func:`merge_parts` once all are
written (after a barrier)::

    writer = annotation_writer("cvat", out, names, palette, rank=rank)
    for prediction in shard:
        writer.add(prediction)
    writer.finish()
    barrier()
    if rank == 0:
        merge_parts("cvat", out, [part_path("cvat", out, r) for r in range(world_size)])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Literal, Protocol

import numpy as np

from pspnet.annotations import coco, cvat, labelme, labelstudio
from pspnet.annotations.entries import (
    RGB,
    Entry,
    Shape,
    Shapes,
    entry_from_json,
    entry_to_json,
    least_confident_first,
    write_json,
)
from pspnet.annotations.regions import UNLABELLED, Region, find_regions, polygon
from pspnet.errors import OutputError

__all__ = [
    "AnnotationWriter",
    "Format",
    "Prediction",
    "Shapes",
    "annotation_writer",
    "merge_parts",
    "part_path",
]

Format = Literal["cvat", "coco", "labelme", "labelstudio"]

FORMATS: dict[str, ModuleType] = {
    "cvat": cvat,
    "coco": coco,
    "labelme": labelme,
    "labelstudio": labelstudio,
}
SHAPES = ("masks", "polygons")


@dataclass(frozen=True)
class Prediction:
    """One segmented image.

    Attributes:
        image: the input image as predict read it.
        name: its name in the export: its path below the inputs' common folder, with its
            suffix, "/"-separated ("a/dup.png").
        labels: (H, W) uint8 class indices; 255: leave unannotated (unknown or ignore).
        confidence: (H, W) float32, each pixel's largest class probability.
    """

    image: Path
    name: str
    labels: np.ndarray
    confidence: np.ndarray


class AnnotationWriter(Protocol):
    def add(self, prediction: Prediction) -> None:
        """Encode one image's regions; keeps only the encoded shapes, never the arrays."""

    def finish(self) -> list[Path]:
        """Write the file(s) atomically, least confident image first; returns their paths."""


def annotation_writer(
    format: Format,
    out_dir: Path,
    class_names: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
    *,
    shapes: Shapes = "masks",
    tolerance: float = 1.0,
    images_dir: Path | None = None,
    rank: int | None = None,
) -> AnnotationWriter:
    """A writer of pre-annotations in ``format`` under ``out_dir``.

    Args:
        format: "cvat", "coco", "labelme" or "labelstudio".
        out_dir: the folder the files go in (created when they are written).
        class_names: the checkpoint's classes by index.
        palette: one (r, g, b) per class.
        shapes: "masks" (exact) or "polygons" (outlines, simplified by ``tolerance``).
        tolerance: polygons only: the largest distance in pixels between an outline and its
            simplification (``cv2.approxPolyDP``); 0 keeps every turn of the border.
        images_dir: where the tool finds the images by name: LabelMe's ``imagePath`` leads
            there and Label Studio's ``data.image`` is ``images_dir/NAME`` (a URL path such as
            ``/data/local-files/?d=photos`` works); default: each image's own path.
        rank: under torchrun, this process's rank: ``finish()`` writes the part
            :func:`part_path` for :func:`merge_parts`.

    Raises:
        ValueError: an unknown format or shapes, a negative tolerance, a palette that does not
            match the classes, or more than 255 classes.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}; choose one of {list(FORMATS)}")
    if shapes not in SHAPES:
        raise ValueError(f"unknown shapes {shapes!r}; choose one of {list(SHAPES)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if len(palette) != len(class_names):
        raise ValueError(f"{len(class_names)} classes but {len(palette)} palette colours")
    if len(class_names) > UNLABELLED:
        raise ValueError(f"{len(class_names)} classes; 255 marks unlabelled pixels, so 255 at most")
    return _Writer(
        format,
        Path(out_dir),
        tuple(class_names),
        tuple(tuple(int(c) for c in colour) for colour in palette),
        shapes=shapes,
        tolerance=tolerance,
        images_dir=images_dir,
        rank=rank,
    )


def part_path(format: Format, out_dir: Path, rank: int) -> Path:
    """The part a rank's writer leaves: ``annotations.rank1.part.json`` for CVAT's rank 1."""
    stem = PurePosixPath(FORMATS[format].FILE).stem
    return Path(out_dir) / f"{stem}.rank{rank}.part.json"


def merge_parts(
    format: Format, out_dir: Path, parts: Sequence[Path], *, remove: bool = True
) -> list[Path]:
    """Write the parts of a torchrun job as one export, least confident image first overall.

    Args:
        format: the format the parts were written for.
        out_dir: the folder the export goes in.
        parts: every rank's part (:func:`part_path`).
        remove: delete the parts once the export is written.

    Returns:
        the files written, as ``finish()`` returns them.

    Raises:
        OutputError: a part missing or unreadable, parts of another format or other classes,
            or one image in two parts.
    """
    if not parts:
        raise ValueError("no parts to merge")
    headers, entries = [], []
    for part in parts:
        header, found = _read_part(Path(part))
        headers.append(header)
        entries += found
    first = headers[0]
    for part, header in zip(parts, headers, strict=True):
        if header["format"] != format or header != first:
            raise OutputError(
                f"{part}: written for {header['format']} {header['shapes']} with classes "
                f"{header['class_names']}, unlike {parts[0]} ({format} {first['shapes']}, "
                f"{first['class_names']}); merge parts of one job only"
            )
    palette = [tuple(colour) for colour in first["palette"]]
    written = _write(format, Path(out_dir), entries, first["class_names"], palette, first["shapes"])
    if remove:
        for part in parts:
            Path(part).unlink()
    return written


class _Writer:
    """:class:`AnnotationWriter` for every format: regions found once, encoded by the format."""

    def __init__(
        self,
        format: Format,
        out_dir: Path,
        class_names: tuple[str, ...],
        palette: tuple[RGB, ...],
        *,
        shapes: Shapes,
        tolerance: float,
        images_dir: Path | None,
        rank: int | None,
    ) -> None:
        self.format, self.out_dir = format, out_dir
        self.class_names, self.palette = class_names, palette
        self.shapes, self.tolerance = shapes, tolerance
        self.images_dir, self.rank = images_dir, rank
        self.entries: list[Entry] = []

    def add(self, prediction: Prediction) -> None:
        labels, confidence = prediction.labels, prediction.confidence
        _check(prediction, len(self.class_names))
        size = labels.shape
        regions = find_regions(labels, confidence, outlines=self.shapes == "polygons")
        if self.images_dir is not None:
            image = (Path(self.images_dir) / prediction.name).as_posix()
        else:
            image = Path(os.path.abspath(prediction.image)).as_posix()
        self.entries.append(
            Entry(
                prediction.name,
                image,
                width=size[1],
                height=size[0],
                score=float(np.mean(confidence, dtype=np.float64)),
                shapes=tuple(self._shape(region, size) for region in regions),
            )
        )

    def _shape(self, region: Region, size: tuple[int, int]) -> Shape:
        height, width = region.mask.shape
        box = (region.left, region.top, width, height)
        if self.shapes == "polygons":
            points = polygon(region, self.tolerance)
            return Shape(region.label, region.score, region.area, box, region.depth, points=points)
        mask = FORMATS[self.format].encode_mask(region, size)
        return Shape(region.label, region.score, region.area, box, region.depth, mask=mask)

    def finish(self) -> list[Path]:
        if self.rank is None:
            return _write(
                self.format,
                self.out_dir,
                self.entries,
                self.class_names,
                self.palette,
                self.shapes,
            )
        path = part_path(self.format, self.out_dir, self.rank)
        write_json(
            path,
            {
                "format": self.format,
                "shapes": self.shapes,
                "class_names": list(self.class_names),
                "palette": [list(colour) for colour in self.palette],
                "entries": [entry_to_json(entry) for entry in self.entries],
            },
        )
        return [path]


def _check(prediction: Prediction, num_classes: int) -> None:
    labels, confidence = prediction.labels, prediction.confidence
    where = f"{prediction.image} ({prediction.name!r})"
    name = PurePosixPath(prediction.name)
    if not prediction.name or "\\" in prediction.name or name.is_absolute() or ".." in name.parts:
        raise ValueError(f"{where}: name must be a '/'-separated path below the inputs' folder")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"{where}: labels must be (H, W) uint8, got {labels.shape} {labels.dtype}")
    if confidence.shape != labels.shape:
        raise ValueError(
            f"{where}: confidence {confidence.shape} differs from labels {labels.shape}"
        )
    known = labels[labels != UNLABELLED]
    if known.size and int(known.max()) >= num_classes:
        raise ValueError(
            f"{where}: class {int(known.max())} in the labels, but only {num_classes} classes"
        )


def _write(
    format: Format,
    out_dir: Path,
    entries: Sequence[Entry],
    class_names: Sequence[str],
    palette: Sequence[RGB],
    shapes: Shapes,
) -> list[Path]:
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise OutputError(f"image {entry.name!r} was added twice; give each image once")
        seen.add(entry.name)
    ordered = least_confident_first(entries)
    return FORMATS[format].write(out_dir, ordered, class_names, palette, shapes)


def _read_part(path: Path) -> tuple[dict, list[Entry]]:
    """(the part's header, its entries); an error naming the part when it is not one."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        entries = [entry_from_json(entry) for entry in data.pop("entries")]
    except FileNotFoundError as err:
        raise OutputError(f"{path}: part missing; did its rank finish?") from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{path}: not a readable annotation part ({err})") from err
    return data, entries
