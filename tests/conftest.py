"""Fixtures shared by the test folders: a tiny CamVid-layout dataset and trained-looking BN."""

from pathlib import Path

import pytest
import torch
from helpers import write_tiny_camvid
from torch import nn


@pytest.fixture
def tiny_camvid(tmp_path: Path) -> Path:
    return write_tiny_camvid(tmp_path / "camvid")


@pytest.fixture
def trained():
    """Give every BatchNorm random statistics and affine terms, as training would, and eval().

    Folding, conversion and export are only tested when BatchNorm actually changes values.
    """

    def randomise(module: nn.Module) -> nn.Module:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for bn in module.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    n = bn.num_features
                    bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                    bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                    if bn.affine:
                        bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                        bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                    steps = int(torch.randint(1, 100, (), generator=generator))
                    bn.num_batches_tracked.fill_(steps)
        return module.eval()

    return randomise
