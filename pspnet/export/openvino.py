"""The ONNX export compiled by OpenVINO for the CPU: an IR file (.xml + .bin) and its runner.

OpenVINO reads the very graph :func:`~pspnet.export.onnx.export_onnx` writes (dynamic batch,
height and width, the pyramid pooled exactly at every size), so what runs is the same network
as the ONNX Runtime path; OpenVINO's CPU plugin fuses and schedules it its own way. Three
things decide that its fp32 stays exact:

- the inference precision is set to f32 (``INFERENCE_PRECISION_HINT``): on a CPU with native
  bf16 OpenVINO would otherwise run bf16 without being asked;
- the IR keeps fp32 weights (``save_model`` compresses them to fp16 unless told not to);
- the model config and the checkpoint's metadata travel in the model's ``rt_info`` under
  ``pspnet`` (the ONNX file's metadata_props, copied), so a runner knows the network it runs.

It needs the ``openvino`` extra (``pip install 'pspnet[openvino]'``); int8 (NNCF) is in
:mod:`pspnet.inference.optimized.int8`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from pspnet.errors import CheckpointError
from pspnet.export.onnx import CONFIG_KEY, DEFAULT_OPSET, export_onnx, optional_import
from pspnet.files import make_folder
from pspnet.models.pspnet import ModelConfig, PSPNet

# The rt_info section holding the ONNX file's metadata_props (config, class names ...).
RT_SECTION = "pspnet"
# Our precisions as OpenVINO's inference precision hints.
HINTS = {"fp32": "f32", "bf16": "bf16"}

OpenVinoPrecision = Literal["fp32", "bf16"]


def openvino_model(onnx_path: str | Path) -> Any:
    """An ONNX file from :func:`~pspnet.export.onnx.export_onnx` as an ``openvino.Model``, its
    metadata_props copied into ``rt_info[pspnet]``.

    Args:
        onnx_path: the ONNX file.
    """
    ov = optional_import("openvino", "openvino")
    onnx = optional_import("onnx", "openvino")
    path = Path(onnx_path)
    try:
        model = ov.Core().read_model(str(path))
    except Exception as err:  # OpenVINO raises its own unrelated types
        raise CheckpointError(f"{path}: OpenVINO cannot read it ({err})") from err
    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        model.set_rt_info(prop.value, [RT_SECTION, prop.key])
    return model


def export_openvino(
    model: PSPNet,
    path: str | Path,
    *,
    example_size: tuple[int, int] = (473, 473),
    metadata: dict[str, str] | None = None,
    stride_logits: bool = False,
) -> Path:
    """Write ``model``'s eval forward as an OpenVINO IR: ``path`` (.xml) and its .bin beside it.

    The graph is :func:`~pspnet.export.onnx.export_onnx`'s (``images`` (N, B, H, W) to
    ``logits``, N, H and W dynamic), with fp32 weights and the metadata in ``rt_info``. The
    .bin is renamed into place before the .xml, so an .xml never names missing weights.

    Args:
        model: the network (an exact rewrite with ``exportable=True``, or as trained).
        path: destination, ``*.xml``.
        example_size: (H, W) of the example traced; any size gives the same graph.
        metadata: the checkpoint's metadata, kept in the file.
        stride_logits: logits at the output stride, as the inference routine runs them.

    Returns:
        ``path`` as a Path.
    """
    ov = optional_import("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"{path}: an OpenVINO IR is an .xml file (its weights go beside it)")
    make_folder(path.parent)
    with tempfile.TemporaryDirectory(prefix="pspnet-openvino-", dir=path.parent) as work:
        onnx_path = export_onnx(
            model,
            Path(work) / "model.onnx",
            opset=DEFAULT_OPSET,
            example_size=example_size,
            metadata=metadata,
            stride_logits=stride_logits,
        )
        ov.save_model(
            openvino_model(onnx_path), str(Path(work) / path.name), compress_to_fp16=False
        )
        os.replace(Path(work) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(Path(work) / path.name, path)
    return path


class OpenVinoModel(nn.Module):
    """An OpenVINO model of the network compiled for the CPU, called like the eval model.

    Like :class:`~pspnet.export.onnx.OnnxRuntimeModel`, it has the model's ``config``, the
    file's ``metadata`` and ``stride_logits``, so ``Network.of`` and the inference routine run
    it unchanged.

    Args:
        source: an IR (.xml) from :func:`export_openvino`, an ONNX file from
            :func:`~pspnet.export.onnx.export_onnx`, or an ``openvino.Model`` made from one
            (:func:`openvino_model`, or its NNCF int8 quantisation).
        precision: "fp32" (inference precision f32: exact to float rounding) or "bf16"
            (OpenVINO's bf16, for a CPU that computes it natively). An int8 model runs as
            "fp32": its quantised operations are int8 and the rest stays f32.
        threads: inference threads; ``torch.get_num_threads()`` when None.

    Forward:
        images (N, B, H, W) float, B the model's ``config.in_channels``, any H and W, to
        logits (N, C, h, w) float32 on the images' device (at the output stride from an
        export with ``stride_logits=True``, at the input size otherwise).
    """

    def __init__(
        self, source: Any, precision: OpenVinoPrecision = "fp32", threads: int | None = None
    ):
        super().__init__()
        ov = optional_import("openvino", "openvino")
        if precision not in HINTS:
            raise ValueError(f"precision must be one of {list(HINTS)}, got {precision!r}")
        self.path = Path(source) if isinstance(source, (str, Path)) else None
        model = self._read(ov, source)
        self.metadata = {
            key: model.get_rt_info([RT_SECTION, key]).astype(str)
            for key in self._metadata_keys(model)
        }
        self.config = self._read_config()
        self.precision = precision
        properties = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",  # one image at a time, every thread on it
        }
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", properties)
        except Exception as err:  # OpenVINO raises its own unrelated types
            raise CheckpointError(f"{self._name()}: OpenVINO cannot compile it ({err})") from err
        self.eval()

    def _read(self, ov: ModuleType, source: Any) -> Any:
        if self.path is None:
            return source
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file; write one with export_openvino")
        if self.path.suffix == ".onnx":
            return openvino_model(self.path)
        try:
            return ov.Core().read_model(str(self.path))
        except Exception as err:  # OpenVINO raises its own unrelated types
            raise CheckpointError(f"{self.path}: OpenVINO cannot read it ({err})") from err

    @staticmethod
    def _metadata_keys(model: Any) -> list[str]:
        if not model.has_rt_info([RT_SECTION]):
            return []
        return list(model.get_rt_info([RT_SECTION]).astype(dict))

    def _read_config(self) -> ModelConfig:
        if CONFIG_KEY not in self.metadata:
            raise CheckpointError(
                f"{self._name()}: not a PSPNet export (no {RT_SECTION}/{CONFIG_KEY} in its "
                "rt_info); write it with pspnet.export.export_openvino"
            )
        try:
            return ModelConfig.from_dict(json.loads(self.metadata[CONFIG_KEY]))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{self._name()}: invalid model config: {err}") from err

    def _name(self) -> str:
        return str(self.path) if self.path is not None else "the OpenVINO model"

    def stride_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits as they come (at the output stride from an export with
        ``stride_logits=True``, else at the input size): the inference routine takes either."""
        return self(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bands = self.config.in_channels
        if images.dim() != 4 or images.shape[1] != bands:
            raise ValueError(f"images must be (N, {bands}, H, W), got {tuple(images.shape)}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()  # (N, B, H, W)
        request = self.compiled.create_infer_request()  # one per call: callers may be threads
        request.infer({0: array})
        logits = request.get_output_tensor(0).data  # (N, C, h, w), the request's memory
        return torch.from_numpy(logits.copy()).to(images.device)

    def train(self, mode: bool = True) -> OpenVinoModel:
        if mode:
            raise ValueError(f"{self._name()} holds the eval forward only; it cannot train")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"source={self._name()!r}, precision={self.precision}"
