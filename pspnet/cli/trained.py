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

    process = setup_process(args.device)  # under torchrun: this rank's shard of the inputs
    files = expand_inputs(args.inputs)
    names = output_names(files)  # over every input, so ranks agree and collisions fail first
    mine = shard(files, process)
    segmenter = _segmenter(args, str(process.device), len(mine) >= AMORTIZED_AFTER)
    limit = segmenter.pixel_limit(args.memory_budget_mb)
    written = done_before = failures = 0
    talk = process.world_size == 1
    with tqdm(total=len(mine), unit="image", desc="predicting", disable=not process.is_main) as bar:
        results = predict_files(segmenter, mine, args.out, args.save_probs, args.redo,
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
    written, done_before, failures = sum_over_ranks([written, done_before, failures], process)
    say(
        f"wrote {written} prediction(s) to {args.out}"
        + (f" ({process.world_size} processes)" if process.world_size > 1 else "")
        + (f"; {done_before} already there (--redo to redo)" if done_before else "")
        + (f"; {failures} input(s) could not be read" if failures else "")
    )
    return 1 if failures else 0


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
        from pspnet.serve import ServeSettings, serve
    except ImportError as err:
        raise ConfigError(
            f"pspnet serve needs the serve extra ({err.name} is missing): "
            "pip install 'pspnet[serve]'"
        ) from err
    from pspnet.errors import CheckpointError
    from pspnet.weights import find
    from pspnet.weights.download import is_url

    local = not (is_url(args.checkpoint) or find(args.checkpoint))  # names load in the background
    if local and not Path(args.checkpoint).is_file():  # a typo fails now, not at /readyz
        raise CheckpointError(f"{args.checkpoint}: no such checkpoint file")
    settings = ServeSettings(
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        timeout=args.timeout,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"

    def ready(segmenter) -> None:
        say(
            f"pspnet serve: ready, {segmenter.num_classes} classes; the page is at {url}, "
            f"the API at {url}v1/segment (Ctrl+C stops)"
        )

    say(f"pspnet serve: loading {args.checkpoint} (health at {url}healthz)")
    serve(lambda: _segmenter(args, amortized=True), settings, args.host, args.port, ready)
    return 0
