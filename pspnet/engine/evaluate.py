"""Scoring a model on a dataset: the shared inference routine feeding one confusion matrix."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.data import Dataset

from pspnet.engine.inference import InferenceConfig, predict_probs
from pspnet.engine.metrics import ConfusionMatrix


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    inference: InferenceConfig,
    ignore_index: int = 255,
    limit: int = 0,
    progress: Callable[[int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> ConfusionMatrix:
    """Run ``model`` over ``dataset`` and return the confusion matrix (summed over ranks).

    Args:
        model: eval-mode network returning logits at its input size.
        dataset: yields (normalised image (3, H, W), label (H, W)); labels at full size.
        num_classes: classes scored.
        inference: whole/slide, scales and flip.
        ignore_index: label value excluded from the scores.
        limit: score only the first ``limit`` images (0: all).
        progress: called with (images done, total) on this rank.
        rank: this process's rank; ranks score interleaved shards.
        world_size: number of processes.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = len(dataset) if limit <= 0 else min(limit, len(dataset))
    indices = range(rank, total, world_size)
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    for done, index in enumerate(indices, 1):
        image, label = dataset[index]
        probs = predict_probs(model, image.to(device), num_classes, inference)  # (C, H, W)
        matrix.update(probs.argmax(0), label.to(device))
        if progress is not None:
            progress(done, len(indices))
    model.train(was_training)
    matrix.all_reduce()
    return matrix
