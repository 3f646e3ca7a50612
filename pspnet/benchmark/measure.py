"""How the benchmark measures: latency in alternating runs, memory as RSS growth, agreement.

Latency: each round times one call of every path in turn (reversing the order every other
round), and a path's figure is the median of its rounds. A shared machine's speed drifts from
minute to minute; alternating lands the drift on every path alike, so their ratios hold where
separate series would not (benchmarks/harness.py ``in_turn`` does the same for two).

Memory: what a path adds to the process (RSS), in two parts: what stays after it is built and
warmed up (weights, runtime, compiled code), and the peak over one call's own RSS at its start,
sampled every millisecond on a thread. Free heap pages are handed back to the system
(``malloc_trim``) before each reading, so what an earlier path freed is not counted as reused.
On CUDA it is the growth of the allocator's peak instead.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pspnet.inference.memory import release_free_heap
from pspnet.inference.protocol import Network

Call = Callable[[], object]
MIB = 2**20
SAMPLE_SECONDS = 0.001


@dataclass(frozen=True)
class Agreement:
    """A path's outputs against the plain model's.

    Attributes:
        relative_error: largest difference of the logits over their largest magnitude.
        agreement: share of pixels given the plain model's label.
    """

    relative_error: float
    agreement: float


def alternating_medians(calls: Sequence[Call], runs: int, device: torch.device) -> list[float]:
    """Median seconds of ``runs`` calls of each of ``calls``, taken in turn (see the module
    docstring); each is warm already."""
    times: list[list[float]] = [[] for _ in calls]
    order = list(range(len(calls)))
    with torch.inference_mode():
        for round_ in range(runs):
            for index in order if round_ % 2 == 0 else reversed(order):
                times[index].append(timed(calls[index], device))
    return [statistics.median(series) for series in times]


def timed(call: Call, device: torch.device) -> float:
    """Seconds of one ``call`` (CUDA's queued work awaited on both sides)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


class MemoryMeter:
    """What building a path and one call of it add to the process (see the module docstring).

    ``meter = MemoryMeter(device)`` before building, ``meter.built()`` once it is built and
    warm, then ``meter.call(call)`` returns the MiB in all.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.start = self._now()
        self.held = 0.0

    def built(self) -> None:
        self.held = max(0.0, self._now() - self.start)

    def call(self, call: Call) -> float:
        """MiB held since the meter started plus the peak of one ``call`` over its start."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            with torch.inference_mode():
                call()
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - before
        else:
            before = self._now()
            peak = _peak_rss(call) - before
        return (self.held + max(0.0, peak)) / MIB

    def _now(self) -> float:
        if self.cuda:
            return float(torch.cuda.memory_allocated(self.device))
        release_free_heap()
        return float(rss_bytes())


def _peak_rss(call: Call) -> float:
    """The largest RSS seen, every millisecond, while ``call`` runs."""
    peak = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, name="pspnet-rss", daemon=True)
    sampler.start()
    try:
        with torch.inference_mode():
            call()
    finally:
        done.set()
        sampler.join()
    return float(max(peak, rss_bytes()))


def rss_bytes() -> int:
    """This process's resident set size (Linux); 0 where /proc is missing."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * _PAGE_SIZE


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def window_logits(network: Network, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``logits`` of a window of ``size`` (H, W) upsampled to it as the inference routine does
    (semseg's network gives them at that size already): (N, C, H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size, mode="bilinear", align_corners=network.align_corners)


def agreement(reference: torch.Tensor, logits: torch.Tensor) -> Agreement:
    """``logits`` (N, C, h, w) and their labels against ``reference``'s."""
    expected, got = reference.float(), logits.float()
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    same = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return Agreement(error, same)


def label_agreement(reference: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> float:
    """Share of pixels labelled alike over images (each (H, W) label maps)."""
    same = sum(int((a == b).sum()) for a, b in zip(reference, labels, strict=True))
    total = sum(a.numel() for a in reference)
    return same / max(1, total)
