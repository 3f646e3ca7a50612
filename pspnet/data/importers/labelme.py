"""LabelMe JSON files (one per image) as samples.

LabelMe keeps no class list, so the classes are the painted shapes' labels sorted by name.
Polygons, rectangles (two corners), circles (centre, then a point on the circumference) and
masks (labelme 5: a base64 PNG filling the box of its two ``points``) are painted; lines,
line strips and points have no area and are counted as skipped, as is any unknown kind.

An image is ``imagePath`` relative to its JSON, or found by name under ``images`` (in the
JSON's subfolder first); when the file is missing the copy embedded as ``imageData`` is
used. Its path in the dataset is the JSON's folder below SRC plus the image's file name.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from pspnet.data.importers.samples import (
    Annotations,
    Ellipse,
    Mask,
    Sample,
    Shape,
    load_json,
    polygon,
    rectangle,
)
from pspnet.errors import DatasetError


def read_labelme(source: Path, images: Path | None) -> Annotations:
    """Samples and classes of a folder of LabelMe files (searched recursively) or of one file.

    Args:
        source: a LabelMe JSON file, or a folder below which every ``*.json`` is one.
        images: a folder holding the images by name; default: ``imagePath`` from each JSON.
    """
    if source.is_dir():
        files, base = sorted(source.rglob("*.json")), source
    elif source.is_file():
        files, base = [source], source.parent
    else:
        raise DatasetError(f"{source}: no such file or folder; give LabelMe JSON files")
    if not files:
        raise DatasetError(f"{source}: no LabelMe *.json files in this folder or below it")
    found = Annotations([], [], [], source)
    for file in files:
        found.samples.append(_sample(file, base, images, found))
    labels = sorted({shape.label for sample in found.samples for shape in sample.shapes})
    found.class_names, found.colours = labels, [None] * len(labels)
    return found


def _sample(file: Path, base: Path, images: Path | None, found: Annotations) -> Sample:
    data = load_json(file)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError(
            f"{file}: not a LabelMe file (no 'shapes' list); keep only LabelMe JSON below SRC"
        )
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise DatasetError(f"{file}: needs positive integer imageHeight and imageWidth")
    folder = PurePosixPath(file.parent.relative_to(base).as_posix())
    image, embedded = _image(file, data, folder, images, found)
    shapes = []
    for index, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise DatasetError(f"{file}: shape {index} has no label")
        kind = shape.get("shape_type") or "polygon"  # labelme 3 wrote null for polygons
        if kind in PAINTED:
            shapes.append(PAINTED[kind](shape, f"{file}: shape {index} ({shape['label']!r})"))
        else:
            found.skipped[str(kind)] += 1
    return Sample(file, image, folder / image.name, height, width, shapes, embedded)


def _image(
    file: Path, data: dict, folder: PurePosixPath, images: Path | None, found: Annotations
) -> tuple[Path, bytes | None]:
    """(the image's path, its embedded bytes when the file is missing)."""
    name = str(data.get("imagePath") or "").replace("\\", "/")  # paths saved on Windows
    if not name:
        candidates = []
    elif images is not None:
        base = PurePosixPath(name).name
        candidates = [images / folder / base, images / base]
    else:
        candidates = [file.parent / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, None
    if data.get("imageData"):
        embedded = _base64(data["imageData"], f"{file}: imageData")
        looked = candidates[0] if candidates else "imagePath is empty"
        found.warnings.append(f"{file}: image not found ({looked}); used its imageData")
        if candidates:
            return candidates[0], embedded
        return file.with_suffix(_suffix(embedded, file)), embedded
    looked = ", ".join(map(str, candidates)) or "nowhere: imagePath is empty"
    raise DatasetError(
        f"{file}: image not found (looked for {looked}) and no imageData; "
        "point --images at the folder that holds it"
    )


def _base64(text: object, where: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as err:
        raise DatasetError(f"{where} is not valid base64 ({err})") from err


def _suffix(encoded: bytes, file: Path) -> str:
    """The file suffix of encoded image bytes: ``.png``, ``.jpg`` ..."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            kind = (image.format or "").lower()
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{file}: imageData is not an image ({err})") from err
    return {"jpeg": ".jpg", "tiff": ".tif"}.get(kind, f".{kind}")


def _points(shape: dict, where: str) -> np.ndarray:
    """A shape's ``points`` as (K, 2) float, or an error naming it."""
    try:
        points = np.asarray(shape.get("points"), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: points must be [x, y] pairs ({err})") from err
    if not np.isfinite(points).all():
        raise DatasetError(f"{where}: points hold NaN or infinity")
    return points


def _two_points(shape: dict, where: str) -> np.ndarray:
    points = _points(shape, where)
    if len(points) != 2:
        raise DatasetError(
            f"{where}: a {shape.get('shape_type')} needs 2 points, got {len(points)}"
        )
    return points


def _polygon(shape: dict, where: str) -> Shape:
    return polygon(shape["label"], _points(shape, where), where)


def _rectangle(shape: dict, where: str) -> Shape:
    (x0, y0), (x1, y1) = _two_points(shape, where)
    return rectangle(shape["label"], (x0, y0, x1, y1), where)


def _circle(shape: dict, where: str) -> Shape:
    (cx, cy), (px, py) = _two_points(shape, where)
    radius = math.hypot(px - cx, py - cy)
    return Ellipse(shape["label"], (cx, cy), (radius, radius))


def _mask(shape: dict, where: str) -> Shape:
    """labelme 5's mask: a PNG whose top-left pixel is at the first point, truncated as it does."""
    (x0, y0), _ = _two_points(shape, where)
    encoded = _base64(shape.get("mask") or "", f"{where}: mask")
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            mask = np.asarray(image.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{where}: mask is not a PNG image ({err})") from err
    return Mask(shape["label"], mask, left=int(x0), top=int(y0))


PAINTED = {"polygon": _polygon, "rectangle": _rectangle, "circle": _circle, "mask": _mask}
