"""SGD with the paper's parameter groups and the poly learning-rate schedule."""

from __future__ import annotations

import torch

from pspnet.models.pspnet import PSPNet


def build_optimizer(
    model: PSPNet,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    head_lr_mult: float = 10.0,
    fused: bool = False,
) -> torch.optim.SGD:
    """SGD over two named groups: ``backbone`` at ``lr``, ``head`` (new layers) at 10x.

    Args:
        model: the network (unwrapped: not DDP).
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty applied to every parameter, as the official code does.
        head_lr_mult: learning-rate multiplier of pyramid, head and aux head.
        fused: update every parameter in one fused kernel (CPU or CUDA).
    """
    groups = model.parameter_groups()
    return torch.optim.SGD(
        [
            {"name": "backbone", "params": groups["backbone"], "lr_mult": 1.0},
            {"name": "head", "params": groups["head"], "lr_mult": head_lr_mult},
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        fused=fused or None,
    )


def poly_lr(base_lr: float, iteration: int, iterations: int, power: float = 0.9) -> float:
    """The poly schedule: ``base_lr * (1 - iteration / iterations) ** power``."""
    return base_lr * (1.0 - min(iteration, iterations) / iterations) ** power


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Give every group ``base_lr`` times its ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_mult", 1.0)
