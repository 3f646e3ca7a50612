import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pspnet.inference.optimized.fold import fold_batchnorm, folded_parameters, to_channels_last
from pspnet.models import PSPNet
from pspnet.models.pyramid import BinBatchNorm


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_parameters_equal_conv_then_batchnorm(trained, bias, affine):
    conv = nn.Conv2d(3, 5, 3, padding=2, dilation=2, bias=bias).double()
    bn = trained(nn.BatchNorm2d(5, eps=1e-3, affine=affine).double())
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = F.batch_norm(
            conv(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        )
        weight, folded_bias = folded_parameters(conv, bn)
        actual = F.conv2d(x, weight, folded_bias, padding=2, dilation=2)
    assert relative_error(actual, expected) < 1e-13


@pytest.mark.parametrize(
    "options",
    [
        {"backbone": "resnet18"},
        {"backbone": "resnet50", "stem": "torchvision", "pooling": "max"},
        {"backbone": "resnet18", "stem": "deep_narrow", "contract_dilation": True},
        {"backbone": "resnet18", "reduction": False, "output_stride": 16},
        {"backbone": "resnet18", "use_ppm": False},
    ],
)
def test_fold_batchnorm_keeps_the_logits(trained, options):
    model = trained(PSPNet(4, base_width=4, **options))
    images = torch.randn(2, 3, 41, 35)
    with torch.no_grad():
        expected = model(images)
        folded = fold_batchnorm(model)
        actual = folded(images)
    assert type(folded) is PSPNet and not folded.training
    assert batchnorms(folded) == []
    assert relative_error(actual, expected) < 1e-5
    # The original keeps its BatchNorms, the pyramid's BinBatchNorm among them.
    assert len(batchnorms(model)) > 0 and not any(
        p.requires_grad is False for p in model.parameters()
    )
    if options.get("use_ppm", True) and options.get("reduction", True):
        assert any(isinstance(m, BinBatchNorm) for m in model.modules())


def test_fold_batchnorm_is_tight_in_float64(trained):
    model = trained(PSPNet(3, backbone="resnet18", base_width=4)).double()
    images = torch.randn(1, 3, 33, 40, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(fold_batchnorm(model)(images), model(images)) < 1e-12


def test_fold_batchnorm_only_folds_a_batchnorm_after_its_conv(trained):
    # BN before the conv normalises the conv's input: it cannot fold forward, so it stays.
    model = trained(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(model)
    assert isinstance(folded[0], nn.BatchNorm2d) and isinstance(folded[2], nn.Identity)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-6


def test_fold_batchnorm_copies_a_training_model(trained):
    model = trained(PSPNet(3, backbone="resnet18", base_width=4)).train()
    folded = fold_batchnorm(model)
    assert model.training and not folded.training
    assert isinstance(model.head.fuse.bn, nn.BatchNorm2d) and model.head.fuse.conv.bias is None


def test_to_channels_last_keeps_the_logits(trained):
    model = fold_batchnorm(trained(PSPNet(3, backbone="resnet18", base_width=4)))
    images = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        expected = model(images)
        model = to_channels_last(model)
        actual = model(images)
    weight = model.head.fuse.conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert relative_error(actual, expected) < 1e-5
