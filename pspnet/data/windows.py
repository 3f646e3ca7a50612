"""Random windows of large tiles, read from disk: training on scenes without decoding them.

Aerial datasets come as large tiles (ISPRS Potsdam's are 6,000 x 6,000 pixels) from which
training takes crops a few hundred pixels wide. With ``data.sample_window: S`` each training
sample is a random S x S window of its tile, drawn from the sample's seed (so a resumed run
draws the same windows): TIFF, JPEG 2000 and VRT images and labels are read window by window
with rasterio (GDAL reads only the tiles the window covers), other formats are decoded whole
and cut, as
torchgeo's random samplers do for raster datasets.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pspnet.data.images import SCENE_EXTENSIONS, TIFF_EXTENSIONS, read_bands
from pspnet.data.labels import read_label, stored_to_ids
from pspnet.data.presets import DatasetPreset
from pspnet.errors import DatasetError


def read_window_pair(
    image_path: Path, label_path: Path, preset: DatasetPreset, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` window (the whole tile where it is smaller) of an image and
    its label: (h, w, N) in the file's type and (h, w) uint8 train ids."""
    height, width = _size(image_path)
    rows, columns = min(size, height), min(size, width)
    top = int(rng.integers(0, height - rows + 1))
    left = int(rng.integers(0, width - columns + 1))
    window = (top, left, rows, columns)
    image = _image_window(image_path, window)
    label = _label_window(label_path, preset, window)
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"{label_path}: the label's window is {label.shape[1]}x{label.shape[0]} but its "
            f"image {image_path} gives {image.shape[1]}x{image.shape[0]}: sizes differ"
        )
    return image, label


def _windowed(path: Path) -> bool:
    """Whether GDAL reads the file's windows (TIFF, JPEG 2000, VRT ...) rather than decoding
    it whole."""
    return path.suffix.lower() in TIFF_EXTENSIONS + SCENE_EXTENSIONS


def _size(path: Path) -> tuple[int, int]:
    if _windowed(path):
        with _opened(path) as raster:
            return raster.height, raster.width
    return read_bands(path).shape[:2]


def _image_window(path: Path, window) -> np.ndarray:
    top, left, rows, columns = window
    if not _windowed(path):
        return read_bands(path)[top : top + rows, left : left + columns]
    from rasterio.windows import Window

    with _opened(path) as raster:
        data = raster.read(window=Window(left, top, columns, rows))  # (N, h, w)
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def _label_window(path: Path, preset: DatasetPreset, window) -> np.ndarray:
    top, left, rows, columns = window
    if not _windowed(path):
        return read_label(path, preset)[top : top + rows, left : left + columns]
    from rasterio.windows import Window

    with _opened(path) as raster:
        if raster.count not in (1, 3, 4) or raster.dtypes[0] != "uint8":
            raise DatasetError(
                f"{path}: a label TIFF holds 1 band of indices or 3 of colours (8-bit)"
            )
        bands = [1] if raster.count == 1 else [1, 2, 3]
        stored = raster.read(bands, window=Window(left, top, columns, rows))
    stored = stored[0] if len(bands) == 1 else np.ascontiguousarray(stored.transpose(1, 2, 0))
    return stored_to_ids(stored, preset, path)


def _opened(path: Path):
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    except ImportError as err:
        raise DatasetError(
            f"{path}: windows of raster tiles are read with rasterio: pip install 'pspnet[geo]'"
        ) from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise DatasetError(f"{path}: cannot read the raster ({err})") from err
