"""The training loop: the paper's recipe, resumable, single-process or torchrun/DDP.

Read top to bottom: set up the process group, data, model and optimiser, restore the last
state if the run folder has one, then step, log, checkpoint and validate until done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pspnet.checkpoints import build_model
from pspnet.checkpoints.native import save_model, unwrap
from pspnet.config import TrainConfig, build
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import DatasetPreset, get_preset
from pspnet.data.sampling import TrainBatches
from pspnet.data.transforms import AugmentConfig, EvalTransform, TrainTransform
from pspnet.engine.evaluate import evaluate
from pspnet.engine.losses import SegmentationLoss
from pspnet.engine.optim import build_optimizer, poly_lr, set_learning_rate
from pspnet.errors import ConfigError, TrainingError
from pspnet.files import atomic_write
from pspnet.models.pspnet import PSPNet

Event = dict[str, Any]
STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    iteration: int
    best_miou: float
    final_metrics: dict = field(default_factory=dict)
    images_per_second: float = 0.0


@dataclass
class Process:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(device: str) -> Process:
    """Join torchrun's process group when its variables are set: NCCL on CUDA, gloo on CPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Process(
        rank, world_size, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    )


def build_datasets(config: TrainConfig) -> tuple[DatasetPreset, Any, Any]:
    """The preset, the augmented training set and the plain validation set."""
    data = config.data
    preset = get_preset(data.dataset, data.num_classes, data.names_file)
    augment = AugmentConfig(
        crop_size=data.crop_size,
        scale=data.scale,
        rotate=data.rotate,
        blur=data.blur,
        flip=data.flip,
        ignore_index=config.ignore_index,
    )
    train_set = SegmentationDataset(data.root, data.train_split, preset, TrainTransform(augment))
    val_set = SegmentationDataset(data.root, data.val_split, preset, EvalTransform(augment))
    return preset, train_set, val_set


def build_trainer(config: TrainConfig, process: Process) -> tuple[PSPNet, nn.Module]:
    """The plain model and the module to train with (DDP-wrapped under torchrun)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.backbone_weights)
    if process.device.type == "cuda" and process.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the paper's synchronised BN
    model.to(process.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if process.world_size == 1:
        return model, model
    device_ids = [process.device.index] if process.device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=device_ids)


def autocast(config: TrainConfig, device: torch.device):
    """The autocast context of the configured precision."""
    if config.precision == "fp32":
        return nullcontext()
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision=fp16 needs CUDA; on the CPU use bf16 or fp32")
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def save_state(path: Path, state: dict) -> None:
    """Write the resumable training state atomically (a killed run never leaves half a file)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def capture_rng() -> dict:
    _, keys, position, *_ = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [keys.tolist(), int(position)],
        "python": list(random.getstate()[1]),
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    keys, position = rng["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, 0, 0.0))
    random.setstate((3, tuple(rng["python"]), None))


def check_same_run(run_dir: Path, config: TrainConfig, saved: dict) -> None:
    """Refuse to resume a run folder that holds a run with another configuration."""
    saved_config = build(TrainConfig, saved, str(run_dir / STATE_FILE))
    if saved_config != config:
        ours, theirs = _flatten(config.to_dict()), _flatten(saved_config.to_dict())
        changed = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise TrainingError(
            f"{run_dir}: holds a run with a different config ({', '.join(changed)}); "
            "use another --out folder, or the same settings to resume"
        )


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
        callback: receives events: ``start``, ``step``, ``val_progress``, ``val``,
            ``checkpoint``, ``end`` (dicts with a ``kind`` key); on every rank.

    Raises:
        TrainingError: on a non-finite loss (the last good checkpoint is kept) or a run
            folder that holds a different run.
    """
    emit = callback or (lambda event: None)
    run_dir = Path(run_dir)
    process = setup_process(config.device)
    preset, train_set, val_set = build_datasets(config)
    if config.model.num_classes != preset.num_classes:
        raise ConfigError(
            f"model.num_classes={config.model.num_classes} but dataset "
            f"{preset.name!r} has {preset.num_classes} classes"
        )
    if config.batch_size % process.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} does not split over {process.world_size} processes"
        )
    model, trainer = build_trainer(config, process)
    optimizer = build_optimizer(
        model,
        config.optim.lr,
        config.optim.momentum,
        config.optim.weight_decay,
        config.optim.head_lr_mult,
    )
    scaler = torch.amp.GradScaler(enabled=config.precision == "fp16")
    criterion = SegmentationLoss(config.aux_weight, config.ignore_index)
    metadata = {
        "dataset": preset.name,
        "class_names": json.dumps(list(preset.class_names)),
        "palette": json.dumps([list(c) for c in preset.palette]),
        "inference": json.dumps(dataclasses.asdict(config.evaluation)),
    }

    start, best_miou, saved = 0, -1.0, None
    state_path = run_dir / STATE_FILE
    if resume and state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        check_same_run(run_dir, config, saved["config"])
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        start, best_miou = saved["iteration"], saved["best_miou"]
    if process.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())

    def checkpoint(iteration: int) -> None:
        if process.is_main:
            save_state(
                state_path,
                {
                    "model": unwrap(model).state_dict(),
                    "model_config": config.model.to_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "iteration": iteration,
                    "best_miou": best_miou,
                    "rng": capture_rng(),
                    "config": config.to_dict(),
                    "metadata": metadata,
                },
            )
        emit({"kind": "checkpoint", "iteration": iteration, "path": str(state_path)})

    def validate(iteration: int) -> dict:
        nonlocal best_miou
        matrix = evaluate(
            model,
            val_set,
            preset.num_classes,
            config.evaluation,
            config.ignore_index,
            limit=config.val_limit,
            rank=process.rank,
            world_size=process.world_size,
            progress=lambda done, total: emit(
                {"kind": "val_progress", "done": done, "total": total}
            ),
        )
        metrics = matrix.compute().to_dict()
        if metrics["miou"] > best_miou:
            best_miou = metrics["miou"]
            if process.is_main:
                save_model(
                    model,
                    run_dir / BEST_FILE,
                    {
                        **metadata,
                        "iteration": str(iteration),
                        "miou": f"{best_miou:.6f}",
                    },
                )
        log.write(iteration, {f"val/{k}": v for k, v in metrics.items() if not isinstance(v, list)})
        log.record({"iteration": iteration, "val": metrics})
        emit({"kind": "val", "iteration": iteration, "metrics": metrics})
        return metrics

    per_rank = config.batch_size // process.world_size
    batches = TrainBatches(
        len(train_set),
        per_rank,
        config.iterations,
        start,
        config.seed,
        process.rank,
        process.world_size,
    )
    loader = DataLoader(
        train_set,
        batch_sampler=batches,
        num_workers=config.data.workers,
        pin_memory=process.device.type == "cuda",
    )
    stream = iter(loader)  # draws the loader's base seed from the global RNG: before restoring
    if saved is not None:
        restore_rng(saved["rng"])
    log = RunLog(run_dir, enabled=process.is_main, resumed_at=start)
    emit({"kind": "start", "iteration": start, "iterations": config.iterations})
    trainer.train()
    final_metrics: dict = {}
    tick, seen, throughput = time.perf_counter(), 0, 0.0
    iteration, validated_at = start, -1
    for iteration, (images, labels) in enumerate(stream, start + 1):
        lr = poly_lr(config.optim.lr, iteration - 1, config.iterations, config.optim.power)
        set_learning_rate(optimizer, lr)
        images = images.to(process.device, non_blocking=True)
        labels = labels.to(process.device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(config, process.device):
            outputs = trainer(images)
        loss, parts = criterion(outputs, labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at iteration {iteration}; the last good state is "
                f"{state_path} (lower optim.lr, or check the labels)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += images.shape[0] * process.world_size
        scalars = {k: v.item() for k, v in parts.items()} | {"lr": lr}
        if iteration % config.log_every == 0 or iteration == config.iterations:
            throughput = seen / (time.perf_counter() - tick)
            scalars["images_per_s"] = throughput
            if process.device.type == "cuda":
                scalars["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
            log.write(iteration, {f"train/{k}": v for k, v in scalars.items()})
            log.record({"iteration": iteration, **scalars})
        emit({"kind": "step", "iteration": iteration, **scalars, "model": model})
        if iteration % config.checkpoint_every == 0 and iteration < config.iterations:
            checkpoint(iteration)
        if config.val_every and iteration % config.val_every == 0:
            final_metrics, validated_at = validate(iteration), iteration
            trainer.train()
            tick, seen = time.perf_counter(), 0
    if validated_at != iteration:
        final_metrics = validate(iteration)
    checkpoint(iteration)
    log.close()
    emit({"kind": "end", "iteration": iteration, "best_miou": best_miou})
    return TrainResult(run_dir, iteration, best_miou, final_metrics, throughput)


class RunLog:
    """metrics.jsonl and TensorBoard scalars of rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, resumed_at: int = 0):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.path.is_file():  # drop what a killed run logged after its last checkpoint
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["iteration"] <= resumed_at]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_at + 1)

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, iteration)

    def record(self, entry: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
