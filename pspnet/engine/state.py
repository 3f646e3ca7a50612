"""The training state: everything a run needs to continue exactly where it stopped.

One object holds the model, optimiser, gradient scaler, iteration, best score, the resolved
config and the checkpoint metadata; ``save`` writes it (with the RNG streams) to ``last.pt``
atomically and ``load`` restores it, refusing a file that holds a run with another config.
The file's keys are those of every earlier version, so old runs still resume.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pspnet.checkpoints.native import unwrap
from pspnet.config import TrainConfig, build
from pspnet.errors import TrainingError
from pspnet.files import atomic_write
from pspnet.models.pspnet import PSPNet


@dataclass
class TrainingState:
    """A run's resumable state.

    Attributes:
        model: the plain network (not DDP-wrapped), trained in place.
        optimizer: SGD over the model's ``backbone`` and ``head`` groups.
        scaler: fp16's gradient scaler (disabled, but saved, at other precisions).
        config: the resolved training config; a resumed run must have the same.
        metadata: class names, palette, dataset and inference settings saved with weights.
        iteration: optimiser steps taken.
        best_miou: the best validation mIoU so far (-1 before the first validation).
    """

    model: PSPNet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: TrainConfig
    metadata: dict[str, str]
    iteration: int = 0
    best_miou: float = -1.0

    def save(self, path: Path) -> None:
        """Write the state and the current RNG streams to ``path`` atomically."""
        state = {
            "model": unwrap(self.model).state_dict(),
            "model_config": self.config.model.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "rng": capture_rng(),
            "config": self.config.to_dict(),
            "metadata": self.metadata,
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path) -> dict:
        """Restore the state saved at ``path``; returns its RNG streams for :func:`restore_rng`.

        The RNG is restored by the caller once the data loader has drawn its base seed, so a
        resumed run draws the same random numbers as the uninterrupted one.

        Raises:
            TrainingError: ``path`` holds a run with a different config.
        """
        saved = torch.load(path, map_location="cpu", weights_only=True)
        check_same_run(path, self.config, saved["config"])
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.iteration, self.best_miou = saved["iteration"], saved["best_miou"]
        return saved["rng"]


def capture_rng() -> dict:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors and plain lists."""
    _, keys, position, *_ = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [keys.tolist(), int(position)],
        "python": list(random.getstate()[1]),
    }


def restore_rng(rng: dict) -> None:
    """Set every RNG stream to what :func:`capture_rng` recorded."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    keys, position = rng["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, 0, 0.0))
    random.setstate((3, tuple(rng["python"]), None))


def check_same_run(path: Path, config: TrainConfig, saved: dict) -> None:
    """Refuse to resume from ``path`` when it holds a run with another configuration."""
    saved_config = build(TrainConfig, saved, str(path))
    if saved_config != config:
        ours, theirs = _flatten(config.to_dict()), _flatten(saved_config.to_dict())
        changed = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise TrainingError(
            f"{path.parent}: holds a run with a different config ({', '.join(changed)}); "
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
