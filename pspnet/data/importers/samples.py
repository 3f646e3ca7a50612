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

Bounded by one image, whatever the file says: :func:`check_sample` refuses, before anything
is decoded or painted, an image over the pixel limit or of another size than annotated,
coordinates more than one image size outside the image, masks larger than their image,
more shapes than the cap and polygons past the vertex and fill-work caps below. Masks stay
compressed until their image is painted, so an import holds one decoded image at a time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from pspnet.data.images import check_pixels, header_size, read_bytes
from pspnet.data.presets import RGB
from pspnet.errors import DatasetError, UnsupportedImageError

# Caps on one image's shapes. Hand-drawn outlines have tens to hundreds of vertices and
# outlines traced from masks a few thousand; images hold up to hundreds of shapes (LVIS,
# SA-1B), each painting at most the image once. A file past these is broken or hostile.
MAX_SHAPE_VERTICES = 10_000
MAX_IMAGE_VERTICES = 100_000
MAX_IMAGE_SHAPES = 10_000
# cv2.fillPoly keeps, on each row, the edges that cross it sorted: its cost grows with the
# square of the edges crossing a row, summed over the rows (0.1 to 0.5 ns each). A tangle of
# 20,000 random vertices on 500 rows is 3e10 (tens of seconds); this cap, 0.1 to 0.5 s.
MAX_FILL_WORK = 1_000_000_000
# Bytes read for an image's size: its header, EXIF and ICC profile included, as a rule.
HEAD_BYTES = 1 << 16


def _pixel(values: np.ndarray) -> np.ndarray:
    """Round to the nearest pixel, halves up (numpy's own rounding sends halves to even)."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int32)


def _margin(height: int, width: int) -> int:
    """How far outside the image a coordinate may lie: one image size."""
    return max(height, width)


def _outside(xy: np.ndarray, height: int, width: int) -> bool:
    """Whether any (x, y) of ``xy`` (..., 2) is more than the margin outside the image."""
    margin = _margin(height, width)
    x, y = xy[..., 0], xy[..., 1]
    return bool(
        (x < -margin).any()
        | (x > width - 1 + margin).any()
        | (y < -margin).any()
        | (y > height - 1 + margin).any()
    )


@dataclass(frozen=True)
class Polygon:
    """A filled polygon; rectangles and boxes are polygons of their four corners.

    Attributes:
        label: class name.
        points: (K, 2) float x, y vertices, K >= 3.
        where: names the shape in errors (``FILE: image 'x.png', <polygon> 3``).
    """

    label: str
    points: np.ndarray
    where: str = ""

    def check(self, height: int, width: int) -> tuple[int, int]:
        """Refuse vertices past the cap or far outside the image; (vertices, fill work)."""
        count = len(self.points)
        if count > MAX_SHAPE_VERTICES:
            raise DatasetError(
                f"{self.where}: a polygon of {count:,} vertices, more than {MAX_SHAPE_VERTICES:,}; "
                "simplify it"
            )
        if _outside(self.points, height, width):
            raise DatasetError(
                f"{self.where}: polygon coordinates lie more than one image size outside the "
                f"{width}x{height} image; fix or delete the shape"
            )
        return count, fill_work(_pixel(self.points), height)

    def paint(self, canvas: np.ndarray, value: int) -> None:
        cv2.fillPoly(canvas, [_pixel(self.points)], int(value))


def fill_work(points: np.ndarray, height: int) -> int:
    """cv2.fillPoly's cost for (K, 2) integer vertices: edges crossing each row, squared, summed."""
    y0, y1 = points[:, 1], np.roll(points[:, 1], -1)
    top = np.clip(np.minimum(y0, y1), 0, height)
    bottom = np.clip(np.maximum(y0, y1) + 1, 0, height)
    starts = np.bincount(top, minlength=height + 1) - np.bincount(bottom, minlength=height + 1)
    crossing = np.cumsum(starts[:height], dtype=np.int64)  # (H,) edges on each row
    return int((crossing * crossing).sum())


@dataclass(frozen=True)
class Ellipse:
    """A filled ellipse (a circle when the axes are equal).

    Attributes:
        label: class name.
        center: x, y.
        axes: half-width and half-height before rotation.
        angle: rotation in degrees, clockwise on screen (y points down), as CVAT and cv2 turn.
        where: names the shape in errors.
    """

    label: str
    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0
    where: str = ""

    def check(self, height: int, width: int) -> tuple[int, int]:
        """Refuse an ellipse reaching more than one image size outside the image."""
        reach = max(self.axes)
        corners = np.array(self.center) + np.array([[-reach, -reach], [reach, reach]])
        if min(self.axes) < 0 or _outside(corners, height, width):
            raise DatasetError(
                f"{self.where}: an ellipse at {self.center} with axes {self.axes} reaches more "
                f"than one image size outside the {width}x{height} image (or has a negative "
                "axis); fix or delete the shape"
            )
        return 0, 0

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

    The bitmap stays as the file has it (compressed) until its image is painted.

    Attributes:
        label: class name.
        decode: gives the (height, width) bool bitmap, True where the class is; raises
            DatasetError for a corrupt one.
        height: the bitmap's declared height, checked before decoding.
        width: its declared width.
        left: column of the bitmap's first column.
        top: row of the bitmap's first row.
        where: names the shape in errors.
    """

    label: str
    decode: Callable[[], np.ndarray]
    height: int
    width: int
    left: int = 0
    top: int = 0
    where: str = ""

    def check(self, height: int, width: int) -> tuple[int, int]:
        """Refuse a bitmap larger than its image or placed far outside it."""
        if not (0 < self.height <= height and 0 < self.width <= width):
            raise DatasetError(
                f"{self.where}: a mask of {self.width}x{self.height} on a {width}x{height} "
                "image; a mask is at most its image's size, re-export the annotations"
            )
        if _outside(np.array([self.left, self.top]), height, width):
            raise DatasetError(
                f"{self.where}: a mask placed at ({self.left}, {self.top}), more than one "
                f"image size outside the {width}x{height} image; re-export the annotations"
            )
        return 0, 0

    def paint(self, canvas: np.ndarray, value: int) -> None:
        mask = self.decode()
        if mask.shape != (self.height, self.width):
            raise DatasetError(
                f"{self.where}: the mask decodes to {mask.shape[1]}x{mask.shape[0]} but declares "
                f"{self.width}x{self.height}; re-export the annotations"
            )
        height, width = canvas.shape
        x0, y0 = max(self.left, 0), max(self.top, 0)
        x1 = min(self.left + self.width, width)
        y1 = min(self.top + self.height, height)
        if x0 < x1 and y0 < y1:
            window = mask[y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left]
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
        embedded: gives the image's encoded bytes when the annotation embeds them (LabelMe's
            imageData), read again when the image is written.
        split: the split the export puts it in ("train", "val", "test"), None to draw it.
    """

    annotation: Path
    image: Path
    relative: PurePosixPath
    height: int
    width: int
    shapes: list[Shape]
    embedded: Callable[[], bytes] | None = None
    split: str | None = None

    @property
    def where(self) -> str:
        return f"{self.annotation}: image {self.relative.as_posix()!r}"

    def encoded(self) -> bytes:
        """The image file's bytes (or the embedded copy's)."""
        if self.embedded is not None:
            return self.embedded()
        return read_bytes(self.image, "image").tobytes()

    def size(self) -> tuple[int, int]:
        """The image's (height, width) from its header, over the pixel limit refused."""
        if self.embedded is None:
            try:
                with open(self.image, "rb") as file:
                    head = file.read(HEAD_BYTES)
                return header_size(head, self.image, "image")
            except UnsupportedImageError:  # a header past the first bytes: read it all
                pass
            except OSError as err:
                raise DatasetError(f"{self.image}: cannot read image file ({err})") from err
        return header_size(self.encoded(), self.image, "image")


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
        ignored: labels painted as ignore (255) and never classes (LabelMe's ``__ignore__``).
        background: the class the tool fills unannotated pixels with when the classes hold
            it (LabelMe's ``_background_``).
    """

    samples: list[Sample]
    class_names: list[str]
    colours: list[RGB | None]
    source: Path
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    ignored: frozenset[str] = frozenset()
    background: str | None = None


def check_sample(sample: Sample) -> None:
    """Refuse, before anything is decoded or painted, what would cost more than one image.

    The declared size must be within the pixel limit and be the image's own (read from its
    header); every shape must lie near the image; the polygons must stay under the caps.
    """
    height, width = sample.height, sample.width
    check_pixels(height, width, sample.where)
    actual = sample.size()
    if actual != (height, width):
        swapped = actual[::-1] == (height, width)
        hint = "; did the tool turn it by its EXIF orientation? save it upright" if swapped else ""
        raise DatasetError(
            f"{sample.annotation}: annotates {sample.image} as {width}x{height} (WxH) but the "
            f"image is {actual[1]}x{actual[0]}{hint}"
        )
    if len(sample.shapes) > MAX_IMAGE_SHAPES:
        raise DatasetError(
            f"{sample.where}: {len(sample.shapes):,} shapes, more than {MAX_IMAGE_SHAPES:,}; "
            "merge them"
        )
    vertices = work = 0
    for shape in sample.shapes:
        count, cost = shape.check(height, width)
        vertices, work = vertices + count, work + cost
        if vertices > MAX_IMAGE_VERTICES:
            raise DatasetError(
                f"{shape.where}: the image's polygons pass {MAX_IMAGE_VERTICES:,} vertices "
                "together; simplify them"
            )
        if work > MAX_FILL_WORK:
            raise DatasetError(
                f"{shape.where}: the image's polygons cross themselves too often to fill "
                f"(fill work {work:,} over {MAX_FILL_WORK:,}); redraw the tangled polygon"
            )


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
    return Polygon(label, flat.reshape(-1, 2), where)


def rectangle(label: str, corners: tuple[float, float, float, float], where: str) -> Polygon:
    """The polygon of an axis-aligned rectangle given by two opposite corners (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = corners
    return polygon(label, [x0, y0, x1, y0, x1, y1, x0, y1], where)


def load_json(path: Path) -> object:
    """A JSON file's contents; invalid JSON is an error naming the file and line."""
    try:
        with open(path, encoding="utf-8-sig") as file:  # a byte-order mark is no error
            return json.load(file)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}); "
            "re-export the annotations"
        ) from err
    except (OSError, ValueError, RecursionError) as err:
        # unreadable, not UTF-8, a number of 5,000 digits, arrays nested 100,000 deep
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
    """The first ``folder / name`` that is a file; an error naming every place looked.

    A file that resolves outside its folder (a symbolic link out of it) is refused.
    """
    for folder in folders:
        if (folder / name).is_file():
            return inside(folder / name, [folder], annotation)
    looked = ", ".join(str(folder / name) for folder in folders)
    raise DatasetError(
        f"{annotation}: image {str(name)!r} not found (looked for {looked}); "
        "point --images at the folder that holds it"
    )


def inside(path: Path, roots: list[Path], annotation: Path) -> Path:
    """``path`` if it resolves (symbolic links followed) below one of ``roots``, else an error.

    The import reads and copies the image into the dataset, so an export may only name files
    below its own folder or ``--images``.
    """
    resolved = path.resolve()
    if any(resolved.is_relative_to(root.resolve()) for root in roots):
        return path
    allowed = " or ".join(str(root) for root in roots)
    raise DatasetError(
        f"{annotation}: image {path} resolves to {resolved}, outside {allowed}; keep images "
        "below the export's folder, or point --images at the folder that holds them"
    )


def source_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an error naming it and the file expected."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file; give the {what}")
    if not path.is_file():
        raise DatasetError(f"{path}: is not a file; give the {what}")
    return path
