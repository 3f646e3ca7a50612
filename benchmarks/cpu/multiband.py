"""What a fourth band buys: RGB vs RGB + near infrared on a synthetic 4-band task, two seeds.

The scenes are 16-bit, 4-band GeoTIFF tiles of five classes. Two pairs look the same in
red, green and blue and differ only in the fourth (near-infrared) band, as vegetation and a
green-painted roof, or water and a dark roof, do from above: an RGB model can only guess
within each pair, a 4-band model can tell them apart. Both models are a PSPNet-ResNet18 of
width 8 trained from scratch with the same recipe and budget (per-band mean and std measured
over the training images, ``data.mean: auto``); only ``model.in_channels`` and ``data.bands``
differ. The report gives each seed's val mIoU and the pairs' IoU, honest either way, and
writes the "A fourth band" section of docs/benchmarks.md unless ``--no-write``.

    python -m benchmarks.cpu.multiband --iterations 400 --seeds 0 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import command_line, cpu_model, write_section

TITLE = "A fourth band"
# name, RGB reflectance, near-infrared reflectance (0..1): the pairs share their RGB.
CLASSES = (
    ("soil", (0.45, 0.35, 0.25), 0.40),
    ("vegetation", (0.15, 0.40, 0.15), 0.60),
    ("green roof", (0.15, 0.40, 0.15), 0.10),
    ("water", (0.10, 0.15, 0.25), 0.02),
    ("dark roof", (0.10, 0.15, 0.25), 0.30),
)
PAIRS = (("vegetation", "green roof"), ("water", "dark roof"))
COLOURS = ((150, 110, 60), (40, 160, 40), (160, 220, 120), (30, 60, 200), (90, 90, 90))  # shown
TILE = 96


def write_dataset(root: Path, train: int, val: int, seed: int = 0) -> Path:
    """Tiles in the custom layout: images/{split}/*.tif (4-band uint16), labels as PNG."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    reflectance = np.array([(*rgb, nir) for _, rgb, nir in CLASSES])  # (classes, 4)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            labels = _scene(rng)
            pixels = reflectance[labels] + rng.normal(0, 0.03, (TILE, TILE, 4))  # (H, W, 4)
            values = np.clip(pixels * 10000, 0, 65535).astype(np.uint16)
            profile = dict(
                driver="GTiff",
                width=TILE,
                height=TILE,
                count=4,
                dtype="uint16",
                crs="EPSG:32633",
                transform=from_origin(500000, 4600000 - index * 100, 1, 1),
            )
            with rasterio.open(
                root / "images" / split / f"tile_{index:03d}.tif", "w", **profile
            ) as file:
                file.write(np.moveaxis(values, -1, 0))
            Image.fromarray(labels.astype(np.uint8)).save(
                root / "labels" / split / f"tile_{index:03d}.png"
            )
    lines = [f"{name} {r} {g} {b}" for (name, _, _), (r, g, b) in zip(CLASSES, COLOURS)]
    (root / "classes.txt").write_text("\n".join(lines) + "\n")
    return root


def _scene(rng: np.random.Generator) -> np.ndarray:
    """(TILE, TILE) labels: soil with rectangles of the other classes."""
    labels = np.zeros((TILE, TILE), dtype=np.int64)
    for _ in range(rng.integers(3, 7)):
        height, width = rng.integers(12, 48, 2)
        top, left = rng.integers(0, TILE - height), rng.integers(0, TILE - width)
        labels[top : top + height, left : left + width] = rng.integers(1, len(CLASSES))
    return labels


def train_one(root: Path, runs: Path, bands: int, seed: int, iterations: int) -> dict:
    from pspnet.config import load_train_config
    from pspnet.engine.train import train

    overrides = [
        "data.dataset=custom",
        f"data.root={root}",
        f"data.bands=[{','.join(str(b) for b in range(1, bands + 1))}]",
        "data.mean=auto",
        "data.std=auto",
        f"data.crop_size=[{TILE},{TILE}]",
        "data.rotate=null",
        "data.workers=0",
        f"model.in_channels={bands}",
        "model.backbone=resnet18",
        "model.base_width=8",
        "batch_size=8",
        f"iterations={iterations}",
        f"checkpoint_every={iterations}",
        "evaluation.mode=whole",
        "evaluation.flip=false",
        "device=cpu",
        f"seed={seed}",
    ]
    config = load_train_config(None, overrides)
    start = time.perf_counter()
    result = train(config, runs / f"bands{bands}_seed{seed}")
    return {
        "bands": bands,
        "seed": seed,
        "metrics": result.final_metrics,
        "seconds": time.perf_counter() - start,
    }


def report(rows: list[dict], iterations: int) -> str:
    names = [name for name, _, _ in CLASSES]
    lines = [
        f"Synthetic 4-band task (uint16 GeoTIFF tiles of {TILE}x{TILE}; two class pairs share "
        "their RGB and differ only in near infrared), PSPNet-ResNet18 width 8 from scratch, "
        f"{iterations} iterations of 8 tiles, mean/std measured (`auto`); val mIoU per seed. "
        f"CPU: {cpu_model()}.",
        "",
        "| model | seed | mIoU | " + " | ".join(f"{a} / {b} IoU" for a, b in PAIRS) + " | s |",
        "|---|---|---|" + "---|" * len(PAIRS) + "---|",
    ]
    for row in rows:
        iou = row["metrics"]["iou"]
        pairs = " | ".join(
            f"{100 * iou[names.index(a)]:.1f} / {100 * iou[names.index(b)]:.1f}" for a, b in PAIRS
        )
        model = "RGB (bands 1-3)" if row["bands"] == 3 else "RGB + NIR (bands 1-4)"
        lines.append(
            f"| {model} | {row['seed']} | {100 * row['metrics']['miou']:.2f} | {pairs} | "
            f"{row['seconds']:.0f} |"
        )
    means = {}
    for bands in (3, 4):
        values = [100 * r["metrics"]["miou"] for r in rows if r["bands"] == bands]
        means[bands] = (np.mean(values), (max(values) - min(values)) / 2)
    (rgb, rgb_spread), (nir, nir_spread) = means[3], means[4]
    beyond = nir - nir_spread > rgb + rgb_spread
    lines += [
        "",
        f"Mean ± half the spread: RGB {rgb:.2f} ± {rgb_spread:.2f}, RGB + NIR {nir:.2f} ± "
        f"{nir_spread:.2f}: the fourth band "
        + ("helps beyond the seed spread." if beyond else "does not help beyond the seed spread."),
        "",
        f"Command: `{command_line()}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tiles", type=int, nargs=2, default=[96, 24], metavar=("TRAIN", "VAL"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "data", *args.tiles)
        rows = []
        for seed in args.seeds:
            for bands in (3, 4):
                rows.append(train_one(root, Path(tmp) / "runs", bands, seed, args.iterations))
                print(rows[-1]["bands"], rows[-1]["seed"], rows[-1]["metrics"]["miou"], flush=True)
    body = report(rows, args.iterations)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
