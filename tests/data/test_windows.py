"""Random windows of large tiles, read window by window, same as cutting the decoded tile."""

import numpy as np
import pytest
from helpers import write_tiny_multiband

pytest.importorskip("rasterio")

from pspnet.data import images  # noqa: E402
from pspnet.data.datasets import SegmentationDataset, load_pair  # noqa: E402
from pspnet.data.presets import get_preset  # noqa: E402
from pspnet.data.windows import read_window_pair  # noqa: E402


@pytest.fixture
def tiles(tmp_path):
    root = write_tiny_multiband(tmp_path / "tiles", num_train=2, num_val=1, size=(96, 120))
    preset = get_preset("custom", num_classes=3)
    return root, preset, SegmentationDataset(root, "train", preset).pairs


def test_a_window_equals_the_same_cut_of_the_whole_tile(tiles):
    _, preset, pairs = tiles
    image_path, label_path = pairs[0]
    whole_image, whole_label = load_pair(image_path, label_path, preset)
    for seed in range(5):
        image, label = read_window_pair(
            image_path, label_path, preset, 40, np.random.default_rng(seed)
        )
        assert image.shape == (40, 40, 4) and label.shape == (40, 40)
        found = [  # where the window came from
            (top, left)
            for top in range(0, 57)
            for left in range(0, 81)
            if np.array_equal(whole_image[top : top + 40, left : left + 40], image)
        ]
        assert found and np.array_equal(
            whole_label[found[0][0] : found[0][0] + 40, found[0][1] : found[0][1] + 40], label
        )


def test_windows_never_decode_a_tiff_tile_whole(tiles, monkeypatch):
    root, preset, _ = tiles

    def whole(*args, **kwargs):
        raise AssertionError("a TIFF tile was decoded whole")

    monkeypatch.setattr(images, "read_raster", whole)
    monkeypatch.setattr("pspnet.data.windows.read_bands", whole)
    dataset = SegmentationDataset(root, "train", preset, window=32)
    image, label = dataset[0, 7]
    assert tuple(image.shape[-2:]) == (32, 32) and tuple(label.shape) == (32, 32)
    again, _ = dataset[0, 7]
    assert (again == image).all()  # the seed decides the window: a resumed run draws the same


def test_a_window_larger_than_the_tile_takes_it_whole(tiles):
    _, preset, pairs = tiles
    image, label = read_window_pair(*pairs[0], preset, 500, np.random.default_rng(0))
    assert image.shape[:2] == label.shape == (96, 120)
