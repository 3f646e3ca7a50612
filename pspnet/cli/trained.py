"""The subcommands that run a trained model: eval, predict, export and serve.

Each takes its settings, calls the library and does the talking; only rank 0 talks.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from pspnet.cli.output import ProgressBar, download_bar, is_main_rank, say, write

if TYPE_CHECKING:  # for the annotations: the command table in __init__.py imports them
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
    if settings.out is not None and is_main_rank():
        write_report(evaluation, settings.out)
        say(f"wrote metrics.json, metrics.md, confusion.csv and confusion.png to {settings.out}")
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

    def on_video_done(self, event: dict) -> None:
        self.bar.close()
        if not event["result"].done_before:
            write(video_line(event["result"], self.stall_timeout))

    def close(self) -> None:
        self.download.close()
        self.bar.close()


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
    from pspnet.export.onnx import export_onnx
    from pspnet.inference.optimized.optimize import exact_rewrite

    download = download_bar()
    checkpoint = load_checkpoint(settings.checkpoint, progress=download.update_to)
    download.close()
    model = checkpoint.model
    exported = exact_rewrite(model, exportable=True) if settings.optimize else model
    export_onnx(
        exported,
        settings.out,
        example_size=(settings.size, settings.size),
        metadata=checkpoint.metadata,
    )
    say(
        f"wrote {settings.out}: input images (N, 3, H, W) of any size, output logits "
        f"(N, {model.config.num_classes}, H, W)"
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
