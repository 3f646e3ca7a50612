"""CVAT for images 1.1 XML (``annotations.xml``) as samples.

Classes are the ``<label>``s of the task's (or project's, or job's) ``<meta>`` in file order,
coloured by their ``<color>#rrggbb</color>``. Each ``<image>``'s polygons, boxes, ellipses and
masks are painted by ``z_order`` (a stable sort, so equal z keeps file order), later on
top, as CVAT draws them; polylines, points, skeletons, cuboids and tags have no area here
and are counted as skipped. A shape with an empty ``label`` is skipped with a warning.

A project's export gives each ``<image>`` a ``subset`` attribute and keeps its images under
``images/<subset>/`` (CVAT's ``_export_project``), so the same file name may recur in
every subset: the image is looked for in its subset's folder first, and the subsets Train,
Validation and Test are the dataset's train, val and test splits; images of other subsets
(CVAT's ``default``) are split by the seed.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import numpy as np

from pspnet.data.importers.samples import (
    Annotations,
    Ellipse,
    Mask,
    Sample,
    Shape,
    find_image,
    polygon,
    relative_name,
    source_file,
)
from pspnet.data.presets import RGB
from pspnet.errors import DatasetError

# CVAT's subset names (its UI offers Train, Validation and Test) -> our splits.
SUBSET_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def read_cvat(source: Path, images: Path | None) -> Annotations:
    """Samples and classes of a CVAT for images 1.1 export.

    Args:
        source: ``annotations.xml``, or the folder holding it.
        images: the folder holding the images by ``name``; default: the XML's folder, then
            its ``images/`` subfolder.
    """
    path = source_file(source / "annotations.xml" if source.is_dir() else source, "CVAT XML")
    root = _parse(path)
    if root.find("track") is not None:
        raise DatasetError(
            f"{path}: holds <track>s, the CVAT for video format; export as CVAT for images 1.1"
        )
    labels = root.findall("meta/*/labels/label")
    if not labels:
        raise DatasetError(f"{path}: no <labels> in <meta>; export as CVAT for images 1.1")
    names = [label.findtext("name", "") for label in labels]
    colours = [_colour(label.findtext("color", "")) for label in labels]
    found = Annotations([], names, colours, path)
    folders = [images] if images is not None else [path.parent, path.parent / "images"]
    for element in root.findall("image"):
        found.samples.append(_sample(element, path, folders, found))
    if not found.samples:
        raise DatasetError(f"{path}: annotates no <image>")
    subsets = {element.get("subset") or "" for element in root.findall("image")}
    others = sorted(s for s in subsets if s and s.lower() not in SUBSET_SPLITS)
    if others:
        found.warnings.append(
            f"{path}: subsets {', '.join(map(repr, others))} are none of Train, Validation, "
            "Test; their images are split by the seed"
        )
    return found


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        reason = str(err).split(":")[0]
        raise DatasetError(
            f"{path}:{line}: invalid XML ({reason}, column {column}); re-export the annotations"
        ) from err
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the annotations ({err})") from err


def _colour(text: str) -> RGB | None:
    """``#rrggbb`` as (r, g, b); None for anything else (the class gets a VOC colour)."""
    text = text.strip()
    if len(text) != 7 or not text.startswith("#"):
        return None
    try:
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    except ValueError:
        return None


def _sample(element: ET.Element, path: Path, folders: list[Path], found: Annotations) -> Sample:
    name = element.get("name", "")
    subset = element.get("subset")
    where = f"{path}: image {name!r}" + (f" (subset {subset!r})" if subset else "")
    width, height = _int(element, "width", where), _int(element, "height", where)
    relative = relative_name(name, path)
    known = set(found.class_names)
    painted: list[tuple[int, Shape]] = []
    for index, child in enumerate(element):
        at = f"{where}, <{child.tag}> {index}"
        if child.tag not in PAINTED:
            found.skipped[child.tag] += 1
            continue
        label = child.get("label", "")
        if not label:
            warnings.warn(f"{at}: no label; skipped", stacklevel=2)
            continue
        if label not in known:
            raise DatasetError(f"{at}: label {label!r} is not among the <labels> in <meta>")
        painted.append((_int(child, "z_order", at, default=0), PAINTED[child.tag](child, at)))
    painted.sort(key=lambda item: item[0])  # stable: equal z_order keeps file order
    image = find_image(relative, _subset_folders(folders, subset, where), path)
    split = SUBSET_SPLITS.get((subset or "").lower())
    shapes = [shape for _, shape in painted]
    return Sample(path, image, relative, height, width, shapes, split=split)


def _subset_folders(folders: list[Path], subset: str | None, where: str) -> list[Path]:
    """Where an image is looked for: a project's export keeps it in ``images/<subset>/``."""
    if not subset:
        return folders
    if subset in (".", "..") or "/" in subset or "\\" in subset:
        raise DatasetError(f"{where}: subset {subset!r} is not a folder name; re-export it")
    return [folder / subset for folder in folders] + folders


def _number(element: ET.Element, key: str, where: str, default: float | None = None) -> float:
    text = element.get(key)
    if text is None and default is not None:
        return default
    try:
        value = float(text or "")
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{where}: attribute {key}={text!r} is not a number")
    return value


def _int(element: ET.Element, key: str, where: str, default: int | None = None) -> int:
    value = _number(element, key, where, default)
    if value != int(value):
        raise DatasetError(f"{where}: attribute {key}={element.get(key)!r} is not an integer")
    return int(value)


def _polygon(element: ET.Element, where: str) -> Shape:
    try:
        points = [
            [float(v) for v in pair.split(",")] for pair in element.get("points", "").split(";")
        ]
    except ValueError as err:
        raise DatasetError(f"{where}: points must be 'x,y;x,y;...' ({err})") from err
    return polygon(element.get("label", ""), points, where)


def _box(element: ET.Element, where: str) -> Shape:
    x0, y0, x1, y1 = (_number(element, key, where) for key in ("xtl", "ytl", "xbr", "ybr"))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    angle = math.radians(_number(element, "rotation", where, default=0.0))
    if angle:  # turned about its centre, clockwise on screen (y points down)
        center = corners.mean(axis=0)
        turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        corners = (corners - center) @ turn.T + center
    return polygon(element.get("label", ""), corners, where)


def _ellipse(element: ET.Element, where: str) -> Shape:
    cx, cy, rx, ry = (_number(element, key, where) for key in ("cx", "cy", "rx", "ry"))
    angle = _number(element, "rotation", where, default=0.0)
    return Ellipse(element.get("label", ""), (cx, cy), (rx, ry), angle, where)


def _mask(element: ET.Element, where: str) -> Shape:
    """CVAT's mask: run lengths over its box, row by row, background first; checked now,
    decoded when its image is painted."""
    left, top = _int(element, "left", where), _int(element, "top", where)
    width, height = _int(element, "width", where), _int(element, "height", where)
    try:
        runs = [int(v) for v in element.get("rle", "").split(",")]
    except ValueError as err:
        raise DatasetError(f"{where}: rle must be comma-separated run lengths ({err})") from err
    covered = sum(runs)
    if min(runs) < 0 or covered != width * height or width < 1 or height < 1:
        raise DatasetError(
            f"{where}: rle runs cover {covered} pixels but the mask's box is "
            f"{width}x{height} = {width * height}; re-export the annotations"
        )
    decode = partial(_decode_mask, runs, height, width)
    return Mask(element.get("label", ""), decode, height, width, left, top, where)


def _decode_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    values = np.arange(len(runs)) % 2 == 1  # runs alternate background, foreground
    return np.repeat(values, np.array(runs, dtype=np.int64)).reshape(height, width)


PAINTED = {"polygon": _polygon, "box": _box, "ellipse": _ellipse, "mask": _mask}
