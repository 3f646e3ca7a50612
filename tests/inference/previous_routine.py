"""The inference routine of earlier versions, kept as the reference the banded one must equal.

It held the (C, H, W) probabilities of the whole image, and the model's forward upsampled the
logits; ``pspnet.inference.protocol`` computes the same numbers band by band from the logits
at the output stride. Only the tests import this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.config import InferenceConfig

Progress = Callable[[int, int], None]

# Channels resized back to the output size per call: bounds the temporary to 2^24 floats.
_RESIZE_CHUNK_ELEMENTS = 1 << 24


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) with the long side set to ``long_side`` and the aspect ratio kept.

    semseg rounds with Python's ``round`` (halves to even) and gives a square image's long
    side to the width; at least one pixel is kept where semseg would reach zero.
    """
    if height > width:
        return long_side, max(1, round(long_side / height * width))
    return max(1, round(long_side / width * height)), long_side


def scale_size(height: int, width: int, scale: float, config: InferenceConfig) -> tuple[int, int]:
    """The (height, width) an image is run at for one of ``config.scales``.

    With ``fit_within`` (mmseg's keep-ratio resize, mmcv's ``rescale_size``) the factor is the
    largest that keeps the long side within ``scale * LONG`` and the short side within
    ``scale * SHORT``, sizes rounded half up; otherwise the long side becomes
    ``round(scale * base_size)`` (semseg's rule, the image's own long side by default).
    """
    if config.fit_within is not None:
        long_side, short_side = config.fit_within
        factor = scale * min(long_side / max(height, width), short_side / min(height, width))
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))
    base_size = config.base_size or max(height, width)
    return scaled_size(height, width, round(scale * base_size))


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis of a (padded) length >= crop, the last at the border."""
    count = math.ceil((length - crop) / stride) + 1
    return [min(index * stride + crop, length) - crop for index in range(count)]


def predict_probs(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    config: InferenceConfig | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Class probabilities of one image, averaged over scales and flips.

    Memory holds one output buffer (C, H, W), and one scale's (padded) probabilities at a
    time; windows go through the model ``config.window_batch`` at a time.

    Args:
        model: eval-mode network mapping (N, 3, h, w) to logits (N, num_classes, h, w).
        image: normalised (3, H, W) float image on the model's device.
        num_classes: C, the number of logits the model returns per pixel.
        config: mode, crop, stride, scales and flip; ``InferenceConfig()`` when None.
        progress: called as ``progress(windows_done, windows_total)`` after each forward pass
            (a window and its mirror count once; "whole" mode has one window per scale).

    Returns:
        (C, H, W) float32 probabilities on the image's device, summing to 1 over C.
    """
    config = config or InferenceConfig()
    _check_call(model, image)
    height, width = image.shape[-2:]
    sizes = [scale_size(height, width, scale, config) for scale in config.scales]
    counter = _Counter(progress, sum(_window_count(size, config) for size in sizes))
    out = torch.zeros(num_classes, height, width, device=image.device)  # (C, H, W)
    with torch.no_grad():
        for size in sizes:
            scaled = _resize(image[None], size)[0]  # (3, h, w)
            if config.mode == "whole":
                probs = _forward_probs(model, scaled[None], num_classes, config.flip)[0]
                counter.advance(1)
            else:
                probs = _slide(model, scaled, num_classes, config, counter)  # (C, h, w)
            _add_resized(out, probs)
            del probs  # free this scale's buffer before the next one is built
        out /= len(sizes)
    return out


def predict_labels(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    config: InferenceConfig | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """(H, W) int64 class indices, the argmax of :func:`predict_probs` (same arguments)."""
    return predict_probs(model, image, num_classes, config, progress).argmax(0)


class _Counter:
    """Counts windows across scales for the progress callback."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, windows: int) -> None:
        self.done += windows
        if self.progress is not None:
            self.progress(self.done, self.total)


def _check_call(model: nn.Module, image: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(
            f"image must be a normalised float (3, H, W) tensor, got {image.dtype} "
            f"{tuple(image.shape)}; batch images one call each"
        )
    if model.training:
        raise ValueError("model is in training mode (it returns aux logits); call model.eval()")


def _window_count(size: tuple[int, int], config: InferenceConfig) -> int:
    if config.mode == "whole":
        return 1
    rows, columns = _window_grid(size, config)
    return len(rows) * len(columns)


def _window_grid(size: tuple[int, int], config: InferenceConfig) -> tuple[list[int], list[int]]:
    """Row and column starts over the image padded up to the crop size."""
    (height, width), (crop_h, crop_w) = size, config.crop_size
    stride_h = math.ceil(crop_h * config.stride_rate)
    stride_w = math.ceil(crop_w * config.stride_rate)
    return (
        window_starts(max(height, crop_h), crop_h, stride_h),
        window_starts(max(width, crop_w), crop_w, stride_w),
    )


def _slide(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    config: InferenceConfig,
    counter: _Counter,
) -> torch.Tensor:
    """semseg's ``scale_process``: (3, h, w) image to (C, h, w) window-averaged probabilities."""
    (height, width), (crop_h, crop_w) = image.shape[-2:], config.crop_size
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    top, left = pad_h // 2, pad_w // 2
    # semseg pads with the mean colour; normalised, the mean is 0.
    padded = F.pad(image, (left, pad_w - left, top, pad_h - top))  # (3, h + pad_h, w + pad_w)
    rows, columns = _window_grid((height, width), config)
    windows = [(y, x) for y in rows for x in columns]
    probs = torch.zeros(num_classes, *padded.shape[-2:], device=image.device)
    coverage = torch.zeros(padded.shape[-2:], device=image.device)  # windows per pixel
    for first in range(0, len(windows), config.window_batch):
        batch = windows[first : first + config.window_batch]
        crops = torch.stack([padded[:, y : y + crop_h, x : x + crop_w] for y, x in batch])
        window_probs = _forward_probs(model, crops, num_classes, config.flip)  # (n, C, ch, cw)
        for (y, x), window in zip(batch, window_probs, strict=True):
            probs[:, y : y + crop_h, x : x + crop_w] += window
            coverage[y : y + crop_h, x : x + crop_w] += 1
        counter.advance(len(batch))
    probs /= coverage
    return probs[:, top : top + height, left : left + width]


def _forward_probs(
    model: nn.Module, images: torch.Tensor, num_classes: int, flip: bool
) -> torch.Tensor:
    """Softmax of (N, 3, h, w) images, averaged with the mirrored softmax of their mirrors."""
    batch = torch.cat([images, images.flip(-1)]) if flip else images  # (N or 2N, 3, h, w)
    with torch.inference_mode():
        logits = model(batch)
    expected = (batch.shape[0], num_classes, *batch.shape[-2:])
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model returned {got} for input {tuple(batch.shape)}; predict_probs needs logits "
            f"{expected} at the input size: check num_classes and that the model is in eval mode"
        )
    # Outside inference mode the softmax yields an ordinary tensor, which callers may update.
    probs = logits.float().softmax(dim=1)  # (N or 2N, C, h, w)
    if not flip:
        return probs
    # semseg averages after the softmax, so a confident view outweighs an unsure one.
    count = images.shape[0]
    return (probs[:count] + probs[count:].flip(-1)) / 2


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres, as ``cv2.INTER_LINEAR`` (no antialiasing)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _add_resized(out: torch.Tensor, probs: torch.Tensor) -> None:
    """``out += resize(probs)``, a few channels at a time to bound the temporary."""
    size = tuple(out.shape[-2:])
    channels = max(1, _RESIZE_CHUNK_ELEMENTS // (size[0] * size[1]))
    for first in range(0, probs.shape[0], channels):
        chunk = probs[None, first : first + channels]  # (1, k, h, w)
        out[first : first + channels] += _resize(chunk, size)[0]
