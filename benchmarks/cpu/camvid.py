"""PSPNet vs its FCN baseline (use_ppm=False) on real CamVid, same budget, on this CPU.

    python -m benchmarks.cpu.camvid                      # configs/camvid_pspnet_r18_cpu.yaml
    python -m benchmarks.cpu.camvid --set iterations=200 --no-write

Trains both networks with the same config (only ``model.use_ppm`` differs), evaluates each
on the val split, prints per-class IoU side by side with training images/s, and writes the
table into docs/benchmarks.md. Run folders go to runs/camvid_{pspnet,fcn}; rerunning resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.report import command_line, cpu_model, write_section
from pspnet.config import load_train_config
from pspnet.data.presets import get_preset
from pspnet.engine.train import train

VARIANTS = {"FCN (use_ppm=False)": "false", "PSPNet": "true"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/camvid_pspnet_r18_cpu.yaml"))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for both runs")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    results = {}
    for title, use_ppm in VARIANTS.items():
        config = load_train_config(args.config, [*args.set, f"model.use_ppm={use_ppm}"])
        name = "pspnet" if use_ppm == "true" else "fcn"
        start = time.perf_counter()
        result = train(config, args.runs / f"camvid_{name}")
        results[title] = (result, time.perf_counter() - start, config)
        print(f"{title}: mIoU {100 * result.final_metrics['miou']:.2f}")

    names = get_preset("camvid").class_names
    titles = list(results)
    lines = ["| class | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
    for index, name in enumerate(names):
        cells = [f"{100 * results[t][0].final_metrics['iou'][index]:.1f}" for t in titles]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, label in (
        ("miou", "**mIoU**"),
        ("mean_acc", "mean class accuracy"),
        ("pixel_acc", "pixel accuracy"),
    ):
        cells = [f"{100 * results[t][0].final_metrics[key]:.2f}" for t in titles]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| training images/s | "
        + " | ".join(f"{results[t][0].images_per_second:.1f}" for t in titles)
        + " |"
    )
    lines.append(
        "| wall time incl. validation (min) | "
        + " | ".join(f"{results[t][1] / 60:.1f}" for t in titles)
        + " |"
    )
    table = "\n".join(lines)
    print(table)
    config = results["PSPNet"][2]
    body = (
        f"CPU: {cpu_model()}. Both trained from scratch with the same settings: "
        f"{config.model.backbone} width {config.model.base_width}, {config.iterations} "
        f"iterations of batch {config.batch_size}, crop {config.data.crop_size}, scale "
        f"{config.data.scale}, lr {config.optim.lr}; validated on "
        f"the 101 val images at long side {config.evaluation.base_size} "
        f"(probabilities resized to the full 480x360 labels). IoU in %.\n\n{table}\n\n"
        f"Command: `{command_line()}`"
    )
    if not args.no_write:
        write_section("CamVid on the CPU: PSPNet vs FCN baseline", body)


if __name__ == "__main__":
    main()
