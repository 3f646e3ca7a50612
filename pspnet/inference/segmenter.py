"""The Python API: ``Segmenter.from_checkpoint(path)`` then ``seg.segment(image)``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pspnet.checkpoints import LoadedCheckpoint, load_checkpoint
from pspnet.config import InferenceConfig
from pspnet.data.images import ImageInput, max_pixels, to_rgb
from pspnet.data.transforms import normalize
from pspnet.devices import resolve_device
from pspnet.errors import ConfigError
from pspnet.inference.memory import fit_window_batch, pixels_within
from pspnet.inference.protocol import Network, Progress, segment_tensor
from pspnet.inference.result import Segmentation, compact_labels
from pspnet.limits import DEFAULT_MEMORY_BUDGET_MB
from pspnet.weights.download import Progress as DownloadProgress


class Segmenter:
    """A loaded checkpoint, the network that runs it and its inference settings.

    Args:
        checkpoint: the model, its metadata, classes and device.
        inference: whole/slide, crop, scales and flip; the checkpoint's recorded settings
            when None.
        runner: what runs (an optimised model from :func:`pspnet.inference.optimized.optimize`);
            the checkpoint's model when None.
    """

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        inference: InferenceConfig | None = None,
        runner: nn.Module | None = None,
    ):
        self.checkpoint = checkpoint
        self.inference = inference or InferenceConfig(**checkpoint.inference_settings)
        self.model = runner if runner is not None else checkpoint.model.eval()
        self.network = Network.of(self.model, checkpoint.device)
        self.precision = getattr(self.model, "precision", "none")
        self.backend = getattr(self.model, "backend", "eager")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.checkpoint.palette

    @property
    def num_classes(self) -> int:
        return self.checkpoint.config.num_classes

    @property
    def device(self) -> torch.device:
        return self.checkpoint.device

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
                or "int8" (CPU); see :func:`pspnet.inference.optimized.optimize`. None means
                "auto".
            backend: "auto", "eager", "compile", "cudagraphs" (CUDA) or "onnx" (CPU); None
                means "auto".
            calibration: images (paths, arrays, PIL images) that set int8's activation ranges:
                a few hundred from the training set; see
                :func:`pspnet.inference.optimized.int8.calibration_batches`.
            progress: download progress of a name or URL, ``progress(bytes_done, total)``.
            amortized: the work repays a compile warm-up (many images, a service), so
                ``auto`` may pick compile where it was measured fastest.
            **inference: :class:`InferenceConfig` fields to override (mode="slide",
                crop_size=(473, 473), scales=(0.5, ..., 1.75), flip=True, base_size=512 ...).
                On CUDA, a sliding window's ``window_batch`` not given here is sized to the
                free GPU memory (the value a checkpoint recorded was for its training device).
        """
        from pspnet.inference.optimized.int8 import calibration_batches
        from pspnet.inference.optimized.optimize import choose_path, optimize

        device = resolve_device(device)
        precision, backend = precision or "auto", backend or "auto"
        choose_path(precision, backend, device, amortized)  # refuse before loading anything
        fields = {f.name for f in dataclasses.fields(InferenceConfig)}
        unknown = sorted(set(inference) - fields)
        if unknown:
            raise ConfigError(f"unknown inference options {unknown}; valid: {sorted(fields)}")
        checkpoint = load_checkpoint(path, device, progress)
        recorded = checkpoint.inference_settings
        config = InferenceConfig(**{**recorded, **inference})
        batches = None if calibration is None else calibration_batches(calibration, config)
        runner = optimize(checkpoint.model, precision, backend, batches, amortized=amortized)
        segmenter = cls(checkpoint, config, runner)
        if (
            device.type == "cuda"
            and config.mode == "slide"
            and "window_batch" not in {**recorded, **inference}
        ):
            batch = fit_window_batch(segmenter.network, config)
            segmenter.inference = dataclasses.replace(config, window_batch=batch)
        return segmenter

    def pixel_limit(self, budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> int:
        """The largest image, in pixels, this model segments within ``budget_mb`` MiB of memory
        (an estimate, see :func:`pspnet.inference.memory.image_memory`), and never more than
        the decoders' limit."""
        fitting = pixels_within(int(budget_mb * 2**20), self.network, self.inference)
        return min(max_pixels(), fitting)

    def segment(
        self,
        image: ImageInput,
        probs: bool = False,
        unknown_below: float | None = None,
        progress: Progress | None = None,
        limit: int | None = None,
    ) -> Segmentation:
        """Segment one image (a path, an (H, W, 3) array or a PIL image).

        Args:
            image: the image; paths are turned upright by their EXIF orientation.
            probs: also return the (C, H, W) probabilities (the only buffer of that size).
            unknown_below: label pixels whose confidence is under this as unknown (255).
            progress: ``progress(windows_done, windows_total)`` after each forward pass.
            limit: refuse an image of more pixels (before decoding a file); the decoders'
                limit when None (see :meth:`pixel_limit` for one within a memory budget).
        """
        if unknown_below is not None and not 0 <= unknown_below <= 1:
            raise ConfigError(f"unknown_below must be in [0, 1], got {unknown_below}")
        start = time.perf_counter()
        tensor = normalize(to_rgb(image, limit))  # (3, H, W)
        raw = segment_tensor(self.network, tensor, self.inference, progress, probs, unknown_below)
        return Segmentation(
            labels=compact_labels(raw.labels.cpu().numpy(), self.num_classes),
            confidence=raw.confidence.cpu().numpy(),
            class_names=self.class_names,
            palette=self.palette,
            probs=None if raw.probs is None else raw.probs.cpu().numpy(),
            unknown_below=unknown_below,
            seconds=time.perf_counter() - start,
        )

    def probs(self, image: ImageInput, progress: Progress | None = None) -> np.ndarray:
        """Class probabilities (C, H, W) float32 at the image's size."""
        return self.segment(image, probs=True, progress=progress).probs

    def __call__(self, image: ImageInput, progress: Progress | None = None) -> np.ndarray:
        """Class indices (H, W) int64 at the image's size."""
        return self.segment(image, progress=progress).labels.astype(np.int64)
