"""Where a model fails: scores per image, the worst images as pictures, boundary IoU.

:class:`PerImage` is handed each image's prediction and truth by
:func:`pspnet.engine.evaluate.evaluate`; it keeps one row of scores per image, the ``worst``
lowest-mIoU predictions (nothing else of the images), and the boundary IoU counts when asked.
Boundary IoU (Cheng et al., 2021, "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation") scores each class on the pixels within ``d`` of its contours in truth and
prediction, ``d`` 2% of the image diagonal: mIoU hardly moves when a thin pole is missed, the
boundary IoU does.
"""

from __future__ import annotations

import csv
import heapq
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from pspnet.data.images import read_image
from pspnet.data.presets import IGNORE_INDEX, DatasetPreset
from pspnet.engine.metrics import ConfusionMatrix
from pspnet.files import atomic_write, make_folder
from pspnet.inference.result import UNKNOWN
from pspnet.visualize import colorize, make_grid

BOUNDARY_FRACTION = 0.02  # Cheng et al.: d is 2% of the image diagonal


@dataclass(order=True)
class _Kept:
    """One of the worst images, ordered so the heap's top is the best of them."""

    negative_miou: float
    index: int
    prediction: np.ndarray = field(compare=False)
    truth: np.ndarray = field(compare=False)


@dataclass
class PerImage:
    """Per-image rows, the worst images and boundary IoU counts of one evaluation.

    Args:
        preset: the dataset's classes (names and colours).
        names: each dataset index's image path.
        worst: how many of the lowest-mIoU images to keep for the gallery (0: none).
        boundary: also count boundary IoU.
    """

    preset: DatasetPreset
    names: Sequence[Path]
    worst: int = 0
    boundary: bool = False
    rows: list[dict] = field(default_factory=list)
    kept: list[_Kept] = field(default_factory=list)
    boundary_counts: np.ndarray | None = None  # (2, C): intersections, unions

    def __call__(self, index: int, prediction: torch.Tensor, truth: torch.Tensor) -> None:
        """Score one image: (H, W) predicted labels (255 undecided) and truth."""
        classes = self.preset.num_classes
        matrix = ConfusionMatrix(classes, IGNORE_INDEX)
        matrix.update(prediction.cpu(), truth.cpu(), undecided=UNKNOWN)
        metrics = matrix.compute()
        row = {
            "image": str(self.names[index]),
            "pixel_acc": metrics.pixel_acc,
            "miou": metrics.miou,
        }
        row |= {f"iou_{name}": metrics.iou[c] for c, name in enumerate(self.preset.class_names)}
        self.rows.append(row)
        predicted, target = prediction.cpu().numpy(), truth.cpu().numpy()
        if self.boundary:
            counts = boundary_counts(predicted, target, classes)
            self.boundary_counts = (
                counts if self.boundary_counts is None else self.boundary_counts + counts
            )
        if self.worst:
            score = metrics.miou if not math.isnan(metrics.miou) else 1.0
            entry = _Kept(-score, index, predicted.astype(np.uint8), target.astype(np.uint8))
            if len(self.kept) < self.worst:
                heapq.heappush(self.kept, entry)
            elif entry > self.kept[0]:
                heapq.heapreplace(self.kept, entry)

    def boundary_iou(self) -> np.ndarray | None:
        """Per-class boundary IoU over every image (NaN where a class has no boundary)."""
        if self.boundary_counts is None:
            return None
        intersections, unions = self.boundary_counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(unions > 0, intersections / np.maximum(unions, 1), np.nan)

    def gather(self, world_size: int) -> None:
        """Under torchrun: every rank's rows, kept images and counts, on every rank."""
        if world_size == 1:
            return
        import torch.distributed as dist

        parts: list = [None] * world_size
        dist.all_gather_object(parts, (self.rows, self.kept, self.boundary_counts))
        self.rows = [row for rows, _, _ in parts for row in rows]
        kept = [entry for _, entries, _ in parts for entry in entries]
        self.kept = heapq.nlargest(self.worst, kept) if self.worst else []
        counts = [c for _, _, c in parts if c is not None]
        self.boundary_counts = sum(counts) if counts else None

    def write_csv(self, path: Path) -> Path:
        """One row per image, lowest mIoU first: image, pixel accuracy, mIoU over the classes
        present, each class's IoU (empty where absent)."""
        rows = sorted(self.rows, key=lambda r: (_sortable(r["miou"]), r["image"]))
        fields = list(rows[0]) if rows else ["image", "pixel_acc", "miou"]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, fields)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: _cell(v) for k, v in row.items()})

        atomic_write(path, write)
        return path

    def write_gallery(self, folder: Path) -> list[Path]:
        """The worst images, worst first: image, truth, prediction and errors side by side,
        one PNG each, and ``index.html`` listing them with their scores."""
        folder = make_folder(folder)
        palette = self.preset.palette
        written, items = [], []
        for rank, kept in enumerate(sorted(self.kept, reverse=True), start=1):
            image = read_image(self.names[kept.index])
            if image.shape[:2] != kept.truth.shape:
                image = cv2.resize(image, kept.truth.shape[::-1], interpolation=cv2.INTER_AREA)
            errors = error_picture(image, kept.prediction, kept.truth)
            grid = make_grid(
                [
                    [
                        image,
                        colorize(kept.truth, palette),
                        colorize(kept.prediction, palette),
                        errors,
                    ]
                ],
                ["image", "truth", "prediction", "errors (red)"],
            )
            name = f"{rank:03d}_{Path(self.names[kept.index]).stem}.png"
            atomic_write(folder / name, lambda tmp, grid=grid: grid.save(tmp, format="PNG"))
            written.append(folder / name)
            items.append((name, self.names[kept.index], -kept.negative_miou, kept))
        index = folder / "index.html"
        atomic_write(index, lambda tmp: Path(tmp).write_text(self._index_page(items)))
        return [*written, index]

    def _index_page(self, items) -> str:
        names = self.preset.class_names
        rows = []
        for name, source, miou, kept in items:
            present = sorted({int(v) for v in np.unique(kept.truth) if v < len(names)})
            classes = ", ".join(html.escape(names[c]) for c in present)
            rows.append(
                f"<tr><td><a href='{html.escape(name)}'><img src='{html.escape(name)}' "
                f"width='480'></a></td><td>{html.escape(str(source))}<br>mIoU "
                f"{100 * miou:.1f}<br>classes: {classes}</td></tr>"
            )
        return (
            "<!doctype html><meta charset='utf-8'><title>worst images</title>"
            "<h1>The worst images, lowest mIoU first</h1><table>" + "".join(rows) + "</table>"
        )


def error_picture(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The image in grey, wrong pixels red, ignored ones dark: where the model fails."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    picture = np.repeat(grey[..., None] // 2 + 64, 3, axis=2)
    wrong = (prediction != truth) & (truth != IGNORE_INDEX)
    picture[wrong] = (230, 30, 30)
    picture[truth == IGNORE_INDEX] //= 3
    return picture


def boundary_counts(prediction: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """(2, C) boundary intersections and unions of one image (Cheng et al., 2021)."""
    height, width = truth.shape
    distance = max(1, round(BOUNDARY_FRACTION * math.hypot(height, width)))
    kernel = np.ones((3, 3), dtype=np.uint8)  # as the paper's code erodes
    scored = truth != IGNORE_INDEX
    counts = np.zeros((2, classes), dtype=np.int64)
    for c in np.union1d(np.unique(truth[scored]), np.unique(prediction[scored])):
        if c >= classes:
            continue
        gold = _inner_boundary(truth == c, distance, kernel) & scored
        guess = _inner_boundary(prediction == c, distance, kernel) & scored
        counts[0, c] = np.count_nonzero(gold & guess)
        counts[1, c] = np.count_nonzero(gold | guess)
    return counts


def _inner_boundary(mask: np.ndarray, distance: int, kernel: np.ndarray) -> np.ndarray:
    """The mask's pixels within ``distance`` of its contour: the mask less its erosion."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, kernel, iterations=distance)[1:-1, 1:-1]
    return mask & (eroded == 0)


def _sortable(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return value
