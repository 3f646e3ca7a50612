"""Eval-mode latency and FLOPs of PSPNet on this CPU: the baseline for later speed work.

python -m benchmarks.cpu.latency                       # PSPNet-ResNet50, 150 classes, 473x473
python -m benchmarks.cpu.latency --backbone resnet101 --num-classes 19 --size 713
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch

from benchmarks.harness import measure
from benchmarks.report import command_line, cpu_model, write_section
from pspnet.engine.summary import summarize
from pspnet.models import PSPNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = PSPNet(args.num_classes, backbone=args.backbone).eval()
    images = torch.randn(1, 3, args.size, args.size)
    times = measure(partial(model, images), args.runs, args.warmup)
    test_parts = [p for p in summarize(model.config, args.size, args.size) if p.name != "aux head"]
    gflops = sum(p.gflops for p in test_parts)
    median = statistics.median(times)
    rows = [
        "| model | input | GFLOPs | median latency (s) | min / max (s) | GFLOP/s |",
        "|---|---|---|---|---|---|",
        f"| PSPNet-{args.backbone}, {args.num_classes} classes, eager fp32 | "
        f"1x3x{args.size}x{args.size} | {gflops:.1f} | {median:.3f} | "
        f"{min(times):.3f} / {max(times):.3f} | {gflops / median:.1f} |",
    ]
    table = "\n".join(rows)
    print(table)
    body = (
        f"CPU: {cpu_model()}; torch {torch.__version__}; {args.runs} timed runs after "
        f"{args.warmup} warm-up runs, batch 1, `torch.inference_mode`.\n\n{table}\n\n"
        f"Command: `{command_line()}`"
    )
    if not args.no_write:
        write_section(f"Eager latency: PSPNet-{args.backbone} at {args.size}x{args.size}", body)


if __name__ == "__main__":
    main()
