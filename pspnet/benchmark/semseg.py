"""semseg's eager PSPNet, the reference the benchmark's speed goals are stated against.

hszhao/semseg (the paper authors' code) runs its model as built: the ImageNet ResNet's modules
regrouped as ``layer0`` (the deep stem and max-pool) and ``layer1`` .. ``layer4`` with the
3x3 convs of layer3/4 set to stride 1 and dilation 2/4, the pyramid as ``ppm.features`` (pool,
1x1 conv, BN, ReLU each), ``cls`` (3x3 conv, BN, ReLU, dropout, 1x1 classifier) and a forward
that upsamples the logits to the image (``align_corners=True``), in NCHW fp32 with every
BatchNorm as its own op. This module is that network under semseg's key names, so a checkpoint
of ours runs exactly as semseg would run it: its weights are copied over through the semseg
converter's own key rules (:data:`pspnet.checkpoints.semseg.PSPNET_RULES`), every key accounted
for both ways.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.checkpoints.native import rename_strict
from pspnet.checkpoints.semseg import PSPNET_RULES
from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.resnet import Bottleneck  # torchvision's block, under torchvision's names

# Blocks per stage of the depths semseg builds (all bottlenecks).
DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
EXPANSION = Bottleneck.expansion


def semseg_difference(config: ModelConfig) -> str | None:
    """Why semseg could not build ``config``, or None when it is semseg's network.

    semseg takes the depth, the classes, the bins, the dropout and whether to use the pyramid;
    everything else is fixed (the deep stem, output stride 8 with every block of layer3/4
    dilated, average pooling with 1x1 reduction, ``align_corners=True``, RGB input). The width
    is ours to shrink (tests run narrow models through the same code).
    """
    if config.backbone not in DEPTHS:
        return f"semseg builds ResNet-50/101/152 only, not {config.backbone}"
    own = ModelConfig(
        num_classes=config.num_classes,
        backbone=config.backbone,
        bins=config.bins,
        use_ppm=config.use_ppm,
        aux=config.aux,
        dropout=config.dropout,
        base_width=config.base_width,
    )
    differing = [
        f"{field.name}={getattr(config, field.name)!r}"
        for field in dataclasses.fields(ModelConfig)
        if getattr(config, field.name) != getattr(own, field.name)
    ]
    if differing:
        return f"not semseg's network ({', '.join(differing)})"
    return None


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list:
    padding = kernel_size // 2
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SemsegPSPNet(nn.Module):
    """semseg's PSPNet in eval mode (see the module docstring); ``forward`` returns the logits
    at the image's size, (N, classes, H, W)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        reason = semseg_difference(config)
        if reason is not None:
            raise ValueError(reason)
        self.config = config
        width = config.base_width
        self.layer0 = nn.Sequential(
            *_conv_bn_relu(3, width, 3, stride=2),
            *_conv_bn_relu(width, width, 3),
            *_conv_bn_relu(width, 2 * width, 3),
            nn.MaxPool2d(3, 2, 1),
        )
        inplanes = 2 * width
        # (stride, dilation) of layer1..4 at output stride 8.
        geometry = ((1, 1), (2, 1), (1, 2), (1, 4))
        for index, (blocks, (stride, dilation)) in enumerate(
            zip(DEPTHS[config.backbone], geometry, strict=True)
        ):
            planes = width * 2**index
            layer = [Bottleneck(inplanes, planes, stride, dilation)]
            inplanes = planes * EXPANSION
            layer += [Bottleneck(inplanes, planes, 1, dilation) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        features = inplanes  # 2048 at full width
        if config.use_ppm:
            reduced = features // len(config.bins)
            self.ppm = _PyramidPooling(features, reduced, config.bins)
            features += reduced * len(config.bins)  # 4096 with semseg's four bins
        self.cls = self._head(features, 8 * width)
        if config.aux:
            self.aux = self._head(16 * width, 4 * width)  # on layer3: 1024 -> 256 at full width

    def _head(self, in_channels: int, channels: int) -> nn.Sequential:
        return nn.Sequential(
            *_conv_bn_relu(in_channels, channels, 3),
            nn.Dropout2d(self.config.dropout),
            nn.Conv2d(channels, self.config.num_classes, 1),
        )

    @classmethod
    def of(cls, model: PSPNet) -> SemsegPSPNet:
        """semseg's network holding ``model``'s weights, in eval mode.

        Raises:
            ValueError: ``model`` is not semseg's network (:func:`semseg_difference`).
            CheckpointError: a key of either side left unmatched (a bug here, not the user's).
        """
        device = next(model.parameters()).device
        reference = cls(model.config).to(device)
        ours = model.state_dict()
        renamed = rename_strict(reference.state_dict(), PSPNET_RULES, ours, "semseg reference")
        with torch.no_grad():
            for key, tensor in renamed.items():  # tensor shares the reference's storage
                tensor.copy_(ours[key])
        return reference.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        x = self.layer2(self.layer1(self.layer0(images)))  # (N, 512, H/8, W/8) at full width
        x = self.layer4(self.layer3(x))  # (N, 2048, H/8, W/8)
        if self.config.use_ppm:
            x = self.ppm(x)  # (N, 4096, H/8, W/8)
        x = self.cls(x)  # (N, classes, H/8, W/8)
        return F.interpolate(x, (height, width), mode="bilinear", align_corners=True)


class _PyramidPooling(nn.Module):
    """semseg's PPM: ``features[i]`` = (adaptive average pool, 1x1 conv, BN, ReLU)."""

    def __init__(self, in_channels: int, reduced: int, bins: tuple[int, ...]):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), *_conv_bn_relu(in_channels, reduced, 1))
            for size in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size, mode="bilinear", align_corners=True)
            for branch in self.features
        ]
        return torch.cat([x, *pooled], 1)  # (N, 2C, h, w)
