"""Writing predictions: ``pspnet predict`` as one library call, :func:`predict`.

- :mod:`.settings`: :class:`PredictSettings`, everything the command takes;
- :mod:`.images`: :func:`~pspnet.predict.images.predict_images`, label, colour and overlay
  PNGs per image;
- :mod:`.video`: :func:`~pspnet.predict.video.predict_video`, an overlay video (and label
  PNGs) per video file or live source;
- :mod:`.outputs`: each input's output names and files, written atomically (also used by
  Ray Data's batch inference).

Under torchrun each rank takes its own shard of the inputs and writes its outputs; the
counts are summed over the ranks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pspnet.data.images import expand_inputs
from pspnet.errors import ConfigError, DatasetError
from pspnet.inference import Segmenter
from pspnet.predict.outputs import PredictionResult, output_names
from pspnet.predict.settings import PredictSettings, VideoSettings

__all__ = ["PredictSettings", "PredictSummary", "VideoSettings", "predict"]

Events = Callable[[dict], None]


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict` did, summed over the processes.

    Attributes:
        written: inputs whose outputs were written now.
        done_before: inputs whose outputs were all there already (not segmented again).
        failures: inputs that could not be read (each reported as it was met).
        processes: the torchrun processes that shared the work (1 without torchrun).
    """

    written: int
    done_before: int
    failures: int
    processes: int


def predict(settings: PredictSettings, on_event: Events | None = None) -> PredictSummary:
    """Segment ``settings.inputs`` (or its live ``source``) into ``settings.out``.

    Images and videos are told apart by their contents' names; options that apply to no
    input are refused before the checkpoint is loaded. Under torchrun each rank segments
    its shard of the inputs.

    Args:
        settings: inputs, checkpoint, outputs, video selection, inference and runtime.
        on_event: called with progress as it happens (this process's): ``{"kind":
            "download", "done", "total"}``, ``{"kind": "images", "total"}``, ``{"kind":
            "image", "result": PredictionResult, "name": its outputs' name}``, ``{"kind":
            "video", "name"}``, ``{"kind": "frame", "done", "expected"}``, ``{"kind":
            "video_done", "result": VideoResult}`` and ``{"kind": "skipped", "error"}`` for
            an input that could not be read.

    Raises:
        ConfigError: options that fit no input, ``source`` under torchrun.
        DatasetError: two inputs that would share outputs; a live source that fails.
        InferenceError: the model failed on an input, naming it.
    """
    from pspnet.engine.distributed import setup_process, shard, sum_over_ranks
    from pspnet.inference.optimized.optimize import AMORTIZED_AFTER
    from pspnet.video.sources import is_video, parse_source, quiet_backend_logs, source_name

    tell = on_event or (lambda event: None)
    quiet_backend_logs()  # OpenCV's and FFmpeg's warnings: our errors say one line instead
    process = setup_process(settings.runtime.device)  # under torchrun: this rank's shard
    if settings.source is not None and process.world_size > 1:
        raise ConfigError("--source is read by one process; run it without torchrun")
    files = expand_inputs(settings.inputs, videos=True)
    names = output_names(files)  # over every input, so ranks agree and collisions fail first
    videos = {path for path in files if is_video(path)}
    settings.check_kinds(bool(videos) or settings.source is not None, len(videos) < len(files))
    mine = shard(files, process)
    segmenter = Segmenter.from_checkpoint(
        settings.checkpoint,
        dataclasses.replace(settings.runtime, device=str(process.device)),  # a rank's own GPU
        settings.inference,
        progress=lambda done, total: tell({"kind": "download", "done": done, "total": total}),
        amortized=len(mine) >= AMORTIZED_AFTER,
    )
    limit = segmenter.pixel_limit(settings.memory_budget_mb)
    images = [path for path in mine if path not in videos]
    counts = _images(segmenter, images, names, settings, limit, tell)
    sources = [(path, names[path]) for path in mine if path in videos]
    if settings.source is not None:
        source = parse_source(settings.source)
        sources = [(source, source_name(source))]
    for source, name in sources:
        video_counts = _video(segmenter, source, name, settings, limit, tell)
        counts = [a + b for a, b in zip(counts, video_counts)]
    written, done_before, failures = sum_over_ranks(counts, process)
    return PredictSummary(written, done_before, failures, process.world_size)


def _images(segmenter, images, names, settings: PredictSettings, limit, tell) -> list[int]:
    """Every image through :func:`predict_images`; [written, done before, unreadable]."""
    from pspnet.predict.images import predict_images

    tell({"kind": "images", "total": len(images)})
    counts = [0, 0, 0]
    results = predict_images(
        segmenter,
        images,
        settings.out,
        save_probs=settings.save_probs,
        confidence=settings.confidence,
        unknown_below=settings.unknown_below,
        redo=settings.redo,
        names=names,
        limit=limit,
    )
    for result in results:
        counts[_outcome(result)] += 1
        tell({"kind": "image", "result": result, "name": names[result.path]})
    return counts


def _outcome(result: PredictionResult) -> int:
    """0 written, 1 done before, 2 unreadable: the index into the counts."""
    return 2 if result.error is not None else int(result.done_before)


def _video(segmenter, source, name, settings: PredictSettings, limit, tell) -> list[int]:
    """One video file (or the live source) through :func:`predict_video`; [written, done
    before, unreadable]. An unreadable file is skipped like an image; a live source's errors
    end the command."""
    from pspnet.predict.video import predict_video
    from pspnet.video.sources import VideoSource

    tell({"kind": "video", "name": str(name)})
    try:
        with VideoSource(source, **settings.video.selection()) as video:
            result = predict_video(
                segmenter,
                video,
                settings.out,
                name,
                settings.video,
                unknown_below=settings.unknown_below,
                redo=settings.redo,
                limit=limit,
                progress=lambda done, expected: tell(
                    {"kind": "frame", "done": done, "expected": expected}
                ),
            )
    except DatasetError as err:
        if not isinstance(source, Path):  # a camera or stream: the command's only input
            raise
        tell({"kind": "skipped", "error": str(err)})
        return [0, 0, 1]
    tell({"kind": "video_done", "result": result})
    if result.done_before:
        return [0, 1, 0]
    return [int(result.overlay is not None), 0, 0]
