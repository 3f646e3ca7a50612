"""mmsegmentation PSPNet checkpoints: layout, detected config, and mmseg's forward reproduced."""

import re

import pytest
import torch
import torch.nn.functional as F
from reference import bn, conv, deep_stem, dilated_stages, rename_prefixes

import pspnet
from pspnet import CheckpointError, PSPNet

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


def mmseg_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """mmseg's EncoderDecoder whole-image inference of PSPNet-R50-D8, on its own keys."""
    x = deep_stem(images, sd, "backbone.stem.")
    # ResNetV1c(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True): the
    # first block of a dilated stage runs at half its dilation.
    x = dilated_stages(x, sd, "backbone.", contract_dilation=True)
    pyramid = [x]
    for i, scale in enumerate((1, 2, 3, 6)):
        name = f"decode_head.psp_modules.{i}.1"
        y = F.relu(bn(conv(F.adaptive_avg_pool2d(x, scale), sd, f"{name}.conv"), sd, f"{name}.bn"))
        pyramid.append(F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False))
    x = torch.cat(pyramid, 1)
    x = conv(x, sd, "decode_head.bottleneck.conv", padding=1)
    x = F.relu(bn(x, sd, "decode_head.bottleneck.bn"))
    x = conv(x, sd, "decode_head.conv_seg")
    return F.interpolate(x, images.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def tiny(trained) -> PSPNet:
    torch.manual_seed(0)
    options = {"stem": "deep_narrow", "contract_dilation": True, "align_corners": False}
    return trained(PSPNet(5, base_width=8, **options))


def test_load_matches_mmseg_forward(tiny, tmp_path):
    state = mmseg_state(tiny)
    assert state["backbone.stem.0.weight"].shape == (4, 3, 3, 3)  # 32-32-64 at width 64
    save_mmseg(state, tmp_path / "pspnet_r50-d8.pth")
    model = pspnet.load_model(tmp_path / "pspnet_r50-d8.pth").double()
    images = torch.randn(2, 3, 37, 45, dtype=torch.float64)
    reference = mmseg_forward({k: v.double() for k, v in state.items()}, images)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == reference.shape == (2, 5, 37, 45)
    scale = reference.abs().max().item()
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-9 * scale)


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
