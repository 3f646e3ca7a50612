"""What every reader hands the writer: images with their shapes, in painting order.

A reader turns an export into :class:`Annotations`: one :class:`Sample` per image (where the
image is, the size the tool annotated, the shapes from bottom to top) and the class list in
the source's own order. Shapes are only the painted kinds, each able to paint itself.

Pixel coverage, the same for every format: coordinates are pixels with integer values at
pixel centres; polygon vertices, ellipse centres and axes are rounded to the nearest pixel
(halves up) and every pixel inside or on the outline is painted, as cv2.fillPoly and
cv2.ellipse fill. So a rectangle from x=10 to x=20 paints columns 10..20, as LabelMe's own
``labelme_json_to_dataset`` (PIL's polygon fill with outline) does; COCO's annToMask
(pycocotools) treats coordinates as pixel corners and paints columns 10..19.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from pspnet.data.presets import RGB
from pspnet.errors import DatasetError


def _pixel(values: np.ndarray) -> np.ndarray:
    """Round to the nearest pixel, halves up (numpy's own rounding sends halves to even)."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int32)


@dataclass(frozen=True)
class Polygon:
    """A filled polygon; rectangles and boxes are polygons of their four corners.

    Attributes:
        label: class name.
        points: (K, 2) float x, y vertices, K >= 3.
    """

    label: str
    points: np.ndarray

    def paint(self, canvas: np.ndarray, value: int) -> None:
        cv2.fillPoly(canvas, [_pixel(self.points)], int(value))


@dataclass(frozen=True)
class Ellipse:
    """A filled ellipse (a circle when the axes are equal).

    Attributes:
        label: class name.
        center: x, y.
        axes: half-width and half-height before rotation.
        angle: rotation in degrees, clockwise on screen (y points down), as CVAT and cv2 turn.
    """

    label: str
    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0

    def paint(self, canvas: np.ndarray, value: int) -> None:
        center, axes = _pixel(self.center), _pixel(self.axes)
        cv2.ellipse(
            canvas,
            (int(center[0]), int(center[1])),
            (int(axes[0]), int(axes[1])),
            self.angle,
            0,
            360,
            int(value),
            thickness=-1,
        )


@dataclass(frozen=True)
class Mask:
    """A bitmap placed with its top-left pixel at (left, top); parts off the image are cut.

    Attributes:
        label: class name.
        mask: (h, w) bool, True where the class is.
        left: column of the bitmap's first column.
        top: row of the bitmap's first row.
    """

    label: str
    mask: np.ndarray
    left: int = 0
    top: int = 0

    def paint(self, canvas: np.ndarray, value: int) -> None:
        height, width = canvas.shape
        x0, y0 = max(self.left, 0), max(self.top, 0)
        x1 = min(self.left + self.mask.shape[1], width)
        y1 = min(self.top + self.mask.shape[0], height)
        if x0 < x1 and y0 < y1:
            window = self.mask[y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left]
            canvas[y0:y1, x0:x1][window] = value


Shape = Polygon | Ellipse | Mask


@dataclass
class Sample:
    """One annotated image.

    Attributes:
        annotation: the file that annotates it, named in errors.
        image: where the image file is (or was looked for, when ``image_data`` holds it).
        relative: its path below the output's ``images/{split}/`` (subfolders kept).
        height: the height the tool annotated.
        width: the width the tool annotated.
        shapes: painted shapes, bottom first: later shapes cover earlier ones.
        image_data: the image's encoded bytes when the annotation embeds them (LabelMe).
    """

    annotation: Path
    image: Path
    relative: PurePosixPath
    height: int
    width: int
    shapes: list[Shape]
    image_data: bytes | None = None


@dataclass
class Annotations:
    """What a reader found in an export.

    Attributes:
        samples: one per image, in the source's order.
        class_names: the source's classes in its own order.
        colours: one per class, None where the source gives none.
        source: the file that declares the classes, named in errors.
        skipped: shapes without an area (lines, points ...), counted by kind.
        warnings: things the import worked around, one line each.
    """

    samples: list[Sample]
    class_names: list[str]
    colours: list[RGB | None]
    source: Path
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def polygon(label: str, coordinates: object, where: str) -> Polygon:
    """A polygon from ``[x1, y1, x2, y2, ...]`` or ``[[x1, y1], ...]``, checked.

    Args:
        label: class name.
        coordinates: the vertices as the source lists them.
        where: names the shape in errors (``FILE: annotation 7``).
    """
    try:
        flat = np.asarray(coordinates, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: polygon coordinates are not numbers ({err})") from err
    if flat.size % 2:
        raise DatasetError(f"{where}: a polygon needs x, y pairs, got {flat.size} numbers")
    if flat.size < 6:
        raise DatasetError(
            f"{where}: a polygon with {flat.size // 2} points; it needs at least 3 "
            "(delete the shape or redraw it)"
        )
    if not np.isfinite(flat).all():
        raise DatasetError(f"{where}: polygon coordinates hold NaN or infinity")
    return Polygon(label, flat.reshape(-1, 2))


def rectangle(label: str, corners: tuple[float, float, float, float], where: str) -> Polygon:
    """The polygon of an axis-aligned rectangle given by two opposite corners (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = corners
    return polygon(label, [x0, y0, x1, y0, x1, y1, x0, y1], where)


def load_json(path: Path) -> object:
    """A JSON file's contents; invalid JSON is an error naming the file and line."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}); "
            "re-export the annotations"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the annotations ({err})") from err


def relative_name(name: str, annotation: Path) -> PurePosixPath:
    """An image name from an export as a path that stays below the images folder."""
    relative = PurePosixPath(name.replace("\\", "/"))  # exports made on Windows
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise DatasetError(
            f"{annotation}: image name {name!r} is not a path below an images folder; "
            "name images relative to it"
        )
    return relative


def find_image(name: PurePosixPath, folders: list[Path], annotation: Path) -> Path:
    """The first ``folder / name`` that is a file; an error naming every place looked."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(folder / name) for folder in folders)
    raise DatasetError(
        f"{annotation}: image {str(name)!r} not found (looked for {looked}); "
        "point --images at the folder that holds it"
    )


def source_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an error naming it and the file expected."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file; give the {what}")
    if not path.is_file():
        raise DatasetError(f"{path}: is not a file; give the {what}")
    return path
