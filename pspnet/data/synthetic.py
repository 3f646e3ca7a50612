"""Synthetic street and harbour scenes whose context classes only the whole scene can decide.

PSPNet's motivation (Zhao et al., 2017, figure 2, "mismatched relationship") is that an FCN
calls a boat on a river a car: it looks like one, and the FCN's effective receptive field is
too small to take in the water. These scenes isolate that failure.

Every scene is one of two kinds, chosen by a fair coin:

- harbour: sky, a far shore mostly of woods, ``water``, ``boat`` s, a ``sand`` beach;
- street: sky, a far shore mostly of buildings, ``road``, ``car`` s, a ``pavement``.

Everything below the horizon is drawn by the same code from the same random numbers for both
kinds: water and road share one texture, boats and cars one shape and colour scheme, sand and
pavement one texture. From the same generator state a harbour and a street scene are pixel for
pixel identical below the horizon, while their labels differ on ``CONTEXT_CLASSES``; no local
detector can do better than a coin there. The only cue is the far shore, a band at the top:
harbour shores are at least 60% woods by width (street shores buildings), and the stretch
right above a pixel is the minority for about a quarter of the columns, so only the whole
horizon decides. That is a linear function of globally pooled features (share of woods against
share of buildings), which the pyramid's 1x1 bin computes directly; a plain FCN must learn to
integrate it across the image with convolutions. ``sky``, ``building`` and ``tree`` have their
own textures, so the mean IoU mixes classes decided locally and classes decided by context.

The gap between the two networks shows only where the scene is wider than what the FCN can
integrate. A dilated ResNet-18 at output stride 8 has a theoretical receptive field of about
500 pixels; trained on 96-pixel scenes (width 16, 2,500 steps of 8 images) it labelled water and
road as well as PSPNet did (IoU 0.96 both); how large a scene opens the gap is not measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pspnet.errors import DatasetError

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "sky",
    "building",
    "tree",
    "water",
    "road",
    "boat",
    "car",
    "sand",
    "pavement",
)
SYNTHETIC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (135, 206, 235),  # sky: light blue
    (110, 110, 110),  # building: grey
    (40, 150, 40),  # tree: green
    (20, 60, 170),  # water: deep blue
    (128, 64, 128),  # road: purple, as in Cityscapes
    (255, 150, 0),  # boat: orange
    (220, 20, 60),  # car: crimson
    (235, 205, 120),  # sand: beige
    (244, 35, 232),  # pavement: pink, Cityscapes' sidewalk
)
# (harbour class, street class): drawn identically, told apart only by the scene's kind.
CONTEXT_PAIRS: tuple[tuple[str, str], ...] = (
    ("water", "road"),
    ("boat", "car"),
    ("sand", "pavement"),
)
CONTEXT_CLASSES: tuple[str, ...] = tuple(name for pair in CONTEXT_PAIRS for name in pair)

SceneKind = Literal["harbour", "street"]
Split = Literal["train", "val"]

SKY, BUILDING, TREE, WATER, ROAD, BOAT, CAR, SAND, PAVEMENT = range(len(SYNTHETIC_CLASSES))
# Label of the ground, the vehicles and the foreground strip, per kind of scene.
_LABELS = {"harbour": (WATER, BOAT, SAND), "street": (ROAD, CAR, PAVEMENT)}
# Vehicle body colours shared by boats and cars: red, white, yellow, navy, dark grey, teal.
_BODY_COLOURS = np.array(
    [[190, 40, 35], [225, 225, 220], [220, 185, 40], [35, 50, 110], [60, 60, 65], [30, 130, 130]],
    dtype=np.float32,
)
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet, what backbones expect
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SPLIT_STREAM = {"train": 0, "val": 1}


def make_scene(
    rng: np.random.Generator,
    size: int = 96,
    kind: SceneKind | None = None,
    height: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Args:
        rng: the only source of randomness; the same state gives the same scene.
        size: width in pixels (at least 32); the layout scales with it.
        kind: force ``harbour`` or ``street``. The coin is drawn either way, so
            ``make_scene(rng(s), kind="harbour")`` and ``make_scene(rng(s), kind="street")``
            are the matched pair that differs only above the horizon.
        height: image height (default ``size``). A taller scene keeps the sky and the cue
            at the top and stretches the ground below, moving the ground and the strip
            farther from the cue than a small receptive field reaches.

    Returns:
        ``(image, label)``: (height, size, 3) uint8 RGB and (height, size) uint8 class
        indices into ``SYNTHETIC_CLASSES``.
    """
    height = height or size
    if size < 32 or height < size:
        raise ValueError(f"size must be at least 32 pixels and height at least size, got {size}")
    drawn: SceneKind = "harbour" if rng.random() < 0.5 else "street"
    kind = kind or drawn
    if kind not in _LABELS:
        raise ValueError(f"kind must be 'harbour' or 'street', got {kind!r}")
    ground_class, vehicle_class, strip_class = _LABELS[kind]

    shape = (height, size)
    image = np.zeros((*shape, 3), dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    horizon = int(size * rng.uniform(0.26, 0.36))
    strip_top = _strip_boundary(rng, shape)  # (size,) first strip row of each column
    rows = np.indices(shape)[0]  # (height, size) row index of every pixel
    ground = rows >= horizon
    strip = rows >= strip_top[None, :]

    image[:] = _sky(rng, shape, horizon)
    image[ground] = _ground_texture(rng, shape)[ground]
    label[ground] = ground_class
    image[strip] = _strip_texture(rng, shape)[strip]
    label[strip] = strip_class
    _paint_vehicles(rng, image, label, horizon, int(strip_top.min()), vehicle_class)
    brightness = rng.uniform(0.85, 1.15)
    noise = rng.normal(0.0, 6.0, size=image.shape).astype(np.float32)
    # The cue comes last so both kinds consume the same random numbers for everything else.
    _paint_far_shore(rng, image, label, horizon, kind)
    image = np.clip(image * brightness + noise, 0, 255)
    return image.round().astype(np.uint8), label


Shape = tuple[int, int]


def _smooth_noise(rng: np.random.Generator, shape: Shape, cells: tuple[int, int]) -> np.ndarray:
    """(H, W) low-frequency noise of unit scale: a random (rows, cols) grid, upsampled."""
    grid = rng.normal(size=cells).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _sky(rng: np.random.Generator, shape: Shape, horizon: int) -> np.ndarray:
    top = np.array([85, 135, 210], np.float32) + rng.normal(0, 8, 3)
    bottom = np.array([185, 210, 235], np.float32) + rng.normal(0, 8, 3)
    # Sky brightens towards the horizon; below it the gradient is overpainted.
    t = np.clip(np.arange(shape[0], dtype=np.float32) / max(horizon, 1), 0, 1)[:, None, None]
    sky = (1 - t) * top + t * bottom  # (H, 1, 3)
    clouds = 8 * _smooth_noise(rng, shape, (3, 5))[..., None]  # (H, W, 1)
    return sky + clouds


def _ground_texture(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Water and road alike: slate grey-blue with wide horizontal bands and blotches."""
    base = np.array([92, 104, 116], np.float32) + rng.normal(0, 10, 3)
    rows = 12 * shape[0] // shape[1]  # band density follows the width, as in square scenes
    bands = 10 * _smooth_noise(rng, shape, (rows, 3))  # many rows, few columns: horizontal bands
    blotches = 8 * _smooth_noise(rng, shape, (6 * shape[0] // shape[1], 6))
    return base + (bands + blotches)[..., None]


def _strip_texture(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Sand and pavement alike: light beige-grey with dark and light speckles."""
    base = np.array([178, 164, 134], np.float32) + rng.normal(0, 10, 3)
    speckles = rng.choice([-28.0, 0.0, 22.0], size=shape, p=[0.07, 0.87, 0.06])
    return base + (speckles + 6 * _smooth_noise(rng, shape, (4, 8)))[..., None]


def _strip_boundary(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """(W,) first row of the foreground strip per column: a gently wavy line."""
    height, size = shape
    top = height - size * rng.uniform(0.12, 0.2)
    amplitude = size * rng.uniform(0.0, 0.025)
    phase = rng.uniform(0, 2 * np.pi)
    columns = np.arange(size)
    return np.round(top + amplitude * np.sin(2 * np.pi * columns / size + phase)).astype(int)


def _paint_vehicles(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    horizon: int,
    ground_bottom: int,
    vehicle_class: int,
) -> None:
    """One to three boat/car shapes on the ground, larger nearer the viewer, never overlapping."""
    size = image.shape[1]
    occupied = np.zeros(label.shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(10):
            depth = rng.uniform(0.25, 1.0)  # 0 at the horizon, 1 at the strip
            width = int(size * rng.uniform(0.24, 0.36) * (0.55 + 0.55 * depth))
            height = max(int(0.5 * width), 4)  # body plus cabin
            bottom = int(horizon + depth * (ground_bottom - horizon))
            left = int(rng.integers(0, size - width))
            mask, cabin, window = _vehicle_masks(label.shape, left, bottom, width, height)
            body_colour = _BODY_COLOURS[rng.integers(len(_BODY_COLOURS))] + rng.normal(0, 12, 3)
            if not (mask & occupied).any():
                break
        else:
            continue  # no free place found: fewer vehicles in this scene
        occupied |= mask
        image[mask] = body_colour
        image[cabin] = 0.5 * body_colour + 110  # lighter superstructure
        image[window] = (35, 40, 50)
        label[mask] = vehicle_class


def _vehicle_masks(
    shape: Shape, left: int, bottom: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole shape, cabin and window masks of a hull tapering to its base with a cabin on top."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]  # each (H, W)
    x = (cols - left) / width  # 0..1 across the shape
    y = (bottom - rows) / height  # 0 at the base, 1 at the roof
    body_height = 0.55
    taper = 0.12 * (1 - y / body_height)  # the base is narrower than the top of the hull
    body = (y >= 0) & (y < body_height) & (x >= taper) & (x <= 1 - taper)
    cabin = (y >= body_height) & (y < 1) & (x >= 0.28) & (x <= 0.72)
    window = (y >= 0.68) & (y < 0.86) & (x >= 0.33) & (x <= 0.67)
    return body | cabin, cabin & ~window, window


def _paint_far_shore(
    rng: np.random.Generator, image: np.ndarray, label: np.ndarray, horizon: int, kind: SceneKind
) -> None:
    """The cue: stretches of woods and buildings along the horizon; the kind owns most of it.

    Stretches in random order go to the minority (buildings in a harbour, woods in a street)
    while they fit a budget of 20-40% of the width, so the majority holds at least 60% of it
    while the stretch right above a pixel is often the minority: only the whole horizon decides.
    """
    size = image.shape[1]
    stretches = _stretches(rng, size)
    minority_budget = (1 - rng.uniform(0.6, 0.8)) * size
    for index in rng.permutation(len(stretches)):
        left, right = stretches[index]
        is_minority = right - left <= minority_budget
        minority_budget -= (right - left) * is_minority
        woods = (kind == "harbour") != is_minority
        paint = _paint_woods if woods else _paint_buildings
        paint(rng, image, label, horizon, left, right)


def _stretches(rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    """Cut the columns 0..size into consecutive (left, right) stretches of 12-30% of the width."""
    edges = [0]
    while edges[-1] < size:
        edges.append(min(edges[-1] + int(size * rng.uniform(0.12, 0.3)), size))
    return list(zip(edges[:-1], edges[1:]))


def _paint_woods(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    horizon: int,
    left: int,
    right: int,
) -> None:
    """Trees between columns left and right: dark mottled green, crowns bulging upwards."""
    size = image.shape[1]
    columns = np.arange(left, right)
    shore = horizon - size * rng.uniform(0.05, 0.09)
    top = np.full(right - left, shore)
    for _ in range(rng.integers(2, 4)):
        centre, radius = rng.uniform(left, right), size * rng.uniform(0.04, 0.09)
        bulge = np.sqrt(np.clip(radius**2 - (columns - centre) ** 2, 0, None))
        top = np.minimum(top, shore - bulge)
    rows = np.arange(image.shape[0])[:, None]
    mask = np.zeros(label.shape, dtype=bool)
    mask[:, left:right] = (rows >= np.round(top)[None, :]) & (rows < horizon)
    green = np.array([45, 100, 42], np.float32) + rng.normal(0, 8, 3)
    shape = label.shape
    leaves = 18 * _smooth_noise(rng, shape, (shape[0] // 4, size // 4))  # fine foliage blotches
    image[mask] = (green + leaves[..., None] * np.array([0.6, 1.0, 0.5], np.float32))[mask]
    label[mask] = TREE


def _paint_buildings(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    horizon: int,
    left: int,
    right: int,
) -> None:
    """Buildings between columns left and right: grey blocks with a grid of windows."""
    size = image.shape[1]
    pitch = max(size // 24, 3)  # window spacing, in pixels
    while left < right:
        width = min(int(size * rng.uniform(0.06, 0.14)), right - left)
        top = int(horizon - size * rng.uniform(0.06, 0.2))
        grey = rng.uniform(95, 165)
        colour = np.array([grey + rng.uniform(0, 20), grey, grey - rng.uniform(0, 20)])
        image[top:horizon, left : left + width] = colour
        label[top:horizon, left : left + width] = BUILDING
        for row in range(top + pitch // 2, horizon - pitch // 2, pitch):
            for col in range(left + pitch // 2, left + width - pitch // 2, pitch):
                shade = 60.0 if rng.random() < 0.5 else -45.0
                image[row : row + max(pitch // 2, 1), col : col + max(pitch // 2, 1)] += shade
        left += width


class SyntheticScenes(Dataset):
    """A reproducible stream of synthetic scenes (see the module docstring).

    Item ``i`` is drawn from a generator seeded with ``(seed, split, i)``, so it is the same
    in every process and epoch, and train and val never share a scene.

    Args:
        num_images: length of the dataset.
        size: width of each scene.
        seed: selects the stream of scenes.
        split: ``train`` or ``val``; separate streams for the same seed.
        augment: flip horizontally with probability 1/2, decided per index and epoch (call
            :meth:`set_epoch` each epoch for fresh flips).

    Items:
        ``(image, label)``: (3, size, size) float32 normalised with the ImageNet mean and std,
        and (size, size) int64 class indices into ``SYNTHETIC_CLASSES``.
    """

    classes = SYNTHETIC_CLASSES
    palette = SYNTHETIC_PALETTE

    def __init__(
        self,
        num_images: int,
        size: int = 96,
        seed: int = 0,
        split: Split = "train",
        augment: bool = False,
        height: int | None = None,
    ):
        if num_images < 0:
            raise ValueError(f"num_images must be non-negative, got {num_images}")
        if split not in _SPLIT_STREAM:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.num_images = num_images
        self.size = size
        self.height = height or size
        self.seed = seed
        self.split = split
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The scene as generated: (size, size, 3) uint8 image, (size, size) uint8 label."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} scenes")
        rng = np.random.default_rng((self.seed, _SPLIT_STREAM[self.split], index))
        return make_scene(rng, self.size, height=self.height)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.raw(index)
        if self.augment:
            flip_rng = np.random.default_rng(
                (self.seed, _SPLIT_STREAM[self.split], index, self.epoch)
            )
            if flip_rng.random() < 0.5:
                image, label = image[:, ::-1], label[:, ::-1]
        normalised = (image.astype(np.float32) / 255.0 - _MEAN) / _STD  # (H, W, 3)
        tensor = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))  # (3, H, W)
        return tensor, torch.from_numpy(label.astype(np.int64))


def write_synthetic_dataset(
    root: str | Path,
    num_train: int,
    num_val: int,
    size: int = 96,
    seed: int = 0,
    height: int | None = None,
) -> Path:
    """Write scenes as PNGs in the list-file layout that the file-based commands read.

    ``root/images/{split}_{i:05d}.png`` (RGB) and ``root/labels/{split}_{i:05d}.png``
    (single-channel class indices), listed as ``image label`` pairs relative to ``root`` in
    ``root/train.txt`` and ``root/val.txt``. The scenes are exactly
    ``SyntheticScenes(n, size, seed, split).raw(i)``.

    Args:
        root: output folder, created if missing; existing files of the same names are replaced.
        num_train: scenes in the train split.
        num_val: scenes in the val split.
        size: width of each scene.
        seed: selects the stream of scenes, as in :class:`SyntheticScenes`.
        height: height of each scene (default ``size``).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    try:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        for split, count in (("train", num_train), ("val", num_val)):
            scenes = SyntheticScenes(count, size, seed, split, height=height)
            lines = []
            for index in range(count):
                image, label = scenes.raw(index)
                name = f"{split}_{index:05d}.png"
                Image.fromarray(image).save(root / "images" / name)
                Image.fromarray(label).save(root / "labels" / name)
                lines.append(f"images/{name} labels/{name}\n")
            (root / f"{split}.txt").write_text("".join(lines))
    except OSError as error:
        raise DatasetError(
            f"cannot write the synthetic dataset under {root}: {error}; "
            "choose a folder you can write to"
        ) from error
    return root
