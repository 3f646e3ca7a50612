"""Readers of the four exports written from each tool's format description, not from the writers.

Each turns a written file back into one (H, W) uint8 label map per image (255 where no shape
paints), so a test compares it with the labels it gave the writer. Masks are placed pixel by
pixel; polygons are filled with their border at pixel centres (cv2.fillPoly after rounding,
as the importers paint them), later shapes on top.
"""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

UNLABELLED = 255


class Canvas:
    """A label map being painted; masks may not overlap (each pixel is painted once at most)."""

    def __init__(self, height: int, width: int) -> None:
        self.labels = np.full((height, width), UNLABELLED, np.uint8)
        self.painted = np.zeros((height, width), np.int32)

    def mask(self, mask: np.ndarray, value: int, left: int = 0, top: int = 0) -> None:
        height, width = mask.shape
        window = (slice(top, top + height), slice(left, left + width))
        self.labels[window][mask] = value
        self.painted[window] += mask

    def polygon(self, points: np.ndarray, value: int) -> None:
        pixels = np.floor(np.asarray(points, np.float64) + 0.5).astype(np.int32)
        cv2.fillPoly(self.labels, [pixels.reshape(-1, 2)], int(value))


def cvat_runs(text: str, width: int, height: int) -> np.ndarray:
    """CVAT's mask RLE: run lengths over the box, row by row, background first."""
    runs = [int(value) for value in text.split(",")]
    assert sum(runs) == width * height, "the runs must cover the box exactly"
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)


def read_cvat(path: Path) -> tuple[list[str], list[str], dict[str, np.ndarray], dict]:
    """(class names, colours, labels per image name, per-image shape attributes)."""
    root = ET.parse(path).getroot()
    labels = root.findall("meta/task/labels/label")
    names = [label.findtext("name") for label in labels]
    colours = [label.findtext("color") for label in labels]
    maps, shapes = {}, {}
    for image in root.findall("image"):
        canvas = Canvas(int(image.get("height")), int(image.get("width")))
        children = sorted(image, key=lambda child: int(child.get("z_order")))  # stable
        for child in children:
            value = names.index(child.get("label"))
            if child.tag == "mask":
                width, height = int(child.get("width")), int(child.get("height"))
                mask = cvat_runs(child.get("rle"), width, height)
                canvas.mask(mask, value, int(child.get("left")), int(child.get("top")))
            else:
                assert child.tag == "polygon"
                pairs = [pair.split(",") for pair in child.get("points").split(";")]
                canvas.polygon(np.array(pairs, np.float64), value)
        maps[image.get("name")] = canvas.labels
        shapes[image.get("name")] = [dict(child.attrib, tag=child.tag) for child in image]
    return names, colours, maps, shapes


def read_coco(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """(class names by category id order, labels per file_name, the JSON)."""
    data = json.loads(path.read_text())
    categories = sorted(data["categories"], key=lambda category: category["id"])
    value = {category["id"]: index for index, category in enumerate(categories)}
    canvases = {image["id"]: Canvas(image["height"], image["width"]) for image in data["images"]}
    for annotation in data["annotations"]:
        canvas = canvases[annotation["image_id"]]
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):
            mask = coco_mask.decode(segmentation).astype(bool)
            canvas.mask(mask, value[annotation["category_id"]])
        else:
            for flat in segmentation:
                canvas.polygon(np.reshape(flat, (-1, 2)), value[annotation["category_id"]])
    names = [category["name"] for category in categories]
    files = {image["id"]: image["file_name"] for image in data["images"]}
    return names, {files[i]: canvas.labels for i, canvas in canvases.items()}, data


def labelme_mask(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("L")) > 0


def read_labelme(path: Path, names: list[str]) -> np.ndarray:
    """One LabelMe file's labels; a mask's box starts at its first point."""
    data = json.loads(path.read_text())
    canvas = Canvas(data["imageHeight"], data["imageWidth"])
    for shape in data["shapes"]:
        value = names.index(shape["label"])
        if shape["shape_type"] == "mask":
            (left, top), _ = shape["points"]
            canvas.mask(labelme_mask(shape["mask"]), value, int(left), int(top))
        else:
            assert shape["shape_type"] == "polygon"
            canvas.polygon(np.array(shape["points"]), value)
    return canvas.labels


def brush_values(rle: list[int]) -> np.ndarray:
    """Label Studio's brush RLE (rle-pack) as its flat values; the layout its docs describe."""
    bits = "".join(f"{byte:08b}" for byte in rle)
    position = 0

    def read(count: int) -> int:
        nonlocal position
        value = int(bits[position : position + count], 2)
        position += count
        return value

    total, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(total, np.uint8)
    index = 0
    while index < total:
        repeated = read(1)
        end = index + 1 + read(sizes[read(2)])
        if repeated:
            out[index:end] = read(word)
            index = end
        else:
            while index < end:
                out[index] = read(word)
                index += 1
    return out


def read_labelstudio(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """(labels per data.image, the tasks); brush masks from alpha, polygons from percent."""
    tasks = json.loads(path.read_text())
    maps = {}
    for task in tasks:
        (prediction,) = task["predictions"]
        canvas = None
        for result in prediction["result"]:
            width, height = result["original_width"], result["original_height"]
            canvas = canvas or Canvas(height, width)
            kind = result["type"]
            value = names.index(result["value"][kind][0])
            if kind == "brushlabels":
                rgba = brush_values(result["value"]["rle"]).reshape(height, width, 4)
                canvas.mask(rgba[:, :, 3] > 0, value)
            else:
                assert kind == "polygonlabels"
                percent = np.array(result["value"]["points"])
                canvas.polygon(percent * [width / 100, height / 100], value)
        maps[task["data"]["image"]] = canvas.labels if canvas else None
    return maps, tasks
