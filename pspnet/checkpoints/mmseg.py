"""mmsegmentation PSPNet checkpoints (``pspnet_r50-d8_*.pth``).

mmseg's PSPNet differs from the paper's in three ways our config expresses: the ResNetV1c
stem is 32-32-64 channels ("deep_narrow"; the ``r50b`` models use torchvision's 7x7 stem),
the first block of layer3/4 runs at half the dilation (``contract_dilation=True``), and every
resize uses ``align_corners=False``. Its ResNet-18 models add two more, read from the weights:
narrower heads (``channels=128`` and ``64``: ``head_channels``, ``aux_channels``) and
mmseg's BasicBlock, which dilates its first 3x3 conv only (``basic_block_dilation``).

The weights do not show strides and dilations: the d32 models (``strides=(1, 2, 2, 2),
dilations=(1, 1, 2, 4)``) hold the same tensors as the d8 ones. A file converts as d8; a
registry entry supplies the fields in :data:`NOT_IN_WEIGHTS` (``output_stride=32,
stage_dilations=(1, 1, 2, 4)`` for d32).
"""

from __future__ import annotations

import torch

from pspnet.checkpoints.native import Rule, foreign_state, rename_strict
from pspnet.checkpoints.torchvision import BLOCK_KEY, rename_backbone, resnet_depth
from pspnet.errors import CheckpointError
from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.resnet import DEPTHS

NAME = "mmseg"

# mmseg's configs all use pool_scales (1, 2, 3, 6); the weights record only their count.
BINS = (1, 2, 3, 6)

# Fields no mmseg tensor shows: the geometry (d8 and d32 hold the same tensors) and the
# test-time resize. The converter gives mmseg's d8 defaults; a registry entry gives its own.
NOT_IN_WEIGHTS = ("output_stride", "stage_dilations", "align_corners")

RULES: list[Rule] = [
    # ResNetV1c: stem = Sequential(conv, BN, ReLU, conv, BN, ReLU, conv, BN, ReLU).
    (r"backbone\.stem\.0\.weight", "backbone.stem.0.conv.weight"),
    (r"backbone\.stem\.1\.(\w+)", r"backbone.stem.0.bn.\1"),
    (r"backbone\.stem\.3\.weight", "backbone.stem.1.conv.weight"),
    (r"backbone\.stem\.4\.(\w+)", r"backbone.stem.1.bn.\1"),
    (r"backbone\.stem\.6\.weight", "backbone.stem.2.conv.weight"),
    (r"backbone\.stem\.7\.(\w+)", r"backbone.stem.2.bn.\1"),
    # ResNet (the r50b models): torchvision's single 7x7 conv.
    (r"backbone\.conv1\.weight", "backbone.stem.0.conv.weight"),
    (r"backbone\.bn1\.(\w+)", r"backbone.stem.0.bn.\1"),
    (rf"backbone\.({BLOCK_KEY})", r"backbone.\1"),
    # psp_modules[i] = Sequential(AdaptiveAvgPool2d, ConvModule(conv 1x1, bn, relu)).
    (r"decode_head\.psp_modules\.(\d+)\.1\.conv\.weight", r"ppm.branches.\1.1.conv.weight"),
    (r"decode_head\.psp_modules\.(\d+)\.1\.bn\.(\w+)", r"ppm.branches.\1.1.bn.\2"),
    (r"decode_head\.bottleneck\.conv\.weight", "head.fuse.conv.weight"),  # 3x3
    (r"decode_head\.bottleneck\.bn\.(\w+)", r"head.fuse.bn.\1"),
    (r"decode_head\.conv_seg\.(weight|bias)", r"head.classifier.\1"),
    # The FCNHead on layer3 with one 3x3 ConvModule.
    (r"auxiliary_head\.convs\.0\.conv\.weight", "aux_head.fuse.conv.weight"),
    (r"auxiliary_head\.convs\.0\.bn\.(\w+)", r"aux_head.fuse.bn.\1"),
    (r"auxiliary_head\.conv_seg\.(weight|bias)", r"aux_head.classifier.\1"),
]


# open-mmlab's ImageNet ResNetV1c (open-mmlab://resnet50_v1c): the backbone's own keys, the
# same layout as a PSPNet's ``backbone.*`` without the prefix, plus the ImageNet classifier.
IMAGENET_RULES: list[Rule] = [
    (pattern.removeprefix(r"backbone\."), target.removeprefix("backbone."))
    for pattern, target in RULES
    if pattern.startswith(r"backbone\.stem") or pattern == rf"backbone\.({BLOCK_KEY})"
] + [(r"fc\.(weight|bias)", None)]  # the ImageNet classifier: PSPNet has its own head


def matches_imagenet(obj: dict) -> bool:
    """Whether ``obj`` is open-mmlab's ImageNet ResNetV1c (``stem.0`` .. ``stem.7``, blocks)."""
    return {"stem.0.weight", "stem.6.weight", "layer1.0.conv1.weight"} <= set(obj)


def convert_imagenet(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """Rename open-mmlab's ImageNet ResNetV1c onto :class:`~pspnet.models.ResNet` (32-32-64 stem).

    Args:
        obj: the loaded file's state dict.
        source: the file's path, named in errors.
    """
    return rename_backbone(obj, source, IMAGENET_RULES, "deep_narrow")


def matches(obj: dict) -> bool:
    """Whether ``obj`` is an mmseg PSPNet checkpoint (``backbone.*`` and a PSPHead)."""
    state = obj.get("state_dict", obj)
    return isinstance(state, dict) and {
        "backbone.layer1.0.conv1.weight",
        "decode_head.psp_modules.0.1.conv.weight",
        "decode_head.conv_seg.weight",
    } <= set(state)


def convert(obj: dict, source: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config and our state dict of an mmseg PSPNet checkpoint.

    Args:
        obj: the loaded file: ``{"meta", "state_dict", ...}`` or a bare state dict.
        source: the file's path, named in errors.

    Returns:
        The detected config (depth from the block counts, classes from ``conv_seg``, the
        auxiliary head if ``auxiliary_head.*`` is present, the heads' widths from their 3x3
        convs; output stride 8, see :data:`NOT_IN_WEIGHTS`) and the renamed, shape-checked
        weights.
    """
    state = foreign_state(obj, source)
    config = _config(state, source)
    with torch.device("meta"):  # only names and shapes are needed
        expected = PSPNet.from_config(config).state_dict()
    return config, rename_strict(state, RULES, expected, source)


def _config(state: dict[str, torch.Tensor], source: str) -> ModelConfig:
    prefix = "decode_head.psp_modules."
    branches = {key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)}
    if len(branches) != len(BINS):
        raise CheckpointError(
            f"{source}: {len(branches)} pyramid branches, but mmseg's pool_scales are {BINS}; "
            "the scales are not stored in the weights, so this file cannot be configured"
        )
    backbone = resnet_depth(state, source, prefix="backbone.")
    base_width = state["backbone.layer1.0.conv1.weight"].shape[0]
    return ModelConfig(
        num_classes=state["decode_head.conv_seg.weight"].shape[0],
        backbone=backbone,
        stem="torchvision" if "backbone.conv1.weight" in state else "deep_narrow",
        output_stride=8,
        contract_dilation=True,  # ResNetV1c(contract_dilation=True) in every PSPNet config
        # mmseg's BasicBlock builds conv2 with padding 1 and no dilation (backbones/resnet.py).
        basic_block_dilation="first_conv" if DEPTHS[backbone][0] == "basic" else "both_convs",
        bins=BINS,
        aux="auxiliary_head.conv_seg.weight" in state,
        align_corners=False,
        base_width=base_width,
        # PSPHead's and FCNHead's ``channels``: 512 and 256 except in the ResNet-18 configs.
        head_channels=_width(state, "decode_head.bottleneck.conv.weight", 8 * base_width),
        aux_channels=_width(state, "auxiliary_head.convs.0.conv.weight", 4 * base_width),
    )


def _width(state: dict[str, torch.Tensor], key: str, default: int) -> int | None:
    """Output channels of conv ``key``; None when they are our default or it is absent (no aux
    head; a missing key ``rename_strict`` then names)."""
    weight = state.get(key)
    return None if weight is None or weight.shape[0] == default else weight.shape[0]
