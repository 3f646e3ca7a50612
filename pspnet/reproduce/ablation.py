"""The paper's ablation grid (Zhao et al., 2017, tables 1 and 2) as ordinary training runs.

Table 1 varies the pyramid: the FCN baseline (no pyramid), one bin or bins 1, 2, 3, 6, max or
average pooling, with or without the 1x1 dimension reduction (DR). Table 2 varies the
auxiliary loss weight of the baseline (no pyramid). Every
variant is one run folder trained with the same budget, recipe and seeds, then scored on
the validation split (and a test split when given). A finished run leaves ``result.json``;
rerunning the grid skips those and resumes the interrupted one from its ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pspnet.config import DataConfig, InferenceConfig, OptimConfig, TrainConfig
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.engine.evaluate import evaluate
from pspnet.engine.train import train
from pspnet.errors import ConfigError
from pspnet.files import atomic_write
from pspnet.inference.protocol import Network
from pspnet.models.pspnet import ModelConfig

Budget = Literal["cpu", "gpu", "tiny"]
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Variant:
    """One row of the paper's tables: what changes from the default network and recipe.

    Attributes:
        name: the run folder's name.
        table: 1 or 2, the paper's table.
        label: the paper's row label.
        model: ModelConfig fields set for this row.
        aux_weight: the auxiliary loss weight.
    """

    name: str
    table: int
    label: str
    model: dict[str, Any] = field(default_factory=dict)
    aux_weight: float = 0.4


def _pyramid(bins: tuple[int, ...], pooling: str, reduction: bool) -> dict[str, Any]:
    return {"bins": bins, "pooling": pooling, "reduction": reduction}


VARIANTS: tuple[Variant, ...] = (
    Variant("fcn", 1, "ResNet50-Baseline", {"use_ppm": False}),
    Variant("b1-max", 1, "ResNet50+B1+MAX", _pyramid((1,), "max", False)),
    Variant("b1-avg", 1, "ResNet50+B1+AVE", _pyramid((1,), "avg", False)),
    Variant("b1236-max", 1, "ResNet50+B1236+MAX", _pyramid((1, 2, 3, 6), "max", False)),
    Variant("b1236-avg", 1, "ResNet50+B1236+AVE", _pyramid((1, 2, 3, 6), "avg", False)),
    Variant("b1236-max-dr", 1, "ResNet50+B1236+MAX+DR", _pyramid((1, 2, 3, 6), "max", True)),
    Variant("b1236-avg-dr", 1, "ResNet50+B1236+AVE+DR", _pyramid((1, 2, 3, 6), "avg", True)),
    # Table 2 varies the auxiliary loss weight of the baseline (its alpha = 0.4 row equals
    # table 1's ResNet50-Baseline, 37.23 / 78.01), so alpha 0.4 is the run above.
    Variant("aux-0", 2, "ResNet50 (without AL)", {"use_ppm": False}, aux_weight=0.0),
    Variant("aux-0.3", 2, "ResNet50 (with α = 0.3)", {"use_ppm": False}, aux_weight=0.3),
    Variant("aux-0.6", 2, "ResNet50 (with α = 0.6)", {"use_ppm": False}, aux_weight=0.6),
    Variant("aux-0.9", 2, "ResNet50 (with α = 0.9)", {"use_ppm": False}, aux_weight=0.9),
)
# Table 2's rows in the paper's order: (label, variant name).
TABLE2 = (
    ("ResNet50 (without AL)", "aux-0"),
    ("ResNet50 (with α = 0.3)", "aux-0.3"),
    ("ResNet50 (with α = 0.4)", "fcn"),
    ("ResNet50 (with α = 0.6)", "aux-0.6"),
    ("ResNet50 (with α = 0.9)", "aux-0.9"),
)


@dataclass(frozen=True)
class BudgetSettings:
    """How big each run of the grid is.

    Attributes:
        backbone: the ResNet (the paper's is resnet50; smaller here to fit the budget).
        base_width: its width (64 is the published one).
        iterations: optimiser steps per run.
        batch_size: images per step.
        crop_size: training crop (height, width).
        scale: random scale range of the augmentation.
        lr: base learning rate (new layers x10).
        evaluation: how validation runs.
        device: where it trains.
        workers: data-loading processes per run.
    """

    backbone: str
    base_width: int
    iterations: int
    batch_size: int
    crop_size: tuple[int, int]
    scale: tuple[float, float]
    lr: float
    evaluation: InferenceConfig
    device: str
    workers: int = 2


# cpu: the 22 runs (11 variants x 2 seeds) in hours on a 2-core CPU (docs/ablation_camvid_cpu.md
# has the time measured), resumable run by run; CamVid at reduced resolution like
# configs/camvid_pspnet_r18_cpu.yaml. gpu: the grid sized for minutes on one GPU, run as two
# shards side by side (benchmarks/gpu/ablation.sh): the same small network, wider and trained
# on twice the images per step for twice as long, since a ResNet-50 cannot train 22 times in
# that time. tiny: a few steps, for tests.
BUDGETS: dict[str, BudgetSettings] = {
    "cpu": BudgetSettings(
        "resnet18",
        16,
        1000,
        8,
        (192, 192),
        (0.35, 1.0),
        0.02,
        InferenceConfig(mode="whole", base_size=240, flip=False),
        "cpu",
    ),
    "gpu": BudgetSettings(
        "resnet18",
        32,
        2000,
        16,
        (256, 256),
        (0.35, 1.0),
        0.02,
        InferenceConfig(mode="whole", base_size=360, flip=False),
        "cuda",
        workers=6,
    ),
    "tiny": BudgetSettings(
        "resnet18",
        4,
        3,
        2,
        (32, 32),
        (0.5, 1.0),
        0.01,
        InferenceConfig(mode="whole", flip=False),
        "cpu",
        workers=0,
    ),
}


@dataclass(frozen=True)
class RunResult:
    """A finished run's scores (fractions), as written to ``result.json``."""

    variant: str
    seed: int
    val: dict[str, float]
    test: dict[str, float] | None
    seconds: float


def grid_configs(
    dataset: str,
    root: str | Path,
    budget: Budget,
    seeds: int,
    variants: tuple[Variant, ...] = VARIANTS,
) -> list[tuple[str, Variant, int, TrainConfig]]:
    """(run name, variant, seed, training config) of every run of the grid, seeds innermost."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    settings = BUDGETS[budget]
    classes = get_preset(dataset).num_classes
    runs = []
    for variant in variants:
        for seed in range(seeds):
            model = ModelConfig(
                classes,
                backbone=settings.backbone,
                base_width=settings.base_width,
                **variant.model,
            )
            config = TrainConfig(
                model=model,
                data=DataConfig(
                    dataset=dataset,
                    root=str(root),
                    crop_size=settings.crop_size,
                    scale=settings.scale,
                    workers=settings.workers,
                ),
                optim=OptimConfig(lr=settings.lr),
                evaluation=settings.evaluation,
                iterations=settings.iterations,
                batch_size=settings.batch_size,
                aux_weight=variant.aux_weight,
                checkpoint_every=max(1, settings.iterations // 10),
                log_every=max(1, settings.iterations // 50),
                seed=seed,
                device=settings.device,
            )
            runs.append((f"{variant.name}-seed{seed}", variant, seed, config))
    return runs


def shard_runs(runs: list, shard: tuple[int, int] | None) -> list:
    """Every ``count``-th run from ``index`` (``shard = (index, count)``); all when None.

    Shards run side by side (processes sharing a GPU, or machines sharing a folder) write
    disjoint run folders into one grid folder; ``--report-only`` then reads them all.
    """
    if shard is None:
        return runs
    index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"shard must be I/K with 0 <= I < K, got {index}/{count}")
    return runs[index::count]


def run_grid(
    out_dir: str | Path,
    runs: list[tuple[str, Variant, int, TrainConfig]],
    test_split: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> list[RunResult]:
    """Train and score every run not finished yet; returns every run's result.

    Args:
        out_dir: the grid's folder; each run is a subfolder with its ``result.json``.
        runs: from :func:`grid_configs`.
        test_split: also score this split when given.
        progress: receives ``{"run", "index", "total", "iteration", "iterations",
            "eta_seconds"}`` as runs train (the ETA covers the rest of the grid).
    """
    out_dir = Path(out_dir)
    results, clock = [], _GridClock(runs)
    for index, (name, variant, seed, config) in enumerate(runs):
        folder = out_dir / name
        if (folder / RESULT_FILE).is_file():
            results.append(read_result(folder / RESULT_FILE))
            clock.skip(config.iterations)
            continue
        start = time.perf_counter()

        def on_event(event: dict, name=name, index=index, config=config) -> None:
            if event["kind"] == "step" and progress is not None:
                progress(
                    {
                        "run": name,
                        "index": index,
                        "total": len(runs),
                        "iteration": event["iteration"],
                        "iterations": config.iterations,
                        "eta_seconds": clock.eta(event["iteration"]),
                    }
                )
            if event["kind"] == "start":
                clock.start(event["iteration"])

        done = train(config, folder, resume=True, callback=on_event)
        test = None if test_split is None else _score(folder, config, test_split)
        result = RunResult(
            variant.name, seed, _summary(done.final_metrics), test, time.perf_counter() - start
        )
        text = json.dumps(dataclasses.asdict(result), indent=2)
        atomic_write(folder / RESULT_FILE, lambda tmp, text=text: Path(tmp).write_text(text))
        clock.finish(config.iterations)
        results.append(result)
    return results


def read_result(path: Path) -> RunResult:
    return RunResult(**json.loads(path.read_text()))


def finished_results(out_dir: str | Path) -> list[RunResult]:
    """The results of every finished run in the grid's folder (for ``--report-only``)."""
    return [read_result(p) for p in sorted(Path(out_dir).glob(f"*/{RESULT_FILE}"))]


def _summary(metrics: dict) -> dict[str, float]:
    return {key: float(metrics[key]) for key in ("miou", "mean_acc", "pixel_acc")}


def _score(folder: Path, config: TrainConfig, split: str) -> dict[str, float]:
    from pspnet.checkpoints import load_model

    model = load_model(folder / "last.pt", config.device if config.device != "auto" else "cpu")
    dataset = SegmentationDataset(config.data.root, split, config.data.preset())
    matrix = evaluate(Network.of(model), dataset, config.evaluation)
    return _summary(matrix.compute().to_dict())


class _GridClock:
    """Seconds per iteration measured so far, times the iterations left in the grid."""

    def __init__(self, runs: list):
        self.left = sum(config.iterations for *_, config in runs)
        self.seconds, self.steps = 0.0, 0
        self.tick, self.first = None, 0

    def start(self, iteration: int) -> None:
        self.tick, self.first = time.perf_counter(), iteration
        self.left -= iteration  # a resumed run starts part-way

    def eta(self, iteration: int) -> float | None:
        done = self.steps + iteration - self.first
        elapsed = self.seconds + time.perf_counter() - self.tick
        return None if done == 0 else elapsed / done * (self.left - (iteration - self.first))

    def finish(self, iterations: int) -> None:
        self.seconds += time.perf_counter() - self.tick
        self.steps += iterations - self.first
        self.left -= iterations - self.first

    def skip(self, iterations: int) -> None:
        self.left -= iterations
