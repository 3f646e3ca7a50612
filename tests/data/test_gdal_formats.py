"""Training datasets of GDAL's other rasters: JPEG 2000 and VRT tiles read as their GeoTIFFs
are, whole or window by window."""

import shutil

import numpy as np
import pytest
from helpers import write_tiny_multiband
from PIL import Image

rasterio = pytest.importorskip("rasterio")

from pspnet.data import images  # noqa: E402
from pspnet.data.datasets import SegmentationDataset, find_pairs, load_pair  # noqa: E402
from pspnet.data.presets import get_preset  # noqa: E402

PRESET = get_preset("custom", num_classes=3)
# The tiles are plain TIFFs, as the other dataset tests write them.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def as_jpeg2000(tiff, target):
    """The same pixels as a lossless JPEG 2000 (GDAL's JP2OpenJPEG driver)."""
    with rasterio.open(tiff) as source:
        data, profile = source.read(), source.profile
    profile.update(driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES")
    for key in ("tiled", "blockxsize", "blockysize", "compress", "interleave"):
        profile.pop(key, None)
    with rasterio.open(target, "w", **profile) as file:
        file.write(data)


def as_vrt(tiff, target):
    """A VRT (GDAL's virtual raster) of every band of ``tiff``, written as GDAL documents it."""
    with rasterio.open(tiff) as source:
        count, width, height = source.count, source.width, source.height
        dtype = {"uint16": "UInt16", "uint8": "Byte"}[source.dtypes[0]]
    bands = "".join(
        f'<VRTRasterBand dataType="{dtype}" band="{band}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{tiff.name}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
        for band in range(1, count + 1)
    )
    target.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{bands}</VRTDataset>'
    )


@pytest.fixture
def tiles(tmp_path):
    return write_tiny_multiband(tmp_path / "tiles", num_train=2, num_val=1, size=(48, 64))


@pytest.mark.parametrize("kind", ["jp2", "vrt"])
def test_a_folder_of_jp2_or_vrt_tiles_trains_as_its_geotiffs(tiles, tmp_path, kind):
    """Images found by folder (no list file), read as the GeoTIFFs they were made from."""
    root = tmp_path / kind
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for label in (tiles / "labels" / "train").glob("*.tif"):  # a folder's labels are PNGs
        with rasterio.open(label) as file:
            Image.fromarray(file.read(1)).save(root / "labels" / "train" / f"{label.stem}.png")
    sources = tmp_path / "sources"  # a VRT's tiles live outside the image folder
    shutil.copytree(tiles / "images" / "train", sources)
    for tiff in sorted(sources.glob("*.tif")):
        target = root / "images" / "train" / tiff.with_suffix(f".{kind}").name
        if kind == "jp2":
            as_jpeg2000(tiff, target)
        else:
            as_vrt(tiff, target)
            target.write_text(target.read_text().replace(tiff.name, str(tiff)))
    pairs = find_pairs(root, PRESET, "train")
    assert [image.suffix for image, _ in pairs] == [f".{kind}"] * 2
    for image_path, label_path in pairs:
        image, label = load_pair(image_path, label_path, PRESET)
        tiff = images.read_bands(sources / image_path.with_suffix(".tif").name)
        assert image.dtype == np.uint16 and image.shape == (48, 64, 4)
        assert np.array_equal(image, tiff)
    dataset = SegmentationDataset(root, "train", PRESET, window=32)
    image, label = dataset[0, 3]
    assert tuple(image.shape[-2:]) == (32, 32) and tuple(label.shape) == (32, 32)


def test_windows_of_a_vrt_are_read_by_window(tiles, tmp_path, monkeypatch):
    for tiff in (tiles / "images" / "train").glob("*.tif"):
        moved = tiff.with_name(f"_{tiff.name}")
        tiff.rename(moved)
        as_vrt(moved, tiff.with_suffix(".vrt"))
    listing = (tiles / "train.txt").read_text().replace(".tif labels", ".vrt labels")
    (tiles / "train.txt").write_text(listing)

    def whole(*args, **kwargs):
        raise AssertionError("a VRT tile was decoded whole")

    monkeypatch.setattr(images, "read_raster", whole)
    monkeypatch.setattr("pspnet.data.windows.read_bands", whole)
    dataset = SegmentationDataset(tiles, "train", PRESET, window=24)
    image, label = dataset[1, 5]
    assert tuple(image.shape[-2:]) == (24, 24) and tuple(label.shape) == (24, 24)
