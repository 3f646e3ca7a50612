"""Shared by the benchmark scripts: the one timing loop, and trained-like BatchNorm statistics."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def measure(
    call: Callable[[], object], runs: int, warmup: int, device: torch.device | str = "cpu"
) -> list[float]:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed ones, in inference mode.

    On a CUDA ``device`` each call ends with a synchronisation, so that the seconds include the
    GPU's work and not only its launch.
    """
    cuda = torch.device(device).type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        if cuda:
            torch.cuda.synchronize(device)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return times


def in_turn(
    first: Callable[[], object], second: Callable[[], object], runs: int, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Seconds of ``runs`` calls of ``first`` and of ``second``, taken alternately.

    A shared machine's speed drifts from minute to minute; alternating lands the drift on both,
    so the ratio of their medians holds where two separate series would not. Each is called
    ``warmup`` times untimed first.
    """
    measure(first, runs=0, warmup=warmup)
    measure(second, runs=0, warmup=warmup)
    first_times, second_times = [], []
    for _ in range(runs):
        first_times += measure(first, runs=1, warmup=0)
        second_times += measure(second, runs=1, warmup=0)
    return first_times, second_times


def trained_like(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` (changed, in eval mode) with trained-like BatchNorm statistics and affine terms.

    A fresh BatchNorm is the identity in eval mode, so folding it would have nothing to fold and
    errors would hide. Drawn from their own generator: the same values whatever ran before.
    tests/helpers.py has the tests' copy, since the tests do not import benchmarks/.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if bn.affine:
                    bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                    bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                steps = int(torch.randint(1, 100, (), generator=generator))
                bn.num_batches_tracked.fill_(steps)
    return module.eval()
