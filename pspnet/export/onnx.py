"""ONNX export of the eval-mode PSPNet with dynamic batch, height and width, and its runner.

The graph maps ``images`` (N, B, H, W) to ``logits`` (N, C, H, W) for any N, H and W, B the
model's ``in_channels`` (3 for RGB). Two parts of the model need care for that:

- ``nn.AdaptiveAvgPool2d`` / ``nn.AdaptiveMaxPool2d`` export as fixed kernels and strides
  that are only right for the traced size, so the export copy pools with
  :class:`ExactAdaptivePool2d`, which rebuilds PyTorch's bins from the runtime shape.
- every resize takes its size from ``shape[-2:]``; the tracer records those reads as graph
  ops, and the bilinear Resize nodes keep the model's ``align_corners``.

Exporter: the TorchScript one (``dynamo=False`` with ``dynamic_axes``). With torch 2.13 both
exporters give graphs that match eager to ~1e-6 at every size, but the torch.export one
(``dynamo=True``) took ~30 s for a tiny ResNet-18 against ~3 s here, and was fragile: it
specialises any dim that is 1 in the example (so batch 1 was baked in), refused H or W < 9
(a 1-pixel feature map broadcasts), tripped its shape solver on a batched matmul's reshape,
and ``torch.onnx.export`` silently fell back to a draft export when those guards failed.
The TorchScript exporter is deprecated (not removed) since torch 2.9 and works across the
torch>=2.4 that pyproject allows; what it could get wrong, a size read into a Python int and
frozen into the graph, the tests catch by running sizes other than the example's.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from pspnet.errors import CheckpointError
from pspnet.files import atomic_write
from pspnet.models.pspnet import ModelConfig, PSPNet, StrideLogits
from pspnet.models.pyramid import Pooling, PyramidPooling

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
# ONNX metadata_props key holding ModelConfig as JSON, the same key as native checkpoints.
CONFIG_KEY = "config"
# Keys of a native checkpoint's metadata that describe the safetensors file, not the model.
_FILE_KEYS = ("format", "format_version")


class ExactAdaptivePool2d(nn.Module):
    """Adaptive average or max pooling to ``bins x bins`` with bins built from the input's shape.

    PyTorch's rule along an axis of length L: bin i covers [floor(i L / b), ceil((i+1) L / b)).
    Average pooling is ``P_h @ x @ P_w^T`` with P (b, L) holding 1 / bin size inside each bin;
    max pooling masks positions outside each bin with -inf. Every index is computed with tensor
    ops on the runtime shape, so an exported graph pools exactly at every size (even L < b).

    Args:
        bins: output grid size b.
        pooling: "avg" or "max".

    Forward:
        x (N, C, H, W) to (N, C, b, b).
    """

    def __init__(self, bins: int, pooling: Pooling):
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.bins = bins
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, row_sizes = _bin_masks(x.shape[-2], self.bins, x.device)  # (b, H), (b,)
        columns, column_sizes = _bin_masks(x.shape[-1], self.bins, x.device)  # (b, W), (b,)
        if self.pooling == "avg":
            pool_h = rows.to(x.dtype) / row_sizes[:, None].to(x.dtype)  # (b, H)
            pool_w = columns.to(x.dtype) / column_sizes[:, None].to(x.dtype)  # (b, W)
            # Width first: (N, C, H, W) @ (W, b) folds to one plain (N*C*H, W) matmul.
            return pool_h @ (x @ pool_w.transpose(0, 1))  # (N, C, b, b)
        # Max is separable: the max over a cell is the max over its rows of the row maxima.
        by_column = torch.stack(
            [x.masked_fill(~columns[j], -math.inf).amax(-1) for j in range(self.bins)], dim=-1
        )  # (N, C, H, b)
        outside_rows = ~rows[:, :, None]  # (b, H, 1)
        return torch.stack(
            [by_column.masked_fill(outside_rows[i], -math.inf).amax(-2) for i in range(self.bins)],
            dim=-2,
        )  # (N, C, b, b)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, pooling={self.pooling!r}"


def _bin_masks(
    length: int | torch.Tensor, bins: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bins, length) membership of each position in each adaptive bin, and (bins,) bin sizes."""
    index = torch.arange(bins, device=device)
    start = torch.div(index * length, bins, rounding_mode="floor")  # floor(i L / b)
    end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")  # ceil
    position = torch.arange(length, device=device)
    member = (position >= start[:, None]) & (position < end[:, None])  # (bins, length)
    return member, end - start


def exportable_copy(model: PSPNet) -> PSPNet:
    """A CPU, eval-mode deep copy of ``model`` that exports with dynamic sizes.

    The copy has no auxiliary head (the eval forward never reaches it, and dropping it keeps
    its weights out of any exported file) and pools with :class:`ExactAdaptivePool2d`. Its
    logits equal the original's to float rounding; ``model`` itself is left as it was.

    Args:
        model: the network, in either mode.
    """
    if not isinstance(model, PSPNet):
        raise TypeError(f"exportable_copy needs a PSPNet, got {type(model).__name__}")
    exportable = copy.deepcopy(model).cpu().eval()
    exportable.aux_head = None
    if isinstance(exportable.ppm, PyramidPooling):
        _replace_pools(exportable.ppm, exportable.config)
    return exportable


def _replace_pools(ppm: PyramidPooling, config: ModelConfig) -> None:
    adaptive = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    for branch, bins in zip(ppm.branches, config.bins, strict=True):
        if not isinstance(branch[0], adaptive):
            raise TypeError(
                f"pyramid branch {bins} starts with {type(branch[0]).__name__}, not an adaptive "
                "pool; export the model as built by PSPNet, before other rewrites"
            )
        branch[0] = ExactAdaptivePool2d(bins, config.pooling)


def export_onnx(
    model: PSPNet,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (473, 473),
    metadata: dict[str, str] | None = None,
    stride_logits: bool = False,
) -> Path:
    """Write ``model``'s eval forward as ONNX: ``images`` (N, B, H, W) to ``logits`` (N, C, H, W).

    B is ``model.config.in_channels``, fixed in the graph (3 for RGB).

    N, H and W are dynamic; the graph matches the eager model at every size. The model config
    and ``metadata`` (class names, dataset ...) go into the file's metadata_props. The file is
    written to a temporary name and renamed, so ``path`` is never half-written.

    Args:
        model: the network (either mode; an eval-mode copy is exported, ``model`` is untouched).
        path: destination, conventionally ``*.onnx``.
        opset: ONNX opset; 17 is what onnxruntime >= 1.14 runs fully.
        example_size: (H, W) of the example traced; any size gives the same graph.
        metadata: the checkpoint's metadata, kept in the file.
        stride_logits: export the logits at the output stride (``model.stride_logits``), as the
            inference routine runs them, instead of upsampled to the input size.

    Returns:
        ``path`` as a Path.
    """
    onnx = optional_import("onnx")
    if len(example_size) != 2 or min(example_size) < 1:
        raise ValueError(f"example_size must be two positive sizes, got {example_size}")
    path = Path(path)
    exportable = exportable_copy(model)
    traced = StrideLogits(exportable) if stride_logits else exportable
    example = torch.zeros(1, model.config.in_channels, *example_size)  # (1, B, H, W)
    dims = {0: "batch", 2: "height", 3: "width"}
    out_dims = {0: "batch", 2: "out_height", 3: "out_width"} if stride_logits else dims
    properties = {k: v for k, v in (metadata or {}).items() if k not in _FILE_KEYS}
    properties[CONFIG_KEY] = model.config.to_json()

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            # The exporter is chosen on purpose (see the module docstring); its deprecation
            # notices are not the caller's to act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                traced,
                (example,),
                tmp,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: out_dims},
            )
        proto = onnx.load(tmp)
        # The exporter leaves the class axis symbolic; it is fixed by the classifier.
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = model.config.num_classes
        onnx.helper.set_model_props(proto, properties)
        onnx.save(proto, tmp)

    atomic_write(path, write)
    return path


class OnnxRuntimeModel(nn.Module):
    """A file from :func:`export_onnx` in onnxruntime on the CPU, called like the eval model.

    It is an ``nn.Module`` in eval mode with the model's ``config`` and the file's
    ``metadata``; the inference routine runs it through
    ``Network(runner, C, config.align_corners, "cpu")`` (the logits come at the output stride
    from files exported with ``stride_logits=True``, at the input size otherwise).

    Args:
        path: the ONNX file.
        threads: onnxruntime intra-op threads; ``torch.get_num_threads()`` when None.

    Forward:
        images (N, B, H, W) float, B the model's ``config.in_channels``, any H and W, to
        logits (N, C, h, w) float32 on the images' device.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        ort = optional_import("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file; write one with export_onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own unrelated types
            raise CheckpointError(f"{self.path}: onnxruntime cannot load it ({err})") from err
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = self._read_config()
        self.eval()

    def _read_config(self) -> ModelConfig:
        names = (
            [i.name for i in self.session.get_inputs()],
            [o.name for o in self.session.get_outputs()],
        )
        if names != ([INPUT_NAME], [OUTPUT_NAME]) or CONFIG_KEY not in self.metadata:
            raise CheckpointError(
                f"{self.path}: not a PSPNet export (inputs/outputs {names}, metadata keys "
                f"{sorted(self.metadata)}); write the file with pspnet.export.export_onnx"
            )
        try:
            return ModelConfig.from_dict(json.loads(self.metadata[CONFIG_KEY]))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{self.path}: invalid model config in metadata: {err}") from err

    def stride_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The file's logits as they come (at the output stride from an export with
        ``stride_logits=True``, else at the input size): the inference routine takes either."""
        return self(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bands = self.config.in_channels
        if images.dim() != 4 or images.shape[1] != bands:
            raise ValueError(f"images must be (N, {bands}, H, W), got {tuple(images.shape)}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()  # (N, B, H, W)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})  # (N, C, H, W)
        return torch.from_numpy(logits).to(images.device)

    def train(self, mode: bool = True) -> OnnxRuntimeModel:
        if mode:
            raise ValueError(f"{self.path} holds the eval forward only; it cannot train")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


EXTRA_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO"}


def optional_import(name: str, extra: str = "onnx") -> ModuleType:
    """Module ``name`` of an optional extra, or an ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"{EXTRA_NAMES[extra]} export and inference need the {name} package: "
            f"pip install 'pspnet[{extra}]'"
        ) from err
