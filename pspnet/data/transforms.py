"""The paper's training augmentation and the normalisation every image goes through.

The steps and their order are hszhao/semseg's (section 4.1 of the paper): random scale,
random rotation, random Gaussian blur, random mirror, pad to the crop size, random crop.
They are written with OpenCV directly rather than with albumentations: albumentations 2.0.8 is
its last permissively licensed release and is frozen (its successor is AGPL), and the whole
pipeline is five OpenCV calls, so a dependency would buy nothing but risk.

Every random draw comes from the ``np.random.Generator`` passed in, so a sample's augmentation
is decided by its seed alone, whatever worker computes it. Images of any number of bands and
any type are augmented as float32; OpenCV's border values hold four numbers, so its steps run
over groups of at most four bands (:func:`bandwise`), RGB in one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from pspnet.data.normalization import IMAGENET_MEAN, IMAGENET_STD, Normalization, normalize
from pspnet.data.presets import IGNORE_INDEX
from pspnet.errors import ConfigError

# IMAGENET_MEAN, IMAGENET_STD and normalize live in pspnet.data.normalization; still importable
# from here, where they were first.
__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "EvalTransform",
    "PairTransform",
    "TrainTransform",
    "normalize",
]

# (image HxWxB of a file's bands, any type; label HxW uint8 train ids; rng)
#   -> (image NxHxW float32 normalised, N the model's bands; label HxW int64)
PairTransform = Callable[
    [np.ndarray, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class Augmentation:
    """The random steps of training augmentation; each can be switched off.

    Declared once here: a training config's ``data`` section holds these fields (DataConfig
    extends this class), and :class:`AugmentConfig` adds what the transform needs besides.

    Attributes:
        crop_size: (H, W) of every training sample (473 in the paper for ADE20K and VOC).
        scale: range of the random scale factor, or None for no scaling.
        rotate: range of the random rotation in degrees (applied with p=0.5), or None.
        blur: Gaussian blur with a 5x5 kernel with p=0.5.
        flip: horizontal mirror with p=0.5.
    """

    crop_size: tuple[int, int] = (473, 473)
    scale: tuple[float, float] | None = (0.5, 2.0)
    rotate: tuple[float, float] | None = (-10.0, 10.0)
    blur: bool = True
    flip: bool = True

    def __post_init__(self) -> None:
        crop = self.crop_size
        if not (
            _pair(crop)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in crop)
        ):
            raise ConfigError(f"crop_size must be two integers >= 1 (height, width), got {crop!r}")
        if self.scale is not None and not (_range(self.scale) and self.scale[0] > 0):
            raise ConfigError(
                f"scale must be two finite numbers with 0 < low <= high, or null, got "
                f"{self.scale!r}"
            )
        if self.rotate is not None and not _range(self.rotate):
            raise ConfigError(
                f"rotate must be two finite numbers (degrees) with low <= high, or null, got "
                f"{self.rotate!r}"
            )

    def augmentation(self) -> Augmentation:
        """These fields alone (of a DataConfig, say)."""
        return Augmentation(**{f.name: getattr(self, f.name) for f in fields(Augmentation)})


@dataclass(frozen=True)
class AugmentConfig(Augmentation):
    """The training augmentation and the normalisation that follows it.

    Attributes:
        normalization: the bands taken and their mean and std (ImageNet's 8-bit RGB by
            default); the mean is also the padding value, so padding normalises to 0.
        ignore_index: label value of padded and rotated-in pixels.
    """

    normalization: Normalization = Normalization()
    ignore_index: int = IGNORE_INDEX

    @classmethod
    def of(cls, augmentation: Augmentation, **others) -> AugmentConfig:
        """``augmentation``'s steps (a DataConfig's) with the other fields given."""
        return cls(**vars(augmentation.augmentation()), **others)


def _pair(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def _range(value) -> bool:
    """(low, high): two finite numbers, low <= high."""
    finite = (
        all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        if _pair(value)
        else False
    )
    return finite and value[0] <= value[1]


def label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(label.astype(np.int64))  # (H, W)


class EvalTransform:
    """Normalisation only: evaluation sees the full image at its own size."""

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normalization = self.cfg.normalization
        return normalization(normalization.pick(image)), label_tensor(label)


class TrainTransform:
    """semseg's augmentation: scale, rotate, blur, mirror, pad, crop, then normalise."""

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()
        # semseg augments float images so the mean-coloured borders are the exact mean,
        # which normalises to 0.
        self.fill = self.cfg.normalization.mean

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        image = cfg.normalization.pick(image).astype(np.float32)  # (H, W, N)
        if cfg.scale is not None:
            image, label = random_scale(image, label, rng.uniform(*cfg.scale))
        if cfg.rotate is not None and rng.random() < 0.5:
            angle = rng.uniform(*cfg.rotate)
            image, label = rotate(image, label, angle, self.fill, cfg.ignore_index)
        if cfg.blur and rng.random() < 0.5:
            # semseg's radius 5, sigma from size
            image = bandwise(lambda part, _: cv2.GaussianBlur(part, (5, 5), 0), image)
        if cfg.flip and rng.random() < 0.5:
            image, label = bandwise(lambda part, _: cv2.flip(part, 1), image), cv2.flip(label, 1)
        image, label = pad_to(image, label, cfg.crop_size, self.fill, cfg.ignore_index)
        image, label = random_crop(image, label, cfg.crop_size, rng)
        return cfg.normalization(image), label_tensor(label)


def bandwise(
    step: Callable[[np.ndarray, tuple[float, ...]], np.ndarray],
    image: np.ndarray,
    fill: tuple[float, ...] = (),
) -> np.ndarray:
    """``step(part, part_fill)`` over groups of at most four bands: (H, W, N) in, (h, w, N) out.

    OpenCV's border value is a 4-number Scalar, and it returns one band as (h, w).
    """
    bands = image.shape[2]
    parts = [
        step(np.ascontiguousarray(image[..., i : i + 4]), tuple(fill[i : i + 4]))
        for i in range(0, bands, 4)
    ]
    out = parts[0] if len(parts) == 1 else np.concatenate([_bands(p) for p in parts], axis=2)
    return _bands(out)


def _bands(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image  # (h, w, N)


def random_scale(
    image: np.ndarray, label: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize both by ``factor``: bilinear image, nearest label (labels must not blend)."""
    h, w = label.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))  # OpenCV takes (W, H)
    image = bandwise(lambda part, _: cv2.resize(part, size, interpolation=cv2.INTER_LINEAR), image)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def rotate(
    image: np.ndarray,
    label: np.ndarray,
    angle: float,
    fill: tuple[float, ...],
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre, keeping the size; corners come in as mean colour / ignore."""
    h, w = label.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    image = bandwise(
        lambda part, value: cv2.warpAffine(
            part, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=value
        ),  # BORDER_CONSTANT is warpAffine's default
        image,
        fill,
    )
    label = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=ignore_index)
    return image, label


def pad_to(
    image: np.ndarray,
    label: np.ndarray,
    size: tuple[int, int],
    fill: tuple[float, ...],
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to at least ``size`` (H, W), split evenly on both sides as semseg does."""
    h, w = label.shape
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    top, left = pad_h // 2, pad_w // 2
    borders = (top, pad_h - top, left, pad_w - left)
    image = bandwise(
        lambda part, value: cv2.copyMakeBorder(part, *borders, cv2.BORDER_CONSTANT, value=value),
        image,
        fill,
    )
    label = cv2.copyMakeBorder(label, *borders, cv2.BORDER_CONSTANT, value=ignore_index)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` (H, W) window at a uniformly random position of an image at least that big."""
    h, w = label.shape
    top = int(rng.integers(0, h - size[0] + 1))
    left = int(rng.integers(0, w - size[1] + 1))
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    return image[window], label[window]
