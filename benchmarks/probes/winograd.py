"""Would Winograd F(2x2, 3x3) beat this CPU's direct 3x3 convolution? A probe, not a path.

    python -m benchmarks.probes.winograd
    python -m benchmarks.probes.winograd --shapes 256x90 --no-write

The exact fp32 path already runs at the rate of the best single convolution this CPU shows
(benchmarks/cpu/inference.py), so only fewer multiplies could make it faster. Winograd F(2x2, 3x3)
needs 16 multiplies per 2x2 output tile instead of 36 (2.25x fewer), paid for with input and
output transforms. This times a prototype written in PyTorch ops (tile extraction by
``unfold``, +/- transforms, one batched matrix product per tile position) against
``F.conv2d`` in channels_last, on the 3x3 shapes of PSPNet's layer3 (R101 @ 713: 256
channels at 90x90) and layer4 and head (R50 @ 473: 512 channels at 60x60), stride 1 and
dilation 1 (the network's dilated ones would also need their input split into phases).
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.harness import measure
from benchmarks.report import command_line, cpu_model, write_section

# Winograd F(2, 3) matrices (Lavin & Gray, 2016): Y = A^T [(G g G^T) * (B^T d B)] A.
G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def transformed_weights(weight: torch.Tensor) -> torch.Tensor:
    """(16, K, C): ``G g G^T`` of every 3x3 filter, one (K, C) matrix per tile position."""
    out_channels, in_channels = weight.shape[:2]
    return torch.einsum("ai,kcij,bj->abkc", G, weight, G).reshape(16, out_channels, in_channels)


def winograd_conv(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, of images (1, C, H, W) -> (1, K, H, W)."""
    _, channels, height, width = images.shape
    padded = F.pad(images[0], (1, 1 + width % 2, 1, 1 + height % 2))  # whole 2x2 tiles
    tiles = padded.unfold(1, 4, 2).unfold(2, 4, 2)  # (C, th, tw, 4, 4)
    rows, columns = tiles.shape[1:3]
    # B^T d B with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]: rows, then columns.
    d = tiles
    r = torch.stack(
        [
            d[..., 0, :] - d[..., 2, :],
            d[..., 1, :] + d[..., 2, :],
            d[..., 2, :] - d[..., 1, :],
            d[..., 1, :] - d[..., 3, :],
        ]
    )
    v = torch.stack(
        [
            r[..., 0] - r[..., 2],
            r[..., 1] + r[..., 2],
            r[..., 2] - r[..., 1],
            r[..., 1] - r[..., 3],
        ],
        1,
    )
    products = torch.bmm(weights, v.reshape(16, channels, rows * columns))  # (16, K, T)
    m = products.reshape(4, 4, -1, rows, columns)  # (4, 4, K, th, tw)
    # A^T m A with A^T = [[1,1,1,0],[0,1,-1,-1]]: rows, then columns.
    o = torch.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])  # (2, 4, K, th, tw)
    y = torch.stack([o[:, 0] + o[:, 1] + o[:, 2], o[:, 1] - o[:, 2] - o[:, 3]], 1)
    out = y.permute(2, 3, 0, 4, 1).reshape(1, -1, 2 * rows, 2 * columns)  # (1, K, 2th, 2tw)
    return out[..., :height, :width]


def compare(channels: int, size: int, runs: int) -> str:
    """One table row: direct vs Winograd time, and Winograd's error, at one shape."""
    torch.manual_seed(0)
    images = torch.randn(1, channels, size, size)
    weight = torch.randn(channels, channels, 3, 3) / (3 * channels**0.5)
    weights = transformed_weights(weight)
    with torch.inference_mode():
        expected = F.conv2d(images, weight, padding=1)
        error = (winograd_conv(images, weights) - expected).abs().max() / expected.abs().max()
    last = torch.channels_last
    direct = partial(F.conv2d, images.contiguous(memory_format=last), weight.to(memory_format=last))
    tiles = (size + 1) // 2
    v = torch.randn(16, channels, tiles * tiles)
    seconds = {
        name: statistics.median(measure(call, runs, warmup=1))
        for name, call in {
            "direct": partial(direct, padding=1),
            "winograd": partial(winograd_conv, images, weights),
            "products": partial(torch.bmm, weights, v),
        }.items()
    }
    gflop = 2 * channels * channels * 9 * size * size / 1e9
    return (
        f"| {channels}->{channels} @{size}x{size} | {gflop:.2f} | {1e3 * seconds['direct']:.1f} "
        f"({gflop / seconds['direct']:.0f} GFLOP/s) | {1e3 * seconds['winograd']:.1f} | "
        f"{1e3 * seconds['products']:.1f} | {seconds['direct'] / seconds['winograd']:.2f}x | "
        f"{error.item():.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["256x90", "512x60"], help="CxSIZE")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows = [
        "| 3x3 conv, stride 1 | GFLOP | direct, channels_last (ms) | Winograd F(2x2,3x3) (ms) "
        "| of which the 16 matrix products (ms) | Winograd speed-up | max rel err |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in args.shapes:
        channels, size = (int(part) for part in shape.split("x"))
        rows.append(compare(channels, size, args.runs))
        print(rows[-1], flush=True)
    body = (
        f"CPU: {cpu_model()}; torch {torch.__version__}; batch 1, fp32, median of {args.runs} "
        "runs after one warm-up. A prototype in PyTorch ops (benchmarks/probes/winograd.py), not a "
        "path of `optimize`: its transforms are separate memory-bound passes, and its 16 "
        "matrix products run well below the direct convolution's GFLOP/s.\n\n"
        + "\n".join(rows)
        + f"\n\nCommand: `{command_line()}`"
    )
    print(body)
    if not args.no_write:
        write_section("Winograd probe: fewer multiplies for the 3x3 convolutions?", body)


if __name__ == "__main__":
    main()
