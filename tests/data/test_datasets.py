from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pspnet.data.check import check_dataset
from pspnet.data.datasets import SegmentationDataset, find_pairs
from pspnet.data.presets import get_preset
from pspnet.data.transforms import AugmentConfig, TrainTransform
from pspnet.errors import DatasetError

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def raw(image, label, rng):
    """A transform that hands back what the dataset read."""
    return image, label


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    assert cv2.imwrite(str(path), array)


def make_custom(root: Path, n=4, classes=3, size=(12, 16)) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random pairs in the custom layout; returns the (RGB image, label) written."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, classes, size, dtype=np.uint8)
        label[0, :3] = 255
        write_png(root / "images" / "train" / f"s{i}.png", image)
        write_png(root / "labels" / "train" / f"s{i}.png", label)
        samples.append((image, label))
    return samples


def test_folder_pairing_reads_rgb_and_labels(tmp_path):
    samples = make_custom(tmp_path)
    dataset = SegmentationDataset(tmp_path, "train", get_preset("custom", 3), transform=raw)
    assert len(dataset) == 4
    assert [p[0].name for p in dataset.pairs] == ["s0.png", "s1.png", "s2.png", "s3.png"]
    assert dataset.pairs[1][1] == tmp_path / "labels" / "train" / "s1.png"
    for i, (image, label) in enumerate(samples):
        got_image, got_label = dataset[i]
        assert np.array_equal(got_image, image) and np.array_equal(got_label, label)


def test_list_file_with_mapping_and_default_transform(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    stored = np.zeros((8, 10), np.uint8)
    stored[:4] = 7  # road
    stored[4:] = 33  # bicycle
    stored[0, 0] = 3  # a labelId outside the 19 classes
    write_png(tmp_path / "a" / "x_leftImg8bit.png", image)
    write_png(tmp_path / "b" / "x_gtFine_labelIds.png", stored)
    (tmp_path / "val.txt").write_text("a/x_leftImg8bit.png b/x_gtFine_labelIds.png\n\n")
    dataset = SegmentationDataset(tmp_path, "val", get_preset("cityscapes"))
    got_image, got_label = dataset[0]
    expected = (image / 255.0 - MEAN) / STD
    torch.testing.assert_close(got_image, torch.from_numpy(expected.transpose(2, 0, 1)).float())
    assert got_label.dtype == torch.int64
    assert got_label[1:4].eq(0).all() and got_label[4:].eq(18).all() and got_label[0, 0] == 255


def test_cityscapes_folders_pair_by_stem_in_city_folders(tmp_path):
    for city, stem in [("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")]:
        write_png(
            tmp_path / f"leftImg8bit/train/{city}/{stem}_leftImg8bit.png",
            np.zeros((4, 4, 3), np.uint8),
        )
        write_png(
            tmp_path / f"gtFine/train/{city}/{stem}_gtFine_labelIds.png",
            np.full((4, 4), 7, np.uint8),
        )
        write_png(
            tmp_path / f"gtFine/train/{city}/{stem}_gtFine_color.png", np.zeros((4, 4, 3), np.uint8)
        )
    pairs = find_pairs(tmp_path, get_preset("cityscapes"), "train")
    assert [(i.name, lab.name) for i, lab in pairs] == [
        ("aachen_000000_000019_leftImg8bit.png", "aachen_000000_000019_gtFine_labelIds.png"),
        ("bonn_000001_000019_leftImg8bit.png", "bonn_000001_000019_gtFine_labelIds.png"),
    ]


def test_ade20k_split_folder_and_voc_stem_list(tmp_path):
    write_png(tmp_path / "ade/images/training/ADE_train_1.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "ade/images/training/ADE_train_1.png").rename(
        tmp_path / "ade/images/training/ADE_train_1.jpg"
    )
    pairs = find_pairs(tmp_path / "ade", get_preset("ade20k"), "train")
    assert pairs == [
        (
            tmp_path / "ade/images/training/ADE_train_1.jpg",
            tmp_path / "ade/annotations/training/ADE_train_1.png",
        )
    ]
    voc = tmp_path / "voc"
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n2007_000042\n")
    pairs = find_pairs(voc, get_preset("voc"), "val")
    assert pairs[1] == (
        voc / "JPEGImages/2007_000042.jpg",
        voc / "SegmentationClassAug/2007_000042.png",
    )


def test_missing_list_or_folder_is_explained(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="needs a list file"):
        find_pairs(tmp_path, get_preset("voc"), "train")
    with pytest.raises(DatasetError, match="images/val"):
        find_pairs(tmp_path, get_preset("custom", 3), "val")
    (tmp_path / "val.txt").write_text("a b c\n")
    with pytest.raises(DatasetError, match=r"val.txt:1: expected 'image label'"):
        find_pairs(tmp_path, get_preset("custom", 3), "val")


def corrupt(root: Path, kind: str, index: int = 1) -> Path:
    """Spoil pair ``index`` in one way; returns the file the error must name."""
    image_path = root / f"images/train/s{index}.png"
    label_path = root / f"labels/train/s{index}.png"
    if kind == "missing":
        label_path.unlink()
        return label_path
    if kind == "truncated":
        data = image_path.read_bytes()
        image_path.write_bytes(data[: len(data) // 2])
        return image_path
    if kind == "size":
        write_png(label_path, np.zeros((12, 15), np.uint8))
        return label_path
    if kind == "value":
        write_png(label_path, np.full((12, 16), 3, np.uint8))  # classes are 0..2
        return label_path
    if kind == "channels":
        write_png(label_path, np.zeros((12, 16, 3), np.uint8))
        return label_path
    write_png(label_path, np.zeros((12, 16), np.uint16))  # 16-bit
    return label_path


KINDS = ["missing", "truncated", "size", "value", "channels", "16bit"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_sample_raises_naming_the_file(tmp_path, kind):
    make_custom(tmp_path)
    bad = corrupt(tmp_path, kind)
    dataset = SegmentationDataset(tmp_path, "train", get_preset("custom", 3), transform=raw)
    dataset[0]
    with pytest.raises(DatasetError) as err:
        dataset[1]
    assert str(bad) in str(err.value)


def test_check_dataset_lists_every_problem_and_counts_pixels(tmp_path):
    samples = make_custom(tmp_path, n=6, classes=3)
    spoilt = [(1, "missing"), (3, "truncated"), (4, "value")]
    bad = [corrupt(tmp_path, kind, index) for index, kind in spoilt]
    calls = []
    report = check_dataset(
        tmp_path, get_preset("custom", 3), "train", progress=lambda *a: calls.append(a)
    )
    assert calls[-1] == (6, 6) and len(calls) == 6
    assert [path for path, _ in report.problems] == bad
    assert all(str(path) in message for path, message in report.problems)
    good = np.concatenate([samples[i][1].ravel() for i in (0, 2, 5)])
    counts = np.bincount(good, minlength=256)
    assert report.histogram.tolist() == [*counts[:3].tolist(), counts[255]]
    assert report.sizes.count == 5  # every image but the truncated one
    assert report.sizes.common == [((12, 16), 5)]
    text = report.to_text(["a", "b", "c"])
    assert "3 problems" in text and "ignore (255)" in text and str(bad[1]) in text


def test_seeded_access_is_deterministic(tmp_path):
    make_custom(tmp_path, size=(20, 24))
    transform = TrainTransform(AugmentConfig(crop_size=(16, 16)))
    dataset = SegmentationDataset(tmp_path, "train", get_preset("custom", 3), transform)
    a, b, c = dataset[2, 11], dataset[2, 11], dataset[2, 12]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert dataset[2][0].shape == (3, 16, 16)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} is absent")
def test_real_camvid_train_samples():
    preset = get_preset("camvid")
    transform = TrainTransform(AugmentConfig(crop_size=(64, 64)))
    dataset = SegmentationDataset(CAMVID, "train", preset, transform)
    assert len(dataset) == 367
    assert (
        dataset.pairs[0][0].parent.name == "train"
        and dataset.pairs[0][1].parent.name == "trainannot"
    )
    for index in (0, 100):
        image, label = dataset[index, index]
        assert image.shape == (3, 64, 64) and label.shape == (64, 64)
        assert set(label.unique().tolist()) <= set(range(11)) | {255}
    image, label = SegmentationDataset(CAMVID, "train", preset, raw)[0]
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8 and label.shape == (360, 480)
