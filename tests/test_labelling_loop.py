"""The labelling loop end to end: predictions go out as pre-annotations and come back."""

import csv

import numpy as np
import pytest
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.models import PSPNet


@pytest.fixture
def checkpoint(tmp_path, trained):
    path = tmp_path / "model.safetensors"
    save_model(trained(PSPNet(11, backbone="resnet18", base_width=4)), path, {"dataset": "camvid"})
    return path


def photos(folder, sizes):
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(sub / "img.png")
    return folder


def labels_of(folder):
    return {
        p.relative_to(folder).with_suffix("").as_posix().removesuffix("_label"): np.asarray(
            Image.open(p)
        )
        for p in folder.rglob("*_label.png")
    }


SOURCES = {
    "cvat": "annotations.xml",
    "coco": "instances.json",
    "labelme": "labelme",
    "labelstudio": "labelstudio.json",
}


@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_predicted_masks_import_back_as_the_same_labels(tmp_path, checkpoint, fmt):
    photos(tmp_path / "in", [(40, 48), (36, 60)])  # two inputs named img.png, apart
    out = tmp_path / "out"
    args = [
        "predict",
        str(tmp_path / "in"),
        "--checkpoint",
        str(checkpoint),
        "--mode",
        "whole",
        "--out",
        str(out),
        "--annotations",
        fmt,
        "--summary",
        str(tmp_path / "s.csv"),
    ]
    assert main(args) == 0
    source = out / SOURCES[fmt]
    dataset = tmp_path / "dataset"
    imported = [
        "data",
        "import",
        fmt,
        str(source),
        "--images",
        str(tmp_path / "in"),
        "--out",
        str(dataset),
        "--val-fraction",
        "0",
        "--classes",
        str(tmp_path / "c.txt"),
    ]
    names = [f"{n} {r} {g} {b}" for n, (r, g, b) in zip(*camvid_classes())]
    (tmp_path / "c.txt").write_text("\n".join(names) + "\n")
    assert main(imported) == 0
    predicted = labels_of(out)
    back = {
        p.relative_to(dataset / "labels" / "train").with_suffix("").as_posix(): np.asarray(
            Image.open(p)
        )
        for p in (dataset / "labels" / "train").rglob("*.png")
    }
    assert sorted(back) == sorted(predicted)
    for name, labels in predicted.items():
        assert np.array_equal(back[name], labels), name
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 2


def camvid_classes():
    from pspnet.data.presets import get_preset

    preset = get_preset("camvid")
    return preset.class_names, preset.palette


def test_annotations_are_refused_when_no_input_is_an_image(tmp_path, checkpoint, capsys):
    args = [
        "predict",
        str(tmp_path / "missing.mp4"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "o"),
        "--annotations",
        "cvat",
    ]
    (tmp_path / "missing.mp4").write_bytes(b"")
    assert main(args) == 2
    assert "--annotations: only for images" in capsys.readouterr().err


def test_two_torchrun_processes_write_the_annotations_one_writes(tmp_path, checkpoint):
    from helpers import torchrun

    photos(tmp_path / "in", [(40, 48), (36, 60), (30, 30), (50, 40)])
    common = [
        "predict",
        str(tmp_path / "in"),
        "--checkpoint",
        str(checkpoint),
        "--mode",
        "whole",
        "--annotations",
        "cvat",
    ]
    assert (
        main([*common, "--out", str(tmp_path / "one"), "--summary", str(tmp_path / "one.csv")]) == 0
    )
    done = torchrun(
        [*common, "--out", str(tmp_path / "two"), "--summary", str(tmp_path / "two.csv")]
    )
    assert done.returncode == 0, done.stderr
    one = (tmp_path / "one" / "annotations.xml").read_text()
    assert (tmp_path / "two" / "annotations.xml").read_text() == one
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert not list((tmp_path / "two").glob("*part*"))
