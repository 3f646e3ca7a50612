import pytest
import torch
from torch import nn


@pytest.fixture
def randomised():
    """Give every BatchNorm of a module random statistics and affine terms, so BN matters."""

    def randomise(module: nn.Module) -> nn.Module:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for bn in module.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    n = bn.num_features
                    bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                    bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                    bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                    bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                    bn.num_batches_tracked.fill_(
                        int(torch.randint(1, 100, (), generator=generator))
                    )
        return module.eval()

    return randomise
