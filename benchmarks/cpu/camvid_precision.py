"""Accuracy of the fast paths on real data: CamVid val mIoU and argmax agreement vs fp32.

    python -m benchmarks.cpu.camvid_precision              # runs/camvid_pspnet/best.safetensors
    python -m benchmarks.cpu.camvid_precision --calibration 64 --no-write

Evaluates the trained CamVid model (benchmarks/cpu/camvid.py) with the same inference
settings through eager fp32 (reference), the exact fast path, bf16 and int8 ONNX
Runtime (static quantisation calibrated on training crops), and reports val mIoU, pixel
agreement of the argmax with the reference, and the time of the whole val pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import command_line, cpu_model, write_section
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.data.transforms import AugmentConfig, TrainTransform
from pspnet.engine.metrics import ConfusionMatrix
from pspnet.inference import Segmenter
from pspnet.inference.optimized.optimize import native_bf16, optimize
from pspnet.inference.protocol import probabilities
from pspnet.inference.settings import RuntimeSettings

PATHS = {  # title: the arguments of ``optimize`` (None: the plain eager model)
    "eager fp32 (reference)": None,
    "exact fast path (fp32, ONNX Runtime)": dict(precision="fp32", backend="onnx"),
    "bf16 (stem, layer1, pyramid sums, classifier fp32)": dict(precision="bf16", backend="eager"),
    "bf16 everywhere but the pyramid sums and classifier": dict(
        precision="bf16", backend="eager", fp32_stages=()
    ),
    "bf16, only the stem (and sums, classifier) fp32": dict(
        precision="bf16", backend="eager", fp32_stages=("stem",)
    ),
    "bf16, stem to layer2 (and sums, classifier) fp32": dict(
        precision="bf16", backend="eager", fp32_stages=("stem", "layer1", "layer2")
    ),
    "int8 ONNX Runtime": dict(precision="int8", backend="onnx"),
}

NEAR_TIE = 0.02


def calibration_crops(root: str, count: int, crop: int) -> list[torch.Tensor]:
    """``count`` augmented training crops, as the trainer sees them, in batches of one."""
    augment = AugmentConfig(crop_size=(crop, crop), scale=(0.35, 1.0))
    dataset = SegmentationDataset(root, "train", get_preset("camvid"), TrainTransform(augment))
    return [dataset[(i % len(dataset), i)][0][None] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("runs/camvid_pspnet/best.safetensors")
    )
    parser.add_argument("--root", default="../shared/data/camvid")
    parser.add_argument("--calibration", type=int, default=256, help="training crops for int8")
    parser.add_argument("--paths", nargs="+", default=None, help="substrings of path names")
    parser.add_argument("--section", default="CamVid: accuracy of the fast paths")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    paths = {
        title: choice
        for title, choice in PATHS.items()
        if choice is None or args.paths is None or any(s in title for s in args.paths)
    }

    segmenter = Segmenter.from_checkpoint(args.checkpoint, RuntimeSettings(precision="none"))
    model, inference = segmenter.model, segmenter.inference
    preset = get_preset("camvid")
    val = SegmentationDataset(args.root, "val", preset)
    int8 = any(choice and choice["precision"] == "int8" for choice in paths.values())
    calibration = calibration_crops(args.root, args.calibration, 192) if int8 else None
    reference: list[torch.Tensor] = []
    near_tie: list[torch.Tensor] = []  # pixels whose fp32 top-two probabilities differ < NEAR_TIE
    lines = [
        "| path | val mIoU (%) | pixel accuracy (%) | argmax agreement vs fp32 "
        "| disagreements at near-ties | val pass (s) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as work:
        for title, choice in paths.items():
            if choice is None:
                runner = model
            else:
                runner = optimize(model, calibration=calibration, work_dir=work, **choice)
            matrix = ConfusionMatrix(preset.num_classes)
            agree = total = tied = 0
            start = time.perf_counter()
            for index in range(len(val)):
                image, label = val[index]
                probs = probabilities(runner, image, inference)
                pred = probs.argmax(0)
                matrix.update(pred, label)
                if choice is None:
                    reference.append(pred)
                    top2 = probs.topk(2, dim=0).values
                    near_tie.append(top2[0] - top2[1] < NEAR_TIE)
                differ = pred != reference[index]
                agree += pred.numel() - differ.sum().item()
                tied += (differ & near_tie[index]).sum().item()
                total += pred.numel()
            seconds = time.perf_counter() - start
            metrics = matrix.compute()
            line = (
                f"| {title} | {100 * metrics.miou:.2f} | {100 * metrics.pixel_acc:.2f} | "
                f"{100 * agree / total:.3f}% | {tied / max(total - agree, 1):.0%} | {seconds:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
    table = "\n".join(lines)
    bf16 = "native" if native_bf16() else "emulated (no native bf16 on this CPU: slow here)"
    body = (
        f"CPU: {cpu_model()}; bf16 {bf16}. Model: {args.checkpoint} ({model.config.backbone}, "
        f"width {model.config.base_width}), inference {inference.mode} at long side "
        f"{inference.base_size}, {len(val)} val images. Near-ties: pixels whose top two fp32 "
        f"probabilities differ by less than {NEAR_TIE} "
        f"({100 * torch.cat([t.flatten() for t in near_tie]).float().mean().item():.2f}% "
        "of pixels)."
        + (f" int8 calibrated on {args.calibration} training crops of 192x192." if int8 else "")
        + f"\n\n{table}\n\nCommand: `{command_line()}`"
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
