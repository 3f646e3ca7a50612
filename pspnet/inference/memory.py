"""What one image costs the inference routine, and how much of it fits in memory.

:func:`image_memory` estimates an image's bytes beyond the weights (a service's and a
command's pixel limits come from it, through :func:`pixels_within`); :func:`fit_window_batch`
sizes a CUDA network's window batch to its free memory from one measured window;
:func:`release_free_heap` hands freed heap pages back to the system between long stretches of
work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import torch

from pspnet.config import InferenceConfig
from pspnet.inference.protocol import Network, logits_of
from pspnet.models.pspnet import ModelConfig
from pspnet.models.resnet import DEPTHS


def release_free_heap() -> None:
    """Hand free heap pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps what large temporaries freed in its heaps, at an address it may not reuse for
    the next ones (the band buffers of a streamed scene come in many shapes, and torch's and
    GDAL's threads each take an arena), so a long run's resident memory creeps up with its
    length; trimming between rows of windows bounds it by what is live.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def windows_that_fit(
    free_bytes: int, window_bytes: int, cap: int = 16, headroom: float = 0.8
) -> int:
    """Windows per forward pass whose memory (``window_bytes`` each) fits ``headroom`` of free.

    Memory grows linearly with the windows of a pass; at least 1, at most ``cap`` (a
    Cityscapes image at 713 has 8 windows per scale).
    """
    return max(1, min(cap, int(free_bytes * headroom) // max(1, window_bytes)))


def fit_window_batch(network: Network, config: InferenceConfig) -> int:
    """``window_batch`` sized to the free memory of a CUDA network, from one measured window.

    One window (and its mirror with ``flip``) runs through the network; its peak memory above
    what was allocated before is the cost of a window. On other devices: ``config``'s.
    """
    device = network.device
    if device.type != "cuda":
        return config.window_batch
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    logits_of(network, torch.zeros(1, 3, *config.crop_size, device=device), config.flip)
    window = torch.cuda.max_memory_allocated(device) - before
    return windows_that_fit(free, window)


# Bytes one output pixel costs outside the network's logits and activations, in the three
# phases of an image (the largest counts): decoding (BGR and RGB, 6) and normalising (the float
# image and two temporaries, 36); the routine (the uint8 and float images, 15, the padded copy
# the windows are cut from, 12, labels and confidence, 12); writing (the uint8 image, 3, labels
# and confidence, 5, the colour map, 3, the overlay's float32 blend, its weights and colours,
# 22, the PNGs, 5).
PHASE_BYTES = {"decoding": 42, "routine": 39, "writing": 38}


def image_memory(network: Network, config: InferenceConfig) -> tuple[float, float]:
    """(fixed bytes, bytes per output pixel) one image costs the routine, beyond the weights.

    An estimate from what the routine holds: the image and its outputs (:data:`PHASE_BYTES`,
    whichever phase holds most, the logits counted in the routine's), every view's stride
    logits (C floats per output-stride cell, twice with flip, up to four windows over a pixel
    at a stride of 2/3), and the network's widest activations (three feature maps at once: a
    block's input, output and shortcut) for the largest input it sees at once: a window batch
    when sliding (fixed), the scaled image when whole (per pixel). Scales tied to
    ``base_size`` or ``fit_within`` cost a fixed amount whatever the image's size.
    """
    model = network.config or ModelConfig(network.num_classes)
    stride = model.output_stride
    flips = 2 if config.flip else 1
    cover = (math.ceil(1 / config.stride_rate) ** 2) if config.mode == "slide" else 1
    logits_per_pixel = 4 * network.num_classes * flips * cover / stride**2
    activation = 3 * 4 * _widest_floats_per_pixel(model)  # per network input pixel
    areas = [s * s for s in config.scales]  # scaled pixels per output pixel
    fixed, routine = 0.0, float(PHASE_BYTES["routine"])
    if config.base_size is not None or config.fit_within is not None:
        long_side = config.base_size or max(config.fit_within)
        fixed += sum(a * long_side**2 for a in areas) * logits_per_pixel
        biggest_input = max(areas) * long_side**2
    else:
        routine += sum(areas) * logits_per_pixel
        biggest_input = None
    if config.mode == "slide":
        window = config.crop_size[0] * config.crop_size[1]
        fixed += activation * window * config.window_batch * flips
    elif biggest_input is not None:
        fixed += activation * biggest_input * flips
    else:
        routine += activation * max(areas) * flips
    return fixed, max(PHASE_BYTES["decoding"], routine, PHASE_BYTES["writing"])


def pixels_within(budget_bytes: int, network: Network, config: InferenceConfig) -> int:
    """The largest image, in pixels, whose inference stays within ``budget_bytes`` (at least 1):
    :func:`image_memory`'s estimate, for a service's and a command's pixel limits.
    """
    fixed, per_pixel = image_memory(network, config)
    return max(1, int((budget_bytes - fixed) // per_pixel))


def _widest_floats_per_pixel(model: ModelConfig) -> float:
    """The widest feature map's floats per input pixel: channels over its stride squared."""
    kind, _ = DEPTHS[model.backbone]
    expansion, width = (4 if kind == "bottleneck" else 1), model.base_width
    stem = width if model.stem == "torchvision" else 2 * width // (1 if model.stem == "deep" else 2)
    stride = model.output_stride
    maps = [
        stem / 2**2,  # the stem's convolutions at stride 2
        width * expansion / 4**2,  # layer1
        2 * width * expansion / min(stride, 8) ** 2,  # layer2
        4 * width * expansion / min(stride, 16) ** 2,  # layer3
        8 * width * expansion / stride**2,  # layer4
        2 * 8 * width * expansion / stride**2 if model.use_ppm else 0,  # the pyramid's concat
    ]
    return max(maps)
