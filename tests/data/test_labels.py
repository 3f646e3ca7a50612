"""Label formats (index, palette, colour, CVAT labelmap), label_map and the split check;
broken, oversized and oddly named files as one problem line each."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet.cli import main
from pspnet.data.check import check_dataset, median_frequency_weights
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.labels import read_label
from pspnet.data.presets import get_preset
from pspnet.errors import DatasetError, ImageTooLargeError

COLOURS = [(0, 0, 0), (250, 50, 83), (36, 179, 83)]
NAMES = ["background", "car", "traffic light"]


def raw(image, label, rng):
    return image, label


def labelmap(path: Path) -> Path:
    """CVAT's labelmap.txt, as its "Segmentation mask" export writes it."""
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in zip(NAMES, COLOURS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ids(shape=(6, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_cvat_labelmap_is_a_names_file(tmp_path):
    preset = get_preset("custom", names_file=labelmap(tmp_path / "labelmap.txt"))
    assert preset.class_names == tuple(NAMES)
    assert preset.palette == tuple(COLOURS)
    assert preset.colours_from == str(tmp_path / "labelmap.txt")


def test_colour_masks_map_through_the_names_file(tmp_path):
    truth = ids()
    rgb = np.asarray(COLOURS, dtype=np.uint8)[truth]  # (H, W, 3)
    preset = get_preset("custom", names_file=labelmap(tmp_path / "labelmap.txt"))
    assert np.array_equal(read_label(save(tmp_path / "rgb.png", rgb), preset), truth)
    rgba = np.concatenate([rgb, np.full((*truth.shape, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(read_label(save(tmp_path / "rgba.png", rgba), preset), truth)
    # Index labels still read as indices under the same preset.
    assert np.array_equal(read_label(save(tmp_path / "index.png", truth), preset), truth)


def test_palette_pngs_are_read_as_their_indices(tmp_path):
    truth = ids()
    truth[0, 0] = 255
    image = Image.fromarray(truth, "P")
    image.putpalette([200, 10, 10] * 256)  # colours that are no class's: indices decide
    image.save(tmp_path / "p.png")
    assert np.array_equal(read_label(tmp_path / "p.png", get_preset("custom", 3)), truth)


def test_an_unknown_colour_names_file_colour_pixels_and_names_file(tmp_path):
    rgb = np.asarray(COLOURS, dtype=np.uint8)[ids()]
    rgb[:2, :3] = (9, 8, 7)  # 6 pixels
    names = labelmap(tmp_path / "labelmap.txt")
    path = save(tmp_path / "bad.png", rgb)
    with pytest.raises(DatasetError) as err:
        read_label(path, get_preset("custom", names_file=names))
    message = str(err.value)
    assert str(path) in message and "(9, 8, 7) in 6 pixels" in message and str(names) in message


def test_colour_masks_need_colours(tmp_path):
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    path = save(tmp_path / "rgb.png", np.asarray(COLOURS, dtype=np.uint8)[ids()])
    with pytest.raises(DatasetError, match="no class colours"):
        read_label(path, get_preset("custom", names_file=tmp_path / "names.txt"))


def test_two_classes_with_one_colour_are_refused(tmp_path):
    (tmp_path / "names.txt").write_text("a 1 2 3\nb 1 2 3\n")
    with pytest.raises(DatasetError, match=r"names.txt:2: 'b' has the colour"):
        get_preset("custom", names_file=tmp_path / "names.txt")


def test_label_map_remaps_index_labels(tmp_path):
    stored = np.array([[0, 255, 7], [33, 7, 0]], np.uint8)
    path = save(tmp_path / "l.png", stored)
    preset = get_preset("custom", 2, label_map={255: 1, 7: 255, 33: 0})
    assert read_label(path, preset).tolist() == [[0, 1, 255], [0, 255, 0]]
    cityscapes = get_preset("cityscapes", label_map={33: 255})  # bicycle ignored
    assert cityscapes.label_map[33] == 255 and cityscapes.label_map[26] == 13
    with pytest.raises(DatasetError, match=r"data.label_map: 7 -> 5"):
        get_preset("custom", 2, label_map={7: 5})


def test_values_beyond_the_classes_name_the_fix(tmp_path):
    path = save(tmp_path / "l.png", np.array([[0, 9]], np.uint8))
    with pytest.raises(DatasetError, match=r"l.png: label values 9 .*data.label_map"):
        read_label(path, get_preset("custom", 2))


def write_split(root: Path, labels: list[np.ndarray], split="train") -> None:
    for i, label in enumerate(labels):
        image = np.zeros((*label.shape[:2], 3), np.uint8)
        save(root / "images" / split / f"{i}.png", image)
        save(root / "labels" / split / f"{i}.png", label)


def test_binary_masks_of_0_and_255_are_refused_with_the_fix(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:6] = 255
    write_split(tmp_path, [mask, mask])
    (tmp_path / "classes.txt").write_text("background\nforeground\n")
    preset = get_preset("custom", root=tmp_path)  # classes.txt by default
    report = check_dataset(tmp_path, preset, "train")
    assert not report.ok and "data.label_map: {255: 1}" in report.problems[0][1]
    fixed = get_preset("custom", root=tmp_path, label_map={255: 1})
    report = check_dataset(tmp_path, fixed, "train")
    assert report.ok and report.histogram.tolist() == [80, 16, 0]


def test_the_check_warns_of_unseen_classes_and_orphan_labels(tmp_path):
    write_split(tmp_path, [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)])
    save(tmp_path / "labels" / "train" / "sub" / "lonely.png", np.zeros((4, 4), np.uint8))
    report = check_dataset(tmp_path, get_preset("custom", 3), "train")
    assert report.ok
    assert any("1 classes never seen in train: class_2" in w for w in report.warnings)
    assert any("lonely.png" in w for w in report.warnings)
    assert "warning: 1 label files have no image" in report.to_text(["a", "b", "c"])


def test_a_limited_check_reads_only_the_first_pairs(tmp_path):
    write_split(tmp_path, [np.zeros((4, 4), np.uint8)] * 3 + [np.full((4, 4), 9, np.uint8)])
    report = check_dataset(tmp_path, get_preset("custom", 3), "train", limit=3)
    assert report.ok and report.checked == 3 and report.num_pairs == 4
    assert not check_dataset(tmp_path, get_preset("custom", 3), "train").ok


def test_median_frequency_weights_match_a_hand_count():
    # Image 1: 6 px of class 0, 2 of class 1; image 2: 4 px of class 0, 4 of class 2.
    labels = [np.array([0] * 6 + [1] * 2), np.array([0] * 4 + [2] * 4)]
    pixels = sum(np.bincount(x, minlength=4) for x in labels)
    present = sum((np.bincount(x, minlength=4) > 0) * x.size for x in labels)
    freq = {0: 10 / 16, 1: 2 / 8, 2: 4 / 8}
    median = sorted(freq.values())[1]
    expected = [median / freq[0], median / freq[1], median / freq[2], 1.0]
    assert np.allclose(median_frequency_weights(pixels, present), expected)


def test_the_report_s_weights_come_from_the_split(tmp_path):
    write_split(tmp_path, [np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, 0, 2, 2]], np.uint8)])
    report = check_dataset(tmp_path, get_preset("custom", 3), "train")
    # class 0: 5 of 8 px; class 1: 1 of 4; class 2: 2 of 4 -> median 0.5
    assert np.allclose(report.class_weights(), [0.5 / (5 / 8), 0.5 / 0.25, 1.0])
    assert "auto weight" in report.to_text(["a", "b", "c"])


def test_colour_datasets_train_through_the_dataset_class(tmp_path):
    truth = [ids(seed=s) for s in range(2)]
    write_split(tmp_path, [np.asarray(COLOURS, dtype=np.uint8)[t] for t in truth])
    labelmap(tmp_path / "classes.txt")
    dataset = SegmentationDataset(tmp_path, "train", get_preset("custom", root=tmp_path), raw)
    assert all(np.array_equal(dataset[i][1], truth[i]) for i in range(2))


def test_data_check_cli_takes_a_label_map(tmp_path, capsys):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3] = 255
    write_split(tmp_path, [mask])
    (tmp_path / "classes.txt").write_text("background\nroad\n")
    args = ["data", "check", str(tmp_path), "--dataset", "custom"]
    assert main(args) == 1
    assert "data.label_map: {255: 1}" in capsys.readouterr().out
    assert main([*args, "--label-map", "255:1"]) == 0
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--label-map", "255:x"])
    assert exit_.value.code == 2 and "expected VALUE:ID" in capsys.readouterr().err


# --- files that must be one problem line, never a traceback -------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def paletted_png(height: int, width: int, entries: int = 256) -> bytes:
    """A paletted PNG of zeros whose PLTE chunk lists ``entries`` colours."""
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * height)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"PLTE", bytes(3 * entries))
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def test_broken_palette_labels_are_problems_listed_with_the_others(tmp_path, capsys):
    write_split(tmp_path, [np.zeros((6, 8), np.uint8)] * 4)
    labels = tmp_path / "labels" / "train"
    noise = Image.fromarray(ids((60, 80), seed=1), "P")  # large enough to keep its header
    noise.putpalette([0, 0, 0, 255, 255, 255] * 128)
    noise.save(labels / "0.png")
    full = (labels / "0.png").read_bytes()
    (labels / "0.png").write_bytes(full[: len(full) // 2])  # truncated inside IDAT
    (labels / "1.png").write_bytes(paletted_png(6, 8, entries=300))  # PLTE of 300 entries
    (labels / "2.png").write_bytes(paletted_png(6, 8))  # a good one
    (labels / "3.png").write_bytes(paletted_png(5, 8))  # mis-sized: a problem as before
    report = check_dataset(tmp_path, get_preset("custom", 2), "train")
    problems = {path.name: message for path, message in report.problems}
    assert sorted(problems) == ["0.png", "1.png", "3.png"]
    assert all(str(labels / name) in problems[name] for name in ("0.png", "1.png"))
    assert "cannot be decoded" in problems["0.png"] and "cannot be decoded" in problems["1.png"]
    (tmp_path / "classes.txt").write_text("a\nb\n")
    assert main(["data", "check", str(tmp_path), "--dataset", "custom"]) == 1
    assert "3 problems" in capsys.readouterr().out


def test_palette_labels_are_held_to_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    path.write_bytes(paletted_png(30, 40))
    monkeypatch.setenv("PSPNET_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match=r"p.png: image is 40x30 \(1,200 pixels\)"):
        read_label(path, get_preset("custom", 2))


def test_names_files_with_a_byte_order_mark_or_other_digits(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\ufeffroad 1 2 3\ncar 1 2 \u00b2\nbus \u0663 2 1\n", encoding="utf-8")
    preset = get_preset("custom", names_file=names)
    assert preset.class_names == ("road", "car 1 2 \u00b2", "bus \u0663 2 1")  # ASCII colours only


def test_control_characters_in_class_names_are_printed_escaped(tmp_path, capsys):
    write_split(tmp_path, [np.array([[0, 1]], np.uint8)])
    (tmp_path / "classes.txt").write_text("\x1b[2Jwipe 1 2 3\nbell\x07 4 5 6\n")
    assert main(["data", "check", str(tmp_path), "--dataset", "custom"]) == 0
    printed = capsys.readouterr().out
    assert "\\x1b[2Jwipe" in printed and "bell\\x07" in printed
    assert "\x1b" not in printed and "\x07" not in printed
