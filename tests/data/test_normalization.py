"""Per-band normalisation, multi-band TIFFs, N-band augmentation and per-band statistics."""

import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import write_raster, write_tiny_multiband

from pspnet.data import normalization as normalization_module
from pspnet.data.check import check_dataset
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.images import read_bands, read_image
from pspnet.data.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BandStats,
    Normalization,
    normalize,
)
from pspnet.data.presets import get_preset
from pspnet.data.transforms import AugmentConfig, EvalTransform, TrainTransform
from pspnet.errors import CheckpointError, ConfigError, DatasetError

OFF = {"scale": None, "rotate": None, "blur": False, "flip": False}


def rgb_image(seed: int = 0, size=(30, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_the_default_is_imagenets_8_bit_rgb_and_bit_identical():
    image = rgb_image()
    default = Normalization()
    assert default.eight_bit_rgb and default.bands == (1, 2, 3)
    assert default.mean == tuple(255 * m for m in IMAGENET_MEAN)
    assert default.std == tuple(255 * s for s in IMAGENET_STD)
    assert torch.equal(default(image), normalize(image))
    assert torch.equal(EvalTransform()(image, image[..., 0])[0], normalize(image))
    assert Normalization.declared(None, None, None, 3).eight_bit_rgb
    # ImageNet's values in raw units through the general path (bands reversed, so not the
    # default): the same values to float rounding.
    reverse = Normalization(default.mean[::-1], default.std[::-1], (3, 2, 1))
    assert not reverse.eight_bit_rgb
    picked = reverse.pick(image)
    assert np.array_equal(picked, image[..., ::-1])
    torch.testing.assert_close(reverse(picked), normalize(image).flip(0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.uint8])
def test_any_type_is_normalised_in_its_own_units(dtype):
    rng = np.random.default_rng(1)
    image = rng.integers(-100 if dtype == np.int16 else 0, 200, (9, 11, 4)).astype(dtype)
    mean, std = (10.0, 20.0, 30.0, 40.0), (2.0, 4.0, 8.0, 16.0)
    tensor = Normalization(mean, std, (1, 2, 3, 4))(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (4, 9, 11)
    expected = (image.astype(np.float64) - mean) / std
    np.testing.assert_allclose(tensor.numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype",
    [
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "float16",
        "float32",
        "float64",
        "bool",
        ">u2",
        ">f4",
    ],
)
def test_normalize_is_numpys_float32_arithmetic_bit_for_bit_and_leaves_the_input(dtype):
    # torch computes it (six times faster on a window); numpy's float32 multiply-then-subtract
    # is the reference, for every type a reader gives, byte-swapped and strided views included.
    rng = np.random.default_rng(2)
    image = (rng.random((13, 17, 4)) * (2 if dtype == "bool" else 120)).astype(dtype)
    kept = image.copy()
    mean, std = (10.0, 20.0, 30.0, 40.0), (2.0, 3.0, 4.0, 5.0)
    for pixels, m, s in ((image, mean, std), (image[:, ::2, 1:], mean[1:], std[1:])):
        scale = np.float32(1 / 255) / np.asarray(s, np.float32)
        shift = np.asarray(m, np.float32) / np.asarray(s, np.float32)
        expected = (pixels.astype(np.float32) * scale - shift).transpose(2, 0, 1)
        tensor = normalize(pixels, m, s)
        assert tensor.dtype == torch.float32 and tensor.is_contiguous()
        assert np.array_equal(tensor.numpy(), expected)
    assert np.array_equal(image, kept)  # a float32 image is not normalised in place
    image.flags.writeable = False  # PIL's arrays and memmaps: read without a torch warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(normalize(image, mean, std), normalize(kept, mean, std))


def test_bands_are_picked_by_their_1_based_numbers_and_missing_ones_refused():
    image = np.arange(5 * 6 * 13, dtype=np.uint16).reshape(5, 6, 13)
    picked = Normalization((0.0,) * 4, (1.0,) * 4, (4, 3, 2, 8)).pick(image)
    assert np.array_equal(picked, image[..., [3, 2, 1, 7]])
    first = Normalization((0.0,) * 4, (1.0,) * 4, (1, 2, 3, 4))
    assert np.array_equal(first.pick(image), image[..., :4])
    with pytest.raises(DatasetError, match="x.tif has 3 bands; the model takes bands 1, 2, 3, 4"):
        first.pick(image[..., :3], "x.tif")
    with pytest.raises(DatasetError, match="the model takes 4 bands; image has 3"):
        first(image[..., :3])


def test_declared_values_and_auto():
    stats = BandStats()
    stats.add(np.stack([np.full((2, 2), v, np.uint16) for v in (1, 2, 3, 4, 5)], axis=2))
    stats.add(np.stack([np.full((2, 2), v, np.uint16) for v in (3, 4, 5, 6, 7)], axis=2))
    auto = Normalization.declared("auto", "auto", (5, 1), 2, stats)
    assert auto.mean == (6.0, 2.0) and auto.std == (1.0, 1.0) and auto.bands == (5, 1)
    given = Normalization.declared("auto", (3.0, 4.0), None, 2, stats)
    assert given.mean == (2.0, 3.0) and given.std == (3.0, 4.0) and given.bands == (1, 2)
    assert Normalization.declared(None, None, None, 3) == Normalization()
    with pytest.raises(DatasetError, match="have 5 bands; data.bands asks for 6"):
        Normalization.declared("auto", "auto", (6,), 1, stats)
    with pytest.raises(ConfigError, match="std"):
        Normalization((1.0,), (0.0,), (1,))


def test_checkpoint_metadata_round_trip_and_defaults():
    four = Normalization((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0), (4, 3, 2, 1))
    metadata = {"normalization": four.to_json()}
    assert Normalization.of_metadata(metadata, 4, "m") == four
    assert Normalization.of_metadata({}, 3, "m") == Normalization()
    with pytest.raises(CheckpointError, match="m: a 4-band model whose metadata holds no"):
        Normalization.of_metadata({}, 4, "m")
    with pytest.raises(CheckpointError, match="4 bands but the model takes 13"):
        Normalization.of_metadata(metadata, 13, "m")


def test_band_stats_equal_numpy_over_every_pixel(monkeypatch):
    monkeypatch.setattr(normalization_module, "STATS_CHUNK", 50)  # many chunks per image
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 60000, (h, w, 3)).astype(np.uint16) for h, w in ((7, 9), (12, 5), (1, 3))
    ]
    stats = BandStats()
    for image in images:
        stats.add(image)
    pixels = np.concatenate([image.reshape(-1, 3) for image in images]).astype(np.float64)
    assert stats.count == len(pixels) and stats.dtypes == {"uint16"}
    np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, pixels.std(0), rtol=1e-9)
    assert np.array_equal(stats.minimum, pixels.min(0))
    assert np.array_equal(stats.maximum, pixels.max(0))
    with pytest.raises(ValueError, match="4 bands among images of 3"):
        stats.add(np.zeros((2, 2, 4)))


def thirteen_bands() -> Normalization:
    return Normalization(tuple(100.0 * b for b in range(1, 14)), (50.0,) * 13, tuple(range(1, 14)))


def test_train_transform_pads_13_bands_with_their_mean():
    normalization = thirteen_bands()
    cfg = AugmentConfig(crop_size=(24, 28), normalization=normalization, **OFF)
    image = np.random.default_rng(3).integers(0, 3000, (16, 20, 13)).astype(np.uint16)
    label = np.ones((16, 20), np.uint8)
    tensor, target = TrainTransform(cfg)(image, label, np.random.default_rng(0))
    assert tensor.shape == (13, 24, 28) and target.shape == (24, 28)
    padded = target == 255
    assert padded.any() and (target[~padded] == 1).all()
    assert torch.equal(tensor[:, padded], torch.zeros(13, int(padded.sum())))


@pytest.mark.parametrize("seed", range(4))
def test_every_augmentation_step_treats_each_band_alike(seed):
    # 13 bands holding an RGB image cyclically come out as the RGB image's augmentation does:
    # OpenCV's steps run over groups of at most 4 bands, and each band on its own.
    rgb = Normalization()
    cyclic = Normalization(rgb.mean * 5, rgb.std * 5, tuple(range(1, 16)))
    image, label = rgb_image(seed, (30, 26)), np.zeros((30, 26), np.uint8)
    cfg = {"crop_size": (32, 32), "scale": (0.8, 1.2), "rotate": (-10.0, 10.0)}
    expected, expected_label = TrainTransform(AugmentConfig(**cfg))(
        image, label, np.random.default_rng(seed)
    )
    tensor, target = TrainTransform(AugmentConfig(normalization=cyclic, **cfg))(
        np.concatenate([image] * 5, axis=2), label, np.random.default_rng(seed)
    )
    assert torch.equal(target, expected_label)
    torch.testing.assert_close(tensor, expected.repeat(5, 1, 1), rtol=0, atol=1e-5)


def test_one_band_images_keep_their_band_axis():
    one = Normalization((5.0,), (2.0,), (1,))
    cfg = AugmentConfig(crop_size=(20, 20), normalization=one)
    image = np.random.default_rng(4).integers(0, 10, (18, 22, 1)).astype(np.int16)
    tensor, _ = TrainTransform(cfg)(image, np.zeros((18, 22), np.uint8), np.random.default_rng(1))
    assert tensor.shape == (1, 20, 20)


def test_multiband_tiffs_are_read_by_rasterio_in_their_type(tmp_path):
    pytest.importorskip("rasterio")
    bands = np.random.default_rng(5).integers(0, 60000, (4, 10, 12)).astype(np.uint16)
    image = read_bands(write_raster(tmp_path / "four.tif", bands))
    assert image.dtype == np.uint16 and np.array_equal(image, bands.transpose(1, 2, 0))
    floats = np.random.default_rng(6).normal(size=(13, 6, 7)).astype(np.float32)
    assert np.array_equal(read_bands(write_raster(tmp_path / "s2.tif", floats)).shape, (6, 7, 13))
    # 8-bit RGB TIFFs keep today's path (and need no rasterio).
    rgb = np.random.default_rng(7).integers(0, 256, (3, 10, 12)).astype(np.uint8)
    path = write_raster(tmp_path / "rgb.tif", rgb)
    assert np.array_equal(read_bands(path), read_image(path))
    assert np.array_equal(read_bands(path), rgb.transpose(1, 2, 0))


def test_a_missing_rasterio_is_named_with_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("rasterio")
    path = write_raster(tmp_path / "four.tif", np.zeros((4, 5, 5), np.uint16))
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now fails
    with pytest.raises(DatasetError, match=r"four\.tif.*pip install 'pspnet\[geo\]'"):
        read_bands(path)


def test_a_multiband_dataset_and_its_check(tmp_path):
    pytest.importorskip("rasterio")
    root = write_tiny_multiband(tmp_path / "s2", bands=4)
    preset = get_preset("custom", num_classes=3)
    normalization = Normalization((3000.0,) * 4, (1500.0,) * 4, (4, 3, 2, 1))
    transform = EvalTransform(AugmentConfig(normalization=normalization))
    image, label = SegmentationDataset(root, "train", preset, transform)[0]
    assert image.shape == (4, 24, 32) and label.shape == (24, 32) and label.max() <= 2
    raw = read_bands(root / "images/train/train_000.tif")
    expected = (raw[..., ::-1].astype(np.float64) - 3000) / 1500
    np.testing.assert_allclose(image.numpy(), expected.transpose(2, 0, 1), atol=1e-5)

    report = check_dataset(root, preset, "train")
    assert report.ok and report.band_stats.bands == 4
    pixels = np.concatenate(
        [read_bands(p).reshape(-1, 4) for p in sorted((root / "images/train").iterdir())]
    ).astype(np.float64)
    np.testing.assert_allclose(report.band_stats.mean, pixels.mean(0))
    np.testing.assert_allclose(report.band_stats.std, pixels.std(0))
    text = report.to_text(preset.class_names)
    assert "per-band statistics (uint16" in text
    low, high = int(pixels[:, 0].min()), int(pixels[:, 0].max())
    assert any(line.split()[:3] == ["1", str(low), str(high)] for line in text.splitlines())

    write_raster(root / "images/train/train_001.tif", np.zeros((3, 24, 32), np.uint16))
    report = check_dataset(root, preset, "train")
    assert [str(p.name) for p, _ in report.problems] == ["train_001.tif"]
    assert "3 bands, but the images before it have 4" in report.problems[0][1]


def test_rgb_data_check_shows_no_band_table(tiny_camvid):
    report = check_dataset(tiny_camvid, get_preset("camvid"), "train")
    assert report.band_stats.bands == 3 and report.band_stats.dtypes == {"uint8"}
    assert "per-band" not in report.to_text(get_preset("camvid").class_names)
