import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pspnet.inference.optimized.factorized import (
    FactorizedHead,
    bilinear_matrix,
    factorize_head,
    tap_matrices,
)
from pspnet.inference.optimized.fold import fold_batchnorm, to_channels_last
from pspnet.models import PSPNet
from pspnet.models.pspnet import SegmentationHead
from pspnet.models.pyramid import PyramidPooling

BINS = [(1, 2, 3, 6), (1,), (2, 4), (3, 6, 8)]
# Odd and even sizes, maps smaller than the largest bin, and a single pixel.
FEATURE_SIZES = [(1, 1), (1, 4), (2, 3), (5, 6), (8, 10)]
# resnet18 at output stride 8: 33x41 -> 5x6 features (below bins 6 and 8), 8x12 -> 1x2.
IMAGE_SIZES = [(33, 41), (64, 64), (57, 80), (8, 12)]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("out_size,in_size", [(7, 3), (60, 6), (3, 7), (1, 4), (5, 1), (1, 1)])
def test_bilinear_matrix_is_interpolate(align_corners, out_size, in_size):
    maps = torch.randn(2, 3, in_size, in_size + 2, dtype=torch.float64)
    rows = bilinear_matrix(out_size, in_size, align_corners, torch.float64)
    columns = bilinear_matrix(out_size + 3, in_size + 2, align_corners, torch.float64)
    expected = F.interpolate(
        maps, (out_size, out_size + 3), mode="bilinear", align_corners=align_corners
    )
    assert torch.allclose(rows @ maps @ columns.T, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("dilation", [1, 2])
def test_tap_matrices_shift_the_upsampled_map_like_zero_padding(align_corners, dilation):
    bins, height, width = 3, 7, 10
    bin_map = torch.randn(1, 1, bins, bins, dtype=torch.float64)
    upsampled = F.interpolate(
        bin_map, (height, width), mode="bilinear", align_corners=align_corners
    )
    options = {"dilation": dilation, "padding": dilation, "dtype": torch.float64}
    rows = tap_matrices(height, bins, align_corners, taps=3, **options)  # (H, 3 * bins)
    columns = tap_matrices(width, bins, align_corners, taps=3, **options)  # (W, 3 * bins)
    for dy, dx in itertools.product(range(3), range(3)):
        one_tap = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
        one_tap[0, 0, dy, dx] = 1
        expected = F.conv2d(upsampled, one_tap, padding=dilation, dilation=dilation)[0, 0]
        row_tap = rows[:, dy * bins : (dy + 1) * bins]
        column_tap = columns[:, dx * bins : (dx + 1) * bins]
        actual = row_tap @ bin_map[0, 0] @ column_tap.T
        assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


def pyramid_and_head(trained, bins, pooling, reduction, align_corners, dtype):
    ppm = PyramidPooling(16, bins, pooling, reduction, align_corners)
    head = SegmentationHead(ppm.out_channels, 24, 5, dropout=0.1)
    return trained(ppm).to(dtype), trained(head).to(dtype)


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("reduction", [True, False])
@pytest.mark.parametrize("align_corners", [True, False])
def test_factorized_head_is_the_plain_head(trained, bins, pooling, reduction, align_corners):
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        ppm, head = pyramid_and_head(trained, bins, pooling, reduction, align_corners, dtype)
        factorized = FactorizedHead(copy.deepcopy(ppm), copy.deepcopy(head))
        for size in FEATURE_SIZES:
            features = torch.randn(2, 16, *size, dtype=dtype)
            with torch.no_grad():
                expected = head(ppm(features))
                assert relative_error(factorized(features), expected) < tolerance, (dtype, size)
    # The check has power: without the pyramid half of the weights the logits move.
    with torch.no_grad():
        head.fuse.conv.weight[:, 16:] = 0
        assert relative_error(head(ppm(features)), expected) > 1e-2


def test_factorized_head_takes_a_folded_head(trained):
    ppm, head = pyramid_and_head(trained, (1, 2, 3, 6), "avg", True, False, torch.float64)
    folded = fold_batchnorm(nn.Sequential(ppm, head))
    assert isinstance(folded[1].fuse.bn, nn.Identity)
    features = torch.randn(1, 16, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        actual = FactorizedHead(folded[0], folded[1])(features)
        assert relative_error(actual, head(ppm(features))) < 1e-12


def tiny_model(trained, **options) -> PSPNet:
    return trained(PSPNet(3, backbone="resnet18", base_width=4, **options))


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("reduction", [True, False])
@pytest.mark.parametrize("align_corners", [True, False])
def test_factorized_model_keeps_the_logits(trained, bins, reduction, align_corners):
    model = tiny_model(trained, bins=bins, reduction=reduction, align_corners=align_corners)
    rewrites = {
        "factorized": factorize_head(model),
        "folded, then factorized": factorize_head(fold_batchnorm(model)),
        "factorized, then folded": fold_batchnorm(factorize_head(model)),
    }
    for size in IMAGE_SIZES:
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = model(images)
            for name, rewritten in rewrites.items():
                assert relative_error(rewritten(images), expected) < 1e-5, (name, size)


@pytest.mark.parametrize("align_corners", [True, False])
def test_factorized_model_is_tight_in_float64(trained, align_corners):
    model = tiny_model(trained, pooling="max", align_corners=align_corners).double()
    rewritten = factorize_head(fold_batchnorm(model))
    for size in IMAGE_SIZES:
        images = torch.randn(1, 3, *size, dtype=torch.float64)
        with torch.no_grad():
            assert relative_error(rewritten(images), model(images)) < 1e-12, size


def test_factorize_head_copies_and_replaces_the_pyramid(trained):
    model = tiny_model(trained).train()
    factorized = factorize_head(model)
    assert isinstance(factorized.head, FactorizedHead) and isinstance(factorized.ppm, nn.Identity)
    assert not factorized.training and not any(p.requires_grad for p in factorized.parameters())
    assert isinstance(model.ppm, PyramidPooling) and model.training
    again = factorize_head(factorized)
    images = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(again(images), factorized(images))


def test_factorize_head_without_pyramid_is_a_copy(trained):
    model = tiny_model(trained, use_ppm=False)
    factorized = factorize_head(model)
    assert factorized is not model and isinstance(factorized.head, SegmentationHead)
    images = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(factorized(images), model(images))


def test_factorized_model_in_channels_last(trained):
    model = tiny_model(trained, bins=(3, 6, 8))
    rewritten = to_channels_last(factorize_head(fold_batchnorm(model)))
    images = torch.randn(2, 3, 57, 80)
    with torch.no_grad():
        assert relative_error(rewritten(images), model(images)) < 1e-5


def test_factorized_head_traces_as_one_graph_for_any_size(trained):
    ppm, head = pyramid_and_head(trained, (1, 2, 3, 6), "avg", True, True, torch.float32)
    factorized = FactorizedHead(ppm, head)
    compiled = torch.compile(factorized, backend="eager", fullgraph=True, dynamic=True)
    for size in ((7, 9), (12, 5)):
        features = torch.randn(1, 16, *size)
        with torch.no_grad():
            assert relative_error(compiled(features), head(ppm(features))) < 1e-5
