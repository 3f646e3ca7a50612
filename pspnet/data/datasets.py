"""Image/label pairs on disk: finding them, reading them strictly, and checking a whole split.

Any problem with a sample (missing or undecodable file, a label that is not 8-bit
single-channel, a size mismatch, values that are neither a class nor ignore) raises
``DatasetError`` naming the file, so training stops on the first bad sample instead of
learning from it; ``check_dataset`` reads every pair and lists all problems at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pspnet.data.images import IMAGE_EXTENSIONS, decode, read_bytes, read_image
from pspnet.data.presets import IGNORE_INDEX, DatasetPreset
from pspnet.data.transforms import EvalTransform, PairTransform
from pspnet.errors import DatasetError

__all__ = [
    "DatasetReport",
    "SegmentationDataset",
    "SizeStats",
    "check_dataset",
    "find_pairs",
    "read_image",
    "read_label",
]

Pair = tuple[Path, Path]


class SegmentationDataset(Dataset):
    """(image, label) samples of one split, labels mapped to train ids by the preset.

    ``dataset[i]`` draws its augmentation from torch's per-worker random stream;
    ``dataset[i, seed]`` from ``np.random.default_rng(seed)``, so the same seed gives the same
    sample whatever worker loads it and after a resume.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        preset: DatasetPreset,
        transform: PairTransform | None = None,
        list_file: str | Path | None = None,
    ) -> None:
        """Find the split's pairs (see ``find_pairs``); nothing is read yet.

        Args:
            root: dataset folder; list-file paths are relative to it.
            split: "train", "val" ... (the preset may know the dataset's own folder name).
            preset: classes, label mapping and folder layout.
            transform: called as ``transform(image, label, rng)``; default: normalise only.
            list_file: an ``image label`` list to use instead of the preset's search.
        """
        self.root = Path(root)
        self.split = split
        self.preset = preset
        self.transform = transform if transform is not None else EvalTransform()
        self.pairs: list[Pair] = find_pairs(root, preset, split, list_file)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (3, H, W) float32 normalised, label (H, W) int64) of pair ``key``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is None:
            # torch seeds each worker's generator differently; draw from it so samples differ.
            seed = int(torch.randint(0, 2**62, ()))
        image, label = load_pair(*self.pairs[index], self.preset)
        return self.transform(image, label, np.random.default_rng(seed))


def find_pairs(
    root: str | Path, preset: DatasetPreset, split: str, list_file: str | Path | None = None
) -> list[Pair]:
    """The (image, label) paths of a split: from a list file, else by pairing folders.

    The list is ``list_file`` if given (as a path, else relative to ``root``), otherwise the
    first of the preset's list names found in ``root`` (``{split}.txt`` first). Without a list,
    every image below the preset's image folder is paired with the label at the same relative
    path and stem in the label folder; missing labels surface when the pair is read.

    Args:
        root: dataset folder.
        preset: gives the folder layout.
        split: the split's name.
        list_file: an explicit list file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder")
    if list_file is not None:
        path = Path(list_file)
        path = path if path.is_file() else root / path
        if not path.is_file():
            raise DatasetError(f"{list_file}: no such list file (also looked in {root})")
        return read_list(path, root, preset, split)
    for name in preset.layout.list_candidates(split):
        if (root / name).is_file():
            return read_list(root / name, root, preset, split)
    return pair_folders(root, preset, split)


def split_folders(root: Path, preset: DatasetPreset, split: str) -> tuple[Path, Path]:
    """The split's (image folder, label folder)."""
    layout = preset.layout
    name = layout.folder_name(split)
    return root / layout.images.format(split=name), root / layout.labels.format(split=name)


def read_list(path: Path, root: Path, preset: DatasetPreset, split: str) -> list[Pair]:
    """Pairs of an ``image label`` list (semseg's format); a lone name is a stem."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the list file ({err})") from err
    image_dir, label_dir = split_folders(root, preset, split)
    layout = preset.layout
    pairs = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) == 2:
            pairs.append((root / fields[0], root / fields[1]))
        elif len(fields) == 1 and layout.image_suffix:
            stem = fields[0]
            pairs.append(
                (image_dir / (stem + layout.image_suffix), label_dir / (stem + layout.label_suffix))
            )
        elif fields:
            raise DatasetError(
                f"{path}:{number}: expected 'image label' (two paths relative to {root}), "
                f"found {len(fields)} fields: {line.strip()!r}"
            )
    if not pairs:
        raise DatasetError(f"{path}: the list file names no images")
    return pairs


def pair_folders(root: Path, preset: DatasetPreset, split: str) -> list[Pair]:
    """Every image below the split's image folder with its label at the same stem."""
    layout = preset.layout
    image_dir, label_dir = split_folders(root, preset, split)
    tried = ", ".join(layout.list_candidates(split))
    if "{split}" not in layout.images:
        raise DatasetError(
            f"{root}: no list file for split {split!r} (tried {tried}); {preset.name} keeps "
            f"every split in {layout.images}/, so the split needs a list file"
        )
    if not image_dir.is_dir():
        raise DatasetError(
            f"{root}: found neither a list file for split {split!r} (tried {tried}) nor the "
            f"image folder {image_dir}; see pspnet.data.presets for the {preset.name} layout"
        )
    pairs = []
    for image in sorted(image_dir.rglob("*")):
        stem = image_stem(image.relative_to(image_dir), layout.image_suffix)
        if stem is not None and image.is_file():
            pairs.append((image, label_dir / (stem + layout.label_suffix)))
    if not pairs:
        suffix = layout.image_suffix or " or ".join(IMAGE_EXTENSIONS)
        raise DatasetError(f"{image_dir}: no images ending in {suffix}")
    return pairs


def image_stem(relative: Path, suffix: str) -> str | None:
    """``city/a_leftImg8bit.png`` -> ``city/a``; None for files that are not images."""
    name = relative.as_posix()
    if suffix:
        return name[: -len(suffix)] if name.endswith(suffix) else None
    if relative.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    return str(PurePosixPath(name).with_suffix(""))


def read_label(path: str | Path, preset: DatasetPreset) -> np.ndarray:
    """A label file as (H, W) uint8 train ids (``preset.label_map`` applied), validated."""
    path = Path(path)
    stored = decode(read_bytes(path, "label"), cv2.IMREAD_UNCHANGED, path, "label")
    if stored.ndim != 2:
        raise DatasetError(
            f"{path}: label has {stored.shape[2]} channels; labels must be single-channel "
            "PNGs of class indices (convert colour or palette PNGs to indices first)"
        )
    if stored.dtype != np.uint8:
        raise DatasetError(f"{path}: label is {stored.dtype}; labels must be 8-bit PNGs")
    label = preset.label_map[stored]
    invalid = (label >= preset.num_classes) & (label != IGNORE_INDEX)
    if invalid.any():
        values = np.unique(stored[invalid]).tolist()
        shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
        raise DatasetError(
            f"{path}: label values {shown} are not classes of the {preset.name!r} preset "
            f"({preset.num_classes} classes, {IGNORE_INDEX} ignored); is this the right preset?"
        )
    return label


def load_pair(image_path: Path, label_path: Path, preset: DatasetPreset) -> tuple[np.ndarray, ...]:
    """(image (H, W, 3) uint8 RGB, label (H, W) uint8 train ids), sizes checked."""
    image = read_image(image_path)
    label = read_label(label_path, preset)
    if image.shape[:2] != label.shape:
        raise DatasetError(size_mismatch(image_path, label_path, image.shape[:2], label.shape))
    return image, label


def size_mismatch(image_path: Path, label_path: Path, image_hw: tuple, label_hw: tuple) -> str:
    return (
        f"{label_path}: label is {label_hw[1]}x{label_hw[0]} (WxH) but its image "
        f"{image_path} is {image_hw[1]}x{image_hw[0]}"
    )


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
        problems: (file, message) for every problem, in pair order; the message names the file.
        histogram: (num_classes + 1,) pixel counts per train id over the pairs without
            problems; the last entry counts ignored (255) pixels.
        sizes: image sizes of every image that decoded; None if none did.
    """

    root: Path
    split: str
    num_pairs: int
    problems: list[tuple[Path, str]]
    histogram: np.ndarray
    sizes: SizeStats | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self, class_names: tuple[str, ...] | list[str]) -> str:
        """A readable summary: problems, class pixel shares and image sizes."""
        lines = [
            f"{self.root} [{self.split}]: {self.num_pairs} pairs, {len(self.problems)} problems"
        ]
        lines += [f"  {message}" for _, message in self.problems]
        total = max(int(self.histogram.sum()), 1)
        width = max(len(name) for name in [*class_names, f"ignore ({IGNORE_INDEX})"])
        lines += ["", f"{'id':>3}  {'class':<{width}}  {'pixels':>14}  {'share':>7}"]
        names = [*class_names, f"ignore ({IGNORE_INDEX})"]
        ids = [str(i) for i in range(len(class_names))] + [""]
        for train_id, name, pixels in zip(ids, names, self.histogram.tolist(), strict=True):
            lines.append(
                f"{train_id:>3}  {name:<{width}}  {pixels:>14,}  {100 * pixels / total:6.2f}%"
            )
        if self.sizes is not None:
            s = self.sizes
            lines += [
                "",
                f"image sizes (H x W) of {s.count} images: min {s.min_hw[0]} x {s.min_hw[1]}, "
                f"max {s.max_hw[0]} x {s.max_hw[1]}, mean {s.mean_hw[0]:.1f} x {s.mean_hw[1]:.1f}",
            ]
            lines += [f"  {h} x {w}: {n} images" for (h, w), n in s.common]
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    preset: DatasetPreset,
    split: str,
    list_file: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """Read every pair of a split and report all problems, class pixels and image sizes.

    Args:
        root: dataset folder.
        preset: classes, label mapping and layout.
        split: the split to check.
        list_file: an explicit list file (see ``find_pairs``).
        progress: called as ``progress(done, total)`` after each pair.
    """
    pairs = find_pairs(root, preset, split, list_file)
    counts = np.zeros(256, dtype=np.int64)
    problems: list[tuple[Path, str]] = []
    sizes: list[tuple[int, int]] = []
    for done, (image_path, label_path) in enumerate(pairs, start=1):
        label = check_pair(image_path, label_path, preset, problems, sizes)
        if label is not None:
            counts += np.bincount(label.ravel(), minlength=256)
        if progress is not None:
            progress(done, len(pairs))
    histogram = np.append(counts[: preset.num_classes], counts[IGNORE_INDEX])
    return DatasetReport(
        Path(root), split, len(pairs), problems, histogram, SizeStats.of(sizes) if sizes else None
    )


def check_pair(
    image_path: Path,
    label_path: Path,
    preset: DatasetPreset,
    problems: list[tuple[Path, str]],
    sizes: list[tuple[int, int]],
) -> np.ndarray | None:
    """The pair's label if it has no problem; otherwise None, with its problems recorded."""
    image = label = None
    try:
        image = read_image(image_path)
        sizes.append(image.shape[:2])
    except DatasetError as err:
        problems.append((image_path, str(err)))
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
