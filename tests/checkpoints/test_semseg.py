"""hszhao/semseg checkpoints: layout, detected config, and semseg's forward reproduced."""

import re

import pytest
import torch
import torch.nn.functional as F
from reference import bn, conv, deep_stem, dilated_stages, rename_prefixes

import pspnet
from pspnet import CheckpointError, PSPNet
from pspnet.checkpoints import build_model
from pspnet.models import ModelConfig
from pspnet.models.resnet import ResNet

# Our key prefix -> semseg's, written from semseg's module layout: layer0 is
# Sequential(conv, bn, relu, conv, bn, relu, conv, bn, relu, maxpool), cls and aux are
# Sequential(conv3x3, bn, relu, dropout, conv1x1), ppm.features[i] = (pool, conv, bn, relu).
SEMSEG_PREFIXES = {
    "backbone.stem.0.conv.": "layer0.0.",
    "backbone.stem.0.bn.": "layer0.1.",
    "backbone.stem.1.conv.": "layer0.3.",
    "backbone.stem.1.bn.": "layer0.4.",
    "backbone.stem.2.conv.": "layer0.6.",
    "backbone.stem.2.bn.": "layer0.7.",
    "backbone.layer": "layer",
    "head.fuse.conv.": "cls.0.",
    "head.fuse.bn.": "cls.1.",
    "head.classifier.": "cls.4.",
    "aux_head.fuse.conv.": "aux.0.",
    "aux_head.fuse.bn.": "aux.1.",
    "aux_head.classifier.": "aux.4.",
}


def semseg_key(ours: str) -> str:
    branch = re.fullmatch(r"ppm\.branches\.(\d+)\.1\.(conv|bn)\.(\w+)", ours)
    if branch:
        index, layer, name = branch.groups()
        return f"ppm.features.{index}.{1 if layer == 'conv' else 2}.{name}"
    prefix = next(p for p in SEMSEG_PREFIXES if ours.startswith(p))
    return SEMSEG_PREFIXES[prefix] + ours[len(prefix) :]


def semseg_state(model: PSPNet) -> dict[str, torch.Tensor]:
    return {semseg_key(k): v.clone() for k, v in model.state_dict().items()}


def save_semseg(state: dict[str, torch.Tensor], path) -> None:
    """As semseg's train.py saves: the DataParallel model's keys, with epoch and optimizer."""
    checkpoint = {
        "epoch": 100,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
    }
    torch.save(checkpoint, path)


def semseg_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """semseg's PSPNet.forward at test time (zoom_factor 8), straight on its own keys."""
    height, width = images.shape[-2:]
    h, w = int((height - 1) / 8 * 8 + 1), int((width - 1) / 8 * 8 + 1)
    x = deep_stem(images, sd, "layer0.")
    # semseg patches layer3/4 after building: every conv2 gets dilation 2/4 and stride 1,
    # every downsample.0 stride 1.
    x = dilated_stages(x, sd, "", contract_dilation=False)
    pyramid = [x]
    for i, bins in enumerate((1, 2, 3, 6)):
        y = F.adaptive_avg_pool2d(x, bins)
        y = F.relu(bn(conv(y, sd, f"ppm.features.{i}.1"), sd, f"ppm.features.{i}.2"))
        pyramid.append(F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=True))
    x = torch.cat(pyramid, 1)
    x = F.relu(bn(conv(x, sd, "cls.0", padding=1), sd, "cls.1"))
    x = conv(x, sd, "cls.4")
    return F.interpolate(x, (h, w), mode="bilinear", align_corners=True)


@pytest.fixture
def tiny(trained) -> PSPNet:
    torch.manual_seed(0)
    return trained(PSPNet(5, base_width=8))


def test_load_matches_semseg_forward(tiny, tmp_path):
    state = semseg_state(tiny)
    save_semseg(state, tmp_path / "train_epoch_100.pth")
    model = pspnet.load_model(tmp_path / "train_epoch_100.pth").double()
    images = torch.randn(2, 3, 41, 49, dtype=torch.float64)  # 8n + 1: semseg keeps the size
    reference = semseg_forward({k: v.double() for k, v in state.items()}, images)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == reference.shape == (2, 5, 41, 49)
    scale = reference.abs().max().item()
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize("aux", [True, False])
def test_round_trip_keeps_every_tensor_and_config(aux, trained, tmp_path):
    torch.manual_seed(0)
    original = trained(PSPNet(3, base_width=8, aux=aux))
    save_semseg(semseg_state(original), tmp_path / "model.pth")
    loaded = pspnet.load_checkpoint(tmp_path / "model.pth")
    assert loaded.config == original.config
    assert loaded.metadata == {"source_format": "semseg"}
    expected = original.state_dict()
    assert loaded.model.state_dict().keys() == expected.keys()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_depth_comes_from_layer3_blocks(trained, tmp_path):
    torch.manual_seed(0)
    original = trained(PSPNet(4, backbone="resnet101", base_width=4, aux=False))
    save_semseg(semseg_state(original), tmp_path / "r101.pth")
    loaded = pspnet.load_model(tmp_path / "r101.pth")
    assert loaded.config.backbone == "resnet101"
    assert loaded.config.aux is False and loaded.aux_head is None
    assert loaded.config == original.config


def test_file_without_num_batches_tracked_loads_with_zero_counts(tiny, tmp_path):
    state = {k: v for k, v in semseg_state(tiny).items() if "num_batches_tracked" not in k}
    save_semseg(state, tmp_path / "old.pth")
    loaded = pspnet.load_model(tmp_path / "old.pth")
    counts = {k: v for k, v in loaded.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts and all(v.item() == 0 for v in counts.values())


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("layer1.0.bn1.running_var", "backbone.layer1.0.bn1.running_var"),
        ("ppm.features.2.2.running_mean", "ppm.branches.2.1.bn.running_mean"),
        ("cls.4.bias", "head.classifier.bias"),
    ],
)
def test_missing_key_is_named_as_in_the_file(theirs, ours, tiny, tmp_path):
    state = semseg_state(tiny)
    del state[theirs]
    save_semseg(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth") as error:
        pspnet.load_model(tmp_path / "missing.pth")
    assert f"missing keys: {theirs} (ours: {ours})" in str(error.value)


@pytest.mark.parametrize("extra", ["cls.9.weight", "layer0.1.extra", "layer2.0.bn4.weight"])
def test_unexpected_key_is_named(extra, tiny, tmp_path):
    state = semseg_state(tiny)
    state[extra] = torch.zeros(3)
    save_semseg(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=re.escape(extra)):
        pspnet.load_model(tmp_path / "extra.pth")


def test_misshaped_key_is_named(tiny, tmp_path):
    state = semseg_state(tiny)
    state["layer2.0.conv2.weight"] = torch.zeros(16, 16, 1, 1)
    save_semseg(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"mis-shaped.*layer2\.0\.conv2\.weight"):
        pspnet.load_model(tmp_path / "shape.pth")


def test_non_tensor_value_is_refused(tiny, tmp_path):
    state = semseg_state(tiny)
    state["cls.1.weight"] = [1.0, 2.0]
    save_semseg(state, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"non-tensor.*cls\.1\.weight"):
        pspnet.load_model(tmp_path / "list.pth")


# semseg's resnet50_v2.pth layout: the deep stem as conv1/bn1 .. conv3/bn3, then blocks, fc.
IMAGENET_STEM = {
    "stem.0.conv.": "conv1.",
    "stem.0.bn.": "bn1.",
    "stem.1.conv.": "conv2.",
    "stem.1.bn.": "bn2.",
    "stem.2.conv.": "conv3.",
    "stem.2.bn.": "bn3.",
}


def imagenet_state(backbone: ResNet) -> dict[str, torch.Tensor]:
    state = rename_prefixes(backbone.state_dict(), IMAGENET_STEM)
    channels = backbone.out_channels
    return state | {"fc.weight": torch.randn(1000, channels), "fc.bias": torch.randn(1000)}


def test_imagenet_backbone_loads_into_deep_stem(trained, tmp_path):
    torch.manual_seed(0)
    state = imagenet_state(trained(ResNet("resnet50", "deep", base_width=8)))
    assert state["conv1.weight"].shape == (8, 3, 3, 3) and state["conv3.weight"].shape[0] == 16
    torch.save(state, tmp_path / "resnet50_v2.pth")
    model = build_model(ModelConfig(3, stem="deep", base_width=8), tmp_path / "resnet50_v2.pth")
    loaded = imagenet_state(model.backbone)
    assert loaded.keys() == state.keys()
    for key in loaded.keys() - {"fc.weight", "fc.bias"}:
        assert torch.equal(loaded[key], state[key]), key


def test_imagenet_backbone_is_not_a_model(trained, tmp_path):
    torch.save(imagenet_state(ResNet("resnet50", "deep", base_width=8)), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="backbone_weights"):
        pspnet.load_model(tmp_path / "r50.pth")


def test_imagenet_missing_key_is_named_as_in_the_file(tmp_path):
    state = imagenet_state(ResNet("resnet50", "deep", base_width=8))
    del state["bn2.running_var"]
    torch.save(state, tmp_path / "resnet50_v2.pth")
    with pytest.raises(CheckpointError) as error:
        build_model(ModelConfig(3, stem="deep", base_width=8), tmp_path / "resnet50_v2.pth")
    assert "missing keys: bn2.running_var (ours: stem.1.bn.running_var)" in str(error.value)
