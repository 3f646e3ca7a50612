"""Image/label pairs on disk: finding them and reading them strictly.

Any problem with a sample (missing or undecodable file, a label that is not 8-bit, a colour
that is no class, a size mismatch, values that are neither a class nor ignore) raises
``DatasetError`` naming the file, so training stops on the first bad sample instead of
learning from it; :mod:`pspnet.data.check` reads a whole split and lists every problem.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from pspnet.data.images import IMAGE_EXTENSIONS, SCENE_EXTENSIONS, read_bands, read_image
from pspnet.data.labels import read_label
from pspnet.data.presets import DatasetPreset
from pspnet.data.transforms import EvalTransform, PairTransform
from pspnet.data.windows import read_window_pair
from pspnet.errors import DatasetError

__all__ = ["SegmentationDataset", "find_pairs", "read_image", "read_label"]

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
        window: int | None = None,
    ) -> None:
        """Find the split's pairs (see ``find_pairs``); nothing is read yet.

        Args:
            root: dataset folder; list-file paths are relative to it.
            split: "train", "val" ... (the preset may know the dataset's own folder name).
            preset: classes, label mapping and folder layout.
            transform: called as ``transform(image, label, rng)``; default: normalise only.
            list_file: an ``image label`` list to use instead of the preset's search.
            window: read a random ``window`` x ``window`` window of each pair, drawn from the
                sample's seed, instead of the whole image (large tiles; see
                :mod:`pspnet.data.windows`).
        """
        self.root = Path(root)
        self.split = split
        self.preset = preset
        self.transform = transform if transform is not None else EvalTransform()
        self.pairs: list[Pair] = find_pairs(root, preset, split, list_file)
        self.window = window

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (N, H, W) float32 normalised, label (H, W) int64) of pair ``key``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is None:
            # torch seeds each worker's generator differently; draw from it so samples differ.
            seed = int(torch.randint(0, 2**62, ()))
        image_path, label_path = self.pairs[index]
        rng = np.random.default_rng(seed)
        if self.window is None:
            image, label = load_pair(image_path, label_path, self.preset)
        else:
            image, label = read_window_pair(image_path, label_path, self.preset, self.window, rng)
        try:
            return self.transform(image, label, rng)
        except DatasetError as err:  # the model's bands are not in this image
            raise DatasetError(f"{image_path}: {err}") from err


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
        suffix = layout.image_suffix or " or ".join(IMAGE_EXTENSIONS + SCENE_EXTENSIONS)
        raise DatasetError(f"{image_dir}: no images ending in {suffix}")
    return pairs


def image_stem(relative: Path, suffix: str) -> str | None:
    """``city/a_leftImg8bit.png`` -> ``city/a``; None for files that are not images."""
    name = relative.as_posix()
    if suffix:
        return name[: -len(suffix)] if name.endswith(suffix) else None
    if relative.suffix.lower() not in IMAGE_EXTENSIONS + SCENE_EXTENSIONS:
        return None
    return str(PurePosixPath(name).with_suffix(""))


def load_pair(image_path: Path, label_path: Path, preset: DatasetPreset) -> tuple[np.ndarray, ...]:
    """(image (H, W, N) of the file's bands and type, label (H, W) uint8 train ids), sizes
    checked; N is 3 and the type uint8 for every image but multi-band TIFFs (``read_bands``).
    """
    image = read_bands(image_path)
    label = read_label(label_path, preset)
    if image.shape[:2] != label.shape:
        raise DatasetError(size_mismatch(image_path, label_path, image.shape[:2], label.shape))
    return image, label


def size_mismatch(image_path: Path, label_path: Path, image_hw: tuple, label_hw: tuple) -> str:
    return (
        f"{label_path}: label is {label_hw[1]}x{label_hw[0]} (WxH) but its image "
        f"{image_path} is {image_hw[1]}x{image_hw[0]}"
    )
