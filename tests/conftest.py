"""Fixtures shared by the test folders: a tiny CamVid-layout dataset and trained-looking BN."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


def write_tiny_camvid(root: Path, num_train: int = 8, num_val: int = 3, size=(40, 48)) -> Path:
    """CamVid's layout (train/, trainannot/, train.txt ...) with blocky random scenes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(exist_ok=True)
        lines = []
        for i in range(count):
            label = rng.integers(0, 12, size=(size[0] // 8, size[1] // 8), dtype=np.uint8)
            label = label.repeat(8, 0).repeat(8, 1)  # (H, W), 11 is CamVid's void
            image = (label[..., None] * 20 + rng.integers(0, 30, (*size, 3))).astype(np.uint8)
            name = f"{split}_{i:03d}.png"
            Image.fromarray(image).save(root / split / name)
            Image.fromarray(label).save(root / f"{split}annot" / name)
            lines.append(f"{split}/{name} {split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


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
