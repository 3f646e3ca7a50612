"""What the writers export, pspnet's own importers (``pspnet data import``) read back: masks to
the very labels, polygons to 99% of a realistic label map's pixels."""

import cv2
import numpy as np
import pytest
from annotation_maps import NAMES, PALETTE, camvid_label, confidence, write_image
from test_formats import collection, export

from pspnet.annotations import Prediction
from pspnet.data.importers import import_annotations
from pspnet.data.presets import get_preset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SOURCES = {"coco": "instances.json", "cvat": "annotations.xml", "labelme": "labelme"}


def imported(fmt, tmp_path, names, palette, **options):
    """Import the export in ``tmp_path/export`` into ``tmp_path/dataset``; returns the report.

    LabelMe keeps no class list, so its import is given the classes file of the checkpoint's
    order; COCO and CVAT are read with their own.
    """
    classes_file = None
    if fmt == "labelme":
        classes_file = tmp_path / "classes.txt"
        lines = [f"{name} {r} {g} {b}" for name, (r, g, b) in zip(names, palette, strict=True)]
        classes_file.write_text("\n".join(lines) + "\n")
    return import_annotations(
        fmt,
        tmp_path / "export" / SOURCES[fmt],
        tmp_path / "dataset",
        images=tmp_path / "images",
        val_fraction=0,
        classes_file=classes_file,
        **options,
    )


def label(tmp_path, name):
    path = (tmp_path / "dataset" / "labels" / "train" / name).with_suffix(".png")
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("fmt", ["coco", "cvat", "labelme"])
def test_masks_import_back_to_exactly_the_labels(fmt, tmp_path):
    predictions = collection(tmp_path / "images")
    export(fmt, tmp_path / "export", predictions)
    report = imported(fmt, tmp_path, NAMES, PALETTE)
    assert list(report.class_names) == NAMES
    assert report.train == 3
    for prediction in predictions:
        assert np.array_equal(label(tmp_path, prediction.name), prediction.labels)


def test_cvat_colours_come_back_with_the_classes(tmp_path):
    export("cvat", tmp_path / "export", collection(tmp_path / "images"))
    imported("cvat", tmp_path, NAMES, PALETTE)
    lines = (tmp_path / "dataset" / "classes.txt").read_text().splitlines()
    assert lines == [f"{n} {r} {g} {b}" for n, (r, g, b) in zip(NAMES, PALETTE, strict=True)]


@pytest.mark.parametrize("fmt", ["coco", "cvat", "labelme"])
def test_polygons_import_back_to_99_percent_of_a_camvid_label(fmt, tmp_path):
    labels = camvid_label()
    preset = get_preset("camvid")
    names, palette = list(preset.class_names), list(preset.palette)
    image = write_image(tmp_path / "images" / "f.png", *labels.shape)
    predictions = [Prediction(image, "f.png", labels, confidence(labels, 0))]
    export(fmt, tmp_path / "export", predictions, names, palette, shapes="polygons")
    imported(fmt, tmp_path, names, palette)
    assert (label(tmp_path, "f.png") == labels).mean() >= 0.99
