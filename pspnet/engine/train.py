"""The training loop: the paper's recipe, resumable, single-process or torchrun/DDP.

Read top to bottom: set up the process group, data, model and optimiser, restore the last
state if the run folder has one, then step, log, checkpoint and validate until done.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from pspnet.checkpoints import build_model
from pspnet.checkpoints.native import save_model
from pspnet.checkpoints.transfer import init_from
from pspnet.config import TrainConfig
from pspnet.data.check import PRE_CHECK_PAIRS, check_dataset
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.normalization import METADATA_KEY, BandStats, Normalization
from pspnet.data.presets import DatasetPreset
from pspnet.data.sampling import TrainBatches
from pspnet.data.transforms import AugmentConfig, EvalTransform, TrainTransform
from pspnet.engine.distributed import Process, setup_process
from pspnet.engine.evaluate import evaluate
from pspnet.engine.losses import SegmentationLoss
from pspnet.engine.optim import build_optimizer, poly_lr, set_learning_rate
from pspnet.engine.runlog import RunLog, Throughput
from pspnet.engine.state import TrainingState, restore_rng
from pspnet.errors import ConfigError, DatasetError, TrainingError
from pspnet.files import atomic_write, make_folder
from pspnet.inference.protocol import Network

Event = dict[str, Any]
STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"
WEIGHTS_FILE = "class_weights.json"
INIT_FILE = "init.json"
NORMALIZATION_FILE = "normalization.json"


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    iteration: int
    best_miou: float
    final_metrics: dict = field(default_factory=dict)
    images_per_second: float = 0.0


def build_datasets(
    config: TrainConfig, preset: DatasetPreset, normalization: Normalization
) -> tuple[Any, Any]:
    """The augmented training set and the plain validation set, both normalised alike."""
    data = config.data
    augment = AugmentConfig.of(data, normalization=normalization, ignore_index=config.ignore_index)
    train_set = SegmentationDataset(
        data.root, data.train_split, preset, TrainTransform(augment), window=data.sample_window
    )
    val_set = SegmentationDataset(data.root, data.val_split, preset, EvalTransform(augment))
    return train_set, val_set


def build_state(
    config: TrainConfig,
    preset: DatasetPreset,
    process: Process,
    emit: Callable[[Event], None] | None = None,
    resuming: bool = False,
    normalization: Normalization | None = None,
) -> tuple[TrainingState, nn.Module]:
    """A fresh training state and the module to train with (DDP-wrapped under torchrun).

    Backbone weights named by registry name or URL are downloaded first, reported to ``emit``
    as ``download`` events (``done`` and ``total`` bytes); a 3-band stem adapted to
    ``model.in_channels`` is reported as a ``backbone`` event (``notes``) and kept as the
    ``init`` metadata. Unless ``resuming`` (last.pt will replace every weight),
    ``config.init`` is loaded, reported as an ``init`` event holding the
    :class:`~pspnet.checkpoints.transfer.ClassTransfer`. ``normalization`` (the config's
    declared one when None) is saved in the metadata.
    """
    torch.manual_seed(config.seed)
    emit = emit or (lambda event: None)
    if normalization is None:
        normalization = config.data.normalization(config.model.in_channels)

    def progress(done: int, total: int | None) -> None:
        emit({"kind": "download", "done": done, "total": total})

    notes: list[str] = []
    model = build_model(config.model, config.backbone_weights, progress, report=notes.append)
    if notes:
        emit({"kind": "backbone", "notes": notes})
    transfer = None
    if config.init is not None and not resuming:
        transfer = init_from(
            model,
            config.init,
            preset.class_names,
            config.init_classes,
            config.init_classifier,
            progress,
        )
        emit({"kind": "init", "transfer": transfer})
    if process.device.type == "cuda" and process.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the paper's synchronised BN
    model.to(process.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optim = config.optim
    optimizer = build_optimizer(
        model, optim.lr, optim.momentum, optim.weight_decay, optim.head_lr_mult, optim.fused
    )
    metadata = {
        "dataset": preset.name,
        "class_names": json.dumps(list(preset.class_names)),
        "palette": json.dumps([list(c) for c in preset.palette]),
        "inference": json.dumps(dataclasses.asdict(config.evaluation)),
        METADATA_KEY: normalization.to_json(),
    }
    if transfer is not None:  # where the weights came from, kept with every checkpoint
        metadata["init"] = json.dumps(transfer.to_dict())
    elif notes:
        metadata["init"] = json.dumps({"backbone_weights": config.backbone_weights, "notes": notes})
    scaler = torch.amp.GradScaler(enabled=config.precision == "fp16")
    state = TrainingState(model, optimizer, scaler, config, metadata)
    trainer = model
    if process.world_size > 1:
        device_ids = [process.device.index] if process.device.type == "cuda" else None
        trainer = DistributedDataParallel(model, device_ids=device_ids)
    return state, torch.compile(trainer) if config.compile else trainer


def build_loader(
    config: TrainConfig, train_set: Dataset, start: int, process: Process
) -> DataLoader:
    """This rank's batches for iterations ``start + 1 .. config.iterations``."""
    batches = TrainBatches(
        len(train_set),
        config.batch_size // process.world_size,
        config.iterations,
        start=start,
        seed=config.seed,
        rank=process.rank,
        world_size=process.world_size,
    )
    return DataLoader(
        train_set,
        batch_sampler=batches,
        num_workers=config.data.workers,
        pin_memory=process.device.type == "cuda",
    )


def autocast(config: TrainConfig, device: torch.device):
    """The autocast context of the configured precision."""
    if config.precision == "fp32":
        return nullcontext()
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision=fp16 needs CUDA; on the CPU use bf16 or fp32")
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    callback: Callable[[Event], None] | None = None,
) -> TrainResult:
    """Train a PSPNet as ``config`` says, writing checkpoints and logs into ``run_dir``.

    If ``run_dir`` holds ``last.pt`` and ``resume`` is true, the run continues exactly where
    that state left it (model, optimiser, scaler, iteration, RNG, best score).

    Args:
        config: the resolved training config.
        run_dir: folder for ``config.yaml``, ``last.pt``, ``best.safetensors``,
            ``metrics.jsonl`` and TensorBoard events.
        resume: continue from ``run_dir/last.pt`` when present.
        callback: receives events: ``download`` (backbone weights by name or URL), ``start``,
            ``step``, ``val_progress``, ``val``, ``checkpoint``, ``end`` (dicts with a
            ``kind`` key); on every rank.

    Raises:
        TrainingError: on a non-finite loss (the last good checkpoint is kept) or a run
            folder that holds a different run.
    """
    run = Run(Path(run_dir), setup_process(config.device), callback or (lambda event: None))
    preset = config.data.preset()
    check_fits(config, preset, run.process)
    resuming = resume and run.state_path.is_file()
    class_weights, normalization = check_training_data(config, preset, run, resuming)
    train_set, val_set = build_datasets(config, preset, normalization)
    state, trainer = build_state(
        config, preset, run.process, run.emit, resuming, normalization=normalization
    )
    saved_rng = state.load(run.state_path) if resuming else None
    if run.process.is_main:
        make_folder(run.dir)
        (run.dir / "config.yaml").write_text(config.to_yaml())
    record_init(state, run, resuming)
    stream = iter(build_loader(config, train_set, state.iteration, run.process))
    if saved_rng is not None:  # only now: the loader drew its base seed from the global RNG
        restore_rng(saved_rng)
    run.log = RunLog(run.dir, enabled=run.process.is_main, resumed_at=state.iteration)
    criterion = SegmentationLoss(
        config.aux_weight,
        config.ignore_index,
        None if class_weights is None else torch.tensor(class_weights, device=run.process.device),
        config.loss.ohem_thresh,
        config.loss.ohem_min_kept,
    )
    run.emit({"kind": "start", "iteration": state.iteration, "iterations": config.iterations})
    trainer.train()
    speed, metrics, validated_at = Throughput(run.process.world_size), {}, -1
    for images, labels in stream:
        state.iteration += 1
        scalars = train_step(state, trainer, criterion, images, labels, run)
        speed.add(images.shape[0])
        if state.iteration % config.log_every == 0 or state.iteration == config.iterations:
            log_step(run, state.iteration, scalars, speed)
        run.emit({"kind": "step", "iteration": state.iteration, **scalars, "model": state.model})
        if state.iteration % config.checkpoint_every == 0 and state.iteration < config.iterations:
            checkpoint(state, run)
        if config.val_every and state.iteration % config.val_every == 0:
            metrics, validated_at = validate(state, val_set, preset, run), state.iteration
            trainer.train()
            speed.reset()
    if validated_at != state.iteration:
        metrics = validate(state, val_set, preset, run)
    checkpoint(state, run)
    run.log.close()
    run.emit({"kind": "end", "iteration": state.iteration, "best_miou": state.best_miou})
    return TrainResult(run.dir, state.iteration, state.best_miou, metrics, speed.last)


@dataclass
class Run:
    """Where a run writes and how it reports: folder, process, event callback and log."""

    dir: Path
    process: Process
    emit: Callable[[Event], None]
    log: RunLog | None = None

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE


def check_training_data(
    config: TrainConfig, preset: DatasetPreset, run: Run, resuming: bool
) -> tuple[list[float] | None, Normalization]:
    """Check the training data before the first step; returns the loss's class weights and the
    normalisation of the model's inputs.

    The first few pairs are read; every pair when ``loss.class_weights`` is auto (their
    histogram gives the weights, written to ``class_weights.json``) or ``data.mean``/``std``
    is (their pixels give the per-band statistics, written to ``normalization.json``). A
    resumed run reuses those files. So a wrong label or band setup fails in seconds, naming
    the file and the fix.

    Raises:
        DatasetError: the pairs read have a problem (the first one is quoted), or their images
            lack the bands the model takes.
    """
    data, weights = config.data, config.loss.class_weights
    saved_weights = _reused(run.dir / WEIGHTS_FILE, resuming and weights == "auto")
    saved_normalization = _reused(run.dir / NORMALIZATION_FILE, resuming and data.measures_bands)
    if saved_weights is not None:
        weights = saved_weights["weights"]
    normalization = None
    if saved_normalization is not None:
        normalization = Normalization.from_dict(saved_normalization)
    measure = (weights == "auto") or (data.measures_bands and normalization is None)
    if (saved_weights or saved_normalization) and not measure:  # no need to read the data
        normalization = normalization or data.normalization(config.model.in_channels)
        return (None if weights is None else list(weights)), normalization
    if measure:  # the whole split: long enough to show progress
        report = check_dataset(
            data.root,
            preset,
            data.train_split,
            progress=lambda done, total: run.emit({"kind": "check", "done": done, "total": total}),
        )
    else:
        report = check_dataset(data.root, preset, data.train_split, limit=PRE_CHECK_PAIRS)
    if report.problems:
        _, first = report.problems[0]
        more = len(report.problems) - 1
        also = f" (and {more} more problems: `pspnet data check` lists them)" if more else ""
        raise DatasetError(f"training data: {first}{also}")
    if normalization is None:
        normalization = measured_normalization(config, run, report.band_stats)
    if weights != "auto":
        return (None if weights is None else list(weights)), normalization
    weights = [float(w) for w in report.class_weights()]
    if run.process.is_main:
        rows = dict(zip(preset.class_names, weights, strict=True))
        text = json.dumps({"rule": "median frequency", "weights": weights, "classes": rows})
        atomic_write(run.dir / WEIGHTS_FILE, lambda tmp: Path(tmp).write_text(text))
    run.emit({"kind": "class_weights", "weights": dict(zip(preset.class_names, weights))})
    return weights, normalization


def _reused(path: Path, wanted: bool) -> dict | None:
    """What an earlier run of this folder measured, if ``wanted`` and there."""
    return json.loads(path.read_text()) if wanted and path.is_file() else None


def measured_normalization(config: TrainConfig, run: Run, stats: BandStats) -> Normalization:
    """The config's normalisation; with mean or std auto, from ``stats``, written to
    ``normalization.json`` and reported as a ``normalization`` event.

    Raises:
        DatasetError: the images read lack the bands the model takes.
    """
    data, source = config.data, f"{config.data.root} [{config.data.train_split}]"
    normalization = data.normalization(config.model.in_channels, stats)
    if stats.count:
        normalization.check_bands(stats.bands, f"training data: each image of {source}")
    if not data.measures_bands:
        return normalization
    if run.process.is_main:
        rule = "per band over every training pixel, in the files' units"
        text = json.dumps({"rule": rule, **normalization.to_dict(), "pixels": stats.count})
        atomic_write(run.dir / NORMALIZATION_FILE, lambda tmp: Path(tmp).write_text(text))
    run.emit({"kind": "normalization", "normalization": normalization})
    return normalization


def record_init(state: TrainingState, run: Run, resuming: bool) -> None:
    """``init.json``: what a run started from; a resumed run takes it back into its metadata."""
    path = run.dir / INIT_FILE
    if resuming and path.is_file():
        state.metadata["init"] = path.read_text()
    elif "init" in state.metadata and run.process.is_main:
        text = state.metadata["init"]
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_fits(config: TrainConfig, preset: DatasetPreset, process: Process) -> None:
    """Refuse a model whose classes differ from the data's, or a batch that does not split."""
    if config.model.num_classes != preset.num_classes:
        raise ConfigError(
            f"model.num_classes={config.model.num_classes} but dataset "
            f"{preset.name!r} has {preset.num_classes} classes"
        )
    if config.batch_size % process.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} does not split over {process.world_size} processes"
        )


def train_step(
    state: TrainingState,
    trainer: nn.Module,
    criterion: SegmentationLoss,
    images: torch.Tensor,
    labels: torch.Tensor,
    run: Run,
) -> dict[str, float]:
    """One SGD step at the poly learning rate of ``state.iteration``; returns its scalars."""
    config, device = state.config, run.process.device
    lr = poly_lr(config.optim.lr, state.iteration - 1, config.iterations, config.optim.power)
    set_learning_rate(state.optimizer, lr)
    images = images.to(device, non_blocking=True)  # (N, 3, H, W)
    labels = labels.to(device, non_blocking=True)  # (N, H, W)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(config, device):
        outputs = trainer(images)
    loss, parts = criterion(outputs, labels)
    if not torch.isfinite(loss):
        raise TrainingError(
            f"loss became {loss.item()} at iteration {state.iteration}; the last good state is "
            f"{run.state_path} (lower optim.lr, or check the labels)"
        )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    return {k: v.item() for k, v in parts.items()} | {"lr": lr}


def log_step(run: Run, iteration: int, scalars: dict[str, float], speed: Throughput) -> None:
    """Add the throughput (and CUDA memory) to ``scalars`` and log them."""
    scalars["images_per_s"] = speed.rate()
    if run.process.device.type == "cuda":
        scalars["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    run.log.write(iteration, {f"train/{k}": v for k, v in scalars.items()})
    run.log.record({"iteration": iteration, **scalars})


def checkpoint(state: TrainingState, run: Run) -> None:
    """Write ``last.pt`` (rank 0) and report it."""
    if run.process.is_main:
        state.save(run.state_path)
    run.emit({"kind": "checkpoint", "iteration": state.iteration, "path": str(run.state_path)})


def validate(state: TrainingState, val_set: Dataset, preset: DatasetPreset, run: Run) -> dict:
    """Score the model on the validation set; a new best is saved as ``best.safetensors``."""
    config = state.config
    state.model.eval()  # the caller sets training mode again before the next step
    matrix = evaluate(
        Network.of(state.model, run.process.device),
        val_set,
        config.evaluation,
        ignore_index=config.ignore_index,
        limit=config.val_limit,
        rank=run.process.rank,
        world_size=run.process.world_size,
        progress=lambda done, total: run.emit(
            {"kind": "val_progress", "done": done, "total": total}
        ),
    )
    metrics = matrix.compute().to_dict()
    if metrics["miou"] > state.best_miou:
        state.best_miou = metrics["miou"]
        if run.process.is_main:
            best = {"iteration": str(state.iteration), "miou": f"{state.best_miou:.6f}"}
            save_model(state.model, run.dir / BEST_FILE, state.metadata | best)
    scalars = {f"val/{k}": v for k, v in metrics.items() if not isinstance(v, list)}
    run.log.write(state.iteration, scalars)
    run.log.record({"iteration": state.iteration, "val": metrics})
    run.emit({"kind": "val", "iteration": state.iteration, "metrics": metrics})
    return metrics
