"""Throughput of `pspnet predict` on many images: old serial loop, overlapped loop, 2 processes.

python -m benchmarks.cpu.batch_inference        # 24 CamVid val images (480x360), 4 at 2048x1024
python -m benchmarks.cpu.batch_inference --images 60 --large 4

Each configuration runs in its own process (peak RSS is that process's, or the largest rank's),
one after another with nothing else running. The model is PSPNet-ResNet18 (width 64, 11
classes, random weights: speed does not depend on them) on the exact fast CPU path
(`--precision fp32 --backend eager`), single scale without flip; CamVid-size images run
whole, the 2048x1024 ones by 713x713 sliding windows (6 windows each). "1 process" uses
every core for the network; "2 processes" is `torchrun --nproc_per_node 2` with one thread
each (torchrun's OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.report import command_line, cpu_model, write_section

ROOT = Path(__file__).resolve().parents[2]
CAMVID = ROOT.parent / "shared" / "data" / "camvid" / "val"


def serial_loop(checkpoint: str, files: list[str], out: str, options: dict) -> None:
    """The loop `pspnet predict` ran before: read, segment, encode and write, one thread."""
    from pspnet.data.images import to_rgb
    from pspnet.inference import Segmenter
    from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
    from pspnet.visualize import colorize, label_png, overlay

    runtime = RuntimeSettings(precision="fp32", backend="eager")
    segmenter = Segmenter.from_checkpoint(checkpoint, runtime, InferenceOverrides(**options))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, files):
        image = to_rgb(path)
        label = segmenter.probs(image).argmax(0)
        label_png(label, segmenter.palette).save(out / f"{path.stem}_label.png")
        Image.fromarray(colorize(label, segmenter.palette)).save(out / f"{path.stem}_color.png")
        picture = overlay(image, label, segmenter.palette, class_names=segmenter.class_names)
        picture.save(out / f"{path.stem}_overlay.png")


def run_one(config: str, checkpoint: str, inputs: Path, out: Path, options: dict) -> dict:
    """One configuration in a fresh process: seconds and peak RSS (MiB) of its largest process."""
    flags = ["--precision", "fp32", "--backend", "eager", "--mode", options["mode"], "--no-flip"]
    if options["mode"] == "slide":
        flags += ["--crop", "713", "713"]
    predict = [
        "pspnet",
        "predict",
        str(inputs),
        "--checkpoint",
        checkpoint,
        "--out",
        str(out),
        *flags,
    ]
    if config == "serial":
        files = sorted(inputs.glob("*.png"))
        work = (
            f"serial_loop({checkpoint!r}, {[str(f) for f in files]!r}, {str(out)!r}, {options!r})"
        )
        body = f"from benchmarks.cpu.batch_inference import serial_loop; {work}"
    else:
        if config == "torchrun":
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            argv = [
                "torch.distributed.run",
                "--nproc_per_node=2",
                f"--master_port={port}",
                "-m",
                *predict,
            ]
        else:
            argv = predict
        body = (
            f"import runpy; sys.argv = {argv!r}; "
            f"runpy.run_module({argv[0]!r}, run_name='__main__', alter_sys=True)"
        )
    script = (
        "import json, resource, sys, time\n"
        "start = time.perf_counter()\n"
        f"try:\n    {body}\nexcept SystemExit:\n    pass\n"
        "peak = max(resource.getrusage(w).ru_maxrss for w in "
        "(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'rss': peak / 1024}))\n"
    )
    threads = {"PSPNET_IO_THREADS": "2"} if config == "overlapped" else {}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, **threads},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling_on_paper(rows: list[tuple]) -> list[str]:
    """Expected time for a large collection on N such machines, from the measured rates.

    Each machine runs the fastest measured configuration; shards are disjoint, so the only
    costs beyond the images are each process's start-up and, for eval, one all-reduce of the
    C x C confusion matrix (a few kB): nothing grows with N but the rendezvous.
    """
    lines = ["Expected on N machines like this one (on paper, from the rows above):", ""]
    lines += [
        "| images | best steady rate per machine | 100,000 images on N = 1 / 10 / 100 |",
        "|---|---:|---|",
    ]
    for title in dict.fromkeys(row[0] for row in rows):
        best = max((row for row in rows if row[0] == title), key=lambda row: row[3])
        rate = best[3]
        hours = [100_000 / (rate * n) / 3600 for n in (1, 10, 100)]
        lines.append(
            f"| {title} | {rate:.2f} img/s ({best[1]}) | "
            + " / ".join(f"{h:.1f} h" for h in hours)
            + " |"
        )
    lines += ["", "Plus each process's start-up, a few seconds once per job (whole-command rows)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="CamVid val images")
    parser.add_argument("--large", type=int, default=4, help="2048x1024 images")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    from pspnet.checkpoints import save_model
    from pspnet.models import PSPNet

    work = Path(tempfile.mkdtemp(prefix="pspnet-batch-bench-"))
    torch.manual_seed(0)
    checkpoint = work / "model.safetensors"
    save_model(PSPNet(11, backbone="resnet18").eval(), checkpoint)
    small, large = work / "camvid", work / "large"
    small.mkdir()
    large.mkdir()
    for path in sorted(CAMVID.glob("*.png"))[: args.images]:
        shutil.copy(path, small / path.name)
    rng = np.random.default_rng(0)
    for i in range(args.large):
        pixels = rng.integers(0, 255, (1024, 2048, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(large / f"large_{i}.png")

    rows = []
    for title, inputs, count, options in (
        ("CamVid 480x360, whole image", small, args.images, {"mode": "whole", "flip": False}),
        (
            "2048x1024, 713 sliding windows",
            large,
            args.large,
            {"mode": "slide", "crop_size": (713, 713), "flip": False},
        ),
    ):
        for config, label in (
            ("serial", "old serial loop, 1 process"),
            ("predict", "predict, 1 process (no I/O threads: no spare core)"),
            ("overlapped", "predict with 2 I/O threads forced, 1 process"),
            ("torchrun", "predict, 2 processes (torchrun), 1 thread each"),
        ):
            out = work / f"out-{config}-{inputs.name}"
            result = run_one(config, str(checkpoint), inputs, out, options)
            # The same command on one image per process: start-up, loading, one image each.
            processes = 2 if config == "torchrun" else 1
            first = work / f"first-{config}-{inputs.name}"
            first.mkdir()
            for path in sorted(inputs.glob("*.png"))[:processes]:
                shutil.copy(path, first)
            alone = run_one(config, str(checkpoint), first, work / f"out1-{config}", options)
            steady = (count - processes) / max(result["seconds"] - alone["seconds"], 1e-9)
            rate = count / result["seconds"]
            rows.append((title, label, rate, steady, result["seconds"], result["rss"]))
            print(f"{title} | {label}: {rate:.2f} img/s ({steady:.2f} steady)", flush=True)
    lines = [
        f"CPU: {cpu_model()} ({os.cpu_count()} cores). PSPNet-ResNet18 width 64, 11 classes, "
        "exact fast path (fp32, eager); wall time of the whole command (model loading "
        "included).",
        "",
        "| images | loop | images/s, whole command | images/s, steady | seconds | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {t} | {c} | {r:.2f} | {d:.2f} | {s:.1f} | {m:.0f} |" for t, c, r, d, s, m in rows]
    lines += [
        "",
        "Steady: (N - P) / (time for N images - time for P images), P the processes (one "
        "image each), i.e. without start-up and model loading.",
        "",
        *scaling_on_paper(rows),
    ]
    table = "\n".join(lines)
    print(table)
    shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        write_section("Batch inference: predict on many images", f"`{command_line()}`\n\n{table}")


if __name__ == "__main__":
    main()
