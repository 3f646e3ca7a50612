"""One entry to fast inference: ``optimize(model, precision, backend)``.

Every path starts from the exact rewrites (BatchNorm folded into the convolutions, the
factorised pyramid head) and then runs in eager PyTorch, ``torch.compile`` (inductor) or ONNX
Runtime, in fp32 (exact to float rounding), bf16 (only fast where the CPU has native bf16) or
int8 (ONNX Runtime static quantisation). The result is called like the eval model,
so ``predict_probs``, ``evaluate``, ``Segmenter`` and the CLI use it unchanged.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pspnet.errors import ConfigError
from pspnet.models.pspnet import PSPNet
from pspnet.optimized.bf16 import BF16_FP32_STAGES, bf16_model
from pspnet.optimized.factorized import factorize_head
from pspnet.optimized.fold import fold_batchnorm

Precision = Literal["auto", "fp32", "bf16", "int8"]
Backend = Literal["auto", "eager", "compile", "onnx"]

# The fastest exact (fp32) backend measured per CPU capability by benchmarks/inference.py;
# the figures and the CPUs they were measured on are in docs/benchmarks.md. Capabilities not
# measured yet use the eager path, which never loses to the reference (the rewrites only
# remove work).
MEASURED_FASTEST: dict[str, Backend] = {"AVX2": "compile"}


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


def choose_backend(precision: Precision, backend: Backend) -> tuple[str, str]:
    """Resolve ``auto``: fp32 unless bf16 is native; the fastest backend measured here."""
    if precision == "auto":
        precision = "fp32"
    if backend == "auto":
        backend = "onnx" if precision == "int8" else MEASURED_FASTEST.get(cpu_capability(), "eager")
        if precision == "bf16" and backend == "onnx":
            backend = "eager"
    return precision, backend


class OptimizedModel(nn.Module):
    """An optimised network called like the eval model: images (N, 3, H, W) -> logits.

    Carries ``config`` and ``metadata`` of the original so every consumer of a model works.
    """

    def __init__(
        self, inner: nn.Module, source: PSPNet, precision: str, backend: str, channels_last: bool
    ):
        super().__init__()
        self.inner = inner
        self.config = source.config
        self.metadata = dict(getattr(source, "metadata", {}))
        self.precision, self.backend, self.channels_last = precision, backend, channels_last
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)  # device of the runner
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.inner(images)  # fp32 logits on every path (bf16 keeps its classifier fp32)

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
    work_dir: str | Path | None = None,
    fp32_stages: Iterable[str] = BF16_FP32_STAGES,
) -> OptimizedModel:
    """The fastest path for ``model`` at the asked precision, called like the eval model.

    Args:
        model: a PSPNet (CPU).
        precision: "fp32" (exact), "bf16" (see :func:`pspnet.optimized.bf16.bf16_model`; warns
            where the CPU lacks native bf16), "int8" (ONNX Runtime static quantisation, needs
            ``calibration``) or "auto" (fp32).
        backend: "eager", "compile" (torch.compile with inductor), "onnx" (ONNX Runtime) or
            "auto" (the fastest measured on this kind of CPU).
        calibration: normalised images (N, 3, H, W) for int8 calibration.
        work_dir: where ONNX files go (a temporary folder by default).
        fp32_stages: backbone stages that bf16 keeps in fp32 (see :data:`BF16_FP32_STAGES`).
    """
    precision, backend = choose_backend(precision, backend)
    if precision not in ("fp32", "bf16", "int8"):
        raise ConfigError(f"precision must be auto, fp32, bf16 or int8, got {precision!r}")
    if precision == "bf16" and not native_bf16():
        warnings.warn(
            f"this CPU ({cpu_capability()}) has no native bf16: bf16 is emulated and many times "
            "slower than fp32 here; use --precision fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    if precision == "int8" and backend != "onnx":
        raise ConfigError("int8 runs through ONNX Runtime: use backend 'onnx' or 'auto'")
    if backend == "onnx" and precision == "bf16":
        raise ConfigError(
            "bf16 is not offered through ONNX Runtime: use backend 'eager' or 'compile'"
        )
    model = model.cpu().eval()
    if backend == "onnx":
        return OptimizedModel(
            _onnx_runner(model, precision, calibration, work_dir), model, precision, backend, False
        )
    rewritten = exact_rewrite(model)
    if precision == "bf16":
        bf16_model(rewritten, fp32_stages)
    rewritten.to(memory_format=torch.channels_last)
    if backend == "compile":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the (frozen) weights into the graph
        rewritten = torch.compile(rewritten, dynamic=True)
    elif backend != "eager":
        raise ConfigError(f"backend must be auto, eager, compile or onnx, got {backend!r}")
    return OptimizedModel(rewritten, model, precision, backend, True)


def _onnx_runner(
    model: PSPNet,
    precision: str,
    calibration: Iterable[torch.Tensor] | None,
    work_dir: str | Path | None,
) -> nn.Module:
    from pspnet.export.onnx import OnnxRuntimeModel, export_onnx
    from pspnet.optimized.int8 import quantize_int8

    folder = Path(work_dir or tempfile.mkdtemp(prefix="pspnet-onnx-"))
    path = export_onnx(exact_rewrite(model, exportable=True), folder / "model.onnx")
    if precision == "int8":
        if calibration is None:
            raise ConfigError("int8 needs calibration images (a few hundred training crops)")
        path = quantize_int8(path, folder / "model.int8.onnx", calibration)
    return OnnxRuntimeModel(path)
