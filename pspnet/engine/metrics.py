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
from PIL import Image, ImageDraw, ImageFont

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
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of predicted and ground-truth labels (integer tensors, equal shape).

        Args:
            pred: predicted class indices in 0 .. C-1, any shape.
            target: ground-truth labels of the same shape; ``ignore_index`` pixels are skipped.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must hold integer labels; take argmax(0) first")
        valid = target != self.ignore_index
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

    def reset(self) -> None:
        self.matrix.zero_()

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
        return SegmentationMetrics(
            miou=_mean(iou, absent),
            mean_acc=_mean(acc, absent),
            pixel_acc=float(tp.sum() / total) if total > 0 else math.nan,
            iou=tuple(float(v) for v in iou),
            acc=tuple(float(v) for v in acc),
            absent=absent,
            matrix=matrix,
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
    """

    miou: float
    mean_acc: float
    pixel_acc: float
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    absent: AbsentPolicy
    matrix: np.ndarray = field(repr=False, compare=False)

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
        }

    def to_markdown(self, class_names: Sequence[str] | None = None) -> str:
        """A summary table and a per-class IoU / accuracy table, in percent.

        Args:
            class_names: one name per class; ``class <i>`` when None.
        """
        names = _names(class_names, self.num_classes)
        means = "absent classes excluded" if self.absent == "exclude" else "absent classes as 0"
        lines = [
            "| mIoU | mAcc | pixel acc |",
            "|---:|---:|---:|",
            f"| {_percent(self.miou)} | {_percent(self.mean_acc)} | {_percent(self.pixel_acc)} |",
            "",
            f"Percent; means over {self.num_classes} classes, {means}; n/a: undefined.",
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

    def save_heatmap(self, path: str | Path, class_names: Sequence[str] | None = None) -> None:
        """Write a PNG heat map of the row-normalised matrix (each row sums to 1).

        Args:
            path: output PNG file.
            class_names: one name per class; ``class <i>`` when None.
        """
        _draw_confusion(self.matrix, _names(class_names, self.num_classes)).save(path)


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [f"class {i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
    return [str(name) for name in class_names]


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


# Nine evenly spaced stops of matplotlib's viridis (checked against matplotlib), a perceptually
# uniform ramp legible in grey scale and to colour-blind readers; interpolating them linearly
# stays within 17/255 of the full map.
_VIRIDIS = np.array(
    [
        (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
        (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37),
    ],
    dtype=np.float64,
)  # fmt: skip
_NO_TRUTH_GREY = (200, 200, 200)


def _viridis(values: np.ndarray) -> np.ndarray:
    """Colours (..., 3) uint8 of values in [0, 1], interpolated between the stops."""
    position = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(position.astype(np.int64), len(_VIRIDIS) - 2)
    weight = (position - low)[..., None]
    return np.rint(_VIRIDIS[low] * (1 - weight) + _VIRIDIS[low + 1] * weight).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _short(name: str, limit: int = 20) -> str:
    return name if len(name) <= limit else name[: limit - 2] + ".."


def _rotated(text: str, font: ImageFont.ImageFont, fill: tuple[int, int, int]) -> Image.Image:
    """White-backed text turned 90 degrees counter-clockwise (reads bottom to top)."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right + 2, bottom + 2), "white")
    ImageDraw.Draw(image).text((1, 1), text, font=font, fill=fill)
    return image.rotate(90, expand=True)


def _draw_confusion(matrix: np.ndarray, names: list[str]) -> Image.Image:
    """The heat map: cells scaled to the class count, every k-th label when cells are small."""
    count = len(names)
    cell = int(np.clip(1200 // count, 8, 48))
    label_font = _font(int(np.clip(round(cell * 0.75), 11, 15)))
    step = math.ceil((label_font.size + 3) / cell)  # label every step-th class when dense
    shown = {i: _short(names[i]) for i in range(0, count, step)}
    label_width = max(int(label_font.getlength(t)) for t in shown.values())
    title_font, axis_font = _font(18), _font(14)
    pad, side = 16, count * cell
    left = pad + 20 + label_width + 6
    top = pad + 26 + 20 + label_width + 6
    width, height = left + side + 110, top + side + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), "Confusion matrix, row-normalised", font=title_font, fill="black")
    draw.text(
        (pad + title_font.getlength("Confusion matrix, row-normalised") + 12, pad + 3),
        "(rows: ground truth, columns: prediction)", font=axis_font, fill=(90, 90, 90),
    )  # fmt: skip
    _draw_cells(image, matrix, left, top, cell)
    for index, text in shown.items():
        middle = index * cell + cell // 2
        draw.text((left - 6, top + middle), text, font=label_font, fill="black", anchor="rm")
        draw.line([(left - 4, top + middle), (left - 1, top + middle)], fill="black")
        column = _rotated(text, label_font, (0, 0, 0))
        image.paste(column, (left + middle - column.width // 2, top - 6 - column.height))
        draw.line([(left + middle, top - 4), (left + middle, top - 1)], fill="black")
    draw.text((left + side // 2, pad + 30), "prediction", font=axis_font, fill="black", anchor="mt")
    axis = _rotated("ground truth", axis_font, (0, 0, 0))
    image.paste(axis, (pad, top + side // 2 - axis.height // 2))
    _draw_colour_bar(image, left + side + 24, top, side)
    draw.text(
        (left, top + side + 10),
        f"{count} classes; grey rows: no ground-truth pixels"
        + (f"; one class in {step} named" if step > 1 else ""),
        font=axis_font, fill=(90, 90, 90),
    )  # fmt: skip
    return image


def _draw_cells(image: Image.Image, matrix: np.ndarray, left: int, top: int, cell: int) -> None:
    """Cell colours from the row fractions; the percentage written in cells big enough."""
    totals = matrix.sum(axis=1, keepdims=True)  # (C, 1) ground-truth pixels per class
    fractions = matrix / np.maximum(totals, 1)  # (C, C), rows sum to 1 where defined
    colours = _viridis(fractions)  # (C, C, 3)
    colours[totals[:, 0] == 0] = _NO_TRUTH_GREY
    pixels = colours.repeat(cell, axis=0).repeat(cell, axis=1)  # (C*cell, C*cell, 3)
    image.paste(Image.fromarray(pixels), (left, top))
    if cell < 30:
        return
    draw, font = ImageDraw.Draw(image), _font(int(cell * 0.36))
    for (row, column), value in np.ndenumerate(fractions):
        percent = round(100 * value)
        if percent == 0:
            continue
        centre = (left + column * cell + cell // 2, top + row * cell + cell // 2)
        ink = "black" if value > 0.6 else "white"
        draw.text(centre, str(percent), font=font, fill=ink, anchor="mm")


def _draw_colour_bar(image: Image.Image, x: int, top: int, length: int) -> None:
    ramp = _viridis(np.linspace(1.0, 0.0, length))  # (length, 3), top is 1
    bar = np.repeat(ramp[:, None, :], 18, axis=1)  # (length, 18, 3)
    image.paste(Image.fromarray(bar), (x, top))
    draw, font = ImageDraw.Draw(image), _font(12)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + round((1 - fraction) * (length - 1))
        draw.line([(x + 18, y), (x + 22, y)], fill="black")
        draw.text((x + 25, y), f"{round(100 * fraction)}%", font=font, fill="black", anchor="lm")
