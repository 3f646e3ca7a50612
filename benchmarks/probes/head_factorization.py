"""Time PSPNet's pyramid pooling + head, plain and factorized, at ResNet-50 widths on this CPU.

The plain head is ``head(ppm(features))`` of an eval model; the factorized one is
``pspnet.inference.optimized.factorized.FactorizedHead`` (the pyramid half of the 3x3 conv at
bin size).
Features are 2048 channels at output stride 8 of a square input; the head has 512 mid
channels and 150 classes. Prints a table; writes nothing.

python -m benchmarks.probes.head_factorization          # inputs 473 and 713, 2 runs each
python -m benchmarks.probes.head_factorization --sizes 473 --runs 5
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch

from benchmarks.harness import measure
from pspnet.inference.optimized.factorized import FactorizedHead
from pspnet.models import PSPNet


def plain_head(model: PSPNet, features: torch.Tensor) -> torch.Tensor:
    """(1, 150, h, w) logits of the unfactorized pyramid and head."""
    return model.head(model.ppm(features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[473, 713])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = PSPNet(150, backbone="resnet50").eval()
    factorized = FactorizedHead(model.ppm, model.head).eval()
    rows = [
        "| input | features | plain (s) | factorized (s) | speed-up | relative difference |",
        "|---|---|---|---|---|---|",
    ]
    with torch.inference_mode():
        for size in args.sizes:
            side = math.ceil(size / 8)  # output stride 8: each stride-2 layer rounds up
            features = torch.randn(1, model.backbone.out_channels, side, side).relu()
            plain, fast = plain_head(model, features), factorized(features)  # and a warm-up
            plain_time = min(measure(partial(plain_head, model, features), args.runs, warmup=0))
            fast_time = min(measure(partial(factorized, features), args.runs, warmup=0))
            difference = float((fast - plain).norm() / plain.norm())
            rows.append(
                f"| {size}x{size} | 2048x{side}x{side} | {plain_time:.3f} | {fast_time:.3f} | "
                f"{plain_time / fast_time:.2f}x | {difference:.1e} |"
            )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, fp32")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
