"""QGIS itself opens what ``pspnet predict`` writes for a scene: named, coloured, placed classes.

Run by hand where QGIS and its Python bindings are installed (Debian: ``apt-get install
python3-qgis``); they live in the system's Python, not in the project's environment, so the
check runs there as a second process. This script writes a small georeferenced scene
(UTM zone 33N, 0.5 m pixels, a nodata border), runs ``pspnet predict SCENE --out DIR --vector``
with an 11-class model that names its classes (CamVid's), then asks QGIS, headless, what it
sees: the label raster's validity, CRS and extent, the renderer QGIS picked up from the
``.qml`` beside it (paletted, each class's value, colour and name) and the GeoPackage's layer
(CRS, fields, features). Every answer is checked against what was written; the result goes to
the "QGIS reads the outputs" section of docs/benchmarks.md.

    python -m benchmarks.qgis_check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import command_line, write_section

TITLE = "QGIS reads the outputs"
SYSTEM_PYTHON = "/usr/bin/python3"
SIZE = (300, 420)  # rows, columns
PIXEL = 0.5
ORIGIN = (500000.0, 4600000.0)  # west, north, metres

# Run in the system's Python, beside QGIS: prints what QGIS sees as JSON.
QGIS_PROBE = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import Qgis, QgsApplication, QgsRasterLayer, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
label, vector = sys.argv[1], sys.argv[2]
layer = QgsRasterLayer(label, "label")
renderer = layer.renderer()
classes = []
if renderer is not None and renderer.type() == "paletted":
    classes = [[c.value, c.color.name(), c.label] for c in renderer.classes()]
extent = layer.extent()
polygons = QgsVectorLayer(vector, "polygons", "ogr")
features = list(polygons.getFeatures())
print(json.dumps({
    "qgis": Qgis.version(),
    "valid": layer.isValid(),
    "crs": layer.crs().authid(),
    "extent": [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()],
    "size": [layer.width(), layer.height()],
    "renderer": None if renderer is None else renderer.type(),
    "classes": classes,
    "vector_valid": polygons.isValid(),
    "vector_crs": polygons.crs().authid(),
    "fields": [field.name() for field in polygons.fields()],
    "features": len(features),
    "names": sorted({str(f["class_name"]) for f in features}),
}))
sys.stdout.flush()
os._exit(0)  # exitQgis() may crash a headless QGIS on the way out; everything is printed
"""


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A 3-band georeferenced scene with a nodata border, and an 11-class checkpoint."""
    import rasterio
    import torch
    from rasterio.transform import from_origin

    from pspnet.checkpoints import save_model
    from pspnet.models import PSPNet

    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 256, (3, *SIZE), dtype=np.uint8)
    pixels[:, :, :40] = 0  # nodata on the west
    scene = folder / "scene.tif"
    profile = dict(driver="GTiff", height=SIZE[0], width=SIZE[1], count=3, dtype="uint8")
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    with rasterio.open(scene, "w", crs="EPSG:32633", transform=transform, nodata=0, **profile) as f:
        f.write(pixels)
    torch.manual_seed(0)
    checkpoint = folder / "camvid.safetensors"
    inference = json.dumps({"crop_size": [128, 128]})
    model = PSPNet(11, backbone="resnet18", base_width=8).eval()
    save_model(model, checkpoint, {"dataset": "camvid", "inference": inference})
    return scene, checkpoint


def check(seen: dict, names: list[str], palette: list[tuple[int, int, int]]) -> list[tuple]:
    """(what, expected, seen, ok) for each thing QGIS was asked."""
    west, north = ORIGIN
    extent = [west, north - SIZE[0] * PIXEL, west + SIZE[1] * PIXEL, north]
    classes = [
        [i, "#{:02x}{:02x}{:02x}".format(*c), n] for i, (c, n) in enumerate(zip(palette, names))
    ]
    rows = [
        ("label raster valid", True, seen["valid"]),
        ("CRS", "EPSG:32633", seen["crs"]),
        ("extent (m)", extent, [round(v, 3) for v in seen["extent"]]),
        ("size (columns, rows)", [SIZE[1], SIZE[0]], seen["size"]),
        ("renderer from the .qml", "paletted", seen["renderer"]),
        ("classes (value, colour, name)", classes, seen["classes"]),
        ("GeoPackage valid, CRS", [True, "EPSG:32633"], [seen["vector_valid"], seen["vector_crs"]]),
    ]
    checked = [(what, expected, got, expected == got) for what, expected, got in rows]
    fields_ok = {"class_id", "class_name", "area"} <= set(seen["fields"])
    names_ok = seen["features"] > 0 and set(seen["names"]) <= set(names)
    checked.append(("polygon fields", "class_id, class_name, area", seen["fields"], fields_ok))
    checked.append(
        ("polygons named by class", f"{seen['features']} features", seen["names"], names_ok)
    )
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from pspnet.cli import main as pspnet
    from pspnet.data.presets import get_preset

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene, checkpoint = write_inputs(folder)
        out = folder / "out"
        status = pspnet(
            ["predict", str(scene), "--checkpoint", str(checkpoint), "--out", str(out), "--vector"]
        )
        if status != 0:
            sys.exit(f"pspnet predict failed ({status})")
        probe = [
            SYSTEM_PYTHON,
            "-c",
            QGIS_PROBE,
            str(out / "scene_label.tif"),
            str(out / "scene_label.gpkg"),
        ]
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"QGIS could not be run ({SYSTEM_PYTHON}):\n{done.stderr[-2000:]}")
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    preset = get_preset("camvid")
    rows = check(seen, list(preset.class_names), [tuple(c) for c in preset.palette])
    lines = [
        f"QGIS {seen['qgis']} (PyQGIS, headless) opening `pspnet predict scene.tif --vector`'s "
        "outputs for a 420x300 UTM 33N scene with a nodata border and an 11-class model:",
        "",
        "| asked of QGIS | expected | QGIS saw | same |",
        "|---|---|---|---|",
    ]
    for what, expected, got, ok in rows:
        lines.append(f"| {what} | {expected} | {got} | {'yes' if ok else 'NO'} |")
    lines += ["", f"Command: `{command_line()}`"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(TITLE, body)
    if not all(ok for *_, ok in rows):
        sys.exit("QGIS saw something else than what was written")


if __name__ == "__main__":
    main()
