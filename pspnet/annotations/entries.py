"""What a writer keeps of each image until it writes: its regions encoded, never its arrays.

A mask is kept in the format's own text (CVAT's run lengths, COCO's compressed counts, Label
Studio's RLE or LabelMe's PNG, base64), an outline as its few vertices, so a collection of any
size fits in memory. The same records travel through the parts of a torchrun job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pspnet.files import atomic_write

Shapes = Literal["masks", "polygons"]

RGB = tuple[int, int, int]


@dataclass(frozen=True, eq=False)  # points: compared by identity
class Shape:
    """One region as it will be written.

    Attributes:
        label: class index.
        score: mean confidence over its pixels.
        area: its pixel count.
        box: (left, top, width, height) of its pixels.
        depth: how many regions enclose it in a hole; outlines are drawn by increasing depth.
        mask: the format's encoding of its pixels (shapes="masks"), else None.
        points: (K, 2) int32 x, y of its outline at pixel centres (shapes="polygons"), else None.
    """

    label: int
    score: float
    area: int
    box: tuple[int, int, int, int]
    depth: int = 0
    mask: str | None = None
    points: np.ndarray | None = None


@dataclass(frozen=True)
class Entry:
    """One image and its shapes, in drawing order.

    Attributes:
        name: its name in the export ("a/dup.png").
        image: where the tool finds it: ``images_dir/name``, else the image's absolute path.
        width: image width.
        height: image height.
        score: mean confidence over all its pixels; the least confident image comes first.
        shapes: its regions, bottom first.
    """

    name: str
    image: str
    width: int
    height: int
    score: float
    shapes: tuple[Shape, ...]


def colour_hex(colour: Sequence[int]) -> str:
    """(r, g, b) as ``#rrggbb``."""
    red, green, blue = colour
    return f"#{red:02x}{green:02x}{blue:02x}"


def least_confident_first(entries: Sequence[Entry]) -> list[Entry]:
    """Entries by increasing score; equal scores by name, so every rank agrees on the order."""
    return sorted(entries, key=lambda entry: (entry.score, entry.name))


def write_json(path: Path, data: object) -> None:
    """``data`` as UTF-8 JSON at ``path``, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(data, file, ensure_ascii=False)

    atomic_write(path, write)


def entry_to_json(entry: Entry) -> dict:
    """An entry as plain JSON values, exactly: :func:`entry_from_json` gives it back."""
    return {
        "name": entry.name,
        "image": entry.image,
        "width": entry.width,
        "height": entry.height,
        "score": entry.score,
        "shapes": [
            {
                "label": shape.label,
                "score": shape.score,
                "area": shape.area,
                "box": list(shape.box),
                "depth": shape.depth,
                "mask": shape.mask,
                "points": None if shape.points is None else shape.points.tolist(),
            }
            for shape in entry.shapes
        ],
    }


def entry_from_json(data: dict) -> Entry:
    shapes = tuple(
        Shape(
            shape["label"],
            shape["score"],
            shape["area"],
            tuple(shape["box"]),
            shape["depth"],
            shape["mask"],
            None if shape["points"] is None else np.asarray(shape["points"], np.int32),
        )
        for shape in data["shapes"]
    )
    return Entry(data["name"], data["image"], data["width"], data["height"], data["score"], shapes)
