"""Fold eval-mode BatchNorm into the convolution before it, and other layout-only rewrites.

In eval mode BatchNorm is a per-channel affine map, ``y = (x - mean) * gamma / sqrt(var + eps)
+ beta``, so a convolution followed by it is one convolution with scaled weights and a bias.
The folded model computes the same logits to float rounding with one pass less per layer.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def fold_batchnorm(model: ModuleT) -> ModuleT:
    """An inference-only copy of ``model`` with each BatchNorm folded into its convolution.

    A BatchNorm2d (the pyramid's ``BinBatchNorm`` included) is folded where it is registered
    right after the Conv2d that feeds it in the same parent module: ``conv``/``bn`` of
    ``ConvBNReLU``, ``convK``/``bnK`` of the ResNet blocks and ``downsample.0``/``.1``, which
    covers every BatchNorm of PSPNet. The BatchNorm becomes ``nn.Identity``; any other
    BatchNorm is kept as it is, so the result stays exact either way.

    Args:
        model: a PSPNet (or any module built the same way); it is not modified.

    Returns:
        A deep copy of the same class in eval mode with gradients off; called like the
        original in eval mode, it returns the same logits. Do not train it: the batch
        statistics are gone.
    """
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and _foldable(conv, bn):
                weight, bias = folded_parameters(conv, bn)
                conv.weight = nn.Parameter(weight, requires_grad=False)
                conv.bias = nn.Parameter(bias, requires_grad=False)
                setattr(parent, bn_name, nn.Identity())
    return folded


def folded_parameters(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single convolution computing ``bn(conv(x))`` in eval mode.

    Computed in float64 and rounded once to the convolution's dtype, so the folded layer
    differs from the pair by float rounding only.

    Args:
        conv: the convolution, with or without a bias.
        bn: the eval-mode BatchNorm on its output, with running statistics.

    Returns:
        ``weight`` shaped like ``conv.weight`` and ``bias`` (out_channels,).
    """
    if not _foldable(conv, bn):
        raise ValueError(
            f"cannot fold {bn} into {conv}: the BatchNorm needs running statistics and "
            "conv.out_channels features"
        )
    dtype = conv.weight.dtype
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)  # (out_channels,)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = (conv_bias - mean) * scale + beta
    return weight.to(dtype).detach(), bias.to(dtype).detach()


def to_channels_last(model: ModuleT) -> ModuleT:
    """Store every 4-d weight channels-last (NHWC), in place, and return ``model``.

    oneDNN's CPU convolutions run natively in NHWC; a convolution with NHWC weights returns
    NHWC activations, so the layout carries through the network from the first layer on
    without converting the images. Logits are the same to float rounding.

    Args:
        model: any module; modified in place like ``model.to(...)``.
    """
    return model.to(memory_format=torch.channels_last)


def _foldable(conv: nn.Conv2d, bn: nn.Module) -> bool:
    return (
        isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )
