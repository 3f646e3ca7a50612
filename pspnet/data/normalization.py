"""Per-band normalisation: declared once, measured when asked, saved with the weights.

An image is (H, W, bands) in its file's units: 8-bit RGB, 16-bit reflectance, float32 ... A
model takes ``in_channels`` of a file's bands (``bands``, 1-based in the file's order, as GDAL
numbers them) and normalises each as ``(x - mean) / std`` with that band's mean and standard
deviation in the same units. Training resolves them from the config's ``data`` section (or
measures them, :class:`BandStats`), saves them in every checkpoint's metadata
(:data:`METADATA_KEY`), and evaluation and inference read them back, so every path normalises
an image as training did.

The default is ImageNet's statistics of 8-bit RGB, what every published model expects. A model
with it sees every image as 8-bit RGB, as it always has (:func:`pspnet.data.images.to_rgb`:
grey repeated, alpha dropped, 16 bits reduced to 8), and gets the tensors it always got.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pspnet.data.images import ImageInput, as_bands, read_bands, to_rgb
from pspnet.errors import CheckpointError, ConfigError, DatasetError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_KEY",
    "BandStats",
    "Normalization",
    "normalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The checkpoint metadata entry: {"bands": [...], "mean": [...], "std": [...]} as JSON.
METADATA_KEY = "normalization"
# Pixels x bands of float64 that BandStats converts at a time (64 MiB).
STATS_CHUNK = 1 << 23

Declared = Literal["auto"] | tuple[float, ...] | None


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(image / 255 - mean) / std`` as a float32 tensor, band by band.

    Args:
        image: (H, W, N), any real type (8-bit RGB in 0..255 for the defaults).
        mean: per-band mean as fractions of 255 (ImageNet's RGB by default).
        std: per-band standard deviation as fractions of 255.

    Returns:
        (N, H, W) float32 tensor.
    """
    scale = np.float32(1 / 255) / np.asarray(std, np.float32)
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    if not (image.dtype.isnative and image.dtype.kind in "buif"):
        image = image.astype(np.float32)  # byte-swapped: torch takes native order only
    # One pass in torch (multi-threaded, no (H, W, N) float temporaries): six times faster than
    # numpy on a 473 x 473 window, with the same float32 multiply, then subtract.
    with warnings.catch_warnings():  # a read-only array (PIL's, a memmap) is only read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (N, H, W)
    normalised = torch.empty(pixels.shape, dtype=torch.float32).copy_(pixels)  # never the input
    normalised.mul_(torch.from_numpy(scale)[:, None, None])
    return normalised.sub_(torch.from_numpy(shift)[:, None, None])


@dataclass(frozen=True)
class Normalization:
    """Which of a file's bands a model takes, and how each is normalised.

    Attributes:
        mean: per-band mean, in the file's units (ImageNet's, times 255, by default).
        std: per-band standard deviation, in the file's units.
        bands: the file's bands the model takes, 1-based, in the model's order.
    """

    mean: tuple[float, ...] = tuple(255 * m for m in IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(255 * s for s in IMAGENET_STD)
    bands: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        if not self.bands or min(self.bands) < 1:
            raise ConfigError(f"bands must be band numbers from 1, got {list(self.bands)}")
        if len(self.mean) != len(self.bands) or len(self.std) != len(self.bands):
            raise ConfigError(
                f"mean and std need one value per band ({len(self.bands)}), got "
                f"{list(self.mean)} and {list(self.std)}"
            )
        if not all(map(math.isfinite, self.mean + self.std)) or min(self.std) <= 0:
            raise ConfigError(
                f"mean must be finite and std finite and positive, got {list(self.mean)} and "
                f"{list(self.std)}"
            )

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def eight_bit_rgb(self) -> bool:
        """ImageNet's statistics of 8-bit RGB (the default): images go through ``to_rgb``."""
        return self == Normalization()

    @classmethod
    def declared(
        cls,
        mean: Declared,
        std: Declared,
        bands: Sequence[int] | None,
        in_channels: int,
        stats: BandStats | None = None,
    ) -> Normalization:
        """What a training config declares, resolved.

        Args:
            mean: per-band values in the file's units, None for ImageNet's (3 bands), or
                "auto" for the mean that ``stats`` measured.
            std: likewise.
            bands: the file's bands, 1-based; None for the first ``in_channels``.
            in_channels: the model's bands.
            stats: the training images' statistics, needed for "auto".
        """
        bands = tuple(range(1, in_channels + 1)) if bands is None else tuple(bands)
        default = cls()
        if "auto" in (mean, std):
            if stats is None or stats.count == 0:
                raise DatasetError("data.mean/std auto: no training image was measured")
            stats.check_bands(bands, "the training images")
        measured = {
            "mean": None if stats is None else stats.mean,
            "std": None if stats is None else stats.std,
        }
        values = {}
        for name, given in (("mean", mean), ("std", std)):
            if given == "auto":
                values[name] = tuple(float(measured[name][b - 1]) for b in bands)
            elif given is None:
                values[name] = getattr(default, name)
            else:
                values[name] = tuple(given)
        return cls(values["mean"], values["std"], bands)

    def check_bands(self, count: int, source: str) -> None:
        """Raise unless an image of ``count`` bands holds the bands the model takes."""
        if not self.eight_bit_rgb and max(self.bands) > count:
            raise DatasetError(
                f"{source} has {count} band{'s' * (count != 1)}; the model takes bands "
                f"{', '.join(map(str, self.bands))} of its images (data.bands)"
            )

    def pick(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """The model's bands of a file's (H, W, bands) image: (H, W, in_channels), its type kept.

        With the 8-bit RGB default, the image as 8-bit RGB (``to_rgb``), as always.
        """
        if self.eight_bit_rgb:
            return to_rgb(image)
        count = image.shape[2] if image.ndim == 3 else 1
        self.check_bands(count, source)
        if image.ndim == 2:
            image = image[..., None]
        if self.bands == tuple(range(1, count + 1)):
            return image
        return image[..., [b - 1 for b in self.bands]]  # (H, W, in_channels)

    def __call__(self, image: np.ndarray, source: str = "image") -> torch.Tensor:
        """``(image - mean) / std`` of an (H, W, in_channels) image: (in_channels, H, W) float32.

        Raises:
            DatasetError: the image has another number of bands.
        """
        count = image.shape[2] if image.ndim == 3 else 1
        if count != self.in_channels:
            raise DatasetError(f"the model takes {self.in_channels} bands; {source} has {count}")
        if image.ndim == 2:
            image = image[..., None]
        if self.eight_bit_rgb:
            return normalize(image)  # the tensors RGB models always got, bit for bit
        # Subtracted before dividing: 16-bit values keep their precision, and the padding
        # value (the mean, as float32) becomes exactly 0.
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        normalised = (image.astype(np.float32) - mean) / std  # (H, W, N)
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))  # (N, H, W)

    def of_image(self, image: ImageInput, limit: int | None = None) -> torch.Tensor:
        """Any image as the model takes it, normalised as training did: (N, H, W) float32.

        A model of the 8-bit RGB default takes what :func:`~pspnet.data.images.to_rgb` takes
        (grey, RGBA, 16-bit and [0, 1] float images converted), as always. Any other model
        takes (H, W, N) arrays of its N bands, of any real type (uint8, uint16, int16,
        float32 ...) in the training files' units; a path is read with every band
        (:func:`~pspnet.data.images.read_bands`) and the training's ``bands`` are taken.

        Args:
            image: a path, an array or a PIL image.
            limit: refuse an image of more pixels; the decoders' limit when None.

        Raises:
            DatasetError: an image of another band count ("the model takes 4 bands; image
                array has 3"), unreadable, oversized or not finite.
        """
        if self.eight_bit_rgb:
            return normalize(to_rgb(image, limit))  # (3, H, W)
        if isinstance(image, (str, Path)):
            name = str(image)
            return self(self.pick(read_bands(image, limit), name), name)
        return self(as_bands(image, limit), "image array")  # (N, H, W)

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        return cls(values["mean"], values["std"], values["bands"])

    @classmethod
    def of_metadata(cls, metadata: dict[str, str], in_channels: int, source: str) -> Normalization:
        """A checkpoint's normalisation: the one it saved, else the 8-bit RGB default.

        Raises:
            CheckpointError: the saved one is unreadable or of another band count, or a model
                of other than 3 bands saved none.
        """
        text = metadata.get(METADATA_KEY)
        if text is None:
            if in_channels == 3:
                return cls()
            raise CheckpointError(
                f"{source}: a {in_channels}-band model whose metadata holds no normalisation; "
                f"save it with metadata {{{METADATA_KEY!r}: Normalization(mean, std, bands)"
                ".to_json()}, as training does"
            )
        try:
            normalization = cls.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{source}: unreadable {METADATA_KEY} metadata ({err})") from err
        if normalization.in_channels != in_channels:
            raise CheckpointError(
                f"{source}: its normalisation has {normalization.in_channels} bands but the "
                f"model takes {in_channels}"
            )
        return normalization


@dataclass
class BandStats:
    """Per-band pixel statistics over images, accumulated one image at a time.

    Means and variances are merged as Chan et al. (1979) do, in float64, so 16-bit and float
    images of any size add up without losing precision.

    Attributes:
        count: pixels per band.
        mean: (bands,) mean of each band.
        m2: (bands,) sum of squared deviations from the mean.
        minimum: (bands,) smallest value of each band.
        maximum: (bands,) largest value of each band.
        dtypes: the images' data types, by name.
    """

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    minimum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    maximum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dtypes: set[str] = field(default_factory=set)

    @property
    def bands(self) -> int:
        return len(self.mean)

    @property
    def std(self) -> np.ndarray:
        """(bands,) population standard deviation of each band."""
        return np.sqrt(self.m2 / max(self.count, 1))

    def add(self, image: np.ndarray) -> None:
        """Count an (H, W, bands) image in; its band count must be the others'."""
        image = image[..., None] if image.ndim == 2 else image
        height, width, bands = image.shape
        if self.count and bands != self.bands:
            raise ValueError(f"an image of {bands} bands among images of {self.bands}")
        self.dtypes.add(image.dtype.name)
        rows = max(1, STATS_CHUNK // max(1, width * bands))
        for top in range(0, height, rows):
            self._merge(image[top : top + rows].reshape(-1, bands))

    def _merge(self, pixels: np.ndarray) -> None:
        values = pixels.astype(np.float64)  # (k, bands)
        count = len(values)
        if count == 0:
            return
        mean = values.mean(0)
        m2 = np.square(values - mean).sum(0)
        low, high = values.min(0), values.max(0)
        if self.count == 0:
            self.mean, self.m2, self.minimum, self.maximum = mean, m2, low, high
        else:
            total = self.count + count
            delta = mean - self.mean
            self.mean = self.mean + delta * (count / total)
            self.m2 = self.m2 + m2 + np.square(delta) * (self.count * count / total)
            self.minimum = np.minimum(self.minimum, low)
            self.maximum = np.maximum(self.maximum, high)
        self.count += count

    def check_bands(self, bands: Sequence[int], source: str) -> None:
        """Raise unless the measured images hold every band of ``bands`` (1-based)."""
        if max(bands) > self.bands:
            raise DatasetError(
                f"{source} have {self.bands} bands; data.bands asks for "
                f"{', '.join(map(str, bands))}"
            )

    def to_text(self) -> str:
        """A table: one row per band with its min, max, mean and std."""
        lines = [
            f"per-band statistics ({', '.join(sorted(self.dtypes))}, {self.count:,} pixels "
            "per band):",
            f"{'band':>4}  {'min':>12}  {'max':>12}  {'mean':>12}  {'std':>12}",
        ]
        rows = zip(self.minimum, self.maximum, self.mean, self.std, strict=True)
        for band, (low, high, mean, std) in enumerate(rows, start=1):
            lines.append(f"{band:>4}  {low:>12.6g}  {high:>12.6g}  {mean:>12.6g}  {std:>12.6g}")
        return "\n".join(lines)
