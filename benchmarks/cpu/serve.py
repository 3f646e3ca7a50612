"""`pspnet serve` against a direct Segmenter call: overhead, throughput, overload, memory.

python -m benchmarks.cpu.serve                       # PSPNet-ResNet18 width 32, 256x256 images
python -m benchmarks.cpu.serve --size 512 --requests 40

Everything runs on this machine: the service is a real `pspnet serve` process on 127.0.0.1,
the clients are threads of this process. The direct reference is measured in the same run,
interleaved with the service's sequential requests, so CPU drift lands on both. It also asks
whether batching same-size queued images would help here, before anyone builds it: the
per-image time of one forward pass of 4 images against 4 passes of one.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.harness import in_turn
from benchmarks.report import command_line, cpu_model, write_section
from pspnet.checkpoints import save_model
from pspnet.inference import Segmenter
from pspnet.models import PSPNet

CLASSES = 19


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes) -> tuple[int, float]:
    """One segment request (PNG labels back): (status, seconds)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("POST", "/v1/segment", body, {"Content-Type": "image/png"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - start


def post_ok(port: int, body: bytes) -> None:
    """One segment request that must succeed."""
    status, _ = post(port, body)
    assert status == 200, status


class Service:
    """A `pspnet serve` process on a free port, ready when constructed."""

    def __init__(self, checkpoint: Path, max_queue: int):
        self.port = free_port()
        command = [sys.executable, "-m", "pspnet", "serve", "--checkpoint", str(checkpoint),
                   "--port", str(self.port), "--max-queue", str(max_queue)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the service did not become ready within 120 s")

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def clients(port: int, body: bytes, count: int, per_client: int) -> dict:
    """``count`` threads sending ``per_client`` requests each: statuses, latencies, rate."""
    statuses, latencies, lock = [], [], threading.Lock()

    def client() -> None:
        for _ in range(per_client):
            status, seconds = post(port, body)
            with lock:
                statuses.append(status)
                latencies.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - start
    ok = [s for s, status in zip(latencies, statuses) if status == 200]
    return {
        "statuses": statuses,
        "ok": ok,
        "throughput": len(ok) / wall,
        "busy_share": statuses.count(503) / len(statuses),
    }


def batching_probe(model: torch.nn.Module, size: int, runs: int) -> tuple[float, float]:
    """Milliseconds per image: 4 forward passes of 1 image, and 1 pass of 4 images."""
    one, four = torch.randn(1, 3, size, size), torch.randn(4, 3, size, size)
    singles, batches = in_turn(lambda: [model(one) for _ in range(4)], partial(model, four), runs)
    return 1000 * statistics.median(singles) / 4, 1000 * statistics.median(batches) / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="square test image")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = PSPNet(CLASSES, backbone=args.backbone, base_width=args.base_width).eval()
    folder = Path(tempfile.mkdtemp(prefix="pspnet-serve-bench-"))
    checkpoint = folder / "model.safetensors"
    inference = {"mode": "whole", "flip": False}
    save_model(model, checkpoint, {"inference": json.dumps(inference)})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    body = buffer.getvalue()

    direct_model = Segmenter.from_checkpoint(checkpoint)
    service = Service(checkpoint, max_queue=32)
    try:
        served_call = partial(post_ok, service.port, body)
        direct, served = in_turn(partial(direct_model, image), served_call, args.requests)
        loads = {n: clients(service.port, body, n, max(2, 32 // n)) for n in (1, 4, 16)}
        peak = service.peak_rss_mib()
    finally:
        service.stop()
    overloaded = Service(checkpoint, max_queue=2)
    try:
        flood = clients(overloaded.port, body, 32, 2)
        alive = post(overloaded.port, body)[0] == 200
    finally:
        overloaded.stop()
    single_ms, batched_ms = batching_probe(model, args.size, runs=5)

    p50_direct, p50_served = 1000 * statistics.median(direct), 1000 * statistics.median(served)
    overhead = p50_served - p50_direct
    lines = [
        f"CPU: {cpu_model()}. Model: PSPNet-{args.backbone} width {args.base_width}, "
        f"{CLASSES} classes, whole-image test, {args.size}x{args.size} PNG; labels PNG back.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| direct `Segmenter` call, p50 | {p50_direct:.1f} ms |",
        f"| service, sequential, p50 | {p50_served:.1f} ms |",
        f"| service overhead, p50 | {overhead:.1f} ms ({100 * overhead / p50_direct:.1f}%) |",
    ]
    for count, load in loads.items():
        ok = load["ok"]
        lines.append(
            f"| {count} concurrent client(s): throughput, p50 / p95 / p99 | "
            f"{load['throughput']:.1f} img/s, {1000 * percentile(ok, 50):.0f} / "
            f"{1000 * percentile(ok, 95):.0f} / {1000 * percentile(ok, 99):.0f} ms |"
        )
    lines += [
        f"| overload (32 clients, --max-queue 2): share of 503s | "
        f"{100 * flood['busy_share']:.0f}% of {len(flood['statuses'])}, only 200/503: "
        f"{set(flood['statuses']) <= {200, 503}}, alive after: {alive} |",
        f"| service peak RSS (VmHWM) | {peak:.0f} MiB |",
        f"| batching probe: per image, 4 passes of 1 vs 1 pass of 4 | {single_ms:.1f} vs "
        f"{batched_ms:.1f} ms ({single_ms / batched_ms:.2f}x) |",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(
            "Serving: pspnet serve against a direct call",
            f"`{command_line()}`\n\n{table}",
        )


if __name__ == "__main__":
    main()
