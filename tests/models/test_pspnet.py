import itertools

import pytest
import torch

from pspnet.models import ModelConfig, PSPNet
from pspnet.models.resnet import ResNet, stage_geometry


def tiny(**options) -> PSPNet:
    options.setdefault("backbone", "resnet18")
    options.setdefault("base_width", 4)
    return PSPNet(3, **options)


@pytest.mark.parametrize(
    "backbone,stem,output_stride",
    list(
        itertools.product(
            ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
            ["deep", "torchvision", "deep_narrow"],
            [8, 16, 32],
        )
    ),
)
def test_backbone_stem_stride_forward_backward(backbone, stem, output_stride):
    model = tiny(backbone=backbone, stem=stem, output_stride=output_stride).train()
    images = torch.randn(2, 3, 37, 45)
    logits, aux = model(images)
    assert logits.shape == aux.shape == (2, 3, 37, 45)
    (logits.mean() + aux.mean()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "bins,pooling,reduction,use_ppm,aux,align_corners,contract_dilation",
    list(
        itertools.product(
            [(1, 2, 3, 6), (1,), (2, 4)],
            ["avg", "max"],
            [True, False],
            [True, False],
            [True, False],
            [True, False],
            [True, False],
        )
    ),
)
def test_head_option_combinations(
    bins, pooling, reduction, use_ppm, aux, align_corners, contract_dilation
):
    model = tiny(
        bins=bins,
        pooling=pooling,
        reduction=reduction,
        use_ppm=use_ppm,
        aux=aux,
        align_corners=align_corners,
        contract_dilation=contract_dilation,
    )
    images = torch.randn(2, 3, 33, 40)
    logits, aux_logits = model.train()(images)
    assert logits.shape == (2, 3, 33, 40)
    assert (aux_logits is None) == (not aux)
    loss = logits.square().mean() + (0 if aux_logits is None else aux_logits.square().mean())
    loss.backward()
    assert model.eval()(images).shape == (2, 3, 33, 40)


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (64, 31), (473 // 8, 50)])
def test_any_input_size(size):
    model = tiny().eval()
    assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_batch_of_one_trains_despite_single_value_bin():
    model = tiny().train()
    logits, aux = model(torch.randn(1, 3, 32, 32))
    (logits.mean() + aux.mean()).backward()


def test_batch_of_one_bin_uses_running_stats_and_leaves_them():
    model = tiny().train()
    bn = model.ppm.branches[0][1].bn
    before = bn.running_mean.clone()
    model(torch.randn(1, 3, 32, 32))
    assert torch.equal(bn.running_mean, before)
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize(
    "backbone,with_aux,without_aux",
    [("resnet50", 49_180_908, 46_782_550), ("resnet101", 68_173_036, 65_774_678)],
)
def test_parameter_count_matches_official_network(backbone, with_aux, without_aux):
    with torch.device("meta"):
        assert sum(p.numel() for p in PSPNet(150, backbone=backbone).parameters()) == with_aux
        model = PSPNet(150, backbone=backbone, aux=False)
        assert sum(p.numel() for p in model.parameters()) == without_aux


@pytest.mark.parametrize(
    "output_stride,contract,expected",
    [
        (8, False, [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 4, 4)]),
        (8, True, [(1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)]),
        (16, False, [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 2, 2)]),
        (16, True, [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)]),
        (32, False, [(1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)]),
    ],
)
def test_stage_geometry(output_stride, contract, expected):
    assert stage_geometry(output_stride, contract) == expected


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_feature_size_follows_output_stride(output_stride, depth):
    backbone = ResNet(depth, output_stride=output_stride, base_width=4)
    _, c4 = backbone(torch.randn(1, 3, 64, 96))
    assert c4.shape[-2:] == (64 // output_stride, 96 // output_stride)
    conv = backbone.layer4[-1].conv1 if depth == "resnet18" else backbone.layer4[-1].conv2
    assert conv.dilation == (32 // output_stride,) * 2


def test_semseg_dilation_every_block():
    backbone = ResNet("resnet50", base_width=4)
    assert [b.conv2.dilation for b in backbone.layer3] == [(2, 2)] * 6
    assert [b.conv2.dilation for b in backbone.layer4] == [(4, 4)] * 3
    assert all(b.conv2.stride == (1, 1) for b in [*backbone.layer3, *backbone.layer4])


def test_config_recorded_and_rebuilt():
    model = tiny(bins=(1, 3), pooling="max", align_corners=False)
    config = ModelConfig.from_dict(model.config.to_dict())
    assert config == model.config
    rebuilt = PSPNet.from_config(config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "options",
    [{"backbone": "resnet42"}, {"stem": "wide"}, {"output_stride": 4}, {"pooling": "median"}],
)
def test_invalid_options_raise(options):
    with pytest.raises(ValueError):
        tiny(**options)


def test_parameter_groups_split_backbone_and_new_layers():
    model = tiny()
    groups = model.parameter_groups()
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))
    assert {id(p) for p in groups["head"]} >= {id(p) for p in model.head.parameters()}
