"""A user's own data end to end, as the README's "Your own data" runs it: an export (COCO,
LabelMe, CVAT, Label Studio) or a folder of colour masks -> import -> check -> train a few
steps -> eval.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_overrides
from PIL import Image

from pspnet.cli import main

CLASSES = {"road": (128, 64, 128), "car": (250, 50, 83), "person": (220, 20, 60)}
H, W = 40, 48
IMAGES = 6


def boxes(index: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(class, (x0, y0, x1, y1)) of image ``index``: road below, a car and a person on it."""
    shift = 2 * index
    return [
        ("road", (0, 20, W - 1, H - 1)),
        ("car", (4 + shift, 22, 20 + shift, 34)),
        ("person", (30, 8 + index, 36, 30)),
    ]


def write_images(folder: Path, indices=range(IMAGES)) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in indices:
        name = f"frame_{i}.png"
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
        names.append(name)
    return names


def coco_export(src: Path) -> Path:
    names = write_images(src / "images")
    ids = {name: i for i, name in enumerate(CLASSES, start=1)}
    annotations = [
        {
            "id": len(names) * 10 + k,
            "image_id": i,
            "category_id": ids[label],
            "iscrowd": 0,
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        }
        for i in range(IMAGES)
        for k, (label, (x0, y0, x1, y1)) in enumerate(boxes(i))
    ]
    data = {
        "images": [{"id": i, "file_name": n, "height": H, "width": W} for i, n in enumerate(names)],
        "categories": [{"id": i, "name": name} for name, i in ids.items()],
        "annotations": annotations,
    }
    (src / "instances.json").write_text(json.dumps(data))
    return src / "instances.json"


def labelme_export(src: Path) -> Path:
    for i, name in enumerate(write_images(src)):
        shapes = [
            {"label": label, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle"}
            for label, (x0, y0, x1, y1) in boxes(i)
        ]
        record = {"shapes": shapes, "imagePath": name, "imageHeight": H, "imageWidth": W}
        (src / name).with_suffix(".json").write_text(json.dumps(record))
    return src


def cvat_export(src: Path) -> Path:
    names = write_images(src / "images")
    labels = "".join(
        f"<label><name>{n}</name><color>#{r:02x}{g:02x}{b:02x}</color></label>"
        for n, (r, g, b) in CLASSES.items()
    )
    images = "".join(
        f'<image id="{i}" name="{name}" width="{W}" height="{H}">'
        + "".join(
            f'<box label="{label}" xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" '
            'occluded="0" z_order="0"/>'
            for label, (x0, y0, x1, y1) in boxes(i)
        )
        + "</image>"
        for i, name in enumerate(names)
    )
    xml = f"<annotations><meta><task><labels>{labels}</labels></task></meta>{images}</annotations>"
    (src / "annotations.xml").write_text(xml)
    return src / "annotations.xml"


def labelstudio_export(src: Path) -> Path:
    """Label Studio's JSON export: uploads, rectangles in percent of the image's size."""
    names = write_images(src / "images")

    def region(label: str, box: tuple[int, int, int, int]) -> dict:
        x0, y0, x1, y1 = box
        value = {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W}
        value.update(height=100 * (y1 - y0) / H, rotation=0, rectanglelabels=[label])
        return {
            "type": "rectanglelabels",
            "value": value,
            "original_width": W,
            "original_height": H,
            "image_rotation": 0,
            "from_name": "label",
            "to_name": "image",
        }

    tasks = [
        {
            "id": i + 1,
            "data": {"image": f"/data/upload/1/0123abcd-{name}"},
            "annotations": [{"id": i + 1, "result": [region(*b) for b in boxes(i)]}],
        }
        for i, name in enumerate(names)
    ]
    (src / "export.json").write_text(json.dumps(tasks))
    return src / "export.json"


def colour_masks(root: Path) -> None:
    """A custom dataset of RGB colour masks with CVAT's labelmap.txt as its classes.txt."""
    for split, indices in (("train", range(4)), ("val", range(4, IMAGES))):
        names = write_images(root / "images" / split, indices)
        for name, i in zip(names, indices):
            mask = np.zeros((H, W, 3), np.uint8)  # black: the background class
            for label, (x0, y0, x1, y1) in boxes(i):
                mask[y0 : y1 + 1, x0 : x1 + 1] = CLASSES[label]
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "labels" / split / name)
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{r},{g},{b}::" for n, (r, g, b) in CLASSES.items()]
    (root / "classes.txt").write_text("\n".join(lines) + "\n")


EXPORTS = {
    "coco": coco_export,
    "labelme": labelme_export,
    "cvat": cvat_export,
    "labelstudio": labelstudio_export,
}


def check_train_eval(root: Path, tmp_path: Path, capsys, names: list[str]) -> None:
    assert main(["data", "check", str(root), "--dataset", "custom", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "0 problems" in out and all(name in out for name in names)
    run = tmp_path / "run"
    overrides = tiny_overrides(root, **{"data.dataset": "custom", "iterations": 3})
    assert main(["train", "--out", str(run), "--set", *overrides]) == 0
    assert "done: 3 iterations" in capsys.readouterr().out
    args = [
        "eval",
        "--checkpoint",
        str(run / "best.safetensors"),
        "--root",
        str(root),
        "--dataset",
        "custom",
        "--mode",
        "whole",
        "--no-flip",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and all(name in out for name in names)


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_an_export_imports_checks_trains_and_evaluates(kind, tmp_path, capsys):
    source = EXPORTS[kind](tmp_path / "export")
    root = tmp_path / "dataset"
    args = ["data", "import", kind, str(source), "--out", str(root), "--val-fraction", "0.34"]
    assert main(args) == 0
    assert sorted(p.name for p in (root / "images" / "val").iterdir()) != []
    labels = sorted((root / "labels").rglob("*.png"))
    assert len(labels) == IMAGES
    classes = [line.rsplit(" ", 3)[0] for line in (root / "classes.txt").read_text().splitlines()]
    unordered = kind in ("labelme", "labelstudio")  # no class list: sorted by name
    assert classes == (sorted(CLASSES) if unordered else list(CLASSES))  # else source order
    check_train_eval(root, tmp_path, capsys, list(CLASSES))


def test_a_folder_of_colour_masks_checks_trains_and_evaluates(tmp_path, capsys):
    colour_masks(tmp_path / "dataset")
    check_train_eval(tmp_path / "dataset", tmp_path, capsys, ["background", *CLASSES])
