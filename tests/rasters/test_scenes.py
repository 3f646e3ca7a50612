"""pspnet predict on raster scenes: georeferenced, streamed outputs that QGIS reads."""

import dataclasses
import json

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")  # the geo extra, installed by make test

from rasterio.transform import from_origin  # noqa: E402

from pspnet.checkpoints import save_model  # noqa: E402
from pspnet.cli import main  # noqa: E402
from pspnet.inference import Segmenter  # noqa: E402
from pspnet.inference.protocol import segment_tensor  # noqa: E402
from pspnet.models import PSPNet  # noqa: E402

TRANSFORM = from_origin(500000.0, 4600000.0, 0.5, 0.5)  # UTM metres, 0.5 m pixels
CRS = "EPSG:32633"


def write_scene(path, height, width, bands=3, dtype="uint8", nodata=None, seed=0):
    rng = np.random.default_rng(seed)
    high = 256 if dtype == "uint8" else 4096
    pixels = rng.integers(0, high, (bands, height, width)).astype(dtype)
    if nodata is not None:
        pixels[:, :, : width // 4] = nodata  # a nodata border on the left
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype=dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as file:
        file.write(pixels)
    return pixels


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "rgb.safetensors"
    net = PSPNet(11, backbone="resnet18", base_width=4).eval()
    inference = json.dumps({"crop_size": [64, 64], "base_size": 240})
    save_model(net, path, {"dataset": "camvid", "inference": inference})
    return path


def in_memory(model, pixels):
    """The in-memory routine's labels at the scene's own resolution."""
    segmenter = Segmenter.from_checkpoint(model)
    config = dataclasses.replace(segmenter.inference, base_size=None)
    image = segmenter.normalize(np.moveaxis(pixels, 0, -1))
    return segment_tensor(segmenter.network, image, config).labels.numpy()


def predict(model, *args):
    return main(["predict", *map(str, args), "--checkpoint", str(model)])


def test_a_scene_gives_a_georeferenced_cog_with_named_coloured_classes(model, tmp_path, capsys):
    pixels = write_scene(tmp_path / "scene.tif", 300, 700, nodata=0)
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert "base_size 240 set aside" in out  # a photo-sized resize never shrinks a scene
    label = tmp_path / "out" / "scene_label.tif"
    with rasterio.open(label) as file:
        assert (file.width, file.height, file.crs.to_string()) == (700, 300, CRS)
        assert file.transform == TRANSFORM and file.nodata == 255
        assert file.profile["tiled"] and file.overviews(1)  # Cloud-Optimised: overviews inside
        names = json.loads(file.tags()["class_names"])
        colours = file.colormap(1)
        labels = file.read(1)
    assert names[3] == "Road" and colours[3][:3] == (128, 64, 128)
    assert (labels[:, :175] == 255).all()  # the nodata border
    expected = in_memory(model, pixels)
    assert np.array_equal(labels[:, 175:], expected[:, 175:])  # every valid pixel
    style = (tmp_path / "out" / "scene_label.qml").read_text()
    assert 'label="Road"' in style and 'color="#804080"' in style
    assert "<Category>Road</Category>" in (tmp_path / "out" / "scene_label.tif.aux.xml").read_text()


def test_labels_equal_the_in_memory_routine_without_nodata(model, tmp_path):
    pixels = write_scene(tmp_path / "scene.tif", 150, 210, seed=3)
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out") == 0
    with rasterio.open(tmp_path / "out" / "scene_label.tif") as file:
        labels = file.read(1)
    expected = in_memory(model, pixels)
    assert np.array_equal(labels, expected)


def test_confidence_and_polygons_with_class_names_and_areas(model, tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    write_scene(tmp_path / "scene.tif", 120, 160, nodata=0)
    args = [tmp_path / "scene.tif", "--out", tmp_path / "out", "--confidence", "--vector"]
    assert predict(model, *args) == 0
    with rasterio.open(tmp_path / "out" / "scene_confidence.tif") as file:
        confidence = file.read(1)
        assert file.crs.to_string() == CRS
    with rasterio.open(tmp_path / "out" / "scene_label.tif") as file:
        labels = file.read(1)
    assert confidence[:, :40].max() == 0 and confidence[:, 40:].min() > 0
    meta = pyogrio.read_info(tmp_path / "out" / "scene_label.gpkg")
    assert list(meta["fields"]) == ["class_id", "class_name", "area"]
    _, _, _, fields = pyogrio.raw.read(tmp_path / "out" / "scene_label.gpkg")
    ids, names, areas = fields
    assert sum(areas) == pytest.approx((labels != 255).sum() * 0.25)  # 0.5 m pixels
    assert {n for n in names} <= set(
        json.loads(rasterio.open(tmp_path / "out" / "scene_label.tif").tags()["class_names"])
    )
    assert len(ids) >= len(np.unique(labels[labels != 255]))


def test_a_second_run_skips_a_finished_scene(model, tmp_path, capsys):
    write_scene(tmp_path / "scene.tif", 80, 90)
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out") == 0
    before = (tmp_path / "out" / "scene_label.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out") == 0
    assert "1 already there" in capsys.readouterr().out
    assert (tmp_path / "out" / "scene_label.tif").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bands", "4,2,1"], "band 4 asked for, but the file has 3 band(s)"),
        (["--bands", "1,2"], "2 band(s) picked (1,2); the model takes 3"),
    ],
)
def test_bad_bands_are_reported_naming_the_file(model, tmp_path, capsys, args, message):
    write_scene(tmp_path / "scene.tif", 40, 40)
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out", *args) == 1
    err = capsys.readouterr().err
    assert "scene.tif" in err and message in err and "Traceback" not in err


def test_raster_options_for_pictures_only_are_refused(model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    assert predict(model, tmp_path / "photo.png", "--out", tmp_path / "o", "--vector") == 2
    assert "--vector: only for raster scenes" in capsys.readouterr().err


def test_a_resize_of_a_scene_beyond_the_budget_is_refused(model, tmp_path, capsys):
    write_scene(tmp_path / "scene.tif", 300, 300)
    args = [
        tmp_path / "scene.tif",
        "--out",
        tmp_path / "out",
        "--mode",
        "whole",
        "--memory-budget-mb",
        "1",
    ]
    assert predict(model, *args) == 1
    err = capsys.readouterr().err
    assert "beyond the memory budget" in err and "--mode slide --scales 1" in err


def test_a_truncated_scene_is_skipped_with_its_name(model, tmp_path, capsys):
    write_scene(tmp_path / "scene.tif", 300, 300)
    data = (tmp_path / "scene.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    assert predict(model, tmp_path / "cut.tif", "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "cut.tif" in err and "Traceback" not in err
    assert not any(p.name.endswith("_label.tif") for p in (tmp_path / "out").rglob("*"))


def test_two_torchrun_processes_share_one_scene_and_write_what_one_writes(model, tmp_path):
    from helpers import torchrun

    write_scene(tmp_path / "scene.tif", 230, 120, nodata=0)
    common = [str(tmp_path / "scene.tif"), "--checkpoint", str(model), "--confidence"]
    assert main(["predict", *common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(["predict", *common, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr
    assert "wrote 1 prediction(s)" in done.stdout and "(2 processes)" in done.stdout
    for name in ("scene_label.tif", "scene_confidence.tif"):
        with (
            rasterio.open(tmp_path / "one" / name) as one,
            rasterio.open(tmp_path / "two" / name) as two,
        ):
            assert np.array_equal(one.read(), two.read()) and one.profile == two.profile
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )  # no rank's temporary file is left


def test_a_four_band_uint16_scene_through_a_four_band_model(tmp_path):
    from pspnet.data.normalization import Normalization

    torch.manual_seed(0)
    normalization = Normalization(bands=(1, 2, 3, 4), mean=(1000.0,) * 4, std=(500.0,) * 4)
    model = tmp_path / "nir.safetensors"
    net = PSPNet(6, backbone="resnet18", base_width=4, in_channels=4).eval()
    save_model(
        net,
        model,
        {
            "normalization": normalization.to_json(),
            "inference": json.dumps({"crop_size": [48, 48]}),
        },
    )
    pixels = write_scene(tmp_path / "scene.tif", 90, 120, bands=4, dtype="uint16")
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out") == 0
    with rasterio.open(tmp_path / "out" / "scene_label.tif") as file:
        labels = file.read(1)
    assert np.array_equal(labels, in_memory(model, pixels))
    # a 3-band file for a 4-band model names what it needs
    write_scene(tmp_path / "rgb.tif", 40, 40, bands=3)
    assert predict(model, tmp_path / "rgb.tif", "--out", tmp_path / "out") == 1


def test_a_folder_of_tiles_is_shared_tile_by_tile_under_torchrun(model, tmp_path):
    from helpers import torchrun

    (tmp_path / "tiles").mkdir()
    for index in range(2):
        write_scene(tmp_path / "tiles" / f"tile_{index}.tif", 70, 90, seed=index)
    common = [str(tmp_path / "tiles"), "--checkpoint", str(model)]
    assert main(["predict", *common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(["predict", *common, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr
    assert "wrote 2 prediction(s)" in done.stdout
    for index in range(2):
        name = f"tile_{index}_label.tif"
        with (
            rasterio.open(tmp_path / "one" / name) as one,
            rasterio.open(tmp_path / "two" / name) as two,
        ):
            assert np.array_equal(one.read(), two.read())


def test_nan_in_a_float_scene_without_nodata_is_written_as_nodata(tmp_path):
    """Float bands mark missing pixels with NaN even where the file declares no nodata: they
    are nodata in the label and confidence, and a window of nothing but NaN is not run."""
    from pspnet.data.normalization import Normalization

    torch.manual_seed(0)
    normalization = Normalization(bands=(1, 2, 3), mean=(0.1,) * 3, std=(0.05,) * 3)
    model = tmp_path / "float.safetensors"
    net = PSPNet(5, backbone="resnet18", base_width=4).eval()
    metadata = {
        "normalization": normalization.to_json(),
        "inference": json.dumps({"crop_size": [48, 48]}),
    }
    save_model(net, model, metadata)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 0.2, (3, 100, 130)).astype("float32")
    pixels[:, :, :60] = np.nan  # the left 60 columns: more than a window of nothing
    profile = dict(driver="GTiff", height=100, width=130, count=3, dtype="float32", crs=CRS)
    with rasterio.open(tmp_path / "scene.tif", "w", transform=TRANSFORM, **profile) as file:
        file.write(pixels)
    out = tmp_path / "out"
    assert predict(model, tmp_path / "scene.tif", "--out", out, "--confidence") == 0
    with rasterio.open(out / "scene_label.tif") as file:
        labels = file.read(1)
    with rasterio.open(out / "scene_confidence.tif") as file:
        confidence = file.read(1)
    assert (labels[:, :60] == 255).all() and (confidence[:, :60] == 0).all()
    assert (labels[:, 60:] < 5).all() and (confidence[:, 60:] > 0).all()


def test_polygons_are_written_without_gdal_warnings(model, tmp_path, capsys):
    """The GeoPackage is staged under a .gpkg name (GDAL warns about any other suffix)."""
    write_scene(tmp_path / "scene.tif", 120, 160)
    assert predict(model, tmp_path / "scene.tif", "--out", tmp_path / "out", "--vector") == 0
    captured = capsys.readouterr()
    assert "warning" not in (captured.out + captured.err).lower()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".gpkg") == [
        "scene_label.gpkg"
    ]
