import itertools
import json

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


@pytest.mark.parametrize(
    "output_stride,contract,dilations,expected",
    [
        # mmseg's d32: strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4), contract_dilation=True.
        (32, True, (1, 1, 2, 4), [(1, 1, 1), (2, 1, 1), (2, 1, 2), (2, 2, 4)]),
        (32, False, (1, 1, 2, 4), [(1, 1, 1), (2, 1, 1), (2, 2, 2), (2, 4, 4)]),
        # The dilations OS 8 derives, given outright: the same geometry.
        (8, True, (1, 1, 2, 4), stage_geometry(8, True)),
        (16, False, (1, 1, 1, 1), [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 1)]),
    ],
)
def test_stage_geometry_with_stage_dilations(output_stride, contract, dilations, expected):
    assert stage_geometry(output_stride, contract, dilations) == expected


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_feature_size_follows_output_stride(output_stride, depth):
    backbone = ResNet(depth, output_stride=output_stride, base_width=4)
    _, c4 = backbone(torch.randn(1, 3, 64, 96))
    assert c4.shape[-2:] == (64 // output_stride, 96 // output_stride)
    conv = backbone.layer4[-1].conv1 if depth == "resnet18" else backbone.layer4[-1].conv2
    assert conv.dilation == (32 // output_stride,) * 2


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_stage_dilations_keep_the_strides(depth):
    # mmseg's d32 geometry: layer4 at 1/32, yet layer3/4 dilated (first blocks contracted).
    backbone = ResNet(
        depth, output_stride=32, contract_dilation=True, base_width=4, stage_dilations=(1, 1, 2, 4)
    )
    c3, c4 = backbone(torch.randn(1, 3, 64, 96))
    assert c3.shape[-2:] == (4, 6) and c4.shape[-2:] == (2, 3)
    conv = "conv1" if depth == "resnet18" else "conv2"
    dilations = [getattr(b, conv).dilation[0] for b in [*backbone.layer3, *backbone.layer4]]
    expected = [1, 2, 2, 4] if depth == "resnet18" else [1, 2, 2, 2, 2, 2, 2, 4, 4]
    assert dilations == expected
    first_blocks = (backbone.layer3[0], backbone.layer4[0])
    assert [getattr(block, conv).stride for block in first_blocks] == [(2, 2)] * 2


@pytest.mark.parametrize("basic_block_dilation,conv2", [("both_convs", 4), ("first_conv", 1)])
def test_basic_block_dilation(basic_block_dilation, conv2):
    backbone = ResNet("resnet18", base_width=4, basic_block_dilation=basic_block_dilation)
    assert [b.conv1.dilation[0] for b in backbone.layer4] == [4, 4]
    assert [b.conv2.dilation[0] for b in backbone.layer4] == [conv2, conv2]
    assert [b.conv2.padding[0] for b in backbone.layer4] == [conv2, conv2]


@pytest.mark.parametrize(
    "backbone,stage_dilations,basic_block_dilation",
    list(
        itertools.product(
            ["resnet18", "resnet50"], [None, (1, 1, 2, 4)], ["both_convs", "first_conv"]
        )
    ),
)
@pytest.mark.parametrize("output_stride", [8, 32])
def test_geometry_options_forward_backward(
    backbone, stage_dilations, basic_block_dilation, output_stride
):
    model = tiny(
        backbone=backbone,
        output_stride=output_stride,
        contract_dilation=True,
        stage_dilations=stage_dilations,
        basic_block_dilation=basic_block_dilation,
    ).train()
    logits, aux = model(torch.randn(2, 3, 37, 45))
    assert logits.shape == aux.shape == (2, 3, 37, 45)
    (logits.mean() + aux.mean()).backward()


@pytest.mark.parametrize("head_channels,aux_channels", [(None, None), (6, 2), (16, None)])
def test_head_widths(head_channels, aux_channels):
    model = tiny(head_channels=head_channels, aux_channels=aux_channels)  # base_width 4
    assert model.head.fuse.conv.out_channels == (head_channels or 32)
    assert model.aux_head.fuse.conv.out_channels == (aux_channels or 16)
    assert model.head.classifier.in_channels == model.head.fuse.conv.out_channels
    logits, aux = model.train()(torch.randn(2, 3, 33, 40))
    assert logits.shape == aux.shape == (2, 3, 33, 40)


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


def test_new_options_survive_json_and_default_to_the_old_network():
    options = {"output_stride": 32, "stage_dilations": (1, 1, 2, 4), "head_channels": 6}
    model = tiny(basic_block_dilation="first_conv", aux_channels=2, **options)
    config = ModelConfig.from_dict(json.loads(model.config.to_json()))  # tuples become lists
    assert config == model.config and config.stage_dilations == (1, 1, 2, 4)
    defaults = ModelConfig(3)
    assert (defaults.stage_dilations, defaults.head_channels, defaults.aux_channels) == (None,) * 3
    assert defaults.basic_block_dilation == "both_convs"


@pytest.mark.parametrize(
    "options",
    [
        {"backbone": "resnet42"},
        {"stem": "wide"},
        {"output_stride": 4},
        {"pooling": "median"},
        {"stage_dilations": (1, 2, 4)},
        {"stage_dilations": (1, 1, 0, 4)},
        {"basic_block_dilation": "second_conv"},
        {"head_channels": 0},
        {"aux_channels": -1},
    ],
)
def test_invalid_options_raise(options):
    with pytest.raises(ValueError):
        tiny(**options)


def test_parameter_groups_split_backbone_and_new_layers():
    model = tiny()
    groups = model.parameter_groups()
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))
    assert {id(p) for p in groups["head"]} >= {id(p) for p in model.head.parameters()}


@pytest.mark.parametrize("in_channels", [1, 4, 13])
@pytest.mark.parametrize("stem", ["deep", "torchvision"])
def test_any_number_of_input_bands(in_channels, stem):
    model = tiny(in_channels=in_channels, stem=stem).train()
    assert model.backbone.stem[0].conv.weight.shape[1] == in_channels
    logits, aux = model(torch.randn(2, in_channels, 33, 35))
    assert logits.shape == aux.shape == (2, 3, 33, 35)
    (logits.mean() + aux.mean()).backward()
    assert model.eval()(torch.randn(1, in_channels, 17, 21)).shape == (1, 3, 17, 21)
    with pytest.raises(RuntimeError):  # 3-band images do not fit a model of other bands
        model(torch.randn(1, 3, 17, 21))
    config = ModelConfig.from_dict(json.loads(model.config.to_json()))
    assert config.in_channels == in_channels


def test_configs_saved_before_bands_load_as_rgb():
    saved = ModelConfig(3).to_dict()
    del saved["in_channels"]
    assert ModelConfig.from_dict(saved).in_channels == 3
    with pytest.raises(ValueError, match="in_channels"):
        ModelConfig(3, in_channels=0)
