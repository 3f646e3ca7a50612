"""Every inference path side by side against eager fp32, on this CPU, in one run.

    python -m benchmarks.cpu.inference                      # R50/150 @ 473 and R101/19 @ 713
    python -m benchmarks.cpu.inference --configs r50 --runs 5 --no-write

Each path runs in a fresh process (clean peak RSS), on the same random-weight network and
image; the reference is eager fp32, what the official code runs. In each process the path's
timed runs alternate with runs of the reference, and the speed-up is the ratio of the two
medians: the speed of a shared VM drifts between runs, which would otherwise land on whichever
path ran at a slow moment. Reported: median latency of ``--runs`` runs after warm-up (and the
warm-up/compile time), the reference's median in the same process, speed-up, GFLOP, max
relative error and argmax agreement with the reference, achieved GFLOP/s, peak RSS (taken
before the reference first runs in that process), and the floor: FLOPs divided by the best
fp32 throughput this CPU showed in the same run on a matrix product and on the network's own
convolution shapes (the probes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import in_turn, measure, trained_like
from benchmarks.report import command_line, cpu_model, write_section
from pspnet.engine.summary import summarize
from pspnet.inference.optimized.optimize import exact_rewrite, native_bf16, optimize
from pspnet.models import PSPNet

MODULE = "benchmarks.cpu.inference"  # each path runs in a child process of this module
CONFIGS = {"r50": ("resnet50", 150, 473), "r101": ("resnet101", 19, 713)}
PATHS = {  # title: the arguments of ``optimize`` (None: the plain eager model)
    "eager fp32 (reference)": None,
    "exact eager (BN folded, factorised head, channels_last)": dict(
        precision="fp32", backend="eager"
    ),
    "exact torch.compile (inductor, freezing)": dict(precision="fp32", backend="compile"),
    "exact ONNX Runtime": dict(precision="fp32", backend="onnx"),
    "bf16 (eager; stem, layer1, pyramid sums, classifier fp32)": dict(
        precision="bf16", backend="eager"
    ),
    "bf16 everywhere but the pyramid sums and classifier (eager)": dict(
        precision="bf16", backend="eager", fp32_stages=()
    ),
    "bf16, torch.compile": dict(precision="bf16", backend="compile"),
    "int8 ONNX Runtime (static, QDQ)": dict(precision="int8", backend="onnx"),
}


def build(name: str) -> tuple[PSPNet, torch.Tensor]:
    backbone, classes, size = CONFIGS[name]
    torch.manual_seed(0)
    model = trained_like(PSPNet(classes, backbone=backbone))
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, images


def run_path(config: str, path: str, runs: int, reference: Path, out: Path) -> None:
    """Child process: time one path and write its row as JSON."""
    model, images = build(config)
    start = time.perf_counter()
    if PATHS[path] is None:
        runner = model
    else:
        calibration = [torch.randn(1, *images.shape[1:]) for _ in range(2)]
        with tempfile.TemporaryDirectory() as work:
            runner = optimize(model, calibration=calibration, work_dir=work, **PATHS[path])
    with torch.inference_mode():
        logits = runner(images)  # warm-up (compiles, plans)
    warmup = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if PATHS[path] is None:
        times = reference_times = measure(partial(runner, images), runs, warmup=0)
    else:
        reference_call = partial(model, images)
        measure(reference_call, runs=0, warmup=1)  # the path is warm from its first call
        times, reference_times = in_turn(partial(runner, images), reference_call, runs, warmup=0)
    expected = torch.load(reference)
    row = {
        "median": statistics.median(times),
        "reference_median": statistics.median(reference_times),
        "warmup": warmup,
        "rel_err": ((logits - expected).abs().max() / expected.abs().max()).item(),
        "argmax": (logits.argmax(1) == expected.argmax(1)).float().mean().item(),
        "rss_mib": rss_mib,
    }
    out.write_text(json.dumps(row))


def timed_gflops(flop: float, call: Callable[[], object]) -> float:
    """GFLOP/s of ``call`` (median of 5 after one warm-up)."""
    return flop / statistics.median(measure(call, runs=5, warmup=1)) / 1e9


def probes() -> dict[str, float]:
    """This CPU's fp32 throughput (GFLOP/s) on a matrix product and on the network's convs.

    The convolutions are the shapes that carry most of PSPNet's FLOPs at 473x473 (60x60 maps
    after the dilated stages), channels_last, as the exact paths run them.
    """
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    rates = {"matmul 2048^3": timed_gflops(2 * 2048**3, lambda: a @ b)}
    shapes = {  # name: (in, out, kernel, dilation)
        "conv 3x3 256->256 d2 @60x60": (256, 256, 3, 2),
        "conv 1x1 1024->256 @60x60": (1024, 256, 1, 1),
        "conv 3x3 2048->512 @60x60": (2048, 512, 3, 1),
    }
    for name, (cin, cout, k, d) in shapes.items():
        conv = torch.nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d, bias=False)
        conv = conv.to(memory_format=torch.channels_last).eval()
        x = torch.randn(1, cin, 60, 60).contiguous(memory_format=torch.channels_last)
        rates[name] = timed_gflops(2 * cin * cout * k * k * 3600, partial(conv, x))
    return rates


def exact_gflops(config: str) -> float:
    """Forward GFLOP of the exact rewrite (BN folded, factorised head), counted on meta."""
    backbone, classes, size = CONFIGS[config]
    with torch.device("meta"):
        model = exact_rewrite(PSPNet(classes, backbone=backbone).eval())
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def measure_network(
    config: str, runs: int, paths: list[str], folder: Path, peak: float
) -> tuple[str, list[str]]:
    """Every path's table row for one network, and the heading with its FLOPs and floors."""
    model, images = build(config)
    reference = folder / f"{config}_reference.pt"
    with torch.inference_mode():
        torch.save(model(images), reference)
    size = images.shape[-1]
    gflop = sum(p.gflops for p in summarize(model.config, size, size) if p.name != "aux head")
    exact = exact_gflops(config)
    rows = []
    for path in paths:
        out = folder / "row.json"
        out.unlink(missing_ok=True)
        command = [sys.executable, "-m", MODULE, "--child", config, path]
        command += ["--runs", str(runs), "--reference", str(reference), "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            rows.append(f"| {path} | failed: {done.stderr.strip().splitlines()[-1][:80]} |")
            continue
        row = json.loads(out.read_text())
        flop = gflop if PATHS[path] is None else exact
        line = (
            f"| {path} | {row['median']:.3f} | {row['reference_median']:.3f} | "
            f"{row['reference_median'] / row['median']:.2f}x | {flop / row['median']:.0f} | "
            f"{row['warmup']:.1f} | {row['rel_err']:.1e} | {100 * row['argmax']:.3f}% | "
            f"{row['rss_mib']:.0f} |"
        )
        rows.append(line)
        print(line, flush=True)
    heading = (
        f"**PSPNet-{CONFIGS[config][0]}, {CONFIGS[config][1]} classes, 1x3x{size}x{size}**: "
        f"{gflop:.0f} GFLOP as written, {exact:.0f} GFLOP after the exact rewrites; floor at "
        f"the best probe's {peak:.0f} GFLOP/s: {gflop / peak:.2f} s as written, "
        f"{exact / peak:.2f} s rewritten"
    )
    return heading, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--paths", nargs="+", default=None, help="substrings of path names")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--section", default="Inference paths on the CPU", help="docs section")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_path(*args.child, args.runs, args.reference, args.out)
        return

    paths = [p for p in PATHS if args.paths is None or any(s in p for s in args.paths)]
    if not native_bf16():
        paths = [p for p in paths if not p.startswith("bf16")]
    rates = probes()
    peak = max(rates.values())
    header = (
        "| path | median latency (s) | eager fp32, same process (s) | speed-up | GFLOP/s "
        "| warm-up (s) | max rel err | argmax agreement | peak RSS (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    sections = []
    with tempfile.TemporaryDirectory() as folder:
        for config in args.configs:
            heading, rows = measure_network(config, args.runs, paths, Path(folder), peak)
            sections.append(f"{heading}\n\n{header}\n" + "\n".join(rows))
    bf16_note = (
        "bf16 measured (native bf16 on this CPU)."
        if native_bf16()
        else "bf16 not timed: this CPU has no native bf16 (emulated bf16 is many times slower "
        "than fp32; `optimize` warns and `auto` never picks it)."
    )
    body = (
        f"CPU: {cpu_model()}; torch {torch.__version__}. fp32 probes (GFLOP/s): "
        + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
        + ". GFLOP/s below is the path's FLOPs (fp32-equivalent for bf16/int8) over its "
        "latency. Batch 1, random weights with trained-like BatchNorm statistics, "
        f"median of {args.runs} runs after one warm-up run (warm-up includes export/compile); "
        "each path in its own process, its runs alternating with eager fp32 runs there "
        f"(speed-up: the ratio of the two medians). int8 error here is against random weights; its "
        f"accuracy on real data is in the CamVid section. {bf16_note}\n\n"
        + "\n\n".join(sections)
        + f"\n\nCommand: `{command_line()}`"
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
