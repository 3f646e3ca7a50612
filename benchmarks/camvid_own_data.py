"""Own data on real CamVid: thin classes (class weights, OHEM) and fine-tuning vs scratch.

    python -m benchmarks.camvid_own_data thin --out /tmp/own_data      # 10 runs, two seeds
    python -m benchmarks.camvid_own_data finetune --out /tmp/own_data  # 1 source + 6 runs
    python -m benchmarks.camvid_own_data report --out /tmp/own_data    # docs/ from finished runs

thin: configs/camvid_pspnet_r18_cpu.yaml as it is, with loss.class_weights=auto, with OHEM,
with both, and its FCN baseline (model.use_ppm=false), two seeds each, scored on val.

finetune: a source model trained on CamVid's 11 classes with the first half of the training
images; then a target task with another class set (six classes kept by name, Pedestrian +
Bicyclist merged into "person", Pole + SignSymbol + Fence into "street furniture", and a new
class "other" made of CamVid's void pixels, which the source never learnt) trained on a few
images of the second half that the source never saw: from scratch, from the source with its
classifier re-initialised, and from the source with classifier rows carried by name.

Every run is an ordinary run folder under --out (rerunning resumes and skips finished runs);
``report`` writes docs/own_data_camvid.md and the runs' results under docs/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from benchmarks.report import command_line, cpu_model
from pspnet.config import load_train_config
from pspnet.data.presets import get_preset
from pspnet.reproduce.ablation import Variant, run_grid

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "camvid_pspnet_r18_cpu.yaml"
CAMVID = REPO.parent / "shared" / "data" / "camvid"
DOC = REPO / "docs" / "own_data_camvid.md"
RESULTS = REPO / "docs" / "results" / "own_data_camvid"
SEEDS = (0, 1)
EXTRA: list[str] = []  # --set: overrides for every run (a smoke run: iterations=4 val_limit=2)

OHEM = ["loss.ohem_thresh=0.7", "loss.ohem_min_kept=30000"]  # ~10% of a batch's pixels
THIN_ARMS = {
    "pspnet": ("the config as it is", []),
    "fcn": ("FCN baseline (model.use_ppm=false)", ["model.use_ppm=false"]),
    "weights": ("class weights auto", ["loss.class_weights=auto"]),
    "ohem": ("OHEM (0.7, 30000)", OHEM),
    "weights-ohem": ("class weights auto + OHEM", ["loss.class_weights=auto", *OHEM]),
}
THIN = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")

# The target task: (class, CamVid classes it is made of); "other" is CamVid's void (11).
TARGET = (
    ("Sky", ("Sky",)),
    ("Building", ("Building",)),
    ("Road", ("Road",)),
    ("Pavement", ("Pavement",)),
    ("Tree", ("Tree",)),
    ("car", ("Car",)),
    ("person", ("Pedestrian", "Bicyclist")),
    ("street furniture", ("Pole", "SignSymbol", "Fence")),
    ("other", ()),
)
INIT_CLASSES = "{person: Pedestrian, street furniture: Pole}"
FEW_IMAGES = 24
TARGET_ITERATIONS = 600
TARGET_ARMS = {
    "scratch": ("from scratch", []),
    "init-fresh": ("init, classifier re-initialised", ["init_classifier=fresh"]),
    "init-by-name": ("init, rows carried by name", []),
}


def runs_of(arms: dict, base: list[str], prefix: str = "") -> list:
    """Every arm with the first seed, then every arm with the next: a cut-short grid compares."""
    runs = []
    for seed in SEEDS:
        for name, (label, overrides) in arms.items():
            config = load_train_config(CONFIG, [*base, *overrides, f"seed={seed}", *EXTRA])
            runs.append(
                (f"{prefix}{name}-seed{seed}", Variant(f"{prefix}{name}", 0, label), seed, config)
            )
    return runs


def progress(event: dict) -> None:
    if event["iteration"] % 100 == 0:
        eta = event["eta_seconds"]
        left = f", {eta / 60:.0f} min left" if eta is not None else ""
        print(
            f"run {event['index'] + 1}/{event['total']} {event['run']}: "
            f"{event['iteration']}/{event['iterations']}{left}",
            flush=True,
        )


def thin(out: Path, arms: list[str] | None = None) -> None:
    chosen = {name: arm for name, arm in THIN_ARMS.items() if not arms or name in arms}
    run_grid(out / "thin", runs_of(chosen, [f"data.root={CAMVID}"]), progress=progress)


def write_lists(root: Path) -> None:
    """The source's and target's list files (absolute paths into CamVid) and class names."""
    lines = (CAMVID / "train.txt").read_text().split("\n")
    pairs = [line.split() for line in lines if line.strip()]
    half = len(pairs) // 2
    absolute = [f"{CAMVID / image} {CAMVID / label}" for image, label in pairs]
    val = [
        f"{CAMVID / a} {CAMVID / b}"
        for a, b in (x.split() for x in (CAMVID / "val.txt").read_text().split("\n") if x.strip())
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "first_half.txt").write_text("\n".join(absolute[:half]) + "\n")
    step = (len(pairs) - half) // FEW_IMAGES  # spread over the second half's sequences
    few = absolute[half::step][:FEW_IMAGES]
    (root / "few.txt").write_text("\n".join(few) + "\n")
    (root / "val.txt").write_text("\n".join(val) + "\n")
    (root / "classes.txt").write_text("\n".join(name for name, _ in TARGET) + "\n")


def target_label_map() -> str:
    camvid = get_preset("camvid").class_names
    mapping = {camvid.index(c): i for i, (_, parts) in enumerate(TARGET) for c in parts}
    mapping[11] = len(TARGET) - 1  # void -> "other"
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(mapping.items())) + "}"


def finetune(out: Path) -> None:
    lists = out / "lists"
    write_lists(lists)
    source_base = [f"data.root={CAMVID}", f"data.train_split={lists / 'first_half'}"]
    source = load_train_config(CONFIG, [*source_base, "seed=0", *EXTRA])
    run_grid(
        out / "finetune",
        [("source-seed0", Variant("source", 0, "source"), 0, source)],
        progress=progress,
    )
    init = out / "finetune" / "source-seed0" / "last.pt"
    base = [
        "data.dataset=custom",
        f"data.root={lists}",
        "data.train_split=few",
        f"data.label_map={target_label_map()}",
        f"iterations={TARGET_ITERATIONS}",
        "val_every=0",
        "log_every=5",
        "checkpoint_every=100",
    ]
    arms = {
        name: (
            label,
            overrides
            if name == "scratch"
            else [f"init={init}", f"init_classes={INIT_CLASSES}", *overrides],
        )
        for name, (label, overrides) in TARGET_ARMS.items()
    }
    run_grid(out / "finetune", runs_of(arms, base), progress=progress)


# --- report -----------------------------------------------------------------------------------


def final_val(folder: Path) -> dict:
    entries = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [e for e in entries if "val" in e][-1]["val"]


def losses(folder: Path, until: int) -> list[tuple[int, float]]:
    entries = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(e["iteration"], e["loss"]) for e in entries if "loss" in e and e["iteration"] <= until]


def mean_spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return (
        f"{mean:.1f} ± {(max(values) - min(values)) / 2:.1f}" if len(values) > 1 else f"{mean:.1f}"
    )


def finished(grid: Path, arm: str) -> list[Path]:
    """The arm's run folders whose run has ended (a run still going has no result.json)."""
    folders = [grid / f"{arm}-seed{seed}" for seed in SEEDS]
    return [folder for folder in folders if (folder / "result.json").is_file()]


def arm_scores(grid: Path, arm: str) -> list[dict]:
    return [final_val(folder) for folder in finished(grid, arm)]


def seeds_row(arms: dict) -> str:
    return "| seeds | " + " | ".join(str(len(scores)) for scores in arms.values()) + " |"


def verdict(better: list[float], worse: list[float]) -> str:
    """Beyond the spread: the two arms' seed ranges do not overlap."""
    if min(better) > max(worse):
        return "better, beyond the spread"
    if max(better) < min(worse):
        return "worse, beyond the spread"
    return "within the spread"


def thin_section(out: Path) -> list[str]:
    grid = out / "thin"
    names = get_preset("camvid").class_names
    arms = {arm: arm_scores(grid, arm) for arm in THIN_ARMS}
    arms = {arm: scores for arm, scores in arms.items() if scores}
    header = "| class | " + " | ".join(THIN_ARMS[a][0] for a in arms) + " |"
    lines = [header, "|---|" + "---|" * len(arms)]
    for index, name in enumerate(names):
        cells = [mean_spread([100 * s["iou"][index] for s in arms[a]]) for a in arms]
        bold = f"**{name}**" if name in THIN else name
        lines.append(f"| {bold} | " + " | ".join(cells) + " |")
    for key, label in (
        ("miou", "**mIoU**"),
        ("mean_acc", "mean class accuracy"),
        ("pixel_acc", "pixel accuracy"),
    ):
        cells = [mean_spread([100 * s[key] for s in arms[a]]) for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    zero = {
        a: [names[i] for i in range(len(names)) if min(s["iou"][i] for s in arms[a]) == 0]
        for a in arms
    }
    lines.append(
        "| classes at 0 IoU (any seed) | "
        + " | ".join(", ".join(zero[a]) or "none" for a in arms)
        + " |"
    )
    lines.append(seeds_row(arms))
    missing = [label for arm, (label, _) in THIN_ARMS.items() if arm not in arms]
    if missing:
        lines += ["", "Not run: " + "; ".join(missing) + "."]
    lines += ["", "| comparison (mIoU) | verdict |", "|---|---|"]
    base = [100 * s["miou"] for s in arms.get("pspnet", [])]
    for arm in arms:
        if arm != "pspnet" and base:
            mine = [100 * s["miou"] for s in arms[arm]]
            lines.append(f"| {THIN_ARMS[arm][0]} vs the config as it is | {verdict(mine, base)} |")
    return lines


def finetune_section(out: Path) -> list[str]:
    grid = out / "finetune"
    names = [name for name, _ in TARGET]
    arms = {arm: arm_scores(grid, arm) for arm in TARGET_ARMS}
    arms = {arm: scores for arm, scores in arms.items() if scores}
    lines = [
        "| class | " + " | ".join(TARGET_ARMS[a][0] for a in arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    for index, name in enumerate(names):
        cells = [mean_spread([100 * s["iou"][index] for s in arms[a]]) for a in arms]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [mean_spread([100 * s["miou"] for s in arms[a]]) for a in arms]
    lines.append("| **mIoU** | " + " | ".join(cells) + " |")
    lines.append(seeds_row(arms))
    lines += ["", "| comparison (mIoU) | verdict |", "|---|---|"]
    miou = {arm: [100 * s["miou"] for s in scores] for arm, scores in arms.items()}
    for better, worse in (
        ("init-fresh", "scratch"),
        ("init-by-name", "scratch"),
        ("init-by-name", "init-fresh"),
    ):
        if better in miou and worse in miou:
            lines.append(
                f"| {TARGET_ARMS[better][0]} vs {TARGET_ARMS[worse][0]} | "
                f"{verdict(miou[better], miou[worse])} |"
            )
    lines += [
        "",
        "Training loss (main + 0.4 aux) over the first iterations, mean of the seeds:",
        "",
        "| iteration | " + " | ".join(TARGET_ARMS[a][0] for a in arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    curves = {a: [dict(losses(folder, 100)) for folder in finished(grid, a)] for a in arms}
    for iteration in (5, 10, 20, 30, 50, 75, 100):
        cells = []
        for arm in arms:
            values = [c[iteration] for c in curves[arm] if iteration in c]
            cells.append(f"{statistics.fmean(values):.3f}" if values else "n/a")
        lines.append(f"| {iteration} | " + " | ".join(cells) + " |")
    source = grid / "source-seed0"
    if source.is_dir():
        lines += [
            "",
            f"Source model (first half of train, 11 classes): val mIoU "
            f"{100 * final_val(source)['miou']:.2f}.",
        ]
    return lines


def report(out: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for grid in ("thin", "finetune"):
        for result in sorted((out / grid).glob("*/result.json")):
            folder = RESULTS / grid / result.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(result, folder / "result.json")
            (folder / "val.json").write_text(json.dumps(final_val(result.parent), indent=1))
    text = [
        "# Your own data on CamVid: thin classes and fine-tuning",
        "",
        f"Written by `{command_line()}` from the run folders of `python -m "
        "benchmarks.camvid_own_data thin` and `... finetune`.",
        f"CPU: {cpu_model()}. Cells are mean ± half the spread (max - min) over an arm's "
        "seeds (the `seeds` row), in %. An effect counts only beyond the spread: the two "
        "arms' seed ranges do not overlap.",
        "",
        "## Thin and rare classes",
        "",
        "`configs/camvid_pspnet_r18_cpu.yaml` (ResNet-18 width 16 from scratch, 2,000 "
        "iterations of 8 crops of 192, val at long side 240) on CamVid val (101 images):",
        "",
        *thin_section(out),
        "",
        "## Fine-tuning vs scratch with few labels",
        "",
        *finetune_section(out),
        "",
    ]
    DOC.write_text("\n".join(text))
    print("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["thin", "finetune", "report"])
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--set", nargs="+", default=[], help="overrides for every run")
    parser.add_argument("--arms", nargs="+", choices=list(THIN_ARMS), help="thin: only these")
    args = parser.parse_args()
    EXTRA.extend(args.set)
    if args.experiment == "thin":
        thin(args.out, args.arms)
    else:
        {"finetune": finetune, "report": report}[args.experiment](args.out)


if __name__ == "__main__":
    main()
