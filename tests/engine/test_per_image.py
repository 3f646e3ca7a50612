"""eval's per-image scores, worst-image gallery and boundary IoU."""

import csv

import numpy as np
import pytest
import torch
from helpers import write_tiny_camvid
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.data.presets import get_preset
from pspnet.engine.metrics import ConfusionMatrix
from pspnet.engine.per_image import boundary_counts
from pspnet.models import PSPNet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("per_image")
    root = write_tiny_camvid(folder / "camvid", num_val=5)
    torch.manual_seed(0)
    model = folder / "model.safetensors"
    save_model(PSPNet(11, backbone="resnet18", base_width=4), model, {"dataset": "camvid"})
    return root, model


def evaluate(setup, out, *extra):
    root, model = setup
    argv = ["eval", "--checkpoint", str(model), "--root", str(root), "--mode", "whole"]
    return main([*argv, "--out", str(out), *extra])


def test_per_image_rows_score_each_image_lowest_first(setup, tmp_path):
    table = tmp_path / "per_image.csv"
    assert evaluate(setup, tmp_path / "out", "--per-image", str(table)) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5
    mious = [float(row["miou"]) for row in rows]
    assert mious == sorted(mious)
    names = get_preset("camvid").class_names
    assert set(rows[0]) == {"image", "pixel_acc", "miou", *(f"iou_{n}" for n in names)}
    # each row is that image's own confusion matrix
    predicted = tmp_path / "pred"
    root, model = setup
    for row in rows[:2]:
        image = row["image"]
        assert (
            main(
                [
                    "predict",
                    image,
                    "--checkpoint",
                    str(model),
                    "--out",
                    str(predicted),
                    "--mode",
                    "whole",
                ]
            )
            == 0
        )
        stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        guess = np.asarray(Image.open(predicted / f"{stem}_label.png"))
        truth = np.asarray(Image.open(root / "valannot" / f"{stem}.png")).copy()
        truth[truth == 11] = 255
        matrix = ConfusionMatrix(11)
        matrix.update(
            torch.from_numpy(guess.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
        )
        assert float(row["miou"]) == pytest.approx(matrix.compute().miou, abs=1e-4)


def test_the_worst_images_are_drawn_worst_first(setup, tmp_path, capsys):
    assert evaluate(setup, tmp_path / "out", "--worst", "2") == 0
    gallery = tmp_path / "out" / "worst"
    pictures = sorted(p.name for p in gallery.glob("*.png"))
    assert len(pictures) == 2 and pictures[0].startswith("001_")
    page = (gallery / "index.html").read_text()
    assert page.index(pictures[0]) < page.index(pictures[1])
    with Image.open(gallery / pictures[0]) as picture:
        assert picture.width > 4 * 48  # image, truth, prediction and errors side by side
    assert "worst images" in capsys.readouterr().out


def test_worst_needs_an_output_folder(setup, capsys):
    root, model = setup
    assert main(["eval", "--checkpoint", str(model), "--root", str(root), "--worst", "3"]) == 2
    assert "--worst writes its gallery to OUT/worst/" in capsys.readouterr().err


def test_boundary_iou_is_reported(setup, tmp_path, capsys):
    assert evaluate(setup, tmp_path / "out", "--boundary") == 0
    assert "boundary IoU (Cheng et al., 2021)" in capsys.readouterr().out
    assert "Boundary IoU" in (tmp_path / "out" / "metrics.md").read_text()


def test_boundary_iou_of_a_perfect_and_a_shifted_prediction():
    truth = np.zeros((100, 100), np.uint8)
    truth[20:80, 20:80] = 1
    counts = boundary_counts(truth, truth, 2)
    assert (counts[0] == counts[1]).all()  # perfect: intersection = union
    shifted = np.roll(truth, 10, axis=1)
    counts = boundary_counts(shifted, truth, 2)
    boundary = counts[0, 1] / counts[1, 1]
    matrix = ConfusionMatrix(2)
    matrix.update(
        torch.from_numpy(shifted.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
    )
    assert boundary < matrix.compute().iou[1]  # a shift costs boundaries more than areas


def test_a_missed_thin_pole_scores_zero_boundary_iou():
    truth = np.zeros((200, 200), np.uint8)
    truth[:, 100:102] = 1  # a pole two pixels wide
    counts = boundary_counts(np.zeros_like(truth), truth, 2)
    assert counts[0, 1] == 0 and counts[1, 1] > 0
