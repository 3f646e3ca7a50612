"""The training sampler: a deterministic, resumable stream of (index, seed) batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class TrainBatches(Sampler[list[tuple[int, int]]]):
    """This rank's batches for iterations ``start .. iterations - 1``.

    Sample ``k`` of the run (counted over all ranks) is item ``k mod n`` of epoch ``k // n``'s
    permutation, augmented with a seed derived from ``(seed, k)``. So the data order and every
    random crop follow from the seed alone, whatever the number of workers, and a resumed run
    draws exactly the batches the interrupted one would have.

    Args:
        num_samples: dataset length.
        batch_size: samples per rank per iteration.
        iterations: total iterations of the run.
        start: first iteration to produce (the resumed iteration).
        seed: run seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        iterations: int,
        *,
        start: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.iterations, self.start, self.seed = iterations, start, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        for iteration in range(self.start, self.iterations):
            first = (iteration * self.world_size + self.rank) * self.batch_size
            batch = []
            for k in range(first, first + self.batch_size):
                if k // self.num_samples != epoch:
                    epoch = k // self.num_samples
                    generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                    order = torch.randperm(self.num_samples, generator=generator)
                sample_seed = (self.seed * 2_654_435_761 + k) % 2**63
                batch.append((int(order[k % self.num_samples]), sample_seed))
            yield batch
