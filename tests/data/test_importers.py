"""Importing COCO, LabelMe and CVAT exports: exact label pixels, split, classes and errors.

Expected labels are written out by hand from the shapes (pixel coverage: integer coordinates
are pixel centres, outlines included), never computed by the importer.
"""

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from pspnet.cli import main
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.importers import import_annotations
from pspnet.data.presets import get_preset
from pspnet.errors import DatasetError

# pycocotools 2.0 under numpy 2 warns from its own decode; nothing we pass causes it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 40, 48


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> bytes:
    """A random RGB PNG at ``path``; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def png_bytes(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a 0/1 sequence, background first (a leading 0 when it starts with 1)."""
    lengths, value, count = [], 0, 0
    for pixel in flat.tolist():
        if pixel == value:
            count += 1
        else:
            lengths.append(count)
            value, count = pixel, 1
    return [*lengths, count]


def label_at(root: Path, relative: str) -> np.ndarray:
    """The label written for image ``relative``, from whichever split holds it."""
    stem = str(Path(relative).with_suffix(".png"))
    found = [p for p in (root / "labels" / s / stem for s in ("train", "val")) if p.is_file()]
    assert len(found) == 1, found
    label = cv2.imread(str(found[0]), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8 and label.ndim == 2
    return label


def split_of(root: Path) -> dict[str, list[str]]:
    return {
        split: sorted(
            p.relative_to(root / "images" / split).as_posix()
            for p in (root / "images" / split).rglob("*")
            if p.is_file()
        )
        for split in ("train", "val")
        if (root / "images" / split).is_dir()
    }


def raw(image, label, rng):
    return image, label


def dataset_labels(root: Path) -> dict[str, np.ndarray]:
    """Each image's label as the project's custom dataset reads it."""
    preset = get_preset("custom", names_file=root / "classes.txt")
    labels = {}
    for split in split_of(root):
        dataset = SegmentationDataset(root, split, preset, transform=raw)
        for index, (image_path, _) in enumerate(dataset.pairs):
            relative = image_path.relative_to(root / "images" / split).as_posix()
            labels[relative] = np.asarray(dataset[index, 0][1])
    return labels


# --- COCO -------------------------------------------------------------------------------------


def box(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture
def coco(tmp_path):
    """Three images (two named x.png in different folders) with polygons and both RLEs."""
    folder = tmp_path / "coco"
    for seed, name in enumerate(["a/x.png", "b/x.png", "c.png"]):
        write_png(folder / "images" / name, seed)
    rng = np.random.default_rng(1)
    compressed_mask = (rng.random((H, W)) < 0.3).astype(np.uint8)
    compressed = coco_mask.encode(np.asfortranarray(compressed_mask))
    compressed["counts"] = compressed["counts"].decode()
    plain_mask = np.zeros((H, W), np.uint8)
    plain_mask[3:9, 30:45] = 1
    plain = {"size": [H, W], "counts": runs(plain_mask.flatten(order="F"))}  # column-major
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "segmentation": box(10, 5, 30, 20)},
        {"id": 2, "image_id": 10, "category_id": 3, "segmentation": box(20, 10, 40, 30)},
        {"id": 3, "image_id": 11, "category_id": 5, "segmentation": compressed, "iscrowd": 1},
        {"id": 4, "image_id": 12, "category_id": 7, "segmentation": plain, "iscrowd": 1},
        {"id": 5, "image_id": 12, "category_id": 3, "bbox": [0, 0, 5, 5], "segmentation": []},
    ]
    data = {
        "images": [
            {"id": 10, "file_name": "a/x.png", "height": H, "width": W},
            {"id": 11, "file_name": "b/x.png", "height": H, "width": W},
            {"id": 12, "file_name": "c.png", "height": H, "width": W},
        ],
        "annotations": annotations,
        "categories": [
            {"id": 7, "name": "cat"},
            {"id": 3, "name": "dog"},
            {"id": 5, "name": "bird"},
        ],
    }
    (folder / "instances.json").write_text(json.dumps(data))
    return folder / "instances.json", compressed_mask, plain_mask


def test_coco_paints_polygons_in_order_and_decodes_both_rles(coco, tmp_path):
    path, compressed_mask, plain_mask = coco
    out = tmp_path / "out"
    report = import_annotations("coco", path, out, val_fraction=0.4, seed=0)
    # categories by id: dog (3), bird (5), cat (7) -> 0, 1, 2; VOC colours 0, 1, 2
    assert (out / "classes.txt").read_text() == "dog 0 0 0\nbird 128 0 0\ncat 0 128 0\n"
    assert report.class_names == ("dog", "bird", "cat")
    expected = np.full((H, W), 255, np.uint8)
    expected[5:21, 10:31] = 2  # cat, columns 10..30 and rows 5..20 included
    expected[10:31, 20:41] = 0  # dog, later, on top
    assert np.array_equal(label_at(out, "a/x.png"), expected)
    assert np.array_equal(label_at(out, "b/x.png"), np.where(compressed_mask == 1, 1, 255))
    assert np.array_equal(label_at(out, "c.png"), np.where(plain_mask == 1, 2, 255))
    assert report.skipped == {"box only": 1}
    assert (report.train, report.val) == (2, 1)
    dog, bird = 21 * 21, int(compressed_mask.sum())
    cat = 16 * 21 - 11 * 11 + int(plain_mask.sum())
    assert report.pixels.tolist() == [dog, bird, cat, 3 * H * W - dog - bird - cat]
    source = path.parent / "images"
    for split, names in split_of(out).items():
        for name in names:  # both x.png kept, copied byte for byte
            assert (out / "images" / split / name).read_bytes() == (source / name).read_bytes()
    read = dataset_labels(out)
    assert sorted(read) == ["a/x.png", "b/x.png", "c.png"]
    assert np.array_equal(read["a/x.png"], expected)


def test_coco_classes_file_fixes_order_and_colours_and_background_fills(coco, tmp_path):
    path, _, _ = coco
    names = tmp_path / "names.txt"
    names.write_text("cat 1 2 3\nsky 4 5 6\ndog 7 8 9\nbird 10 11 12\n")
    out = tmp_path / "out"
    import_annotations("coco", path, out, classes_file=names, background="sky")
    assert (out / "classes.txt").read_text() == names.read_text()
    label = label_at(out, "a/x.png")
    assert label[0, 0] == 1 and label[6, 11] == 0 and label[25, 25] == 2


# --- LabelMe ----------------------------------------------------------------------------------


def labelme_file(path: Path, image_path: str, shapes: list, size=(H, W), **extra) -> None:
    data = {"version": "5.4.1", "shapes": shapes, "imagePath": image_path, "imageData": None}
    data.update(imageHeight=size[0], imageWidth=size[1], **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def shape(label, kind, points, **extra):
    return {"label": label, "shape_type": kind, "points": points, **extra}


MASK = np.zeros((10, 10), np.uint8)
MASK[2:7, 3:9] = 255


@pytest.fixture
def labelme(tmp_path):
    """sub1/img.json: rectangle, polygon over it, circle, a line and a point; sub2/img.json: a
    mask; emb.json: an image only embedded as imageData."""
    src = tmp_path / "labelme"
    write_png(src / "sub1" / "img.png", 1)
    write_png(src / "sub2" / "img.png", 2)
    labelme_file(
        src / "sub1" / "img.json",
        "img.png",
        [
            shape("road", "rectangle", [[15, 25], [5, 5]]),
            shape("car", "polygon", [[10, 10], [25, 10], [25, 18], [10, 18]]),
            shape("tree", "circle", [[35, 20], [35, 25]]),
            shape("road", "line", [[0, 0], [10, 10]]),
            shape("car", "point", [[3, 3]]),
        ],
    )
    mask = base64.b64encode(png_bytes(MASK)).decode()
    labelme_file(
        src / "sub2" / "img.json",
        "img.png",
        [
            shape("car", "mask", [[12, 20], [21, 29]], mask=mask),
        ],
    )
    embedded = png_bytes(np.full((H, W, 3), 7, np.uint8))
    labelme_file(
        src / "emb.json",
        "emb.png",
        [shape("tree", "rectangle", [[0, 0], [2, 3]])],
        imageData=base64.b64encode(embedded).decode(),
    )
    return src, embedded


def test_labelme_paints_every_kind_and_skips_lines_and_points(labelme, tmp_path):
    src, embedded = labelme
    out = tmp_path / "out"
    report = import_annotations("labelme", src, out, val_fraction=0)
    assert (out / "classes.txt").read_text() == "car 0 0 0\nroad 128 0 0\ntree 0 128 0\n"
    assert report.skipped == {"line": 1, "point": 1}
    label = label_at(out, "sub1/img.png")
    expected = np.full((H, W), 255, np.uint8)
    expected[5:26, 5:16] = 1  # road: corners given in reverse, both included
    expected[10:19, 10:26] = 0  # car on top
    circle = label[14:27, 29:42]  # centre (35, 20), radius 5
    expected[14:27, 29:42] = circle
    assert np.array_equal(label, expected)
    inside = [(20, 35), (15, 35), (25, 35), (20, 30), (20, 40), (23, 38), (17, 32)]
    outside = [(14, 35), (26, 35), (20, 29), (20, 41), (24, 39), (16, 31)]
    assert all(label[p] == 2 for p in inside) and all(label[p] == 255 for p in outside)
    masked = label_at(out, "sub2/img.png")
    expected = np.full((H, W), 255, np.uint8)
    expected[20:30, 12:22][MASK > 0] = 0  # mask's top-left at its first point
    assert np.array_equal(masked, expected)
    assert (out / "images" / "train" / "emb.png").read_bytes() == embedded
    assert label_at(out, "emb.png")[0:4, 0:3].tolist() == [[2] * 3] * 4
    assert any("imageData" in warning for warning in report.warnings)
    read = dataset_labels(out)
    assert np.array_equal(read["sub2/img.png"], masked)


@pytest.mark.parametrize(
    ("background", "names", "fill"),
    [
        ("sky", "sky 0 0 0\ncar 128 0 0\nroad 0 128 0\ntree 128 128 0\n", 0),
        ("road", "car 0 0 0\nroad 128 0 0\ntree 0 128 0\n", 1),
    ],
)
def test_background_fills_unannotated_pixels(labelme, tmp_path, background, names, fill):
    src, _ = labelme
    out = tmp_path / "out"
    report = import_annotations("labelme", src, out, background=background)
    assert (out / "classes.txt").read_text() == names
    label = label_at(out, "sub1/img.png")
    assert label[0, 0] == fill and label[39, 47] == fill
    assert report.pixels[-1] == 0  # nothing left to ignore


# --- CVAT -------------------------------------------------------------------------------------

CVAT_MASK = np.zeros((4, 6), np.uint8)
CVAT_MASK[1:3, 2:6] = 1
CVAT_MASK[0, 0] = 1


def cvat_xml(images: str, labels: str | None = None) -> str:
    labels = labels or (
        "<label><name>person</name><color>#ff0000</color></label>"
        "<label><name>car</name><color>#00ff00</color></label>"
        "<label><name>sky</name></label>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"<meta><task><labels>{labels}</labels></task></meta>{images}</annotations>"
    )


@pytest.fixture
def cvat(tmp_path):
    src = tmp_path / "cvat"
    write_png(src / "images" / "a" / "p.png", 3)
    write_png(src / "images" / "b" / "p.png", 4)
    rle = ", ".join(map(str, runs(CVAT_MASK.flatten())))  # row-major, background first
    images = (
        f'<image id="0" name="a/p.png" width="{W}" height="{H}">'
        '<box label="car" xtl="5" ytl="5" xbr="20" ybr="15" z_order="1" occluded="0"/>'
        '<polygon label="person" points="10,8;30,8;30,20;10,20" z_order="0"/>'
        '<polyline label="sky" points="0,0;5,5" z_order="3"/>'
        '<points label="sky" points="1,1" z_order="0"/>'
        "</image>"
        f'<image id="1" name="b/p.png" width="{W}" height="{H}">'
        '<ellipse label="sky" cx="30" cy="20" rx="6" ry="3" z_order="0"/>'
        f'<mask label="person" rle="{rle}" left="10" top="8" width="6" height="4" z_order="0"/>'
        "</image>"
    )
    (src / "annotations.xml").write_text(cvat_xml(images))
    return src


def test_cvat_paints_by_z_order_with_its_colours_and_decodes_masks(cvat, tmp_path):
    out = tmp_path / "out"
    report = import_annotations("cvat", cvat, out)
    assert (out / "classes.txt").read_text() == "person 255 0 0\ncar 0 255 0\nsky 0 0 0\n"
    assert report.skipped == {"polyline": 1, "points": 1}
    expected = np.full((H, W), 255, np.uint8)
    expected[8:21, 10:31] = 0  # person, z_order 0, though listed second
    expected[5:16, 5:21] = 1  # car, z_order 1, on top
    assert np.array_equal(label_at(out, "a/p.png"), expected)
    label = label_at(out, "b/p.png")
    assert np.array_equal(label[8:12, 10:16], np.where(CVAT_MASK == 1, 0, 255))
    assert label[20, 30] == 2 and label[20, 24] == 2 and label[20, 36] == 2
    assert label[17, 30] == 2 and label[23, 30] == 2
    assert label[20, 23] == 255 and label[20, 37] == 255 and label[16, 30] == 255
    assert label[24, 30] == 255 and label[8, 10] == 0 and label[8, 11] == 255
    assert report.pixels[0] == 13 * 21 - 8 * 11 + int(CVAT_MASK.sum())
    assert set(dataset_labels(out)) == {"a/p.png", "b/p.png"}


def test_cvat_equal_z_order_keeps_file_order(tmp_path):
    src = tmp_path / "cvat"
    write_png(src / "q.png")
    images = (
        f'<image id="0" name="q.png" width="{W}" height="{H}">'
        '<box label="sky" xtl="0" ytl="0" xbr="10" ybr="10" z_order="2"/>'
        '<box label="car" xtl="5" ytl="5" xbr="15" ybr="15" z_order="2"/>'
        '<box label="person" xtl="0" ytl="0" xbr="20" ybr="20" z_order="1"/>'
        "</image>"
    )
    (src / "annotations.xml").write_text(cvat_xml(images))
    import_annotations("cvat", src / "annotations.xml", tmp_path / "out")
    label = label_at(tmp_path / "out", "q.png")
    assert (label[0, 0], label[5, 5], label[12, 12], label[18, 18]) == (2, 1, 1, 0)


def test_cvat_turns_a_rotated_box_about_its_centre(tmp_path):
    src = tmp_path / "cvat"
    write_png(src / "q.png")
    images = (
        f'<image id="0" name="q.png" width="{W}" height="{H}">'
        '<box label="car" xtl="10" ytl="18" xbr="30" ybr="22" rotation="90"/></image>'
    )
    (src / "annotations.xml").write_text(cvat_xml(images))
    import_annotations("cvat", src, tmp_path / "out")
    expected = np.full((H, W), 255, np.uint8)
    expected[10:31, 18:23] = 1  # 20 wide and 4 high about (20, 20), stood upright
    assert np.array_equal(label_at(tmp_path / "out", "q.png"), expected)


def test_labelme_finds_images_under_the_images_folder(tmp_path):
    src, pictures = tmp_path / "json", tmp_path / "pictures"
    labelme_file(
        src / "sub" / "a.json",
        "C:\\photos\\a.png",
        [
            shape("thing", "rectangle", [[1, 1], [3, 3]]),
        ],
    )
    written = write_png(pictures / "sub" / "a.png")
    import_annotations("labelme", src, tmp_path / "out", images=pictures)
    assert (tmp_path / "out" / "images" / "train" / "sub" / "a.png").read_bytes() == written


# --- split ------------------------------------------------------------------------------------


def many_images(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "many"
    for i in range(n):
        write_png(src / f"d{i % 2}" / f"im{i}.png", i, size=(8, 8))
        labelme_file(
            src / f"d{i % 2}" / f"im{i}.json",
            f"im{i}.png",
            [shape("thing", "rectangle", [[1, 1], [3, 3]])],
            size=(8, 8),
        )
    return src


def spec_split(names: list[str], val_fraction: float, seed: int) -> list[str]:
    """The val images by the documented rule: sort, shuffle with the seed, take the first."""
    ordered = sorted(names)
    np.random.default_rng(seed).shuffle(ordered)
    return sorted(ordered[: round(len(names) * val_fraction)])


def test_split_is_deterministic_from_the_seed(tmp_path):
    src = many_images(tmp_path, 7)
    names = [f"d{i % 2}/im{i}.png" for i in range(7)]
    splits = []
    for run, seed in enumerate([3, 3, 4, 5, 6]):
        out = tmp_path / f"out{run}"
        report = import_annotations("labelme", src, out, val_fraction=0.3, seed=seed)
        split = split_of(out)
        assert (report.train, report.val) == (5, 2) == (len(split["train"]), len(split["val"]))
        assert split["val"] == spec_split(names, 0.3, seed)
        assert sorted(split["train"] + split["val"]) == sorted(names)
        splits.append(split["val"])
    assert splits[0] == splits[1]
    assert len({tuple(s) for s in splits}) > 1


def test_a_small_val_fraction_still_takes_one_image(tmp_path):
    src = many_images(tmp_path, 3)
    report = import_annotations("labelme", src, tmp_path / "out", val_fraction=0.1)
    assert (report.train, report.val) == (2, 1)
    report = import_annotations("labelme", src, tmp_path / "out2", val_fraction=0)
    assert (report.train, report.val) == (3, 0)
    assert not (tmp_path / "out2" / "images" / "val").exists()


# --- CLI --------------------------------------------------------------------------------------


def test_cli_imports_and_the_suggested_check_passes(labelme, tmp_path, capsys):
    src, _ = labelme
    out = tmp_path / "data"
    argv = ["data", "import", "labelme", str(src), "--out", str(out), "--val-fraction", "0.4"]
    assert main([*argv, "--seed", "2", "--background", "sky"]) == 0
    printed = capsys.readouterr().out
    assert "3 images (2 train, 1 val), 4 classes" in printed
    assert "line 1, point 1" in printed
    assert f"pspnet data check {out} --dataset custom --split train" in printed
    assert main(["data", "check", str(out), "--dataset", "custom", "--split", "train"]) == 0


def test_cli_refuses_a_val_fraction_of_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "import", "coco", "x.json", "--out", str(tmp_path), "--val-fraction", "1"])
    assert "[0, 1)" in capsys.readouterr().err


def fails(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI, expect status 2 and one error line holding every ``expected``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pspnet data: error:") and "\n" not in err, err
    for text in expected:
        assert text in err, err
    return err


def write_coco(path: Path, image: dict, annotations: list, categories=None) -> Path:
    data = {
        "images": [{"id": 1, "height": H, "width": W, **image}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **a} for a in annotations],
        "categories": categories or [{"id": 1, "name": "thing"}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def test_errors_are_one_line_naming_the_file(tmp_path, capsys):
    out = str(tmp_path / "out")
    write_png(tmp_path / "src" / "x.png")

    def run(kind, source):
        return ["data", "import", kind, str(source), "--out", out]

    missing = tmp_path / "nothing.json"
    fails(capsys, run("coco", missing), str(missing), "no such file")
    bad = tmp_path / "src" / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,,}\n]}')
    fails(capsys, run("coco", bad), f"{bad}:2: invalid JSON")
    xml = tmp_path / "src" / "annotations.xml"
    xml.write_text("<annotations>\n<image name='x.png'>\n</annotations>")
    fails(capsys, run("cvat", xml), f"{xml}:3: invalid XML")
    lost = write_coco(tmp_path / "src" / "lost.json", {"file_name": "gone.png"}, [])
    fails(capsys, run("coco", lost), str(lost), "'gone.png' not found", str(tmp_path / "src"))
    unknown = write_coco(
        tmp_path / "src" / "unknown.json",
        {"file_name": "x.png"},
        [{"category_id": 99, "segmentation": box(1, 1, 5, 5)}],
    )
    fails(capsys, run("coco", unknown), str(unknown), "unknown category id 99")
    rle = {"size": [10, 10], "counts": [100]}
    sized = write_coco(
        tmp_path / "src" / "rle.json", {"file_name": "x.png"}, [{"segmentation": rle}]
    )
    fails(capsys, run("coco", sized), str(sized), "RLE size [10, 10]", f"[{H}, {W}]")
    two = tmp_path / "lm" / "two.json"
    write_png(tmp_path / "lm" / "two.png")
    labelme_file(two, "two.png", [shape("a", "polygon", [[1, 1], [5, 5]])])
    fails(capsys, run("labelme", two), str(two), "polygon with 2 points", "at least 3")


def test_size_mismatch_names_both_files_and_leaves_nothing_behind(tmp_path, capsys):
    src = tmp_path / "lm"
    write_png(src / "a.png")
    labelme_file(src / "a.json", "a.png", [shape("a", "rectangle", [[1, 1], [3, 3]])])
    write_png(src / "b.png", size=(30, W))
    labelme_file(src / "b.json", "b.png", [])
    fails(
        capsys,
        ["data", "import", "labelme", str(src), "--out", str(tmp_path / "out")],
        str(src / "b.json"),
        str(src / "b.png"),
        f"{W}x{H}",
        f"{W}x30",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]  # no out, no temporary folder


def test_refuses_a_folder_that_holds_something(labelme, tmp_path, capsys):
    src, _ = labelme
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    fails(capsys, ["data", "import", "labelme", str(src), "--out", str(out)], str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["old"]
    empty = tmp_path / "empty"
    empty.mkdir()
    report = import_annotations("labelme", src, empty)
    assert report.train + report.val == 3 and (empty / "classes.txt").is_file()


def test_a_label_missing_from_the_classes_file_names_all_three(labelme, tmp_path, capsys):
    src, _ = labelme
    names = tmp_path / "names.txt"
    names.write_text("car\nroad\n")
    argv = ["data", "import", "labelme", str(src), "--out", str(tmp_path / "out")]
    fails(capsys, [*argv, "--classes", str(names)], "emb.json", "'tree'", str(names))


def test_cvat_mask_runs_must_fill_their_box(tmp_path):
    src = tmp_path / "cvat"
    write_png(src / "q.png")
    images = (
        f'<image id="0" name="q.png" width="{W}" height="{H}">'
        '<mask label="car" rle="3, 4" left="0" top="0" width="3" height="3"/></image>'
    )
    (src / "annotations.xml").write_text(cvat_xml(images))
    with pytest.raises(DatasetError, match=r"annotations.xml: image 'q.png', <mask> 0: rle runs"):
        import_annotations("cvat", src, tmp_path / "out")


def test_two_images_that_would_share_a_label_are_refused(tmp_path):
    folder = tmp_path / "coco"
    write_png(folder / "x.png")
    (folder / "x.jpg").write_bytes((folder / "x.png").read_bytes())
    path = write_coco(folder / "i.json", {"file_name": "x.png"}, [])
    data = json.loads(path.read_text())
    data["images"].append({"id": 2, "file_name": "x.jpg", "height": H, "width": W})
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="would share the label x.png"):
        import_annotations("coco", path, tmp_path / "out")
