"""Parameters and FLOPs of each part of the network (``pspnet info``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.resnet import BackboneName, OutputStride, Stem
from pspnet.settings import check_settings, setting

PARTS = {
    "backbone": "stem + backbone",
    "ppm": "pyramid pooling",
    "head": "head",
    "aux_head": "aux head",
}


@dataclass(frozen=True)
class PartSummary:
    name: str
    parameters: int
    gflops: float


def summarize(config: ModelConfig, height: int, width: int) -> list[PartSummary]:
    """Parameters and forward GFLOPs (one image; a multiply-add counts 2) per part.

    Built on the meta device, so even ResNet-152 costs no memory or time. The aux head is
    counted as in training; it does not run at test time.

    Args:
        config: the network.
        height: input height.
        width: input width.
    """
    with torch.device("meta"):
        model = PSPNet.from_config(config).train()
        # Two images, counted as one: train-mode BatchNorm needs more than one value per
        # channel, which a single tiny image's 1x1 maps would not give.
        images = torch.empty(2, 3, height, width)
    counter = FlopCounterMode(display=False, depth=2)
    with counter, torch.no_grad():
        model(images)
    flops = counter.get_flop_counts()
    rows = []
    for attribute, title in PARTS.items():
        module = getattr(model, attribute)
        if module is None:
            continue
        parameters = sum(p.numel() for p in module.parameters())
        part_flops = sum(flops.get(f"PSPNet.{attribute}", {}).values()) / 2
        rows.append(PartSummary(title, parameters, part_flops / 1e9))
    return rows


@dataclass(frozen=True)
class InfoSettings:
    """``pspnet info``: parameters and FLOPs per part of a network.

    Attributes:
        backbone: the ResNet.
        num_classes: classes the classifier predicts.
        size: square input size.
        stem: the ResNet's first layers.
        output_stride: the features' stride (8: the paper's dilated network).
        ppm: the pyramid pooling module (--no-ppm: the FCN baseline).
    """

    backbone: BackboneName = "resnet50"
    num_classes: int = setting(150, low=1)
    size: int = setting(473, low=1)
    stem: Stem = "deep"
    output_stride: OutputStride = 8
    ppm: bool = setting(True, flag="--no-ppm")

    def __post_init__(self) -> None:
        check_settings(self)

    def model(self) -> ModelConfig:
        """The network these settings describe."""
        return ModelConfig(
            num_classes=self.num_classes,
            backbone=self.backbone,
            stem=self.stem,
            output_stride=self.output_stride,
            use_ppm=self.ppm,
        )
