"""Dilated ResNet backbone (He et al., 2016) as PSPNet uses it.

One configurable ResNet: the stem is chosen by name, and ``output_stride`` alone decides which
stages keep their stride and which trade it for dilation (Zhao et al., 2017, section 3.2). The
block attribute names (``conv1``, ``bn1``, ``downsample.0`` ...) follow torchvision because
every published checkpoint uses them; keeping them makes the converters one-to-one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Stem = Literal["deep", "torchvision", "deep_narrow"]
BackboneName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
OutputStride = Literal[8, 16, 32]
# Which 3x3 convs of a dilated BasicBlock (resnet18/34) run at its dilation.
BasicBlockDilation = Literal["both_convs", "first_conv"]

# (block kind, blocks per stage) for each depth, from He et al., 2016, table 1.
DEPTHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class ConvBNReLU(nn.Sequential):
    """Bias-free convolution, BatchNorm and ReLU, the unit of the stem and the heads."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``dilate_conv2=False`` keeps the second undilated, as mmseg's does."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, dilate_conv2: bool = True
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        second = dilation if dilate_conv2 else 1
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, second, second, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv (semseg, mmseg, torchvision)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


def stage_geometry(
    output_stride: OutputStride,
    contract_dilation: bool,
    stage_dilations: tuple[int, int, int, int] | None = None,
) -> list[tuple[int, int, int]]:
    """(stride, first-block dilation, dilation) of layer1..layer4 for an output stride.

    Stages past the output stride keep stride 1 and double the dilation instead, so layer3/4
    of the paper's OS-8 network run at dilation 2 and 4 (semseg dilates every block, the first
    too). ``stage_dilations`` gives each stage's dilation outright, the strides still following
    ``output_stride``: mmseg's d32 models keep every stride and dilate layer3/4 by 2 and 4
    (``strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4)`` in its configs). ``contract_dilation``
    halves the first block's dilation, as mmseg's ResNetV1c does (its ResLayer).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if stage_dilations is not None and (
        len(stage_dilations) != 4 or any(d < 1 for d in stage_dilations)
    ):
        raise ValueError(f"stage_dilations must be 4 integers >= 1, got {stage_dilations}")
    geometry = []
    current_stride, dilation = 4, 1  # the stem reduces by 4
    for index, natural_stride in enumerate((1, 2, 2, 2)):
        if index > 0 and current_stride * natural_stride > output_stride:
            stride, dilation = 1, dilation * natural_stride
        else:
            stride = natural_stride
            current_stride *= natural_stride
        if stage_dilations is not None:
            dilation = stage_dilations[index]
        first = dilation // 2 if contract_dilation and dilation > 1 else dilation
        geometry.append((stride, first, dilation))
    return geometry


def build_stem(stem: Stem, base_width: int, in_channels: int = 3) -> tuple[nn.Sequential, int]:
    """The input stem down to stride 4 and the number of channels it produces.

    ``in_channels`` (the image's bands) changes only the first conv's weight, (C, bands, k, k):
    its key ``stem.0.conv.weight`` is the same for every band count.
    """
    if stem == "torchvision":
        layers = [ConvBNReLU(in_channels, base_width, kernel_size=7, stride=2)]
        out_channels = base_width
    elif stem in ("deep", "deep_narrow"):
        # deep: 64-64-128 (semseg's ImageNet ResNet); deep_narrow: 32-32-64 (mmseg's ResNetV1c).
        mid = base_width if stem == "deep" else base_width // 2
        out_channels = 2 * mid
        layers = [
            ConvBNReLU(in_channels, mid, stride=2),
            ConvBNReLU(mid, mid),
            ConvBNReLU(mid, out_channels),
        ]
    else:
        raise ValueError(f"stem must be 'deep', 'torchvision' or 'deep_narrow', got {stem!r}")
    return nn.Sequential(*layers, nn.MaxPool2d(3, stride=2, padding=1)), out_channels


class ResNet(nn.Module):
    """A ResNet trunk without pooling and classifier: returns layer3's and layer4's features.

    Args:
        depth: one of ``resnet18`` .. ``resnet152``.
        stem: ``deep`` (3x3 convs 64-64-128), ``torchvision`` (7x7 conv) or ``deep_narrow``.
        output_stride: 8, 16 or 32; the ratio of input size to layer4's feature size.
        contract_dilation: halve the dilation of the first block of each dilated stage.
        base_width: channels of layer1's 3x3 convs (64 in every published model).
        stage_dilations: dilation of layer1..layer4; None derives it from ``output_stride``.
        basic_block_dilation: ``both_convs`` or ``first_conv`` (mmseg's) of a BasicBlock.
        in_channels: bands of the input images (3 for RGB).
    """

    def __init__(
        self,
        depth: BackboneName = "resnet50",
        stem: Stem = "deep",
        output_stride: OutputStride = 8,
        contract_dilation: bool = False,
        base_width: int = 64,
        *,
        stage_dilations: tuple[int, int, int, int] | None = None,
        basic_block_dilation: BasicBlockDilation = "both_convs",
        in_channels: int = 3,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"backbone must be one of {sorted(DEPTHS)}, got {depth!r}")
        if basic_block_dilation not in ("both_convs", "first_conv"):
            raise ValueError(
                "basic_block_dilation must be 'both_convs' or 'first_conv', "
                f"got {basic_block_dilation!r}"
            )
        kind, counts = DEPTHS[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        # mmseg's BasicBlock dilates conv1 only; its conv2 keeps padding 1 (backbones/resnet.py).
        dilate_conv2 = basic_block_dilation == "both_convs"
        options = {} if block is Bottleneck else {"dilate_conv2": dilate_conv2}
        self.stem, inplanes = build_stem(stem, base_width, in_channels)
        stages = []
        for index, (count, (stride, first, dilation)) in enumerate(
            zip(counts, stage_geometry(output_stride, contract_dilation, stage_dilations))
        ):
            planes = base_width * 2**index
            blocks = [block(inplanes, planes, stride, first, **options)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes, 1, dilation, **options) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.layer3_channels = inplanes // 2
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.stem(x)))  # (N, C2, H/8, W/8)
        c3 = self.layer3(x)  # (N, C3, H/min(os, 16), W/min(os, 16)), os = output_stride
        c4 = self.layer4(c3)  # (N, C4, H/os, W/os)
        return c3, c4
