"""Images/s of the whole training input pipeline: read, augment, collate, as the trainer runs it.

    python -m benchmarks.cpu.dataloader [--root ../shared/data/camvid] [--batches 20]

Loads CamVid's train split through ``SegmentationDataset`` + ``TrainTransform`` with the
trainer's seeded batch sampler and a torch DataLoader, skips the warm-up batches (worker
start-up), times the rest, prints a markdown table and writes it to the "Data loading"
section of docs/benchmarks.md (unless ``--no-write``), leaving the other sections as they are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from torch.utils.data import DataLoader

from benchmarks.report import command_line, cpu_model, write_section
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.data.sampling import TrainBatches
from pspnet.data.transforms import AugmentConfig, TrainTransform

REPO = Path(__file__).resolve().parents[2]
TITLE = "Data loading"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default="../shared/data/camvid",
        help="CamVid folder, relative to the repository root unless absolute",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=473)
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing starts")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> float:
    """Images per second over ``args.batches`` batches after ``args.warmup``."""
    root = REPO / args.root
    augment = AugmentConfig(crop_size=(args.crop, args.crop))
    dataset = SegmentationDataset(root, "train", get_preset("camvid"), TrainTransform(augment))
    total = args.warmup + args.batches
    batches = TrainBatches(len(dataset), args.batch_size, total, seed=0)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=args.workers)
    start = 0.0
    for received, _ in enumerate(loader, start=1):
        if received == args.warmup:  # the clock covers exactly the next args.batches batches
            start = time.perf_counter()
    return args.batches * args.batch_size / (time.perf_counter() - start)


def markdown(args: argparse.Namespace, images_per_s: float) -> str:
    """The section's body: what was measured, the table and the command that made it."""
    return "\n".join(
        [
            "The whole training input pipeline (decode, scale, rotate, blur, mirror, pad, crop,",
            "normalise, collate) on CamVid train (480x360 PNGs), with the trainer's seeded",
            "sampler.",
            "On a CPU shared with other jobs, repeated runs can differ by up to 2x.",
            "",
            "| CPU | workers | crop | batch | images/s |",
            "|---|---|---|---|---|",
            f"| {cpu_model()} | {args.workers} | {args.crop} | {args.batch_size} "
            f"| {images_per_s:.1f} |",
            "",
            f"Command: `{command_line()}` ({args.batches} timed batches after {args.warmup}"
            " warm-up).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.warmup < 1 or args.batches < 1:
        raise SystemExit("--warmup and --batches must be at least 1")
    images_per_s = measure(args)
    body = markdown(args, images_per_s)
    print(f"## {TITLE}\n\n{body}")
    if not args.no_write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
