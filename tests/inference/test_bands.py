"""The banded routine equals the whole-image one it replaced, and its memory follows the image."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from previous_routine import predict_probs as previous_probs

from pspnet.config import InferenceConfig
from pspnet.inference import bands
from pspnet.inference.bands import bilinear_taps, resize_band
from pspnet.inference.protocol import UNKNOWN, Network, segment_tensor
from pspnet.models import PSPNet


def tiny(align_corners: bool, classes: int = 5) -> PSPNet:
    torch.manual_seed(0)
    return PSPNet(classes, backbone="resnet18", base_width=4, align_corners=align_corners).eval()


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(
    ("out_size", "in_size"),
    [((37, 53), (5, 7)), ((8, 8), (8, 8)), ((3, 50), (9, 4)), ((1, 6), (4, 2))],
)
def test_taps_resize_as_interpolate_does(align_corners, out_size, in_size):
    x = torch.randn(4, *in_size)
    rows = bilinear_taps(out_size[0], in_size[0], align_corners, torch.device("cpu"))
    expected = F.interpolate(x[None], out_size, mode="bilinear", align_corners=align_corners)[0]
    got = resize_band(x, rows, out_size[1], align_corners, 0)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    if out_size[0] >= 3:
        part = bands.slice_taps(rows, 1, 3)  # a band: rows 1 and 2, from the rows they read
        low, high = bands.rows_read(part)
        band = resize_band(x[:, low:high], part, out_size[1], align_corners, low)
        torch.testing.assert_close(band, expected[:, 1:3], atol=1e-6, rtol=1e-6)


# (mode, scales, flip, size, fit_within): each mode with one and several scales, with and without
# flip and mmseg's fit_within, on a wide and a tall image (windows overlap, padding).
CASES = [
    ("whole", (1.0,), False, (37, 53), None),
    ("whole", (1.0,), True, (41, 30), (60, 30)),
    ("whole", (0.5, 1.25), True, (37, 53), None),
    ("whole", (0.75, 1.5), False, (41, 30), (50, 40)),
    ("slide", (1.0,), False, (37, 53), None),
    ("slide", (1.0,), True, (41, 30), None),
    ("slide", (0.5, 1.25), True, (37, 53), (60, 30)),
    ("slide", (0.75, 1.5), False, (41, 30), None),
]


@pytest.mark.parametrize("band_elements", [40, bands.BAND_ELEMENTS])  # bands of 1-2 rows; one
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(("mode", "scales", "flip", "size", "fit_within"), CASES)
def test_banded_equals_the_whole_image_routine(
    monkeypatch, band_elements, align_corners, mode, scales, flip, size, fit_within
):
    monkeypatch.setattr(bands, "BAND_ELEMENTS", band_elements)
    model = tiny(align_corners)
    config = InferenceConfig(
        mode=mode,
        crop_size=(33, 29),
        scales=scales,
        flip=flip,
        fit_within=fit_within,
        window_batch=2,
    )
    image = torch.randn(3, *size, generator=torch.Generator().manual_seed(sum(size)))
    before = previous_probs(model, image, 5, config)  # (C, H, W), the model's own upsampling
    raw = segment_tensor(Network.of(model), image, config, probs=True)
    assert torch.equal(raw.labels, before.argmax(0))
    torch.testing.assert_close(raw.probs, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(raw.confidence, before.max(0).values, atol=1e-6, rtol=0)


def test_without_probs_the_labels_and_confidence_are_the_same():
    model, config = tiny(True), InferenceConfig(crop_size=(24, 24), scales=(0.75, 1.0))
    image = torch.randn(3, 40, 50)
    with_probs = segment_tensor(Network.of(model), image, config, probs=True)
    without = segment_tensor(Network.of(model), image, config)
    assert without.probs is None
    assert torch.equal(with_probs.labels, without.labels)
    assert torch.equal(with_probs.confidence, without.confidence)


def test_pixels_under_the_threshold_are_unknown():
    model, config = tiny(True), InferenceConfig(mode="whole", flip=False)
    image = torch.randn(3, 30, 40)
    plain = segment_tensor(Network.of(model), image, config)
    threshold = float(plain.confidence.median())
    unsure = segment_tensor(Network.of(model), image, config, unknown_below=threshold)
    low = plain.confidence < threshold
    assert low.any() and (~low).any()
    assert (unsure.labels[low] == UNKNOWN).all()
    assert torch.equal(unsure.labels[~low], plain.labels[~low])


# One process's peak memory segmenting a 1600 x 1600 image with 150 classes. The whole-image
# routine held (150, H, W) float32 probabilities twice (the model's upsampled output and the
# sum): 2 x 1.5 GB. The bands hold the stride logits (150 x 200 x 200) and a few bytes per pixel.
MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    import torch.nn.functional as F
    from pspnet.config import InferenceConfig
    from pspnet.inference.protocol import Network, segment_tensor
    torch.set_num_threads(1)
    weight = torch.randn(150, 3, 1, 1)
    forward = lambda x: F.conv2d(F.avg_pool2d(x, 8), weight)  # stride-8 logits, 150 classes
    image = torch.randn(3, 1600, 1600)
    network = Network(forward, 150, False, torch.device("cpu"))
    segment_tensor(network, image[:, :64, :64], InferenceConfig(mode="whole", flip=False))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    raw = segment_tensor(network, image, InferenceConfig(mode="whole", flip=True))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
""")


def test_memory_follows_the_image_not_classes_times_pixels():
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown = int(done.stdout.strip())
    one_buffer = 150 * 1600 * 1600 * 4  # what a (C, H, W) float32 buffer alone would cost
    assert grown < one_buffer / 4, f"peak grew by {grown / 2**20:.0f} MiB"
