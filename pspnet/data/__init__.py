"""Datasets, their presets (classes, label mapping, layout) and the training augmentation."""

from pspnet.data.datasets import (
    DatasetReport,
    SegmentationDataset,
    SizeStats,
    check_dataset,
    find_pairs,
    read_image,
    read_label,
)
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
    "normalize",
    "read_image",
    "read_label",
]
