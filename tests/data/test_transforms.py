import cv2
import numpy as np
import pytest
import torch

from pspnet.data.transforms import AugmentConfig, EvalTransform, TrainTransform, normalize

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
OFF = dict(scale=None, rotate=None, blur=False, flip=False)


def sample(h=24, w=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, classes, (h, w), dtype=np.uint8)
    label[0, 0] = 255
    return image, label


def plain(image):
    """Normalisation computed independently, in float64."""
    return torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()


def run(cfg, image, label, seed):
    return TrainTransform(cfg)(image, label, np.random.default_rng(seed))


def test_normalize_matches_numpy():
    image, _ = sample()
    torch.testing.assert_close(normalize(image), plain(image), atol=1e-5, rtol=0)


def test_eval_transform_only_normalises():
    image, label = sample(h=17, w=23)
    out_image, out_label = EvalTransform()(image, label, np.random.default_rng(0))
    torch.testing.assert_close(out_image, plain(image), atol=1e-5, rtol=0)
    assert out_label.dtype == torch.int64 and out_label.tolist() == label.tolist()


@pytest.mark.parametrize("size", [(24, 32), (10, 12), (60, 50)])
def test_output_has_crop_size_and_valid_labels(size):
    image, label = sample(*size)
    cfg = AugmentConfig(crop_size=(20, 28))
    for seed in range(8):
        out_image, out_label = run(cfg, image, label, seed)
        assert out_image.shape == (3, 20, 28) and out_image.dtype == torch.float32
        assert out_label.shape == (20, 28) and out_label.dtype == torch.int64
        assert set(out_label.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_everything_off_equals_plain_normalisation():
    image, label = sample()
    out_image, out_label = run(AugmentConfig(crop_size=(24, 32), **OFF), image, label, 3)
    torch.testing.assert_close(out_image, plain(image), atol=1e-5, rtol=0)
    assert out_label.tolist() == label.tolist()


def test_padding_is_mean_colour_and_ignore():
    image, label = sample(h=10, w=15)
    out_image, out_label = run(AugmentConfig(crop_size=(17, 20), **OFF), image, label, 0)
    top, left = (17 - 10) // 2, (20 - 15) // 2
    inside = (slice(top, top + 10), slice(left, left + 15))
    assert out_label[inside].tolist() == label.tolist()
    pad = torch.ones(17, 20, dtype=torch.bool)
    pad[inside] = False
    assert (out_label[pad] == 255).all()
    assert out_image[:, pad].abs().max() < 1e-5  # the mean colour normalises to 0
    torch.testing.assert_close(out_image[(slice(None), *inside)], plain(image), atol=1e-5, rtol=0)


def test_rotation_fills_corners_with_ignore_and_mean():
    image, label = sample(h=32, w=32, classes=1)
    label[:] = 0
    cfg = AugmentConfig(crop_size=(32, 32), **{**OFF, "rotate": (30.0, 30.0)})
    rotated = 0
    for seed in range(12):
        out_image, out_label = run(cfg, image, label, seed)
        if (out_label == 255).any():
            rotated += 1
            for y, x in [(0, 0), (0, 31), (31, 0), (31, 31)]:
                assert out_label[y, x] == 255
                assert out_image[:, y, x].abs().max() < 1e-5
            assert out_label[16, 16] == 0
        else:
            torch.testing.assert_close(out_image, plain(image), atol=1e-5, rtol=0)
    assert 0 < rotated < 12  # applied with p=0.5


def test_same_seed_same_output_different_seed_different():
    image, label = sample(h=40, w=48)
    cfg = AugmentConfig(crop_size=(24, 24))
    a, b = run(cfg, image, label, 7), run(cfg, image, label, 7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = run(cfg, image, label, 8)
    assert not torch.equal(a[0], c[0])


def test_flip_alone_mirrors_or_not():
    image, label = sample()
    cfg = AugmentConfig(crop_size=(24, 32), **{**OFF, "flip": True})
    seen = set()
    for seed in range(10):
        out_image, out_label = run(cfg, image, label, seed)
        flipped = out_label.tolist() == label[:, ::-1].tolist()
        reference = image[:, ::-1] if flipped else image
        torch.testing.assert_close(out_image, plain(reference), atol=1e-5, rtol=0)
        seen.add(flipped)
    assert seen == {True, False}


def test_blur_alone_blurs_image_only():
    image, label = sample()
    cfg = AugmentConfig(crop_size=(24, 32), **{**OFF, "blur": True})
    blurred = cv2.GaussianBlur(image.astype(np.float32), (5, 5), 0)
    seen = set()
    for seed in range(10):
        out_image, out_label = run(cfg, image, label, seed)
        assert out_label.tolist() == label.tolist()
        is_blurred = not torch.allclose(out_image, plain(image), atol=1e-4)
        reference = blurred if is_blurred else image
        torch.testing.assert_close(out_image, plain(reference), atol=1e-4, rtol=0)
        seen.add(is_blurred)
    assert seen == {True, False}


def test_scale_alone_resizes_labels_without_new_values():
    image, label = sample(h=20, w=20)
    cfg = AugmentConfig(crop_size=(8, 8), **{**OFF, "scale": (2.0, 2.0)})
    out_image, out_label = run(cfg, image, label, 0)
    # At scale 2 nearest neighbour repeats each label pixel 2x2: every crop is blocky.
    upscaled = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
    windows = {upscaled[y : y + 8, x : x + 8].tobytes() for y in range(33) for x in range(33)}
    assert out_label.numpy().astype(np.uint8).tobytes() in windows


def test_config_validation():
    with pytest.raises(ValueError, match="crop_size"):
        AugmentConfig(crop_size=(0, 10))
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="rotate"):
        AugmentConfig(rotate=(10.0, -10.0))
