"""Video: frames per second of `pspnet predict` on a CamVid clip, and what smoothing does.

python -m benchmarks.cpu.video --checkpoint /work/own_data/thin/pspnet-seed0/best.safetensors
python -m benchmarks.cpu.video --checkpoint CKPT --frames 4 --no-write     # a check it runs

The clip is CamVid's val split, one sequence (0016E5, every other frame of a 30 fps camera, all
labelled) in file-name order, written by OpenCV at 15 fps (its own rate), 480x360, mp4v.

Throughput: each row is one `pspnet predict` in a fresh process, the checkpoint's own test
settings: on the clip (overlay video + a label PNG per frame) with no I/O threads
(PSPNET_IO_THREADS=0) and with decoding and encoding overlapped (=2), against `predict` on the
clip's decoded frames saved as PNG files (the same pixels; label, colour and overlay PNGs),
also both ways. "Steady" leaves start-up and loading out: (N - 2) / (T_N - T_2), T_2 the same
command on two frames.

Smoothing: `pspnet.video.segment_video` over the clip with `smooth` A. Flicker is the share of
pixels whose label changes between consecutive frames, averaged over the pairs (the
annotations' own flicker, void pixels left out, is the motion itself); mIoU is against the
frames' CamVid labels (valannot), which every frame has.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.report import command_line, cpu_model, write_section

ROOT = Path(__file__).resolve().parents[2]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
CHECKPOINT = ROOT.parent / "own_data" / "thin" / "pspnet-seed0" / "best.safetensors"
STILL = ROOT / "docs" / "images" / "video_still.png"
WEIGHTS = (1.0, 0.7, 0.5)


def make_clip(images: list[Path], path: Path, fps: float) -> list[np.ndarray]:
    """The images as an mp4v clip; its frames as decoded back, (H, W, 3) uint8 RGB."""
    first = cv2.imread(str(images[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for image in images:
        writer.write(cv2.imread(str(image)))
    writer.release()
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def flicker(labels: list[np.ndarray], ignore: int | None = None) -> float:
    """Mean share of pixels whose label changes between consecutive frames."""
    shares = []
    for before, after in zip(labels, labels[1:]):
        counted = np.ones(before.shape, bool)
        if ignore is not None:
            counted = (before != ignore) & (after != ignore)
        shares.append(np.mean((before != after)[counted]))
    return float(np.mean(shares)) if shares else float("nan")


def smoothing_rows(segmenter, clip: Path, truths: list[np.ndarray]) -> list[tuple]:
    """(A, flicker, mIoU, seconds per frame) of ``segment_video`` for each of :data:`WEIGHTS`."""
    from pspnet.engine.metrics import ConfusionMatrix
    from pspnet.video import segment_video

    rows = []
    for weight in WEIGHTS:
        matrix, labels, seconds = ConfusionMatrix(segmenter.num_classes), [], 0.0
        for frame, truth in zip(segment_video(segmenter, clip, smooth=weight), truths, strict=True):
            labels.append(frame.segmentation.labels)
            matrix.update(torch.from_numpy(labels[-1].astype(np.int64)), torch.from_numpy(truth))
            seconds += frame.segmentation.seconds
        rows.append((weight, flicker(labels), matrix.compute().miou, seconds / len(labels)))
    return rows


def run_predict(inputs: list[str], out: Path, checkpoint: str, threads: int) -> float:
    """Seconds of one `pspnet predict` in a fresh process."""
    argv = ["predict", *inputs, "--checkpoint", checkpoint, "--out", str(out)]
    script = (
        "import json, sys, time\nfrom pspnet.cli import main\nstart = time.perf_counter()\n"
        f"code = main({argv!r})\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'code': code}))\n"
    )
    env = {**os.environ, "PSPNET_IO_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr[-2000:]
    return result["seconds"]


def throughput_rows(clip: Path, pngs: Path, count: int, checkpoint: str, work: Path) -> list:
    """(input, loop, frames/s of the whole command, steady frames/s, seconds) per row."""
    two = work / "two-pngs"
    two.mkdir()
    for path in sorted(pngs.glob("*.png"))[:2]:
        shutil.copy(path, two)
    rows = []
    for title, inputs, first_two in (
        (
            "clip.mp4 -> overlay video + label PNGs",
            [str(clip), "--save-labels"],
            [str(clip), "--save-labels", "--max-frames", "2"],
        ),
        ("the same frames as PNGs -> label, colour, overlay PNGs", [str(pngs)], [str(two)]),
    ):
        for threads, loop in ((0, "serial (no I/O threads)"), (2, "overlapped (2 I/O threads)")):
            tag = f"{len(rows)}"
            seconds = run_predict(inputs, work / f"out-{tag}", checkpoint, threads)
            start_up = run_predict(first_two, work / f"out2-{tag}", checkpoint, threads)
            steady = (count - 2) / max(seconds - start_up, 1e-9)
            rows.append((title, loop, count / seconds, steady, seconds))
            print(f"{title} | {loop}: {count / seconds:.2f} frames/s ({steady:.2f} steady)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--camvid", type=Path, default=CAMVID, help="a CamVid root")
    parser.add_argument("--frames", type=int, default=0, help="the first N val frames (0: all)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint; pass a trained CamVid model")

    from pspnet.data.labels import read_label
    from pspnet.data.presets import get_preset
    from pspnet.inference import Segmenter

    images = sorted((args.camvid / "val").glob("*.png"))[: args.frames or None]
    preset = get_preset("camvid")
    truths = [read_label(args.camvid / "valannot" / p.name, preset) for p in images]
    work = Path(tempfile.mkdtemp(prefix="pspnet-video-bench-"))
    clip = work / "clip.mp4"
    frames = make_clip(images, clip, args.fps)
    pngs = work / "frames"
    pngs.mkdir()
    for image, frame in zip(images, frames, strict=True):
        cv2.imwrite(str(pngs / image.name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    rows = throughput_rows(clip, pngs, len(frames), str(args.checkpoint), work)
    segmenter = Segmenter.from_checkpoint(args.checkpoint)
    smoothing = smoothing_rows(segmenter, clip, truths)
    height, width = frames[0].shape[:2]
    lines = [
        f"CPU: {cpu_model()} ({os.cpu_count()} cores). `{args.checkpoint.name}`, the "
        f"checkpoint's own test settings ({segmenter.inference.mode}, flip "
        f"{'on' if segmenter.inference.flip else 'off'}); a {width}x{height} clip of "
        f"{len(frames)} CamVid val frames at {args.fps:g} fps (mp4v).",
        "",
        "| input -> outputs | loop | frames/s, whole command | frames/s, steady | seconds |",
        "|---|---|---:|---:|---:|",
        *(f"| {t} | {loop} | {r:.2f} | {s:.2f} | {sec:.1f} |" for t, loop, r, s, sec in rows),
        "",
        "Smoothing (`--smooth A`, the new frame's weight); flicker: share of pixels whose label "
        "changes between consecutive frames:",
        "",
        "| A | flicker | mIoU | s/frame (segment) |",
        "|---:|---:|---:|---:|",
        f"| annotations | {100 * flicker(truths, ignore=255):.2f}% | | |",
        *(
            f"| {a:g}{' (off)' if a == 1 else ''} | {100 * f:.2f}% | {100 * m:.2f} | {s:.3f} |"
            for a, f, m, s in smoothing
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        overlay = cv2.VideoCapture(str(work / "out-1" / "clip_overlay.mp4"))
        overlay.set(cv2.CAP_PROP_POS_FRAMES, len(frames) // 2)
        ok, still = overlay.read()
        if ok:
            STILL.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(STILL), still)
        write_section("Video: predict on a CamVid clip", f"`{command_line()}`\n\n{table}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
