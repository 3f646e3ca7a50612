"""Label Studio tasks with predictions (``labelstudio.json``) and the labelling config they fit
(``labelstudio_config.xml``).

Create the project with the config (Settings > Labeling Interface > Code), then import the
tasks: each is ``{"data": {"image": PATH}, "predictions": [{"model_version": "pspnet",
"score", "result"}]}``, least confident first, so Label Studio's task ids (and its default
order) start with the image the model was least sure of. ``PATH`` is ``images_dir/NAME``
(give the URL prefix Label Studio serves the images under, e.g.
``/data/local-files/?d=photos``), else the image's absolute path.

Each region is one result (``from_name`` "label", ``to_name`` "image") with its mean
confidence as ``score``: a ``brushlabels`` mask (shapes="masks") or a ``polygonlabels``
outline (shapes="polygons", points at pixel centres in percent of the image's size, as
label-studio-sdk's COCO import converts them).

A brush mask is Label Studio's RLE (label-studio-sdk ``converter/brush.py``, after
thi-ng/umbrella's rle-pack), byte for byte what ``brush.mask2rle(mask * 255)`` gives: the
image's RGBA pixels row by row, every channel 255 on the region, as one run-length coded
stream of 8-bit words. The header holds the value count (32 bits), the word size less one
(5 bits: 7) and four run-length field sizes less one (4 bits each: 3, 4, 8, 16); then each
run is ``1``, a 2-bit field index, the run length less one in that field's bits, and the
8-bit value; runs past 65,536 are cut into 65,536-long pieces. The bits are padded with
zeros to a whole byte (a whole zero byte when they already end on one, as the SDK does).
The SDK itself is not needed: it pins older numpy and OpenCV than pspnet runs on.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspnet.annotations.entries import RGB, Entry, Shape, Shapes, colour_hex, write_json
from pspnet.annotations.regions import Region, run_lengths
from pspnet.files import atomic_write

FILE = "labelstudio.json"
CONFIG = "labelstudio_config.xml"
FROM_NAME, TO_NAME = "label", "image"
CHANNELS = 4  # Label Studio paints brush masks as RGBA
ON = 255  # every channel of a region's pixel

# (code, bits): run lengths up to 2**bits go in that field; the header's 3, 4, 8, 16.
FIELDS = ((0b00, 3), (0b01, 4), (0b10, 8), (0b11, 16))


def encode_mask(region: Region, size: tuple[int, int]) -> str:
    """The region as Label Studio's brush RLE over the (H, W) image, base64 while kept."""
    return base64.b64encode(brush_rle(region, size)).decode("ascii")


def brush_rle(region: Region, size: tuple[int, int]) -> bytes:
    """The region's Label Studio brush RLE: the bytes its ``value.rle`` lists."""
    height, width = size
    total = height * width * CHANNELS
    if total >= 2**32:
        raise ValueError(f"a {width}x{height} image is past Label Studio's RLE (2**32 values)")
    header = f"{total:032b}{8 - 1:05b}" + "".join(f"{bits - 1:04b}" for _, bits in FIELDS)
    words = [header]
    lengths = run_lengths(region.mask, (region.top, region.left), size) * CHANNELS
    # Background first; a leading empty background run (the region starts the image) is none.
    for index, length in enumerate(lengths.tolist()):
        if length:
            words.append(_run(length, ON if index % 2 else 0))
    bits = "".join(words)
    bits += "0" * (8 - len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _run(length: int, value: int) -> str:
    """One run of ``length`` (>= 4: a pixel is four values) copies of ``value``, as bits."""
    for code, bits in FIELDS[:-1]:
        if length <= 2**bits:
            return f"1{code:02b}{length - 1:0{bits}b}{value:08b}"
    pieces = []
    while length > 2**16:
        pieces.append(f"111{2**16 - 1:016b}{value:08b}")
        length -= 2**16
    pieces.append(f"111{length - 1:016b}{value:08b}")
    return "".join(pieces)


def write(
    out_dir: Path,
    entries: Sequence[Entry],
    names: Sequence[str],
    palette: Sequence[RGB],
    shapes: Shapes,
) -> list[Path]:
    """Write the tasks and the labelling config; returns their paths."""
    tasks = [
        {
            "data": {"image": entry.image},
            "predictions": [
                {
                    "model_version": "pspnet",
                    "score": round(entry.score, 4),
                    "result": [
                        _result(index, shape, entry, names)
                        for index, shape in enumerate(entry.shapes)
                    ],
                }
            ],
        }
        for entry in entries
    ]
    write_json(out_dir / FILE, tasks)
    config = labelling_config(names, palette, shapes)
    atomic_write(out_dir / CONFIG, lambda tmp: Path(tmp).write_text(config, encoding="utf-8"))
    return [out_dir / FILE, out_dir / CONFIG]


def labelling_config(names: Sequence[str], palette: Sequence[RGB], shapes: Shapes) -> str:
    """The ``<View>`` the results fit: an Image and BrushLabels (or PolygonLabels) per class."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=TO_NAME, value=f"${TO_NAME}", zoom="true")
    tag = "PolygonLabels" if shapes == "polygons" else "BrushLabels"
    labels = ET.SubElement(view, tag, name=FROM_NAME, toName=TO_NAME)
    for name, colour in zip(names, palette, strict=True):
        ET.SubElement(labels, "Label", value=name, background=colour_hex(colour))
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _result(index: int, shape: Shape, entry: Entry, names: Sequence[str]) -> dict:
    if shape.points is not None:
        percent = shape.points * np.array([100 / entry.width, 100 / entry.height])
        kind = "polygonlabels"
        value: dict = {"points": percent.tolist(), "closed": True}
    else:
        kind = "brushlabels"
        value = {"format": "rle", "rle": list(base64.b64decode(shape.mask))}
    return {
        "id": f"r{index}",
        "type": kind,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": entry.width,
        "original_height": entry.height,
        "image_rotation": 0,
        "value": {**value, kind: [names[shape.label]]},
        "score": round(shape.score, 4),
    }
