"""Importers that no file can sink: memory and CPU bounded by one image whatever the file
declares, image paths kept below the export, and every refusal one line naming the file."""

import base64
import json
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pspnet.cli import main
from pspnet.data import importers
from pspnet.data.importers import import_annotations
from pspnet.data.importers.samples import (
    MAX_IMAGE_SHAPES,
    MAX_IMAGE_VERTICES,
    MAX_SHAPE_VERTICES,
)
from pspnet.errors import DatasetError

H, W = 40, 48


def write_png(path: Path, size: tuple[int, int] = (H, W), seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def fails(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI, expect status 2 and one error line holding every ``expected``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pspnet data: error:") and "\n" not in err, err
    for text in expected:
        assert text in err, err
    return err


def run(kind: str, source: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "import", kind, str(source), "--out", str(out), *extra]


def coco_file(path: Path, annotations: list, image: dict | None = None, categories=None) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "x.png", "height": H, "width": W, **(image or {})}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **a} for a in annotations],
        "categories": categories or [{"id": 1, "name": "thing"}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def labelme_file(path: Path, shapes: list, image_path: str = "x.png", **extra) -> Path:
    data = {"shapes": shapes, "imagePath": image_path, "imageHeight": H, "imageWidth": W, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def cvat_file(folder: Path, shapes: str, size: tuple[int, int] = (H, W)) -> Path:
    xml = (
        "<annotations><meta><task><labels><label><name>a</name></label></labels></task></meta>"
        f'<image id="0" name="x.png" width="{size[1]}" height="{size[0]}">{shapes}</image>'
        "</annotations>"
    )
    (folder / "annotations.xml").write_text(xml)
    return folder / "annotations.xml"


# --- memory ---------------------------------------------------------------------------------------


def test_a_coco_rle_declaring_60000_squared_is_refused_before_decoding(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png")
    rle = {"size": [60000, 60000], "counts": [60000 * 60000]}  # valid, all background
    path = coco_file(
        tmp_path / "c" / "i.json", [{"segmentation": rle}], {"height": 60000, "width": 60000}
    )
    assert len(path.read_bytes()) < 300
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json", "x.png", "over the limit")


def test_coco_rle_strings_must_cover_their_image_exactly(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png")
    too_long = {"size": [H, W], "counts": "0" + "?" * 40}  # runs past H * W
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": too_long}])
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json: annotation 1", "H*W = 1,920")
    cut = {"size": [H, W], "counts": "0a"}  # "a" says more characters follow
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": cut}])
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json: annotation 1", "ends inside a run")


def test_a_cvat_mask_declaring_60000_squared_is_refused(tmp_path, capsys):
    write_png(tmp_path / "v" / "x.png")
    shape = '<mask label="a" rle="3600000000" left="0" top="0" width="60000" height="60000"/>'
    path = cvat_file(tmp_path / "v", shape)
    assert len(path.read_bytes()) < 300
    fails(
        capsys,
        run("cvat", path, tmp_path / "out"),
        "annotations.xml: image 'x.png', <mask> 0",
        "a mask of 60000x60000 on a 48x40 image",
    )


def test_masks_stay_compressed_until_their_image_is_painted(tmp_path):
    """Thirty images with a whole-image mask each: the import holds a few images' worth of
    memory at its peak, not thirty decoded masks."""
    size, count = 400, 30
    images, annotations = [], []
    for i in range(count):
        assert cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((size, size, 3), np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "height": size, "width": size})
        rle = {"size": [size, size], "counts": [0, size * size]}
        annotations.append({"id": i, "image_id": i, "category_id": 1, "segmentation": rle})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    tracemalloc.start()
    try:
        report = import_annotations("coco", tmp_path / "c.json", tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.pixels[0] == count * size * size
    assert peak < 20 * size * size  # one image: 3 bytes a pixel decoded, 1 for its label


def test_labelme_masks_declaring_too_many_pixels_are_one_line(tmp_path, capsys):
    write_png(tmp_path / "lm" / "x.png")
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)
    chunk = (
        struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    )
    bomb = base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()
    shape = {"label": "a", "shape_type": "mask", "points": [[0, 0], [9, 9]], "mask": bomb}
    path = labelme_file(tmp_path / "lm" / "x.json", [shape])
    fails(capsys, run("labelme", path, tmp_path / "out"), "x.json: image 'x.png', shape 0", "mask")
    big = cv2.imencode(".png", np.zeros((H + 1, W), np.uint8))[1].tobytes()
    shape["mask"] = base64.b64encode(big).decode()
    labelme_file(tmp_path / "lm" / "x.json", [shape])
    fails(capsys, run("labelme", path, tmp_path / "out"), "a mask of 48x41 on a 48x40 image")


# --- CPU ------------------------------------------------------------------------------------------


def test_a_tangled_polygon_is_refused_before_it_is_filled(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png", (500, 500))
    rng = np.random.default_rng(0)
    tangle = rng.integers(0, 500, (20_000, 2)).ravel().tolist()  # 19.5 s in cv2.fillPoly
    image = {"height": 500, "width": 500}
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": [tangle]}], image)
    fails(
        capsys,
        run("coco", path, tmp_path / "out"),
        "i.json: annotation 1 (image 'x.png')",
        f"more than {MAX_SHAPE_VERTICES:,}",
    )
    smaller = rng.integers(0, 500, (4000, 2)).ravel().tolist()  # under the cap, still 0.5 s
    coco_file(tmp_path / "c" / "i.json", [{"segmentation": [smaller]}], image)
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json: annotation 1", "tangled")


def circle(n: int, cx: float, cy: float, r: float) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel().tolist()


def test_long_outlines_are_painted_up_to_the_image_cap(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png", (500, 500))
    image = {"height": 500, "width": 500}
    outline = circle(9_000, 250, 250, 200)
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": [outline]}], image)
    report = import_annotations("coco", path, tmp_path / "out")
    assert abs(report.pixels[0] - np.pi * 200**2) < 0.01 * np.pi * 200**2
    many = [{"segmentation": [circle(9_500, 250, 250, 10 + i)]} for i in range(11)]
    coco_file(tmp_path / "c" / "i.json", many, image)
    fails(
        capsys,
        run("coco", path, tmp_path / "out2"),
        "i.json: annotation 1 (image 'x.png')",
        f"pass {MAX_IMAGE_VERTICES:,} vertices together",
    )


def test_coordinates_far_outside_the_image_are_refused(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png")
    far = [[0, 0, 1e12, 0, 1e12, 10, 0, 10]]  # would wrap in int32
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": far}])
    fails(capsys, run("coco", path, tmp_path / "out"), "annotation 1 (image 'x.png')", "outside")
    near = [[-20, -20, W + 20, -20, W + 20, H + 20]]  # off the image, within one image size
    coco_file(tmp_path / "c" / "i.json", [{"segmentation": near}])
    assert main(run("coco", path, tmp_path / "out")) == 0


@pytest.mark.parametrize("axis", ["1e9", "1e10"])
def test_huge_ellipses_are_refused_in_a_line(tmp_path, capsys, axis):
    write_png(tmp_path / "v" / "x.png")
    path = cvat_file(tmp_path / "v", f'<ellipse label="a" cx="20" cy="20" rx="{axis}" ry="5"/>')
    fails(capsys, run("cvat", path, tmp_path / "out"), "image 'x.png', <ellipse> 0", "outside")


def test_an_overflowing_labelme_circle_is_refused(tmp_path, capsys):
    write_png(tmp_path / "lm" / "x.png")
    shape = {"label": "a", "shape_type": "circle", "points": [[10, 10], [1e10, 10]]}
    path = labelme_file(tmp_path / "lm" / "x.json", [shape])
    fails(capsys, run("labelme", path, tmp_path / "out"), "x.json: image 'x.png', shape 0 ('a')")


# --- paths ----------------------------------------------------------------------------------------

RECTANGLE = {"label": "a", "shape_type": "rectangle", "points": [[1, 1], [3, 3]]}


def test_labelme_image_paths_outside_the_export_are_refused(tmp_path, capsys):
    secret = tmp_path / "secret" / "x.png"
    write_png(secret)
    export = tmp_path / "export" / "deep"
    for image_path in (str(secret), "../../secret/x.png"):
        path = labelme_file(export / "x.json", [RECTANGLE], image_path)
        fails(capsys, run("labelme", path, tmp_path / "out"), "x.json", "outside")
    (export / "link.png").symlink_to(secret)
    path = labelme_file(export / "x.json", [RECTANGLE], "link.png")
    fails(capsys, run("labelme", path, tmp_path / "out"), f"resolves to {secret}")
    assert not (tmp_path / "out").exists()


def test_labelme_s_usual_images_folder_beside_the_annotations_still_works(tmp_path, capsys):
    export = tmp_path / "export"
    written = write_png(export / "images" / "x.png")
    labelme_file(export / "annotations" / "x.json", [RECTANGLE], "../images/x.png")
    import_annotations("labelme", export, tmp_path / "out1")  # the export's folder holds it
    assert (
        tmp_path / "out1" / "images" / "train" / "annotations" / "x.png"
    ).read_bytes() == written
    import_annotations(
        "labelme", export / "annotations", tmp_path / "out2", images=export / "images"
    )
    assert (tmp_path / "out2" / "images" / "train" / "x.png").read_bytes() == written
    fails(capsys, run("labelme", export / "annotations", tmp_path / "out3"), "outside", "--images")


def test_coco_images_that_link_outside_their_folder_are_refused(tmp_path, capsys):
    secret = tmp_path / "secret.png"
    write_png(secret)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").symlink_to(secret)
    path = coco_file(tmp_path / "c" / "i.json", [])
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json", f"resolves to {secret}")


# --- one line instead of a traceback -------------------------------------------------------------


ANNOTATION = {"id": 1, "image_id": 1, "category_id": 1}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"categories": [{"id": 1, "name": 5}]}, "every category needs an integer id and a text"),
        ({"annotations": [{**ANNOTATION, "image_id": [1]}]}, "image_id [1] is not"),
        ({"annotations": [{**ANNOTATION, "segmentation": {"size": 5}}]}, "RLE size 5 (H, W)"),
        ({"images": [{"id": [1], "file_name": "x.png", "height": H, "width": W}]}, "integer id"),
    ],
)
def test_odd_coco_values_are_one_line(tmp_path, capsys, change, expected):
    write_png(tmp_path / "c" / "x.png")
    path = coco_file(tmp_path / "c" / "i.json", [])
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    fails(capsys, run("coco", path, tmp_path / "out"), str(path), expected)


def test_names_files_from_other_editors(tmp_path, capsys):
    write_png(tmp_path / "lm" / "x.png")
    src = labelme_file(tmp_path / "lm" / "x.json", [RECTANGLE]).parent
    names = tmp_path / "names.txt"
    names.write_text("\ufeffa\nb\n", encoding="utf-8")  # Windows Notepad's byte-order mark
    report = import_annotations("labelme", src, tmp_path / "out", classes_file=names)
    assert report.class_names == ("a", "b")
    names.write_text("a 1 2 \u00b2\n", encoding="utf-8")  # not a colour: "a 1 2 ²" is the name
    fails(capsys, run("labelme", src, tmp_path / "out2", "--classes", str(names)), "label 'a'")


def test_control_characters_in_class_names_are_escaped_in_the_report(tmp_path, capsys):
    write_png(tmp_path / "lm" / "x.png")
    shape = {**RECTANGLE, "label": "\x1b[2Jred"}
    src = labelme_file(tmp_path / "lm" / "x.json", [shape]).parent
    assert main(run("labelme", src, tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "\\x1b[2Jred" in printed and "\x1b" not in printed


def test_an_out_that_is_a_symbolic_link_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "link")

    def never(source, images):
        raise AssertionError("the export was read before --out was checked")

    monkeypatch.setitem(importers.READERS, "labelme", never)
    fails(capsys, run("labelme", tmp_path, tmp_path / "link"), "link", "symbolic link")
    with pytest.raises(DatasetError, match="symbolic link"):
        import_annotations("labelme", tmp_path, tmp_path / "link")


def test_an_image_of_too_many_shapes_is_refused(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png")
    rle = {"size": [H, W], "counts": [H * W]}  # 12 bytes of JSON, a whole image to decode
    path = coco_file(tmp_path / "c" / "i.json", [{"segmentation": rle}] * (MAX_IMAGE_SHAPES + 1))
    fails(capsys, run("coco", path, tmp_path / "out"), "i.json: image 'x.png'", "shapes, more than")


def test_json_no_parser_takes_is_one_line(tmp_path, capsys):
    write_png(tmp_path / "c" / "x.png")
    path = tmp_path / "c" / "i.json"
    for text in ('{"images": [' + "1" * 5000 + "]}", "[" * 100_000 + "]" * 100_000):
        path.write_text(text)
        fails(capsys, run("coco", path, tmp_path / "out"), "i.json: cannot read the annotations")


def test_a_labelstudio_rle_that_is_a_number_is_refused(tmp_path, capsys):
    write_png(tmp_path / "ls" / "x.png")
    value = {"format": "rle", "rle": 10**10, "brushlabels": ["a"]}  # bytes(10**10): 10 GB
    result = {"type": "brushlabels", "value": value, "original_width": W, "original_height": H}
    task = {"id": 1, "data": {"image": "x.png"}, "annotations": [{"id": 1, "result": [result]}]}
    (tmp_path / "ls" / "e.json").write_text(json.dumps([task]))
    fails(capsys, run("labelstudio", tmp_path / "ls" / "e.json", tmp_path / "out"), "list of byte")
