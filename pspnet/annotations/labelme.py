"""LabelMe 5 JSON files, one per image (``labelme/NAME.json``, NAME's folders kept), and a
LabelMe config with the classes and their colours (``labelme_config.yaml``).

Each region is one shape: a ``polygon`` at pixel centres (shapes="polygons"), simplified by the
writer's tolerance, or a LabelMe 5 ``mask`` (shapes="masks": a base64 PNG of the region's box,
``points`` its first and last pixel). ``description`` carries the region's mean confidence.
``imagePath`` leads from the JSON's folder to the image and ``imageData`` is null, as LabelMe
writes them with "Save With Image Data" off. LabelMe files have no order; the paths come back
least confident first.

Open them with ``labelme IMAGES --output OUT/labelme --config OUT/labelme_config.yaml``; the
config lists the classes (``labels``) and sets ``shape_color: manual`` so that
``label_colors`` colours them.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import yaml
from PIL import Image

from pspnet.annotations.entries import RGB, Entry, Shape, Shapes, write_json
from pspnet.annotations.regions import Region
from pspnet.errors import OutputError
from pspnet.files import atomic_write

FILE = "labelme"
CONFIG = "labelme_config.yaml"
VERSION = "5.5.0"  # the LabelMe file layout written: shapes carry description and mask


def encode_mask(region: Region, size: tuple[int, int]) -> str:
    """The region's box as a base64 1-bit PNG, True on the region."""
    buffer = io.BytesIO()
    Image.fromarray(region.mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def json_path(out_dir: Path, name: str) -> Path:
    """Where the LabelMe file of image ``name`` goes: ``labelme/a/dup.png`` -> ``a/dup.json``."""
    return out_dir / FILE / PurePosixPath(name).with_suffix(".json")


def write(
    out_dir: Path,
    entries: Sequence[Entry],
    names: Sequence[str],
    palette: Sequence[RGB],
    shapes: Shapes,
) -> list[Path]:
    """Write one LabelMe file per entry and the config; returns the files, least confident
    first, then the config."""
    paths = [json_path(out_dir, entry.name) for entry in entries]
    _check_paths(paths, entries)
    for path, entry in zip(paths, entries, strict=True):
        image = os.path.relpath(os.path.abspath(entry.image), os.path.abspath(path.parent))
        write_json(
            path,
            {
                "version": VERSION,
                "flags": {},
                "shapes": [_shape(shape, names) for shape in entry.shapes],
                "imagePath": Path(image).as_posix(),
                "imageData": None,
                "imageHeight": entry.height,
                "imageWidth": entry.width,
            },
        )
    config = {
        "labels": list(names),
        "shape_color": "manual",
        "label_colors": {name: list(colour) for name, colour in zip(names, palette, strict=True)},
    }
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    atomic_write(out_dir / CONFIG, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [*paths, out_dir / CONFIG]


def _check_paths(paths: list[Path], entries: Sequence[Entry]) -> None:
    """Refuse two images whose LabelMe files would be one (``x.png`` and ``x.jpg``)."""
    seen: dict[Path, str] = {}
    for path, entry in zip(paths, entries, strict=True):
        if path in seen:
            raise OutputError(
                f"images {seen[path]!r} and {entry.name!r} would both be annotated in {path}; "
                "rename one"
            )
        seen[path] = entry.name


def _shape(shape: Shape, names: Sequence[str]) -> dict:
    if shape.points is not None:
        points, kind, mask = shape.points.astype(float).tolist(), "polygon", None
    else:
        left, top, width, height = shape.box
        points = [[float(left), float(top)], [float(left + width - 1), float(top + height - 1)]]
        kind, mask = "mask", shape.mask
    return {
        "label": names[shape.label],
        "points": points,
        "group_id": None,
        "description": f"score {shape.score:.3f}",
        "shape_type": kind,
        "flags": {},
        "mask": mask,
    }
