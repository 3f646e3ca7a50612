"""int8 inference: ONNX Runtime's static quantisation or NNCF's for OpenVINO, both calibrated
on the same images, and those images."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pspnet.config import InferenceConfig
from pspnet.data.images import ImageInput
from pspnet.data.normalization import Normalization
from pspnet.errors import ConfigError
from pspnet.inference.protocol import scaled_size


def calibration_batches(
    images: Sequence[ImageInput], inference: InferenceConfig, normalization: Normalization
) -> list[torch.Tensor]:
    """Images as the network sees them at scale 1.0, one (1, N, h, w) batch each, for int8.

    Each is read and normalised as the model's training did (its bands, mean and std:
    ``normalization``), resized so its long side is ``inference.base_size`` (when set) and
    centre-cropped to at most ``inference.crop_size``, which also bounds calibration memory.
    """
    batches = []
    for image in images:
        tensor = normalization.of_image(image)[None]  # (1, N, H, W)
        height, width = tensor.shape[-2:]
        if inference.base_size:
            height, width = scaled_size(height, width, inference.base_size)
            tensor = F.interpolate(tensor, (height, width), mode="bilinear", align_corners=False)
        crop_h, crop_w = min(height, inference.crop_size[0]), min(width, inference.crop_size[1])
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        batches.append(tensor[..., top : top + crop_h, left : left + crop_w].contiguous())
    return batches


@contextlib.contextmanager
def _root_logger_quiet() -> Iterator[None]:
    """The root logger at ERROR for the duration (ONNX Runtime's quantiser warns there)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(source: Path, destination: Path, calibration: Iterable[torch.Tensor]) -> Path:
    """ONNX Runtime static int8 quantisation (QDQ, per-channel weights) from calibration images.

    Weights use 7 of their 8 bits (``reduce_range``): x86 CPUs without VNNI multiply uint8
    activations by int8 weights with a saturating 16-bit sum, which full-range weights overflow
    (docs/benchmarks.md, "CamVid: accuracy of the fast paths", has what each choice cost).

    Args:
        source: fp32 ONNX model from ``export_onnx``.
        destination: output path.
        calibration: normalised image batches (N, 3, H, W), e.g. training crops.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = list(calibration)
    if not batches:
        raise ConfigError("int8 calibration needs at least one image")
    with _root_logger_quiet():  # its advice to run its pre-processing, logged on every call
        quantize_static(
            str(source),
            str(destination),
            _Calibration(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    # Keep the model config and class names that OnnxRuntimeModel reads from the metadata.
    import onnx

    quantized = onnx.load(str(destination))
    properties = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    onnx.helper.set_model_props(quantized, properties)
    onnx.save(quantized, str(destination))
    return destination


def quantize_openvino(model: Any, calibration: Iterable[torch.Tensor]) -> Any:
    """NNCF post-training int8 quantisation of an ``openvino.Model`` from calibration images.

    NNCF's defaults for the CPU: symmetric int8 weights per channel, activations per tensor,
    fast bias correction, and its overflow fix (the first layer's weights in 7 bits, against
    the saturation of CPUs without VNNI that ONNX Runtime's path avoids with ``reduce_range``
    everywhere). Every image is read (the
    subset is all of them), one batch at a time, as ONNX Runtime's calibration reads them.

    Args:
        model: from :func:`pspnet.export.openvino.openvino_model` (not modified).
        calibration: normalised image batches (N, B, H, W), e.g. training crops.

    Returns:
        The quantised ``openvino.Model``, with the source's ``rt_info[pspnet]`` metadata.
    """
    import nncf

    from pspnet.export.openvino import RT_SECTION

    batches = [batch.numpy().astype(np.float32) for batch in calibration]
    if not batches:
        raise ConfigError("int8 calibration needs at least one image")
    # NNCF draws a progress bar on stdout; the library reports nothing there.
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    for key, value in model.get_rt_info([RT_SECTION]).astype(dict).items():
        quantized.set_rt_info(value.astype(str), [RT_SECTION, key])
    return quantized


class _Calibration:
    """The calibration batches, one per ``get_next`` call, as ONNX Runtime reads them."""

    def __init__(self, batches: list[torch.Tensor]):
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch.numpy().astype(np.float32)}
