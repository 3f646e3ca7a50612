"""`pspnet serve` against a direct Segmenter call: overhead, throughput, mixed image sizes,
overload and a hostile run, with memory.

python -m benchmarks.cpu.serve                       # PSPNet-ResNet18 width 32, 256x256 images
python -m benchmarks.cpu.serve --size 512 --requests 40
python -m benchmarks.cpu.serve --parts mixed hostile --hostile-seconds 10 --no-write  # a look

Everything runs on this machine: the service is a real `pspnet serve` process on 127.0.0.1
with its default backend, the clients are threads of this process. The direct reference is
measured in the same run, interleaved with the service's sequential requests, so CPU drift
lands on both. It also asks whether batching same-size queued images would help here, before
anyone builds it: the per-image time of one forward pass of 4 images against 4 passes of one.

Mixed sizes: every request of the first round has a size the service has not seen, as a
photo service's requests do; a path that compiles per shape shows there as a stall.

The hostile run throws everything at one service at once for ``--hostile-seconds``: clients
trickling their uploads (a byte a second against a declared 10 MB), clients flooding it with
normal requests and one client sending the largest image it admits (its pixel limit from
``--hostile-budget-mb``). Every client stops at the end of the run and after a bounded number
of requests; it reports what was served and refused, the peak memory, and whether the service
still answers.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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
PARTS = ("overhead", "mixed", "overload", "hostile")
# Height and width of the mixed sizes, as multiples of --size: none repeats.
MIXED_SHAPES = ((1, 1), (0.75, 1), (1, 1.25), (1.25, 0.75), (0.5, 1.5), (1.5, 1.1))
# Each hostile client's requests are bounded in count as well as in time.
MAX_PER_CLIENT = 200
SLOW_DECLARED_BYTES = 10 * 2**20
HOSTILE_UPLOAD_TIMEOUT = 5
RETRY_AFTER_SECONDS = 1  # what the service's 503s say


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def png(height: int, width: int, seed: int = 0) -> bytes:
    """A PNG of random 16-pixel blocks: several classes, compresses like a photo or better."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = blocks.repeat(16, 0).repeat(16, 1)[:height, :width]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def post(port: int, body: bytes, timeout: float = 300) -> tuple[int | str, float]:
    """One segment request (PNG labels back): (status or the error's name, seconds)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/segment", body, {"Content-Type": "image/png"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError as err:  # refused, reset, timed out: a hostile run's normal outcomes
        status = type(err).__name__
    finally:
        connection.close()
    return status, time.perf_counter() - start


def post_ok(port: int, body: bytes) -> None:
    """One segment request that must succeed."""
    status, _ = post(port, body)
    assert status == 200, status


def get(port: int, path: str) -> tuple[int | str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as err:
        return type(err).__name__, b""
    finally:
        connection.close()


class Service:
    """A `pspnet serve` process on a free port, ready when constructed."""

    def __init__(self, checkpoint: Path, *options: str):
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "pspnet",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(self.port),
            *options,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if get(self.port, "/readyz")[0] == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the service did not become ready within 120 s")

    def memory_mib(self, field: str = "VmHWM") -> float:
        """Resident memory, now (VmRSS) or at its peak (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(f"{field}:"))
        return int(line.split()[1]) / 1024

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and get(self.port, "/healthz")[0] == 200

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


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


def mixed_sizes(port: int, size: int, rounds: int) -> dict:
    """Sequential requests over :data:`MIXED_SHAPES`: the first of each size, and all."""
    shapes = [(round(h * size), round(w * size)) for h, w in MIXED_SHAPES]
    bodies = [png(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    first, every = [], []
    for round_ in range(rounds):
        for body in bodies:
            status, seconds = post(port, body)
            assert status == 200, status
            (first if round_ == 0 else every).append(seconds)
    return {"shapes": shapes, "first": first, "all": first + every}


def trickle(port: int, stop_at: float) -> int | str:
    """One upload declaring 10 MB, sent a byte a second: the server's status or how it ended."""
    head = (
        "POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {SLOW_DECLARED_BYTES}\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + b"\x89PNG")
            sock.settimeout(1.0)
            while time.monotonic() < stop_at:
                try:
                    answer = sock.recv(4096)
                except TimeoutError:
                    sock.sendall(b"\0")
                    continue
                return int(answer.split(b" ", 2)[1]) if answer else "closed"
            return "still sending at the end"
    except (OSError, ValueError, IndexError) as err:
        return type(err).__name__


def hostile(checkpoint: Path, args: argparse.Namespace, normal: bytes) -> dict:
    """Slow uploads, a flood and the largest admitted image at once; what came of each."""
    service = Service(
        checkpoint,
        "--max-queue",
        "2",
        "--timeout",
        "60",
        "--max-upload-mb",
        "64",
        "--upload-timeout",
        str(HOSTILE_UPLOAD_TIMEOUT),
        "--memory-budget-mb",
        str(args.hostile_budget_mb),
    )
    try:
        limit = json.loads(get(service.port, "/v1/model")[1])["limits"]["max_pixels"]
        side = math.isqrt(limit)
        largest = png(side, side, seed=99)
        outcomes = {"slow": Counter(), "flood": Counter(), "largest": Counter()}
        largest_seconds, lock = [], threading.Lock()
        stop_at = time.monotonic() + args.hostile_seconds

        def record(kind: str, status) -> None:
            with lock:
                outcomes[kind][status] += 1

        def slow() -> None:
            for _ in range(MAX_PER_CLIENT):
                if time.monotonic() >= stop_at:
                    return
                status = trickle(service.port, stop_at)
                record("slow", status)
                if status == 503:  # no place free: try again soon (an attacker would)
                    time.sleep(0.5)

        def flood() -> None:
            for _ in range(MAX_PER_CLIENT):
                if time.monotonic() >= stop_at:
                    return
                status = post(service.port, normal, timeout=90)[0]
                record("flood", status)
                if status == 503:
                    time.sleep(RETRY_AFTER_SECONDS)  # as the answer's Retry-After says

        def large() -> None:
            for _ in range(MAX_PER_CLIENT):
                if time.monotonic() >= stop_at:
                    return
                status, seconds = post(service.port, largest, timeout=90)
                record("largest", status)
                if status == 200:
                    largest_seconds.append(seconds)
                elif status == 503:
                    time.sleep(RETRY_AFTER_SECONDS)

        peak_rss = [service.memory_mib("VmRSS")]

        def sample() -> None:
            while time.monotonic() < stop_at + 5:
                peak_rss.append(service.memory_mib("VmRSS"))
                time.sleep(0.2)

        workers = [slow] * args.slow_clients + [flood] * args.flood_clients + [large, sample]
        threads = [threading.Thread(target=work, daemon=True) for work in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.hostile_seconds + 120)
        alive = service.alive and post(service.port, normal)[0] == 200
        return {
            "outcomes": outcomes,
            "side": side,
            "limit": limit,
            "largest_bytes": len(largest),
            "largest_seconds": largest_seconds,
            "peak_mib": max(service.memory_mib("VmHWM"), *peak_rss),
            "alive": alive,
        }
    finally:
        service.stop()


def batching_probe(model: torch.nn.Module, size: int, runs: int) -> tuple[float, float]:
    """Milliseconds per image: 4 forward passes of 1 image, and 1 pass of 4 images."""
    one, four = torch.randn(1, 3, size, size), torch.randn(4, 3, size, size)
    singles, batches = in_turn(lambda: [model(one) for _ in range(4)], partial(model, four), runs)
    return 1000 * statistics.median(singles) / 4, 1000 * statistics.median(batches) / 4


def counts(counter: Counter) -> str:
    return ", ".join(f"{n} x {status}" for status, n in counter.most_common()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="square test image")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--mixed-rounds", type=int, default=5, help="rounds over the sizes")
    parser.add_argument("--hostile-seconds", type=float, default=30.0)
    parser.add_argument(
        "--hostile-budget-mb",
        type=float,
        default=512.0,
        help="the hostile service's memory budget: its largest image",
    )
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--flood-clients", type=int, default=8)
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

    lines = [
        f"CPU: {cpu_model()}. Model: PSPNet-{args.backbone} width {args.base_width}, "
        f"{CLASSES} classes, whole-image test, {args.size}x{args.size} PNG; labels PNG back; "
        "the service's default backend.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    if {"overhead", "mixed"} & set(args.parts):
        lines += served_rows(checkpoint, args, image, body)
    if "overload" in args.parts:
        overloaded = Service(checkpoint, "--max-queue", "2")
        try:
            flood = clients(overloaded.port, body, 32, 2)
            alive = post(overloaded.port, body)[0] == 200
        finally:
            overloaded.stop()
        lines.append(
            f"| overload (32 clients, --max-queue 2): share of 503s | "
            f"{100 * flood['busy_share']:.0f}% of {len(flood['statuses'])}, only 200/503: "
            f"{set(flood['statuses']) <= {200, 503}}, alive after: {alive} |"
        )
    if "hostile" in args.parts:
        lines += hostile_rows(hostile(checkpoint, args, body), args)
    if "overhead" in args.parts:
        single_ms, batched_ms = batching_probe(model, args.size, runs=5)
        lines.append(
            f"| batching probe: per image, 4 passes of 1 vs 1 pass of 4 | {single_ms:.1f} vs "
            f"{batched_ms:.1f} ms ({single_ms / batched_ms:.2f}x) |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(
            "Serving: pspnet serve against a direct call",
            f"`{command_line()}`\n\n{table}",
        )


def served_rows(checkpoint: Path, args, image: np.ndarray, body: bytes) -> list[str]:
    """The overhead against a direct call, concurrency, mixed sizes and memory of one service."""
    service = Service(checkpoint, "--max-queue", "32")
    rows = []
    try:
        if "overhead" in args.parts:
            direct_model = Segmenter.from_checkpoint(checkpoint)
            served_call = partial(post_ok, service.port, body)
            direct, served = in_turn(partial(direct_model, image), served_call, args.requests)
            loads = {n: clients(service.port, body, n, max(2, 32 // n)) for n in (1, 4, 16)}
            p50_direct, p50_served = (
                1000 * statistics.median(direct),
                1000 * statistics.median(served),
            )
            overhead = p50_served - p50_direct
            rows += [
                f"| direct `Segmenter` call, p50 | {p50_direct:.1f} ms |",
                f"| service, sequential, p50 | {p50_served:.1f} ms |",
                f"| service overhead, p50 | {overhead:.1f} ms "
                f"({100 * overhead / p50_direct:.1f}%) |",
            ]
            for count, load in loads.items():
                ok = load["ok"]
                rows.append(
                    f"| {count} concurrent client(s): throughput, p50 / p95 / p99 | "
                    f"{load['throughput']:.1f} img/s, {1000 * percentile(ok, 50):.0f} / "
                    f"{1000 * percentile(ok, 95):.0f} / {1000 * percentile(ok, 99):.0f} ms |"
                )
        if "mixed" in args.parts:
            mixed = mixed_sizes(service.port, args.size, args.mixed_rounds)
            every, first = mixed["all"], mixed["first"]
            sizes = ", ".join(f"{h}x{w}" for h, w in mixed["shapes"])
            rows += [
                f"| mixed sizes ({sizes}; {len(every)} sequential requests): p50 / p95 / p99 "
                f"/ max | {1000 * percentile(every, 50):.0f} / {1000 * percentile(every, 95):.0f}"
                f" / {1000 * percentile(every, 99):.0f} / {1000 * max(every):.0f} ms |",
                f"| mixed sizes: the first request of each new size, slowest | "
                f"{1000 * max(first):.0f} ms |",
            ]
        rows.append(f"| service peak RSS (VmHWM) | {service.memory_mib():.0f} MiB |")
    finally:
        service.stop()
    return rows


def hostile_rows(run: dict, args) -> list[str]:
    outcomes, seconds = run["outcomes"], run["largest_seconds"]
    median = f"{statistics.median(seconds):.1f} s each" if seconds else "none served"
    return [
        f"| hostile run ({args.hostile_seconds:g} s at once: {args.slow_clients} slow uploads, "
        f"{args.flood_clients} flooding clients, 1 client of the largest image; --max-queue 2, "
        f"--upload-timeout {HOSTILE_UPLOAD_TIMEOUT}) | |",
        f"| hostile: flood requests answered | {counts(outcomes['flood'])} |",
        f"| hostile: largest admitted image ({run['side']}x{run['side']}, limit "
        f"{run['limit']:,} px from --memory-budget-mb {args.hostile_budget_mb:g}, "
        f"{run['largest_bytes'] / 2**20:.1f} MiB PNG) | {counts(outcomes['largest'])}; "
        f"{median} |",
        f"| hostile: slow uploads | {counts(outcomes['slow'])} |",
        f"| hostile: service peak RSS | {run['peak_mib']:.0f} MiB |",
        f"| hostile: alive after, a normal request answered 200 | {run['alive']} |",
    ]


if __name__ == "__main__":
    main()
