"""Scoring a model on a dataset: the shared inference routine feeding one confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pspnet.config import InferenceConfig
from pspnet.data.labels import read_label
from pspnet.data.presets import IGNORE_INDEX, DatasetPreset
from pspnet.engine.metrics import ConfusionMatrix
from pspnet.errors import DatasetError
from pspnet.inference.protocol import UNKNOWN, Network, segment_tensor
from pspnet.readahead import in_order

PREFETCH = 2  # samples decoded ahead of the network


def evaluate(
    network: Network,
    dataset: Dataset,
    inference: InferenceConfig,
    *,
    ignore_index: int = IGNORE_INDEX,
    limit: int = 0,
    progress: Callable[[int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    unknown_below: float | None = None,
    on_image: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> ConfusionMatrix:
    """Run ``network`` over ``dataset`` and return the confusion matrix (summed over ranks).

    Args:
        network: the model (``Network.of(model)`` for a PSPNet in eval mode).
        dataset: yields (normalised image (3, H, W), label (H, W)); labels at full size.
        inference: whole/slide, scales and flip.
        ignore_index: label value excluded from the scores.
        limit: score only the first ``limit`` images (0: all).
        progress: called with (images done, total) on this rank.
        rank: this process's rank; ranks score interleaved shards.
        world_size: number of processes.
        unknown_below: leave pixels under this confidence undecided: they are scored on
            nothing and counted in ``matrix.undecided`` (coverage = decided / labelled).
        on_image: called as ``on_image(index, predicted labels, truth)`` for each image
            (per-image scores, see :class:`pspnet.engine.per_image.PerImage`).
    """
    total = len(dataset) if limit <= 0 else min(limit, len(dataset))
    indices = range(rank, total, world_size)
    matrix = ConfusionMatrix(network.num_classes, ignore_index, device=network.device)
    # The next samples are read and decoded on a thread while the network runs.
    with ThreadPoolExecutor(1, thread_name_prefix="pspnet-read") as reader:
        samples = in_order(reader, dataset.__getitem__, indices, ahead=PREFETCH)
        for done, (index, (image, label)) in enumerate(zip(indices, samples), start=1):
            raw = segment_tensor(network, image, inference, unknown_below=unknown_below)
            matrix.update(raw.labels, label.to(network.device), undecided=UNKNOWN)
            if on_image is not None:
                on_image(index, raw.labels, label)
            if progress is not None:
                progress(done, len(indices))
    matrix.all_reduce()
    return matrix


def score_predictions(
    pred_dir: str | Path,
    gt_dir: str | Path,
    preset: DatasetPreset,
    progress: Callable[[int, int], None] | None = None,
) -> ConfusionMatrix:
    """Score saved prediction PNGs against ground-truth labels, matched by file stem.

    Predictions hold train ids 0..C-1 (palette-indexed or grey PNGs, as ``pspnet predict``
    writes them); ground truth is mapped through the preset like any dataset label. So any
    model's outputs are compared on the same terms.

    Args:
        pred_dir: folder of prediction PNGs.
        gt_dir: folder of ground-truth label PNGs (searched recursively).
        preset: the dataset preset (class count, label mapping).
        progress: called with (files done, total).

    Raises:
        DatasetError: a ground-truth file without prediction, or an unreadable or mis-sized
            prediction, naming the file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    # `pspnet predict` writes NAME_label.png beside NAME_color.png and NAME_overlay.png.
    predictions = {
        p.stem.removesuffix("_label"): p
        for p in sorted(pred_dir.rglob("*.png"))
        if not p.stem.endswith(("_color", "_overlay"))
    }
    truths = {p.stem: p for p in sorted(gt_dir.rglob("*.png"))}
    if not truths:
        raise DatasetError(f"{gt_dir}: no label PNGs found")
    missing = sorted(set(truths) - set(predictions))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        raise DatasetError(f"{pred_dir}: no prediction for ground-truth file(s) {shown}")
    matrix = ConfusionMatrix(preset.num_classes, IGNORE_INDEX)
    for done, (stem, truth_path) in enumerate(truths.items(), 1):
        truth = read_label(truth_path, preset)
        pred = read_prediction(predictions[stem], preset.num_classes)
        if pred.shape != truth.shape:
            raise DatasetError(
                f"{predictions[stem]}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
                f"ground truth {truth_path} is {truth.shape[1]}x{truth.shape[0]}"
            )
        matrix.update(
            torch.from_numpy(pred.astype(np.int64)),
            torch.from_numpy(truth.astype(np.int64)),
            undecided=UNKNOWN,
        )
        if progress is not None:
            progress(done, len(truths))
    return matrix


def read_prediction(path: Path, num_classes: int) -> np.ndarray:
    """A prediction PNG as (H, W) class indices (255: unknown); palette PNGs keep their indices."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(
                    f"{path}: prediction is a {image.mode} image; expected class indices "
                    "(a palette or grey PNG, as `pspnet predict` writes *_label.png)"
                )
            pred = np.asarray(image)
    except OSError as err:
        raise DatasetError(f"{path}: prediction cannot be read ({err})") from err
    invalid = pred[(pred >= num_classes) & (pred != UNKNOWN)]
    if invalid.size:
        raise DatasetError(
            f"{path}: value {invalid.max()} is not one of {num_classes} classes "
            f"(nor {UNKNOWN}, unknown)"
        )
    return pred
