"""PSPNet (Zhao et al., CVPR 2017): dilated ResNet, pyramid pooling, a head and an aux head.

The model is a pure function: normalised images in, logits at the input's size out. In train
mode it also returns the auxiliary logits of layer3 (section 3.2, deep supervision); the loss
that weighs them lives in ``pspnet.engine.losses``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.models.pyramid import Pooling, PyramidPooling
from pspnet.models.resnet import (
    BackboneName,
    BasicBlockDilation,
    ConvBNReLU,
    OutputStride,
    ResNet,
    Stem,
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the network's shape; saved with every checkpoint.

    Attributes:
        num_classes: output classes (150 ADE20K, 21 VOC, 19 Cityscapes).
        backbone: resnet18/34 (basic blocks) or resnet50/101/152 (bottlenecks).
        stem: "deep" (3x3 convs 64-64-128, the paper's), "torchvision" (7x7 conv) or
            "deep_narrow" (32-32-64, mmseg's ResNetV1c).
        output_stride: 8 (the paper's: layer3/4 dilated by 2 and 4), 16 or 32.
        contract_dilation: first block of a dilated stage at half dilation (mmseg).
        stage_dilations: dilation of layer1..layer4; None (the paper's) derives it from
            output_stride. mmseg's d32 models keep every stride yet dilate layer3/4:
            output_stride 32 with stage_dilations (1, 1, 2, 4).
        basic_block_dilation: which 3x3 convs of a resnet18/34 block are dilated: "both_convs",
            or "first_conv" (mmseg's BasicBlock, whose conv2 is never dilated).
        bins: pyramid grid sizes.
        pooling: "avg" or "max" pooling in the pyramid.
        reduction: 1x1 conv each pyramid branch to in_channels/len(bins) channels.
        use_ppm: False gives the paper's baseline, the dilated FCN without the pyramid.
        aux: build the auxiliary head on layer3 (training only; dropped at test time).
        align_corners: of every bilinear resize (semseg True, mmseg False).
        base_width: channels of layer1 (64 published); smaller widths make tiny test models.
        head_channels: of the head's 3x3 conv (mmseg's PSPHead bottleneck); None: 8 x
            base_width (512). mmseg's ResNet-18 models use 128.
        aux_channels: of the aux head's 3x3 conv; None: 4 x base_width (256). mmseg's
            ResNet-18 models use 64.
        dropout: Dropout2d rate before each classifier.
        in_channels: bands of the input images (3 for RGB; 4 for RGB + near infrared, 13 for
            Sentinel-2 ...); only the stem's first conv depends on it.
    """

    num_classes: int
    backbone: BackboneName = "resnet50"
    stem: Stem = "deep"
    output_stride: OutputStride = 8
    contract_dilation: bool = False
    stage_dilations: tuple[int, int, int, int] | None = None
    basic_block_dilation: BasicBlockDilation = "both_convs"
    bins: tuple[int, ...] = (1, 2, 3, 6)
    pooling: Pooling = "avg"
    reduction: bool = True
    use_ppm: bool = True
    aux: bool = True
    align_corners: bool = True
    base_width: int = 64
    head_channels: int | None = None
    aux_channels: int | None = None
    dropout: float = 0.1
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "bins", tuple(int(b) for b in self.bins))
        if self.stage_dilations is not None:  # JSON and YAML give a list
            object.__setattr__(self, "stage_dilations", tuple(self.stage_dilations))
        for name in ("head_channels", "aux_channels"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.base_width < 2 or self.base_width % 2:
            raise ValueError(f"base_width must be an even number >= 2, got {self.base_width}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {self.in_channels}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class SegmentationHead(nn.Sequential):
    """3x3 conv + BN + ReLU, Dropout2d and a 1x1 classifier (the paper's final layers)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.fuse = ConvBNReLU(in_channels, mid_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)


class PSPNet(nn.Module):
    """The Pyramid Scene Parsing Network.

    ``PSPNet(150)`` is the paper's ADE20K network: ResNet-50 with the deep stem, output stride
    8, bins (1, 2, 3, 6), auxiliary head. Every keyword is a field of :class:`ModelConfig`, so
    ``PSPNet.from_config(config)`` builds the network a config describes. Weights are loaded
    and saved by :mod:`pspnet.checkpoints` (``build_model``, ``load_model``, ``save_model``).

    Args:
        num_classes: number of output classes.
        backbone .. dropout: the other :class:`ModelConfig` fields, by keyword only.

    Forward:
        images (N, in_channels, H, W), normalised, any H and W. Eval mode returns logits
        (N, C, H, W); train mode returns ``(logits, aux_logits)``, both (N, C, H, W),
        ``aux_logits`` None when the model has no auxiliary head.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: BackboneName = "resnet50",
        stem: Stem = "deep",
        output_stride: OutputStride = 8,
        contract_dilation: bool = False,
        stage_dilations: tuple[int, int, int, int] | None = None,
        basic_block_dilation: BasicBlockDilation = "both_convs",
        bins: tuple[int, ...] = (1, 2, 3, 6),
        pooling: Pooling = "avg",
        reduction: bool = True,
        use_ppm: bool = True,
        aux: bool = True,
        align_corners: bool = True,
        base_width: int = 64,
        head_channels: int | None = None,
        aux_channels: int | None = None,
        dropout: float = 0.1,
        in_channels: int = 3,
    ):
        super().__init__()
        self.config = config = ModelConfig(
            num_classes=num_classes,
            backbone=backbone,
            stem=stem,
            output_stride=output_stride,
            contract_dilation=contract_dilation,
            stage_dilations=stage_dilations,
            basic_block_dilation=basic_block_dilation,
            bins=tuple(bins),
            pooling=pooling,
            reduction=reduction,
            use_ppm=use_ppm,
            aux=aux,
            align_corners=align_corners,
            base_width=base_width,
            head_channels=head_channels,
            aux_channels=aux_channels,
            dropout=dropout,
            in_channels=in_channels,
        )
        self.backbone = ResNet(
            config.backbone,
            config.stem,
            config.output_stride,
            config.contract_dilation,
            config.base_width,
            stage_dilations=config.stage_dilations,
            basic_block_dilation=config.basic_block_dilation,
            in_channels=config.in_channels,
        )
        channels = self.backbone.out_channels
        self.ppm = (
            PyramidPooling(channels, config.bins, pooling, reduction, align_corners)
            if use_ppm
            else nn.Identity()
        )
        head_in = self.ppm.out_channels if use_ppm else channels
        # 512 and 256 mid channels at the published width 64, scaled with it, unless given.
        head_channels = 8 * base_width if head_channels is None else head_channels
        aux_channels = 4 * base_width if aux_channels is None else aux_channels
        self.head = SegmentationHead(head_in, head_channels, num_classes, dropout)
        self.aux_head = (
            SegmentationHead(self.backbone.layer3_channels, aux_channels, num_classes, dropout)
            if aux
            else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. (2015) normal init for every conv, BN as identity: what semseg, mmseg and
        # torchvision use when training from scratch.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Small classifiers start every class near equal probability (loss ~ log C).
        for head in filter(None, (self.head, self.aux_head)):
            nn.init.normal_(head.classifier.weight, std=0.01)

    @classmethod
    def from_config(cls, config: ModelConfig) -> PSPNet:
        return cls(**config.to_dict())

    def forward(self, images: torch.Tensor):
        size = images.shape[-2:]
        c3, c4 = self.backbone(images)  # (N, C3, H/8, W/8), (N, C4, H/8, W/8) at OS 8
        logits = self._resize(self.head(self.ppm(c4)), size)  # (N, classes, H, W)
        if not self.training:
            return logits
        aux = None if self.aux_head is None else self._resize(self.aux_head(c3), size)
        return logits, aux

    def stride_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Eval logits at the output stride (N, C, h, w), before ``forward`` upsamples them.

        The inference routine upsamples them itself, a band of rows at a time, so an image's
        (C, H, W) logits never exist at once (``pspnet.inference``).
        """
        _, c4 = self.backbone(images)  # (N, C4, H/8, W/8) at OS 8
        return self.head(self.ppm(c4))  # (N, classes, H/8, W/8)

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size, mode="bilinear", align_corners=self.config.align_corners)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Pretrained ``backbone`` and newly initialised ``head`` parameters (the paper's 10x)."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if id(p) not in ids]}


class StrideLogits(nn.Module):
    """``model.stride_logits`` as a module's forward, for ``torch.compile`` and ONNX export."""

    def __init__(self, model: PSPNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.stride_logits(images)
