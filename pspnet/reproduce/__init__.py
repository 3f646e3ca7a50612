"""Reproducing the paper: ``pspnet reproduce ablation`` runs tables 1 and 2 as a grid."""

from pspnet.reproduce.ablation import BUDGETS, VARIANTS, grid_configs, run_grid

__all__ = ["BUDGETS", "VARIANTS", "grid_configs", "run_grid", "reproduce_ablation"]


def reproduce_ablation(
    dataset: str,
    root: str,
    budget: str,
    out_dir: str,
    seeds: int = 2,
    test_split: str | None = None,
    report_only: bool = False,
    progress=None,
    shard: tuple[int, int] | None = None,
):
    """Run (or resume) the grid, then write ``ablation.md`` and ``ablation.png`` in ``out_dir``.

    ``shard = (I, K)`` trains only every K-th run from the I-th (see
    :func:`pspnet.reproduce.ablation.shard_runs`); the report covers every finished run.
    Returns the paths of the report and the chart.
    """
    from pathlib import Path

    from pspnet.files import make_folder
    from pspnet.reproduce.ablation import finished_results, shard_runs
    from pspnet.reproduce.report import bar_chart, markdown

    out = make_folder(out_dir)
    if not report_only:
        runs = shard_runs(grid_configs(dataset, root, budget, seeds), shard)
        run_grid(out, runs, test_split, progress)
    results = finished_results(out)
    title = f"Ablation on {dataset} ({budget} budget, {seeds} seed(s))"
    report, chart = Path(out) / "ablation.md", Path(out) / "ablation.png"
    report.write_text(markdown(results, title))
    if test_split is not None:
        report.write_text(report.read_text() + "\n" + markdown(results, f"{title}: {test_split}",
                                                               split="test"))  # fmt: skip
    bar_chart(results, chart)
    return report, chart
