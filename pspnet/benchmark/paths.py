"""The paths the benchmark measures, why this machine cannot run some, and building one."""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pspnet.benchmark.semseg import SemsegPSPNet, semseg_difference
from pspnet.inference.optimized.optimize import cpu_capability, native_bf16, optimize
from pspnet.models.pspnet import ModelConfig, PSPNet


@dataclass(frozen=True)
class Candidate:
    """A path: a precision and a backend (see :func:`pspnet.inference.optimized.optimize`)."""

    precision: str
    backend: str

    @property
    def name(self) -> str:
        return f"{self.precision} {self.backend}"

    @property
    def spelling(self) -> str:
        """As ``--paths`` takes it: ``fp32:openvino``."""
        return f"{self.precision}:{self.backend}"


# The plain model first: every other path is measured against it. semseg's network (the same
# weights under semseg's modules, :mod:`pspnet.benchmark.semseg`) is the reference of the speed
# goals. Both run whatever --paths says.
PLAIN = Candidate("none", "eager")
SEMSEG = Candidate("none", "semseg")
REFERENCES = (PLAIN, SEMSEG)
CANDIDATES = (
    PLAIN,
    SEMSEG,
    Candidate("fp32", "eager"),
    Candidate("fp32", "compile"),
    Candidate("fp32", "cudagraphs"),
    Candidate("fp32", "onnx"),
    Candidate("fp32", "openvino"),
    Candidate("bf16", "eager"),
    Candidate("bf16", "compile"),
    Candidate("bf16", "cudagraphs"),
    Candidate("bf16", "openvino"),
    Candidate("fp16", "eager"),
    Candidate("fp16", "compile"),
    Candidate("fp16", "cudagraphs"),
    Candidate("int8", "onnx"),
    Candidate("int8", "openvino"),
)
CPU_ONLY = ("onnx", "openvino")
# The packages each backend needs, and the extra that installs them.
PACKAGES = {
    "onnx": (("onnx", "onnxruntime"), "onnx"),
    "openvino": (("onnx", "openvino"), "openvino"),
}


def path_spelling(text: str) -> str:
    """A ``--paths`` value (``fp32:openvino``) checked against the paths there are."""
    spellings = [candidate.spelling for candidate in CANDIDATES if candidate not in REFERENCES]
    if text not in spellings:
        raise ValueError(f"{text!r} is not a path; paths: {', '.join(spellings)}")
    return text


def skip_reason(
    candidate: Candidate,
    device: torch.device,
    config: ModelConfig,
    *,
    asked: Sequence[str],
    calibrated: bool,
) -> str | None:
    """Why ``candidate`` is not measured here, or None when it is.

    Args:
        candidate: the path.
        device: where the benchmark runs.
        config: the model's.
        asked: the ``--paths`` given (every path when empty; the references always run).
        calibrated: int8 calibration images are at hand.
    """
    if candidate == SEMSEG:
        return semseg_difference(config)
    reason = _unavailable(candidate, device, calibrated)
    if reason is None and asked and candidate not in REFERENCES and candidate.spelling not in asked:
        return "not in --paths"
    return reason


def _unavailable(candidate: Candidate, device: torch.device, calibrated: bool) -> str | None:
    precision, backend = candidate.precision, candidate.backend
    cuda = device.type == "cuda"
    if not cuda and (precision == "fp16" or backend == "cudagraphs"):
        here = "run with --device cuda" if torch.cuda.is_available() else "none here"
        return f"CUDA only ({here})"
    if cuda and (precision == "int8" or backend in CPU_ONLY):
        return "CPU only (run with --device cpu)"
    if backend == "onnx" and precision == "bf16":
        return "not offered through ONNX Runtime"
    if precision == "bf16" and not cuda and not native_bf16():
        return f"no native bf16 on this CPU ({cpu_capability()})"
    missing = _missing_packages(candidate)
    if missing:
        return missing
    if precision == "int8" and not calibrated:
        return "needs calibration images: give --data (its train split calibrates)"
    return None


def _missing_packages(candidate: Candidate) -> str | None:
    packages, extra = PACKAGES.get(candidate.backend, ((), ""))
    if candidate.backend == "openvino" and candidate.precision == "int8":
        packages = (*packages, "nncf")
    absent = [name for name in packages if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"{', '.join(absent)} not installed (pip install 'pspnet[{extra}]')"


def build(
    candidate: Candidate,
    model: PSPNet,
    calibration: list[torch.Tensor] | None,
    work_dir: Path,
) -> nn.Module:
    """The path's runner for ``model`` (the plain model as a copy, so it is built like the
    others and its memory counted the same way)."""
    if candidate == PLAIN:
        return copy.deepcopy(model).eval()
    if candidate == SEMSEG:
        return SemsegPSPNet.of(model)
    with warnings.catch_warnings():
        # The ONNX exporter's notes on its own constant folding (pyproject's pytest filter too).
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        return optimize(
            model,
            candidate.precision,
            candidate.backend,
            calibration if candidate.precision == "int8" else None,
            work_dir=work_dir / candidate.spelling.replace(":", "-"),
        )
