"""Plain functions the tests share (fixtures live in conftest.py).

Imported as ``from helpers import ...``: pytest puts tests/ on ``sys.path`` when it loads
tests/conftest.py, for the test files in every sub-folder too.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(root: Path, **extra) -> list[str]:
    """``--set`` overrides for a seconds-long CPU run of a tiny PSPNet on ``root``."""
    values = {
        "model.backbone": "resnet18",
        "model.base_width": 4,
        "data.root": str(root),
        "data.crop_size": "[32,32]",
        "data.workers": 0,
        "batch_size": 2,
        "iterations": 6,
        "checkpoint_every": 2,
        "log_every": 1,
        "evaluation.mode": "whole",
        "evaluation.flip": "false",
        "device": "cpu",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


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


def trained_like(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` (changed, in eval mode) with trained-like BatchNorm statistics and affine terms.

    A fresh BatchNorm is the identity in eval mode, so folding, conversion and export would pass
    with nothing to fold. Drawn from their own generator: the same values whatever ran before.
    benchmarks/harness.py has the benchmarks' copy, since the tests do not import benchmarks/.
    """
    generator = torch.Generator().manual_seed(seed)
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


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """``pspnet ARGS`` under torchrun with ``processes`` CPU ranks (one thread each)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        f"--master_port={free_port()}",
        "-m",
        "pspnet",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def write_raster(path: Path, bands: np.ndarray) -> Path:
    """``bands`` (N, H, W) as a plain (not georeferenced) GeoTIFF, written with rasterio."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    count, height, width = bands.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", width=width, height=height, count=count, dtype=bands.dtype
        ) as raster:
            raster.write(bands)
    return path


def write_tiny_multiband(
    root: Path, bands: int = 4, num_train: int = 4, num_val: int = 2, size=(24, 32)
) -> Path:
    """A custom dataset of ``bands``-band uint16 GeoTIFFs (reflectance-like, 0..10000) and
    single-band uint8 TIFF labels of 3 classes, listed in train.txt and val.txt."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            label = rng.integers(0, 3, (size[0] // 8, size[1] // 8), dtype=np.uint8)
            label = label.repeat(8, 0).repeat(8, 1)  # (H, W)
            noise = rng.integers(0, 500, (bands, *size))
            image = (1000 + 2000 * label[None].astype(np.int64) + noise).astype(np.uint16)
            name = f"{split}_{i:03d}.tif"
            write_raster(root / "images" / split / name, image)
            write_raster(root / "labels" / split / name, label[None])
            lines.append(f"images/{split}/{name} labels/{split}/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
