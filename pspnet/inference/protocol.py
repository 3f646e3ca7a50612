"""The one inference routine: labels, confidence and probabilities of an image.

Evaluation, prediction, the Python API (``Segmenter``), the service, the batch actors and the
demo all call :func:`segment_tensor`, with its settings in a
:class:`pspnet.config.InferenceConfig`. It reproduces hszhao/semseg's test protocol
(``tool/test.py``):

1. for each scale, resize the image (bilinear, like ``cv2.INTER_LINEAR``) so its long side is
   ``round(scale * base_size)``, keeping the aspect ratio;
2. pad it symmetrically up to the crop size where it is smaller, with the mean colour;
3. slide crop-sized windows with stride ``ceil(crop * stride_rate)``; the last window of each
   row and column is clamped to the border, so windows overlap there;
4. average each window's softmax with the mirrored softmax of its mirror image (``flip``),
   sum them into the image and divide by how many windows covered each pixel;
5. cut the padding away, resize the probabilities to the original size and average the scales.

semseg resizes the 0..255 image and normalises each window; bilinear weights sum to 1 and
normalising is affine per channel, so resizing the normalised image is the same, and its
mean-colour padding is 0 here.

The network runs first, over every window of every scale, and only its logits at the output
stride (1/8 of the window) are kept; steps 4 and 5, with the upsampling of those logits that
the model's forward would do, run in bands of output rows (:mod:`pspnet.inference.bands`). So
an image costs the network's activations plus a few bytes per output pixel, whatever the class
count: (C, H, W) exists only when the probabilities are asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pspnet.config import InferenceConfig
from pspnet.inference.bands import (
    Taps,
    band_rows,
    bilinear_taps,
    resize_band,
    rows_read,
    slice_taps,
)
from pspnet.inference.result import UNKNOWN
from pspnet.models.pspnet import ModelConfig

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Network:
    """What the routine runs: a network and how its logits become the window's.

    Attributes:
        forward: eval-mode images (N, 3, h, w) -> logits (N, C, h', w'), at the output stride
            or at any other size; they are upsampled to (h, w) like the model's own forward.
        num_classes: C.
        align_corners: of that upsampling (the model's config).
        device: where the network runs; images are moved there.
        config: the model's config, when known (it sizes the memory of an image).
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    align_corners: bool
    device: torch.device
    config: ModelConfig | None = None

    @classmethod
    def of(cls, model: torch.nn.Module, device: torch.device | str | None = None) -> Network:
        """A PSPNet (or an optimised one), run at its output stride, in eval mode.

        Args:
            model: has ``stride_logits`` and ``config``.
            device: where it runs; the device of its parameters (or the CPU) when None.
        """
        if model.training:
            raise ValueError("model is in training mode (it returns aux logits); call model.eval()")
        if device is None:  # the parameters' device; an ONNX Runtime session has none: CPU
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        config = model.config
        return cls(
            model.stride_logits,
            config.num_classes,
            config.align_corners,
            torch.device(device),
            config,
        )


@dataclass(frozen=True)
class RawSegmentation:
    """The routine's output, on the image's device.

    Attributes:
        labels: (H, W) int64 class indices, ``UNKNOWN`` (255) under ``unknown_below``.
        confidence: (H, W) float32, each pixel's largest class probability.
        probs: (C, H, W) float32 probabilities when asked for, else None.
    """

    labels: torch.Tensor
    confidence: torch.Tensor
    probs: torch.Tensor | None


@dataclass
class ScaleViews:
    """One scale's windows and the stride logits the network gave for them.

    Attributes:
        size: (h, w) of the scaled image.
        padding: (top, left) of the scaled image in the padded one.
        window: (height, width) of every window (the crop, or the scaled image when whole).
        views: (y, x, logits (C, h', w'), mirrored logits or None) per window, row-major.
        row_cover: (padded h,) windows covering each row.
        column_cover: (padded w,) windows covering each column.
        rows: taps upsampling a window's logits to its height, None when they come at it.
        align_corners: of that upsampling (the model's).
    """

    size: tuple[int, int]
    padding: tuple[int, int]
    window: tuple[int, int]
    views: list[tuple[int, int, torch.Tensor, torch.Tensor | None]]
    row_cover: torch.Tensor
    column_cover: torch.Tensor
    rows: Taps | None = None
    align_corners: bool = False


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


def segment_tensor(
    network: Network,
    image: torch.Tensor,
    config: InferenceConfig | None = None,
    progress: Progress | None = None,
    probs: bool = False,
    unknown_below: float | None = None,
) -> RawSegmentation:
    """Labels, confidence (and probabilities) of one image, averaged over scales and flips.

    Args:
        network: the model to run.
        image: normalised (N, H, W) float image of the model's N bands (moved to the
            network's device).
        config: mode, crop, stride, scales and flip; ``InferenceConfig()`` when None.
        progress: called as ``progress(windows_done, windows_total)`` after each forward pass
            (a window and its mirror count once; "whole" mode has one window per scale).
        probs: also return the (C, H, W) probabilities (the only buffer of that size).
        unknown_below: pixels whose confidence is under this get the label ``UNKNOWN``.
    """
    config = config or InferenceConfig()
    bands = 3 if network.config is None else network.config.in_channels
    if image.dim() != 3 or image.shape[0] != bands or not image.is_floating_point():
        raise ValueError(
            f"image must be a normalised float ({bands}, H, W) tensor, got {image.dtype} "
            f"{tuple(image.shape)}; batch images one call each"
        )
    image = image.to(network.device)
    with torch.no_grad():
        scales = run_network(network, image, config, progress)
        return assemble(scales, tuple(image.shape[-2:]), network, probs, unknown_below)


def probabilities(
    model: torch.nn.Module, image: torch.Tensor, config: InferenceConfig | None = None
) -> torch.Tensor:
    """(C, H, W) probabilities of a PSPNet, an optimised or an ONNX one, on the model's device:
    :func:`segment_tensor` with ``probs=True``, for scripts and comparisons.
    """
    return segment_tensor(Network.of(model), image, config, probs=True).probs


def run_network(
    network: Network, image: torch.Tensor, config: InferenceConfig, progress: Progress | None
) -> list[ScaleViews]:
    """Every window of every scale through the network, ``window_batch`` at a time."""
    height, width = image.shape[-2:]
    sizes = [scale_size(height, width, scale, config) for scale in config.scales]
    grids = [_window_grid(size, config) for size in sizes]
    total, done = sum(len(rows) * len(columns) for rows, columns in grids), 0
    scales = []
    for size, (rows, columns) in zip(sizes, grids, strict=True):
        scaled = _resize(image[None], size)[0]  # (3, h, w)
        window = size if config.mode == "whole" else config.crop_size
        pad_h, pad_w = max(window[0] - size[0], 0), max(window[1] - size[1], 0)
        top, left = pad_h // 2, pad_w // 2
        # semseg pads with the mean colour; normalised, the mean is 0.
        padded = F.pad(scaled, (left, pad_w - left, top, pad_h - top))  # (3, hp, wp)
        corners = [(y, x) for y in rows for x in columns]
        views = []
        batch = config.window_batch if config.mode == "slide" else 1
        for first in range(0, len(corners), batch):
            chunk = corners[first : first + batch]
            crops = torch.stack([padded[:, y : y + window[0], x : x + window[1]] for y, x in chunk])
            logits, mirrored = logits_of(network, crops, config.flip)  # (n, C, h', w') each
            views += [
                (y, x, logits[i], None if mirrored is None else mirrored[i])
                for i, (y, x) in enumerate(chunk)
            ]
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        cover = _cover(padded.shape[-2:], window, rows, columns, network.device)
        scales.append(_scale_views(size, (top, left), window, views, cover, network))
    return scales


def assemble(
    scales: list[ScaleViews],
    size: tuple[int, int],
    network: Network,
    want_probs: bool,
    unknown_below: float | None,
) -> RawSegmentation:
    """Steps 4 and 5 of the protocol, band by band of output rows."""
    height, width = size
    device, classes = network.device, network.num_classes
    labels = torch.empty(height, width, dtype=torch.int64, device=device)
    confidence = torch.empty(height, width, dtype=torch.float32, device=device)
    probs = torch.empty(classes, height, width, device=device) if want_probs else None
    resizes = [_output_taps(s.size, size, device) for s in scales]
    # The widest buffer a band builds: a scale's padded rows for it, or the output band.
    widest = max([width] + [s.column_cover.numel() * s.size[0] / height for s in scales])
    step = band_rows(classes, math.ceil(widest))
    for first in range(0, height, step):
        last = min(height, first + step)
        total = None
        for views, taps in zip(scales, resizes, strict=True):
            part = _output_rows(views, taps, first, last, width, network)  # (C, rows, W)
            total = part if total is None else total.add_(part)
        total /= len(scales)
        confidence[first:last], labels[first:last] = total.max(dim=0)
        if probs is not None:
            probs[:, first:last] = total
    if unknown_below is not None:
        labels[confidence < unknown_below] = UNKNOWN
    return RawSegmentation(labels, confidence, probs)


def _output_taps(scaled: tuple[int, int], size: tuple[int, int], device) -> Taps | None:
    """The rows of the final resize from a scale's size to the image's, or None (same size)."""
    if tuple(scaled) == tuple(size):
        return None
    return bilinear_taps(size[0], scaled[0], False, device)  # half-pixel centres, as cv2


def _output_rows(
    views: ScaleViews, taps: Taps | None, first: int, last: int, width: int, network: Network
) -> torch.Tensor:
    """Output rows [first, last) of one scale's probabilities, resized to the image's size."""
    if taps is None:
        return _scale_rows(views, first, last, network)
    rows = slice_taps(taps, first, last)
    low, high = rows_read(rows)
    return resize_band(_scale_rows(views, low, high, network), rows, width, False, low)


def _scale_rows(
    views: ScaleViews,
    first: int,
    last: int,
    network: Network,
    columns: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Rows [first, last) of a scale's probabilities (C, rows, w), windows averaged; only its
    columns [``columns``) when given (a block of a wide band)."""
    top, left = views.padding
    window_h, window_w = views.window
    start, stop = first + top, last + top  # in the padded image
    begin, end = (left + c for c in columns or (0, views.size[1]))  # in the padded image
    acc = torch.zeros(network.num_classes, stop - start, end - begin, device=network.device)
    for y, x, logits, mirrored in views.views:
        low, high = max(start, y), min(stop, y + window_h)
        a, b = max(begin, x), min(end, x + window_w)
        if low >= high or a >= b:
            continue
        part = (a - x, b - x)
        window = _window_probs(views, logits, low - y, high - y, part)  # (C, rows, b - a)
        if mirrored is not None:
            # semseg averages after the softmax, so a confident view outweighs an unsure one.
            flipped = (window_w - part[1], window_w - part[0])
            window = (
                window + _window_probs(views, mirrored, low - y, high - y, flipped).flip(-1)
            ) / 2
        acc[:, low - start : high - start, a - begin : b - begin] += window
    acc /= views.row_cover[start:stop, None] * views.column_cover[None, begin:end]
    return acc


def _window_probs(
    views: ScaleViews, logits: torch.Tensor, first: int, last: int, columns: tuple[int, int]
) -> torch.Tensor:
    """Rows [first, last) and columns [``columns``) of a window's softmax (C, rows, columns),
    upsampled first."""
    if views.rows is not None:
        rows = slice_taps(views.rows, first, last)
        low, high = rows_read(rows)
        width, align = views.window[1], views.align_corners
        logits = resize_band(logits[:, low:high], rows, width, align, low, columns)
    else:
        logits = logits[:, first:last, columns[0] : columns[1]]
    return logits.float().softmax(dim=0)


def _cover(padded, window, rows, columns, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows covering each padded row and column; a pixel's count is their product."""
    row_cover = torch.zeros(padded[0], device=device)
    column_cover = torch.zeros(padded[1], device=device)
    for y in rows:
        row_cover[y : y + window[0]] += 1
    for x in columns:
        column_cover[x : x + window[1]] += 1
    return row_cover, column_cover


def _scale_views(size, padding, window, views, cover, network: Network) -> ScaleViews:
    result = ScaleViews(size, padding, window, views, *cover)
    logits_size = tuple(views[0][2].shape[-2:])
    if logits_size != tuple(window):  # upsampled as the model's forward does
        align, device = network.align_corners, network.device
        result.rows = bilinear_taps(window[0], logits_size[0], align, device)
        result.align_corners = align
    return result


def _window_grid(size: tuple[int, int], config: InferenceConfig) -> tuple[list[int], list[int]]:
    """Row and column starts over the image padded up to the crop size."""
    if config.mode == "whole":
        return [0], [0]
    (height, width), (crop_h, crop_w) = size, config.crop_size
    stride_h = math.ceil(crop_h * config.stride_rate)
    stride_w = math.ceil(crop_w * config.stride_rate)
    return (
        window_starts(max(height, crop_h), crop_h, stride_h),
        window_starts(max(width, crop_w), crop_w, stride_w),
    )


def logits_of(
    network: Network, images: torch.Tensor, flip: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of (N, 3, h, w) images and, with ``flip``, of their mirrors (one pass)."""
    batch = torch.cat([images, images.flip(-1)]) if flip else images  # (N or 2N, 3, h, w)
    with torch.inference_mode():
        logits = network.forward(batch)
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 4
        or tuple(logits.shape[:2]) != (batch.shape[0], network.num_classes)
    ):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model returned {got} for input {tuple(batch.shape)}; expected logits "
            f"({batch.shape[0]}, {network.num_classes}, h, w): check num_classes and that the "
            "model is in eval mode"
        )
    count = images.shape[0]
    return (logits[:count], logits[count:]) if flip else (logits, None)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres, as ``cv2.INTER_LINEAR`` (no antialiasing)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
