import pytest
import torch
from torch import nn


@pytest.fixture
def trained():
    """Give every BatchNorm random statistics and affine terms, as training would, and eval()."""

    def randomise(module: nn.Module) -> nn.Module:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for bn in module.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    n = bn.num_features
                    bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                    bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                    if bn.affine:
                        bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                        bn.bias.copy_(0.2 * torch.randn(n, generator=generator))
        return module.eval()

    return randomise
