"""Peak memory of ``pspnet predict`` on one large image: bounded by the image, not C x pixels.

Each row is one ``pspnet predict IMAGE --checkpoint CKPT --out DIR`` in its own process (the
checkpoint's default inference: 473 windows, flip), its peak RSS read from the process
itself. The model is a PSPNet-ResNet18 of width 8 with random weights (memory does not depend
on them), at two image sizes and two class counts; the bytes per output pixel are the growth
of the peak between the two sizes over the pixels added. ``--previous`` also runs the routine
of earlier versions (tests/inference/previous_routine.py: whole-image (C, H, W) buffers) at
one size, for comparison. Writes the "Memory of one large image" section of
docs/benchmarks.md unless ``--no-write``.

    python -m benchmarks.cpu.image_memory                      # 1500^2 and 3000^2, 19 and 150
    python -m benchmarks.cpu.image_memory --previous 3000      # + the earlier routine at 3000^2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.report import command_line, cpu_model, write_section

TITLE = "Memory of one large image"
MIB = 2**20
ROOT = Path(__file__).resolve().parents[2]


def child(args: argparse.Namespace) -> None:
    """In a fresh process: segment the image, print the peak RSS and the seconds as JSON."""
    import torch

    start = time.perf_counter()
    if args.how == "predict":
        from pspnet.cli import main

        status = main(["predict", args.image, "--checkpoint", args.checkpoint, "--out", args.out])
        assert status == 0, status
        from pspnet.inference import Segmenter
        from pspnet.inference.memory import image_memory

        segmenter = Segmenter.from_checkpoint(args.checkpoint)
        fixed, per_pixel = image_memory(segmenter.network, segmenter.inference)
        with Image.open(args.image) as picture:
            estimate = fixed + per_pixel * picture.width * picture.height
    else:  # the earlier routine, as predict ran it: probabilities, then their argmax
        sys.path.insert(0, str(ROOT / "tests" / "inference"))
        from previous_routine import predict_probs

        from pspnet.checkpoints import load_model
        from pspnet.config import InferenceConfig
        from pspnet.data.images import to_rgb
        from pspnet.data.transforms import normalize

        model = load_model(args.checkpoint)
        image = normalize(to_rgb(args.image))
        with torch.no_grad():
            predict_probs(model, image, model.config.num_classes, InferenceConfig()).argmax(0)
        estimate = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    seconds = time.perf_counter() - start
    print(json.dumps({"peak": peak, "seconds": seconds, "estimate": estimate}))


def run(how: str, image: Path, checkpoint: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.cpu.image_memory",
        "--child",
        how,
        str(image),
        str(checkpoint),
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_inputs(folder: Path, sizes: list[int], classes: list[int]) -> tuple[dict, dict]:
    import torch

    from pspnet.checkpoints import save_model
    from pspnet.models import PSPNet

    images, checkpoints = {}, {}
    rng = np.random.default_rng(0)
    for size in sizes:  # 16-pixel blocks: a small PNG of a large image, as the service fears
        blocks = rng.integers(0, 256, (size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
        images[size] = folder / f"image_{size}.png"
        Image.fromarray(blocks.repeat(16, 0).repeat(16, 1)[:size, :size]).save(images[size])
    for count in classes:
        torch.manual_seed(0)
        checkpoints[count] = folder / f"r18w8_{count}.safetensors"
        save_model(PSPNet(count, backbone="resnet18", base_width=8), checkpoints[count])
    return images, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1500, 3000])
    parser.add_argument("--classes", type=int, nargs=2, default=[19, 150])
    parser.add_argument("--previous", type=int, help="also the earlier routine at this size")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("HOW", "IMAGE", "CKPT", "OUT"))
    args = parser.parse_args()
    if args.child:
        how, image, checkpoint, out = args.child
        child(argparse.Namespace(how=how, image=image, checkpoint=checkpoint, out=out))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sizes = sorted({*args.sizes, *([args.previous] if args.previous else [])})
        images, checkpoints = make_inputs(folder, sizes, args.classes)
        for count in args.classes:
            peaks = {}
            for size in args.sizes:
                out = folder / f"out_{count}_{size}"  # fresh: predict skips finished images
                result = run("predict", images[size], checkpoints[count], out)
                peaks[size] = result["peak"]
                rows.append(("predict", count, size, result))
                print(rows[-1], flush=True)
            small, large = args.sizes
            per_pixel = (peaks[large] - peaks[small]) / (large**2 - small**2)
            rows.append(("per pixel", count, None, {"bytes": per_pixel}))
            if args.previous:
                result = run("previous", images[args.previous], checkpoints[count], folder / "x")
                rows.append(("earlier routine", count, args.previous, result))
                print(rows[-1], flush=True)
    table = render(rows)
    print(table)
    if not args.no_write:
        write_section(TITLE, body(table))


def render(rows: list) -> str:
    lines = [
        "| routine | classes | image | peak RSS | image's part, estimated | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for how, count, size, result in rows:
        if how == "per pixel":
            lines.append(
                f"| bytes per output pixel (growth between the sizes) | {count} | | "
                f"{result['bytes']:.1f} B | | |"
            )
            continue
        peak, seconds = result["peak"] / MIB, result["seconds"]
        estimate = "" if result["estimate"] is None else f"{result['estimate'] / MIB:,.0f} MiB"
        lines.append(
            f"| {how} | {count} | {size} x {size} | {peak:,.0f} MiB | {estimate} | {seconds:.1f} |"
        )
    return "\n".join(lines)


def body(table: str) -> str:
    return "\n".join(
        [
            "Peak RSS of one `pspnet predict` process on one square image (the checkpoint's",
            "default test: 473 x 473 windows, stride 2/3, flip), PSPNet-ResNet18 at width 8 with",
            "random weights. The inference routine keeps the network's logits at its output",
            "stride and builds labels and confidence a band of rows at a time, so the peak grows",
            "with the pixels by a few bytes each whatever the class count; the earlier routine",
            "held (C, H, W) float32 probabilities. The estimate is what `pspnet predict`",
            "and `serve` budget an image by (pspnet.inference.memory.image_memory), beyond the",
            "process itself (Python, torch and the model, a few hundred MiB).",
            f"CPU: {cpu_model()}.",
            "",
            f"    {command_line()}",
            "",
            table,
        ]
    )


if __name__ == "__main__":
    main()
