"""The two-line Python API: ``Segmenter.from_checkpoint(path)`` then ``seg(image)``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pspnet.checkpoints import load_model
from pspnet.config import InferenceConfig
from pspnet.data.images import ImageInput, to_rgb
from pspnet.data.presets import PRESETS
from pspnet.data.transforms import normalize
from pspnet.engine.devices import resolve_device
from pspnet.engine.inference import Progress, fit_window_batch, predict_probs
from pspnet.errors import ConfigError
from pspnet.models.pspnet import PSPNet
from pspnet.weights.download import Progress as DownloadProgress


def class_info(model: PSPNet) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and colours from the checkpoint's metadata, a preset, or generated."""
    metadata = getattr(model, "metadata", {}) or {}
    count = model.config.num_classes
    if "class_names" in metadata and "palette" in metadata:
        return json.loads(metadata["class_names"]), [
            tuple(c) for c in json.loads(metadata["palette"])
        ]
    preset = PRESETS.get(metadata.get("dataset", ""))
    if preset is None:
        preset = next((p for p in PRESETS.values() if p.num_classes == count), None)
    if preset is not None and preset.num_classes == count:
        return list(preset.class_names), [tuple(c) for c in preset.palette]
    from pspnet.data.presets import get_preset

    custom = get_preset("custom", num_classes=count)
    return list(custom.class_names), [tuple(c) for c in custom.palette]


class Segmenter:
    """A trained PSPNet with its inference settings, class names and colours.

    Args:
        model: the network (eval mode is set here).
        inference: whole/slide, crop, scales and flip.
        class_names: one name per class.
        palette: one RGB colour per class.
    """

    def __init__(
        self,
        model: PSPNet,
        inference: InferenceConfig,
        class_names: list[str],
        palette: list[tuple[int, int, int]],
    ):
        self.model = model.eval()
        self.inference = inference
        self.class_names = class_names
        self.palette = palette
        self.num_classes = model.config.num_classes
        self.device = next(model.parameters()).device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        precision: str | None = "auto",
        backend: str | None = "auto",
        calibration: Sequence[ImageInput] | None = None,
        progress: DownloadProgress | None = None,
        amortized: bool = False,
        **inference: Any,
    ) -> Segmenter:
        """Load any supported checkpoint; inference settings default to what it was validated with.

        Args:
            path: native, training-state, semseg or mmseg checkpoint, a registry name
                (``pspnet models``; its publisher's test settings become the defaults) or a URL.
            device: "cpu", "cuda", ...
            precision: "auto" (the exact fp32 rewrites, or what was measured fastest on this
                kind of device), "none" (the model as trained), "fp32", "bf16", "fp16" (CUDA)
                or "int8" (CPU); see :func:`pspnet.optimized.optimize`.
                None means "auto" (it used to mean the plain model, now "none").
            backend: "auto", "eager", "compile", "cudagraphs" (CUDA) or "onnx" (CPU); None
                means "auto".
            calibration: images (paths, arrays, PIL images) that set int8's activation ranges:
                a few hundred from the training set; see
                :func:`pspnet.optimized.int8.calibration_batches`.
            progress: download progress of a name or URL, ``progress(bytes_done, total)``.
            amortized: the work repays a compile warm-up (many images, a service), so
                ``auto`` may pick compile where it was measured fastest.
            **inference: :class:`InferenceConfig` fields to override (mode="slide",
                crop_size=(473, 473), scales=(0.5, ..., 1.75), flip=True, base_size=512 ...).
                On CUDA, a sliding window's ``window_batch`` not given here is sized to the
                free GPU memory (the value a checkpoint recorded was for its training device).
        """
        from pspnet.optimized.int8 import calibration_batches
        from pspnet.optimized.optimize import choose_path, optimize

        device = resolve_device(device)
        precision, backend = precision or "auto", backend or "auto"
        choose_path(precision, backend, device, amortized)  # refuse before loading anything
        model = load_model(path, device, progress)
        recorded = json.loads(getattr(model, "metadata", {}).get("inference", "{}"))
        fields = {f.name for f in dataclasses.fields(InferenceConfig)}
        unknown = sorted(set(inference) - fields)
        if unknown:
            raise ConfigError(f"unknown inference options {unknown}; valid: {sorted(fields)}")
        config = InferenceConfig(**{**recorded, **inference})
        names, palette = class_info(model)
        batches = None if calibration is None else calibration_batches(calibration, config)
        model = optimize(model, precision, backend, batches, amortized=amortized)
        if (
            device.type == "cuda"
            and config.mode == "slide"
            and "window_batch" not in {**recorded, **inference}
        ):
            batch = fit_window_batch(model, config, model.config.num_classes, device)
            config = dataclasses.replace(config, window_batch=batch)
        return cls(model, config, names, palette)

    def probs(self, image: ImageInput, progress: Progress | None = None) -> np.ndarray:
        """Class probabilities (C, H, W) float32 at the image's size."""
        tensor = normalize(to_rgb(image)).to(self.device)  # (3, H, W)
        probs = predict_probs(self.model, tensor, self.num_classes, self.inference, progress)
        return probs.cpu().numpy()

    def __call__(self, image: ImageInput, progress: Progress | None = None) -> np.ndarray:
        """Class indices (H, W) int64 at the image's size."""
        return self.probs(image, progress).argmax(0)
