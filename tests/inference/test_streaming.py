"""The streamed routine gives the in-memory routine's labels, holding a row of windows."""

import pytest
import torch

from pspnet.config import InferenceConfig
from pspnet.inference import bands, streaming
from pspnet.inference.protocol import Network, segment_tensor
from pspnet.inference.protocol import _scale_rows as scale_rows
from pspnet.inference.streaming import check_streamable, stream_segments
from pspnet.models import PSPNet


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return Network.of(PSPNet(5, backbone="resnet18", base_width=4).eval())


def streamed(network, image, config, **options):
    height, width = image.shape[-2:]
    labels = torch.full((height, width), -1, dtype=torch.int64)
    confidence = torch.zeros(height, width)
    reads = []

    def read(top, left, rows, columns):
        reads.append((rows, columns))
        return image[:, top : top + rows, left : left + columns], None

    for band in stream_segments(network, read, (height, width), config, **options):
        rows = slice(band.first, band.first + len(band.labels))
        assert (labels[rows] == -1).all()  # each row is given once
        labels[rows], confidence[rows] = band.labels, band.confidence
    return labels, confidence, reads


@pytest.mark.parametrize(
    ("size", "crop", "stride", "flip", "batch"),
    [
        ((130, 170), (48, 48), 2 / 3, True, 3),
        ((40, 170), (48, 64), 0.5, False, 1),  # shorter than the crop: padded like the routine
        ((100, 101), (32, 32), 1.0, True, 2),
        ((97, 64), (40, 40), 0.3, True, 4),
    ],
)
def test_streamed_labels_equal_the_in_memory_routine(network, size, crop, stride, flip, batch):
    torch.manual_seed(1)
    image = torch.randn(3, *size)
    config = InferenceConfig(crop_size=crop, stride_rate=stride, flip=flip, window_batch=batch)
    reference = segment_tensor(network, image, config)
    labels, confidence, reads = streamed(network, image, config)
    assert torch.equal(labels, reference.labels)
    torch.testing.assert_close(confidence, reference.confidence, rtol=0, atol=1e-6)
    assert max(rows for rows, _ in reads) <= crop[0]  # one window at a time, never the scene


@pytest.mark.parametrize("flip", [False, True])
def test_bands_built_in_narrow_blocks_equal_the_in_memory_routine(network, flip, monkeypatch):
    # A wide scene with many classes: bands are built in blocks of BLOCK_ROWS rows and as many
    # columns as the buffer allows; blocks cut windows (and their mirrors) anywhere.
    monkeypatch.setattr(bands, "BLOCK_ROWS", 8)
    monkeypatch.setattr(bands, "BAND_ELEMENTS", 5 * 8 * 37)  # 8 x 37 blocks of 5 classes
    blocks = []

    def recording(views, first, last, network, columns=None):
        blocks.append((last - first, columns))
        return scale_rows(views, first, last, network, columns)

    monkeypatch.setattr(streaming, "_scale_rows", recording)
    torch.manual_seed(2)
    image = torch.randn(3, 70, 150)
    config = InferenceConfig(crop_size=(32, 48), flip=flip)
    reference = segment_tensor(network, image, config)
    labels, confidence, _ = streamed(network, image, config)
    assert torch.equal(labels, reference.labels)
    torch.testing.assert_close(confidence, reference.confidence, rtol=0, atol=1e-6)
    assert {rows for rows, _ in blocks} <= set(range(1, 9)) and max(r for r, _ in blocks) == 8
    assert {end - begin for _, (begin, end) in blocks} == {37, 150 - 4 * 37}


def test_band_blocks_keep_whole_width_bands_where_they_are_tall_enough():
    assert bands.band_blocks(19, 2000) == (bands.band_rows(19, 2000), 2000)  # 220 rows
    rows, columns = bands.band_blocks(150, 40000)  # a band of 1 row otherwise
    assert rows == bands.BLOCK_ROWS and columns * 150 * rows <= bands.BAND_ELEMENTS
    assert columns == bands.BAND_ELEMENTS // (150 * rows)


def test_strips_of_rows_put_together_equal_the_whole(network):
    image = torch.randn(3, 150, 90)
    config = InferenceConfig(crop_size=(40, 40))
    whole, _, _ = streamed(network, image, config)
    parts = [streamed(network, image, config, rows=rows)[0] for rows in ((0, 47), (47, 150))]
    assert torch.equal(torch.cat([parts[0][:47], parts[1][47:]]), whole)
    assert (parts[0][47:] == -1).all() and (parts[1][:47] == -1).all()  # nothing outside


def test_windows_without_valid_pixels_are_not_run(network):
    image = torch.randn(3, 120, 120)
    valid = torch.zeros(120, 120, dtype=torch.bool)
    valid[:, 80:] = True  # nodata on the left two thirds
    config = InferenceConfig(crop_size=(40, 40), stride_rate=1.0)
    runs = []
    forward = network.forward

    def counting(batch):
        runs.append(batch.shape[0])
        return forward(batch)

    counted = Network(counting, network.num_classes, network.align_corners, network.device)

    def read(top, left, rows, columns):
        return image[:, top : top + rows, left : left + columns], valid[
            top : top + rows, left : left + columns
        ]

    bands = list(stream_segments(counted, read, (120, 120), config))
    assert sum(runs) == 3 * 2  # 3 rows x 1 valid column of windows, each with its mirror
    reference = segment_tensor(network, image, config)
    labels = torch.cat([band.labels for band in bands])
    assert torch.equal(labels[:, 80:], reference.labels[:, 80:])


def test_unknown_below_marks_unsure_pixels(network):
    image = torch.randn(3, 60, 60)
    config = InferenceConfig(crop_size=(32, 32))
    labels, confidence, _ = streamed(network, image, config, unknown_below=0.5)
    reference = segment_tensor(network, image, config, unknown_below=0.5)
    assert torch.equal(labels, reference.labels) and (labels == 255).any()


@pytest.mark.parametrize(
    "options",
    [{"mode": "whole"}, {"scales": (0.5, 1.0)}, {"base_size": 240}, {"fit_within": (8, 8)}],
)
def test_settings_that_resize_are_refused(options):
    with pytest.raises(ValueError, match="slide|own resolution"):
        check_streamable(InferenceConfig(**options))
