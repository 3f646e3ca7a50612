"""Training on one GPU: throughput of our loop's best settings against eager fp32, and accuracy.

    python -m benchmarks.gpu.training speed --root .gpu/camvid            # images/s, memory
    python -m benchmarks.gpu.training accuracy --root .gpu/camvid --iterations 300
    python -m benchmarks.gpu.training speed --smoke --no-write            # CPU, tiny: a check

``speed`` runs ``pspnet.engine.train.train`` (the real loop: loader workers, augmentation,
poly LR, the auxiliary loss) on CamVid for ``--warmup`` untimed and ``--steps`` timed
iterations per setting, PSPNet-ResNet50 at crop 473, batch 16 (the paper's), and reports
images/s over the timed steps and the peak GPU memory. ``accuracy`` trains the same network
for ``--iterations`` steps in fp32 and in bf16 (same seed, data order and schedule) and
reports each run's CamVid val mIoU; the fp32 run's checkpoint feeds the inference benchmark's
CamVid agreement (``benchmarks.gpu.inference --checkpoint``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import command_line, write_section
from pspnet.config import load_train_config
from pspnet.engine.train import train

# name: (title, overrides of the run's config). PyTorch's defaults run fp32 convolutions in
# TF32 on GPUs that have it, which is what semseg and mmsegmentation get.
BEST = {"precision": "bf16", "channels_last": "true", "optim.fused": "true"}
SETTINGS = {
    "fp32": ("eager fp32 (PyTorch defaults)", {}),
    "bf16": ("bf16 autocast, channels_last, fused SGD", BEST),
    "compile": (
        "bf16 autocast, channels_last, fused SGD, torch.compile",
        {**BEST, "compile": "true"},
    ),
}


def base_overrides(args: argparse.Namespace, iterations: int) -> dict[str, object]:
    """The network, data and length shared by every setting."""
    values = {
        "model.backbone": "resnet50",
        "data.root": args.root,
        "data.crop_size": f"[{args.crop},{args.crop}]",
        "data.workers": args.workers,
        "batch_size": args.batch,
        "iterations": iterations,
        "checkpoint_every": iterations,
        "log_every": iterations,
        "evaluation.mode": "whole",
        "evaluation.flip": "false",
        "device": args.device,
    }
    if args.smoke:
        values.update({"model.backbone": "resnet18", "model.base_width": 4})
    return values


def config_for(overrides: dict[str, object]):
    return load_train_config(None, [f"{k}={v}" for k, v in overrides.items()])


def timed_run(overrides: dict[str, object], folder: Path, warmup: int) -> dict[str, float]:
    """Train; images/s over the steps after ``warmup``, wall seconds, peak GPU memory."""
    config = config_for(overrides)
    stamps: dict[int, float] = {}

    def on_event(event: dict) -> None:
        if event["kind"] == "step":
            stamps[event["iteration"]] = time.perf_counter()

    cuda = torch.device(config.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(config, folder, resume=False, callback=on_event)
    last = max(stamps)
    seconds = stamps[last] - stamps[warmup]
    return {
        "images_per_s": (last - warmup) * config.batch_size / seconds,
        "wall_s": time.perf_counter() - start,
        "memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "miou": result.final_metrics.get("miou", float("nan")),
    }


def speed(args: argparse.Namespace, work: Path, publish) -> str:
    """Each setting's row; ``publish(body)`` after every row (a timeout keeps what was done)."""
    rows, reference = [], None
    for name in args.settings:
        title, changes = SETTINGS[name]
        overrides = {**base_overrides(args, args.warmup + args.steps), "val_limit": 1, **changes}
        row = timed_run(overrides, work / f"speed{len(rows)}", args.warmup)
        reference = reference or row["images_per_s"]
        line = (
            f"| {title} | {row['images_per_s']:.1f} | {row['images_per_s'] / reference:.2f}x | "
            f"{row['memory_gib']:.1f} | {row['wall_s']:.0f} |"
        )
        add_row(rows, line, lambda: publish(speed_body(args, rows)))
    return speed_body(args, rows)


def add_row(rows: list[str], line: str, publish) -> None:
    """Keep, print and publish a finished row at once."""
    rows.append(line)
    print(line, flush=True)
    publish()


def speed_body(args: argparse.Namespace, rows: list[str]) -> str:
    network = "PSPNet-resnet18 (width 4)" if args.smoke else "PSPNet-resnet50"
    return (
        f"{device_line(args.device)}. {network}, CamVid, crop {args.crop}, batch {args.batch}, "
        f"{args.workers} loader workers; images/s over {args.steps} steps after {args.warmup} "
        "warm-up steps (compile happens in those), the whole loop (data, augmentation, loss, "
        "SGD, logging). Peak memory: `torch.cuda.max_memory_allocated`. Wall: the run including "
        "model build, warm-up and one validation image.\n\n"
        "| setting | images/s | vs eager fp32 | peak GPU memory (GiB) | wall (s) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + f"\n\nCommand: `{command_line()}`"
    )


def accuracy(args: argparse.Namespace, work: Path, publish) -> str:
    """The fp32 and bf16 runs' rows; ``publish(body)`` after each."""
    rows = []
    for title, precision in (("fp32 (PyTorch defaults)", "fp32"), ("bf16 autocast", "bf16")):
        overrides = {
            **base_overrides(args, args.iterations),
            "precision": precision,
            "channels_last": "true",
            "optim.fused": "true",
        }
        folder = Path(args.keep) / precision if args.keep else work / precision
        row = timed_run(overrides, folder, min(args.warmup, args.iterations - 1))
        line = (
            f"| {title} | {args.iterations} | {100 * row['miou']:.2f} | "
            f"{row['images_per_s']:.1f} | {row['wall_s']:.0f} |"
        )
        add_row(rows, line, lambda: publish(accuracy_body(args, rows)))
    return accuracy_body(args, rows)


def accuracy_body(args: argparse.Namespace, rows: list[str]) -> str:
    return (
        f"{device_line(args.device)}. Same network, seed, data order and schedule, trained "
        f"from scratch for {args.iterations} iterations (crop {args.crop}, batch {args.batch}, "
        "channels_last, fused SGD); CamVid val mIoU (whole image, single scale) at the end.\n\n"
        "| run | iterations | val mIoU (%) | images/s | wall (s) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nCommand: `{command_line()}`"
    )


def device_line(device: str) -> str:
    if torch.device(device).type != "cuda":
        return f"Device: CPU; torch {torch.__version__}"
    name = torch.cuda.get_device_name(device)
    return f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "accuracy"])
    parser.add_argument("--root", default="../shared/data/camvid")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--crop", type=int, default=473)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (at least 1)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=300, help="accuracy: run length")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--keep", help="accuracy: keep the runs here (DIR/fp32, DIR/bf16)")
    parser.add_argument("--smoke", action="store_true", help="tiny network (a check on CPU)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    title = "GPU training throughput" if args.what == "speed" else "GPU training: bf16 accuracy"

    def publish(body: str) -> None:
        if not args.no_write:
            write_section(title, body)

    with tempfile.TemporaryDirectory() as work:
        body = (speed if args.what == "speed" else accuracy)(args, Path(work), publish)
    print(body)


if __name__ == "__main__":
    main()
