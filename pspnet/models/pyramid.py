"""The pyramid pooling module (Zhao et al., 2017, section 3.3 and figure 3)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.models.resnet import ConvBNReLU

Pooling = Literal["avg", "max"]


class BinBatchNorm(nn.BatchNorm2d):
    """BatchNorm that tolerates a single value per channel while training.

    The 1x1 bin of a batch of one image leaves one value per channel, where plain BatchNorm
    raises "Expected more than 1 value per channel when training" (peers crash on batch 1).
    Batch statistics are undefined there, so this normalises with the running statistics
    and leaves them untouched. The test is on the shape, never on tensor values.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class PyramidBranch(nn.Sequential):
    """One bin: pool to ``bins x bins``, then (optionally) 1x1 conv + BN + ReLU."""

    def __init__(self, bins: int, in_channels: int, out_channels: int | None, pooling: Pooling):
        pool = nn.AdaptiveAvgPool2d(bins) if pooling == "avg" else nn.AdaptiveMaxPool2d(bins)
        layers: list[nn.Module] = [pool]
        if out_channels is not None:
            reduce = ConvBNReLU(in_channels, out_channels, kernel_size=1)
            reduce.bn = BinBatchNorm(out_channels)
            layers.append(reduce)
        super().__init__(*layers)


class PyramidPooling(nn.Module):
    """Pool the feature map into ``bins`` grids, upsample each back and concatenate.

    Args:
        in_channels: channels of the backbone's last feature map (2048 for ResNet-50).
        bins: the grid sizes; the paper's are (1, 2, 3, 6).
        pooling: ``avg`` (the paper's choice) or ``max`` (its ablation, table 1).
        reduction: 1x1 conv each branch to ``in_channels / len(bins)`` channels ("DR" in
            table 1); without it every branch keeps ``in_channels``.
        align_corners: of the bilinear upsampling; semseg uses True, mmseg False.
    """

    def __init__(
        self,
        in_channels: int,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        pooling: Pooling = "avg",
        reduction: bool = True,
        align_corners: bool = True,
    ):
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        if not bins:
            raise ValueError("bins must name at least one grid size")
        branch_channels = in_channels // len(bins) if reduction else None
        self.branches = nn.ModuleList(
            PyramidBranch(b, in_channels, branch_channels, pooling) for b in bins
        )
        self.align_corners = align_corners
        self.out_channels = in_channels + len(bins) * (branch_channels or in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        # Each (N, Cb, H, W), Cb = C / len(bins) with reduction, else C.
        pooled = [
            F.interpolate(branch(x), size, mode="bilinear", align_corners=self.align_corners)
            for branch in self.branches
        ]
        return torch.cat([x, *pooled], dim=1)  # (N, C + len(bins) * Cb, H, W)
