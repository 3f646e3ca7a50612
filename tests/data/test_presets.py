import pytest

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
