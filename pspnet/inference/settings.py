"""The settings every command that runs a model shares: where it runs, on which path, and
which of a checkpoint's recorded inference settings it replaces."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pspnet.config import InferenceConfig
from pspnet.devices import resolve_device
from pspnet.errors import ConfigError
from pspnet.settings import check_settings, field_docs, option_of, setting

Precision = Literal["auto", "none", "fp32", "bf16", "fp16", "int8"]
Backend = Literal["auto", "eager", "compile", "cudagraphs", "onnx", "openvino"]


def device_name(text: str) -> str:
    """A device this machine has (cpu, cuda, cuda:N); raises ValueError naming the problem."""
    try:
        resolve_device(text)
    except ConfigError as err:
        raise ValueError(str(err)) from err
    return text


@dataclass(frozen=True)
class RuntimeSettings:
    """Where the network runs and on which path.

    Attributes:
        device: cpu, cuda or cuda:N.
        precision: auto: the fastest path pspnet benchmark --save measured on this machine for
            this model that kept its agreement thresholds (int8 only when asked for: it needs
            calibration images), else the exact fp32 rewrites (BN folded, factorised head,
            channels_last; logits equal to float rounding), or what was measured fastest on
            this kind of device; none: the model as trained (for debugging); fp32: exact;
            bf16: CUDA, or a CPU with native bf16; fp16: CUDA; int8: CPU, ONNX Runtime or
            OpenVINO.
        backend: auto: the fastest measured on this machine for this model (pspnet benchmark
            --save), else eager, except torch.compile where it was measured faster on this
            kind of device; compile only where the work repays its warm-up (predict over many
            images; never serve, where each new image size would recompile); compile:
            torch.compile; cudagraphs: compile with CUDA graphs (CUDA; shapes that repeat, as
            sliding windows); onnx: ONNX Runtime (CPU); openvino: OpenVINO (CPU; needs
            pspnet[openvino]).
        calibration: with precision int8: training images (files, folders or globs) that set
            the activation ranges.
        calibration_count: at most this many calibration images, spread evenly.
    """

    device: str = setting("cpu", parse=device_name)
    precision: Precision = "auto"
    backend: Backend = "auto"
    calibration: tuple[str, ...] = setting((), metavar="IMAGES")
    calibration_count: int = setting(200, low=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.precision == "int8" and not self.calibration:
            raise ConfigError(
                "--precision int8 needs --calibration IMAGES: a few hundred training images "
                "that set the activation ranges"
            )
        if self.calibration and self.precision != "int8":
            raise ConfigError("--calibration is only used with --precision int8")


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_default_text(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _overrides_class() -> type:
    """InferenceConfig's fields, each ``None`` by default: None keeps the checkpoint's value.

    Derived from InferenceConfig so that each inference setting is declared once.
    """
    hints, docs = typing.get_type_hints(InferenceConfig), field_docs(InferenceConfig)
    fields, lines = [], []
    for field in dataclasses.fields(InferenceConfig):
        option = dataclasses.replace(
            option_of(field), shown_default=f"the checkpoint's, else {_default_text(field.default)}"
        )
        fields.append((field.name, hints[field.name] | None, setting(None, **vars(option))))
        lines.append(f"    {field.name}: {docs[field.name]}")

    def apply(self, recorded: InferenceConfig | dict) -> InferenceConfig:
        """``recorded`` (a checkpoint's settings) with the fields given here replaced."""
        if isinstance(recorded, InferenceConfig):
            recorded = dataclasses.asdict(recorded)
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return InferenceConfig(**{**recorded, **given})

    doc = (
        "Inference settings that replace a checkpoint's recorded ones; None keeps its own.\n\n"
        "Attributes:\n" + "\n".join(lines)
    )
    namespace = {"__doc__": doc, "__post_init__": check_settings, "apply": apply}
    made = dataclasses.make_dataclass(
        "InferenceOverrides", fields, frozen=True, namespace=namespace
    )
    made.__module__ = __name__  # where it is documented and pickled from
    return made


InferenceOverrides = _overrides_class()
