"""What the chip can do: fp32 GFLOP/s on the shapes that carry PSPNet's work, and the model's
FLOPs, so a path's speed reads against the machine's own limit.

A path cannot beat its FLOPs divided by the best rate the chip reaches on the network's own
convolutions; when a speed goal asks for more, the table says the chip, not the code, is the
limit. FLOPs count a multiply-add as two, at test time (no auxiliary head).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pspnet.benchmark.measure import timed
from pspnet.engine.summary import summarize
from pspnet.inference.optimized.optimize import exact_rewrite
from pspnet.models.pspnet import ModelConfig, PSPNet

PROBE_RUNS = 5
MATMUL_SIDE = 2048
# name: (in, out, kernel, dilation): the convs that carry most of the FLOPs after the dilated
# stages (a bottleneck's 3x3 of layer3, a 1x1 of layer3, the head's 3x3 on the pyramid).
CONVS = {
    "conv 3x3 256->256 d2": (256, 256, 3, 2),
    "conv 1x1 1024->256": (1024, 256, 1, 1),
    "conv 3x3 2048->512": (2048, 512, 3, 1),
}


@dataclass(frozen=True)
class Probes:
    """The chip's fp32 rates and the model's work.

    Attributes:
        rates: (probe, GFLOP/s), the matrix product first.
        written_gflop: the model's forward as written (the plain model and semseg run this).
        rewritten_gflop: after the exact rewrites (BN folded, factorised head) that every other
            path runs.
    """

    rates: tuple[tuple[str, float], ...]
    written_gflop: float
    rewritten_gflop: float

    @property
    def best(self) -> float:
        return max(rate for _, rate in self.rates)

    def gflop(self, precision: str) -> float:
        """The FLOPs a path of ``precision`` runs: as written for the references (precision
        none: the plain model and semseg's), rewritten for the rest."""
        return self.written_gflop if precision == "none" else self.rewritten_gflop

    def floor_ms(self, gflop: float) -> float:
        """The least latency of ``gflop`` at the best rate."""
        return 1000 * gflop / self.best

    def text(self) -> str:
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in self.rates)
        return (
            f"fp32 probes (GFLOP/s): {rates}. The model: {self.written_gflop:.4g} GFLOP as "
            f"written, {self.rewritten_gflop:.4g} after the exact rewrites; at the best probe's "
            f"rate at least {self.floor_ms(self.written_gflop):.4g} ms as written, "
            f"{self.floor_ms(self.rewritten_gflop):.4g} ms rewritten"
        )


def measure_probes(config: ModelConfig, crop: tuple[int, int], device: torch.device) -> Probes:
    """The rates on ``device`` (convs on maps of the crop at the output stride, channels_last as
    the exact paths run them) and the model's FLOPs at ``crop``."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    rates = [(f"matmul {MATMUL_SIDE}^3", _rate(2 * MATMUL_SIDE**3, lambda: a @ b, device))]
    height, width = (-(-side // config.output_stride) for side in crop)
    for name, (cin, cout, kernel, dilation) in CONVS.items():
        padding = dilation * (kernel // 2)
        conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
        conv = conv.to(device, memory_format=torch.channels_last).eval()
        x = torch.randn(1, cin, height, width, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        flop = 2 * cin * cout * kernel * kernel * height * width
        rates.append((f"{name} @{height}x{width}", _rate(flop, lambda c=conv, x=x: c(x), device)))
    return Probes(tuple(rates), _written_gflop(config, crop), _rewritten_gflop(config, crop))


def _rate(flop: float, call: Callable[[], object], device: torch.device) -> float:
    """GFLOP/s of ``call``: the median of :data:`PROBE_RUNS` after one warm-up."""
    with torch.inference_mode():
        times = [timed(call, device) for _ in range(PROBE_RUNS + 1)][1:]  # the first warms up
    return flop / statistics.median(times) / 1e9


def _written_gflop(config: ModelConfig, crop: tuple[int, int]) -> float:
    return sum(part.gflops for part in summarize(config, *crop) if part.name != "aux head")


def _rewritten_gflop(config: ModelConfig, crop: tuple[int, int]) -> float:
    with torch.device("meta"):
        model = exact_rewrite(PSPNet.from_config(config).eval())
        with FlopCounterMode(display=False) as counter:
            model.stride_logits(torch.empty(1, config.in_channels, *crop))
    return counter.get_total_flops() / 1e9
