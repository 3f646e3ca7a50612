"""Every format, masks and polygons: the file parses, names its classes, and its shapes decode
(by readers written from each tool's format, tests/annotations/annotation_decoders.py) to the
labels the writer was given."""

import base64
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from annotation_decoders import (
    brush_values,
    read_coco,
    read_cvat,
    read_labelme,
    read_labelstudio,
)
from annotation_maps import (
    NAMES,
    PALETTE,
    camvid_label,
    confidence,
    enclosed_filled,
    label_map,
    write_image,
)
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from pspnet.annotations import Prediction, annotation_writer
from pspnet.annotations.regions import find_regions
from pspnet.data.presets import get_preset
from pspnet.errors import OutputError

# pycocotools 2.0 under numpy 2 warns from its own decode; nothing we pass causes it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FORMATS = ["cvat", "coco", "labelme", "labelstudio"]


def collection(folder: Path) -> list[Prediction]:
    """Three images, two named dup.png in different folders, of increasing mean confidence
    in the order b/dup.png (0.6), c.png (0.7), a/dup.png (0.8)."""
    labels = label_map()
    items = [
        ("a/dup.png", labels, 0.6),
        ("b/dup.png", np.fliplr(labels).copy(), 0.2),
        ("c.png", np.flipud(labels).copy(), 0.4),
    ]
    return [
        Prediction(write_image(folder / name, *maps.shape), name, maps, confidence(maps, i, low))
        for i, (name, maps, low) in enumerate(items)
    ]


def export(fmt, out, predictions, names=NAMES, palette=PALETTE, **options):
    writer = annotation_writer(fmt, out, names, palette, **options)
    for prediction in predictions:
        writer.add(prediction)
    return writer.finish()


def decode(fmt, out, predictions, names=NAMES) -> dict[str, np.ndarray]:
    """Labels per image name, read back from the export."""
    if fmt == "cvat":
        return read_cvat(out / "annotations.xml")[2]
    if fmt == "coco":
        return read_coco(out / "instances.json")[1]
    if fmt == "labelme":
        return {
            p.name: read_labelme(out / "labelme" / Path(p.name).with_suffix(".json"), names)
            for p in predictions
        }
    maps, _ = read_labelstudio(out / "labelstudio.json", names)
    return {p.name: maps[Path(os.path.abspath(p.image)).as_posix()] for p in predictions}


def order(fmt, out, paths) -> list[str]:
    """The image names in the order the export lists them."""
    if fmt == "cvat":
        return [image.get("name") for image in ET.parse(out / "annotations.xml").findall("image")]
    if fmt == "coco":
        return [i["file_name"] for i in json.loads((out / "instances.json").read_text())["images"]]
    if fmt == "labelme":
        return [p.relative_to(out / "labelme").with_suffix(".png").as_posix() for p in paths[:-1]]
    tasks = json.loads((out / "labelstudio.json").read_text())
    return [task["data"]["image"] for task in tasks]


@pytest.mark.parametrize("fmt", FORMATS)
def test_masks_decode_to_exactly_the_labels(fmt, tmp_path):
    predictions = collection(tmp_path / "images")
    export(fmt, tmp_path / "out", predictions)
    decoded = decode(fmt, tmp_path / "out", predictions)
    for prediction in predictions:
        assert np.array_equal(decoded[prediction.name], prediction.labels), prediction.name


@pytest.mark.parametrize("fmt", FORMATS)
def test_exact_polygons_decode_to_the_labels_with_enclosed_255_filled(fmt, tmp_path):
    predictions = collection(tmp_path / "images")
    export(fmt, tmp_path / "out", predictions, shapes="polygons", tolerance=0)
    decoded = decode(fmt, tmp_path / "out", predictions)
    expected = enclosed_filled(label_map())
    assert np.array_equal(decoded["a/dup.png"], expected)
    assert np.array_equal(decoded["b/dup.png"], np.fliplr(expected))


@pytest.mark.parametrize("fmt", FORMATS)
def test_simplified_polygons_keep_99_percent_of_a_camvid_label(fmt, tmp_path):
    labels = camvid_label()
    preset = get_preset("camvid")
    image = write_image(tmp_path / "images" / "f.png", *labels.shape)
    prediction = Prediction(image, "f.png", labels, confidence(labels, 0))
    names = list(preset.class_names)
    export(fmt, tmp_path / "out", [prediction], names, preset.palette, shapes="polygons")
    decoded = decode(fmt, tmp_path / "out", [prediction], names)["f.png"]
    assert (decoded == labels).mean() >= 0.99


@pytest.mark.parametrize("shapes", ["masks", "polygons"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_images_come_least_confident_first(fmt, shapes, tmp_path):
    predictions = collection(tmp_path / "images")
    paths = export(fmt, tmp_path / "out", predictions, shapes=shapes)
    expected = ["b/dup.png", "c.png", "a/dup.png"]
    if fmt == "labelstudio":
        image = {p.name: Path(os.path.abspath(p.image)).as_posix() for p in predictions}
        expected = [image[name] for name in expected]
    assert order(fmt, tmp_path / "out", paths) == expected


def test_cvat_names_labels_with_colours_and_marks_shapes_automatic(tmp_path):
    predictions = collection(tmp_path / "images")
    export("cvat", tmp_path / "masks", predictions)
    export("cvat", tmp_path / "polygons", predictions, shapes="polygons")
    names, colours, _, shapes = read_cvat(tmp_path / "masks" / "annotations.xml")
    assert names == NAMES
    assert colours == ["#808080", "#804080", "#400080", "#404000", "#808000", "#c08080"]
    root = ET.parse(tmp_path / "masks" / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1"
    assert [label.findtext("type") for label in root.iter("label")] == ["any"] * len(NAMES)
    masks = shapes["a/dup.png"]
    assert {shape["tag"] for shape in masks} == {"mask"}
    assert all(s["source"] == "auto" and s["occluded"] == "0" for s in masks)
    polygons = read_cvat(tmp_path / "polygons" / "annotations.xml")[3]["a/dup.png"]
    # the road island lies in the car's hole, which lies in the ring's, which lies in sky's
    assert sorted(int(s["z_order"]) for s in polygons if s["label"] == "road") == [1, 3]


def test_cvat_runs_start_with_background_as_cvat_writes_them(tmp_path):
    labels = np.full((4, 5), 255, np.uint8)
    labels[1, 1:4] = labels[2, 1] = 0  # box 3 x 2: set, set, set / set, unset, unset
    image = write_image(tmp_path / "x.png", 4, 5)
    export("cvat", tmp_path, [Prediction(image, "x.png", labels, np.ones((4, 5), np.float32))])
    (mask,) = ET.parse(tmp_path / "annotations.xml").getroot().iter("mask")
    assert mask.get("rle") == "0, 4, 2"
    assert [mask.get(key) for key in ("left", "top", "width", "height")] == ["1", "1", "3", "2"]


def test_coco_annotations_carry_rle_scores_boxes_and_areas(tmp_path):
    predictions = collection(tmp_path / "images")
    export("coco", tmp_path, predictions)
    names, _, data = read_coco(tmp_path / "instances.json")
    assert names == NAMES
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]
    (first,) = [i for i in data["images"] if i["file_name"] == "a/dup.png"]
    annotations = [a for a in data["annotations"] if a["image_id"] == first["id"]]
    prediction = predictions[0]
    regions = find_regions(prediction.labels, prediction.confidence)
    assert len(annotations) == len(regions)
    for annotation, region in zip(annotations, regions, strict=True):
        whole = np.zeros(prediction.labels.shape, np.uint8)
        height, width = region.mask.shape
        whole[region.top : region.top + height, region.left : region.left + width] = region.mask
        encoded = coco_mask.encode(np.asfortranarray(whole))
        assert annotation["segmentation"]["counts"] == encoded["counts"].decode()
        assert annotation["iscrowd"] == 1
        assert annotation["area"] == region.area == int(coco_mask.area(encoded))
        assert annotation["bbox"] == [region.left, region.top, width, height]
        assert annotation["bbox"] == coco_mask.toBbox(encoded).tolist()
        assert annotation["score"] == pytest.approx(region.score, abs=1e-4)
        assert annotation["category_id"] == region.label + 1


def test_coco_polygons_load_in_the_coco_api(tmp_path):
    predictions = collection(tmp_path / "images")
    export("coco", tmp_path, predictions, shapes="polygons")
    api = COCO(str(tmp_path / "instances.json"))
    annotations = api.loadAnns(api.getAnnIds())
    assert {a["iscrowd"] for a in annotations} == {0}
    # pycocotools reads coordinates as pixel corners: a region 1 pixel wide has no area there
    wide = [a for a in annotations if min(a["bbox"][2:]) >= 2]
    assert len(wide) == len(annotations) - 3 * 4  # the car pixel, the line, two tree pixels
    assert all(api.annToMask(a).any() for a in wide)


@pytest.mark.parametrize("shapes", ["masks", "polygons"])
def test_labelme_files_mirror_the_names_and_lead_to_the_images(shapes, tmp_path):
    predictions = collection(tmp_path / "images")
    paths = export("labelme", tmp_path / "out", predictions, shapes=shapes)
    assert paths[-1] == tmp_path / "out" / "labelme_config.yaml"
    for prediction in predictions:
        path = tmp_path / "out" / "labelme" / Path(prediction.name).with_suffix(".json")
        data = json.loads(path.read_text())
        assert data["version"].startswith("5.")
        assert data["imageData"] is None
        assert (data["imageHeight"], data["imageWidth"]) == prediction.labels.shape
        assert (path.parent / data["imagePath"]).resolve() == prediction.image.resolve()
        kinds = {shape["shape_type"] for shape in data["shapes"]}
        assert kinds == ({"mask"} if shapes == "masks" else {"polygon"})
        assert {shape["label"] for shape in data["shapes"]} == set(NAMES[:5])


def test_labelme_config_colours_the_classes(tmp_path):
    import yaml

    export("labelme", tmp_path, collection(tmp_path / "images"))
    config = yaml.safe_load((tmp_path / "labelme_config.yaml").read_text())
    assert config["labels"] == NAMES
    assert config["shape_color"] == "manual"
    assert config["label_colors"] == {n: list(c) for n, c in zip(NAMES, PALETTE, strict=True)}


def test_labelme_image_path_leads_into_images_dir(tmp_path):
    predictions = collection(tmp_path / "elsewhere")
    export("labelme", tmp_path / "out", predictions, images_dir=tmp_path / "images")
    data = json.loads((tmp_path / "out" / "labelme" / "a" / "dup.json").read_text())
    assert data["imagePath"] == "../../../images/a/dup.png"


@pytest.mark.parametrize("shapes", ["masks", "polygons"])
def test_labelstudio_config_and_results_fit_each_other(shapes, tmp_path):
    predictions = collection(tmp_path / "images")
    export("labelstudio", tmp_path, predictions, shapes=shapes)
    view = ET.parse(tmp_path / "labelstudio_config.xml").getroot()
    assert view.tag == "View"
    assert view.find("Image").attrib == {"name": "image", "value": "$image", "zoom": "true"}
    tag = "BrushLabels" if shapes == "masks" else "PolygonLabels"
    control = view.find(tag)
    assert control.attrib == {"name": "label", "toName": "image"}
    assert [(label.get("value"), label.get("background")) for label in control] == [
        (name, "#{:02x}{:02x}{:02x}".format(*colour))
        for name, colour in zip(NAMES, PALETTE, strict=True)
    ]
    tasks = json.loads((tmp_path / "labelstudio.json").read_text())
    kind = "brushlabels" if shapes == "masks" else "polygonlabels"
    for task, prediction in zip(tasks, [predictions[i] for i in (1, 2, 0)], strict=True):
        (result,) = task["predictions"]
        assert result["model_version"] == "pspnet"
        assert result["score"] == pytest.approx(float(prediction.confidence.mean()), abs=1e-4)
        ids = [region["id"] for region in result["result"]]
        assert len(set(ids)) == len(ids)
        for region in result["result"]:
            assert region["type"] == kind
            assert (region["from_name"], region["to_name"]) == ("label", "image")
            assert (region["original_width"], region["original_height"]) == (40, 32)
            assert region["image_rotation"] == 0
            assert 0 < region["score"] <= 1
            assert region["value"][kind][0] in NAMES
            if kind == "brushlabels":
                assert region["value"]["format"] == "rle"
            else:
                assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in region["value"]["points"])


def test_labelstudio_data_image_is_under_images_dir(tmp_path):
    predictions = collection(tmp_path / "images")
    prefix = Path("/data/local-files/?d=photos")
    export("labelstudio", tmp_path, predictions, images_dir=prefix)
    tasks = json.loads((tmp_path / "labelstudio.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=photos/b/dup.png"


def test_labelstudio_brush_rle_is_the_sdks_byte_for_byte(tmp_path):
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    labels = camvid_label()[:120, :160].copy()
    image = write_image(tmp_path / "x.png", *labels.shape)
    preset = get_preset("camvid")
    prediction = Prediction(image, "x.png", labels, confidence(labels, 0))
    export("labelstudio", tmp_path, [prediction], preset.class_names, preset.palette)
    (task,) = json.loads((tmp_path / "labelstudio.json").read_text())
    results = task["predictions"][0]["result"]
    regions = find_regions(labels, confidence(labels, 0))
    assert len(results) == len(regions)
    for result, region in zip(results, regions, strict=True):
        whole = np.zeros(labels.shape, np.uint8)
        height, width = region.mask.shape
        whole[region.top : region.top + height, region.left : region.left + width] = region.mask
        assert result["value"]["rle"] == brush.mask2rle(whole * 255)
        decoded = brush.decode_rle(result["value"]["rle"]).reshape(*labels.shape, 4)[:, :, 3]
        assert np.array_equal(decoded > 0, whole > 0)


# What label-studio-sdk 2.1.2's brush.mask2rle(mask * 255) gives: the first ends on a byte
# boundary, so a whole zero byte follows; the last has a run past 65,536 values.
SDK_RLE = [
    (
        [[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
        [0, 0, 0, 48, 57, 27, 252, 96, 19, 255, 198, 1, 63, 254, 23, 0, 0],
    ),
    ([[1, 1]], [0, 0, 0, 8, 57, 27, 252, 255, 224]),
    (np.ones((150, 150)), [0, 1, 95, 144, 57, 27, 255, 255, 255, 255, 235, 241, 255, 224]),
]


@pytest.mark.parametrize(("mask", "rle"), SDK_RLE)
def test_labelstudio_brush_rle_is_what_the_sdk_wrote(mask, rle):
    from pspnet.annotations.labelstudio import brush_rle

    labels = np.where(np.array(mask, bool), 0, 255).astype(np.uint8)
    (region,) = find_regions(labels, np.ones(labels.shape, np.float32))
    assert list(brush_rle(region, labels.shape)) == rle


def test_labelstudio_brush_runs_past_65536_values_are_cut():
    labels = np.zeros((200, 100), np.uint8)  # one region of 80,000 values
    (region,) = find_regions(labels, np.ones(labels.shape, np.float32))
    from pspnet.annotations.labelstudio import brush_rle

    values = brush_values(list(brush_rle(region, labels.shape)))
    assert values.shape == (200 * 100 * 4,) and (values == 255).all()


def test_a_region_keeps_only_text_and_never_the_arrays(tmp_path):
    writer = annotation_writer("labelstudio", tmp_path, NAMES, PALETTE)
    writer.add(collection(tmp_path / "images")[0])
    for shape in writer.entries[0].shapes:
        assert isinstance(shape.mask, str) and shape.points is None
        assert base64.b64decode(shape.mask)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": np.full((4, 4), 6, np.uint8)}, "class 6 in the labels, but only 6 classes"),
        ({"labels": np.zeros((4, 4), np.int64)}, "labels must be \\(H, W\\) uint8"),
        ({"confidence": np.ones((4, 5), np.float32)}, "confidence \\(4, 5\\) differs"),
        ({"name": "../x.png"}, "name must be a '/'-separated path"),
        ({"name": "/abs/x.png"}, "name must be a '/'-separated path"),
    ],
)
def test_a_prediction_that_does_not_fit_is_refused(change, message, tmp_path):
    fields = {
        "image": tmp_path / "x.png",
        "name": "x.png",
        "labels": np.zeros((4, 4), np.uint8),
        "confidence": np.ones((4, 4), np.float32),
        **change,
    }
    writer = annotation_writer("coco", tmp_path, NAMES, PALETTE)
    with pytest.raises(ValueError, match=message):
        writer.add(Prediction(**fields))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "yolo"}, "unknown annotation format 'yolo'"),
        ({"shapes": "boxes"}, "unknown shapes 'boxes'"),
        ({"tolerance": -1}, "tolerance must be >= 0"),
        ({"palette": PALETTE[:2]}, "6 classes but 2 palette colours"),
    ],
)
def test_a_writer_that_cannot_be_is_refused(options, message, tmp_path):
    arguments = {"format": "cvat", "palette": PALETTE, **options}
    fmt, palette = arguments.pop("format"), arguments.pop("palette")
    with pytest.raises(ValueError, match=message):
        annotation_writer(fmt, tmp_path, NAMES, palette, **arguments)


def test_two_images_that_would_share_a_labelme_file_are_refused(tmp_path):
    labels = label_map()
    writer = annotation_writer("labelme", tmp_path, NAMES, PALETTE)
    for name in ("x.png", "x.jpg"):
        writer.add(Prediction(tmp_path / name, name, labels, confidence(labels, 0)))
    with pytest.raises(
        OutputError, match="'x.(png|jpg)' and 'x.(jpg|png)' would both be annotated"
    ):
        writer.finish()
    assert not (tmp_path / "labelme").exists()


def test_an_image_added_twice_is_refused(tmp_path):
    labels = label_map()
    writer = annotation_writer("cvat", tmp_path, NAMES, PALETTE)
    for _ in range(2):
        writer.add(Prediction(tmp_path / "x.png", "x.png", labels, confidence(labels, 0)))
    with pytest.raises(OutputError, match="'x.png' was added twice"):
        writer.finish()
