"""One ONNX export with dynamic size, checked and timed in onnxruntime at several input sizes.

python -m benchmarks.cpu.onnx_sizes                              # PSPNet-ResNet50, 150 classes
python -m benchmarks.cpu.onnx_sizes --backbone resnet18 --base-width 8 --no-write   # smoke run

Random weights with trained-like BatchNorm statistics, so folding and the pyramid's
shape-built pooling see realistic values; accuracy is the max |ORT - eager| over the max
|eager| logit, and the share of pixels whose argmax class agrees.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import onnxruntime
import torch

from benchmarks.harness import measure, trained_like
from benchmarks.report import command_line, cpu_model, write_section
from pspnet.export import OnnxRuntimeModel, export_onnx
from pspnet.export.onnx import DEFAULT_OPSET
from pspnet.models import PSPNet

# 100x131 is divisible by neither 8 nor the bins; 512x1024 is Cityscapes' training crop.
SIZES = ((473, 473), (377, 505), (713, 713), (512, 1024), (100, 131))


def compare(model: PSPNet, runner: OnnxRuntimeModel, size: tuple[int, int], runs: int, warmup: int):
    """(max relative error, argmax agreement, eager median s, ORT median s) at one size."""
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.inference_mode():
        eager, onnx = model(images), runner(images)  # (1, C, H, W) each
    error = ((onnx - eager).abs().max() / eager.abs().max()).item()
    agreement = (onnx.argmax(1) == eager.argmax(1)).float().mean().item()
    eager_s = statistics.median(measure(partial(model, images), runs, warmup))
    onnx_s = statistics.median(measure(partial(runner, images), runs, warmup))
    return error, agreement, eager_s, onnx_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = trained_like(
        PSPNet(args.num_classes, backbone=args.backbone, base_width=args.base_width)
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = export_onnx(model, Path(folder) / "pspnet.onnx")
        export_s = time.perf_counter() - start
        megabytes = path.stat().st_size / 2**20
        runner = OnnxRuntimeModel(path)
    rows = [
        "| input | max rel err | argmax agreement | eager median (s) | ORT median (s) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        error, agreement, eager_s, onnx_s = compare(model, runner, size, args.runs, args.warmup)
        rows.append(
            f"| 1x3x{size[0]}x{size[1]} | {error:.1e} | {100 * agreement:.3f}% | {eager_s:.3f} | "
            f"{onnx_s:.3f} | {eager_s / onnx_s:.2f}x |"
        )
        print(rows[-1], flush=True)
    name = f"PSPNet-{args.backbone}" + (
        f" (width {args.base_width})" if args.base_width != 64 else ""
    )
    setup = (
        f"{name}, {args.num_classes} classes, random weights: exported once (TorchScript "
        f"exporter, opset {DEFAULT_OPSET}, traced at 473x473, {export_s:.0f} s, "
        f"{megabytes:.0f} MiB) with dynamic batch, height and width, then run in onnxruntime "
        f"{onnxruntime.__version__} (CPUExecutionProvider, all graph optimisations) against "
        f"eager fp32 `torch.inference_mode` (torch {torch.__version__}). CPU: {cpu_model()}; "
        f"medians of {args.runs} runs after {args.warmup} warm-up, batch 1."
    )
    table = "\n".join(rows)
    body = f"{setup}\n\n{table}\n\nCommand: `{command_line()}`"
    if not args.no_write:
        write_section("ONNX export (dynamic size)", body)


if __name__ == "__main__":
    main()
