"""``pspnet benchmark``: every inference path measured on the machine it runs on.

One process builds every path this machine can run (:mod:`pspnet.benchmark.paths`: the plain
model, semseg's own network as the reference of the speed goals, the exact rewrites in eager
PyTorch, ``torch.compile``, ONNX Runtime and OpenVINO, in fp32, bf16 where it is native, fp16
and CUDA graphs on CUDA, int8 calibrated on the data's train split), times them in alternating
runs (:mod:`pspnet.benchmark.measure`) on an image of the model's crop, each run giving the
window's logits at the image's size, and compares each with the plain model: the largest
relative error of its logits, the share of labels it keeps and, given a dataset, its
mIoU through the one evaluation routine (:func:`pspnet.engine.evaluate.evaluate`). Probes of
the chip's fp32 rate (:mod:`pspnet.benchmark.probes`) put each path's GFLOP/s beside what the
chip reaches, so a goal missed reads as the code's shortfall or the chip's limit. The result is
a :class:`~pspnet.inference.optimized.measured.Record`; saved, it is what ``--precision auto``
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
    window_logits,
)
from pspnet.benchmark.paths import (
    CANDIDATES,
    SEMSEG,
    Candidate,
    build,
    path_spelling,
    skip_reason,
)
from pspnet.benchmark.probes import Probes, measure_probes
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
SYNTHETIC_IMAGES = 4  # scenes the logits are compared on (the first is timed)
# The speed goals, over semseg's eager forward on the same machine: an exact path 1.5x, bf16 3x.
GOALS = {"fp32": 1.5, "bf16": 3.0}


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
        paths: only these paths besides the plain model and semseg's, as PRECISION:BACKEND
            (fp32:eager, fp32:compile, fp32:onnx, fp32:openvino, bf16:eager, int8:onnx,
            int8:openvino ...); every path when none is given.
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
        probes: the chip's fp32 rates and the model's FLOPs.
    """

    record: Record
    skipped: tuple[tuple[str, str], ...]
    checkpoint: str
    runs: int
    probes: Probes

    def fastest(self, *, amortized: bool) -> MeasuredPath | None:
        """What ``auto`` runs once this is saved (int8 only where calibration is given)."""
        return self.record.fastest(amortized=amortized)

    def to_markdown(self) -> str:
        """The table, with what it was measured on and how each goal stands."""
        record = self.record
        plain = record.paths[0]
        semseg = self.semseg()
        lines = [
            f"# pspnet benchmark: {self.checkpoint}",
            "",
            f"- measured: {record.measured}",
            f"- machine: {record.machine.text()}",
            f"- model: {record.shape.text()}",
            f"- latency: median of {self.runs} runs, all paths in turn, each run giving the "
            "window's logits at the image's size; speed-up over the plain model (precision "
            "none) and over semseg's network (none semseg: the same weights as semseg builds "
            "and runs them)",
            f"- against the plain model: argmax agreement on {record.agreement_on}, relative "
            f"error of the logits on {SYNTHETIC_IMAGES} synthetic images; auto: kept "
            f"its threshold (exact: rel err <= {EXACT_TOLERANCE:g}, reduced precision: "
            f"agreement >= {100 * MIN_AGREEMENT:g}%)",
            f"- the chip: {self.probes.text()}; GFLOP/s below is the path's own FLOPs (fp32 "
            "equivalent) over its latency",
            "",
            "| path | median ms | speed-up | vs semseg | goal | GFLOP/s | warm-up s | "
            "memory MiB | max rel err | agreement % | mIoU | auto |",
            "|:---|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|:---|",
        ]
        for path in record.paths:
            miou = "" if path.miou is None else f"{100 * path.miou:.2f}"
            auto = "reference" if path.precision == "none" else "yes" if path.qualifies else "no"
            versus = "" if semseg is None else f"{semseg.median_ms / path.median_ms:.2f}x"
            rate = self.probes.gflop(path.precision) / (path.median_ms / 1000)
            rate_text = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # tiny test models
            lines.append(
                f"| {path.name} | {path.median_ms:.1f} | {plain.median_ms / path.median_ms:.2f}x"
                f" | {versus} | {self._goal(path)} | {rate_text} | {path.warmup_s:.1f} | "
                f"{path.memory_mb:.0f} | {path.relative_error:.1e} | "
                f"{100 * path.agreement:.2f} | {miou} | {auto} |"
            )
        for name, reason in self.skipped:
            lines.append(f"| {name} | skipped: {reason} | | | | | | | | | | |")
        return "\n".join([*lines, "", *self.goal_lines()]) + "\n"

    def semseg(self) -> MeasuredPath | None:
        """semseg's network's row, when it was measured."""
        return next((p for p in self.record.paths if p.name == SEMSEG.name), None)

    def _goal(self, path: MeasuredPath) -> str:
        semseg, goal = self.semseg(), GOALS.get(path.precision)
        if semseg is None or goal is None:
            return ""
        if semseg.median_ms / path.median_ms >= goal:
            return f">= {goal:g}x: met"
        return f">= {goal:g}x: not met"

    def goal_lines(self) -> list[str]:
        """Each goal: its best path over semseg's network, and the most the chip allows."""
        semseg = self.semseg()
        if semseg is None:
            reason = dict(self.skipped).get(SEMSEG.name, "not measured")
            return [f"Goals not judged: semseg's network was not measured ({reason})."]
        lines = []
        floor = self.probes.floor_ms(self.probes.rewritten_gflop)
        for precision, goal in GOALS.items():
            paths = [p for p in self.record.paths if p.precision == precision]
            best = min(paths, key=lambda p: p.median_ms, default=None)
            if best is None:
                why = dict(self.skipped).get(f"{precision} eager", "no path")
                lines.append(f"- {precision} >= {goal:g}x semseg: not measured ({why}).")
                continue
            speedup = semseg.median_ms / best.median_ms
            verdict = "met" if speedup >= goal else f"not met, short by {goal - speedup:.2f}x"
            kept = "" if best.qualifies else ", beyond its agreement threshold"
            line = (
                f"- {precision} >= {goal:g}x semseg: {verdict} ({best.name} {speedup:.2f}x{kept})."
            )
            if precision == "fp32":
                line += (
                    f" At the best fp32 probe rate ({self.probes.best:.0f} GFLOP/s) the "
                    f"rewritten model takes at least {floor:.4g} ms: this chip allows an exact "
                    f"path at most {semseg.median_ms / floor:.2f}x semseg's "
                    f"{semseg.median_ms:.4g} ms."
                )
            lines.append(line)
        return lines

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
    tell({"kind": "probe"})
    probes = measure_probes(checkpoint.config, crop, device)
    skipped = []
    with tempfile.TemporaryDirectory(prefix="pspnet-benchmark-") as work:
        measured = []
        for candidate in CANDIDATES:
            reason = skip_reason(
                candidate,
                device,
                checkpoint.config,
                asked=settings.paths,
                calibrated=data is not None,
            )
            if reason is not None:
                skipped.append((candidate.name, reason))
                continue
            tell({"kind": "build", "path": candidate.name})
            calibration = data.calibration() if candidate.precision == "int8" else None
            measured.append(_build(candidate, checkpoint, calibration, images, Path(work)))
            del calibration  # the runner keeps what it needs
        tell({"kind": "time", "runs": settings.runs})
        calls = [
            lambda m=m: window_logits(m.network, m.network.forward(images[0]), crop)
            for m in measured
        ]
        medians = alternating_medians(calls, settings.runs, device)
        if data is not None:
            for path in measured:
                name = path.candidate.name

                def progress(done: int, total: int, name: str = name) -> None:
                    tell({"kind": "score", "path": name, "done": done, "total": total})

                path.miou, path.labels = data.score(
                    path.network, inference, settings.limit, progress
                )
    rows = _rows(measured, medians, data, crop)
    on = data.description if data is not None else f"{SYNTHETIC_IMAGES} synthetic images"
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    shape = ModelShape.of(checkpoint.config, crop)
    record = Record(Machine.here(device), shape, stamp, on, tuple(rows))
    return BenchmarkReport(record, tuple(skipped), settings.checkpoint, settings.runs, probes)


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
    if candidate == SEMSEG:  # its forward gives logits at the image's size
        config = checkpoint.config
        network = Network(runner, config.num_classes, True, checkpoint.device, config)
    else:
        network = Network.of(runner, checkpoint.device)
    with torch.inference_mode():
        logits = [network.forward(images[0]).cpu()]  # .cpu() waits for CUDA's result
        warmup = time.perf_counter() - began
        logits += [network.forward(image).cpu() for image in images[1:]]
    meter.built()
    memory = meter.call(lambda: network.forward(images[0]))
    return _Measured(candidate, network, warmup, memory, logits)


def _rows(
    measured: list[_Measured],
    medians: list[float],
    data: BenchmarkData | None,
    crop: tuple[int, int],
) -> list[MeasuredPath]:
    plain = measured[0]
    rows = []
    for path, median in zip(measured, medians, strict=True):
        compared = [
            agreement(window_logits(plain.network, a, crop), window_logits(path.network, b, crop))
            for a, b in zip(plain.logits, path.logits, strict=True)
        ]
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
