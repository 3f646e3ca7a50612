"""``pspnet benchmark``: every inference path measured on the machine it runs on.

One process builds every path this machine can run (:mod:`pspnet.benchmark.paths`: the plain
model, the exact rewrites in eager PyTorch, ``torch.compile``, ONNX Runtime and OpenVINO, in
fp32, bf16 where it is native, fp16 and CUDA graphs on CUDA, int8 calibrated on the data's train
split), times them in alternating runs (:mod:`pspnet.benchmark.measure`) on an image of the
model's crop, and compares each with the plain model: the largest relative error of its
probabilities, the share of labels it keeps and, given a dataset, its mIoU through the one
evaluation routine (:func:`pspnet.engine.evaluate.evaluate`). The result is a
:class:`~pspnet.inference.optimized.measured.Record`; saved, it is what ``--precision auto``
and ``--backend auto`` run on this machine
(:func:`~pspnet.inference.optimized.optimize.resolve_path`).
"""

from __future__ import annotations

import datetime
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pspnet.benchmark.inputs import BenchmarkData, synthetic_images
from pspnet.benchmark.measure import (
    MemoryMeter,
    agreement,
    alternating_medians,
    label_agreement,
)
from pspnet.benchmark.paths import CANDIDATES, Candidate, build, path_spelling, skip_reason
from pspnet.checkpoints import LoadedCheckpoint, load_checkpoint
from pspnet.data.presets import ClassOptions
from pspnet.devices import resolve_device
from pspnet.errors import ConfigError
from pspnet.files import atomic_write
from pspnet.inference.optimized.measured import (
    EXACT_TOLERANCE,
    MIN_AGREEMENT,
    Machine,
    MeasuredPath,
    ModelShape,
    Record,
    qualifies,
)
from pspnet.inference.protocol import Network
from pspnet.inference.settings import InferenceOverrides, device_name
from pspnet.settings import check_settings, setting
from pspnet.weights import cache_dir

Events = Callable[[dict], None]
SYNTHETIC_IMAGES = 4  # scenes the probabilities are compared on (the first is timed)


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    """``pspnet benchmark``: every inference path on this machine against the plain model.

    Attributes:
        checkpoint: a file, a registry name (pspnet models) or a URL.
        data: a dataset root: label agreement and mIoU of each path on its split, and int8
            calibrated on its train split (without it: agreement on synthetic scenes, no
            int8).
        dataset: preset of --data: ade20k, voc, cityscapes, camvid ... or custom.
        classes: a custom dataset's classes.
        split: the split scored.
        limit: score the first N images of the split (0: all).
        size: time an image of S x S pixels (the shape measured, and recorded).
        runs: timed runs of each path, taken in turn; the median is reported.
        paths: only these paths besides the plain model, as PRECISION:BACKEND (fp32:eager,
            fp32:compile, fp32:onnx, fp32:openvino, bf16:eager, int8:onnx, int8:openvino
            ...); every path when none is given.
        calibration_count: int8 calibration images from the train split, spread evenly.
        device: cpu, cuda or cuda:N: where the paths run.
        save: record the results in the cache folder, so that --precision auto and
            --backend auto run the fastest path that kept its thresholds on this machine.
        out: the markdown table to write.
        inference: inference settings of the mIoU (each replaces the checkpoint's own).
    """

    checkpoint: str
    data: Path | None = setting(None, metavar="ROOT")
    dataset: str | None = setting(None, shown_default="the checkpoint's dataset, else camvid")
    classes: ClassOptions = field(default_factory=ClassOptions)
    split: str = "val"
    limit: int = setting(0, low=0)
    size: int | None = setting(None, low=1, metavar="S", shown_default="the checkpoint's crop")
    runs: int = setting(7, low=1)
    paths: tuple[str, ...] = setting((), parse=path_spelling, metavar="PRECISION:BACKEND")
    calibration_count: int = setting(200, low=1)
    device: str = setting("cpu", parse=device_name)
    save: bool = False
    out: Path | None = setting(
        None, metavar="FILE", shown_default="benchmarks/CHECKPOINT-HxW.md in the cache folder"
    )
    inference: InferenceOverrides = field(default_factory=InferenceOverrides)

    def __post_init__(self) -> None:
        check_settings(self)
        for path in self.paths:
            try:
                path_spelling(path)
            except ValueError as err:
                raise ConfigError(f"--paths: {err}") from err

    def out_file(self, crop: tuple[int, int]) -> Path:
        """``out``, else ``benchmarks/CHECKPOINT-HxW.md`` in the cache folder."""
        if self.out is not None:
            return self.out
        name = Path(urllib.parse.urlparse(self.checkpoint).path).name or "checkpoint"
        return cache_dir() / "benchmarks" / f"{name.split('.')[0]}-{crop[0]}x{crop[1]}.md"


@dataclass(frozen=True)
class BenchmarkReport:
    """What the benchmark measured.

    Attributes:
        record: every measured path, the plain model first, and where and on what.
        skipped: (path, reason) of each path not measured.
        checkpoint: the checkpoint measured, as given.
        runs: timed runs of each path.
    """

    record: Record
    skipped: tuple[tuple[str, str], ...]
    checkpoint: str
    runs: int

    def fastest(self, *, amortized: bool) -> MeasuredPath | None:
        """What ``auto`` runs once this is saved (int8 only where calibration is given)."""
        return self.record.fastest(amortized=amortized)

    def to_markdown(self) -> str:
        """The table, with what it was measured on."""
        record = self.record
        plain = record.paths[0]
        lines = [
            f"# pspnet benchmark: {self.checkpoint}",
            "",
            f"- measured: {record.measured}",
            f"- machine: {record.machine.text()}",
            f"- model: {record.shape.text()}",
            f"- latency: median of {self.runs} runs, all paths in turn; speed-up over the "
            "plain model (precision none)",
            f"- against the plain model: argmax agreement on {record.agreement_on}, relative "
            f"error of the probabilities on {SYNTHETIC_IMAGES} synthetic images; auto: kept "
            f"its threshold (exact: rel err <= {EXACT_TOLERANCE:g}, reduced precision: "
            f"agreement >= {100 * MIN_AGREEMENT:g}%)",
            "",
            "| path | median ms | speed-up | warm-up s | memory MiB | max rel err | "
            "agreement % | mIoU | auto |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|:---|",
        ]
        for path in record.paths:
            miou = "" if path.miou is None else f"{100 * path.miou:.2f}"
            auto = "reference" if path is plain else "yes" if path.qualifies else "no"
            lines.append(
                f"| {path.name} | {path.median_ms:.1f} | {plain.median_ms / path.median_ms:.2f}x"
                f" | {path.warmup_s:.1f} | {path.memory_mb:.0f} | {path.relative_error:.1e} | "
                f"{100 * path.agreement:.2f} | {miou} | {auto} |"
            )
        for name, reason in self.skipped:
            lines.append(f"| {name} | skipped: {reason} | | | | | | | |")
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        """The markdown table written to ``path`` (atomically); returns it."""
        text = self.to_markdown()
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return Path(path)


@dataclass
class _Measured:
    """A built path and what has been measured of it so far."""

    candidate: Candidate
    network: Network
    warmup_s: float
    memory_mb: float
    logits: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    miou: float | None = None


def run_benchmark(settings: BenchmarkSettings, on_event: Events | None = None) -> BenchmarkReport:
    """Measure every path this machine can run for the checkpoint (see the module docstring).

    Args:
        settings: the checkpoint, the data, the paths and how many runs.
        on_event: progress: ``{"kind": "download", "done", "total"}``, ``{"kind": "build",
            "path"}``, ``{"kind": "time", "runs"}``, ``{"kind": "score", "path", "done",
            "total"}``.

    Raises:
        ConfigError: a model whose class count is not the dataset's.
        DatasetError: missing or unreadable files of ``settings.data``, naming them.
    """
    tell = on_event or (lambda event: None)
    device = resolve_device(settings.device)
    checkpoint = load_checkpoint(
        settings.checkpoint,
        device,
        lambda done, total: tell({"kind": "download", "done": done, "total": total}),
    )
    inference = settings.inference.apply(checkpoint.inference_settings)
    crop = (settings.size, settings.size) if settings.size else inference.crop_size
    data = None
    if settings.data is not None:
        data = BenchmarkData.of(
            checkpoint,
            inference,
            root=settings.data,
            dataset=settings.dataset,
            classes=settings.classes,
            split=settings.split,
            limit=settings.limit,
            calibration_count=settings.calibration_count,
        )
    images = synthetic_images(checkpoint, crop, SYNTHETIC_IMAGES, device)
    skipped = []
    with tempfile.TemporaryDirectory(prefix="pspnet-benchmark-") as work:
        measured = []
        for candidate in CANDIDATES:
            reason = skip_reason(
                candidate, device, asked=settings.paths, calibrated=data is not None
            )
            if reason is not None:
                skipped.append((candidate.name, reason))
                continue
            tell({"kind": "build", "path": candidate.name})
            calibration = data.calibration() if candidate.precision == "int8" else None
            measured.append(_build(candidate, checkpoint, calibration, images, Path(work)))
            del calibration  # the runner keeps what it needs
        tell({"kind": "time", "runs": settings.runs})
        calls = [lambda m=m: m.network.forward(images[0]) for m in measured]
        medians = alternating_medians(calls, settings.runs, device)
        if data is not None:
            for path in measured:
                name = path.candidate.name

                def progress(done: int, total: int, name: str = name) -> None:
                    tell({"kind": "score", "path": name, "done": done, "total": total})

                path.miou, path.labels = data.score(
                    path.network, inference, settings.limit, progress
                )
    rows = _rows(measured, medians, data)
    on = data.description if data is not None else f"{SYNTHETIC_IMAGES} synthetic images"
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    shape = ModelShape.of(checkpoint.config, crop)
    record = Record(Machine.here(device), shape, stamp, on, tuple(rows))
    return BenchmarkReport(record, tuple(skipped), settings.checkpoint, settings.runs)


def _build(
    candidate: Candidate,
    checkpoint: LoadedCheckpoint,
    calibration: list[torch.Tensor] | None,
    images: list[torch.Tensor],
    work: Path,
) -> _Measured:
    """Build a path, warm it up (its first result ends the warm-up), meter its memory and keep
    its logits of the synthetic images."""
    meter = MemoryMeter(checkpoint.device)
    began = time.perf_counter()
    runner = build(candidate, checkpoint.model, calibration, work)
    network = Network.of(runner, checkpoint.device)
    with torch.inference_mode():
        logits = [network.forward(images[0]).cpu()]  # .cpu() waits for CUDA's result
        warmup = time.perf_counter() - began
        logits += [network.forward(image).cpu() for image in images[1:]]
    meter.built()
    memory = meter.call(lambda: network.forward(images[0]))
    return _Measured(candidate, network, warmup, memory, logits)


def _rows(
    measured: list[_Measured], medians: list[float], data: BenchmarkData | None
) -> list[MeasuredPath]:
    plain = measured[0]
    rows = []
    for path, median in zip(measured, medians, strict=True):
        compared = [agreement(a, b) for a, b in zip(plain.logits, path.logits, strict=True)]
        error = max(c.relative_error for c in compared)
        if data is not None:
            share = label_agreement(plain.labels, path.labels)
        else:
            share = float(np.mean([c.agreement for c in compared]))
        rows.append(
            MeasuredPath(
                path.candidate.precision,
                path.candidate.backend,
                median_ms=1000 * median,
                warmup_s=path.warmup_s,
                memory_mb=path.memory_mb,
                relative_error=error,
                agreement=share,
                miou=path.miou,
                qualifies=qualifies(path.candidate.precision, error, share),
            )
        )
    return rows
