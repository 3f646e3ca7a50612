"""Importing what the tools really write: LabelMe's own semantic-segmentation example, a CVAT
project export with subsets, a Label Studio JSON export, and shapes without a label.

The real files and how the others were made: tests/data/exports/README.md.
"""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pspnet.cli import main
from pspnet.data.importers import import_annotations

EXPORTS = Path(__file__).parent / "exports"
LABELME = EXPORTS / "labelme"
LABELSTUDIO = EXPORTS / "labelstudio"


def write_png(path: Path, size: tuple[int, int], seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert label is not None and label.dtype == np.uint8 and label.ndim == 2, path
    return label


def classes_of(root: Path) -> list[str]:
    return [line.rsplit(" ", 3)[0] for line in (root / "classes.txt").read_text().splitlines()]


# --- LabelMe's semantic-segmentation example ---------------------------------------------------


def test_labelme_example_with_its_labels_txt_gives_what_labelme2voc_writes(tmp_path, capsys):
    out = tmp_path / "voc"
    argv = ["data", "import", "labelme", str(LABELME / "data_annotated"), "--out", str(out)]
    assert main([*argv, "--classes", str(LABELME / "labels.txt"), "--val-fraction", "0"]) == 0
    names = (LABELME / "labels.txt").read_text().splitlines()
    assert names[:2] == ["__ignore__", "_background_"]
    assert classes_of(out) == names[1:]  # __ignore__ is 255, no class
    ours = read_label(out / "labels" / "train" / "2011_000003.png")
    with Image.open(LABELME / "data_dataset_voc" / "SegmentationClass" / "2011_000003.png") as png:
        theirs = np.asarray(png)  # labelme2voc.py's class indices, 255 for __ignore__
    assert sorted(np.unique(theirs).tolist()) == [0, 5, 15, 255]  # background, bottle, person
    # Equal except within a pixel of an outline: LabelMe fills with PIL at float vertices,
    # we round vertices to pixel centres and fill with OpenCV.
    shapes = json.loads((LABELME / "data_annotated" / "2011_000003.json").read_text())["shapes"]
    edges = np.zeros(ours.shape, np.uint8)
    for shape in shapes:
        cv2.polylines(edges, [np.round(shape["points"]).astype(np.int32)], True, 1, thickness=3)
    differ = ours != theirs
    assert not (differ & (edges == 0)).any()
    assert differ.sum() < 0.2 * edges.sum()
    ignored = theirs == 255
    assert (ours[ignored & (edges == 0)] == 255).all() and ignored.sum() > 5000
    printed = capsys.readouterr().out
    assert " 0  _background_" in printed and "ignore (255)" in printed


def test_labelme_ignore_and_background_without_a_names_file(tmp_path):
    src = tmp_path / "lm"
    write_png(src / "a.png", (20, 30))
    shapes = [
        {"label": "zebra", "points": [[2, 2], [12, 12]], "shape_type": "rectangle"},
        {"label": "__ignore__", "points": [[10, 10], [14, 14]], "shape_type": "rectangle"},
        {"label": "_background_", "points": [[20, 0], [29, 3]], "shape_type": "rectangle"},
    ]
    record = {"shapes": shapes, "imagePath": "a.png", "imageHeight": 20, "imageWidth": 30}
    (src / "a.json").write_text(json.dumps(record))
    report = import_annotations("labelme", src, tmp_path / "out", val_fraction=0)
    assert report.class_names == ("_background_", "zebra")  # background is class 0
    expected = np.zeros((20, 30), np.uint8)  # unannotated pixels are _background_
    expected[2:13, 2:13] = 1
    expected[10:15, 10:15] = 255
    assert np.array_equal(read_label(tmp_path / "out" / "labels" / "train" / "a.png"), expected)


# --- a CVAT project export with subsets ----------------------------------------------------------

H, W = 24, 32
# As CVAT's ProjectData._init_meta and dump_as_cvat_annotation write a project (cvat-ai/cvat,
# cvat/apps/dataset_manager/bindings.py and formats/cvat.py): the project's meta with its tasks,
# subsets and labels, every <image> with subset and task_id.
PROJECT_META = """<meta>
    <project>
      <id>5</id>
      <name>streets</name>
      <bugtracker></bugtracker>
      <created>2024-03-01 10:11:12.000000+00:00</created>
      <updated>2024-03-02 10:11:12.000000+00:00</updated>
      <tasks>{tasks}
      </tasks>
      <subsets>Train
Validation
Test</subsets>
      <owner>
        <username>admin</username>
        <email></email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>road</name>
          <color>#804080</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
      </labels>
    </project>
    <dumped>2024-03-03 10:11:12.000000+00:00</dumped>
  </meta>"""
TASK = """
        <task>
          <id>{id}</id>
          <name>{subset} set</name>
          <size>1</size>
          <mode>annotation</mode>
          <overlap>0</overlap>
          <bugtracker></bugtracker>
          <created>2024-03-01 10:11:12.000000+00:00</created>
          <updated>2024-03-02 10:11:12.000000+00:00</updated>
          <subset>{subset}</subset>
          <start_frame>0</start_frame>
          <stop_frame>0</stop_frame>
          <frame_filter></frame_filter>
          <segments>
            <segment>
              <id>{id}</id>
              <start>0</start>
              <stop>0</stop>
              <url>http://localhost:8080/api/jobs/{id}</url>
            </segment>
          </segments>
          <owner>
            <username>admin</username>
            <email></email>
          </owner>
          <assignee></assignee>
        </task>"""
SUBSETS = {"Train": "train", "Validation": "val", "Test": "test"}


def cvat_project(src: Path, extra_subset: str | None = None) -> dict[str, bytes]:
    """A "CVAT for images 1.1" project export: annotations.xml and images/<Subset>/img0.jpg,
    the same name in every subset (other.jpg in ``extra_subset``); each subset's image has a
    box of its own height."""
    subsets = [*SUBSETS, *([extra_subset] if extra_subset else [])]
    tasks = "".join(TASK.format(id=i, subset=s) for i, s in enumerate(subsets, start=1))
    images, written = [], {}
    for frame, subset in enumerate(subsets):
        name = "img0.jpg" if subset in SUBSETS else "other.jpg"
        path = src / "images" / subset / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((H, W, 3), 40 * frame, np.uint8)
        assert cv2.imwrite(str(path), pixels)
        written[subset] = path.read_bytes()
        images.append(
            f'  <image id="{frame}" name="{name}" subset="{subset}" task_id="{frame + 1}" '
            f'width="{W}" height="{H}">\n'
            f'    <box label="car" source="manual" occluded="0" xtl="0.00" ytl="0.00" '
            f'xbr="4.00" ybr="{frame + 1}.00" z_order="0">\n    </box>\n  </image>\n'
        )
    meta = PROJECT_META.format(tasks=tasks)
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  '
        f"{meta}\n{''.join(images)}</annotations>\n"
    )
    (src / "annotations.xml").write_text(xml)
    return written


def test_a_cvat_project_export_keeps_its_subsets_apart_as_splits(tmp_path, capsys):
    written = cvat_project(tmp_path / "export")
    out = tmp_path / "out"
    assert main(["data", "import", "cvat", str(tmp_path / "export"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 images (1 train, 1 val, 1 test)" in printed and "subsets" in printed
    for frame, (subset, split) in enumerate(SUBSETS.items()):
        assert (out / "images" / split / "img0.jpg").read_bytes() == written[subset]
        label = read_label(out / "labels" / split / "img0.png")
        assert (label[: frame + 2, :5] == 1).all() and (label[frame + 2 :] == 255).all()
    assert classes_of(out) == ["road", "car"]


def test_a_cvat_project_export_found_through_images_and_other_subsets_drawn(tmp_path):
    cvat_project(tmp_path / "export", extra_subset="default")
    report = import_annotations(
        "cvat",
        tmp_path / "export" / "annotations.xml",
        tmp_path / "out",
        images=tmp_path / "export" / "images",
        val_fraction=0,
    )
    assert (report.train, report.val, report.test) == (2, 1, 1)  # default's image drawn: train
    assert report.splits_from_export
    assert any("'default'" in warning for warning in report.warnings)


# --- a Label Studio JSON export ------------------------------------------------------------------

LS_H, LS_W = 48, 64


def labelstudio_images(folder: Path) -> None:
    write_png(folder / "street.png", (LS_H, LS_W), 1)  # the upload 8f3a2b1c-street.png
    write_png(folder / "photos" / "yard.png", (LS_H, LS_W), 2)  # local files ?d=photos/yard.png
    write_png(folder / "empty.png", (LS_H, LS_W), 3)


def test_a_labelstudio_export_paints_brushes_polygons_and_rectangles(tmp_path):
    export = tmp_path / "ls"
    export.mkdir()
    shutil.copy(LABELSTUDIO / "export.json", export / "export.json")
    labelstudio_images(export / "images")
    with pytest.warns(UserWarning, match=r"task 2 \(image 'photos/yard.png'\), region 'poly-2'"):
        report = import_annotations("labelstudio", export / "export.json", tmp_path / "out")
    assert report.class_names == ("car", "puddle", "road", "sign")
    assert report.skipped == {"keypointlabels": 1}
    assert any("1 tasks have no annotation" in warning for warning in report.warnings)
    labels = {p.name: read_label(p) for p in (tmp_path / "out" / "labels").rglob("*.png")}
    assert sorted(labels) == ["street.png", "yard.png"]
    with Image.open(LABELSTUDIO / "road_mask.png") as png:
        road = np.asarray(png) > 0  # what the SDK's encoder was given (alpha not 0)
    expected = np.where(road, 2, 255).astype(np.uint8)
    expected[12:25, 16:33] = 0  # car: (25 %, 25 %)..(50 %, 50 %) of 64 x 48
    expected[24:33, 36:49] = 3  # sign: 8 x 12 at (48, 24), turned 90 degrees about that corner
    assert np.array_equal(labels["street.png"], expected)
    with Image.open(LABELSTUDIO / "puddle_mask.png") as png:
        puddle = np.asarray(png) > 0
    assert np.array_equal(labels["yard.png"], np.where(puddle, 1, 255))


def test_labelstudio_rle_past_its_image_is_one_line(tmp_path, capsys):
    export = tmp_path / "ls"
    tasks = json.loads((LABELSTUDIO / "export.json").read_text())[:1]
    region = tasks[0]["annotations"][0]["result"][0]
    region["value"]["rle"] = region["value"]["rle"][:40]  # cut inside a run
    export.mkdir()
    (export / "export.json").write_text(json.dumps(tasks))
    labelstudio_images(export / "images")
    assert main(["data", "import", "labelstudio", str(export / "export.json"), "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "region 'brush-1'" in err and "rle ends inside a run" in err


# --- shapes without a label ----------------------------------------------------------------------


def test_a_shape_without_a_label_is_skipped_with_a_one_line_warning(tmp_path, capsys):
    src = tmp_path / "cvat"
    write_png(src / "q.png", (H, W))
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        "<labels><label><name>car</name></label></labels></task></meta>"
        f'<image id="0" name="q.png" width="{W}" height="{H}">'
        '<box label="" xtl="0" ytl="0" xbr="5" ybr="5" z_order="0"/>'
        '<box label="car" xtl="10" ytl="10" xbr="12" ybr="12" z_order="0"/></image></annotations>'
    )
    (src / "annotations.xml").write_text(xml)
    assert main(["data", "import", "cvat", str(src), "--out", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no label" in line]
    where = f"{src / 'annotations.xml'}: image 'q.png', <box> 0"
    assert warnings == [f"pspnet data: warning: {where}: no label; skipped"]
    label = read_label(tmp_path / "out" / "labels" / "train" / "q.png")
    assert label[0, 0] == 255 and label[11, 11] == 0


def test_labelme_and_coco_shapes_without_a_label_are_skipped_too(tmp_path):
    write_png(tmp_path / "lm" / "a.png", (H, W))
    shapes = [
        {"label": "", "points": [[0, 0], [4, 4]], "shape_type": "rectangle"},
        {"label": None, "points": [[0, 0], [4, 4]], "shape_type": "rectangle"},
        {"label": "car", "points": [[6, 6], [8, 8]], "shape_type": "rectangle"},
    ]
    record = {"shapes": shapes, "imagePath": "a.png", "imageHeight": H, "imageWidth": W}
    (tmp_path / "lm" / "a.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=r"a.json: image 'a.png', shape [01]: no label") as caught:
        report = import_annotations("labelme", tmp_path / "lm", tmp_path / "out")
    assert len([w for w in caught if "no label" in str(w.message)]) == 2
    assert report.class_names == ("car",)
    write_png(tmp_path / "coco" / "x.png", (H, W))
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "height": H, "width": W}],
        "annotations": [
            {"id": 7, "image_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]},
            {"id": 8, "image_id": 1, "category_id": 1, "segmentation": [[6, 6, 8, 6, 8, 8]]},
        ],
        "categories": [{"id": 1, "name": "car"}],
    }
    (tmp_path / "coco" / "i.json").write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match=r"i.json: annotation 7 \(image_id 1\): no category_id"):
        import_annotations("coco", tmp_path / "coco" / "i.json", tmp_path / "out2")
