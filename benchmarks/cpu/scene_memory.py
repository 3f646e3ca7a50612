"""Peak memory and throughput of ``pspnet predict`` on raster scenes of growing size.

Each row is one ``pspnet predict SCENE.tif --checkpoint CKPT --out DIR`` in its own process,
its peak RSS read from the process itself. The scenes are synthetic tiled, compressed 3-band
GeoTIFFs (64-pixel blocks of colour, so they compress like real imagery rather than noise);
the model a PSPNet-ResNet18 of width 8 with 11 classes and random weights (memory does not
depend on them), sliding 473 windows without flip, so the larger scenes finish in minutes on
two cores. The growth column is the peak's growth over the smallest scene per pixel added.
``--reference SIZE`` also runs the in-memory routine (``Segmenter.segment`` on the decoded
pixels) on the scene of that size, for the throughput the streamed routine keeps. Writes the
"Memory of raster scenes" section of docs/benchmarks.md unless ``--no-write``.

    python -m benchmarks.cpu.scene_memory --sizes 5000 10000 20000 40000 --reference 10000
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
    else:  # the in-memory routine on the decoded pixels
        import rasterio

        from pspnet.inference import Segmenter
        from pspnet.inference.settings import InferenceOverrides

        overrides = InferenceOverrides(mode="slide", crop_size=(473, 473), flip=False)
        segmenter = Segmenter.from_checkpoint(checkpoint, inference=overrides)
        with rasterio.open(scene) as file:
            pixels = np.moveaxis(file.read(), 0, -1)
        segmenter.segment(pixels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"peak": peak, "seconds": time.perf_counter() - start}))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000])
    parser.add_argument("--reference", type=int, help="also the in-memory routine at this size")
    parser.add_argument("--work", type=Path, help="folder for scenes and outputs (a temp one)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("HOW", "SCENE", "CKPT", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = measure(Path(tmp), sorted(args.sizes), args.reference)
    body = report(rows)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


def measure(folder: Path, sizes: list[int], reference: int | None) -> list[dict]:
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
        rows.append({"size": size, "how": "streamed", **result})
        print(rows[-1], flush=True)
        if reference == size:
            rows.append(
                {"size": size, "how": "in memory", **run("memory", scene, checkpoint, folder)}
            )
            print(rows[-1], flush=True)
        scene.unlink()
        for output in (folder / f"out_{size}").glob("*"):
            output.unlink()
    return rows


def report(rows: list[dict]) -> str:
    first = rows[0]
    lines = [
        "Peak RSS of one `pspnet predict SCENE.tif` process per row (process, torch and model "
        "included) on synthetic tiled GeoTIFFs, PSPNet-ResNet18 width 8, 11 classes, sliding "
        "473 windows without flip; growth: the peak's growth over the first row per pixel "
        f"added; throughput: megapixels per second of the whole command. CPU: {cpu_model()}.",
        "",
        "| scene | routine | peak RSS (MiB) | growth (bytes/pixel) | seconds | Mpixel/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        pixels = row["size"] ** 2
        added = pixels - first["size"] ** 2
        streamed = row["how"] == "streamed"
        growth = (
            "" if added == 0 or not streamed else f"{(row['peak'] - first['peak']) / added:.3f}"
        )
        lines.append(
            f"| {row['size']:,}^2 | {row['how']} | {row['peak'] / MIB:,.0f} | {growth} | "
            f"{row['seconds']:.0f} | {pixels / 1e6 / row['seconds']:.2f} |"
        )
    lines += ["", f"Command: `{command_line()}`"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
