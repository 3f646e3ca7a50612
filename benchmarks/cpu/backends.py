"""``pspnet benchmark`` on the paper's two test shapes and on a trained CamVid model, this CPU.

Each model is one ``pspnet benchmark`` run (:func:`pspnet.benchmark.run_benchmark`): every
path this machine can run, timed in turn in one process, with semseg's own network as the
reference of the speed goals (an exact path >= 1.5x semseg's eager forward, bf16 >= 3x) and the
chip's fp32 probes beside each path. PSPNet-ResNet50 with 150 classes at 473x473 (ADE20K's
test shape) and PSPNet-ResNet101 with 19 classes at 713x713 (Cityscapes') are random weights
with trained-like BatchNorm statistics (speed does not depend on the values; agreement is
against the plain model on synthetic scenes, and int8, which needs calibration images, is left
to the trained model). ``--camvid CHECKPOINT --data ROOT`` adds the CamVid model scored on the
val split, every path's mIoU beside its speed, int8 calibrated on the train split.
Writes the "Every inference path, measured here" section of docs/benchmarks.md.

    python -m benchmarks.cpu.backends --camvid runs/camvid/best.safetensors --data data/camvid
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from benchmarks.harness import trained_like
from benchmarks.report import command_line, cpu_model, write_section
from pspnet.benchmark import BenchmarkSettings, run_benchmark
from pspnet.checkpoints import save_model
from pspnet.models import PSPNet

TITLE = "Every inference path, measured here"


class Shape(NamedTuple):
    backbone: str
    classes: int
    size: int
    dataset: str
    base_width: int = 64


SHAPES = {
    "pspnet_r50_150": Shape("resnet50", 150, 473, "ade20k"),
    "pspnet_r101_19": Shape("resnet101", 19, 713, "cityscapes"),
}


def shape_checkpoint(name: str, folder: Path) -> Path:
    """A checkpoint of random weights with trained-like BatchNorm for one of :data:`SHAPES`."""
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = PSPNet(shape.classes, backbone=shape.backbone, base_width=shape.base_width)
    path = folder / f"{name}.safetensors"
    save_model(trained_like(model), path, {"dataset": shape.dataset})
    return path


def report_text(settings: BenchmarkSettings, label: str) -> str:
    """One model's table, its heading demoted under the section."""
    print(f"{label}: measuring every path", flush=True)
    report = run_benchmark(settings, _progress)
    heading = f"# pspnet benchmark: {settings.checkpoint}\n"
    text = report.to_markdown().replace(heading, "")
    print(text, flush=True)
    return f"**{label}**\n{text}"


def _progress(event: dict) -> None:
    if event["kind"] in ("build", "probe", "time"):
        print(f"  {event['kind']} {event.get('path', '')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each path")
    parser.add_argument("--paths", nargs="*", default=[], help="as pspnet benchmark --paths")
    parser.add_argument("--camvid", type=Path, help="a trained CamVid checkpoint")
    parser.add_argument("--data", type=Path, help="the CamVid root (with --camvid)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if (args.camvid is None) != (args.data is None):
        parser.error("--camvid and --data go together")

    paths = tuple(args.paths)
    parts = []
    with tempfile.TemporaryDirectory(prefix="pspnet-backends-") as folder:
        for name in args.shapes:
            shape = SHAPES[name]
            checkpoint = shape_checkpoint(name, Path(folder))
            settings = BenchmarkSettings(
                checkpoint=str(checkpoint), size=shape.size, runs=args.runs, paths=paths
            )
            label = (
                f"PSPNet-{shape.backbone}, {shape.classes} classes, {shape.size}x{shape.size}, "
                "random weights"
            )
            parts.append(report_text(settings, label))
    if args.camvid is not None:
        settings = BenchmarkSettings(
            checkpoint=str(args.camvid),
            data=args.data,
            dataset="camvid",
            runs=args.runs,
            paths=paths,
        )
        parts.append(report_text(settings, f"CamVid model {args.camvid.name}, val split"))
    body = (
        f"CPU: {cpu_model()}; torch {torch.__version__}. Each table is one `pspnet benchmark` "
        "run: every path in one process, timed in turn; semseg's network is the reference of "
        "the goals (an exact path >= 1.5x its eager forward, bf16 >= 3x), and the chip's fp32 "
        "probes show how far a path is from what the chip does.\n\n"
        + "\n".join(parts)
        + f"\nCommand: `{command_line()}`"
    )
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
