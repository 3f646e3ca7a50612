"""One entry to fast inference: ``optimize(model, precision, backend)``, on any device.

Every path but ``none`` starts from the exact rewrites (BatchNorm folded into the
convolutions, the factorised pyramid head, channels_last) and then runs in eager PyTorch,
``torch.compile`` (inductor), ``torch.compile`` with CUDA graphs, ONNX Runtime (CPU) or
OpenVINO (CPU), in fp32 (exact to float rounding), bf16 (CPU where it is native, CUDA), fp16
(CUDA) or int8 (CPU: ONNX Runtime static quantisation, or NNCF's for OpenVINO). The result is
called like the eval model, so ``segment_tensor``, ``evaluate``, ``Segmenter`` and the CLI use
it unchanged.

``auto`` is what every command runs unless told otherwise: what ``pspnet benchmark --save``
measured fastest on this machine for this model shape among the paths that kept their
agreement thresholds (:mod:`pspnet.inference.optimized.measured`), and where nothing was
measured the fallback rule: the exact rewrites, eager, which never lose to the plain model
(they only remove work), or what was measured fastest on this kind of device
(:data:`MEASURED_FASTEST`), with compile only where the work amortises its warm-up.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import typing
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.errors import ConfigError
from pspnet.inference.optimized.factorized import factorize_head
from pspnet.inference.optimized.fold import fold_batchnorm, to_channels_last
from pspnet.inference.optimized.measured import ModelShape, find_record
from pspnet.inference.optimized.reduced import BF16_FP32_STAGES, reduced_precision
from pspnet.inference.settings import Backend, Precision
from pspnet.models.pspnet import ModelConfig, PSPNet, StrideLogits

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# What benchmarks measured fastest per device kind (:func:`device_kind`), as (precision,
# backend); the figures and the machines are in docs/benchmarks.md ("Inference paths on the
# CPU" and the native bf16 sections). A reduced precision is listed only where it met both
# targets there: at least 3x eager fp32 and at least 99.9% argmax agreement with fp32 on
# CamVid val. Kinds not listed run the exact rewrites in eager mode.
MEASURED_FASTEST: dict[str, tuple[Precision, Backend]] = {
    "cpu AVX2": ("fp32", "compile"),
    "cpu AVX512 bf16": ("fp32", "compile"),
}

# Images of one size after which compile's warm-up has paid for itself over the eager rewrite
# on the device kinds above (warm-up over the time saved per image, docs/benchmarks.md); below
# it, ``auto`` stays eager.
AMORTIZED_AFTER = 400

# inductor constant-folds the (frozen) weights into the graph; set per compile, not for the
# whole process.
FREEZING = {"freezing": True}


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from its flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def cpu_capability() -> str:
    """PyTorch's vector capability of this CPU: "AVX2", "AVX512", "DEFAULT" ..."""
    return torch.backends.cpu.get_cpu_capability()


def device_kind(device: str | torch.device = "cpu") -> str:
    """The key of :data:`MEASURED_FASTEST`: "cpu AVX2", "cpu AVX512 bf16", "cuda NVIDIA H200"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"cpu {cpu_capability()}" + (" bf16" if native_bf16() else "")


@dataclass(frozen=True)
class ChosenPath:
    """The path that runs and why.

    Attributes:
        precision: none, fp32, bf16, fp16 or int8.
        backend: eager, compile, cudagraphs, onnx or openvino.
        reason: "as asked", "measured on DATE" (``pspnet benchmark --save`` on this machine
            for this model shape) or "the fallback rule" (:data:`MEASURED_FASTEST`).
    """

    precision: str
    backend: str
    reason: str


def choose_path(
    precision: Precision,
    backend: Backend,
    device: str | torch.device = "cpu",
    amortized: bool = False,
    *,
    shape: ModelShape | None = None,
    calibrated: bool = False,
) -> tuple[str, str]:
    """Resolve ``auto`` and refuse what ``device`` cannot run; returns (precision, backend).

    The (precision, backend) of :func:`resolve_path`, which says why.
    """
    chosen = resolve_path(precision, backend, device, amortized, shape=shape, calibrated=calibrated)
    return chosen.precision, chosen.backend


def resolve_path(
    precision: Precision,
    backend: Backend,
    device: str | torch.device = "cpu",
    amortized: bool = False,
    *,
    shape: ModelShape | None = None,
    calibrated: bool = False,
) -> ChosenPath:
    """Resolve ``auto`` by measurement, else by the fallback rule; refuse what ``device``
    cannot run.

    Args:
        precision: as asked; ``auto`` takes the fastest qualifying path measured on this
            machine for ``shape``, else the measured fastest of this device kind
            (:data:`MEASURED_FASTEST`), else fp32.
        backend: as asked; ``auto`` takes the fastest measured backend (of the asked
            precision), else eager, onnx for int8, or the measured fastest of this device
            kind when ``amortized`` and the precision is the measured one.
        device: where the model runs.
        amortized: the work is long enough to repay a compile warm-up (many images of one
            size, a service); without it a measured compile is passed over.
        shape: the model's shape and crop, which find its measurements; none used when None.
        calibrated: int8 calibration images are given, so a measured int8 may be taken.
    """
    device = torch.device(device)
    auto = precision == "auto" or (backend == "auto" and precision != "none")
    record = find_record(shape, device) if auto and shape is not None else None
    if record is not None:
        fastest = record.fastest(
            None if precision == "auto" else precision,
            None if backend == "auto" else backend,
            amortized=amortized,
            calibrated=calibrated,
        )
        if fastest is not None:
            _check_path(fastest.precision, fastest.backend, device)
            return ChosenPath(fastest.precision, fastest.backend, f"measured on {record.date}")
    precision, backend = _fallback_path(precision, backend, device, amortized)
    return ChosenPath(precision, backend, "the fallback rule" if auto else "as asked")


def _fallback_path(
    precision: Precision, backend: Backend, device: torch.device, amortized: bool
) -> tuple[str, str]:
    """Today's rule where nothing was measured: see :func:`resolve_path`."""
    measured = MEASURED_FASTEST.get(device_kind(device))
    if precision == "auto":
        precision = measured[0] if measured else "fp32"
    if precision == "none":
        if backend not in ("auto", "eager"):
            raise ConfigError(
                f"precision none is the plain eager model; backend {backend!r} "
                "needs a precision (fp32 is exact)"
            )
        return "none", "eager"
    if backend == "auto":
        if precision == "int8":
            backend = "onnx"
        elif amortized and measured and measured[0] == precision:
            backend = measured[1]
        else:
            backend = "eager"
    _check_path(precision, backend, device)
    return precision, backend


def _check_path(precision: str, backend: str, device: torch.device) -> None:
    cuda = device.type == "cuda"
    if precision not in typing.get_args(Precision):
        valid = ", ".join(typing.get_args(Precision))
        raise ConfigError(f"precision must be {valid}, got {precision!r}")
    if backend not in typing.get_args(Backend):
        valid = ", ".join(typing.get_args(Backend))
        raise ConfigError(f"backend must be {valid}, got {backend!r}")
    if precision == "fp16" and not cuda:
        raise ConfigError("fp16 runs on CUDA; on the CPU use fp32, or bf16 where it is native")
    if backend == "cudagraphs" and not cuda:
        raise ConfigError("backend cudagraphs needs CUDA; on the CPU use eager or compile")
    if cuda and (precision == "int8" or backend in ("onnx", "openvino")):
        raise ConfigError(
            "int8, onnx and openvino run through ONNX Runtime or OpenVINO on the CPU; on CUDA "
            "use fp32, bf16 or fp16 with eager, compile or cudagraphs"
        )
    if precision == "int8" and backend not in ("onnx", "openvino"):
        raise ConfigError(
            "int8 runs through ONNX Runtime or OpenVINO: use backend 'onnx', 'openvino' or 'auto'"
        )
    if backend == "onnx" and precision in DTYPES:
        raise ConfigError(
            f"{precision} is not offered through ONNX Runtime: use backend 'eager' or 'compile'"
        )
    if backend == "openvino" and precision == "bf16" and not native_bf16():
        raise ConfigError(
            f"OpenVINO bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX); this one has "
            f"{cpu_capability()}: use --precision fp32"
        )


class OptimizedModel(nn.Module):
    """An optimised network, called like the eval model: images (N, 3, H, W) -> logits.

    ``stride_logits`` gives the logits at the output stride, as :class:`PSPNet`'s does (what
    the inference routine runs); ``forward`` upsamples them to the input size.

    Args:
        inner: images -> logits at the output stride (a rewritten model's ``StrideLogits``,
            compiled or not, or an ONNX Runtime session of one).
        config: the original model's config.
        precision: the path's precision, for reports.
        backend: the path's backend, for reports.
        channels_last: hand ``inner`` channels_last images.
    """

    def __init__(
        self,
        inner: nn.Module,
        config: ModelConfig,
        precision: str,
        backend: str,
        channels_last: bool,
    ):
        super().__init__()
        self.inner = inner
        self.config = config
        self.precision, self.backend, self.channels_last = precision, backend, channels_last
        self.eval()

    def stride_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.inner(images)  # fp32 logits on every path (bf16 keeps its classifier fp32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.stride_logits(images)
        return F.interpolate(
            logits, images.shape[-2:], mode="bilinear", align_corners=self.config.align_corners
        )

    def train(self, mode: bool = True) -> OptimizedModel:
        if mode:
            raise ValueError("an optimised model is for inference only")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"precision={self.precision}, backend={self.backend}"


def exact_rewrite(model: PSPNet, exportable: bool = False) -> PSPNet:
    """BatchNorm folded and the pyramid head factorised; logits equal to float rounding.

    Args:
        model: the network (not modified).
        exportable: pool with shape-exact operations so ONNX export works at any size.
    """
    if exportable:
        from pspnet.export.onnx import exportable_copy

        model = exportable_copy(model)
    rewritten = factorize_head(fold_batchnorm(model))
    rewritten.aux_head = None  # never used at test time
    return rewritten


def optimize(
    model: PSPNet,
    precision: Precision = "auto",
    backend: Backend = "auto",
    calibration: Iterable[torch.Tensor] | None = None,
    *,
    work_dir: str | Path | None = None,
    fp32_stages: Iterable[str] = BF16_FP32_STAGES,
    amortized: bool = False,
) -> nn.Module:
    """The fastest path for ``model`` at the asked precision, on the model's device.

    Args:
        model: a PSPNet on the CPU or a CUDA device (the path runs there).
        precision: "fp32" (exact), "bf16" (see :func:`.reduced.reduced_precision`;
            warns on a CPU without native bf16; refused through OpenVINO), "fp16" (CUDA),
            "int8" (CPU, ONNX Runtime static quantisation or NNCF's for OpenVINO, needs
            ``calibration``), "none" (the plain eager model, returned as it is) or "auto"
            (see :func:`resolve_path`).
        backend: "eager", "compile" (torch.compile with inductor), "cudagraphs" (compile with
            CUDA graphs: for shapes that repeat, as sliding windows do), "onnx" (ONNX Runtime,
            CPU), "openvino" (OpenVINO, CPU) or "auto".
        calibration: normalised images (N, 3, H, W) for int8 calibration.
        work_dir: where ONNX files go (a temporary folder by default).
        fp32_stages: backbone stages that bf16/fp16 keep in fp32 (see :data:`BF16_FP32_STAGES`).
        amortized: the work repays a compile warm-up (many images of one size, a service).
    """
    if not isinstance(model, PSPNet):
        raise ConfigError(
            f"optimize takes a PSPNet, got {type(model).__name__}: optimise the original model"
        )
    device = next(model.parameters()).device
    precision, backend = choose_path(precision, backend, device, amortized)
    model = model.eval()
    if precision == "none":
        return model
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        warnings.warn(
            f"this CPU ({cpu_capability()}) has no native bf16: bf16 is emulated and many times "
            "slower than fp32 here; use --precision fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    if backend == "onnx":
        runner = _onnx_runner(model, precision, calibration, work_dir)
        return OptimizedModel(runner, model.config, precision, backend, False)
    if backend == "openvino":
        runner = _openvino_runner(model, precision, calibration, work_dir)
        return OptimizedModel(runner, model.config, precision, backend, False)
    rewritten = exact_rewrite(model)
    if precision in DTYPES:
        reduced_precision(rewritten, DTYPES[precision], fp32_stages)
    to_channels_last(rewritten)
    inner: nn.Module = StrideLogits(rewritten)
    if backend == "cudagraphs":  # one graph per input shape, replayed
        inner = torch.compile(inner, mode="reduce-overhead", dynamic=False, options=FREEZING)
    elif backend == "compile":
        inner = torch.compile(inner, dynamic=device.type == "cpu" or None, options=FREEZING)
    return OptimizedModel(inner, model.config, precision, backend, True)


@contextlib.contextmanager
def _exact_onnx(
    model: PSPNet,
    precision: str,
    calibration: Iterable[torch.Tensor] | None,
    work_dir: str | Path | None,
) -> Iterator[tuple[Path, Path]]:
    """(folder, the exact ONNX graph in it): ``work_dir``, else a temporary folder removed
    after (the runtimes read the file into memory)."""
    if precision == "int8" and calibration is None:
        raise ConfigError("int8 needs calibration images (a few hundred training crops)")
    from pspnet.export.onnx import export_onnx

    with contextlib.ExitStack() as stack:
        folder = Path(
            work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="pspnet-"))
        )
        exported = exact_rewrite(model, exportable=True)
        yield folder, export_onnx(exported, folder / "model.onnx", stride_logits=True)


def _onnx_runner(
    model: PSPNet,
    precision: str,
    calibration: Iterable[torch.Tensor] | None,
    work_dir: str | Path | None,
) -> nn.Module:
    from pspnet.export.onnx import OnnxRuntimeModel
    from pspnet.inference.optimized.int8 import quantize_int8

    with _exact_onnx(model, precision, calibration, work_dir) as (folder, path):
        if precision == "int8":
            path = quantize_int8(path, folder / "model.int8.onnx", calibration)
        return OnnxRuntimeModel(path)  # the session holds the file's contents


def _openvino_runner(
    model: PSPNet,
    precision: str,
    calibration: Iterable[torch.Tensor] | None,
    work_dir: str | Path | None,
) -> nn.Module:
    """The exact ONNX graph compiled by OpenVINO: f32 or bf16, or int8 by NNCF."""
    from pspnet.export.openvino import OpenVinoModel, openvino_model
    from pspnet.inference.optimized.int8 import quantize_openvino

    with _exact_onnx(model, precision, calibration, work_dir) as (_, path):
        graph = openvino_model(path)  # read into memory: the file may go
        if precision == "int8":
            graph = quantize_openvino(graph, calibration)
        return OpenVinoModel(graph, "bf16" if precision == "bf16" else "fp32")
