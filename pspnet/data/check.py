"""Checking a split before anyone trains on it: every problem at once, the class histogram,
the image sizes, the class weights that ``loss.class_weights: auto`` would use and the
per-band statistics that ``data.mean: auto`` would (shown for other than 8-bit RGB images).

``pspnet data check`` reads every pair; ``train`` reads the first few before its first step
(all of them when it needs the histogram for class weights), so a wrong label setup fails in
seconds with a message naming the file and the fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pspnet.data.datasets import find_pairs, size_mismatch, split_folders
from pspnet.data.images import read_bands
from pspnet.data.labels import read_label
from pspnet.data.normalization import BandStats
from pspnet.data.presets import IGNORE_INDEX, ClassOptions, DatasetPreset, printable
from pspnet.errors import DatasetError
from pspnet.settings import check_settings, setting

__all__ = ["DatasetReport", "SizeStats", "check_dataset", "median_frequency_weights"]

# Pairs ``train`` reads before its first step when it needs no histogram.
PRE_CHECK_PAIRS = 16


@dataclass
class SizeStats:
    """Image sizes of a split.

    Attributes:
        count: images measured.
        min_hw: smallest height and width (each on its own).
        max_hw: largest height and width.
        mean_hw: mean height and width.
        common: the five most frequent (H, W) with their counts.
    """

    count: int
    min_hw: tuple[int, int]
    max_hw: tuple[int, int]
    mean_hw: tuple[float, float]
    common: list[tuple[tuple[int, int], int]]

    @classmethod
    def of(cls, sizes: list[tuple[int, int]]) -> SizeStats:
        hw = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)  # (N, 2) as (H, W)
        return cls(
            count=len(sizes),
            min_hw=(int(hw[:, 0].min()), int(hw[:, 1].min())),
            max_hw=(int(hw[:, 0].max()), int(hw[:, 1].max())),
            mean_hw=(float(hw[:, 0].mean()), float(hw[:, 1].mean())),
            common=Counter(sizes).most_common(5),
        )


@dataclass
class DatasetReport:
    """What ``check_dataset`` found.

    Attributes:
        root: the dataset folder.
        split: the split checked.
        num_pairs: image/label pairs in the split.
        checked: pairs read (fewer than ``num_pairs`` when limited).
        problems: (file, message) for every problem, in pair order; the message names the
            file. Training refuses a split with problems.
        histogram: (num_classes + 1,) pixel counts per train id over the pairs without
            problems; the last entry counts ignored (255) pixels.
        image_pixels: (num_classes,) labelled pixels of the images in which each class
            appears (the denominator of median frequency balancing).
        sizes: image sizes of every image that decoded; None if none did.
        warnings: what is odd but trainable: classes never seen, labels without images.
        band_stats: per-band min, max, mean and std of the images read in the file's units
            (those of another band count than the first image's are problems instead).
    """

    root: Path
    split: str
    num_pairs: int
    checked: int
    problems: list[tuple[Path, str]]
    histogram: np.ndarray
    image_pixels: np.ndarray
    sizes: SizeStats | None
    warnings: list[str] = field(default_factory=list)
    band_stats: BandStats = field(default_factory=BandStats)

    @property
    def ok(self) -> bool:
        return not self.problems

    def class_weights(self) -> np.ndarray:
        """(num_classes,) median frequency weights of this split (what ``auto`` uses)."""
        return median_frequency_weights(self.histogram[:-1], self.image_pixels)

    def to_text(self, class_names: Sequence[str]) -> str:
        """A readable summary: problems, warnings, class shares and weights, image sizes."""
        scope = "" if self.checked == self.num_pairs else f" (first {self.checked} read)"
        lines = [
            f"{self.root} [{self.split}]: {self.num_pairs} pairs{scope}, "
            f"{len(self.problems)} problems"
        ]
        lines += [f"  {printable(message)}" for _, message in self.problems]
        lines += [f"  warning: {printable(message)}" for message in self.warnings]
        total = max(int(self.histogram.sum()), 1)
        names = [*map(printable, class_names), f"ignore ({IGNORE_INDEX})"]
        weights = [f"{w:.3f}" for w in self.class_weights()] + [""]
        width = max(len(name) for name in names)
        lines += [
            "",
            f"{'id':>3}  {'class':<{width}}  {'pixels':>14}  {'share':>7}  {'auto weight':>11}",
        ]
        ids = [str(i) for i in range(len(class_names))] + [""]
        for row in zip(ids, names, self.histogram.tolist(), weights, strict=True):
            train_id, name, pixels, weight = row
            lines.append(
                f"{train_id:>3}  {name:<{width}}  {pixels:>14,}  "
                f"{100 * pixels / total:6.2f}%  {weight:>11}"
            )
        lines.append("auto weight: median frequency balancing (loss.class_weights: auto)")
        if self.sizes is not None:
            s = self.sizes
            lines += [
                "",
                f"image sizes (H x W) of {s.count} images: min {s.min_hw[0]} x {s.min_hw[1]}, "
                f"max {s.max_hw[0]} x {s.max_hw[1]}, mean {s.mean_hw[0]:.1f} x {s.mean_hw[1]:.1f}",
            ]
            lines += [f"  {h} x {w}: {n} images" for (h, w), n in s.common]
        stats = self.band_stats
        if stats.count and (stats.bands != 3 or stats.dtypes != {"uint8"}):
            lines += ["", stats.to_text()]
        return "\n".join(lines)


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Median frequency balancing (Eigen and Fergus, 2015; SegNet's CamVid weights).

    A class's frequency is its pixels over the labelled pixels of the images it appears in;
    its weight is the median of the frequencies over its own, so the median class weighs 1
    and rarer classes more. Classes never seen get weight 1 (no pixel of theirs is weighed).

    Args:
        pixels: (C,) labelled pixels per class.
        image_pixels: (C,) labelled pixels of the images in which each class appears.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    image_pixels = np.asarray(image_pixels, dtype=np.float64)
    seen = pixels > 0
    weights = np.ones_like(pixels)
    if seen.any():
        frequency = pixels[seen] / image_pixels[seen]
        weights[seen] = np.median(frequency) / frequency
    return weights


def check_dataset(
    root: str | Path,
    preset: DatasetPreset,
    split: str,
    list_file: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    limit: int = 0,
) -> DatasetReport:
    """Read every pair of a split (or the first ``limit``) and report what is wrong with it.

    Problems: unreadable, missing or mis-sized files, label values or colours that are no
    class, and labels that hold only class 0 and ignore (0/255 binary masks read as "class 0
    and ignore", which would train on nothing). Warnings: classes never seen, label files
    without an image.

    Args:
        root: dataset folder.
        preset: classes, label mapping and layout.
        split: the split to check.
        list_file: an explicit list file (see ``find_pairs``).
        progress: called as ``progress(done, total)`` after each pair.
        limit: read only the first this many pairs (0: all).
    """
    pairs = find_pairs(root, preset, split, list_file)
    chosen = pairs[:limit] if limit else pairs
    classes = preset.num_classes
    counts = np.zeros(256, dtype=np.int64)
    image_pixels = np.zeros(classes, dtype=np.int64)
    problems: list[tuple[Path, str]] = []
    sizes: list[tuple[int, int]] = []
    band_stats = BandStats()
    for done, (image_path, label_path) in enumerate(chosen, start=1):
        label = check_pair(image_path, label_path, preset, problems, sizes, band_stats)
        if label is not None:
            image_counts = np.bincount(label.ravel(), minlength=256)
            counts += image_counts
            image_pixels += (image_counts[:classes] > 0) * image_counts[:classes].sum()
        if progress is not None:
            progress(done, len(chosen))
    histogram = np.append(counts[:classes], counts[IGNORE_INDEX])
    root = Path(root)
    problems += binary_mask_problem(root, split, preset, histogram)
    warnings = []
    if len(chosen) == len(pairs):
        warnings += unseen_classes(split, preset, histogram)
        warnings += orphan_labels(root, preset, split, pairs)
    return DatasetReport(
        root,
        split,
        len(pairs),
        len(chosen),
        problems,
        histogram,
        image_pixels,
        SizeStats.of(sizes) if sizes else None,
        warnings,
        band_stats,
    )


def check_pair(
    image_path: Path,
    label_path: Path,
    preset: DatasetPreset,
    problems: list[tuple[Path, str]],
    sizes: list[tuple[int, int]],
    band_stats: BandStats,
) -> np.ndarray | None:
    """The pair's label if it has no problem; otherwise None, with its problems recorded (and
    the image counted in ``band_stats``)."""
    image = label = None
    try:
        image = read_bands(image_path)
        sizes.append(image.shape[:2])
    except DatasetError as err:
        problems.append((image_path, str(err)))
    if image is not None and band_stats.count and image.shape[2] != band_stats.bands:
        problems.append(
            (
                image_path,
                f"{image_path}: {image.shape[2]} bands, but the images before it have "
                f"{band_stats.bands}; every image of a split needs the same bands",
            )
        )
        image = None
    elif image is not None:
        band_stats.add(image)
    try:
        label = read_label(label_path, preset)
    except DatasetError as err:
        problems.append((label_path, str(err)))
    if image is None or label is None:
        return None
    if image.shape[:2] != label.shape:
        problems.append(
            (label_path, size_mismatch(image_path, label_path, image.shape[:2], label.shape))
        )
        return None
    return label


def binary_mask_problem(
    root: Path, split: str, preset: DatasetPreset, histogram: np.ndarray
) -> list[tuple[Path, str]]:
    """0/255 masks read as "class 0 and ignore": every other class is absent, much is ignored."""
    labelled = histogram[:-1]
    if preset.num_classes < 2 or labelled[0] == 0 or labelled[1:].any() or histogram[-1] == 0:
        return []
    if preset.label_map[IGNORE_INDEX] != IGNORE_INDEX:
        return []
    first = preset.class_names[1]
    return [
        (
            root,
            f"{root} [{split}]: the labels hold only class 0 ({preset.class_names[0]}) and "
            f"{IGNORE_INDEX}, which is ignored, so class 1 ({first}) would never be trained; "
            f"for 0/{IGNORE_INDEX} binary masks set data.label_map: {{255: 1}} "
            "(--set 'data.label_map={255: 1}', or --label-map 255:1 for data check)",
        )
    ]


def unseen_classes(split: str, preset: DatasetPreset, histogram: np.ndarray) -> list[str]:
    missing = [preset.class_names[i] for i in np.flatnonzero(histogram[:-1] == 0)]
    if not missing:
        return []
    shown = ", ".join(missing[:20]) + (
        f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    )
    return [f"{len(missing)} classes never seen in {split}: {shown}"]


def orphan_labels(root: Path, preset: DatasetPreset, split: str, pairs: list) -> list[str]:
    """Label files without an image, where each split has a label folder of its own."""
    layout = preset.layout
    _, label_dir = split_folders(root, preset, split)
    if "{split}" not in layout.labels or not label_dir.is_dir():
        return []
    used = {label for _, label in pairs}
    orphans = sorted(
        p for p in label_dir.rglob(f"*{layout.label_suffix}") if p.is_file() and p not in used
    )
    if not orphans:
        return []
    shown = ", ".join(str(p) for p in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
    return [f"{len(orphans)} label files have no image in {split}: {shown}"]


@dataclass(frozen=True, kw_only=True)
class DataCheckSettings:
    """``pspnet data check``: every image/label pair of a split.

    Attributes:
        root: the dataset folder.
        dataset: preset: ade20k, voc, cityscapes, camvid, loveda, potsdam, vaihingen, isaid,
            coco_stuff10k, coco_stuff164k, pascal_context(_59) or custom.
        classes: a custom dataset's classes.
        split: the split (list name) to check.
        list_file: an `image label` list instead of SPLIT.txt.
    """

    root: Path = setting(positional=True)
    dataset: str = "camvid"
    classes: ClassOptions = field(default_factory=ClassOptions)
    split: str = "train"
    list_file: Path | None = None

    def __post_init__(self) -> None:
        check_settings(self)
