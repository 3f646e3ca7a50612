"""Images/s of the whole training input pipeline: read, augment, collate, as the trainer runs it.

    python benchmarks/dataloader.py [--root ../shared/data/camvid] [--batches 20]

Loads CamVid's train split through ``SegmentationDataset`` + ``TrainTransform`` with the
trainer's seeded batch sampler and a torch DataLoader, skips the warm-up batches (worker
start-up), times the rest, prints a markdown table and writes it to the "## Data loading"
section of docs/benchmarks.md, leaving the other sections as they are.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from torch.utils.data import DataLoader

from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.data.sampling import TrainBatches
from pspnet.data.transforms import AugmentConfig, TrainTransform

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Data loading"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/camvid", help="CamVid folder, "
                        "relative to the repository root unless absolute")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=473)
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing starts")
    parser.add_argument("--docs", default="docs/benchmarks.md", help="markdown file to update")
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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def markdown(args: argparse.Namespace, images_per_s: float, command: str) -> str:
    return "\n".join([
        SECTION,
        "",
        "The whole training input pipeline (decode, scale, rotate, blur, mirror, pad, crop,",
        "normalise, collate) on CamVid train (480x360 PNGs), with the trainer's seeded sampler.",
        "On a CPU shared with other jobs, repeated runs can differ by up to 2x.",
        "",
        "| CPU | workers | crop | batch | images/s |",
        "|---|---|---|---|---|",
        f"| {cpu_model()} | {args.workers} | {args.crop} | {args.batch_size} "
        f"| {images_per_s:.1f} |",
        "",
        f"Command: `{command}` ({args.batches} timed batches after {args.warmup} warm-up).",
        "",
    ])  # fmt: skip


def update_section(path: Path, section: str) -> None:
    """Replace the ``## `` section with the same heading, or append it; keep the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    lines = text.splitlines(keepends=True)
    heading = section.splitlines()[0]
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    begin = next((i for i in starts if lines[i].rstrip() == heading), None)
    if begin is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in starts if i > begin), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:begin]) + section + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.warmup < 1 or args.batches < 1:
        raise SystemExit("--warmup and --batches must be at least 1")
    images_per_s = measure(args)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/dataloader.py", *given])
    section = markdown(args, images_per_s, command)
    print(section)
    update_section(REPO / args.docs, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
