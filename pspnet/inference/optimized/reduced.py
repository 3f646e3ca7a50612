"""bf16 and fp16 inference: weights cast once, with the precision-sensitive parts kept in fp32.

Autocast would cast every weight on every call (inference weights do not require grad, so
its cast cache never applies) and round the logits to 16 bits. Here the early backbone
stages, the factorised head's pyramid sums (see :mod:`pspnet.inference.optimized.factorized`)
and the classifier stay fp32; everything else runs in bf16 (CPU or CUDA) or fp16 (CUDA).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pspnet.errors import ConfigError
from pspnet.models.pspnet import PSPNet

# Backbone stages that bf16 inference keeps in fp32: the rounding of the early,
# high-resolution activations flips the most pixels, and those stages are a small share of the
# FLOPs (docs/benchmarks.md, "CamVid: accuracy of the fast paths", measures each choice).
BF16_FP32_STAGES = ("stem", "layer1")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


class AtPrecision(nn.Module):
    """``module`` applied to its input cast to ``dtype`` (the dtype of its weights)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype))

    def extra_repr(self) -> str:
        return str(self.dtype)


def reduced_precision(
    model: PSPNet,
    dtype: torch.dtype = torch.bfloat16,
    fp32_stages: Iterable[str] = BF16_FP32_STAGES,
) -> PSPNet:
    """``model`` (modified) in ``dtype``, but for ``fp32_stages``, the pyramid sums and classifier.

    Weights are cast once here, not on every call as autocast does. The factorised head adds
    its pyramid part in fp32 and the classifier stays fp32, so the logits are not rounded to
    bf16's 8 bits (a step of 0.03 at a logit of 8, enough to flip close calls).

    Args:
        model: an exact rewrite (:func:`~pspnet.inference.optimized.optimize.exact_rewrite`),
            changed in place.
        dtype: torch.bfloat16 or torch.float16.
        fp32_stages: backbone stages ("stem", "layer1" ... "layer4") kept in fp32.
    """
    fp32_stages = set(fp32_stages)
    if not fp32_stages <= set(STAGES):
        unknown = ", ".join(sorted(fp32_stages - set(STAGES)))
        raise ConfigError(f"fp32 stages are among {', '.join(STAGES)}; unknown: {unknown}")
    for name in STAGES:
        stage_dtype = torch.float32 if name in fp32_stages else dtype
        setattr(model.backbone, name, AtPrecision(getattr(model.backbone, name), stage_dtype))
    classifier = model.head.classifier
    model.head.classifier = nn.Identity()
    model.head.to(dtype)
    model.head.classifier = AtPrecision(classifier, torch.float32)  # weights never rounded
    model.ppm = AtPrecision(model.ppm, dtype)  # the head's input at the reduced precision
    return model
