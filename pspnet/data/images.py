"""Reading images people hand us: files, folders, globs, arrays and PIL images, all checked.

Every decoder here refuses an image whose header declares more than :func:`max_pixels`
pixels before decoding it (a 100000 x 100000 PNG is a few kilobytes on disk and 30 GB in
memory), and every problem is a :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from pspnet.errors import DatasetError, ImageTooLargeError, UnsupportedImageError
from pspnet.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Containers OpenCV's FFmpeg reads that ``predict`` finds in folders (:mod:`pspnet.video`).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# Raster formats GDAL reads besides TIFF that ``predict`` finds in folders (:mod:`pspnet.rasters`).
SCENE_EXTENSIONS = (".jp2", ".vrt", ".img")

ImageInput = str | Path | np.ndarray | Image.Image
# Read by GDAL when they hold other than 8-bit RGB (:func:`read_bands`).
TIFF_EXTENSIONS = (".tif", ".tiff")


def max_pixels() -> int:
    """The pixel limit: ``$PSPNET_MAX_IMAGE_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DatasetError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a positive pixel count")
    return value


def check_pixels(height: int, width: int, source: str, limit: int | None = None) -> None:
    """Raise if an image of ``height`` x ``width`` is over ``limit`` (:func:`max_pixels`)."""
    limit = limit or max_pixels()
    if height * width > limit:
        raise ImageTooLargeError(
            f"{source}: image is {width}x{height} ({height * width:,} pixels), over the limit "
            f"of {limit:,}; downscale it, or raise the limit ({MAX_PIXELS_VARIABLE}, or the "
            "command's memory budget, --memory-budget-mb)"
        )


def read_bytes(path: Path, what: str) -> np.ndarray:
    """The whole file as uint8 bytes; ``what`` ("image", "label") names it in errors."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: missing {what} file") from err
    except OSError as err:
        raise DatasetError(f"{path}: cannot read {what} file ({err.strerror or err})") from err
    if data.size == 0:
        raise DatasetError(f"{path}: empty {what} file")
    return data


def decode(
    data: np.ndarray, flags: int, path: Path | str, what: str, limit: int | None = None
) -> np.ndarray:
    """OpenCV's decoding of ``data``, the header's size checked against the limit first.

    Only formats whose header PIL reads are decoded: what it cannot identify (Radiance HDR,
    formats only OpenCV knows, garbage) has no size to check before decoding, so it is refused.
    """
    header_size(data.tobytes(), path, what, limit)
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as err:
        raise DatasetError(f"{path}: {what} cannot be decoded ({err.err})") from err
    if image is None:
        raise DatasetError(f"{path}: {what} cannot be decoded (truncated or not an image)")
    return image


def header_size(
    data: bytes, path: Path | str, what: str, limit: int | None = None
) -> tuple[int, int]:
    """(height, width) from an encoded image's header, checked against the limit; nothing decoded.

    Formats whose header PIL cannot read are refused, as :func:`decode` refuses them.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError as err:  # PIL's own ceiling, twice MAX_IMAGE_PIXELS
        ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLargeError(
            f"{path}: {what} declares more than {ceiling:,} pixels, over the limit of "
            f"{min(ceiling, limit or max_pixels()):,}; downscale it"
        ) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UnsupportedImageError(
            f"{path}: {what} is not an image in a format whose size can be checked before "
            f"decoding ({', '.join(IMAGE_EXTENSIONS)}); convert it to PNG or JPEG"
        ) from err
    check_pixels(height, width, str(path), limit)
    return height, width


def read_image(
    path: str | Path, exif_orientation: bool = False, limit: int | None = None
) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB.

    Grey images are repeated to three channels, alpha is dropped and 16-bit images are
    reduced to 8 bits (OpenCV's colour decoding).

    Args:
        path: the image file.
        exif_orientation: turn the image upright by its EXIF orientation. Off for datasets:
            labels are read unchanged, so their images must not be turned either.
        limit: the pixel limit; :func:`max_pixels` when None.
    """
    path = Path(path)
    flags = cv2.IMREAD_COLOR | (0 if exif_orientation else cv2.IMREAD_IGNORE_ORIENTATION)
    image = decode(read_bytes(path, "image"), flags, path, "image", limit)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, source: str, limit: int | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG ...) as (H, W, 3) uint8 RGB, upright by their EXIF.

    Args:
        data: the file's bytes.
        source: names the image in errors (an upload, a URL).
        limit: the pixel limit; :func:`max_pixels` when None.
    """
    if not data:
        raise DatasetError(f"{source}: empty image")
    image = decode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR, source, "image", limit)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_bands(path: str | Path, limit: int | None = None) -> np.ndarray:
    """An image file's bands as (H, W, N), in the file's data type.

    GDAL's rasters (:data:`SCENE_EXTENSIONS`: JPEG 2000, VRT, Erdas Imagine) and TIFFs of other
    than one or three 8-bit bands (multispectral, 16-bit, float) are read with rasterio (GDAL),
    every band in the file's order; every other image as :func:`read_image` reads it, 8-bit
    RGB, as before.

    Args:
        path: the image file.
        limit: the pixel limit; :func:`max_pixels` when None.

    Raises:
        DatasetError: a missing or unreadable file, or rasterio missing for such a TIFF.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SCENE_EXTENSIONS or (
        suffix in TIFF_EXTENSIONS and path.is_file() and not _is_8bit_rgb(path)
    ):
        return read_raster(path, limit)
    return read_image(path, limit=limit)


def _is_8bit_rgb(path: Path) -> bool:
    """Whether a TIFF's first directory declares one or three unsigned 8-bit samples, or a
    palette: what OpenCV reads as it always has."""
    try:
        with open(path, "rb") as file:  # the tags alone: PIL's Image.open logs an error for
            header = file.read(8)  # more than 6 bands, which is not one here
            if header[2:3] == b"\x2b":  # BigTIFF: a 16-byte header
                header += file.read(8)
            tags = TiffImagePlugin.ImageFileDirectory_v2(header)
            file.seek(tags.next)
            tags.load(file)
    except Exception:  # not a TIFF PIL can parse: GDAL reads it, or names the problem
        return False
    samples, bits = tags.get(277, 1), tags.get(258, (1,))
    paletted, sample_format = tags.get(262) == 3, tags.get(339, 1)
    bits = bits if isinstance(bits, tuple) else (bits,)
    sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
    unsigned = set(sample_format) == {1}
    return paletted or (samples in (1, 3) and set(bits) == {8} and unsigned)


def read_raster(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Every band of a raster file (GeoTIFF ...) as (H, W, N), in its data type, via rasterio.

    Raises:
        DatasetError: rasterio missing (the ``geo`` extra), an unreadable file, or bands that
            are not real numbers.
    """
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioError
    except ImportError as err:
        raise DatasetError(
            f"{path}: a raster of other than 8-bit RGB bands is read with rasterio, which is "
            "not installed: pip install 'pspnet[geo]'"
        ) from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain TIFFs are fine
            with rasterio.open(path) as raster:
                check_pixels(raster.height, raster.width, str(path), limit)
                data = raster.read()  # (N, H, W)
    except RasterioError as err:
        raise DatasetError(f"{path}: cannot read the raster ({err})") from err
    if data.dtype.kind not in "uif":
        raise DatasetError(f"{path}: bands of type {data.dtype} are not real numbers")
    return np.ascontiguousarray(data.transpose(1, 2, 0))  # (H, W, N)


def to_rgb(image: ImageInput, limit: int | None = None) -> np.ndarray:
    """Any supported image as (H, W, 3) uint8 RGB.

    Paths are decoded with their EXIF orientation applied; grey, RGBA and 16-bit images are
    converted; float arrays in [0, 1] are scaled to 0..255. Unreadable, truncated, empty,
    oversized (over ``limit`` pixels, :func:`max_pixels` when None) or non-finite images raise
    :class:`DatasetError` naming the file or the array.
    """
    if isinstance(image, (str, Path)):
        return read_image(image, exif_orientation=True, limit=limit)
    if isinstance(image, Image.Image):
        check_pixels(image.height, image.width, "PIL image", limit)
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise DatasetError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DatasetError(f"image array is empty: shape {array.shape}")
    check_pixels(array.shape[0], array.shape[1], "image array", limit)
    if array.dtype.kind not in "uifb":
        raise DatasetError(f"image array has dtype {array.dtype}; expected numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DatasetError("image array holds NaN or infinite values")
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.dtype.kind == "f" and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def as_bands(image: np.ndarray | Image.Image, limit: int | None = None) -> np.ndarray:
    """An array or PIL image as (H, W, N) in its own type, N its bands: no conversion.

    Checked as :func:`to_rgb` checks: empty, oversized (over ``limit`` pixels,
    :func:`max_pixels` when None), not numbers, NaN or infinite values raise
    :class:`DatasetError`.
    """
    if isinstance(image, Image.Image):
        check_pixels(image.height, image.width, "PIL image", limit)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DatasetError(f"expected an (H, W) or (H, W, bands) image, got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise DatasetError(f"image array is empty: shape {array.shape}")
    check_pixels(array.shape[0], array.shape[1], "image array", limit)
    if array.dtype.kind not in "uif":
        raise DatasetError(f"image array has dtype {array.dtype}; expected real numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DatasetError(
            "image array holds NaN or infinite values (fill nodata pixels with a value first)"
        )
    return array


def expand_inputs(
    inputs: Sequence[str | Path], videos: bool = False, scenes: bool = False
) -> list[Path]:
    """Files, folders (their images, recursively), globs and ``@LIST`` files, in order, once each.

    ``@LIST`` names a text file of paths, one per line (blank lines and ``#`` comments
    skipped), so a million images need not pass through a shell.

    Args:
        inputs: what the user named.
        videos: folders also give their videos (:data:`VIDEO_EXTENSIONS`); files named
            directly, listed or matched by a glob are kept whatever they hold.
        scenes: folders also give their rasters (:data:`SCENE_EXTENSIONS`; TIFFs always).

    Raises:
        DatasetError: an input that is no file or folder and matches nothing, naming it.
    """
    extensions = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS * videos + SCENE_EXTENSIONS * scenes
    found: list[Path] = []
    for item in _with_lists(inputs):
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions)
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            if not matches:
                raise DatasetError(f"{item}: no such file, folder or matching glob")
            found += [p for p in matches if p.is_file()]
    return list(dict.fromkeys(found))


def _with_lists(inputs: Sequence[str | Path]) -> list[str | Path]:
    """``inputs`` with each ``@LIST`` replaced by the paths listed in that file."""
    items: list[str | Path] = []
    for item in inputs:
        if isinstance(item, str) and item.startswith("@"):
            try:
                lines = Path(item[1:]).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise DatasetError(f"{item[1:]}: cannot read the list of inputs ({err})") from err
            items += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        else:
            items.append(item)
    return items
