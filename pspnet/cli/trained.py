"""The subcommands that run a trained model: eval, predict, export, serve and benchmark.

Each takes its settings, calls the library and does the talking; only rank 0 talks.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from pspnet.cli.output import ProgressBar, download_bar, is_main_rank, say, write

if TYPE_CHECKING:  # for the annotations: the command table in __init__.py imports them
    from pspnet.benchmark import BenchmarkReport, BenchmarkSettings
    from pspnet.engine.scoring import EvalSettings
    from pspnet.export import ExportSettings
    from pspnet.predict.settings import PredictSettings
    from pspnet.serve.settings import ServeSettings


# --- eval -------------------------------------------------------------------------------------


def cmd_eval(settings: EvalSettings) -> int:
    from pspnet.engine.scoring import evaluate_settings, write_report

    bar = ProgressBar(desc="evaluating", unit="image")
    evaluation = evaluate_settings(settings, progress=bar.update_to)
    bar.close()
    table = evaluation.metrics.to_markdown(list(evaluation.preset.class_names))
    say(f"{evaluation.title()}:\n{table}")
    if evaluation.published_line() is not None:
        say(evaluation.published_line())
    if evaluation.boundary_table() is not None:
        say(f"boundary IoU (Cheng et al., 2021):\n{evaluation.boundary_table()}")
    if not is_main_rank():
        return 0
    if settings.out is not None:
        write_report(evaluation, settings.out)
        say(f"wrote metrics.json, metrics.md, confusion.csv and confusion.png to {settings.out}")
        if settings.worst:
            say(f"the {settings.worst} worst images: {settings.out / 'worst' / 'index.html'}")
    if settings.per_image is not None:
        evaluation.per_image.write_csv(settings.per_image)
        say(f"wrote each image's scores to {settings.per_image}, lowest mIoU first")
    return 0


# --- predict ----------------------------------------------------------------------------------


def cmd_predict(settings: PredictSettings) -> int:
    from pspnet.predict import predict

    show = PredictProgress(settings.video.stall_timeout)
    try:
        summary = predict(settings, show)
    finally:
        show.close()
    say(
        f"wrote {summary.written} prediction(s) to {settings.out}"
        + (f" ({summary.processes} processes)" if summary.processes > 1 else "")
        + (f"; {summary.done_before} already there (--redo to redo)" if summary.done_before else "")
        + (f"; {summary.failures} input(s) could not be read" if summary.failures else "")
    )
    return 1 if summary.failures else 0


class PredictProgress:
    """Shows predict's events: a bar of images, a bar of frames per video, a line per input
    (the per-image lines only without torchrun, where ranks would interleave them)."""

    def __init__(self, stall_timeout: float):
        import os

        self.stall_timeout = stall_timeout
        self.talk = int(os.environ.get("WORLD_SIZE", "1")) == 1
        self.download = download_bar()
        self.bar = ProgressBar(desc="predicting", unit="image")
        self.images = 0

    def __call__(self, event: dict) -> None:
        getattr(self, "on_" + event["kind"])(event)

    def on_download(self, event: dict) -> None:
        self.download.update_to(event["done"], event["total"])

    def on_path(self, event: dict) -> None:
        self.download.close()
        write(path_line(event["precision"], event["backend"], event["reason"]))

    def on_images(self, event: dict) -> None:
        self.download.close()
        if event["total"]:
            self.bar.update_to(0, event["total"])

    def on_image(self, event: dict) -> None:
        result = event["result"]
        self.images += 1
        self.bar.update_to(self.images)
        if result.error is not None:
            write(f"skipped {result.error}", error=True)
        elif not result.done_before and self.talk:
            write(f"{event['name']}: {result.shares}")

    def on_video(self, event: dict) -> None:
        self.bar.close()
        self.bar = ProgressBar(desc=event["name"], unit="frame")  # fps, a file's time left

    def on_frame(self, event: dict) -> None:
        self.bar.update_to(event["done"], event["expected"])

    def on_skipped(self, event: dict) -> None:
        self.bar.close()
        write(f"skipped {event['error']}", error=True)

    def on_scene(self, event: dict) -> None:
        self.bar.close()
        self.bar = ProgressBar(desc=event["name"], unit="window")

    def on_window(self, event: dict) -> None:
        self.bar.update_to(event["done"], event["total"])

    def on_scene_done(self, event: dict) -> None:
        self.bar.close()
        result = event["result"]
        if result.done_before:
            return
        height, width = result.size
        line = f"{result.source}: {width}x{height} -> {', '.join(map(str, result.outputs))}"
        if result.set_aside:
            line += f" (the checkpoint's {result.set_aside} set aside: scenes are segmented "
            line += "at their own resolution; --base-size or --scales to resize)"
        write(line)

    def on_annotations(self, event: dict) -> None:
        write(f"pre-annotations, least confident image first: {', '.join(event['paths'])}")

    def on_video_done(self, event: dict) -> None:
        self.bar.close()
        if not event["result"].done_before:
            write(video_line(event["result"], self.stall_timeout))

    def close(self) -> None:
        self.download.close()
        self.bar.close()


def path_line(precision: str, backend: str, reason: str) -> str:
    """Which path runs and why: ``running fp32 openvino (measured on 2026-05-01)``."""
    return f"running {precision} {backend} ({reason})"


def video_line(result, stall_timeout: float) -> str:
    """What a video gave: ``clip.mp4: 120 frames -> out/clip_overlay.mp4 (mp4v, 30 fps, ...)``."""
    why = {
        "end": "",
        "duration": " (--duration)",
        "max_frames": " (--max-frames)",
        "interrupted": " (stopped by Ctrl+C)",
        "stalled": f" (stalled: no frame for {stall_timeout:g} s)",
    }[result.stopped]
    if result.overlay is None:
        return f"{result.source}: no frame kept{why}; nothing written"
    height, width = result.size
    line = (
        f"{result.source}: {result.frames} frames{why} -> {result.overlay} "
        f"({result.codec}, {result.fps:g} fps, {width}x{height})"
    )
    return line + (f", labels in {result.labels}/" if result.labels is not None else "")


# --- export -----------------------------------------------------------------------------------


def cmd_export(settings: ExportSettings) -> int:
    from pspnet.checkpoints import load_checkpoint
    from pspnet.export import export_onnx, export_openvino
    from pspnet.inference.optimized.optimize import exact_rewrite

    download = download_bar()
    checkpoint = load_checkpoint(settings.checkpoint, progress=download.update_to)
    download.close()
    model = checkpoint.model
    exported = exact_rewrite(model, exportable=True) if settings.optimize else model
    export = export_openvino if settings.format == "openvino" else export_onnx
    export(
        exported,
        settings.out,
        example_size=(settings.size, settings.size),
        metadata=checkpoint.metadata,
    )
    weights = f" and {settings.out.with_suffix('.bin')}" if settings.format == "openvino" else ""
    say(
        f"wrote {settings.out}{weights}: input images (N, {model.config.in_channels}, H, W) of "
        f"any size, output logits (N, {model.config.num_classes}, H, W)"
    )
    return 0


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(settings: ServeSettings) -> int:
    from pspnet.data.images import max_pixels
    from pspnet.serve import check_checkpoint, is_loopback, serve, with_api_key

    check_checkpoint(settings.checkpoint)
    settings = with_api_key(settings)
    if not is_loopback(settings.host) and settings.limits.api_key is None:
        warn(
            f"{settings.host} is reachable from other machines and no --api-key is set: anyone "
            "who reaches it can use it (see the serving guide's proxy setup)"
        )
    if settings.runtime.backend == "compile":
        warn("--backend compile recompiles for every new image size, on the request path")
    handler = logging.StreamHandler()  # the service's log: load errors, unexpected failures
    handler.setFormatter(logging.Formatter("pspnet serve: %(levelname)s: %(message)s"))
    logging.getLogger("pspnet.serve").addHandler(handler)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}/"

    def ready(segmenter, pixels: int) -> None:
        reason = segmenter.path_reason
        say(f"pspnet serve: {path_line(segmenter.precision, segmenter.backend, reason)}")
        say(
            f"pspnet serve: ready, {segmenter.num_classes} classes, images up to {pixels:,} "
            f"pixels; the page is at {url}, the API at {url}v1/segment (Ctrl+C stops)"
        )
        if (settings.limits.max_pixels or 0) > pixels:
            say(f"pspnet serve: --max-pixels is over the decoders' limit of {max_pixels():,}")

    say(f"pspnet serve: loading {settings.checkpoint} (health at {url}healthz)")
    serve(settings, ready)
    return 0


def warn(message: str) -> None:
    print(f"pspnet serve: warning: {message}", file=sys.stderr)


# --- benchmark --------------------------------------------------------------------------------


def cmd_benchmark(settings: BenchmarkSettings) -> int:
    from pspnet.benchmark import run_benchmark
    from pspnet.inference.optimized.measured import save_record

    show = BenchmarkProgress()
    try:
        report = run_benchmark(settings, show)
    finally:
        show.close()
    say(report.to_markdown())
    say(f"wrote {report.write(settings.out_file(report.record.shape.crop))}")
    if settings.save:
        say(f"recorded in {save_record(report.record)}: {auto_line(report)}")
    return 0


def auto_line(report: BenchmarkReport) -> str:
    """What ``auto`` runs here from now on, for a service and for long work."""
    served, amortized = report.fastest(amortized=False), report.fastest(amortized=True)
    if served is None:
        return "no path kept its thresholds; --precision/--backend auto keep the fallback rule"
    line = f"--precision/--backend auto now run {served.name} on this machine for this model"
    if amortized is not None and amortized != served:
        line += f" ({amortized.name} for predict over many images)"
    return line


class BenchmarkProgress:
    """Shows the benchmark's events: the download, each path built, the runs, the scoring."""

    def __init__(self):
        self.download = download_bar()
        self.bar = ProgressBar(unit="image")

    def __call__(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "download":
            self.download.update_to(event["done"], event["total"])
        elif kind == "build":
            self.download.close()
            write(f"building and warming up {event['path']}")
        elif kind == "time":
            write(f"timing every path in turn, {event['runs']} runs each")
        elif kind == "score":
            if self.bar.bar is not None and self.bar.bar.desc != event["path"]:
                self.bar.close()
            self.bar.options["desc"] = event["path"]
            self.bar.update_to(event["done"], event["total"])

    def close(self) -> None:
        self.download.close()
        self.bar.close()
