"""Label Studio's JSON export (a list of tasks, each with its annotations) as samples.

Label Studio keeps no class list in the export, so the classes are the painted regions'
labels sorted by name (or a names file's, ``--classes``). Of each task the ground-truth
annotation is used, else the first one not cancelled, else (a task nobody annotated) its first
prediction; tasks with neither are skipped. Its
results are painted in the file's order:

- ``brushlabels`` with ``format: rle``: Label Studio's RLE (thi.ng's rle-pack) of the RGBA
  canvas, decoded as label-studio-sdk's ``converter.brush.decode_rle`` does; a pixel is the
  class where its alpha is not 0, as the SDK's ``brush_to_coco`` traces it;
- ``polygonlabels``: ``points`` in percent of the image's width and height, scaled to pixels
  as the SDK's converter does (``x / 100 * width``);
- ``rectanglelabels``: ``x``, ``y``, ``width``, ``height`` in percent, turned by ``rotation``
  degrees clockwise about its top-left corner.

Other results (key points, choices, text ...) have no area and are counted as skipped; a
region without a label is skipped with a warning. The image is the task's ``data.image``
(or its only image path): an upload (``/data/upload/3/8f3a2b1c-x.jpg``), a local file
(``/data/local-files/?d=dir/x.jpg``), a URL or a path, found under ``images`` (default: the
JSON's folder, then its ``images/``) by its path, then its file name, then that name without
the upload's ``8f3a2b1c-`` prefix.
"""

from __future__ import annotations

import math
import re
import warnings
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from pspnet.data.images import IMAGE_EXTENSIONS, header_size, read_bytes
from pspnet.data.importers.samples import (
    Annotations,
    Mask,
    Sample,
    Shape,
    inside,
    load_json,
    polygon,
    source_file,
)
from pspnet.errors import DatasetError

# Label Studio names an uploaded file by the first 8 hex digits of a UUID, a dash, its name.
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
CHANNELS = 4  # the brush's RGBA canvas


def read_labelstudio(source: Path, images: Path | None) -> Annotations:
    """Samples and classes of a Label Studio JSON export.

    Args:
        source: the export's JSON file (a list of tasks, or one task).
        images: the folder holding the images; default: the JSON's folder, then its
            ``images/`` subfolder.
    """
    source = source_file(source, "Label Studio JSON export")
    data = load_json(source)
    tasks = [data] if isinstance(data, dict) else data
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise DatasetError(
            f"{source}: not a Label Studio JSON export (a list of tasks); export as JSON"
        )
    found = Annotations([], [], [], source)
    folders = [images] if images is not None else [source.parent, source.parent / "images"]
    bare = 0
    for index, task in enumerate(tasks):
        sample = _sample(task, f"{source}: task {task.get('id', index)!r}", folders, found)
        bare += sample is None
        if sample is not None:
            found.samples.append(sample)
    if bare:
        found.warnings.append(f"{source}: {bare} tasks have no annotation; skipped")
    if not found.samples:
        raise DatasetError(f"{source}: no task has an annotation")
    labels = sorted({shape.label for sample in found.samples for shape in sample.shapes})
    found.class_names, found.colours = labels, [None] * len(labels)
    return found


def _sample(task: dict, where: str, folders: list[Path], found: Annotations) -> Sample | None:
    annotation = _annotation(task, where, found)
    if annotation is None:
        return None
    source = found.source
    relative, image = _find(_reference(task.get("data"), where), folders, source, where)
    where = f"{where} (image {relative.as_posix()!r})"
    results = annotation.get("result") or []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise DatasetError(f"{where}: the annotation's result is not a list of regions")
    height, width = _size(results, image, where)
    shapes = []
    for result in results:
        at = f"{where}, region {result.get('id')!r}"
        shape = _shape(result, height, width, at, found)
        if shape is not None:
            shapes.append(shape)
    return Sample(source, image, relative, height, width, shapes)


def _annotation(task: dict, where: str, found: Annotations) -> dict | None:
    """The task's ground-truth annotation, else its first one not cancelled; without any,
    its first prediction (pre-annotations nobody has corrected yet, as ``pspnet predict
    --annotations labelstudio`` writes them); None without either."""
    listed = task.get("annotations") or []
    if not isinstance(listed, list):
        raise DatasetError(f"{where}: annotations is not a list; export as JSON")
    annotations = [a for a in listed if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        predictions = task.get("predictions") or []
        if not isinstance(predictions, list):
            raise DatasetError(f"{where}: predictions is not a list; export as JSON")
        return next((p for p in predictions if isinstance(p, dict)), None)
    chosen = next((a for a in annotations if a.get("ground_truth")), annotations[0])
    if len(annotations) > 1:
        found.warnings.append(
            f"{where}: {len(annotations)} annotations; used annotation {chosen.get('id')!r}"
        )
    return chosen


def _reference(data: object, where: str) -> str:
    """The task's image: ``data.image``, else its only value that names an image."""
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: no data object; export the tasks with their data")
    if isinstance(data.get("image"), str):
        return data["image"]
    images = [
        value
        for value in data.values()
        if isinstance(value, str)
        and any(name.suffix.lower() in IMAGE_EXTENSIONS for name in _names(value))
    ]
    if len(images) != 1:
        raise DatasetError(
            f"{where}: cannot tell the image among its data ({sorted(data)}); name it 'image'"
        )
    return images[0]


def _names(reference: str) -> list[PurePosixPath]:
    """The paths an image reference may be found by, most precise first."""
    try:
        parts = urlsplit(reference)
    except ValueError:  # not a URL ("http://[x"): a path
        parts = urlsplit("")
    local = parse_qs(parts.query).get("d")
    if local:  # a local file: /data/local-files/?d=dir/x.jpg
        name = local[0]
    elif parts.scheme or reference.startswith("/data/"):  # an upload, a URL, cloud storage
        name = PurePosixPath(unquote(parts.path)).name
    else:
        name = reference
    path = PurePosixPath(name.replace("\\", "/"))
    names = [path] if name and not path.is_absolute() and ".." not in path.parts else []
    if path.name:
        names += [PurePosixPath(path.name), PurePosixPath(UPLOAD_PREFIX.sub("", path.name))]
    return list(dict.fromkeys(names))


def _find(
    reference: str, folders: list[Path], source: Path, where: str
) -> tuple[PurePosixPath, Path]:
    """(the image's path in the dataset, its file), looked for by each of its names; an
    absolute path below a folder keeps its path below it (``a/x.png`` and ``b/x.png`` apart)."""
    names = _names(reference)
    absolute = Path(reference) if Path(reference).is_absolute() else None
    for folder in folders if absolute is not None else []:
        if absolute.is_relative_to(folder.resolve()) and absolute.is_file():
            name = PurePosixPath(absolute.relative_to(folder.resolve()).as_posix())
            return name, inside(folder / name, [folder], source)
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return name, inside(folder / name, [folder], source)
    looked = ", ".join(str(folder / name) for name in names for folder in folders)
    raise DatasetError(
        f"{where}: image {reference!r} not found (looked for {looked or 'nothing'}); "
        "point --images at the folder that holds it"
    )


def _size(results: list[dict], image: Path, where: str) -> tuple[int, int]:
    """(height, width) the regions were drawn on; the image header's when no region says."""
    sizes = set()
    for result in results:
        if "original_width" in result or "original_height" in result:
            height, width = result.get("original_height"), result.get("original_width")
            if not (type(height) is int and type(width) is int and height > 0 and width > 0):
                raise DatasetError(
                    f"{where}: original_width and original_height must be positive integers, "
                    f"got {width!r} x {height!r}"
                )
            sizes.add((height, width))
    if not sizes:
        return header_size(read_bytes(image, "image").tobytes(), image, "image")
    if len(sizes) > 1:
        raise DatasetError(f"{where}: its regions give different image sizes {sorted(sizes)}")
    return sizes.pop()


def _shape(result: dict, height: int, width: int, where: str, found: Annotations) -> Shape | None:
    """A painted region, or None for one skipped (no area, or no label)."""
    kind = str(result.get("type", "")).lower()
    value = result.get("value")
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: a region without a value object")
    brush = "rle" in value and kind in ("brushlabels", "labels")
    if not brush and kind not in ("polygonlabels", "rectanglelabels"):
        found.skipped[kind or "untyped"] += 1
        return None
    if result.get("image_rotation"):
        raise DatasetError(
            f"{where}: drawn on the image turned by {result['image_rotation']} degrees in Label "
            "Studio; turn it back, save the region and export again"
        )
    label = _label(value.get(kind), f"{where} ({kind})")
    if label is None:
        return None
    at = f"{where} ({label!r})"
    if brush:
        return brush_mask(label, value["rle"], height, width, at)
    if kind == "polygonlabels":
        points = _numbers(value.get("points"), at)
        if points.ndim != 2 or points.shape[1] != 2:
            raise DatasetError(f"{at}: points must be [x, y] pairs in percent")
        return polygon(label, points * [width / 100, height / 100], at)
    return _rectangle(label, value, height, width, at)


def _label(labels: object, where: str) -> str | None:
    """A region's one label; None, with a warning, when it has none."""
    if not labels:
        warnings.warn(f"{where}: no label; skipped", stacklevel=2)
        return None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise DatasetError(f"{where}: labels must be a list of names, got {labels!r}")
    if len(labels) > 1:
        raise DatasetError(
            f"{where}: a region with {len(labels)} labels {labels}; a pixel is one class, "
            "keep one label"
        )
    if not labels[0]:
        warnings.warn(f"{where}: no label; skipped", stacklevel=2)
        return None
    return labels[0]


def _numbers(values: object, where: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: coordinates are not numbers ({err})") from err
    if not np.isfinite(array).all():
        raise DatasetError(f"{where}: coordinates hold NaN or infinity")
    return array


def _rectangle(label: str, value: dict, height: int, width: int, where: str) -> Shape:
    """Label Studio's rectangle: top-left, size, turned clockwise about its top-left corner."""
    keys = ("x", "y", "width", "height")
    numbers = _numbers([*(value.get(key) for key in keys), value.get("rotation", 0)], where)
    if numbers.shape != (5,):
        raise DatasetError(f"{where}: x, y, width, height and rotation must be numbers")
    x, y, w, h = numbers[:4] * np.array([width, height, width, height]) / 100
    angle = math.radians(numbers[4])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]])
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return polygon(label, corners @ turn.T + [x, y], where)


def brush_mask(label: str, rle: object, height: int, width: int, where: str) -> Mask:
    """A brush region's RLE, its header checked against the image now, decoded when painted."""
    try:
        data = bytes(rle) if isinstance(rle, list) else None  # bytes(10**10) is 10 GB of zeros
    except (TypeError, ValueError):
        data = None
    if data is None:
        raise DatasetError(f"{where}: rle must be a list of byte values (0..255)")
    if len(data) < 7:
        raise DatasetError(f"{where}: rle is {len(data)} bytes, shorter than its header")
    values = int.from_bytes(data[:4], "big")
    word = (data[4] >> 3) + 1
    if values != height * width * CHANNELS or word > 8:
        raise DatasetError(
            f"{where}: rle declares {values:,} values of {word} bits; its {width}x{height} "
            f"image's RGBA canvas holds {height * width * CHANNELS:,} of 8 bits; re-export it"
        )
    decode = partial(decode_brush, data, height, width, where)
    return Mask(label, decode, height, width, where=where)


def decode_brush(data: bytes, height: int, width: int, where: str) -> np.ndarray:
    """Label Studio's brush RLE (thi.ng's rle-pack) -> (height, width) bool, alpha not 0.

    The stream, bits high first: 32 bits the value count, 5 bits the word size - 1, four
    4-bit run-length sizes - 1; then runs: a repeat bit, 2 bits choosing the length's size,
    the length - 1, then one word repeated or that many words. Read as a string of "0" and
    "1" (as the SDK reads it), whose slices ``int(..., 2)`` parses fast.
    """
    bits = (np.unpackbits(np.frombuffer(data, dtype=np.uint8)) + ord("0")).tobytes().decode()
    count, word = int(bits[:32], 2), int(bits[32:37], 2) + 1
    sizes = [int(bits[37 + 4 * i : 41 + 4 * i], 2) + 1 for i in range(4)]
    position, done = 53, 0
    values: list[int] = []
    lengths: list[int] = []
    try:
        while done < count:
            size = sizes[int(bits[position + 1 : position + 3], 2)]
            length = int(bits[position + 3 : position + 3 + size], 2) + 1
            start, repeat = position + 3 + size, bits[position] == "1"
            position = start + word * (1 if repeat else length)
            if position > len(bits) or done + length > count:
                raise ValueError("past the end")
            if repeat:
                values.append(int(bits[start:position], 2))
                lengths.append(length)
            else:
                values += [int(bits[i : i + word], 2) for i in range(start, position, word)]
                lengths += [1] * length
            done += length
    except ValueError as err:  # a field cut off by the end of the stream
        raise DatasetError(
            f"{where}: rle ends inside a run or passes its {count:,} values; re-export it"
        ) from err
    rgba = np.repeat(np.array(values, dtype=np.uint8), lengths)  # (H * W * 4,)
    return rgba[CHANNELS - 1 :: CHANNELS].reshape(height, width) > 0
