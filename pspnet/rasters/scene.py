"""Opening rasters with GDAL (through rasterio): bands, nodata and georeference, read by window.

A :class:`Scene` is any raster GDAL reads (GeoTIFF, Cloud-Optimised GeoTIFF, JPEG 2000, VRT
...), its bands picked and ordered, its nodata known; windows are read when asked for, so a
scene of any size costs one window. Values come as the file holds them (uint8, uint16, int16,
float32 ...): normalisation, not the reader, maps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspnet.data.images import SCENE_EXTENSIONS
from pspnet.errors import ConfigError, DatasetError

# What may be a raster scene rather than a picture (folders are searched for these).
RASTER_EXTENSIONS = (".tif", ".tiff", *SCENE_EXTENSIONS)
# GDAL's block cache (MiB): its default, 5% of the machine's memory, grows with the scene read
# and written until it is full; the windows are read once each, so a small cache loses nothing.
GDAL_CACHE_MB = 64
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def rasterio_module():
    """rasterio, or an error saying how to install it."""
    try:
        import rasterio
    except ImportError as err:
        raise ConfigError(
            "rasters need the geo extra (rasterio, GDAL): pip install 'pspnet[geo]'"
        ) from err
    return rasterio


def gdal_env():
    """GDAL's settings for streaming a scene (a block cache bounded by :data:`GDAL_CACHE_MB`)."""
    return rasterio_module().Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def parse_bands(text: str) -> tuple[int, ...]:
    """``4,3,2`` -> (4, 3, 2): 1-based band numbers in GDAL's order; raises ValueError."""
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected band numbers such as 4,3,2, got {text!r}") from None
    if not bands or min(bands) < 1:
        raise ValueError(f"band numbers start at 1, got {text!r}")
    return bands


class Scene:
    """An opened raster: size, bands, georeference and nodata; windows read on demand.

    Args:
        path: any raster GDAL reads.
        bands: 1-based band numbers to read, in order; None: the first ``channels`` bands,
            or red, green, blue where the file names its bands' colours and 3 are wanted.
        channels: the bands the model takes.
        nodata: the value that marks pixels without data (in every picked band); None: the
            file's own (its nodata value, mask or alpha band).

    Raises:
        DatasetError: not a raster GDAL reads, a truncated file, a band beyond the file's,
            too few bands for the model, a data type that is not real numbers.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        bands: Sequence[int] | None = None,
        channels: int = 3,
        nodata: float | None = None,
    ):
        rasterio = rasterio_module()
        self.path = Path(path)
        try:
            self._file = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as err:
            raise DatasetError(f"{path}: not a raster GDAL can read ({err})") from err
        file = self._file
        self.height, self.width, self.count = file.height, file.width, file.count
        self.crs, self.transform = file.crs, file.transform
        self.bands = self._pick(bands, channels)
        dtypes = {file.dtypes[b - 1] for b in self.bands}
        unsupported = dtypes - set(SUPPORTED_DTYPES)
        if unsupported:
            self.close()
            raise DatasetError(
                f"{path}: bands of type {', '.join(sorted(unsupported))} cannot be segmented; "
                f"supported: {', '.join(SUPPORTED_DTYPES)}"
            )
        self.dtype = np.result_type(*dtypes)
        self.nodata = nodata
        self._masked = nodata is not None or _has_mask(file)

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def may_lack_data(self) -> bool:
        """Whether some pixels may hold no data: a nodata value, a mask or alpha band, or
        float bands (NaN and infinite values)."""
        return self._masked or self.dtype.kind == "f"

    def _pick(self, bands: Sequence[int] | None, channels: int) -> tuple[int, ...]:
        if bands is None:
            if channels > self.count:
                self.close()
                raise DatasetError(
                    f"{self.path}: the model takes {channels} bands; the file has {self.count}"
                )
            return _colour_order(self._file, channels) or tuple(range(1, channels + 1))
        beyond = [b for b in bands if b > self.count]
        if beyond:
            self.close()
            raise DatasetError(
                f"{self.path}: band {beyond[0]} asked for, but the file has {self.count} "
                f"band(s) (1..{self.count})"
            )
        if len(bands) != channels:
            self.close()
            raise DatasetError(
                f"{self.path}: {len(bands)} band(s) picked ({','.join(map(str, bands))}); "
                f"the model takes {channels}"
            )
        return tuple(bands)

    def read(self, top: int, left: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """A window: (height, width, bands) in the file's type, and its valid pixels (bool).

        Raises:
            DatasetError: the window cannot be read (a truncated or corrupt file).
        """
        from rasterio.windows import Window

        window = Window(left, top, width, height)
        try:
            data = self._file.read(self.bands, window=window)  # (bands, h, w)
            valid = self._valid(data, window)
        except Exception as err:  # GDAL's read errors: a truncated or corrupt file
            raise DatasetError(
                f"{self.path}: rows {top}..{top + height}, columns {left}..{left + width} "
                f"cannot be read ({err})"
            ) from err
        if data.dtype.kind == "f":  # NaN or infinite values hold no data either
            finite = np.isfinite(data).all(axis=0)
            valid &= finite
            data = np.where(finite, data, 0).astype(data.dtype, copy=False)
        return np.moveaxis(data, 0, -1), valid

    def valid(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Which pixels of a window hold data, (height, width) bool; reads only the mask
        unless nodata is a value given here or the bands are float (NaN holds no data)."""
        if self.nodata is not None or self.dtype.kind == "f":
            return self.read(top, left, height, width)[1]
        if not self._masked:
            return np.ones((height, width), dtype=bool)
        from rasterio.windows import Window

        return self._file.dataset_mask(window=Window(left, top, width, height)) > 0

    def _valid(self, data: np.ndarray, window) -> np.ndarray:
        if self.nodata is not None:
            return (data != self.nodata).any(axis=0)
        if not self._masked:
            return np.ones(data.shape[1:], dtype=bool)
        return self._file.dataset_mask(window=window) > 0

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _has_mask(file) -> bool:
    """Whether the file says which pixels hold no data (nodata value, mask or alpha band)."""
    from rasterio.enums import MaskFlags

    return any(flags != [MaskFlags.all_valid] for flags in file.mask_flag_enums) or any(
        value is not None for value in file.nodatavals
    )


def _colour_order(file, channels: int) -> tuple[int, ...] | None:
    """The red, green and blue bands where the file names them and 3 are wanted."""
    from rasterio.enums import ColorInterp

    if channels != 3:
        return None
    colours = list(file.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(colour in colours for colour in wanted):
        return tuple(colours.index(colour) + 1 for colour in wanted)
    return None


def is_scene(path: Path, pixel_limit: int | None = None, *, any_raster: bool = False) -> bool:
    """Whether ``path`` is segmented as a raster scene (georeferenced outputs) rather than a
    picture: a raster file that is georeferenced, not 8-bit with 3 bands, or larger than
    ``pixel_limit``; with ``any_raster`` (a model of other than RGB) every raster file. False
    where rasterio is not installed or the file is not a raster."""
    if path.suffix.lower() not in RASTER_EXTENSIONS:
        return False
    if any_raster:
        return True
    try:
        import rasterio
    except ImportError:
        return False
    try:
        with rasterio.open(path) as file:
            picture = file.count in (3, 4) and set(file.dtypes) == {"uint8"}
            large = pixel_limit is not None and file.width * file.height > pixel_limit
            return file.crs is not None or not picture or large
    except rasterio.errors.RasterioIOError:
        return path.suffix.lower() in SCENE_EXTENSIONS  # its own error, later
