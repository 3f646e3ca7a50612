"""The ablation report: the paper's tables with our mean ± std over seeds, and a bar chart.

A difference from a table's first row (the baseline in table 1, no aux loss in table 2)
is marked when it is larger than the seed-to-seed spread of either row (max - min over seeds,
at least one std), the only honest test with two or three seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pspnet.reproduce.ablation import TABLE2, VARIANTS, RunResult

# ADE20K val, ResNet50 (Zhao et al., 2017, tables 1 and 2): (mean IoU %, pixel acc. %).
# Filled from the paper's text; see PAPER_SOURCE.
PAPER: dict[str, tuple[float, float]] = {
    "ResNet50-Baseline": (37.23, 78.01),
    "ResNet50+B1+MAX": (39.94, 79.46),
    "ResNet50+B1+AVE": (40.07, 79.52),
    "ResNet50+B1236+MAX": (40.18, 79.45),
    "ResNet50+B1236+AVE": (41.07, 79.97),
    "ResNet50+B1236+MAX+DR": (40.87, 79.61),
    "ResNet50+B1236+AVE+DR": (41.68, 80.04),
    "ResNet50 (without AL)": (35.82, 77.07),
    "ResNet50 (with α = 0.3)": (37.01, 77.87),
    "ResNet50 (with α = 0.4)": (37.23, 78.01),
    "ResNet50 (with α = 0.6)": (37.09, 77.84),
    "ResNet50 (with α = 0.9)": (36.99, 77.87),
}
PAPER_SOURCE = (
    "Zhao et al., CVPR 2017, tables 1 and 2, as two independent transcriptions of the paper "
    "give them (they agree to every digit); the last row of table 1 also in the authors' "
    "hszhao/PSPNet README (41.68 / 80.04)."
)


# The paper's comparisons, as (claim, better variant, worse variant): each is read off its
# tables 1 and 2 (the better row scored higher there).
ORDERINGS: tuple[tuple[str, str, str], ...] = (
    ("the full pyramid beats the FCN baseline", "b1236-avg-dr", "fcn"),
    ("one bin beats the baseline (max)", "b1-max", "fcn"),
    ("one bin beats the baseline (avg)", "b1-avg", "fcn"),
    ("average beats max pooling (B1)", "b1-avg", "b1-max"),
    ("average beats max pooling (B1236)", "b1236-avg", "b1236-max"),
    ("average beats max pooling (B1236+DR)", "b1236-avg-dr", "b1236-max-dr"),
    ("bins 1,2,3,6 beat one bin (max)", "b1236-max", "b1-max"),
    ("bins 1,2,3,6 beat one bin (avg)", "b1236-avg", "b1-avg"),
    ("dimension reduction helps (max)", "b1236-max-dr", "b1236-max"),
    ("dimension reduction helps (avg)", "b1236-avg-dr", "b1236-avg"),
    ("the aux loss (α = 0.4) helps", "fcn", "aux-0"),
    ("α = 0.4 beats 0.3", "fcn", "aux-0.3"),
    ("α = 0.4 beats 0.6", "fcn", "aux-0.6"),
    ("α = 0.4 beats 0.9", "fcn", "aux-0.9"),
)


def summarise(results: Sequence[RunResult], split: str = "val") -> dict[str, dict]:
    """Per run prefix (variant name): mean, std and spread of mIoU and pixel accuracy (%)."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for result in results:
        scores = result.val if split == "val" else result.test
        if scores is not None:
            by_variant.setdefault(result.variant, []).append(scores)
    summary = {}
    for name, scores in by_variant.items():
        row = {"seeds": len(scores)}
        for key in ("miou", "pixel_acc"):
            values = [100 * s[key] for s in scores]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
            row[f"{key}_spread"] = max(values) - min(values)
        summary[name] = row
    return summary


def markdown(results: Sequence[RunResult], title: str, split: str = "val") -> str:
    """ablation.md: tables 1 and 2 in the paper's layout, ours beside the paper's."""
    summary = summarise(results, split)
    table1 = [(v.label, v.name) for v in VARIANTS if v.table == 1]
    lines = [f"# {title}", ""]
    for number, rows, reference in ((1, table1, "fcn"), (2, TABLE2, "aux-0")):
        lines += [
            f"## Table {number}",
            "",
            "| setting | ours: mIoU | ours: pixel acc. | seeds | paper (ADE20K): mIoU | "
            "paper: pixel acc. |",
            "|:---|---:|---:|---:|---:|---:|",
        ]
        base = summary.get(reference)
        for label, name in rows:
            row = summary.get(name)
            paper = PAPER.get(label)
            theirs = ("n/a", "n/a") if paper is None else (f"{paper[0]:.2f}", f"{paper[1]:.2f}")
            if row is None:
                lines.append(f"| {label} | not run | not run | 0 | {theirs[0]} | {theirs[1]} |")
                continue
            mark = " *" if name != reference and _beyond_spread(row, base) else ""
            lines.append(
                f"| {label} | {_cell(row, 'miou')}{mark} | {_cell(row, 'pixel_acc')} | "
                f"{row['seeds']} | {theirs[0]} | {theirs[1]} |"
            )
        lines.append("")
    lines += [
        "Percent, mean ± std over seeds. `*`: the mIoU differs from the table's first row by "
        "more than either row's seed-to-seed spread (max - min, at least one std).",
    ]
    lines += ["", *ordering_table(summary)]
    if PAPER_SOURCE:
        lines += ["", f"Paper figures: {PAPER_SOURCE}"]
    return "\n".join(lines) + "\n"


def ordering_table(summary: dict[str, dict]) -> list[str]:
    """Each of the paper's comparisons (:data:`ORDERINGS`): does it hold here, beyond noise?

    ``holds`` when our mIoU difference is in the paper's direction and larger than the noise
    (the larger seed-to-seed spread of the two rows, at least one std), ``reversed`` when it is
    as large the other way, ``within noise`` otherwise.
    """
    labels = {v.name: v.label for v in VARIANTS} | {"fcn": "ResNet50-Baseline"}
    paper_of = {name: PAPER[label][0] for name, label in labels.items()}
    lines = [
        "## The paper's orderings at this scale",
        "",
        "| the paper's claim | paper: Δ mIoU | ours: Δ mIoU | noise (spread) | here |",
        "|:---|---:|---:|---:|:---|",
    ]
    for claim, better, worse in ORDERINGS:
        paper = paper_of[better] - paper_of[worse]
        if better not in summary or worse not in summary:
            lines.append(f"| {claim} | {paper:+.2f} | not run | | |")
            continue
        ours = summary[better]["miou"] - summary[worse]["miou"]
        noise = _noise(summary[better], summary[worse])
        verdict = (
            "within noise"
            if math.isnan(noise) or abs(ours) <= noise
            else ("holds" if ours > 0 else "reversed")
        )
        shown = "n/a" if math.isnan(noise) else f"{noise:.2f}"
        lines.append(f"| {claim} | {paper:+.2f} | {ours:+.2f} | {shown} | {verdict} |")
    lines += [
        "",
        "Δ: the first-named variant's mIoU minus the other's (ours: means over seeds). Noise: "
        "the larger seed-to-seed spread (max - min) or std of the two rows; with one seed "
        "there is none to compare with, and every difference is called within noise.",
    ]
    return lines


def bar_chart(results: Sequence[RunResult], path: str | Path, split: str = "val") -> None:
    """A PNG of each variant's mean mIoU with ±std error bars (PIL only)."""
    summary = summarise(results, split)
    names = [v.name for v in VARIANTS if v.name in summary]
    if not names:
        raise ValueError("no finished runs to draw")
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    width, height, left, bottom, top = 90 * len(names) + 120, 460, 70, 110, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 14), "mIoU (%) per variant, mean ± std over seeds", font=font, fill="black")
    highest = max(summary[n]["miou"] + np.nan_to_num(summary[n]["miou_std"]) for n in names)
    scale = (height - bottom - top) / max(highest * 1.1, 1e-9)
    base_y = height - bottom
    draw.line([(left, base_y), (width - 30, base_y)], fill="black")
    for tick in np.linspace(0, highest * 1.1, 5):
        y = base_y - tick * scale
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((left - 8, y), f"{tick:.0f}", font=small, fill="black", anchor="rm")
    for index, name in enumerate(names):
        row = summary[name]
        x = left + 20 + index * 90
        colour = (200, 120, 50) if name.startswith("aux") else (70, 110, 180)
        draw.rectangle([x, base_y - row["miou"] * scale, x + 50, base_y], fill=colour)
        std = row["miou_std"]
        if not math.isnan(std):
            y0, y1 = base_y - (row["miou"] - std) * scale, base_y - (row["miou"] + std) * scale
            draw.line([(x + 25, y0), (x + 25, y1)], fill="black", width=2)
            draw.line([(x + 18, y1), (x + 32, y1)], fill="black", width=2)
            draw.line([(x + 18, y0), (x + 32, y0)], fill="black", width=2)
        draw.text(
            (x + 25, base_y - row["miou"] * scale - 12),
            f"{row['miou']:.1f}",
            font=small,
            fill="black",
            anchor="mb",
        )
        label = Image.new("RGB", (100, 16), "white")
        ImageDraw.Draw(label).text((0, 0), name, font=small, fill="black")
        rotated = label.rotate(45, expand=True, fillcolor="white")
        image.paste(rotated, (x - 30, base_y + 6))
    draw.text(
        (left, height - 22),
        "blue: table 1 (pyramid); orange: table 2 (aux weight; its 0.4 is fcn)",
        font=small,
        fill=(80, 80, 80),
    )
    image.save(path)


def _cell(row: dict, key: str) -> str:
    std = row[f"{key}_std"]
    return f"{row[key]:.2f}" if math.isnan(std) else f"{row[key]:.2f} ± {std:.2f}"


def _beyond_spread(row: dict, base: dict | None) -> bool:
    if base is None:
        return False
    noise = _noise(row, base)
    return not math.isnan(noise) and abs(row["miou"] - base["miou"]) > noise


def _noise(row: dict, other: dict) -> float:
    """The larger seed-to-seed spread or std of two rows; NaN when either has one seed."""
    if row["seeds"] < 2 or other["seeds"] < 2:
        return math.nan  # one seed has no spread to compare with
    return max(
        row["miou_spread"],
        other["miou_spread"],
        np.nan_to_num(row["miou_std"]),
        np.nan_to_num(other["miou_std"]),
    )
