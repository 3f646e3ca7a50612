"""COCO instances JSON (``instances.json``): ``images``, ``categories`` and one annotation per
region, least confident image first.

Categories are numbered from 1 in the checkpoint's class order (COCO keeps no colours). An
annotation's ``segmentation`` is the region as COCO RLE (shapes="masks": ``iscrowd`` 1, the
form CVAT and Datumaro import as a mask) or its outline (shapes="polygons": one polygon
``[x1, y1, x2, y2, ...]`` at pixel centres, ``iscrowd`` 0). ``area`` is the region's pixel
count, ``bbox`` its pixels' box ``[x, y, width, height]`` and ``score`` its mean confidence.

Polygon vertices are pixel centres, as pspnet's importers and LabelMe read them; pycocotools'
``annToMask`` reads them as pixel corners, so there a polygon covers half a pixel less on each
side and a region one pixel wide covers nothing: train from shapes="masks".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pycocotools import mask as coco_mask

from pspnet.annotations.entries import RGB, Entry, Shape, Shapes, write_json
from pspnet.annotations.regions import Region, run_lengths

FILE = "instances.json"


def encode_mask(region: Region, size: tuple[int, int]) -> str:
    """The region as COCO's compressed RLE counts over the whole (H, W) image.

    COCO reads pixels column by column: the run lengths of the transposed mask, compressed by
    pycocotools, are what ``pycocotools.mask.encode`` makes of the image-sized Fortran-order
    mask, without building it.
    """
    height, width = size
    counts = run_lengths(region.mask.T, (region.left, region.top), (width, height))
    rle = coco_mask.frPyObjects({"counts": counts.tolist(), "size": [height, width]}, height, width)
    return str(rle["counts"], "ascii")  # bytes -> str


def write(
    out_dir: Path,
    entries: Sequence[Entry],
    names: Sequence[str],
    palette: Sequence[RGB],
    shapes: Shapes,
) -> list[Path]:
    """Write ``out_dir/instances.json``; returns its path."""
    images, annotations = [], []
    for image_id, entry in enumerate(entries, start=1):
        images.append(
            {"id": image_id, "file_name": entry.name, "width": entry.width, "height": entry.height}
        )
        for shape in entry.shapes:
            annotation = _annotation(shape, entry)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    categories = [
        {"id": index, "name": name, "supercategory": ""}
        for index, name in enumerate(names, start=1)
    ]
    path = out_dir / FILE
    write_json(
        path,
        {
            "info": {"description": "pspnet predictions, least confident image first"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        },
    )
    return [path]


def _annotation(shape: Shape, entry: Entry) -> dict:
    if shape.points is not None:
        segmentation: object = [shape.points.ravel().astype(float).tolist()]
        crowd = 0
    else:
        segmentation = {"size": [entry.height, entry.width], "counts": shape.mask}
        crowd = 1
    return {
        "category_id": shape.label + 1,
        "segmentation": segmentation,
        "area": shape.area,
        "bbox": list(shape.box),
        "iscrowd": crowd,
        "score": round(shape.score, 4),
    }
