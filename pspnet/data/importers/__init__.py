"""Annotation exports (COCO, LabelMe, CVAT, Label Studio) turned into a ``custom`` dataset.

The dataset written is what the ``custom`` preset reads:

- ``images/{train,val,test}/REL``: each image copied unchanged; REL is its path below the
  export's images folder, subfolders kept, so two ``x.jpg`` in different folders never meet;
- ``labels/{train,val,test}/REL_WITHOUT_SUFFIX.png``: single-channel uint8 class indices
  0..N-1, 255 where nothing is annotated (or the ``background`` class);
- ``classes.txt``: one ``name R G B`` line per class, in train-id order.

The splits are the export's own where it has them (a CVAT project's Train, Validation and
Test subsets), otherwise drawn by the seed (train and val).

One reader per format (:mod:`.coco`, :mod:`.labelme`, :mod:`.cvat`, :mod:`.labelstudio`)
turns the export into samples of ordered shapes; :func:`.samples.check_sample` bounds each
image's cost before anything is decoded; :mod:`.writer` paints them one image at a time,
later shapes on top, and writes the whole dataset beside ``out`` before renaming it into place.
A shape without a label is skipped with a warning (:func:`warnings.warn`) naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pspnet.data.importers.coco import read_coco
from pspnet.data.importers.cvat import read_cvat
from pspnet.data.importers.labelme import read_labelme
from pspnet.data.importers.labelstudio import read_labelstudio
from pspnet.data.importers.samples import Annotations, Sample, check_sample
from pspnet.data.importers.writer import (
    check_labels,
    check_out,
    class_list,
    split_samples,
    write_dataset,
)
from pspnet.data.presets import IGNORE_INDEX, printable
from pspnet.errors import DatasetError
from pspnet.settings import check_settings, setting

__all__ = ["ImportFormat", "ImportReport", "import_annotations"]

ImportFormat = Literal["coco", "labelme", "cvat", "labelstudio"]

READERS: dict[str, Callable[[Path, Path | None], Annotations]] = {
    "coco": read_coco,
    "labelme": read_labelme,
    "cvat": read_cvat,
    "labelstudio": read_labelstudio,
}


@dataclass
class ImportReport:
    """What ``import_annotations`` wrote.

    Attributes:
        out: the dataset folder.
        class_names: the classes by train id, as ``classes.txt`` lists them.
        train: images in the train split.
        val: images in the val split.
        test: images in the test split (only from an export's own splits).
        pixels: (num_classes + 1,) pixel counts per class over both splits; the last entry
            counts ignored (255) pixels.
        skipped: shapes without an area, not painted, counted by kind.
        warnings: what the import worked around or found odd, one line each.
        splits_from_export: whether the splits are the export's own (CVAT's subsets).
    """

    out: Path
    class_names: tuple[str, ...]
    train: int
    val: int
    test: int
    pixels: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    splits_from_export: bool = False

    def to_text(self) -> str:
        """A readable summary: split sizes, class pixel shares, skipped shapes, warnings."""
        test = f", {self.test} test" if self.test else ""
        lines = [
            f"wrote {self.out}: {self.train + self.val + self.test} images ({self.train} train, "
            f"{self.val} val{test}), {len(self.class_names)} classes"
        ]
        if self.splits_from_export:
            lines.append("splits: the export's own (its subsets)")
        names = [*map(printable, self.class_names), f"ignore ({IGNORE_INDEX})"]
        ids = [str(i) for i in range(len(self.class_names))] + [""]
        width = max(len(name) for name in names)
        total = max(int(self.pixels.sum()), 1)
        lines.append(f"{'id':>3}  {'class':<{width}}  {'pixels':>14}  {'share':>7}")
        for train_id, name, count in zip(ids, names, self.pixels.tolist(), strict=True):
            lines.append(
                f"{train_id:>3}  {name:<{width}}  {count:>14,}  {100 * count / total:6.2f}%"
            )
        if self.skipped:
            kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.skipped.items()))
            lines.append(f"skipped shapes without an area: {kinds}")
        lines += [f"warning: {printable(warning)}" for warning in self.warnings]
        return "\n".join(lines)


def import_annotations(
    kind: ImportFormat,
    source: str | Path,
    out: str | Path,
    *,
    images: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    background: str | None = None,
    classes_file: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Write an annotation export as a ``custom`` dataset in ``out`` (new or empty).

    Args:
        kind: the export's format: "coco" (instances JSON), "labelme" (a folder of LabelMe
            JSON files, or one), "cvat" (CVAT for images 1.1 XML, or its folder; a project's
            export gives its subsets as splits) or "labelstudio" (Label Studio's JSON export).
        source: the export.
        out: the dataset folder to create; refused if it holds anything.
        images: the folder holding the images; default: each format's own place (see its
            reader).
        val_fraction: share of images for the val split, in [0, 1); at least one image
            when there are two or more. Images the export puts in a split keep it.
        seed: the split's shuffle; the same seed gives the same split.
        background: the class of pixels no shape covers (default: 255, ignored, or
            LabelMe's ``_background_`` when the classes hold it); added as class 0 if it is
            not among the classes.
        classes_file: a names file (``name [R G B]`` lines) fixing the classes' order and
            colours; a label missing from it is an error. LabelMe's ``labels.txt`` works as
            it is: its ``__ignore__`` line is the ignore value 255, not a class.
        progress: called as ``progress(done, total)`` after each image.

    Raises:
        DatasetError: a missing or invalid export, image or classes file, or an image whose
            annotations would cost more than one image's memory or CPU, naming the file.
    """
    if kind not in READERS:
        raise DatasetError(f"unknown annotation format {kind!r}; choose one of {list(READERS)}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = Path(out)
    check_out(out)  # before reading what may be a large export
    classes_file = None if classes_file is None else Path(classes_file)
    found = READERS[kind](Path(source), None if images is None else Path(images))
    for sample in found.samples:
        check_sample(sample)  # before anything is decoded or painted
    names, palette = class_list(found, background, classes_file)
    check_labels(found.samples, names, classes_file, found.ignored)
    if background is None and found.background in names:
        background = found.background
    splits = split_samples(found.samples, val_fraction, seed)
    fill = IGNORE_INDEX if background is None else names.index(background)
    splits = {split: chosen for split, chosen in splits.items() if chosen or split == "train"}
    counts, written = write_dataset(
        out, splits, names, palette, fill, progress=progress, ignored=found.ignored
    )
    pixels = np.append(counts[: len(names)], counts[IGNORE_INDEX])
    warnings = found.warnings + written + _oddities(found.samples, names, pixels, background)
    sizes = [len(splits.get(split, [])) for split in ("train", "val", "test")]
    own = any(sample.split is not None for sample in found.samples)
    return ImportReport(
        out, tuple(names), *sizes, pixels, dict(found.skipped), warnings, splits_from_export=own
    )


def _oddities(
    samples: list[Sample], names: list[str], pixels: np.ndarray, background: str | None
) -> list[str]:
    """Warnings about images without shapes and classes without pixels."""
    found = []
    bare = sum(not sample.shapes for sample in samples)
    if bare:
        filled = f"class {background!r}" if background is not None else f"{IGNORE_INDEX} (ignore)"
        found.append(f"{bare} images have no painted shape: their labels are all {filled}")
    empty = [name for name, count in zip(names, pixels.tolist()) if count == 0]
    if empty:
        found.append(f"classes without a pixel: {', '.join(map(printable, empty))}")
    return found


@dataclass(frozen=True, kw_only=True)
class ImportSettings:
    """``pspnet data import``: an annotation export turned into a custom dataset.

    Attributes:
        format: the export's format.
        source: COCO instances JSON, a LabelMe JSON file or folder, CVAT's annotations.xml
            (or its folder) or Label Studio's JSON export.
        out: the dataset folder to create (new or empty).
        images: the folder holding the images (default: beside SOURCE).
        val_fraction: share of images for the val split.
        seed: the split's shuffle.
        background: class of unannotated pixels (default: 255, ignored); added as class 0
            if new.
        classes: a names file ('name [R G B]' per line) fixing the classes' order and colours;
            LabelMe's labels.txt as it is (__ignore__ is 255, _background_ the background).
    """

    format: ImportFormat = setting(positional=True)
    source: Path = setting(positional=True)
    out: Path
    images: Path | None = None
    val_fraction: float = setting(0.2, low=0, high=1, high_open=True)
    seed: int = setting(0, low=0)
    background: str | None = setting(None, metavar="NAME")
    classes: Path | None = setting(None, metavar="FILE")

    def __post_init__(self) -> None:
        check_settings(self)
