"""CamVid on one GPU: pack the data for the GPU machine, then tabulate what its run wrote.

    python -m benchmarks.gpu.camvid pack ../shared/data/camvid .gpu/camvid
    (on the GPU machine)  bash benchmarks/gpu/camvid.sh .gpu/camvid OUT 3600 420
    python -m benchmarks.gpu.camvid report OUT

``pack`` makes a small copy to move to the GPU machine: the images re-encoded as JPEG
(``--quality``, default 95), the labels lossless PNGs as they were; it refuses a copy larger
than ``--max-mib`` (default 64).
``report`` copies the run's metrics.jsonl into docs/results/ and writes the "CamVid on one GPU"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

import cv2

from benchmarks.report import write_section
from pspnet.config import load_train_config
from pspnet.data.presets import PRESETS

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
CONFIG = "configs/camvid_pspnet_r50_gpu.yaml"
QUALITY = 95  # JPEG quality of the packed images
MAX_MIB = 64  # the largest packed copy


def pack(source: Path, dest: Path, quality: int = QUALITY, max_mib: float = MAX_MIB) -> float:
    """Copy a CamVid root with JPEG images and the list files rewritten to point at them.

    Returns the copy's size in MiB; raises SystemExit, the copy left in place, if it exceeds
    ``max_mib``.
    """
    for split in ("train", "val"):
        lines = []
        for line in (source / f"{split}.txt").read_text().split("\n"):
            if not line.strip():
                continue
            image, label = line.split()
            jpeg = str(Path(image).with_suffix(".jpg"))
            (dest / jpeg).parent.mkdir(parents=True, exist_ok=True)
            (dest / label).parent.mkdir(parents=True, exist_ok=True)
            pixels = cv2.imread(str(source / image), cv2.IMREAD_COLOR)
            cv2.imwrite(str(dest / jpeg), pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
            shutil.copyfile(source / label, dest / label)
            lines.append(f"{jpeg} {label}")
        (dest / f"{split}.txt").write_text("\n".join(lines) + "\n")
    mib = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    if mib > max_mib:
        raise SystemExit(
            f"{dest} holds {mib:.1f} MiB, over --max-mib {max_mib:g}: pack again with a lower "
            f"--quality than {quality}, or raise --max-mib"
        )
    return mib


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line."""
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def report(out: Path, quality: int = QUALITY) -> None:
    """Tabulate the bf16 run and the fp16 check found in the GPU run's output folder."""
    gpu, torch_version = (out / "gpu.txt").read_text().split("\n")[:2]
    rows = read_jsonl(out / "bf16_metrics.jsonl")
    steps = [row for row in rows if "images_per_s" in row]
    final = [row for row in rows if "val" in row][-1]
    config = load_train_config(CONFIG)
    (crop_h, crop_w), batch = config.data.crop_size, config.batch_size
    iterations = final["iteration"]
    speed = statistics.median(row["images_per_s"] for row in steps[len(steps) // 10 :])
    memory = max(row["gpu_memory_gb"] for row in steps)
    elapsed = re.findall(r"\| \d+/\d+ \[(\d+:\d+)<", (out / "bf16.log").read_text())[-1]
    fp16 = read_jsonl(out / "fp16_metrics.jsonl")
    fp16_losses = [row["loss"] for row in fp16 if "loss" in row]

    RESULTS.mkdir(parents=True, exist_ok=True)
    kept = RESULTS / f"gpu_camvid_r50_bf16_{iterations}.jsonl"
    shutil.copyfile(out / "bf16_metrics.jsonl", kept)

    names = PRESETS["camvid"].class_names
    val = final["val"]
    per_class = "\n".join(
        f"| {name} | {iou * 100:.1f} |" for name, iou in zip(names, val["iou"], strict=True)
    )
    curve = " -> ".join(
        f"{row['val']['miou'] * 100:.2f} ({row['iteration']})" for row in rows if "val" in row
    )
    body = f"""
GPU: {gpu}, {torch_version}. `{CONFIG}`: PSPNet-ResNet50 (deep stem), trained from scratch
(no ImageNet weights can be fetched), {iterations} iterations of batch {batch},
crop {crop_h}x{crop_w} from the full-resolution 480x360 images (scale 0.5-2.0, rotation,
blur, mirror), bf16 autocast, channels_last, 12 loader workers; validated on the 101 val
images, whole image, single scale. The images were JPEG quality {quality} copies (`pack`
below); labels are the original PNGs.

| | value |
|---|---|
| val mIoU (%) | **{val["miou"] * 100:.2f}** |
| mean class accuracy (%) | {val["mean_acc"] * 100:.2f} |
| pixel accuracy (%) | {val["pixel_acc"] * 100:.2f} |
| training images/s (median after the first 10%) | {speed:.1f} |
| time per iteration (s) | {batch / speed:.4f} |
| wall time, validation included (min:s) | {elapsed} |
| peak GPU memory allocated (GB) | {memory:.2f} |
| val mIoU along the run (iteration) | {curve} |

| class | IoU (%) |
|---|---|
{per_class}

fp16 with the gradient scaler: a 20-iteration check in the same script ran with finite losses
({fp16_losses[0]:.3f} -> {fp16_losses[-1]:.3f}). The whole log is in
`docs/results/{kept.name}`.

Commands: `python -m benchmarks.gpu.camvid pack ../shared/data/camvid .gpu/camvid`, on the GPU
`bash benchmarks/gpu/camvid.sh .gpu/camvid OUT {iterations} 420`, then
`python -m benchmarks.gpu.camvid report OUT`.
"""
    write_section("CamVid on one GPU: PSPNet-ResNet50, bf16", body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="copy CamVid with JPEG images for the GPU machine")
    packing.add_argument("source", type=Path)
    packing.add_argument("dest", type=Path)
    packing.add_argument("--quality", type=int, default=QUALITY, help="JPEG quality")
    packing.add_argument("--max-mib", type=float, default=MAX_MIB, help="largest copy allowed")
    reporting = verbs.add_parser("report", help="tabulate the GPU run's output folder")
    reporting.add_argument("out", type=Path)
    reporting.add_argument("--quality", type=int, default=QUALITY, help="as packed")
    args = parser.parse_args()
    if args.verb == "pack":
        print(f"{args.dest}: {pack(args.source, args.dest, args.quality, args.max_mib):.1f} MiB")
    else:
        report(args.out, args.quality)


if __name__ == "__main__":
    main()
