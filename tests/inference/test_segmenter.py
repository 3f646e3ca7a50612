import json

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.config import InferenceConfig
from pspnet.data.images import to_rgb
from pspnet.data.normalization import Normalization, normalize
from pspnet.data.presets import get_preset
from pspnet.errors import ConfigError, DatasetError
from pspnet.inference import Segmenter
from pspnet.inference.optimized.int8 import calibration_batches
from pspnet.inference.protocol import probabilities
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.models import PSPNet


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = PSPNet(11, backbone="resnet18", base_width=4).eval()
    preset = get_preset("camvid")
    path = tmp_path / "model.safetensors"
    inference = {"mode": "slide", "crop_size": [24, 24], "flip": False}
    save_model(
        model,
        path,
        {
            "class_names": json.dumps(list(preset.class_names)),
            "palette": json.dumps([list(c) for c in preset.palette]),
            "inference": json.dumps(inference),
        },
    )
    return path, model


def test_two_lines_give_labels_equal_to_the_inference_routine(checkpoint):
    path, model = checkpoint
    seg = Segmenter.from_checkpoint(path)
    image = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    labels = seg(image)
    assert labels.shape == (30, 41) and labels.dtype == np.int64
    assert seg.inference == InferenceConfig(mode="slide", crop_size=(24, 24), flip=False)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    tensor = torch.from_numpy(((image / 255 - mean) / std).transpose(2, 0, 1)).float()
    expected = probabilities(model, tensor, seg.inference)
    np.testing.assert_allclose(seg.probs(image), expected.numpy(), atol=1e-5)
    assert np.array_equal(labels, expected.argmax(0).numpy())
    assert seg.class_names[3] == "Road" and seg.palette[3] == (128, 64, 128)


def test_overrides_and_unknown_option(checkpoint):
    seg = Segmenter.from_checkpoint(
        checkpoint[0], inference=InferenceOverrides(mode="whole", scales=(0.5, 1.0))
    )
    assert seg.inference.mode == "whole" and seg.inference.scales == (0.5, 1.0)
    with pytest.raises(TypeError, match="window"):
        InferenceOverrides(window=3)
    with pytest.raises(ConfigError, match="scales must be"):
        InferenceOverrides(scales=(0.0,))


def test_path_pil_and_array_inputs_agree(checkpoint, tmp_path):
    seg = Segmenter.from_checkpoint(checkpoint[0])
    image = np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    by_array = seg(image)
    assert np.array_equal(seg(tmp_path / "a.png"), by_array)
    assert np.array_equal(seg(str(tmp_path / "a.png")), by_array)
    assert np.array_equal(seg(Image.fromarray(image)), by_array)


def test_grey_rgba_and_16_bit_images(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(to_rgb(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, 2))
    rgba = np.random.default_rng(0).integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(to_rgb(tmp_path / "rgba.png"), rgba[..., :3])
    deep = (np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    converted = to_rgb(tmp_path / "deep.png")
    assert converted.dtype == np.uint8 and converted.shape == (6, 7, 3)
    assert np.abs(converted[..., 0].astype(int) - deep // 257).max() <= 1
    assert to_rgb(deep).shape == (6, 7, 3)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = to_rgb(tmp_path / "turned.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is None:  # a truncated PNG
        Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match="bad.png"):
        to_rgb(path)
    with pytest.raises(DatasetError, match="missing"):
        to_rgb(tmp_path / "absent.png")


def test_calibration_batches_are_scale_one_views_within_the_crop(tmp_path):
    wide = np.zeros((50, 100, 3), np.uint8)
    Image.fromarray(np.full((30, 20, 3), 200, np.uint8)).save(tmp_path / "small.png")
    slide = InferenceConfig(mode="slide", crop_size=(40, 60), base_size=80)
    rgb = Normalization()
    batches = calibration_batches([wide, tmp_path / "small.png"], slide, rgb)
    assert [tuple(b.shape) for b in batches] == [(1, 3, 40, 60), (1, 3, 40, 53)]
    assert batches[1].mean() > batches[0].mean()  # normalised, not raw pixels
    kept = calibration_batches([wide], InferenceConfig(crop_size=(473, 473)), rgb)
    assert tuple(kept[0].shape) == (1, 3, 50, 100)
    assert torch.equal(kept[0][0], normalize(wide))
    with pytest.raises(DatasetError, match="missing.png"):
        calibration_batches([tmp_path / "missing.png"], slide, rgb)


def test_a_multiband_model_calibrates_int8_on_its_bands_normalised_as_trained(tmp_path):
    """int8 of a 4-band model: its calibration tiles are read with every band, the trained
    bands picked, each normalised by its own mean and std (not as 8-bit RGB)."""
    pytest.importorskip("rasterio")
    pytest.importorskip("onnxruntime")
    from helpers import write_raster

    rng = np.random.default_rng(0)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for index in range(3):  # 5-band uint16 tiles; the model takes bands 5, 3, 2, 1
        write_raster(tiles / f"t{index}.tif", rng.integers(0, 10000, (5, 40, 48), dtype=np.uint16))
    trained = Normalization(mean=(5000.0,) * 4, std=(2900.0,) * 4, bands=(5, 3, 2, 1))
    batches = calibration_batches(
        sorted(tiles.iterdir()), InferenceConfig(crop_size=(32, 32)), trained
    )
    from pspnet.data.images import read_bands

    first = read_bands(tiles / "t0.tif")[4:36, 8:40][..., [4, 2, 1, 0]]
    expected = (first.astype(np.float32) - 5000) / 2900
    assert tuple(batches[0].shape) == (1, 4, 32, 32)
    torch.testing.assert_close(batches[0][0], torch.from_numpy(expected.transpose(2, 0, 1)))

    torch.manual_seed(0)
    model = PSPNet(3, backbone="resnet18", base_width=8, in_channels=4).eval()
    path = tmp_path / "four.safetensors"
    save_model(model, path, {"normalization": trained.to_json()})
    runtime = RuntimeSettings(precision="int8", backend="onnx", calibration=(str(tiles),))
    segmenter = Segmenter.from_checkpoint(path, runtime, InferenceOverrides(crop_size=(32, 32)))
    labels = segmenter.segment(tiles / "t1.tif").labels  # a path: the trained bands picked
    assert labels.shape == (40, 48)


def test_the_default_is_the_exact_rewrite_and_none_the_plain_model(checkpoint):
    from pspnet.inference.optimized.optimize import OptimizedModel

    default = Segmenter.from_checkpoint(checkpoint[0])
    plain = Segmenter.from_checkpoint(checkpoint[0], RuntimeSettings(precision="none"))
    assert isinstance(default.model, OptimizedModel) and default.model.precision == "fp32"
    assert isinstance(plain.model, PSPNet)
    image = np.random.default_rng(2).integers(0, 256, (26, 33, 3), dtype=np.uint8)
    np.testing.assert_allclose(default.probs(image), plain.probs(image), atol=1e-5)


def test_a_path_the_device_cannot_run_is_refused_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="fp16 runs on CUDA"):
        Segmenter.from_checkpoint(
            tmp_path / "missing.safetensors", RuntimeSettings(precision="fp16")
        )
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Segmenter.from_checkpoint(tmp_path / "missing.safetensors", RuntimeSettings(device="cuda"))


def test_segment_returns_one_result_with_labels_confidence_and_shares(checkpoint):
    seg = Segmenter.from_checkpoint(checkpoint[0], inference=InferenceOverrides(mode="whole"))
    image = np.random.default_rng(3).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    result = seg.segment(image, probs=True)
    assert result.labels.dtype == np.uint8 and result.labels.shape == (30, 41)
    assert result.confidence.dtype == np.float32
    np.testing.assert_array_equal(result.labels, result.probs.argmax(0))
    np.testing.assert_array_equal(result.confidence, result.probs.max(0))
    counts = np.bincount(result.labels.ravel(), minlength=11)
    expected = {seg.class_names[c]: counts[c] / result.labels.size for c in np.flatnonzero(counts)}
    assert result.shares() == pytest.approx(expected)
    assert list(result.shares().values()) == sorted(result.shares().values(), reverse=True)
    for c, mean in result.mean_confidence().items():
        assert mean == pytest.approx(result.probs[c][result.labels == c].mean(), rel=1e-5)
    assert seg.segment(image).probs is None


def test_unknown_pixels_are_counted_as_unknown(checkpoint):
    seg = Segmenter.from_checkpoint(checkpoint[0], inference=InferenceOverrides(mode="whole"))
    image = np.random.default_rng(4).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    plain = seg.segment(image)
    cut = float(np.median(plain.confidence))
    unsure = seg.segment(image, unknown_below=cut)
    low = plain.confidence < cut
    assert (unsure.labels[low] == 255).all()
    np.testing.assert_array_equal(unsure.labels[~low], plain.labels[~low])
    assert unsure.shares()["unknown"] == pytest.approx(low.mean())
    assert unsure.unknown_share() == pytest.approx(low.mean())
    with pytest.raises(ConfigError, match="unknown_below"):
        seg.segment(image, unknown_below=1.5)


@pytest.mark.parametrize(
    ("metadata", "first"),
    [
        ({}, "class 0"),
        ({"dataset": "cityscapes"}, "road"),
        ({"class_names": json.dumps([f"mine {i}" for i in range(19)])}, "mine 0"),
    ],
)
def test_class_names_come_from_the_checkpoint_never_from_the_count(tmp_path, metadata, first):
    path = tmp_path / "m.safetensors"
    save_model(PSPNet(19, backbone="resnet18", base_width=4), path, metadata)
    seg = Segmenter.from_checkpoint(path)
    assert seg.class_names[0] == first and len(seg.class_names) == len(seg.palette) == 19


def test_rgb_models_normalise_as_always(checkpoint):
    seg = Segmenter.from_checkpoint(checkpoint[0])
    image = np.random.default_rng(2).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    assert seg.normalization.eight_bit_rgb
    assert torch.equal(seg.normalize(image), normalize(image))
    grey = image[..., 0]
    assert torch.equal(seg.normalize(grey), normalize(to_rgb(grey)))


@pytest.fixture
def four_band(tmp_path):
    torch.manual_seed(0)
    model = PSPNet(11, backbone="resnet18", base_width=4, in_channels=4).eval()
    normalization = Normalization(
        (3000.0, 2500.0, 2000.0, 4000.0), (800.0, 700.0, 600.0, 1200.0), (4, 3, 2, 8)
    )
    metadata = {
        "normalization": normalization.to_json(),
        "inference": json.dumps({"mode": "slide", "crop_size": [16, 16], "flip": True}),
    }
    save_model(model, tmp_path / "four.safetensors", metadata)
    return tmp_path / "four.safetensors", model, normalization


def test_a_4_band_uint16_image_equals_manual_normalisation_and_forward(four_band):
    path, model, normalization = four_band
    seg = Segmenter.from_checkpoint(path)
    assert seg.normalization == normalization
    image = np.random.default_rng(3).integers(0, 10000, (21, 27, 4)).astype(np.uint16)
    mean, std = np.array(normalization.mean), np.array(normalization.std)
    manual = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1)).float()  # (4, H, W)
    torch.testing.assert_close(seg.normalize(image), manual, rtol=1e-6, atol=1e-6)
    expected = probabilities(model, manual, seg.inference)
    result = seg.segment(image, probs=True)
    np.testing.assert_allclose(result.probs, expected.numpy(), atol=1e-5)
    assert np.array_equal(result.labels, expected.argmax(0).numpy())


def test_a_wrong_band_count_is_refused(four_band):
    seg = Segmenter.from_checkpoint(four_band[0])
    image = np.zeros((8, 8, 3), np.uint16)
    with pytest.raises(DatasetError, match="the model takes 4 bands; image array has 3"):
        seg.segment(image)
    with pytest.raises(DatasetError, match="NaN"):
        seg.normalize(np.full((8, 8, 4), np.nan, np.float32))


def test_a_raster_path_gives_the_bands_the_model_was_trained_on(four_band, tmp_path):
    pytest.importorskip("rasterio")
    from helpers import write_raster

    path, _, normalization = four_band
    seg = Segmenter.from_checkpoint(path)
    bands = np.random.default_rng(4).integers(0, 10000, (8, 12, 14)).astype(np.uint16)
    scene = write_raster(tmp_path / "scene.tif", bands)
    picked = bands.transpose(1, 2, 0)[..., [3, 2, 1, 7]]  # bands 4, 3, 2, 8
    assert torch.equal(seg.normalize(scene), normalization(picked))
    short = write_raster(tmp_path / "short.tif", bands[:5])
    with pytest.raises(DatasetError, match=r"short\.tif has 5 bands; the model takes bands 4"):
        seg.segment(short)
