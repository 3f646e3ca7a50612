"""Peak memory and throughput of ``pspnet predict`` on raster scenes of growing size.

Each row is one ``pspnet predict SCENE.tif --checkpoint CKPT --out DIR`` in its own process,
its peak RSS read from the process itself. The scenes are synthetic tiled, compressed 3-band
GeoTIFFs (64-pixel blocks of colour, so they compress like real imagery rather than noise);
the model a PSPNet-ResNet18 of width 8 with 11 classes and random weights (memory does not
depend on them), sliding 473 windows without flip, so the larger scenes finish in minutes on
two cores. The growth column is the peak's growth over the smallest scene per pixel added.

``--reference SIZE`` compares the two routines on the scene of that size, each in its own
process, in turn (``--rounds`` of each): the streamed one (windows read from the GeoTIFF as
they are run, finished rows handed on and dropped: what ``predict`` runs, without writing the
outputs) and the in-memory one (``Segmenter.segment`` on the scene decoded whole, its pixels
read included). Writes the "Memory of raster scenes" section of docs/benchmarks.md unless
``--no-write``.

    python -m benchmarks.cpu.scene_memory --sizes 5000 10000 20000 40000 --reference 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import command_line, cpu_model, write_section

TITLE = "Memory of raster scenes"
MIB = 2**20
ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--no-flip", "--mode", "slide", "--crop", "473", "473"]


def child(how: str, scene: str, checkpoint: str, out: str) -> None:
    """In a fresh process: segment the scene, print the peak RSS and the seconds as JSON."""
    start = time.perf_counter()
    if how == "predict":
        from pspnet.cli import main

        status = main(["predict", scene, "--checkpoint", checkpoint, "--out", out, *FLAGS])
        assert status == 0, status
    elif how == "streamed":  # the streamed routine alone: what predict runs, nothing written
        import torch

        from pspnet.inference import Segmenter
        from pspnet.inference.settings import InferenceOverrides
        from pspnet.inference.streaming import stream_segments
        from pspnet.rasters.scene import Scene, gdal_env

        overrides = InferenceOverrides(mode="slide", crop_size=(473, 473), flip=False)
        segmenter = Segmenter.from_checkpoint(checkpoint, inference=overrides)

        with gdal_env(), Scene(scene) as opened:

            def read(top: int, left: int, height: int, width: int):
                pixels, valid = opened.read(top, left, height, width)
                return segmenter.normalize(pixels), torch.from_numpy(valid)

            size = (opened.height, opened.width)
            for _ in stream_segments(segmenter.network, read, size, segmenter.inference):
                pass
    else:  # the in-memory routine on the decoded pixels
        import rasterio

        from pspnet.inference import Segmenter
        from pspnet.inference.settings import InferenceOverrides

        overrides = InferenceOverrides(mode="slide", crop_size=(473, 473), flip=False)
        segmenter = Segmenter.from_checkpoint(checkpoint, inference=overrides)
        with rasterio.open(scene) as file:
            pixels = np.moveaxis(file.read(), 0, -1)
        segmenter.segment(pixels)
    peak = peak_rss()
    print(json.dumps({"peak": peak, "seconds": time.perf_counter() - start}))


def peak_rss() -> int:
    """This process's own peak RSS in bytes: ``VmHWM``, the high-water mark of its memory map.

    Not ``ru_maxrss``: Linux folds the RSS a process had before ``exec`` into it, so a child
    would report at least its parent's RSS at the fork (the scene writer's, here).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: KiB


def run(how: str, scene: Path, checkpoint: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.cpu.scene_memory",
        "--child",
        how,
        str(scene),
        str(checkpoint),
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_scene(path: Path, size: int) -> None:
    """A tiled, deflate-compressed 3-band GeoTIFF of 64-pixel colour blocks, written by rows."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 4600000, 0.5, 0.5),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        BIGTIFF="YES",
    )
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    with rasterio.open(path, "w", **profile) as file:
        for top in range(0, size, 1024):
            rows = min(1024, size - top)
            y = (np.arange(top, top + rows) // 64)[:, None]
            x = (np.arange(size) // 64)[None, :]
            block = colours[(y * 7919 + x * 104729) % 256]  # (rows, size, 3)
            file.write(np.moveaxis(block, -1, 0), window=Window(0, top, size, rows))


def positive(text: str) -> int:
    """An argparse type: a whole number above 0."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=positive, nargs="+", default=[5000, 10000, 20000, 40000])
    parser.add_argument("--reference", type=positive, help="compare the routines at this size")
    parser.add_argument("--rounds", type=positive, default=2, help="runs of each routine, in turn")
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for scenes and outputs, made if missing (default: a temp one)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("HOW", "SCENE", "CKPT", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.work and args.work.exists() and not args.work.is_dir():
        parser.error(f"--work {args.work}: not a folder")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = measure(Path(tmp), sorted(args.sizes), args.reference, args.rounds)
    body = report(rows)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


def measure(folder: Path, sizes: list[int], reference: int | None, rounds: int) -> list[dict]:
    import torch

    from pspnet.checkpoints import save_model
    from pspnet.models import PSPNet

    torch.manual_seed(0)
    checkpoint = folder / "r18w8_11.safetensors"
    save_model(PSPNet(11, backbone="resnet18", base_width=8), checkpoint)
    rows = []
    for size in sizes:
        scene = folder / f"scene_{size}.tif"
        write_scene(scene, size)
        result = run("predict", scene, checkpoint, folder / f"out_{size}")
        rows.append({"size": size, "how": "predict", **result})
        print(rows[-1], flush=True)
        if reference == size:
            for _ in range(rounds):
                for how in ("streamed", "memory"):
                    result = run(how, scene, checkpoint, folder)
                    rows.append({"size": size, "how": how, **result})
                    print(rows[-1], flush=True)
        scene.unlink()
        for output in (folder / f"out_{size}").glob("*"):
            output.unlink()
    return rows


def report(rows: list[dict]) -> str:
    commands = [row for row in rows if row["how"] == "predict"]
    first = commands[0]
    lines = [
        "Peak RSS of one `pspnet predict SCENE.tif` process per row (process, torch and model "
        "included) on synthetic tiled GeoTIFFs, PSPNet-ResNet18 width 8, 11 classes, sliding "
        "473 windows without flip; growth: the peak's growth over the first row per pixel "
        "added; throughput: megapixels per second of the whole command (segmenting, writing "
        f"the label GeoTIFF, its Cloud-Optimised copy with overviews). CPU: {cpu_model()}.",
        "",
        "| scene | peak RSS (MiB) | growth (bytes/pixel) | seconds | Mpixel/s |",
        "|---|---|---|---|---|",
    ]
    for row in commands:
        pixels = row["size"] ** 2
        added = pixels - first["size"] ** 2
        growth = "" if added == 0 else f"{(row['peak'] - first['peak']) / added:.3f}"
        lines.append(
            f"| {row['size']:,}^2 | {row['peak'] / MIB:,.0f} | {growth} | {row['seconds']:.0f} "
            f"| {pixels / 1e6 / row['seconds']:.2f} |"
        )
    routines = [row for row in rows if row["how"] != "predict"]
    if routines:
        lines += ["", *_routines(routines)]
    lines += ["", f"Command: `{command_line()}`"]
    return "\n".join(lines)


def _routines(rows: list[dict]) -> list[str]:
    """The streamed routine against the in-memory one on the same scene, run in turn."""
    size = rows[0]["size"]
    pixels = size**2 / 1e6
    lines = [
        f"The two routines on the {size:,}^2 scene, each process in turn (seconds and peak "
        "of the whole process: loading the model and reading the pixels included, nothing "
        "written):",
        "",
        "| routine | run | seconds | Mpixel/s | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    medians = {}
    for how, name in (("streamed", "streamed (windows read from disk)"), ("memory", "in memory")):
        runs = [row for row in rows if row["how"] == how]
        for index, row in enumerate(runs, start=1):
            lines.append(
                f"| {name} | {index} | {row['seconds']:.1f} | {pixels / row['seconds']:.2f} | "
                f"{row['peak'] / MIB:,.0f} |"
            )
        medians[how] = statistics.median(row["seconds"] for row in runs)
    share = medians["memory"] / medians["streamed"]
    lines += ["", f"Streamed throughput: {100 * share:.0f}% of the in-memory routine's (medians)."]
    return lines


if __name__ == "__main__":
    main()
