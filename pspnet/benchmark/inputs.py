"""What the benchmark runs the paths on: synthetic images of the crop, and a dataset's split
(scored through the one evaluation routine) with int8 calibration images from its train split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pspnet.checkpoints import LoadedCheckpoint
from pspnet.config import InferenceConfig
from pspnet.data.datasets import SegmentationDataset, find_pairs
from pspnet.data.normalization import Normalization
from pspnet.data.presets import PRESETS, ClassOptions
from pspnet.data.synthetic import make_scene
from pspnet.data.transforms import AugmentConfig, EvalTransform
from pspnet.engine.evaluate import evaluate
from pspnet.errors import ConfigError
from pspnet.inference.optimized.int8 import calibration_batches
from pspnet.inference.protocol import Network
from pspnet.inference.segmenter import calibration_images

SMALLEST_SCENE = 32  # make_scene's least width


def synthetic_images(
    checkpoint: LoadedCheckpoint, crop: tuple[int, int], count: int, device: torch.device
) -> list[torch.Tensor]:
    """``count`` normalised (1, B, H, W) images of the crop, the same on every run.

    An RGB model gets street and harbour scenes (:func:`pspnet.data.synthetic.make_scene`),
    normalised as it was trained; a model of other bands gets standard normal values.
    """
    height, width = crop
    normalization = checkpoint.normalization
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        if normalization.eight_bit_rgb:
            side = max(height, width, SMALLEST_SCENE)
            scene, _ = make_scene(rng, size=side)  # (side, side, 3) uint8
            image = normalization(scene[:height, :width])  # (3, H, W)
        else:
            values = rng.standard_normal((checkpoint.config.in_channels, height, width))
            image = torch.from_numpy(values.astype(np.float32))  # (B, H, W)
        images.append(image[None].to(device))  # (1, B, H, W)
    return images


@dataclass(frozen=True)
class BenchmarkData:
    """A dataset split the paths are scored on, and int8 calibration images from its train
    split (what ``--calibration ROOT/train`` would give ONNX Runtime and OpenVINO).

    Attributes:
        dataset: the split, normalised as the model was trained.
        calibration_files: the train split's images that calibrate int8.
        inference: the settings that size the calibration images (see
            :func:`~pspnet.inference.optimized.int8.calibration_batches`).
        description: "camvid val, 20 images".
    """

    dataset: SegmentationDataset
    calibration_files: list[Path]
    inference: InferenceConfig
    normalization: Normalization
    description: str

    @classmethod
    def of(
        cls,
        checkpoint: LoadedCheckpoint,
        inference: InferenceConfig,
        *,
        root: Path,
        dataset: str | None,
        classes: ClassOptions,
        split: str,
        limit: int,
        calibration_count: int,
    ) -> BenchmarkData:
        """The split and calibration images of the dataset at ``root``.

        Raises:
            ConfigError: the model's class count is not the dataset's.
            DatasetError: missing or unreadable files, naming them.
        """
        named = checkpoint.dataset if checkpoint.dataset in PRESETS else None
        preset = classes.preset(dataset or named or "camvid", root)
        if checkpoint.config.num_classes != preset.num_classes:
            raise ConfigError(
                f"the model predicts {checkpoint.config.num_classes} classes but the "
                f"{preset.name!r} dataset has {preset.num_classes}; pick the matching --dataset"
            )
        transform = EvalTransform(AugmentConfig(normalization=checkpoint.normalization))
        scored = SegmentationDataset(root, split, preset, transform)
        train = [str(image) for image, _ in find_pairs(root, preset, "train")]
        files = calibration_images(train, calibration_count)
        count = len(scored) if limit <= 0 else min(limit, len(scored))
        description = f"{preset.name} {split}, {count} images"
        return cls(scored, files, inference, checkpoint.normalization, description)

    def calibration(self) -> list[torch.Tensor]:
        """The calibration images, normalised (1, B, h, w) batches, read afresh (so that they
        are not held while the other paths are measured)."""
        return calibration_batches(self.calibration_files, self.inference, self.normalization)

    def score(
        self,
        network: Network,
        inference: InferenceConfig,
        limit: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[float, list[torch.Tensor]]:
        """The network's mIoU on the split and its labels of each image ((H, W), CPU)."""
        labels: list[torch.Tensor] = []

        def keep(index: int, predicted: torch.Tensor, truth: torch.Tensor) -> None:
            labels.append(predicted.to("cpu", torch.int16))

        matrix = evaluate(
            network, self.dataset, inference, limit=limit, progress=progress, on_image=keep
        )
        return matrix.compute().miou, labels
