"""COCO instances JSON (``images``, ``annotations``, ``categories``) as samples.

Classes are the categories sorted by id, numbered 0..N-1 in that order (COCO's ids have gaps).
Each annotation's ``segmentation`` is painted in the file's order: a list of polygons
``[[x1, y1, x2, y2, ...], ...]`` or an RLE dict (``counts`` a compressed string or an
uncompressed list), decoded by pycocotools when its image is painted, after its runs were
checked to cover exactly its image (pycocotools writes runs without bounds checks). Crowd
annotations (``iscrowd: 1``) are painted like the others: their pixels are still that
category. An annotation without a segmentation (boxes only) has no area and is counted as
skipped ("box only"); one without a category is skipped with a warning.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from functools import partial
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
    categories, images_list = lists["categories"], lists["images"]
    if not all(_entry(c, "id") and isinstance(c.get("name"), str) for c in categories):
        raise DatasetError(f"{path}: every category needs an integer id and a text name")
    if not all(_entry(entry, "id") for entry in images_list):
        raise DatasetError(f"{path}: every image needs an integer id")
    if len({type(c["id"]) for c in categories}) > 1:
        raise DatasetError(f"{path}: category ids mix numbers and text; use integers")
    names = {c["id"]: c["name"] for c in sorted(categories, key=lambda c: c["id"])}
    entries = {entry["id"]: entry for entry in images_list}
    if len(entries) != len(images_list):
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
        where = f"{path}: annotation {annotation.get('id', index)!r}"
        image_id, category = annotation.get("image_id"), annotation.get("category_id")
        if not _hashable(image_id) or image_id not in entries:
            raise DatasetError(f"{where}: image_id {image_id!r} is not among the images")
        if category is None:
            warnings.warn(f"{where} (image_id {image_id!r}): no category_id; skipped", stacklevel=2)
            continue
        if not _hashable(category) or category not in names:
            raise DatasetError(
                f"{where}: unknown category id {category!r} (the categories are "
                f"{sorted(names)}); fix the annotation or add the category"
            )
        segmentation = annotation.get("segmentation")
        if not segmentation:
            found.skipped["box only"] += 1
            continue
        entry = entries[image_id]
        where = f"{where} (image {entry.get('file_name')!r})"
        shapes[image_id] += _shapes(names[category], segmentation, _size(entry, path), where)
    return shapes


def _entry(value: object, key: str) -> bool:
    """Whether ``value`` is an object whose ``key`` is an id (an integer, or some tools' text)."""
    return isinstance(value, dict) and _hashable(value.get(key))


def _hashable(value: object) -> bool:
    """Whether ``value`` can be an id; a list or an object in its place is not."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _shapes(label: str, segmentation: object, size: tuple[int, int], where: str) -> list[Shape]:
    """One annotation's polygons, or its RLE as a whole-image mask."""
    if isinstance(segmentation, dict):
        height, width = size
        return [Mask(label, rle_mask(segmentation, size, where), height, width, where=where)]
    if isinstance(segmentation, list):
        if all(isinstance(value, (int, float)) for value in segmentation):
            segmentation = [segmentation]  # one flat polygon, as some exporters write it
        return [polygon(label, coordinates, where) for coordinates in segmentation]
    raise DatasetError(f"{where}: segmentation is neither a polygon list nor an RLE dict")


def rle_mask(segmentation: dict, size: tuple[int, int], where: str) -> Callable[[], np.ndarray]:
    """A COCO RLE (compressed or not), checked now, decoded to an (H, W) bool mask when called.

    Args:
        segmentation: ``{"size": [H, W], "counts": str | list[int]}``.
        size: the image's (height, width) in the file.
        where: names the annotation in errors.
    """
    height, width = size
    declared = segmentation.get("size")
    if not isinstance(declared, list) or declared != [height, width]:
        raise DatasetError(
            f"{where}: RLE size {declared!r} (H, W) differs from its image's "
            f"[{height}, {width}]; the mask belongs to another image"
        )
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        runs = counts
    elif isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        runs = string_counts(text, where)
    else:
        raise DatasetError(f"{where}: RLE counts must be a string or a list of integers")
    # pycocotools writes runs without bounds checks: runs past H*W would overrun its buffer.
    if not all(type(c) is int and c >= 0 for c in runs) or sum(runs) != height * width:
        raise DatasetError(
            f"{where}: RLE counts must be H*W = {height * width:,} pixels in non-negative runs; "
            "re-export the annotations"
        )
    if isinstance(counts, list):
        return partial(_decode_runs, runs, height, width)
    return partial(_decode_string, counts, height, width, where)


def string_counts(text: str, where: str) -> list[int]:
    """The runs of COCO's compressed RLE string (pycocotools' ``rleFrString``): each run five
    bits a character from '0' (48), a sixth bit saying more follow, the last one's top bit the
    sign; from the fourth run on, each is a difference to the run two before."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position == len(text):
                raise DatasetError(f"{where}: RLE counts string ends inside a run; re-export it")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise DatasetError(f"{where}: RLE counts hold {text[position]!r}; re-export it")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position, shift = position + 1, shift + 5
            if not more and code & 0x10:
                value -= 1 << shift  # negative: sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        if value < 0 or value > (1 << 62):  # stop before a hostile string grows huge numbers
            break
    return runs


def _decode_string(counts: str | bytes, height: int, width: int, where: str) -> np.ndarray:
    try:
        from pycocotools import mask as coco_mask
    except ImportError as err:
        raise DatasetError(f"{where}: RLE masks need pycocotools: pip install pycocotools") from err
    rle = {"size": [height, width], "counts": counts}
    return coco_mask.decode(rle).astype(bool)


def _decode_runs(runs: list[int], height: int, width: int) -> np.ndarray:
    """Uncompressed runs, background first, column by column (COCO's order)."""
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(width, height).T


def _size(entry: dict, path: Path) -> tuple[int, int]:
    """(height, width) of an image entry; positive integers or an error."""
    height, width = entry.get("height"), entry.get("width")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise DatasetError(
            f"{path}: image {entry.get('file_name', entry.get('id'))!r} needs positive integer "
            f"width and height, got {width!r} x {height!r}"
        )
    return height, width
