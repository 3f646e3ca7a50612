"""hszhao/semseg checkpoints: its PSPNet (``train_epoch_*.pth``) and its ImageNet ResNet.

semseg is the paper authors' PyTorch code. Its PSPNet is our default configuration: the deep
stem (three 3x3 convs, 64-64-128), every block of layer3/4 dilated by 2/4 (the first too),
bins (1, 2, 3, 6) with 1x1 reduction, and ``align_corners=True`` in every resize.
"""

from __future__ import annotations

import torch

from pspnet.checkpoints.native import Rule, foreign_state, rename_strict
from pspnet.checkpoints.torchvision import BLOCK_KEY, rename_backbone, resnet_depth
from pspnet.errors import CheckpointError
from pspnet.models.pspnet import ModelConfig, PSPNet

NAME = "semseg"

# semseg trains every PSPNet with these bins; the weights do not record them, only their count.
BINS = (1, 2, 3, 6)

# layer0 = Sequential(conv1, bn1, relu, conv2, bn2, relu, conv3, bn3, relu, maxpool) of the
# ImageNet ResNet, so its parameters sit at indices 0/1, 3/4 and 6/7.
PSPNET_RULES: list[Rule] = [
    (r"layer0\.0\.weight", "backbone.stem.0.conv.weight"),
    (r"layer0\.1\.(\w+)", r"backbone.stem.0.bn.\1"),
    (r"layer0\.3\.weight", "backbone.stem.1.conv.weight"),
    (r"layer0\.4\.(\w+)", r"backbone.stem.1.bn.\1"),
    (r"layer0\.6\.weight", "backbone.stem.2.conv.weight"),
    (r"layer0\.7\.(\w+)", r"backbone.stem.2.bn.\1"),
    (rf"({BLOCK_KEY})", r"backbone.\1"),
    # ppm.features[i] = Sequential(AdaptiveAvgPool2d, conv 1x1, BN, ReLU).
    (r"ppm\.features\.(\d+)\.1\.weight", r"ppm.branches.\1.1.conv.weight"),
    (r"ppm\.features\.(\d+)\.2\.(\w+)", r"ppm.branches.\1.1.bn.\2"),
    # cls and aux = Sequential(conv 3x3, BN, ReLU, Dropout2d, conv 1x1 classifier).
    (r"cls\.0\.weight", "head.fuse.conv.weight"),
    (r"cls\.1\.(\w+)", r"head.fuse.bn.\1"),
    (r"cls\.4\.(weight|bias)", r"head.classifier.\1"),
    (r"aux\.0\.weight", "aux_head.fuse.conv.weight"),
    (r"aux\.1\.(\w+)", r"aux_head.fuse.bn.\1"),
    (r"aux\.4\.(weight|bias)", r"aux_head.classifier.\1"),
]

# semseg's resnet50_v2.pth: the same deep stem as conv1/bn1 .. conv3/bn3, then the blocks.
IMAGENET_RULES: list[Rule] = [
    (r"conv1\.weight", "stem.0.conv.weight"),
    (r"bn1\.(\w+)", r"stem.0.bn.\1"),
    (r"conv2\.weight", "stem.1.conv.weight"),
    (r"bn2\.(\w+)", r"stem.1.bn.\1"),
    (r"conv3\.weight", "stem.2.conv.weight"),
    (r"bn3\.(\w+)", r"stem.2.bn.\1"),
    (rf"({BLOCK_KEY})", r"\1"),
    (r"fc\.(weight|bias)", None),  # the ImageNet classifier: PSPNet has its own head
]


def matches(obj: dict) -> bool:
    """Whether ``obj`` is a semseg PSPNet checkpoint (``layer0`` stem and ``cls`` head)."""
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict):
        return False
    keys = {key.removeprefix("module.") for key in state}
    return {"layer0.0.weight", "layer1.0.conv1.weight", "cls.4.weight"} <= keys


def convert(obj: dict, source: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config and our state dict of a semseg PSPNet checkpoint.

    Args:
        obj: the loaded file: ``{"epoch", "state_dict", "optimizer"}`` or a bare state dict.
        source: the file's path, named in errors.

    Returns:
        The detected config (depth from layer3's block count, classes from ``cls.4``, the
        auxiliary head if ``aux.*`` is present) and the renamed, shape-checked weights.
    """
    state = foreign_state(obj, source)
    config = _config(state, source)
    with torch.device("meta"):  # only names and shapes are needed
        expected = PSPNet.from_config(config).state_dict()
    return config, rename_strict(state, PSPNET_RULES, expected, source)


def _config(state: dict[str, torch.Tensor], source: str) -> ModelConfig:
    branches = {key.split(".")[2] for key in state if key.startswith("ppm.features.")}
    if branches and len(branches) != len(BINS):
        raise CheckpointError(
            f"{source}: {len(branches)} pyramid branches, but semseg's bins are {BINS}; the "
            "bin sizes are not stored in the weights, so this file cannot be configured"
        )
    return ModelConfig(
        num_classes=state["cls.4.weight"].shape[0],
        backbone=resnet_depth(state, source),
        stem="deep",
        output_stride=8,
        contract_dilation=False,  # semseg dilates the first block of layer3/4 too
        bins=BINS,
        use_ppm=bool(branches),
        aux="aux.4.weight" in state,
        align_corners=True,
        base_width=state["layer1.0.conv1.weight"].shape[0],
    )


def matches_imagenet(obj: dict) -> bool:
    """Whether ``obj`` is semseg's deep-stem ImageNet ResNet (3x3 ``conv1`` .. ``conv3``)."""
    conv1 = obj.get("conv1.weight")
    return (
        isinstance(conv1, torch.Tensor)
        and conv1.ndim == 4
        and conv1.shape[-1] == 3
        and {"conv3.weight", "layer1.0.conv1.weight"} <= set(obj)
    )


def convert_imagenet(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """Rename semseg's ImageNet ``resnet50_v2.pth`` onto :class:`~pspnet.models.ResNet`, deep stem.

    Args:
        obj: the loaded file, a state dict.
        source: the file's path, named in errors.

    Returns:
        The state dict of ``ResNet(depth, stem="deep", base_width=...)``, ``fc`` dropped.
    """
    return rename_backbone(obj, source, IMAGENET_RULES, "deep")
