"""CVAT for images 1.1 XML (``annotations.xml``): import it into a task whose images have the
same names (Actions > Upload annotations > CVAT 1.1).

``<meta><task><labels>`` lists the classes with their colours; each ``<image>`` holds one
``<mask>`` per region (shapes="masks") or one ``<polygon>`` (shapes="polygons"), marked
``source="auto"``. A mask is CVAT's own run-length encoding over the region's bounding box:
run lengths row by row, the first counting background (0 when the box's first pixel is set),
written as CVAT writes them (``"3, 5, 2"``). Polygons are drawn by ``z_order``: a region in
another's hole gets its depth, so it lies on top of the region around it.

CVAT matches ``<image>`` to its frames by ``name``; ``id`` is the image's place in the file,
least confident first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pspnet.annotations.entries import RGB, Entry, Shape, Shapes, colour_hex
from pspnet.annotations.regions import Region, run_lengths
from pspnet.files import atomic_write

FILE = "annotations.xml"


def encode_mask(region: Region, size: tuple[int, int]) -> str:
    """The region's box, row by row, as CVAT's run lengths (background first)."""
    runs = run_lengths(region.mask, (0, 0), region.mask.shape)
    return ", ".join(map(str, runs.tolist()))


def write(
    out_dir: Path,
    entries: Sequence[Entry],
    names: Sequence[str],
    palette: Sequence[RGB],
    shapes: Shapes,
) -> list[Path]:
    """Write ``out_dir/annotations.xml``; returns its path."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = "pspnet predictions"
    ET.SubElement(task, "size").text = str(len(entries))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name, colour in zip(names, palette, strict=True):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "color").text = colour_hex(colour)
        ET.SubElement(label, "type").text = "any"  # masks and polygons both editable
        ET.SubElement(label, "attributes")
    for index, entry in enumerate(entries):
        image = ET.SubElement(
            root,
            "image",
            id=str(index),
            name=entry.name,
            width=str(entry.width),
            height=str(entry.height),
        )
        for shape in entry.shapes:
            _shape(image, shape, names)
    ET.indent(root)
    path = out_dir / FILE
    atomic_write(path, lambda tmp: ET.ElementTree(root).write(tmp, "utf-8", xml_declaration=True))
    return [path]


def _shape(image: ET.Element, shape: Shape, names: Sequence[str]) -> None:
    common = {
        "label": names[shape.label],
        "source": "auto",
        "occluded": "0",
        "z_order": str(shape.depth),
    }
    if shape.points is not None:
        points = ";".join(f"{x:.2f},{y:.2f}" for x, y in shape.points.tolist())
        ET.SubElement(image, "polygon", common, points=points)
        return
    left, top, width, height = shape.box
    ET.SubElement(
        image,
        "mask",
        common,
        rle=shape.mask,
        left=str(left),
        top=str(top),
        width=str(width),
        height=str(height),
    )
