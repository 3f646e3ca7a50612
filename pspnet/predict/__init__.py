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
from functools import partial
from pathlib import Path

from pspnet.data.images import expand_inputs
from pspnet.engine.distributed import sum_over_ranks
from pspnet.errors import ConfigError, DatasetError
from pspnet.inference import Segmenter
from pspnet.predict.outputs import PredictionResult, output_names, write_summary
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

    Images, raster scenes and videos are told apart (a scene: a raster GDAL reads that is
    georeferenced, not 8-bit RGB, or beyond the memory budget of an image); options that
    apply to no input are refused before the checkpoint is loaded. Under torchrun each rank segments
    its shard of the inputs.

    Args:
        settings: inputs, checkpoint, outputs, video selection, inference and runtime.
        on_event: called with progress as it happens (this process's): ``{"kind":
            "download", "done", "total"}``, ``{"kind": "path", "precision", "backend",
            "reason"}`` once the model is loaded, ``{"kind": "images", "total"}``, ``{"kind":
            "image", "result": PredictionResult, "name": its outputs' name}``, ``{"kind":
            "video", "name"}``, ``{"kind": "frame", "done", "expected"}``, ``{"kind":
            "video_done", "result": VideoResult}``, ``{"kind": "scene", "name"}``,
            ``{"kind": "window", "done", "total"}``, ``{"kind": "scene_done", "result":
            SceneResult}`` and ``{"kind": "skipped", "error"}`` for an input that could not
            be read.

    Raises:
        ConfigError: options that fit no input, ``source`` under torchrun.
        DatasetError: two inputs that would share outputs; a live source that fails.
        InferenceError: the model failed on an input, naming it.
    """
    from pspnet.engine.distributed import gather_lists, setup_process, shard
    from pspnet.inference.optimized.optimize import AMORTIZED_AFTER
    from pspnet.rasters.scene import is_scene
    from pspnet.video.sources import is_video, parse_source, quiet_backend_logs, source_name

    tell = on_event or (lambda event: None)
    quiet_backend_logs()  # OpenCV's and FFmpeg's warnings: our errors say one line instead
    process = setup_process(settings.runtime.device)  # under torchrun: this rank's shard
    if settings.source is not None and process.world_size > 1:
        raise ConfigError("--source is read by one process; run it without torchrun")
    files = expand_inputs(settings.inputs, videos=True, scenes=True)
    names = output_names(files)  # over every input, so ranks agree and collisions fail first
    kinds = {
        path: "video" if is_video(path) else "scene" if is_scene(path) else "image"
        for path in files
    }
    settings.check_kinds(
        videos="video" in kinds.values() or settings.source is not None,
        images="image" in kinds.values(),
        scenes="scene" in kinds.values(),
    )
    # Fewer scenes than ranks: every rank takes a strip of rows of each; else, like the
    # rest, each rank takes whole inputs (a folder of tiles).
    scenes = [path for path in files if kinds[path] == "scene"]
    shared = 0 < len(scenes) < process.world_size
    mine = shard([p for p in files if not (shared and kinds[p] == "scene")], process)
    mine += scenes if shared else []
    segmenter = Segmenter.from_checkpoint(
        settings.checkpoint,
        dataclasses.replace(settings.runtime, device=str(process.device)),  # a rank's own GPU
        settings.inference,
        progress=lambda done, total: tell({"kind": "download", "done": done, "total": total}),
        amortized=len(mine) >= AMORTIZED_AFTER,
    )
    path = {"precision": segmenter.precision, "backend": segmenter.backend}
    tell({"kind": "path", **path, "reason": segmenter.path_reason})  # what runs, and why
    limit = segmenter.pixel_limit(settings.memory_budget_mb)
    bands = segmenter.checkpoint.config.in_channels
    for path in mine:  # a raster too large for the image path is streamed, not skipped;
        # for a model of other than RGB, every raster is a scene
        if kinds[path] == "image" and is_scene(path, limit, any_raster=bands != 3):
            kinds[path] = "scene"
    images = [path for path in mine if kinds[path] == "image"]
    writer = _annotation_writer(segmenter, settings, process)
    annotate = None
    if writer is not None:
        annotate = partial(_annotate, writer, names)
    counts, results = _images(
        segmenter, images, names, settings, limit=limit, tell=tell, annotate=annotate
    )
    if writer is not None:
        _finish_annotations(writer, settings, process, tell)
    if settings.labelling.summary is not None:
        results = gather_lists(results, process)
        if process.is_main:
            write_summary(settings.labelling.summary, results, segmenter.class_names)
    for path in (path for path in mine if kinds[path] == "scene"):
        scene_counts = _scene(
            segmenter,
            path,
            names[path],
            settings,
            limit=limit,
            tell=tell,
            process=process if shared else None,
        )
        counts = _add(counts, scene_counts)
    sources = [(path, names[path]) for path in mine if kinds[path] == "video"]
    if settings.source is not None:
        source = parse_source(settings.source)
        sources = [(source, source_name(source))]
    for source, name in sources:
        counts = _add(counts, _video(segmenter, source, name, settings, limit, tell))
    written, done_before, failures = sum_over_ranks(counts, process)
    return PredictSummary(written, done_before, failures, process.world_size)


def _annotation_writer(segmenter, settings: PredictSettings, process):
    """The labelling tool's writer asked for (a part per rank under torchrun), or None."""
    labelling = settings.labelling
    if labelling.annotations is None:
        return None
    from pspnet.annotations import annotation_writer

    return annotation_writer(
        labelling.annotations,
        Path(settings.out),
        segmenter.class_names,
        segmenter.palette,
        shapes=labelling.shapes,
        tolerance=labelling.polygon_tolerance,
        rank=process.rank if process.world_size > 1 else None,
    )


def _annotate(writer, names: dict[Path, Path], path: Path, result) -> None:
    from pspnet.annotations import Prediction

    name = names[path].with_suffix(path.suffix).as_posix()
    labels = result.labels.astype("uint8", copy=False)
    writer.add(Prediction(path, name, labels, result.confidence))


def _finish_annotations(writer, settings: PredictSettings, process, tell) -> None:
    """The annotation file in place: rank 0 merges the ranks' parts under torchrun."""
    from pspnet.annotations import merge_parts, part_path

    written = writer.finish()
    if process.world_size > 1:
        sum_over_ranks([0], process)  # every part is written
        fmt, out = settings.labelling.annotations, Path(settings.out)
        if process.is_main:
            parts = [part_path(fmt, out, rank) for rank in range(process.world_size)]
            written = merge_parts(fmt, out, parts)
        sum_over_ranks([0], process)
    if process.is_main:
        tell({"kind": "annotations", "paths": [str(p) for p in written]})


def _images(segmenter, images, names, settings: PredictSettings, *, limit, tell, annotate=None):
    """Every image through :func:`predict_images`: [written, done before, unreadable] and
    the results (kept for the summary only when one is asked for)."""
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
        annotate=annotate,
    )
    kept = []
    for result in results:
        counts[_outcome(result)] += 1
        tell({"kind": "image", "result": result, "name": names[result.path]})
        if settings.labelling.summary is not None:
            kept.append(result)
    return counts, kept


def _add(counts: list[int], more: list[int]) -> list[int]:
    return [a + b for a, b in zip(counts, more, strict=True)]


def _scene(segmenter, path: Path, name: Path, settings, *, limit, process, tell) -> list[int]:
    """One raster scene through :func:`predict_scene`; [written, done before, unreadable].
    With ``process`` every rank takes a strip of it and rank 0 counts it; else this rank
    segments it whole."""
    from pspnet.predict.scenes import predict_scene

    tell({"kind": "scene", "name": str(name)})
    try:
        result = predict_scene(
            segmenter,
            path,
            Path(settings.out),
            name,
            settings,
            pixel_limit=limit,
            process=process,
            progress=lambda done, total: tell({"kind": "window", "done": done, "total": total}),
        )
    except DatasetError as err:
        tell({"kind": "skipped", "error": str(err)})
        return [0, 0, int(process is None or process.is_main)]
    tell({"kind": "scene_done", "result": result})
    counted = [0, 1, 0] if result.done_before else [1, 0, 0]
    return counted if process is None or process.is_main else [0, 0, 0]


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
