"""LabelMe JSON files (one per image) as samples.

LabelMe keeps no class list, so the classes are the painted shapes' labels sorted by name
(or a names file's, ``--classes``). Polygons, rectangles (two corners), circles (centre, then a
point on the circumference) and masks (labelme 5: a base64 PNG filling the box of its two
``points``) are painted; lines, line strips and points have no area and are counted as
skipped, as is any unknown kind. A shape without a label is skipped with a warning.

LabelMe's semantic-segmentation convention (``examples/semantic_segmentation``, whose
``labelme2voc.py`` writes the labels): shapes labelled ``__ignore__`` paint 255 and are no
class; its ``labels.txt`` (``__ignore__``, ``_background_``, then the classes) is a names file
as it is; ``_background_``, when a class, fills the pixels no shape covers (class 0 there).

An image is ``imagePath`` relative to its JSON, or found by name under ``images`` (in the
JSON's subfolder first); when the file is missing the copy embedded as ``imageData`` is
used. An ``imagePath`` may lead anywhere (``/etc/x``, ``../../x``, a symbolic link), so the
image must resolve below SRC's folder or ``images``. Its path in the dataset is the JSON's
folder below SRC plus the image's file name.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pspnet.data.importers.samples import (
    Annotations,
    Ellipse,
    Mask,
    Sample,
    Shape,
    inside,
    load_json,
    polygon,
    rectangle,
)
from pspnet.errors import DatasetError

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"


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
    found = Annotations(
        [], [], [], source, ignored=frozenset({IGNORE_LABEL}), background=BACKGROUND_LABEL
    )
    roots = [base] if images is None else [base, images]
    for file in files:
        found.samples.append(_sample(file, base, images, roots, found))
    labels = {shape.label for sample in found.samples for shape in sample.shapes}
    # _background_ first: class 0, as labelme2voc.py numbers it.
    names = sorted(labels - {IGNORE_LABEL}, key=lambda name: (name != BACKGROUND_LABEL, name))
    found.class_names, found.colours = names, [None] * len(names)
    return found


def _sample(
    file: Path, base: Path, images: Path | None, roots: list[Path], found: Annotations
) -> Sample:
    data = load_json(file)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError(
            f"{file}: not a LabelMe file (no 'shapes' list); keep only LabelMe JSON below SRC"
        )
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise DatasetError(f"{file}: needs positive integer imageHeight and imageWidth")
    folder = PurePosixPath(file.parent.relative_to(base).as_posix())
    image, embedded = _image(file, data, folder, images, roots, found)
    shapes = []
    for index, shape in enumerate(data["shapes"]):
        label = shape.get("label") if isinstance(shape, dict) else None
        where = f"{file}: image {image.name!r}, shape {index}"
        if not isinstance(label, str) or not label:
            warnings.warn(f"{where}: no label; skipped", stacklevel=2)
            continue
        kind = str(shape.get("shape_type") or "polygon")  # labelme 3 wrote null for polygons
        if kind in PAINTED:
            shapes.append(PAINTED[kind](shape, f"{where} ({label!r})"))
        else:
            found.skipped[kind] += 1
    return Sample(file, image, folder / image.name, height, width, shapes, embedded)


def _image(
    file: Path,
    data: dict,
    folder: PurePosixPath,
    images: Path | None,
    roots: list[Path],
    found: Annotations,
) -> tuple[Path, partial[bytes] | None]:
    """(the image's path, a reader of its embedded bytes when the file is missing)."""
    name = str(data.get("imagePath") or "").replace("\\", "/")  # paths saved on Windows
    candidates = []
    if name and images is not None:
        base = PurePosixPath(name).name
        candidates = [images / folder / base, images / base]
    if name:
        candidates.append(file.parent / name)
    for candidate in candidates:
        if candidate.is_file():
            return inside(candidate, roots, file), None
    if data.get("imageData"):
        embedded = partial(_embedded, file)
        looked = candidates[0] if candidates else "imagePath is empty"
        found.warnings.append(f"{file}: image not found ({looked}); used its imageData")
        if candidates:
            return candidates[0], embedded
        return file.with_suffix(_suffix(embedded(), file)), embedded
    looked = ", ".join(map(str, candidates)) or "nowhere: imagePath is empty"
    raise DatasetError(
        f"{file}: image not found (looked for {looked}) and no imageData; "
        "point --images at the folder that holds it"
    )


def _embedded(file: Path) -> bytes:
    """The image embedded in a LabelMe file, read again whenever needed (never all at once)."""
    data = load_json(file)
    return _base64(data.get("imageData") if isinstance(data, dict) else None, f"{file}: imageData")


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
    return Ellipse(shape["label"], (cx, cy), (radius, radius), where=where)


def _mask(shape: dict, where: str) -> Shape:
    """labelme 5's mask: a PNG whose top-left pixel is at the first point, truncated as it does;
    its size read from its header now, its pixels when the image is painted."""
    (x0, y0), _ = _two_points(shape, where)
    encoded = _base64(shape.get("mask") or "", f"{where}: mask")
    width, height = _open_mask(encoded, where, lambda image: image.size)
    decode = partial(_open_mask, encoded, where, lambda image: np.asarray(image.convert("L")) > 0)
    return Mask(shape["label"], decode, height, width, left=int(x0), top=int(y0), where=where)


def _open_mask(encoded: bytes, where: str, read: Callable[[Image.Image], Any]) -> Any:
    """``read(image)`` on the mask PNG; a broken or oversized PNG is one DatasetError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(encoded)) as image:
                return read(image)
    except Image.DecompressionBombError as err:
        raise DatasetError(f"{where}: mask declares too many pixels ({err})") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise DatasetError(f"{where}: mask is not a PNG image ({err})") from err


PAINTED = {"polygon": _polygon, "rectangle": _rectangle, "circle": _circle, "mask": _mask}
