"""``pspnet eval`` as one library call: a checkpoint, or saved predictions, scored on a split.

:func:`evaluate_settings` builds the model and the dataset the settings name, runs the one
inference routine through :func:`pspnet.engine.evaluate.evaluate` (sharded under torchrun)
and returns the metrics with what they were measured on; :func:`write_report` saves them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pspnet.data.presets import PRESETS, ClassOptions, DatasetPreset
from pspnet.engine.metrics import AbsentPolicy, SegmentationMetrics
from pspnet.engine.per_image import PerImage
from pspnet.errors import ConfigError
from pspnet.files import make_folder
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.settings import check_settings, setting


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """``pspnet eval``: mIoU, mean class accuracy and pixel accuracy.

    Attributes:
        checkpoint: model to evaluate: a file, a registry name (pspnet models) or a URL.
        root: dataset root.
        split: the split to score.
        dataset: preset: ade20k, voc, cityscapes, camvid, loveda, potsdam, vaihingen, isaid,
            coco_stuff10k, coco_stuff164k, pascal_context(_59) or custom.
        classes: a custom dataset's classes.
        pred_dir: score saved prediction PNGs instead of a checkpoint.
        gt_dir: ground-truth labels for pred_dir.
        absent: classes absent from ground truth and prediction: left out of the means
            (exclude) or counted as 0 like the official code (zero).
        limit: evaluate the first N images only (0: all).
        out: write metrics.json/.md, confusion.csv/.png here.
        unknown_below: leave pixels whose confidence is under P undecided: scores are over
            the decided pixels, with their coverage (share of labelled pixels decided).
        per_image: write each image's pixel accuracy, mIoU over the classes present and
            per-class IoU to this CSV, lowest mIoU first.
        worst: write a gallery of the N lowest-mIoU images (image, truth, prediction,
            errors) to OUT/worst/, one PNG each and an index page.
        boundary: also report boundary IoU (Cheng et al., 2021) per class: thin structures
            and edges, which mIoU hardly sees.
        inference: inference settings (each replaces the checkpoint's own).
        runtime: device and fast path.
    """

    checkpoint: str | None = None
    root: Path | None = None
    split: str = "val"
    dataset: str | None = setting(None, shown_default="the checkpoint's dataset, else camvid")
    classes: ClassOptions = field(default_factory=ClassOptions)
    pred_dir: Path | None = None
    gt_dir: Path | None = None
    absent: AbsentPolicy = "exclude"
    limit: int = setting(0, low=0)
    out: Path | None = None
    unknown_below: float | None = setting(None, low=0, high=1, metavar="P")
    per_image: Path | None = setting(None, metavar="CSV")
    worst: int = setting(0, low=0, metavar="N")
    boundary: bool = False
    inference: InferenceOverrides = field(default_factory=InferenceOverrides)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.pred_dir is not None and self.gt_dir is None:
            raise ConfigError("--pred-dir needs --gt-dir (the ground-truth label folder)")
        if self.pred_dir is None and (self.checkpoint is None or self.root is None):
            raise ConfigError("give --checkpoint and --root, or --pred-dir and --gt-dir")
        if self.worst and self.out is None:
            raise ConfigError("--worst writes its gallery to OUT/worst/: give --out")
        if self.pred_dir is not None and (self.per_image or self.worst or self.boundary):
            raise ConfigError("--per-image, --worst and --boundary score a checkpoint's run")


@dataclass(frozen=True)
class Evaluation:
    """Metrics and what they were measured on.

    Attributes:
        metrics: mIoU, accuracies and the confusion matrix.
        preset: the dataset's classes.
        source: the checkpoint with its inference settings, or the predictions' folder.
        split: the split scored.
        metadata: the checkpoint's metadata (published mIoU of a registry entry ...).
        per_image: the per-image scores, worst images and boundary counts, when asked for.
    """

    metrics: SegmentationMetrics
    preset: DatasetPreset
    source: str
    split: str
    metadata: dict = field(default_factory=dict)
    per_image: PerImage | None = None

    def boundary_table(self) -> str | None:
        """Boundary IoU per class and its mean, in percent, as a markdown table."""
        scores = None if self.per_image is None else self.per_image.boundary_iou()
        if scores is None:
            return None
        lines = ["| class | boundary IoU | IoU |", "|---|---|---|"]
        for name, boundary, iou in zip(self.preset.class_names, scores, self.metrics.iou):
            lines.append(f"| {name} | {_percent(boundary)} | {_percent(iou)} |")
        mean = float(np.nanmean(scores)) if not np.isnan(scores).all() else float("nan")
        lines.append(f"| **mean** | {_percent(mean)} | {_percent(self.metrics.miou)} |")
        return "\n".join(lines)

    def title(self) -> str:
        return f"{self.source}, {self.preset.name} {self.split}"

    def published_line(self) -> str | None:
        """The publisher's mIoU beside the one measured here, for a registry checkpoint."""
        if "published_miou" not in self.metadata:
            return None
        meta = self.metadata
        line = f"published mIoU of {meta['published_name']}: {meta['published_miou']}"
        if "published_miou_ms_flip" in meta:
            line += f" single-scale, {meta['published_miou_ms_flip']} multi-scale + flip"
        return line + f"; measured here: {100 * self.metrics.miou:.2f}"


Progress = Callable[[int, int], None]


def evaluate_settings(settings: EvalSettings, progress: Progress | None = None) -> Evaluation:
    """Score what ``settings`` name: a checkpoint on a split (ranks share it under torchrun),
    or saved prediction PNGs against ground truth.

    Raises:
        ConfigError: a model whose class count is not the dataset's.
        DatasetError: missing or unreadable files, naming them.
    """
    from pspnet.engine.evaluate import score_predictions

    if settings.pred_dir is not None:
        preset = settings.classes.preset(settings.dataset or "camvid")
        matrix = score_predictions(settings.pred_dir, settings.gt_dir, preset, progress)
        source = f"predictions in {settings.pred_dir}"
        return Evaluation(matrix.compute(absent=settings.absent), preset, source, settings.split)
    return _evaluate_checkpoint(settings, progress)


def _evaluate_checkpoint(settings: EvalSettings, progress: Progress | None) -> Evaluation:
    from pspnet.data.datasets import SegmentationDataset
    from pspnet.data.transforms import AugmentConfig, EvalTransform
    from pspnet.engine.distributed import setup_process
    from pspnet.engine.evaluate import evaluate
    from pspnet.inference import Segmenter

    process = setup_process(settings.runtime.device)  # under torchrun: disjoint shards
    runtime = dataclasses.replace(settings.runtime, device=str(process.device))
    segmenter = Segmenter.from_checkpoint(settings.checkpoint, runtime, settings.inference)
    metadata = segmenter.checkpoint.metadata
    named = metadata.get("dataset") if metadata.get("dataset") in PRESETS else None
    preset = settings.classes.preset(settings.dataset or named or "camvid", settings.root)
    if segmenter.num_classes != preset.num_classes:
        raise ConfigError(
            f"{settings.checkpoint}: the model predicts {segmenter.num_classes} classes but "
            f"the {preset.name!r} dataset has {preset.num_classes}; pick the matching --dataset"
        )
    # The model's bands, normalised as its training normalised them.
    transform = EvalTransform(AugmentConfig(normalization=segmenter.normalization))
    dataset = SegmentationDataset(settings.root, settings.split, preset, transform)
    per_image = None
    if settings.per_image or settings.worst or settings.boundary:
        names = [image for image, _ in dataset.pairs]
        per_image = PerImage(preset, names, worst=settings.worst, boundary=settings.boundary)
    matrix = evaluate(
        segmenter.network,
        dataset,
        segmenter.inference,
        limit=settings.limit,
        progress=progress,
        rank=process.rank,
        world_size=process.world_size,
        unknown_below=settings.unknown_below,
        on_image=per_image,
    )
    if per_image is not None:
        per_image.gather(process.world_size)
    inference = segmenter.inference
    scales = ",".join(f"{s:g}" for s in inference.scales)
    source = (
        f"{settings.checkpoint} ({inference.mode}, crop {inference.crop_size[0]}x"
        f"{inference.crop_size[1]}, scales {scales}, flip {'on' if inference.flip else 'off'})"
    )
    metrics = matrix.compute(absent=settings.absent)
    return Evaluation(metrics, preset, source, settings.split, metadata, per_image)


def write_report(evaluation: Evaluation, out: str | Path) -> list[Path]:
    """metrics.json, metrics.md, confusion.csv and confusion.png in ``out``; their paths."""
    from pspnet.visualize import confusion_heatmap

    out = make_folder(out)
    names = list(evaluation.preset.class_names)
    metrics = evaluation.metrics
    summary = metrics.to_dict()
    boundary = None if evaluation.per_image is None else evaluation.per_image.boundary_iou()
    if boundary is not None:
        summary["boundary_iou"] = [float(v) for v in boundary]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    report = metrics.to_markdown(names)
    if boundary is not None:
        report += "\n\nBoundary IoU (Cheng et al., 2021):\n\n" + evaluation.boundary_table()
    (out / "metrics.md").write_text(f"# {evaluation.title()}\n\n{report}")
    metrics.save_csv(out / "confusion.csv", names)
    confusion_heatmap(metrics.matrix, evaluation.preset.class_names).save(out / "confusion.png")
    names = ("metrics.json", "metrics.md", "confusion.csv", "confusion.png")
    written = [out / name for name in names]
    per_image = evaluation.per_image
    if per_image is not None and per_image.worst:
        written += per_image.write_gallery(out / "worst")
    return written


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"
