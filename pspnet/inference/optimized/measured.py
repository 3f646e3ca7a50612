"""What ``pspnet benchmark --save`` measured on this machine, read back by ``auto``.

A :class:`Record` holds every path's latency, memory and agreement with the plain model for one
machine and one model shape. They live in one JSON file in the cache folder
(:func:`records_file`), keyed by what decides speed (:func:`record_key`): the device (the CPU's
model and the instruction-set flags the kernels use, or the GPU), the thread count, the versions
of torch and of each runtime, and the model's shape (backbone, output stride, width, classes,
input bands, crop). A machine or a model that differs in any of them has no record, and ``auto``
falls back to :data:`~pspnet.inference.optimized.optimize.MEASURED_FASTEST`.

A path qualifies for ``auto`` when it kept the agreement thresholds: an exact path (fp32)
within :data:`EXACT_TOLERANCE` of the plain model's logits, a reduced precision (bf16,
fp16, int8) with at least :data:`MIN_AGREEMENT` of its pixels' labels unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pspnet.files import atomic_write
from pspnet.models.pspnet import ModelConfig
from pspnet.weights.download import cache_dir

RECORDS_FILE = "measured-paths.json"
RECORDS_VERSION = 1
# An exact path's largest difference from the plain model's logits over their largest magnitude
# (float32 reassociation gives about 1e-6; a relative measure, so a model's logit scale does not
# move it, where a difference of probabilities grows with it).
EXACT_TOLERANCE = 1e-5
# A reduced precision's least share of pixels labelled as the plain model labels them.
MIN_AGREEMENT = 0.999
EXACT_PRECISIONS = ("none", "fp32")
# Instruction-set extensions that change which kernels torch, ONNX Runtime and OpenVINO run.
SPEED_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
RUNTIMES = ("torch", "onnxruntime", "openvino", "nncf")
# Backends whose warm-up recurs for every new input shape: ``auto`` takes them only for work
# that repays it (many images of one size).
SHAPE_COMPILED = ("compile", "cudagraphs")


@dataclass(frozen=True)
class ModelShape:
    """What of a model decides its speed.

    Attributes:
        backbone: resnet18 ... resnet152.
        output_stride: 8, 16 or 32.
        base_width: channels of layer1 (64 published).
        num_classes: output classes.
        in_channels: input bands.
        crop: (height, width) of the window the network runs on: the inference crop_size
            (``pspnet benchmark --size S`` measures S x S).
    """

    backbone: str
    output_stride: int
    base_width: int
    num_classes: int
    in_channels: int
    crop: tuple[int, int]

    @classmethod
    def of(cls, config: ModelConfig, crop: tuple[int, int]) -> ModelShape:
        return cls(
            config.backbone,
            config.output_stride,
            config.base_width,
            config.num_classes,
            config.in_channels,
            (int(crop[0]), int(crop[1])),
        )

    def text(self) -> str:
        return (
            f"{self.backbone} os{self.output_stride} width {self.base_width}, "
            f"{self.num_classes} classes, {self.in_channels} bands, "
            f"crop {self.crop[0]}x{self.crop[1]}"
        )


@dataclass(frozen=True)
class Machine:
    """What of a machine decides a path's speed.

    Attributes:
        device: "cpu MODEL NAME" or "cuda GPU NAME".
        flags: the CPU's :data:`SPEED_FLAGS` and torch's vector capability, or the GPU's
            compute capability.
        threads: torch's intra-op threads (ONNX Runtime and OpenVINO are given as many).
        versions: (package, version) of each of :data:`RUNTIMES`, "absent" when missing.
    """

    device: str
    flags: tuple[str, ...]
    threads: int
    versions: tuple[tuple[str, str], ...]

    @classmethod
    def here(cls, device: str | torch.device = "cpu") -> Machine:
        device = torch.device(device)
        if device.type == "cuda":
            name = f"cuda {torch.cuda.get_device_name(device)}"
            major, minor = torch.cuda.get_device_capability(device)
            flags: tuple[str, ...] = (f"sm_{major}{minor}",)
        else:
            name = f"cpu {cpu_model()}"
            capability = torch.backends.cpu.get_cpu_capability()
            flags = (*cpu_flags(), f"torch {capability}")
        versions = tuple((package, _version(package)) for package in RUNTIMES)
        return cls(name, flags, torch.get_num_threads(), versions)

    def text(self) -> str:
        versions = ", ".join(f"{package} {version}" for package, version in self.versions)
        return f"{self.device} ({' '.join(self.flags)}), {self.threads} threads, {versions}"


@dataclass(frozen=True)
class MeasuredPath:
    """One path's row of a benchmark.

    Attributes:
        precision: none (the plain model), fp32, bf16, fp16 or int8.
        backend: eager, compile, cudagraphs, onnx or openvino.
        median_ms: median latency of one image at the shape's crop.
        warmup_s: seconds from building the path to its first result (compile, calibration).
        memory_mb: MiB the path added to the process: its weights and runtime, plus the peak
            of one call.
        relative_error: largest difference from the plain model's logits over their
            largest value.
        agreement: share of pixels labelled as the plain model labels them.
        miou: mean IoU on the benchmark's data, when it had some.
        qualifies: kept the agreement thresholds (see the module docstring).
    """

    precision: str
    backend: str
    median_ms: float
    warmup_s: float
    memory_mb: float
    relative_error: float
    agreement: float
    miou: float | None = None
    qualifies: bool = False

    @property
    def name(self) -> str:
        return f"{self.precision} {self.backend}"


def qualifies(precision: str, relative_error: float, agreement: float) -> bool:
    """Whether a path kept the thresholds ``auto`` needs (see the module docstring)."""
    if precision in EXACT_PRECISIONS:
        return relative_error <= EXACT_TOLERANCE
    return agreement >= MIN_AGREEMENT


@dataclass(frozen=True)
class Record:
    """Every path measured on one machine for one model shape.

    Attributes:
        machine: where it was measured.
        shape: the model measured.
        measured: when, ISO 8601 (local time, to the second).
        agreement_on: what the agreement was measured on ("camvid val, 20 images" ...).
        paths: each path's row, the plain model's first.
    """

    machine: Machine
    shape: ModelShape
    measured: str
    agreement_on: str
    paths: tuple[MeasuredPath, ...]

    @property
    def date(self) -> str:
        return self.measured[:10]

    def fastest(
        self,
        precision: str | None = None,
        backend: str | None = None,
        *,
        amortized: bool = False,
        calibrated: bool = False,
    ) -> MeasuredPath | None:
        """The fastest qualifying path (never the plain model), or None.

        Args:
            precision: only this precision; any when None.
            backend: only this backend; any when None.
            amortized: the work repays a per-shape compile warm-up; without it compile and
                cudagraphs are passed over.
            calibrated: int8 calibration images are at hand; without them int8 is passed over.
        """
        candidates = [
            path
            for path in self.paths
            if path.qualifies
            and path.precision != "none"
            and precision in (None, path.precision)
            and backend in (None, path.backend)
            and (amortized or path.backend not in SHAPE_COMPILED)
            and (calibrated or path.precision != "int8")
        ]
        return min(candidates, key=lambda path: path.median_ms, default=None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Record:
        machine = values["machine"]
        shape = values["shape"]
        return cls(
            Machine(
                machine["device"],
                tuple(machine["flags"]),
                machine["threads"],
                tuple(tuple(pair) for pair in machine["versions"]),
            ),
            ModelShape(**{**shape, "crop": tuple(shape["crop"])}),
            values["measured"],
            values["agreement_on"],
            tuple(MeasuredPath(**path) for path in values["paths"]),
        )


def record_key(machine: Machine, shape: ModelShape) -> str:
    """The records file's key: every field of the machine and of the model shape, in words."""
    return f"{machine.text()} | {shape.text()}"


def records_file() -> Path:
    """Where records are kept: ``measured-paths.json`` in the cache folder (``$PSPNET_HOME``,
    else ``~/.cache/pspnet``)."""
    return cache_dir() / RECORDS_FILE


def save_record(record: Record) -> Path:
    """Add ``record`` to the records file, replacing one of the same key; returns the file."""
    path = records_file()
    records = _read_records(path)
    records[record_key(record.machine, record.shape)] = record.to_dict()
    text = json.dumps({"version": RECORDS_VERSION, "records": records}, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def find_record(shape: ModelShape, device: str | torch.device = "cpu") -> Record | None:
    """This machine's record for ``shape``, or None where nothing was measured."""
    values = _read_records(records_file()).get(record_key(Machine.here(device), shape))
    return None if values is None else Record.from_dict(values)


def _read_records(path: Path) -> dict[str, dict]:
    """The file's records by key; none when it is missing or unreadable (with a warning)."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.warn(f"{path}: unreadable ({err}); ignoring what it measured", stacklevel=3)
        return {}
    if not isinstance(content, dict) or content.get("version") != RECORDS_VERSION:
        warnings.warn(
            f"{path}: not a version {RECORDS_VERSION} records file; ignored", stacklevel=3
        )
        return {}
    return content.get("records", {})


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """Which of :data:`SPEED_FLAGS` this CPU has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return tuple(flag for flag in SPEED_FLAGS if flag in present)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
