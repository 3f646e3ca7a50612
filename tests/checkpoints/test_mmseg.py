"""mmsegmentation PSPNet checkpoints: layout, detected config, and mmseg's forward reproduced."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from reference import (
    D8,
    D32,
    basic_block,
    bn,
    bottleneck,
    conv,
    deep_stem,
    plain_stem,
    rename_prefixes,
    resnet_stages,
)

import pspnet
from pspnet import CheckpointError, PSPNet
from pspnet.weights import find

# Our key prefix -> mmseg's, from mmseg's modules: ResNetV1c's stem is Sequential(conv, bn,
# relu) x 3, ResNet's (r50b) is conv1/bn1; PSPHead's psp_modules[i] = (pool, ConvModule) and
# its bottleneck a ConvModule; FCNHead's convs[0] a ConvModule; ConvModule holds conv and bn.
MMSEG_PREFIXES = {
    "deep_narrow": {
        "backbone.stem.0.conv.": "backbone.stem.0.",
        "backbone.stem.0.bn.": "backbone.stem.1.",
        "backbone.stem.1.conv.": "backbone.stem.3.",
        "backbone.stem.1.bn.": "backbone.stem.4.",
        "backbone.stem.2.conv.": "backbone.stem.6.",
        "backbone.stem.2.bn.": "backbone.stem.7.",
    },
    "torchvision": {
        "backbone.stem.0.conv.": "backbone.conv1.",
        "backbone.stem.0.bn.": "backbone.bn1.",
    },
}
HEAD_PREFIXES = {
    "backbone.layer": "backbone.layer",
    "ppm.branches.": "decode_head.psp_modules.",
    "head.fuse.": "decode_head.bottleneck.",
    "head.classifier.": "decode_head.conv_seg.",
    "aux_head.fuse.": "auxiliary_head.convs.0.",
    "aux_head.classifier.": "auxiliary_head.conv_seg.",
}


def mmseg_state(model: PSPNet) -> dict[str, torch.Tensor]:
    return rename_prefixes(model.state_dict(), MMSEG_PREFIXES[model.config.stem] | HEAD_PREFIXES)


def save_mmseg(state: dict[str, torch.Tensor], path) -> None:
    """As mmcv's save_checkpoint writes: meta, state_dict, optimizer."""
    meta = {"mmseg_version": "0.30.0", "iter": 80000, "CLASSES": ("a", "b", "c", "d", "e")}
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}}}, path)


def mmseg_forward(sd: dict[str, torch.Tensor], images: torch.Tensor, geometry=D8):
    """mmseg's EncoderDecoder whole-image inference of a PSPNet, on its own keys.

    Returns the logits (N, C, H, W) and the FCNHead's aux logits on layer3, not resized (None
    without ``auxiliary_head.*``). ``geometry`` is the backbone's (stride, dilation) per stage.
    """
    # ResNetV1c's deep stem, or ResNet's 7x7 conv (the r18b/r50b models).
    if "backbone.conv1.weight" in sd:
        x = plain_stem(images, sd, "backbone.")
    else:
        x = deep_stem(images, sd, "backbone.stem.")
    # ResNet(V1c)(strides, dilations, contract_dilation=True): the first block of a dilated
    # stage runs at half its dilation; ResNet-18's BasicBlock never dilates its conv2.
    block = bottleneck if "backbone.layer1.0.conv3.weight" in sd else basic_block
    *_, c3, x = resnet_stages(x, sd, "backbone.", True, geometry, block)
    pyramid = [x]
    for i, scale in enumerate((1, 2, 3, 6)):
        name = f"decode_head.psp_modules.{i}.1"
        y = F.relu(bn(conv(F.adaptive_avg_pool2d(x, scale), sd, f"{name}.conv"), sd, f"{name}.bn"))
        pyramid.append(F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False))
    x = torch.cat(pyramid, 1)
    x = conv(x, sd, "decode_head.bottleneck.conv", padding=1)
    x = F.relu(bn(x, sd, "decode_head.bottleneck.bn"))
    x = conv(x, sd, "decode_head.conv_seg")
    logits = F.interpolate(x, images.shape[-2:], mode="bilinear", align_corners=False)
    if "auxiliary_head.conv_seg.weight" not in sd:
        return logits, None
    aux = conv(c3, sd, "auxiliary_head.convs.0.conv", padding=1)
    aux = F.relu(bn(aux, sd, "auxiliary_head.convs.0.bn"))
    return logits, conv(aux, sd, "auxiliary_head.conv_seg")


def assert_matches_mmseg(model: PSPNet, state: dict, geometry=D8, size=(37, 45)) -> None:
    """``model``'s logits, and its aux head's, equal mmseg's on ``state`` (float64)."""
    model = model.double()
    images = torch.randn(2, 3, *size, dtype=torch.float64)
    sd = {k: v.double() for k, v in state.items()}
    reference, reference_aux = mmseg_forward(sd, images, geometry)
    with torch.no_grad():
        logits = model(images)
        aux = None if model.aux_head is None else model.aux_head(model.backbone(images)[0])
    assert logits.shape == reference.shape == (2, model.config.num_classes, *size)
    scale = reference.abs().max().item()
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-9 * scale)
    assert (aux is None) == (reference_aux is None)
    if aux is not None:
        scale = reference_aux.abs().max().item()
        torch.testing.assert_close(aux, reference_aux, rtol=1e-9, atol=1e-9 * scale)


@pytest.fixture
def tiny(trained) -> PSPNet:
    torch.manual_seed(0)
    options = {"stem": "deep_narrow", "contract_dilation": True, "align_corners": False}
    return trained(PSPNet(5, base_width=8, **options))


def test_load_matches_mmseg_forward(tiny, tmp_path):
    state = mmseg_state(tiny)
    assert state["backbone.stem.0.weight"].shape == (4, 3, 3, 3)  # 32-32-64 at width 64
    save_mmseg(state, tmp_path / "pspnet_r50-d8.pth")
    assert_matches_mmseg(pspnet.load_model(tmp_path / "pspnet_r50-d8.pth"), state)


@pytest.mark.parametrize("stem", ["deep_narrow", "torchvision"])  # pspnet_r18-d8, pspnet_r18b-d8
def test_resnet18_loads_with_mmseg_heads_and_blocks_and_matches_its_forward(
    stem, trained, tmp_path
):
    # mmseg's r18 configs: PSPHead channels=128 (branches and bottleneck), FCNHead channels=64,
    # and its BasicBlock; at width 8 (64 / 8) the heads are 16 and 8 wide.
    torch.manual_seed(0)
    options = {"stem": stem, "contract_dilation": True, "align_corners": False}
    mmseg_r18 = {"basic_block_dilation": "first_conv", "head_channels": 16, "aux_channels": 8}
    original = trained(PSPNet(5, backbone="resnet18", base_width=8, **options, **mmseg_r18))
    state = mmseg_state(original)
    assert state["decode_head.psp_modules.0.1.conv.weight"].shape[0] == 16
    assert state["decode_head.bottleneck.conv.weight"].shape[:2] == (16, 64 + 4 * 16)
    assert state["auxiliary_head.convs.0.conv.weight"].shape[:2] == (8, 32)
    save_mmseg(state, tmp_path / "pspnet_r18-d8.pth")
    loaded = pspnet.load_checkpoint(tmp_path / "pspnet_r18-d8.pth")
    assert loaded.config == original.config  # widths and block read from the weights
    assert_matches_mmseg(loaded.model, state)


@pytest.mark.parametrize(
    "name",
    [
        "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024",  # ResNetV1c
        "pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024",  # ResNet's 7x7 stem
    ],
)
def test_d32_entry_loads_with_its_geometry_and_matches_mmseg_forward(
    name, trained, tmp_path, monkeypatch
):
    # The registry's entry itself, at width 8: strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4).
    entry = find(name)
    entry = dataclasses.replace(entry, model={**entry.model, "base_width": 8})
    config = entry.model_config()
    assert (config.output_stride, config.stage_dilations) == (32, (1, 1, 2, 4))
    torch.manual_seed(0)
    state = mmseg_state(trained(PSPNet.from_config(config)))
    path = tmp_path / entry.file_name
    save_mmseg(state, path)
    # No tensor shows strides or dilations: the file alone reads as mmseg's d8 ...
    d8 = dataclasses.replace(config, output_stride=8, stage_dilations=None)
    assert pspnet.load_checkpoint(path).config == d8
    # ... and by its registry name (the download stood in for) as d32.
    monkeypatch.setattr("pspnet.checkpoints.resolve", lambda spec, progress=None: (path, entry))
    loaded = pspnet.load_checkpoint(name)
    assert loaded.config == config
    assert loaded.metadata["published_name"] == name
    assert_matches_mmseg(loaded.model, state, D32, size=(97, 129))


@pytest.mark.parametrize(
    "options",
    [
        {"stem": "deep_narrow", "aux": True},
        {"stem": "deep_narrow", "aux": False},
        {"stem": "torchvision", "aux": True},  # mmseg's r50b models
        {"stem": "deep_narrow", "aux": False, "backbone": "resnet101", "base_width": 4},
    ],
)
def test_round_trip_keeps_every_tensor_and_config(options, trained, tmp_path):
    torch.manual_seed(0)
    options = {"base_width": 8, **options, "contract_dilation": True, "align_corners": False}
    original = trained(PSPNet(3, **options))
    save_mmseg(mmseg_state(original), tmp_path / "model.pth")
    loaded = pspnet.load_checkpoint(tmp_path / "model.pth")
    assert loaded.config == original.config
    assert loaded.metadata == {"source_format": "mmseg"}
    expected = original.state_dict()
    assert loaded.model.state_dict().keys() == expected.keys()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("decode_head.psp_modules.2.1.conv.weight", "ppm.branches.2.1.conv.weight"),
        ("decode_head.bottleneck.bn.running_var", "head.fuse.bn.running_var"),
        ("backbone.stem.3.weight", "backbone.stem.1.conv.weight"),
        ("auxiliary_head.conv_seg.bias", "aux_head.classifier.bias"),
    ],
)
def test_missing_key_is_named_as_in_the_file(theirs, ours, tiny, tmp_path):
    state = mmseg_state(tiny)
    del state[theirs]
    save_mmseg(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth") as error:
        pspnet.load_model(tmp_path / "missing.pth")
    assert f"missing keys: {theirs} (ours: {ours})" in str(error.value)


def test_missing_key_of_the_7x7_stem_is_named_as_in_the_file(tmp_path):
    # backbone.bn1.* and backbone.stem.1.* both fill our stem.0.bn: the file's layout decides.
    state = mmseg_state(PSPNet(3, base_width=8, stem="torchvision", contract_dilation=True))
    del state["backbone.bn1.running_var"]
    save_mmseg(state, tmp_path / "r50b.pth")
    with pytest.raises(CheckpointError) as error:
        pspnet.load_model(tmp_path / "r50b.pth")
    expected = "missing keys: backbone.bn1.running_var (ours: backbone.stem.0.bn.running_var)"
    assert expected in str(error.value)


@pytest.mark.parametrize("extra", ["backbone.stem.9.weight", "neck.conv.weight"])
def test_unexpected_key_is_named(extra, tiny, tmp_path):
    state = mmseg_state(tiny)
    state[extra] = torch.zeros(3)
    save_mmseg(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=re.escape(extra)):
        pspnet.load_model(tmp_path / "extra.pth")


def test_misshaped_key_is_named(tiny, tmp_path):
    state = mmseg_state(tiny)
    state["auxiliary_head.convs.0.conv.weight"] = torch.zeros(1, 1, 3, 3)
    save_mmseg(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"auxiliary_head\.convs\.0\.conv\.weight"):
        pspnet.load_model(tmp_path / "shape.pth")
