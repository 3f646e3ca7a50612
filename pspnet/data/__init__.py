"""Datasets, their presets (classes, label mapping, layout) and the training augmentation."""

from pspnet.data.check import DatasetReport, SizeStats, check_dataset, median_frequency_weights
from pspnet.data.datasets import SegmentationDataset, find_pairs, read_image
from pspnet.data.labels import read_label
from pspnet.data.presets import PRESETS, DatasetPreset, FolderLayout, get_preset
from pspnet.data.transforms import (
    AugmentConfig,
    EvalTransform,
    PairTransform,
    TrainTransform,
    normalize,
)

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "DatasetPreset",
    "DatasetReport",
    "EvalTransform",
    "FolderLayout",
    "PairTransform",
    "SegmentationDataset",
    "SizeStats",
    "TrainTransform",
    "check_dataset",
    "find_pairs",
    "get_preset",
    "median_frequency_weights",
    "normalize",
    "read_image",
    "read_label",
]
