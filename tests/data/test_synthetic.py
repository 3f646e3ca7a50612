import numpy as np
import pytest
import torch
from PIL import Image

from pspnet.data.synthetic import (
    CONTEXT_CLASSES,
    CONTEXT_PAIRS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    SyntheticScenes,
    make_scene,
    write_synthetic_dataset,
)
from pspnet.errors import DatasetError

SIZE = 48
INDEX = {name: i for i, name in enumerate(SYNTHETIC_CLASSES)}
HARBOUR = [INDEX[harbour] for harbour, _ in CONTEXT_PAIRS]
STREET = [INDEX[street] for _, street in CONTEXT_PAIRS]
CUE = [INDEX["sky"], INDEX["building"], INDEX["tree"]]


def scene(seed: int, kind=None):
    return make_scene(np.random.default_rng(seed), SIZE, kind=kind)


def test_names_and_palette_fit_together():
    assert len(SYNTHETIC_PALETTE) == len(SYNTHETIC_CLASSES) == len(set(SYNTHETIC_PALETTE))
    assert set(CONTEXT_CLASSES) < set(SYNTHETIC_CLASSES)
    assert {"sky", "building", "tree"}.isdisjoint(CONTEXT_CLASSES)


def test_scene_shapes_types_and_determinism():
    image, label = scene(3)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert label.shape == (SIZE, SIZE) and label.dtype == np.uint8
    assert label.max() < len(SYNTHETIC_CLASSES)
    again = scene(3)
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
    assert not np.array_equal(image, scene(4)[0])


def test_forcing_the_kind_keeps_the_drawn_scene():
    # make_scene draws the coin even when the kind is forced, so the random-kind scene is one
    # of the matched pair below: the kind is independent of everything else that is drawn.
    for seed in range(10):
        image, label = scene(seed)
        kind = "harbour" if np.isin(label, HARBOUR).any() else "street"
        forced = scene(seed, kind)
        assert np.array_equal(image, forced[0]) and np.array_equal(label, forced[1])


def test_matched_pair_is_identical_below_the_horizon():
    # Same generator state, both kinds: the pixels of boat and car, water and road, sand and
    # pavement are the very same pixels. Since the kind is drawn independently, their local
    # appearance is identically distributed: no local detector can tell them apart.
    colour_sums = np.zeros((len(SYNTHETIC_CLASSES), 3))
    for seed in range(40):
        harbour_image, harbour_label = scene(seed, "harbour")
        street_image, street_label = scene(seed, "street")
        for harbour_class, street_class in zip(HARBOUR, STREET):
            in_harbour = harbour_label == harbour_class
            assert np.array_equal(in_harbour, street_label == street_class)
            colour_sums[harbour_class] += harbour_image[in_harbour].sum(0)
            colour_sums[street_class] += street_image[in_harbour].sum(0)
        differs = (harbour_image != street_image).any(-1)
        assert np.isin(harbour_label[differs], CUE).all()
        assert np.isin(street_label[differs], CUE).all()
        assert not np.isin(harbour_label, STREET).any() and not np.isin(street_label, HARBOUR).any()
    assert np.array_equal(colour_sums[HARBOUR], colour_sums[STREET])
    assert colour_sums[INDEX["boat"]].sum() > 0


def test_label_statistics_and_the_cue_decides_the_kind():
    counts = np.zeros(len(SYNTHETIC_CLASSES))
    harbours = 0
    for seed in range(200):
        _, label = scene(seed)
        counts += np.bincount(label.ravel(), minlength=len(SYNTHETIC_CLASSES))
        harbour = np.isin(label, HARBOUR).any()
        harbours += harbour
        assert harbour != np.isin(label, STREET).any()  # exactly one kind per scene
        # The far shore is mostly woods in harbours and mostly buildings in streets.
        woods, buildings = (label == INDEX["tree"]).sum(), (label == INDEX["building"]).sum()
        assert (woods > buildings) == harbour
    shares = counts / counts.sum()
    assert 70 <= harbours <= 130
    assert shares.min() > 0.01  # every class, both of every context pair, is present
    for harbour_class, street_class in zip(HARBOUR, STREET):
        assert 0.5 < shares[harbour_class] / shares[street_class] < 2
    ground = shares[INDEX["water"]] + shares[INDEX["road"]]
    assert ground > 0.3  # the ambiguous stuff is large, not a thin rim


def test_dataset_normalises_and_is_reproducible():
    dataset = SyntheticScenes(5, size=SIZE, seed=7)
    image, label = dataset[2]
    raw_image, raw_label = dataset.raw(2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    expected = (torch.from_numpy(raw_image).permute(2, 0, 1).float() / 255 - mean) / std
    assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
    assert torch.allclose(image, expected, atol=1e-6)
    assert label.dtype == torch.int64 and torch.equal(label, torch.from_numpy(raw_label).long())
    assert torch.equal(SyntheticScenes(5, size=SIZE, seed=7)[2][0], image)
    assert not torch.equal(SyntheticScenes(5, size=SIZE, seed=8)[2][0], image)
    assert not torch.equal(SyntheticScenes(5, size=SIZE, seed=7, split="val")[2][0], image)
    assert len(dataset) == 5
    with pytest.raises(IndexError):
        dataset.raw(5)


def test_augment_flips_deterministically_per_epoch():
    dataset = SyntheticScenes(8, size=SIZE, seed=1, augment=True)
    plain = SyntheticScenes(8, size=SIZE, seed=1)
    flips = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(8):
            image, label = dataset[index]
            reference, reference_label = plain[index]
            flipped = torch.equal(image, reference.flip(-1))
            assert flipped or torch.equal(image, reference)
            assert torch.equal(label, reference_label.flip(-1) if flipped else reference_label)
            assert torch.equal(dataset[index][0], image)  # same epoch, same flip
            flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


def test_write_synthetic_dataset_round_trips(tmp_path):
    root = write_synthetic_dataset(tmp_path / "synthetic", num_train=3, num_val=2, size=SIZE)
    for split, count in (("train", 3), ("val", 2)):
        lines = (root / f"{split}.txt").read_text().splitlines()
        assert len(lines) == count
        scenes = SyntheticScenes(count, size=SIZE, seed=0, split=split)
        for index, line in enumerate(lines):
            image_path, label_path = line.split()
            image = np.asarray(Image.open(root / image_path))
            label_image = Image.open(root / label_path)
            assert label_image.mode == "L"
            raw_image, raw_label = scenes.raw(index)
            assert np.array_equal(image, raw_image)
            assert np.array_equal(np.asarray(label_image), raw_label)


def test_write_into_a_file_raises_dataset_error(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError, match="taken"):
        write_synthetic_dataset(blocker, num_train=1, num_val=1, size=SIZE)


def test_small_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 32"):
        make_scene(np.random.default_rng(0), 16)
