"""Every inference path on one GPU against eager fp32, in one run: speed, error, agreement.

    python -m benchmarks.gpu.inference                          # both scenarios, every path
    python -m benchmarks.gpu.inference --checkpoint RUN/last.pt --camvid .gpu/camvid
    python -m benchmarks.gpu.inference --smoke --device cpu --no-write   # tiny, a check

Scenarios (PSPNet-ResNet50, 19 classes, random weights with trained-like BatchNorm
statistics): a 512x1024 image whole, and a 1024x2048 Cityscapes image by sliding 713 windows
(stride 2/3, single scale, no flip: semseg's Cityscapes test), through the inference routine as
``pspnet eval`` runs it, windows batched to the GPU's memory (``fit_window_batch``). Paths
are :func:`pspnet.inference.optimized.optimize`'s; the reference is the plain model in eager
fp32 with TF32 off (true fp32); PyTorch's default (TF32 convolutions, what semseg and mmsegmentation
get) is a row of its own. Reported per path: images/s (median of ``--runs`` after warm-up),
speed-up over the reference, TFLOP/s (the path's FLOPs: the exact rewrite's for rewritten
paths), the fraction of the GPU's dense bf16 peak (:data:`PEAK_BF16`), warm-up seconds,
max relative error of the logits against the reference, argmax agreement of the scenario's
labels, peak GPU memory; with ``--checkpoint`` and ``--camvid``, argmax agreement with the
exact fp32 path over CamVid val (whole images).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import statistics
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import measure, trained_like
from benchmarks.report import command_line, write_section
from pspnet.config import InferenceConfig
from pspnet.errors import ConfigError
from pspnet.inference.memory import fit_window_batch
from pspnet.inference.optimized.optimize import exact_rewrite, optimize
from pspnet.inference.protocol import Network, probabilities
from pspnet.models import PSPNet

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets (the sheets
# quote 2x these "with sparsity"): H200 SXM 1,979 TFLOPS sparse, H200 NVL 1,671, H100 SXM
# 1,979, H100 PCIe 1,513, A100 312 dense. Matched against torch.cuda.get_device_name.
PEAK_BF16 = {
    "H200 NVL": 835.5e12,
    "H200": 989.5e12,
    "H100 PCIe": 756.5e12,
    "H100": 989.5e12,
    "A100": 312e12,
}
# title: (precision, backend, TF32 allowed); eager paths first, so that a budget cut drops
# the compiled ones (their warm-up is the long part).
PATHS = {
    "eager fp32 (reference, TF32 off)": ("none", "eager", False),
    "eager fp32, PyTorch defaults (TF32 convolutions)": ("none", "eager", True),
    "exact eager fp32 (BN folded, factorised head, channels_last)": ("fp32", "eager", False),
    "bf16 eager (stem, layer1, pyramid sums, classifier fp32)": ("bf16", "eager", False),
    "fp16 eager (same parts fp32)": ("fp16", "eager", False),
    "bf16, torch.compile": ("bf16", "compile", False),
    "bf16, torch.compile + CUDA graphs": ("bf16", "cudagraphs", False),
    "exact fp32, torch.compile": ("fp32", "compile", False),
}


@contextmanager
def tf32(allowed: bool):
    """TF32 convolutions on (PyTorch's default) or off, matrix products in fp32 (its default)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allowed, False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def scenarios(smoke: bool) -> dict[str, tuple[tuple[int, int], InferenceConfig]]:
    """title: (image size, inference settings)."""
    if smoke:
        return {
            "whole 64x128": ((64, 128), InferenceConfig(mode="whole", flip=False)),
            "slide 96x192": ((96, 192), InferenceConfig(crop_size=(65, 65), flip=False)),
        }
    return {
        "PSPNet-resnet50, 19 classes, whole image 512x1024": (
            (512, 1024),
            InferenceConfig(mode="whole", flip=False),
        ),
        "PSPNet-resnet50, 19 classes, Cityscapes 1024x2048, slide 713 (stride 2/3)": (
            (1024, 2048),
            InferenceConfig(crop_size=(713, 713), flip=False),
        ),
    }


def build(smoke: bool, device: torch.device) -> PSPNet:
    torch.manual_seed(0)
    width = {"backbone": "resnet18", "base_width": 8} if smoke else {"backbone": "resnet50"}
    return trained_like(PSPNet(19, **width)).to(device)


def flops(model: torch.nn.Module, size: tuple[int, int], config: InferenceConfig) -> float:
    """FLOPs of one image through the inference routine (the network's part)."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        probabilities(model, torch.zeros(3, *size, device=device), config)
    return float(counter.get_total_flops())


def measure_path(
    base: PSPNet, path: str, size, config: InferenceConfig, runs: int, reference: dict | None
) -> dict:
    """One path on one scenario: timings, errors against ``reference`` (None: it is one).

    The logits' error is taken in whole-image scenarios only (the image is the input; a
    sliding window's would add a shape to compile); labels are compared in both.
    """
    precision, backend, allow_tf32 = PATHS[path]
    device = next(base.parameters()).device
    image = torch.randn(3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    with tf32(allow_tf32):
        start = time.perf_counter()
        model = optimize(copy.deepcopy(base), precision, backend)
        if device.type == "cuda" and config.mode == "slide":
            batch = fit_window_batch(Network.of(model, device), config)
            config = dataclasses.replace(config, window_batch=batch)
        call = partial(probabilities, model, image, config)
        measure(call, runs=0, warmup=2, device=device)  # compiles
        warmup = time.perf_counter() - start
        held = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)  # the weights, the reference's outputs
        times = measure(call, runs, warmup=0, device=device)
        peak = torch.cuda.max_memory_allocated(device) - held if device.type == "cuda" else 0
        with torch.inference_mode():  # as measure ran it: no recompile
            probs = call()
            logits = model(image[None]).float() if config.mode == "whole" else None
    row = {
        "path": path,
        "seconds": statistics.median(times),
        "warmup": warmup,
        "window_batch": config.window_batch,
        "work_memory_gib": peak / 2**30 if device.type == "cuda" else math.nan,
        "labels": probs.argmax(0),
        "logits": logits,
    }
    row["rel_err"], row["agreement"] = math.nan, 1.0
    if reference is not None:
        if logits is not None:
            expected = reference["logits"]
            row["rel_err"] = ((logits - expected).abs().max() / expected.abs().max()).item()
        row["agreement"] = (row["labels"] == reference["labels"]).float().mean().item()
    elif logits is not None:
        row["rel_err"] = 0.0
    del model
    release(device)
    return row


def release(device: torch.device) -> None:
    """Forget compiled graphs and cached memory, so each path starts clean."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def camvid_agreement(checkpoint: str, root: str, paths: list[str], device, limit: int) -> dict:
    """Argmax agreement of each path with the exact fp32 path over CamVid val, whole images."""
    from pspnet.checkpoints import load_model
    from pspnet.data.images import read_image
    from pspnet.data.transforms import normalize

    names = [line.split()[0] for line in Path(root, "val.txt").read_text().split("\n") if line]
    images = [normalize(read_image(Path(root, name))) for name in names[: limit or None]]
    config = InferenceConfig(mode="whole", flip=False)
    plain = load_model(checkpoint, device)
    with tf32(False):
        exact = optimize(copy.deepcopy(plain), "fp32", "eager")
        reference = [probabilities(exact, x.to(device), config).argmax(0) for x in images]
        agreement = {}
        for path in paths:
            precision, backend, allow = PATHS[path]
            with tf32(allow):
                try:
                    model = optimize(copy.deepcopy(plain), precision, backend)
                except ConfigError:  # not offered on this device
                    continue
                same = total = 0
                for image, expected in zip(images, reference, strict=True):
                    labels = probabilities(model, image.to(device), config).argmax(0)
                    same += (labels == expected).sum().item()
                    total += expected.numel()
            agreement[path] = same / total
    return agreement


def peak_bf16(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():  # "H200 NVL" before "H200"
        if key in name:
            return name, peak
    return name, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--paths", nargs="+", help="substrings of path titles (default: all)")
    parser.add_argument("--checkpoint", help="a CamVid-trained checkpoint for CamVid agreement")
    parser.add_argument("--camvid", help="CamVid root (with val.txt)")
    parser.add_argument("--camvid-limit", type=int, default=0, help="first N val images (0: all)")
    parser.add_argument("--budget", type=float, default=0, help="seconds; later paths skipped")
    parser.add_argument("--rows", type=Path, help="append each row as JSON here as it is done")
    parser.add_argument("--smoke", action="store_true", help="tiny network and images")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--section", default="GPU inference paths")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu, peak = peak_bf16(device)
    paths = [p for p in PATHS if args.paths is None or any(s in p for s in args.paths)]
    started, base = time.perf_counter(), build(args.smoke, device)
    cases = scenarios(args.smoke)
    counted = {
        name: (flops(base, size, config), flops(exact_rewrite(base), size, config))
        for name, (size, config) in cases.items()
    }
    report = Report(args, gpu, peak, counted)
    references: dict[str, dict] = {}
    eager = [p for p in paths if PATHS[p][1] == "eager"]
    compiled = [p for p in paths if PATHS[p][1] != "eager"]
    for path in eager + compiled:  # every scenario of a path, then the next path
        if path == (compiled or [None])[0] and args.checkpoint and args.camvid:
            report.camvid(
                camvid_agreement(  # before the compiles, which may run out of time
                    args.checkpoint,
                    args.camvid,
                    [p for p in eager if PATHS[p][0] in ("bf16", "fp16")],
                    device,
                    args.camvid_limit,
                )
            )
        for name, (size, config) in cases.items():
            left = args.budget - (time.perf_counter() - started)
            if args.budget and (left <= 0 or (path in compiled and left < COMPILE_SECONDS)):
                report.line(name, f"| {path} | not run: {args.budget:.0f} s budget spent |")
                continue
            try:
                row = measure_path(base, path, size, config, args.runs, references.get(name))
            except ConfigError as err:  # a path this device does not offer
                report.line(name, f"| {path} | not offered here: {err} |")
                continue
            reference = references.setdefault(name, row)
            report.row(name, path, row, reference)
            if args.rows:
                with args.rows.open("a") as sink:
                    keep = {k: v for k, v in row.items() if k not in ("labels", "logits")}
                    sink.write(json.dumps({"scenario": name, **keep}) + "\n")
    if args.checkpoint and args.camvid and not compiled:
        report.camvid(
            camvid_agreement(
                args.checkpoint,
                args.camvid,
                [p for p in eager if PATHS[p][0] in ("bf16", "fp16")],
                device,
                args.camvid_limit,
            )
        )
    print(report.body())


# Budget a compiled path needs to finish at all (R50 compiles take tens of seconds a shape).
COMPILE_SECONDS = 90


class Report:
    """The docs section, rewritten after every row so that a timeout keeps what was done."""

    def __init__(self, args: argparse.Namespace, gpu: str, peak: float | None, counted: dict):
        self.args, self.gpu, self.peak, self.counted = args, gpu, peak, counted
        self.lines: dict[str, list[str]] = {name: [] for name in counted}
        self.agreement: dict[str, float] = {}

    def line(self, scenario: str, text: str) -> None:
        self.lines[scenario].append(text)
        print(f"{scenario}: {text}", flush=True)
        self.write()

    def row(self, scenario: str, path: str, row: dict, reference: dict) -> None:
        plain_flops, exact_flops = self.counted[scenario]
        rate = (plain_flops if PATHS[path][0] == "none" else exact_flops) / row["seconds"]
        share = f"{100 * rate / self.peak:.1f}%" if self.peak else "n/a"
        error = "n/a" if math.isnan(row["rel_err"]) else f"{row['rel_err']:.1e}"
        self.line(
            scenario,
            f"| {path} | {1 / row['seconds']:.2f} | {reference['seconds'] / row['seconds']:.2f}x "
            f"| {rate / 1e12:.1f} | {share} | {row['warmup']:.1f} | {error} | "
            f"{100 * row['agreement']:.3f}% | {row['window_batch']} | "
            f"{row['work_memory_gib']:.2f} |",
        )

    def camvid(self, agreement: dict[str, float]) -> None:
        self.agreement = agreement
        self.write()

    def body(self) -> str:
        tables = [
            f"**{name}**: {plain / 1e9:.0f} GFLOP as written, {exact / 1e9:.0f} GFLOP after "
            "the exact rewrites\n\n| path | images/s | speed-up | TFLOP/s | of bf16 peak | "
            "warm-up (s) | max rel err (logits) | argmax agreement | windows per pass | "
            "working GPU memory (GiB) |\n|---|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(self.lines[name])
            for name, (plain, exact) in self.counted.items()
        ]
        if self.agreement:
            tables.append(
                f"**CamVid val, argmax agreement with exact fp32** ({self.args.checkpoint})\n\n"
                "| path | agreement |\n|---|---|\n"
                + "\n".join(f"| {p} | {100 * a:.3f}% |" for p, a in self.agreement.items())
            )
        peak = f"{self.peak / 1e12:.1f} TFLOP/s" if self.peak else "unknown"
        return (
            f"GPU: {self.gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}. Dense bf16 "
            f"peak used: {peak} (NVIDIA data sheet, half the quoted sparse figure). Batch 1 "
            f"image; median of {self.args.runs} runs after two warm-up calls (warm-up includes "
            "compile and sizing the window batch); reference: the plain model, eager fp32, TF32 "
            "off. Working memory: the peak above what was allocated before the timed runs (the "
            "weights). Max rel err: logits of the whole-image scenario only.\n\n"
            + "\n\n".join(tables)
            + f"\n\nCommand: `{command_line()}`"
        )

    def write(self) -> None:
        if not self.args.no_write:
            write_section(self.args.section, self.body())


if __name__ == "__main__":
    main()
