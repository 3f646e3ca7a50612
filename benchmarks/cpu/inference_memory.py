"""Peak memory and time of multi-scale sliding-window inference (the inference routine).

The defaults are the paper's Cityscapes test: one 2048 x 1024 image, scales 0.5 .. 1.75 of
base size 2048, mirror flip, 713 x 713 windows, PSPNet-ResNet50 with 19 classes (random
weights; memory and time do not depend on them). The result goes into the "Sliding-window
memory" section of docs/benchmarks.md (unless ``--no-write``); other sections are kept.

    python -m benchmarks.cpu.inference_memory                   # the full run (heavy on CPU)
    python -m benchmarks.cpu.inference_memory --backbone resnet18 --base-width 8 --scales 1.0
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from benchmarks.report import command_line, cpu_model, write_section
from pspnet.config import InferenceConfig
from pspnet.inference.protocol import Network, scaled_size, segment_tensor
from pspnet.models import PSPNet

TITLE = "Sliding-window memory"
MIB = 1024**2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    )
    parser.add_argument("--base-size", type=int, default=2048)
    parser.add_argument("--crop", type=int, default=713)
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--window-batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", help="run pspnet.inference.optimized.optimize's path (fp32, bf16, int8)"
    )
    parser.add_argument("--backend", help="with --precision: eager, compile or onnx")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    # ru_maxrss is the process's high-water mark, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def buffer_sizes(args: argparse.Namespace) -> dict[str, float]:
    """What the routine holds at most (one scale) and what keeping all scales would cost."""
    classes, floats = args.num_classes, 4
    output = classes * args.height * args.width * floats
    largest = 0
    for scale in args.scales:
        h, w = scaled_size(args.height, args.width, round(scale * args.base_size))
        largest = max(largest, classes * max(h, args.crop) * max(w, args.crop) * floats)
    return {
        "output buffer (C, H, W)": output / MIB,
        "largest one-scale buffer (C, h, w)": largest / MIB,
        "every scale at full size (avoided)": len(args.scales) * output / MIB,
    }


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = PSPNet(args.num_classes, backbone=args.backbone, base_width=args.base_width)
    model = model.eval().to(device)
    path = "eager model"
    if args.precision or args.backend:
        from pspnet.inference.optimized.optimize import optimize

        model = optimize(model, args.precision or "auto", args.backend or "auto")
        path = f"optimize: {model.precision}, {model.backend}"
    image = torch.randn(3, args.height, args.width, device=device)
    config = InferenceConfig(
        crop_size=(args.crop, args.crop),
        scales=tuple(args.scales),
        base_size=args.base_size,
        flip=not args.no_flip,
        window_batch=args.window_batch,
    )
    windows = []
    rss_before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    raw = segment_tensor(Network.of(model, device), image, config, lambda d, t: windows.append(t))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    rss_after = peak_rss_mib()
    assert raw.labels.shape == (args.height, args.width)
    rows = [
        (
            "model",
            f"PSPNet-{args.backbone}, base width {args.base_width}, {args.num_classes} classes",
        ),
        ("inference path", path),
        ("image", f"{args.width} x {args.height}"),
        ("scales x base size", f"{', '.join(map(str, args.scales))} x {args.base_size}"),
        ("crop, flip, window batch", f"{args.crop}, {config.flip}, {args.window_batch}"),
        ("windows (mirror in the same pass)", str(windows[-1])),
        ("device, torch threads", f"{device}, {torch.get_num_threads()}"),
        ("wall time", f"{seconds:.1f} s"),
        ("peak RSS before inference", f"{rss_before:.0f} MiB"),
        ("peak RSS after inference", f"{rss_after:.0f} MiB"),
        ("peak RSS added by inference", f"{rss_after - rss_before:.0f} MiB"),
    ]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / MIB
        rows.append(("peak CUDA memory allocated", f"{peak:.0f} MiB"))
    rows += [(name, f"{size:.0f} MiB") for name, size in buffer_sizes(args).items()]
    return rows


def section(rows: list[tuple[str, str]]) -> str:
    """The section's body: what was measured, the machine, the command and the table."""
    lines = [
        "Peak memory of the inference routine over a multi-scale, flipped, sliding-window test: it",
        "keeps one (C, H, W) output and one scale's probabilities at a time, never every scale.",
        f"CPU: {cpu_model()}, torch {torch.__version__}.",
        "",
        f"    {command_line()}",
        "",
        "| quantity | value |",
        "|:---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = run(args)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not args.no_write:
        write_section(TITLE, section(rows))
        print(f"wrote the {TITLE!r} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
