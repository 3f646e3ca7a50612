"""A checkpoint loaded for use: the model, its config and metadata, its classes, its device.

What used to ride on the ``nn.Module`` as attributes is held here, explicitly: class names
and colours come from the checkpoint's metadata (saved class names, else its dataset's
preset) and are otherwise generic (``class 0`` ...), never guessed from the class count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pspnet.data.normalization import Normalization
from pspnet.data.presets import PRESETS, voc_colormap
from pspnet.models.pspnet import ModelConfig, PSPNet

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready to run, and what its file says about it.

    Attributes:
        model: the network, eval mode, on ``device``.
        config: its shape (``model.config``).
        metadata: the file's string entries (class names, dataset, inference settings ...).
        device: where the model is.
        class_names: one name per class.
        palette: one RGB colour per class.
        source: the checkpoint as given (path, name or URL).
    """

    model: PSPNet
    config: ModelConfig
    metadata: dict[str, str]
    device: torch.device
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    source: str

    @property
    def inference_settings(self) -> dict:
        """The InferenceConfig fields the checkpoint was validated with (or published with)."""
        return json.loads(self.metadata.get("inference", "{}"))

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("dataset")

    @property
    def normalization(self) -> Normalization:
        """The bands and per-band statistics the model was trained with (ImageNet's 8-bit RGB
        for checkpoints that record none).

        Raises:
            CheckpointError: a model of other than 3 bands that records none.
        """
        return Normalization.of_metadata(self.metadata, self.config.in_channels, self.source)


def classes_of(metadata: dict[str, str], num_classes: int) -> tuple[tuple[str, ...], tuple]:
    """(class names, palette) from ``metadata``, or generic names and VOC's colours."""
    if "class_names" in metadata:
        names = tuple(json.loads(metadata["class_names"]))
        if len(names) == num_classes:
            colours = json.loads(metadata.get("palette", "null")) or voc_colormap(num_classes)
            return names, tuple(tuple(int(v) for v in c) for c in colours)
    preset = PRESETS.get(metadata.get("dataset", ""))
    if preset is not None and preset.num_classes == num_classes:
        return preset.class_names, preset.palette
    return tuple(f"class {i}" for i in range(num_classes)), voc_colormap(num_classes)


def loaded(
    model: PSPNet, metadata: dict[str, str], device: torch.device, source: str | Path
) -> LoadedCheckpoint:
    names, palette = classes_of(metadata, model.config.num_classes)
    return LoadedCheckpoint(
        model, model.config, dict(metadata), device, names, palette, str(source)
    )
