"""COCO instances JSON (``images``, ``annotations``, ``categories``) as samples.

Classes are the categories sorted by id, numbered 0..N-1 in that order (COCO's ids have gaps).
Each annotation's ``segmentation`` is painted in the file's order: a list of polygons
``[[x1, y1, x2, y2, ...], ...]`` or an RLE dict (``counts`` a compressed string or an
uncompressed list), decoded by pycocotools. Crowd annotations (``iscrowd: 1``) are painted
like the others: their pixels are still that category. An annotation without a segmentation
(boxes only) has no area and is counted as skipped ("box only").
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from pspnet.data.importers.samples import (
    Annotations,
    Mask,
    Sample,
    Shape,
    find_image,
    load_json,
    polygon,
    relative_name,
    source_file,
)
from pspnet.errors import DatasetError

_KEYS = ("images", "annotations", "categories")


def read_coco(source: Path, images: Path | None) -> Annotations:
    """Samples and classes of a COCO instances file.

    Args:
        source: the instances JSON.
        images: the folder holding the images by ``file_name``; default: the JSON's folder,
            then its ``images/`` subfolder.
    """
    path = source_file(source, "COCO instances JSON file")
    data = load_json(path)
    lists = {key: data.get(key) if isinstance(data, dict) else None for key in _KEYS}
    for key, value in lists.items():
        if not isinstance(value, list):
            raise DatasetError(f"{path}: not a COCO instances file (no {key!r} list)")
    try:
        categories = sorted(lists["categories"], key=lambda c: c["id"])
        names = {c["id"]: c["name"] for c in categories}
        entries = {entry["id"]: entry for entry in lists["images"]}
    except (KeyError, TypeError) as err:
        raise DatasetError(
            f"{path}: every category needs an id and a name, every image an id ({err!r})"
        ) from err
    if len(entries) != len(lists["images"]):
        raise DatasetError(f"{path}: two images share an id; give each image its own")
    found = Annotations([], list(names.values()), [None] * len(names), path)
    shapes = _shapes_by_image(path, lists["annotations"], entries, names, found)
    folders = [images] if images is not None else [path.parent, path.parent / "images"]
    for image_id, entry in entries.items():
        relative = relative_name(str(entry.get("file_name", "")), path)
        height, width = _size(entry, path)
        image = find_image(relative, folders, path)
        found.samples.append(Sample(path, image, relative, height, width, shapes[image_id]))
    if not found.samples:
        raise DatasetError(f"{path}: the file lists no images")
    return found


def _shapes_by_image(
    path: Path, annotations: list, entries: dict, names: dict, found: Annotations
) -> dict[object, list[Shape]]:
    """Each image id's shapes in file order; unknown ids are errors naming the annotation."""
    shapes: dict[object, list[Shape]] = defaultdict(list)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise DatasetError(f"{path}: annotation {index} is not an object")
        where = f"{path}: annotation {annotation.get('id', index)}"
        image_id, category = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in entries:
            raise DatasetError(f"{where}: image_id {image_id!r} is not among the images")
        if category not in names:
            raise DatasetError(
                f"{where}: unknown category id {category!r} (the categories are "
                f"{sorted(names)}); fix the annotation or add the category"
            )
        segmentation = annotation.get("segmentation")
        if not segmentation:
            found.skipped["box only"] += 1
            continue
        entry = entries[image_id]
        shapes[image_id] += _shapes(names[category], segmentation, _size(entry, path), where)
    return shapes


def _shapes(label: str, segmentation: object, size: tuple[int, int], where: str) -> list[Shape]:
    """One annotation's polygons, or its RLE as a whole-image mask."""
    if isinstance(segmentation, dict):
        return [Mask(label, rle_mask(segmentation, size, where))]
    if isinstance(segmentation, list):
        if all(isinstance(value, (int, float)) for value in segmentation):
            segmentation = [segmentation]  # one flat polygon, as some exporters write it
        return [polygon(label, coordinates, where) for coordinates in segmentation]
    raise DatasetError(f"{where}: segmentation is neither a polygon list nor an RLE dict")


def rle_mask(segmentation: dict, size: tuple[int, int], where: str) -> np.ndarray:
    """A COCO RLE (compressed or not) as an (H, W) bool mask, its size checked first.

    Args:
        segmentation: ``{"size": [H, W], "counts": str | list[int]}``.
        size: the image's (height, width) in the file.
        where: names the annotation in errors.
    """
    try:
        from pycocotools import mask as coco_mask
    except ImportError as err:
        raise DatasetError(f"{where}: RLE masks need pycocotools: pip install pycocotools") from err
    height, width = size
    if list(segmentation.get("size", [])) != [height, width]:
        raise DatasetError(
            f"{where}: RLE size {segmentation.get('size')} (H, W) differs from its image's "
            f"[{height}, {width}]; the mask belongs to another image"
        )
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        # pycocotools writes runs without bounds checks: counts past H*W would overrun.
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise DatasetError(
                f"{where}: uncompressed RLE counts must be H*W = {height * width} pixels in "
                "non-negative runs"
            )
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(counts, (str, bytes)):
        rle = {"size": [height, width], "counts": counts}
    else:
        raise DatasetError(f"{where}: RLE counts must be a string or a list of integers")
    try:
        return coco_mask.decode(rle).astype(bool)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: cannot decode the RLE ({err})") from err


def _size(entry: dict, path: Path) -> tuple[int, int]:
    """(height, width) of an image entry; positive integers or an error."""
    height, width = entry.get("height"), entry.get("width")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise DatasetError(
            f"{path}: image {entry.get('file_name', entry.get('id'))!r} needs positive integer "
            f"width and height, got {width!r} x {height!r}"
        )
    return height, width
