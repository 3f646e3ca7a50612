"""The subcommands that run a trained model: eval, predict, export and serve.

Each parses nothing, calls the library and does the talking; only rank 0 talks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pspnet.cli.arguments import dataset_preset, inference_options
from pspnet.cli.output import ProgressBar, download_bar, is_main_rank, say
from pspnet.errors import ConfigError

# --- eval -------------------------------------------------------------------------------------


def _segmenter(args: argparse.Namespace, device: str | None = None, amortized: bool = False):
    """The checkpoint as a Segmenter with the command line's inference and fast-path options.

    ``device`` overrides ``--device`` (a torchrun rank's own CUDA device); ``amortized``: the
    work repays a compile warm-up (see :data:`pspnet.inference.optimized.optimize.AMORTIZED_AFTER`).
    """
    from pspnet.data.images import expand_inputs
    from pspnet.inference import Segmenter

    calibration = None
    if args.precision == "int8":
        if not args.calibration:
            raise ConfigError(
                "--precision int8 needs --calibration IMAGES: a few hundred training images "
                "that set the activation ranges"
            )
        files = expand_inputs(args.calibration)
        step = max(1, len(files) // max(1, args.calibration_count))
        calibration = files[::step][: args.calibration_count]
        say(f"calibrating int8 on {len(calibration)} image(s)")
    elif args.calibration:
        raise ConfigError("--calibration is only used with --precision int8")
    download = download_bar()
    segmenter = Segmenter.from_checkpoint(
        args.checkpoint,
        device or args.device,
        args.precision,
        args.backend,
        calibration=calibration,
        progress=download.update_to,
        amortized=amortized,
        **inference_options(args),
    )
    download.close()
    return segmenter


def cmd_eval(args: argparse.Namespace) -> int:
    from pspnet.engine.distributed import setup_process
    from pspnet.engine.evaluate import score_predictions
    from pspnet.files import make_folder
    from pspnet.visualize import confusion_heatmap

    bar = ProgressBar(desc="evaluating", unit="image")
    progress = bar.update_to
    if args.pred_dir is not None:
        if args.gt_dir is None:
            raise ConfigError("--pred-dir needs --gt-dir (the ground-truth label folder)")
        preset = dataset_preset(args, args.dataset or "camvid")
        matrix = score_predictions(args.pred_dir, args.gt_dir, preset, progress)
        source, metadata = f"predictions in {args.pred_dir}", {}
    else:
        if args.checkpoint is None or args.root is None:
            raise ConfigError("give --checkpoint and --root, or --pred-dir and --gt-dir")
        process = setup_process(args.device)  # under torchrun: ranks score disjoint shards
        segmenter = _segmenter(args, str(process.device))
        metadata = segmenter.checkpoint.metadata
        dataset = args.dataset or _preset_name(metadata.get("dataset")) or "camvid"
        preset = dataset_preset(args, dataset, args.root)
        matrix, source = _evaluate_checkpoint(args, segmenter, preset, process, progress)
    bar.close()
    metrics = matrix.compute(absent=args.absent)
    report = metrics.to_markdown(list(preset.class_names))
    say(f"{source}, {preset.name} {args.split}:\n{report}")
    if "published_miou" in metadata:
        say(published_line(metadata, metrics.miou))
    if args.out is not None and is_main_rank():
        make_folder(args.out)
        (args.out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2))
        (args.out / "metrics.md").write_text(f"# {source}, {preset.name} {args.split}\n\n{report}")
        metrics.save_csv(args.out / "confusion.csv", list(preset.class_names))
        confusion_heatmap(metrics.matrix, preset.class_names).save(args.out / "confusion.png")
        say(f"wrote metrics.json, metrics.md, confusion.csv and confusion.png to {args.out}")
    return 0


def _preset_name(dataset: str | None) -> str | None:
    """The dataset a checkpoint names, if it is one of our presets."""
    from pspnet.data.presets import PRESETS

    return dataset if dataset in PRESETS else None


def _evaluate_checkpoint(args, segmenter, preset, process, progress):
    from pspnet.data.datasets import SegmentationDataset
    from pspnet.engine.evaluate import evaluate

    if segmenter.num_classes != preset.num_classes:
        raise ConfigError(
            f"{args.checkpoint}: the model predicts {segmenter.num_classes} classes but the "
            f"{preset.name!r} dataset has {preset.num_classes}; pick the matching --dataset"
        )
    dataset = SegmentationDataset(args.root, args.split, preset)
    matrix = evaluate(
        segmenter.network,
        dataset,
        segmenter.inference,
        limit=args.limit,
        progress=progress,
        rank=process.rank,
        world_size=process.world_size,
        unknown_below=args.unknown_below,
    )
    inference = segmenter.inference
    scales = ",".join(f"{s:g}" for s in inference.scales)
    source = (
        f"{args.checkpoint} ({inference.mode}, crop {inference.crop_size[0]}x"
        f"{inference.crop_size[1]}, scales {scales}, flip {'on' if inference.flip else 'off'})"
    )
    return matrix, source


def published_line(metadata: dict, miou: float) -> str:
    """The publisher's mIoU beside the one measured here."""
    line = f"published mIoU of {metadata['published_name']}: {metadata['published_miou']}"
    if "published_miou_ms_flip" in metadata:
        line += f" single-scale, {metadata['published_miou_ms_flip']} multi-scale + flip"
    return line + f"; measured here: {100 * miou:.2f}"


# --- predict ----------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.data.images import expand_inputs
    from pspnet.engine.distributed import setup_process, shard, sum_over_ranks
    from pspnet.inference.optimized.optimize import AMORTIZED_AFTER
    from pspnet.predict import output_names, predict_files
    from pspnet.video.sources import is_video, quiet_backend_logs

    if bool(args.inputs) == (args.source is not None):
        raise ConfigError("give INPUT files, folders or globs, or --source SRC, not both")
    quiet_backend_logs()  # OpenCV's and FFmpeg's warnings: our errors say one line instead
    process = setup_process(args.device)  # under torchrun: this rank's shard of the inputs
    if args.source is not None and process.world_size > 1:
        raise ConfigError("--source is read by one process; run it without torchrun")
    files = expand_inputs(args.inputs, videos=True)
    names = output_names(files)  # over every input, so ranks agree and collisions fail first
    videos = {path for path in files if is_video(path)}
    _check_video_options(args, bool(videos) or args.source is not None, len(videos) < len(files))
    mine = shard(files, process)
    segmenter = _segmenter(args, str(process.device), len(mine) >= AMORTIZED_AFTER)
    limit = segmenter.pixel_limit(args.memory_budget_mb)
    written = done_before = failures = 0
    talk = process.world_size == 1
    images = [path for path in mine if path not in videos]
    with tqdm(total=len(images), unit="image", desc="predicting",
              disable=not process.is_main or not images) as bar:  # fmt: skip
        results = predict_files(segmenter, images, args.out, args.save_probs, args.redo,
                                args.confidence, args.unknown_below, names, limit)  # fmt: skip
        for result in results:
            bar.update(1)
            if result.error is not None:
                failures += 1
                tqdm.write(f"skipped {result.error}", file=sys.stderr)
            elif result.done_before:
                done_before += 1
            else:
                written += 1
                if talk:
                    tqdm.write(f"{names[result.path]}: {result.shares}")
    sources = [(path, names[path]) for path in mine if path in videos]
    if args.source is not None:
        from pspnet.video.sources import parse_source, source_name

        source = parse_source(args.source)
        sources = [(source, source_name(source))]
    videos_written, videos_before, unreadable = _predict_videos(
        args, segmenter, sources, limit, process.is_main
    )
    counts = [written + videos_written, done_before + videos_before, failures + unreadable]
    written, done_before, failures = sum_over_ranks(counts, process)
    say(
        f"wrote {written} prediction(s) to {args.out}"
        + (f" ({process.world_size} processes)" if process.world_size > 1 else "")
        + (f"; {done_before} already there (--redo to redo)" if done_before else "")
        + (f"; {failures} input(s) could not be read" if failures else "")
    )
    return 1 if failures else 0


def _check_video_options(args: argparse.Namespace, videos: bool, images: bool) -> None:
    """Refuse options that apply to no input: a mistyped command fails before any work."""
    video_only = {
        "--save-labels": args.save_labels,
        "--every": args.every != 1,
        "--start": args.start != 0,
        "--duration": args.duration is not None,
        "--max-frames": args.max_frames is not None,
        "--smooth": args.smooth is not None,
    }
    image_only = {"--save-probs": args.save_probs, "--confidence": args.confidence}
    for options, given, kind in ((video_only, videos, "videos"), (image_only, images, "images")):
        used = [flag for flag, on in options.items() if on]
        if used and not given:
            raise ConfigError(f"{', '.join(used)}: only for {kind}, and no input is one")


def _predict_videos(args, segmenter, sources, limit: int, main: bool) -> tuple[int, int, int]:
    """Each video file (or the live source) through ``predict_video``, a bar of frames each;
    (written, done before, unreadable). An unreadable file is skipped like an image; a live
    source's errors end the command."""
    from tqdm import tqdm

    from pspnet.errors import DatasetError
    from pspnet.video.predict import predict_video
    from pspnet.video.sources import VideoSource

    written = done_before = failures = 0
    for source, name in sources:
        bar = ProgressBar(desc=str(name), unit="frame")  # frames per second, a file's time left
        try:
            with VideoSource(source, args.every, args.start, args.duration, args.max_frames,
                             args.stall_timeout) as video:  # fmt: skip
                result = predict_video(segmenter, video, args.out, name, args.save_labels,
                                       args.smooth, args.unknown_below, args.redo, limit,
                                       bar.update_to)  # fmt: skip
        except DatasetError as err:
            if isinstance(source, int | str):  # a camera or stream: the command's only input
                raise
            failures += 1
            tqdm.write(f"skipped {err}", file=sys.stderr)
            continue
        finally:
            bar.close()
        done_before += result.done_before
        written += result.overlay is not None and not result.done_before
        if main and not result.done_before:
            tqdm.write(_video_line(result, args.stall_timeout))
    return written, done_before, failures


def _video_line(result, stall_timeout: float) -> str:
    """What a video gave: ``clip.mp4: 120 frames -> out/clip_overlay.mp4 (mp4v, 30 fps, ...)``."""
    why = {"end": "", "duration": " (--duration)", "max_frames": " (--max-frames)",
           "interrupted": " (stopped by Ctrl+C)",
           "stalled": f" (stalled: no frame for {stall_timeout:g} s)"}[result.stopped]  # fmt: skip
    if result.overlay is None:
        return f"{result.source}: no frame kept{why}; nothing written"
    height, width = result.size
    line = (
        f"{result.source}: {result.frames} frames{why} -> {result.overlay} "
        f"({result.codec}, {result.fps:g} fps, {width}x{height})"
    )
    return line + (f", labels in {result.labels}/" if result.labels is not None else "")


# --- export -----------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from pspnet.checkpoints import load_checkpoint
    from pspnet.export.onnx import export_onnx
    from pspnet.inference.optimized.optimize import exact_rewrite

    download = download_bar()
    checkpoint = load_checkpoint(args.checkpoint, progress=download.update_to)
    download.close()
    model = checkpoint.model
    exported = exact_rewrite(model, exportable=True) if args.optimize else model
    export_onnx(exported, args.out, example_size=(args.size, args.size),
                metadata=checkpoint.metadata)  # fmt: skip
    say(
        f"wrote {args.out}: input images (N, 3, H, W) of any size, output logits "
        f"(N, {model.config.num_classes}, H, W)"
    )
    return 0


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from pspnet.serve import API_KEY_VARIABLE, ServeSettings, is_loopback, serve
    except ImportError as err:
        raise ConfigError(
            f"pspnet serve needs the serve extra ({err.name} is missing): "
            "pip install 'pspnet[serve]'"
        ) from err
    import logging
    import os

    from pspnet.data.images import max_pixels
    from pspnet.errors import CheckpointError
    from pspnet.weights import find
    from pspnet.weights.download import is_url

    local = not (is_url(args.checkpoint) or find(args.checkpoint))  # names load in the background
    if local and not Path(args.checkpoint).is_file():  # a typo fails now, not at /readyz
        raise CheckpointError(f"{args.checkpoint}: no such checkpoint file")
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    settings = ServeSettings(
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        memory_budget_bytes=int(args.memory_budget_mb * 2**20),
        timeout=args.timeout,
        upload_timeout=args.upload_timeout,
        max_uploads=args.max_uploads,
        max_connections=args.max_connections,
        allowed_hosts=tuple(args.allowed_hosts),
        api_key=api_key,
    )
    if not is_loopback(args.host) and api_key is None:
        print(
            f"pspnet serve: warning: {args.host} is reachable from other machines and no "
            "--api-key is set: anyone who reaches it can use it (see the README's proxy setup)",
            file=sys.stderr,
        )
    if args.backend == "compile":
        print(
            "pspnet serve: warning: --backend compile recompiles for every new image size, on "
            "the request path",
            file=sys.stderr,
        )
    handler = logging.StreamHandler()  # the service's log: load errors, unexpected failures
    handler.setFormatter(logging.Formatter("pspnet serve: %(levelname)s: %(message)s"))
    logging.getLogger("pspnet.serve").addHandler(handler)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"

    def ready(segmenter, pixels: int) -> None:
        say(
            f"pspnet serve: ready, {segmenter.num_classes} classes, images up to {pixels:,} "
            f"pixels; the page is at {url}, the API at {url}v1/segment (Ctrl+C stops)"
        )
        if args.max_pixels is not None and args.max_pixels > pixels:
            say(f"pspnet serve: --max-pixels is over the decoders' limit of {max_pixels():,}")

    say(f"pspnet serve: loading {args.checkpoint} (health at {url}healthz)")
    serve(lambda: _segmenter(args), settings, args.host, args.port, ready)
    return 0
