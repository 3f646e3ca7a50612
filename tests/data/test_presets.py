from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import PRESETS, get_preset
from pspnet.errors import DatasetError

# The standard Cityscapes labelId -> trainId table (cityscapesScripts' labels.py).
CITYSCAPES_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def test_ade20k_shifts_classes_down_and_ignores_other():
    table = get_preset("ade20k").label_map
    assert table[0] == 255
    assert table[1] == 0
    assert table[150] == 149
    assert table[255] == 255
    assert table[200] >= 150  # not a class, so reading it fails


def test_cityscapes_maps_label_ids_to_train_ids():
    table = get_preset("cityscapes").label_map
    for label_id in range(34):
        assert table[label_id] == CITYSCAPES_TRAIN_IDS.get(label_id, 255), label_id
    assert table[255] == 255
    assert get_preset("cityscapes").class_names[0] == "road"
    assert get_preset("cityscapes").class_names[18] == "bicycle"


def test_camvid_void_is_ignored():
    preset = get_preset("camvid")
    table = preset.label_map
    assert table[:11].tolist() == list(range(11))
    assert table[11] == 255
    assert preset.class_names[0] == "Sky" and preset.class_names[10] == "Bicyclist"
    assert preset.palette[4] == (60, 40, 222)


def test_voc_colour_map_matches_published_colours():
    palette = get_preset("voc").palette
    # aeroplane, bicycle, person, tvmonitor as drawn in the VOC devkit's PNGs.
    assert palette[0] == (0, 0, 0)
    assert palette[1] == (128, 0, 0)
    assert palette[2] == (0, 128, 0)
    assert palette[15] == (192, 128, 128)
    assert palette[20] == (0, 64, 128)
    assert get_preset("voc").label_map.tolist() == list(range(256))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_consistent(name):
    preset = PRESETS[name]
    assert len(preset.class_names) == len(set(preset.class_names)) == preset.num_classes
    assert len(preset.palette) == preset.num_classes
    assert all(0 <= c <= 255 for colour in preset.palette for c in colour)
    assert not preset.label_map.flags.writeable


def test_ade20k_has_150_named_classes():
    preset = get_preset("ade20k")
    assert preset.num_classes == 150
    assert preset.class_names[:3] == ("wall", "building", "sky")
    assert preset.class_names[-1] == "flag"
    assert len(set(preset.palette)) >= 148  # the published palette repeats two colours


def test_custom_without_names_file():
    preset = get_preset("custom", num_classes=5)
    assert preset.class_names == tuple(f"class_{i}" for i in range(5))
    assert len(set(preset.palette)) == 5
    assert preset.label_map[4] == 4 and preset.label_map[255] == 255
    assert get_preset("custom", num_classes=5).palette == preset.palette  # deterministic


def test_custom_names_file_with_and_without_colours(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("road 128 64 128\n\ntraffic light 250 170 30\nsky\n")
    preset = get_preset("custom", names_file=path)
    assert preset.num_classes == 3
    assert preset.class_names == ("road", "traffic light", "sky")
    assert preset.palette[:2] == ((128, 64, 128), (250, 170, 30))
    assert get_preset("custom", num_classes=3, names_file=path).class_names == preset.class_names


@pytest.mark.parametrize(
    "text,needle",
    [("road\n1 2 3\n", ":2:"), ("road 1 2 300\n", ":1:"), ("", "empty")],
)
def test_custom_names_file_errors_name_file_and_line(tmp_path, text, needle):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match="names.txt") as err:
        get_preset("custom", names_file=path)
    assert needle in str(err.value)


def test_preset_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset preset"):
        get_preset("coco")
    with pytest.raises(DatasetError, match="150 classes"):
        get_preset("ade20k", num_classes=20)
    with pytest.raises(DatasetError, match="num_classes"):
        get_preset("custom")
    path = tmp_path / "names.txt"
    path.write_text("a\nb\n")
    with pytest.raises(DatasetError, match="2 classes"):
        get_preset("custom", num_classes=3, names_file=path)
    with pytest.raises(DatasetError, match="no_such"):
        get_preset("custom", names_file=tmp_path / "no_such.txt")
    assert get_preset("camvid", num_classes=11) is PRESETS["camvid"]


# The datasets of mmsegmentation's published weights: class count, whether stored 0 is ignored
# (reduce_zero_label in mmseg's configs), and names and colours spot-checked against mmseg
# 1.2.2's mmseg/datasets/{loveda,potsdam,isprs,isaid,coco_stuff,pascal_context}.py.
MMSEG_PRESETS = [
    ("loveda", 7, True, {0: ("background", (255, 255, 255)), 6: ("agricultural", (255, 195, 128))}),
    ("potsdam", 6, True, {0: ("impervious_surface", (255, 255, 255)), 4: ("car", (255, 255, 0))}),
    ("vaihingen", 6, True, {1: ("building", (0, 0, 255)), 5: ("clutter", (255, 0, 0))}),
    ("isaid", 16, False, {2: ("store_tank", (0, 63, 63)), 14: ("plane", (0, 127, 255))}),
    ("coco_stuff10k", 171, True, {0: ("person", (0, 192, 64)), 80: ("banner", (0, 192, 0))}),
    (
        "coco_stuff164k",
        171,
        False,
        {91: ("ceiling-tile", (192, 224, 128)), 170: ("wood", (64, 64, 0))},
    ),
    ("pascal_context", 60, False, {0: ("background", (120, 120, 120)), 59: ("wood", (31, 0, 255))}),
    (
        "pascal_context_59",
        59,
        True,
        {0: ("aeroplane", (180, 120, 120)), 58: ("wood", (31, 0, 255))},
    ),
]


@pytest.mark.parametrize("name,count,reduces_zero,spots", MMSEG_PRESETS)
def test_mmseg_dataset_presets_match_mmseg(name, count, reduces_zero, spots):
    preset = get_preset(name)
    assert preset.num_classes == count
    for train_id, (class_name, colour) in spots.items():
        assert (preset.class_names[train_id], preset.palette[train_id]) == (class_name, colour)
    table = preset.label_map
    if reduces_zero:
        assert (table[0], table[1], table[count]) == (255, 0, count - 1)
        assert table[count + 1] >= count  # not a class, so reading it fails
    else:
        assert (table[0], table[count - 1]) == (0, count - 1)
        assert table[count] >= count
    assert table[255] == 255


def test_pascal_context_59_is_60_without_background():
    full, reduced = get_preset("pascal_context"), get_preset("pascal_context_59")
    assert full.class_names[1:] == reduced.class_names
    assert full.palette[1:] == reduced.palette


# One val pair per dataset as mmseg's converters lay it out: (image, label, list file or None).
MMSEG_LAYOUTS = {
    "loveda": ("img_dir/val/3514.png", "ann_dir/val/3514.png", None),
    "potsdam": ("img_dir/val/2_13_0_0_512_512.png", "ann_dir/val/2_13_0_0_512_512.png", None),
    "vaihingen": ("img_dir/val/area2_0_0_512_512.png", "ann_dir/val/area2_0_0_512_512.png", None),
    "isaid": (
        "img_dir/val/P0003_0_896_0_896.png",
        "ann_dir/val/P0003_0_896_0_896_instance_color_RGB.png",
        None,
    ),
    "coco_stuff10k": (
        "images/test2014/COCO_train2014_000000000077.jpg",
        "annotations/test2014/COCO_train2014_000000000077_labelTrainIds.png",
        None,
    ),
    "coco_stuff164k": (
        "images/val2017/000000000139.jpg",
        "annotations/val2017/000000000139_labelTrainIds.png",
        None,
    ),
    "pascal_context": (
        "JPEGImages/2008_000002.jpg",
        "SegmentationClassContext/2008_000002.png",
        "ImageSets/SegmentationContext/val.txt",
    ),
    "pascal_context_59": (
        "JPEGImages/2008_000002.jpg",
        "SegmentationClassContext/2008_000002.png",
        "ImageSets/SegmentationContext/val.txt",
    ),
}


def raw(image, label, rng):
    """A transform that hands back what the dataset read."""
    return image, label


def write_index_png(path: Path, stored: np.ndarray, paletted: bool) -> None:
    """An 8-bit index PNG; ``paletted``: mode P, as mmseg's iSAID converter writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(stored)  # mode L
    (image.convert("P") if paletted else image).save(path)  # P: a grey palette, same indices


@pytest.mark.parametrize("name,count,reduces_zero,spots", MMSEG_PRESETS)
def test_mmseg_dataset_presets_read_the_converters_layout(
    tmp_path, name, count, reduces_zero, spots
):
    image_path, label_path, list_path = MMSEG_LAYOUTS[name]
    top = count if reduces_zero else count - 1  # the highest stored class value
    stored = np.array([[0, 1, top, 255]] * 3, dtype=np.uint8)  # (3, 4)
    expected = [255, 0, count - 1, 255] if reduces_zero else [0, 1, count - 1, 255]
    (tmp_path / image_path).parent.mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / image_path), np.zeros((3, 4, 3), np.uint8))
    write_index_png(tmp_path / label_path, stored, paletted=name == "isaid")
    if list_path is not None:  # the list names stems, as mmseg's converter writes it
        (tmp_path / list_path).parent.mkdir(parents=True)
        (tmp_path / list_path).write_text(Path(image_path).stem + "\n")
    dataset = SegmentationDataset(tmp_path, "val", get_preset(name), transform=raw)
    assert dataset.pairs == [(tmp_path / image_path, tmp_path / label_path)]
    _, label = dataset[0]
    assert label.tolist() == [expected] * 3


def test_isprs_colour_labels_read_through_the_publishers_colours(tmp_path):
    colours = np.array([[[255, 255, 255], [0, 0, 255], [255, 255, 0], [255, 0, 0]]], np.uint8)
    (tmp_path / "img_dir" / "val").mkdir(parents=True)
    (tmp_path / "ann_dir" / "val").mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / "img_dir" / "val" / "a.png"), np.zeros((1, 4, 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "ann_dir" / "val" / "a.png"), colours[..., ::-1])
    _, label = SegmentationDataset(tmp_path, "val", get_preset("potsdam"), transform=raw)[0]
    assert label.tolist() == [[0, 1, 4, 5]]  # impervious surface, building, car, clutter
