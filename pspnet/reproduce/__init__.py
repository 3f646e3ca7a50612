"""Reproducing the paper: ``pspnet reproduce ablation`` runs tables 1 and 2 as a grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pspnet.errors import ConfigError
from pspnet.reproduce.ablation import BUDGETS, VARIANTS, Budget, grid_configs, run_grid
from pspnet.settings import check_settings, setting

__all__ = [
    "BUDGETS",
    "VARIANTS",
    "AblationSettings",
    "grid_configs",
    "reproduce_ablation",
    "run_grid",
]


def reproduce_ablation(
    settings: AblationSettings, progress: Callable[[dict], None] | None = None
) -> tuple[Path, Path]:
    """Run (or resume) the grid, then write ``ablation.md`` and ``ablation.png`` in its folder.

    ``settings.shard = (I, K)`` trains only every K-th run from the I-th (see
    :func:`pspnet.reproduce.ablation.shard_runs`); the report covers every finished run.

    Args:
        settings: the dataset, budget, seeds, shard and folder of the grid.
        progress: called with each run's progress events.

    Returns:
        The paths of the report and the chart.
    """
    from pspnet.files import make_folder
    from pspnet.reproduce.ablation import finished_results, shard_runs
    from pspnet.reproduce.report import bar_chart, markdown

    out = make_folder(settings.out)
    if not settings.report_only:
        root = str(settings.root)
        configs = grid_configs(settings.dataset, root, settings.budget, settings.seeds)
        run_grid(out, shard_runs(configs, settings.shard), settings.test_split, progress)
    results = finished_results(out)
    title = f"Ablation on {settings.dataset} ({settings.budget} budget, {settings.seeds} seed(s))"
    report, chart = out / "ablation.md", out / "ablation.png"
    text = markdown(results, title)
    if settings.test_split is not None:
        text += "\n" + markdown(results, f"{title}: {settings.test_split}", split="test")
    report.write_text(text)
    bar_chart(results, chart)
    return report, chart


def shard_spec(text: str) -> tuple[int, int]:
    """``I/K`` with 0 <= I < K (``--shard 0/2``); raises ValueError."""
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise ValueError(f"expected I/K such as 0/2, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"expected I/K with 0 <= I < K, got {text!r}")
    return shard


@dataclass(frozen=True, kw_only=True)
class AblationSettings:
    """``pspnet reproduce ablation``: the paper's pyramid and auxiliary-loss ablations.

    Attributes:
        dataset: dataset preset.
        root: dataset root (needed to train; not with --report-only).
        budget: run size: cpu (a small ResNet-18, hours on 2 cores), gpu (one GPU, minutes),
            tiny (tests); the ablation documentation has the times measured.
        shard: train only every K-th run from the I-th (0-based): K processes or machines
            share one grid folder.
        out: grid folder (resumable).
        seeds: seeds per run.
        test_split: also score this split (e.g. test).
        report_only: rebuild the report from finished runs.
    """

    dataset: str = "camvid"
    root: Path | None = None
    budget: Budget = "cpu"
    shard: tuple[int, int] | None = setting(None, parse=shard_spec, metavar="I/K")
    out: Path
    seeds: int = setting(2, low=1)
    test_split: str | None = None
    report_only: bool = False

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.report_only and self.root is None:
            raise ConfigError("--root is needed to train the grid (or --report-only)")
