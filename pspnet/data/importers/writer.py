"""Painting samples into label images and writing them as a ``custom`` dataset, all or nothing.

The dataset is written into a hidden folder beside ``out`` and renamed into place at the end,
so an import that fails or is interrupted leaves no half-written dataset behind (a killed one
may leave the hidden ``.OUT.*.tmp`` folder, never ``out``).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pspnet.data.images import IMAGE_EXTENSIONS, decode
from pspnet.data.importers.samples import Annotations, Sample
from pspnet.data.presets import IGNORE_INDEX, RGB, parse_names_line, read_names_file, voc_colormap
from pspnet.errors import DatasetError

EXIF_ORIENTATION = 0x0112
SPLITS = ("train", "val", "test")


def class_list(
    found: Annotations, background: str | None, classes_file: Path | None
) -> tuple[list[str], list[RGB]]:
    """The classes in train-id order with their colours; ``background`` first if it is new.

    Args:
        found: what the reader found; its classes unless ``classes_file`` is given.
        background: the class of unannotated pixels, added as class 0 if not listed.
        classes_file: a names file fixing order and colours.
    """
    if classes_file is not None:
        listed = read_names_file(Path(classes_file))
        kept = [(n, c) for n, c in zip(*listed) if n not in found.ignored]  # LabelMe's labels.txt
        names, colours = [n for n, _ in kept], [c for _, c in kept]
    else:
        names, colours = list(found.class_names), list(found.colours)
    declared_in = classes_file or found.source
    if background is not None and background not in names:
        names, colours = [background, *names], [None, *colours]
    if not names:
        raise DatasetError(
            f"{found.source}: no shape with an area, so no classes; "
            "give a classes file or a background class"
        )
    if len(names) >= IGNORE_INDEX:
        raise DatasetError(f"{declared_in}: {len(names)} classes; a dataset holds at most 254")
    for name in names:
        check_name(name, names, declared_in)
    return names, distinct_colours(names, colours, found.warnings)


def check_name(name: str, names: list[str], declared_in: Path) -> None:
    """Refuse a class name that ``classes.txt`` would not give back as it is."""
    if names.count(name) > 1:
        raise DatasetError(f"{declared_in}: class {name!r} is listed twice; rename one")
    if name.startswith("#"):
        raise DatasetError(
            f"{declared_in}: class name {name!r} starts with '#', a comment in classes.txt; "
            "rename it"
        )
    if parse_names_line(f"{name} 0 0 0") != (name, (0, 0, 0)):
        raise DatasetError(
            f"{declared_in}: class name {name!r} would not read back from classes.txt "
            "(empty, spaces at its ends or in a row, or CVAT's name:R,G,B form); rename it"
        )


def distinct_colours(names: list[str], colours: list[RGB | None], warnings: list[str]) -> list[RGB]:
    """Each class's own colour; VOC's colours, in order, for the others and for repeats.

    Colours must differ: a names file maps colour labels back to classes through them.
    """
    own = {colour for colour in colours if colour is not None}
    spare = (colour for colour in voc_colormap(256) if colour not in own)
    chosen: list[RGB] = []
    for name, colour in zip(names, colours):
        if colour is not None and colour in chosen:
            other = names[chosen.index(colour)]
            warnings.append(f"class {name!r} has the colour {colour} of {other!r}; gave it another")
            colour = None
        chosen.append(colour if colour is not None else next(spare))
    return chosen


def check_labels(
    samples: list[Sample], names: list[str], classes_file: Path | None, ignored: frozenset[str]
) -> None:
    """Refuse a shape whose label is not a class, naming its file, before anything is written."""
    known = set(names) | ignored
    for sample in samples:
        for shape in sample.shapes:
            if shape.label in known:
                continue
            if classes_file is not None:
                raise DatasetError(
                    f"{sample.annotation}: label {shape.label!r} is not in the classes file "
                    f"{classes_file}; add it there"
                )
            raise DatasetError(
                f"{sample.annotation}: label {shape.label!r} is not one of the classes the "
                "export declares; re-export it"
            )


def split_samples(samples: list[Sample], val_fraction: float, seed: int) -> dict[str, list[Sample]]:
    """The samples of each split: the export's own split where it gives one (CVAT's subsets),
    the others sorted by image path, shuffled by ``seed``, the first share to val.

    Args:
        samples: every sample; no two of one split may share an image path less its suffix.
        val_fraction: share of the drawn images for val, in [0, 1); at least one image when
            there are two.
        seed: the shuffle's seed; the same seed and images give the same split.
    """
    check_names(samples)
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for sample in samples:
        if sample.split is not None:
            splits[sample.split].append(sample)
    ordered = sorted((sample for sample in samples if sample.split is None), key=_path)
    np.random.default_rng(seed).shuffle(ordered)
    count = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) >= 2:
        count = min(max(count, 1), len(ordered) - 1)  # never an empty train split
    splits["train"] += ordered[count:]
    splits["val"] += ordered[:count]
    return {split: sorted(chosen, key=_path) for split, chosen in splits.items()}


def _path(sample: Sample) -> str:
    return sample.relative.as_posix()


def check_names(samples: list[Sample]) -> None:
    """Refuse images the dataset would not find, or two of one split that would share a label
    (x.jpg, x.png); an image without the export's split may land in train or val."""
    seen: dict[tuple[str, str], Sample] = {}
    for sample in samples:
        if sample.relative.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{sample.annotation}: image {_path(sample)} is not one of the kinds a dataset "
                f"reads ({', '.join(IMAGE_EXTENSIONS)}); convert it and fix its name"
            )
        stem = sample.relative.with_suffix("").as_posix()
        keys = [(split, stem) for split in ((sample.split,) if sample.split else ("train", "val"))]
        for key in keys:
            if key in seen:
                first = seen[key]
                raise DatasetError(
                    f"{sample.annotation}: image {_path(sample)} and {_path(first)} (annotated "
                    f"in {first.annotation}) would share the label {stem}.png; rename one or "
                    "merge them"
                )
        seen.update(dict.fromkeys(keys, sample))


def check_out(out: Path) -> None:
    """Refuse an ``out`` that holds anything: an import never mixes two datasets.

    A symbolic link is refused too: the finished dataset replaces ``out`` by a rename.
    """
    if out.is_symlink():
        raise DatasetError(
            f"{out}: is a symbolic link (to {os.readlink(out)}); give the folder itself"
        )
    if out.is_dir() and any(out.iterdir()):
        raise DatasetError(f"{out}: folder exists and is not empty; give a new or empty folder")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; give a new or empty folder")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into, renamed to ``out`` if the block succeeds."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the dataset from others
        yield tmp
        check_out(out)  # still empty: nobody wrote there while we worked
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(
    out: Path,
    splits: dict[str, list[Sample]],
    names: list[str],
    palette: list[RGB],
    fill: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    ignored: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, list[str]]:
    """Copy every image, paint and write its label, write ``classes.txt``; all or nothing.

    Args:
        out: the dataset folder to create (absent or empty).
        splits: the samples of each split ("train", "val", "test").
        names: class names in train-id order; ``ids`` may map more labels (to 255).
        palette: one colour per class.
        fill: the value of pixels no shape covers (255, or the background class).
        progress: called as ``progress(done, total)`` after each image.
        ignored: labels painted as ignore (255).

    Returns:
        (pixel counts per value 0..255 over every label, warnings).
    """
    ids = {**dict.fromkeys(ignored, IGNORE_INDEX), **{name: i for i, name in enumerate(names)}}
    total = sum(len(samples) for samples in splits.values())
    counts = np.zeros(256, dtype=np.int64)
    warnings: list[str] = []
    done = 0
    with staging(out) as root:
        for split, samples in splits.items():
            for sample in samples:
                label = write_sample(root, split, sample, ids, fill, warnings)
                counts += np.bincount(label.ravel(), minlength=256)
                done += 1
                if progress is not None:
                    progress(done, total)
        lines = [f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(names, palette)]
        (root / "classes.txt").write_text("".join(lines), encoding="utf-8")
    return counts, warnings


def write_sample(
    root: Path, split: str, sample: Sample, ids: dict[str, int], fill: int, warnings: list[str]
) -> np.ndarray:
    """Copy the image unchanged, paint its shapes in order; the (H, W) uint8 label."""
    data = np.frombuffer(sample.encoded(), dtype=np.uint8)
    check_image(sample, data, warnings)
    label = np.full((sample.height, sample.width), fill, dtype=np.uint8)
    for shape in sample.shapes:
        shape.paint(label, ids[shape.label])
    image_path = root / "images" / split / sample.relative
    label_path = (root / "labels" / split / sample.relative).with_suffix(".png")
    for path in (image_path, label_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    image_path.write_bytes(data.tobytes())
    ok, png = cv2.imencode(".png", label)
    if not ok:
        raise DatasetError(f"{label_path}: OpenCV could not encode the label as PNG")
    label_path.write_bytes(png.tobytes())
    return label


def check_image(sample: Sample, data: np.ndarray, warnings: list[str]) -> None:
    """Refuse an image that does not decode (its size was checked); warn about EXIF turns."""
    # Decoded as the dataset will read it: pixels as stored, the EXIF orientation ignored.
    decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, sample.image, "image")
    if exif_orientation(data) not in (None, 1):
        warnings.append(
            f"{sample.image}: has an EXIF orientation, which the dataset ignores; check that "
            "its labels line up with the stored pixels"
        )


def exif_orientation(data: np.ndarray) -> int | None:
    """The EXIF orientation tag of an encoded image, None without one."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            return image.getexif().get(EXIF_ORIENTATION)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
