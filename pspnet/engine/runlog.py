"""A run's bookkeeping: its throughput, and the scalars it logs (metrics.jsonl, TensorBoard)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class Throughput:
    """Images per second over all ranks since the last reset."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.last = 0.0
        self.reset()

    def reset(self) -> None:
        self.start, self.seen = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.seen += images * self.world_size

    def rate(self) -> float:
        self.last = self.seen / (time.perf_counter() - self.start)
        return self.last


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
