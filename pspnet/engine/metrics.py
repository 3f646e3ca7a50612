"""Segmentation scores from one confusion matrix: IoU, class accuracy and pixel accuracy.

Every metric the project reports comes from :class:`ConfusionMatrix`; nothing else counts
pixels. Definitions, per class c over every scored pixel (label != ``ignore_index``):

* TP = pixels of ground truth c predicted c; FP = predicted c, ground truth another class;
  FN = ground truth c, predicted another class.
* IoU(c) = TP / (TP + FP + FN); class accuracy(c) = TP / (TP + FN) (the class's recall).
* pixel accuracy = sum over classes of TP / number of scored pixels.
* A class with TP + FP + FN = 0 (in neither ground truth nor prediction) is *absent*: its IoU
  is NaN. A class with no ground-truth pixels (TP + FN = 0) has NaN accuracy.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from pspnet.data.presets import IGNORE_INDEX

AbsentPolicy = Literal["exclude", "zero"]


class ConfusionMatrix:
    """Counts of (ground truth, prediction) pairs, accumulated over images and ranks.

    Args:
        num_classes: C, the number of scored classes; labels are 0 .. C-1.
        ignore_index: label value of pixels left out of every score.
        device: where the counts live; the device of the tensors passed to :meth:`update`
            (CUDA for NCCL's ``all_reduce``).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu"
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # Labelled pixels the prediction left undecided ("unknown"), scored on nothing.
        self.undecided = torch.zeros((), dtype=torch.int64, device=device)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, undecided: int | None = None
    ) -> None:
        """Add one batch of predicted and ground-truth labels (integer tensors, equal shape).

        Args:
            pred: predicted class indices in 0 .. C-1, any shape.
            target: ground-truth labels of the same shape; ``ignore_index`` pixels are skipped.
            undecided: the prediction's "unknown" value; such pixels are counted apart
                (:attr:`undecided`) and left out of every score.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must hold integer labels; take argmax(0) first")
        valid = target != self.ignore_index
        if undecided is not None:
            skipped = valid & (pred == undecided)
            self.undecided += skipped.sum().to(self.undecided.device)
            valid &= ~skipped
        truth = target[valid].to(self.matrix.device, torch.int64)
        guess = pred[valid].to(self.matrix.device, torch.int64)
        self._check_range(truth, "target", "check the dataset's label mapping and ignore_index")
        self._check_range(guess, "pred", "the model has more outputs than num_classes")
        # Row = ground truth, column = prediction, so the flat index is truth * C + guess.
        counts = torch.bincount(truth * self.num_classes + guess, minlength=self.num_classes**2)
        self.matrix += counts.view(self.num_classes, self.num_classes)  # (C, C)

    def _check_range(self, labels: torch.Tensor, name: str, fix: str) -> None:
        if labels.numel() == 0:
            return
        low, high = torch.aminmax(labels)
        if low < 0 or high >= self.num_classes:
            raise ValueError(
                f"{name} holds labels in [{int(low)}, {int(high)}], outside "
                f"0..{self.num_classes - 1} and not ignore_index {self.ignore_index}: {fix}"
            )

    def all_reduce(self) -> None:
        """Sum the counts over every torch.distributed rank; nothing without a process group."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
            dist.all_reduce(self.undecided, op=dist.ReduceOp.SUM)

    def reset(self) -> None:
        self.matrix.zero_()
        self.undecided.zero_()

    def compute(self, absent: AbsentPolicy = "exclude") -> SegmentationMetrics:
        """Scores of the counts so far (see the module docstring for the definitions).

        Args:
            absent: ``"exclude"`` leaves absent classes (NaN IoU) and classes without
                ground truth (NaN accuracy) out of mIoU and mean accuracy; ``"zero"`` averages
                them in as 0 over all C classes, as hszhao/semseg's ``I / (U + 1e-10)`` does.
        """
        if absent not in ("exclude", "zero"):
            raise ValueError(f"absent must be 'exclude' or 'zero', got {absent!r}")
        matrix = self.matrix.cpu().numpy().copy()  # (C, C), a snapshot: rows ground truth
        tp = np.diag(matrix).astype(np.float64)
        truth = matrix.sum(axis=1)  # TP + FN
        union = truth + matrix.sum(axis=0) - tp  # TP + FP + FN
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(truth > 0, tp / truth, np.nan)
        total = truth.sum()
        labelled = total + int(self.undecided)
        return SegmentationMetrics(
            miou=_mean(iou, absent),
            mean_acc=_mean(acc, absent),
            pixel_acc=float(tp.sum() / total) if total > 0 else math.nan,
            iou=tuple(float(v) for v in iou),
            acc=tuple(float(v) for v in acc),
            absent=absent,
            matrix=matrix,
            coverage=float(total / labelled) if labelled > 0 else math.nan,
        )


def _mean(values: np.ndarray, absent: AbsentPolicy) -> float:
    if absent == "zero":
        return float(np.nan_to_num(values, nan=0.0).mean())
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else math.nan


@dataclass(frozen=True)
class SegmentationMetrics:
    """Scores of one confusion matrix; fractions in [0, 1], NaN where undefined.

    Attributes:
        miou: mean IoU over present classes (``absent="exclude"``) or over all classes.
        mean_acc: mean class accuracy, TP / (TP + FN), likewise averaged.
        pixel_acc: correctly labelled scored pixels / scored pixels.
        iou: per-class IoU, TP / (TP + FP + FN); NaN for a class absent from both.
        acc: per-class accuracy; NaN for a class without ground-truth pixels.
        absent: how the means treated NaN classes, ``"exclude"`` or ``"zero"``.
        matrix: the (C, C) int64 counts, rows ground truth, columns prediction.
        coverage: decided pixels / labelled pixels (1 unless predictions hold "unknown"); the
            other scores are over the decided pixels.
    """

    miou: float
    mean_acc: float
    pixel_acc: float
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    absent: AbsentPolicy
    matrix: np.ndarray = field(repr=False, compare=False)
    coverage: float = 1.0

    @property
    def num_classes(self) -> int:
        return len(self.iou)

    def to_dict(self) -> dict:
        """Summary and per-class scores as plain floats (NaN kept); the matrix is left out."""
        return {
            "miou": self.miou,
            "mean_acc": self.mean_acc,
            "pixel_acc": self.pixel_acc,
            "iou": list(self.iou),
            "acc": list(self.acc),
            "absent": self.absent,
            "coverage": self.coverage,
        }

    def to_markdown(self, class_names: Sequence[str] | None = None) -> str:
        """A summary table and a per-class IoU / accuracy table, in percent.

        Args:
            class_names: one name per class; ``class <i>`` when None.
        """
        names = _names(class_names, self.num_classes)
        means = "absent classes excluded" if self.absent == "exclude" else "absent classes as 0"
        scores = [_percent(self.miou), _percent(self.mean_acc), _percent(self.pixel_acc)]
        header, rule = "| mIoU | mAcc | pixel acc |", "|---:|---:|---:|"
        if self.coverage < 1:
            header, rule = header + " coverage |", rule + "---:|"
            scores.append(_percent(self.coverage))
        lines = [
            header,
            rule,
            "| " + " | ".join(scores) + " |",
            "",
            f"Percent; means over {self.num_classes} classes, {means}; n/a: undefined."
            + (" Scores over the decided pixels." if self.coverage < 1 else ""),
            "",
            "| # | class | IoU | acc |",
            "|---:|:---|---:|---:|",
        ]
        for index, (name, iou, acc) in enumerate(zip(names, self.iou, self.acc, strict=True)):
            lines.append(f"| {index} | {name} | {_percent(iou)} | {_percent(acc)} |")
        return "\n".join(lines) + "\n"

    def save_csv(self, path: str | Path, class_names: Sequence[str] | None = None) -> None:
        """Write the confusion matrix as CSV: a header of predicted names, a row per truth.

        Args:
            path: output file.
            class_names: one name per class; ``class <i>`` when None.
        """
        names = _names(class_names, self.num_classes)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ground truth \\ prediction", *names])
            for name, row in zip(names, self.matrix, strict=True):
                writer.writerow([name, *(int(v) for v in row)])


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [f"class {i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
    return [str(name) for name in class_names]


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"
