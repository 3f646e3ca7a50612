"""CPU training options side by side: fp32, channels_last, bf16 autocast; loss curves and speed.

    python -m benchmarks.cpu.train_precision                # 50 steps each on CamVid
    python -m benchmarks.cpu.train_precision --steps 10 --no-write

Each variant trains the CPU CamVid config from the same seed for the same steps (same data
order and crops); the table gives images/s and how far its loss curve strays from fp32's,
against the spread of fp32 itself under another seed (the noise).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import command_line, cpu_model, write_section
from pspnet.config import load_train_config
from pspnet.engine.train import train
from pspnet.inference.optimized.optimize import native_bf16

VARIANTS = {
    "fp32": [],
    "fp32, channels_last": ["channels_last=true"],
    "bf16 autocast": ["precision=bf16"],
    "fp32, another seed (noise)": ["seed=1"],
}


def losses(run: Path) -> tuple[np.ndarray, float]:
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in entries if "loss" in e]
    return np.array([e["loss"] for e in steps]), steps[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/camvid_pspnet_r18_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--section", default="CPU training options")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for title, extra in VARIANTS.items():
            if "bf16" in title and not native_bf16():
                results[title] = None
                continue
            overrides = [
                f"iterations={args.steps}",
                "log_every=1",
                "val_limit=1",
                *args.set,
                *extra,
            ]
            config = load_train_config(args.config, [*overrides, f"checkpoint_every={args.steps}"])
            train(config, Path(folder) / title.replace(" ", "_"))
            results[title] = losses(Path(folder) / title.replace(" ", "_"))
            print(title, f"{results[title][1]:.1f} images/s", flush=True)
    reference, _ = results["fp32"]
    lines = [
        "| variant | images/s | mean loss, last 10 steps | mean abs loss difference vs fp32 |",
        "|---|---|---|---|",
    ]
    for title, result in results.items():
        if result is None:
            lines.append(f"| {title} | not run: no native bf16 on this CPU | | |")
            continue
        curve, speed = result
        diff = np.abs(curve - reference).mean()
        lines.append(f"| {title} | {speed:.1f} | {curve[-10:].mean():.3f} | {diff:.4f} |")
    table = "\n".join(lines)
    body = (
        f"CPU: {cpu_model()}. {args.steps} steps of {args.config} from the same seed; "
        f"images/s over the whole run (first steps included).\n\n{table}\n\n"
        f"Command: `{command_line()}`"
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
