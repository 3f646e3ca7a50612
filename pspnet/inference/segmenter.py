"""The Python API: ``Segmenter.from_checkpoint(path)`` then ``seg.segment(image)``."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pspnet.checkpoints import LoadedCheckpoint, load_checkpoint
from pspnet.config import InferenceConfig
from pspnet.data.images import (
    ImageInput,
    expand_inputs,
    max_pixels,
)
from pspnet.data.normalization import Normalization
from pspnet.devices import resolve_device
from pspnet.errors import ConfigError, InferenceError, PSPNetError
from pspnet.inference.memory import fit_window_batch, pixels_within
from pspnet.inference.protocol import Network, Progress, segment_tensor
from pspnet.inference.result import Segmentation, compact_labels
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
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
        # Why this path runs: "measured on DATE", "the fallback rule" or "as asked"
        # (from_checkpoint sets it; see pspnet.inference.optimized.optimize.resolve_path).
        self.path_reason = "as given"

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

    @functools.cached_property
    def normalization(self) -> Normalization:
        """The bands and per-band statistics the model was trained with (its checkpoint's)."""
        return self.checkpoint.normalization

    def normalize(self, image: ImageInput, limit: int | None = None) -> torch.Tensor:
        """An image as the network takes it, normalised as training did: (N, H, W) float32
        (:meth:`~pspnet.data.normalization.Normalization.of_image`).

        Raises:
            DatasetError: an image of another band count ("the model takes 4 bands; image
                array has 3"), unreadable, oversized or not finite.
        """
        return self.normalization.of_image(image, limit)

    @classmethod
    def from_checkpoint(
        cls,
        source: str | Path,
        runtime: RuntimeSettings | None = None,
        inference: InferenceOverrides | None = None,
        *,
        progress: DownloadProgress | None = None,
        amortized: bool = False,
    ) -> Segmenter:
        """Load any supported checkpoint; inference settings default to what it was validated with.

        ``Segmenter.from_checkpoint("x.safetensors", inference=InferenceOverrides(mode="whole"))``

        Args:
            source: native, training-state, semseg or mmseg checkpoint, a registry name
                (``pspnet models``; its publisher's test settings become the defaults) or a URL.
            runtime: device, precision, backend and int8 calibration images (files, folders
                or globs; see :func:`pspnet.inference.optimized.int8.calibration_batches`).
            inference: the checkpoint's recorded inference settings to replace (mode, crop,
                scales, flip ...). On CUDA, a sliding window's ``window_batch`` not given here
                is sized to the free GPU memory (the value a checkpoint recorded was for its
                training device).
            progress: download progress of a name or URL, ``progress(bytes_done, total)``.
            amortized: the work repays a compile warm-up (many images, a service), so
                ``auto`` may pick compile where it was measured fastest.
        """
        from pspnet.inference.optimized.int8 import calibration_batches
        from pspnet.inference.optimized.measured import ModelShape
        from pspnet.inference.optimized.optimize import choose_path, optimize, resolve_path

        runtime = runtime or RuntimeSettings()
        inference = inference or InferenceOverrides()
        device = resolve_device(runtime.device)
        choose_path(runtime.precision, runtime.backend, device, amortized)  # before loading
        checkpoint = load_checkpoint(source, device, progress)
        config = inference.apply(checkpoint.inference_settings)
        batches = None
        if runtime.calibration:
            images = calibration_images(runtime.calibration, runtime.calibration_count)
            batches = calibration_batches(images, config, checkpoint.normalization)
        shape = ModelShape.of(checkpoint.config, config.crop_size)  # finds what was measured
        path = resolve_path(
            runtime.precision,
            runtime.backend,
            device,
            amortized,
            shape=shape,
            calibrated=batches is not None,
        )
        runner = optimize(checkpoint.model, path.precision, path.backend, batches)
        segmenter = cls(checkpoint, config, runner)
        segmenter.path_reason = path.reason
        recorded = checkpoint.inference_settings
        sized = inference.window_batch is not None or "window_batch" in recorded
        if device.type == "cuda" and config.mode == "slide" and not sized:
            batch = fit_window_batch(segmenter.network, config)
            segmenter.inference = dataclasses.replace(config, window_batch=batch)
        return segmenter

    def pixel_limit(self, budget_mb: float) -> int:
        """The largest image, in pixels, this model segments within ``budget_mb`` MiB of memory
        (an estimate, see :func:`pspnet.inference.memory.image_memory`), and never more than
        the decoders' limit."""
        fitting = pixels_within(int(budget_mb * 2**20), self.network, self.inference)
        return min(max_pixels(), fitting)

    def segment(
        self,
        image: ImageInput,
        *,
        probs: bool = False,
        unknown_below: float | None = None,
        progress: Progress | None = None,
        limit: int | None = None,
        name: str | Path | None = None,
    ) -> Segmentation:
        """Segment one image (a path, an (H, W, N) array or a PIL image; see :meth:`normalize`).

        Args:
            image: the image; paths are turned upright by their EXIF orientation.
            probs: also return the (C, H, W) probabilities (the only buffer of that size).
            unknown_below: label pixels whose confidence is under this as unknown (255).
            progress: ``progress(windows_done, windows_total)`` after each forward pass.
            limit: refuse an image of more pixels (before decoding a file); the decoders'
                limit when None (see :meth:`pixel_limit` for one within a memory budget).
            name: what to call the image when the model fails on it (out of memory, a broken
                runtime): such a failure is raised as an :class:`InferenceError` naming it.
        """
        try:
            return self._segment(image, probs, unknown_below, progress, limit)
        except PSPNetError:
            raise
        except Exception as err:
            if name is None:
                raise
            raise InferenceError(f"{name}: inference failed ({type(err).__name__}: {err})") from err

    def _segment(self, image, probs, unknown_below, progress, limit) -> Segmentation:
        if unknown_below is not None and not 0 <= unknown_below <= 1:
            raise ConfigError(f"unknown_below must be in [0, 1], got {unknown_below}")
        start = time.perf_counter()
        tensor = self.normalize(image, limit)  # (N, H, W)
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


def calibration_images(patterns: Sequence[str], count: int) -> list[Path]:
    """At most ``count`` of the images ``patterns`` name (files, folders, globs), spread evenly."""
    files = expand_inputs(patterns)
    step = max(1, len(files) // max(1, count))
    return files[::step][:count]
