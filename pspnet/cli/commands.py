"""The subcommands: each parses nothing, calls one library function and does the talking.

Only the CLI prints, and under torchrun only rank 0 does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pspnet.cli.arguments import inference_options
from pspnet.errors import ConfigError


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _say(*parts: object) -> None:
    if _is_main_rank():
        print(*parts)


class ProgressBar:
    """A tqdm bar that appears at its first update, on rank 0 only.

    A command that fails while it sets up (a missing folder, a bad option) thus prints its
    error on a clean line instead of after an empty bar.
    """

    def __init__(self, **options):
        self.options, self.bar = options, None

    def update_to(self, done: int, total: int | None = None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(disable=not _is_main_rank(), dynamic_ncols=True, **self.options)
        if total is not None:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def set_postfix(self, values: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- info -------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from pspnet.config import build
    from pspnet.engine.summary import summarize
    from pspnet.models.pspnet import ModelConfig

    options = {
        "num_classes": args.num_classes,
        "backbone": args.backbone,
        "stem": args.stem,
        "output_stride": args.output_stride,
        "use_ppm": not args.no_ppm,
    }
    config = build(ModelConfig, options, "pspnet info")
    rows = summarize(config, args.size, args.size)
    _say(f"PSPNet {args.backbone}, {args.num_classes} classes, input {args.size}x{args.size}")
    _say(f"{'part':<18}{'parameters':>14}{'GFLOPs':>10}")
    for row in rows:
        _say(f"{row.name:<18}{row.parameters:>14,}{row.gflops:>10.1f}")
    test_rows = [r for r in rows if r.name != "aux head"]
    _say(
        f"{'total (test)':<18}{sum(r.parameters for r in test_rows):>14,}"
        f"{sum(r.gflops for r in test_rows):>10.1f}"
    )
    _say(
        f"{'total (train)':<18}{sum(r.parameters for r in rows):>14,}"
        f"{sum(r.gflops for r in rows):>10.1f}"
    )
    return 0


# --- convert ----------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from pspnet.checkpoints import load_model, save_model

    download = download_bar()
    model = load_model(args.src, progress=download.update_to)
    download.close()
    save_model(model, args.dst, {k: str(v) for k, v in getattr(model, "metadata", {}).items()})
    config = model.config
    _say(
        f"wrote {args.dst}: {config.backbone}, {config.num_classes} classes, "
        f"stem {config.stem}, align_corners {config.align_corners}"
    )
    return 0


# --- data check -------------------------------------------------------------------------------


def cmd_data_check(args: argparse.Namespace) -> int:
    from pspnet.data.datasets import check_dataset
    from pspnet.data.presets import get_preset

    preset = get_preset(args.dataset, args.num_classes, args.names_file)
    bar = ProgressBar(desc=f"checking {args.split}", unit="pair")
    report = check_dataset(args.root, preset, args.split, args.list_file, bar.update_to)
    bar.close()
    _say(report.to_text(preset.class_names))
    return 1 if report.problems else 0


# --- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.config import load_train_config
    from pspnet.engine.train import train

    config = load_train_config(args.config, args.set)
    main = _is_main_rank()
    bar = ProgressBar(unit="it")
    val_bar = ProgressBar(desc="validating", leave=False)

    def on_event(event: dict) -> None:
        kind = event["kind"]
        if kind == "start":
            bar.update_to(event["iteration"], config.iterations)
            if event["iteration"] and main:
                tqdm.write(f"resuming {args.out} at iteration {event['iteration']}")
        elif kind == "step":
            bar.update_to(event["iteration"])
            info = {"loss": f"{event['loss']:.3f}", "lr": f"{event['lr']:.2e}"}
            if "images_per_s" in event:
                info["img/s"] = f"{event['images_per_s']:.1f}"
            bar.set_postfix(info)
        elif kind == "val_progress":
            val_bar.update_to(event["done"], event["total"])
        elif kind == "val":
            val_bar.close()
            m = event["metrics"]
            if main:
                tqdm.write(
                    f"iteration {event['iteration']}: mIoU {100 * m['miou']:.2f}  "
                    f"mAcc {100 * m['mean_acc']:.2f}  aAcc {100 * m['pixel_acc']:.2f}"
                )

    result = train(config, args.out, resume=not args.no_resume, callback=on_event)
    bar.close()
    _say(
        f"done: {result.iteration} iterations, best mIoU {100 * result.best_miou:.2f}, "
        f"checkpoints in {result.run_dir}"
    )
    return 0


# --- eval -------------------------------------------------------------------------------------


def _segmenter(args: argparse.Namespace, device: str | None = None):
    """The checkpoint as a Segmenter with the command line's inference and fast-path options.

    ``device`` overrides ``--device`` (a torchrun rank's own CUDA device).
    """
    from pspnet.data.images import expand_inputs
    from pspnet.segmenter import Segmenter

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
        _say(f"calibrating int8 on {len(calibration)} image(s)")
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
        **inference_options(args),
    )
    download.close()
    return segmenter


def download_bar() -> ProgressBar:
    """The bar of a checkpoint named by registry name or URL, shown while it downloads."""
    return ProgressBar(desc="downloading", unit="B", unit_scale=True, unit_divisor=1024)


def cmd_eval(args: argparse.Namespace) -> int:

    from pspnet.data.presets import get_preset
    from pspnet.engine.distributed import setup_process
    from pspnet.engine.evaluate import score_predictions
    from pspnet.files import make_folder
    from pspnet.visualize import confusion_heatmap

    bar = ProgressBar(desc="evaluating", unit="image")
    progress = bar.update_to
    if args.pred_dir is not None:
        if args.gt_dir is None:
            raise ConfigError("--pred-dir needs --gt-dir (the ground-truth label folder)")
        preset = get_preset(args.dataset or "camvid", args.num_classes, args.names_file)
        matrix = score_predictions(args.pred_dir, args.gt_dir, preset, progress)
        source, metadata = f"predictions in {args.pred_dir}", {}
    else:
        if args.checkpoint is None or args.root is None:
            raise ConfigError("give --checkpoint and --root, or --pred-dir and --gt-dir")
        process = setup_process(args.device)  # under torchrun: ranks score disjoint shards
        segmenter = _segmenter(args, str(process.device))
        metadata = getattr(segmenter.model, "metadata", {})
        dataset = args.dataset or _preset_name(metadata.get("dataset")) or "camvid"
        preset = get_preset(dataset, args.num_classes, args.names_file)
        matrix, source = _evaluate_checkpoint(args, segmenter, preset, process, progress)
    bar.close()
    metrics = matrix.compute(absent=args.absent)
    report = metrics.to_markdown(list(preset.class_names))
    _say(f"{source}, {preset.name} {args.split}:\n{report}")
    if "published_miou" in metadata:
        _say(published_line(metadata, metrics.miou))
    if args.out is not None and _is_main_rank():
        make_folder(args.out)
        (args.out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2))
        (args.out / "metrics.md").write_text(f"# {source}, {preset.name} {args.split}\n\n{report}")
        metrics.save_csv(args.out / "confusion.csv", list(preset.class_names))
        confusion_heatmap(metrics.matrix, preset.class_names).save(args.out / "confusion.png")
        _say(f"wrote metrics.json, metrics.md, confusion.csv and confusion.png to {args.out}")
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
        segmenter.model,
        dataset,
        preset.num_classes,
        segmenter.inference,
        limit=args.limit,
        progress=progress,
        rank=process.rank,
        world_size=process.world_size,
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
    from pspnet.predict import predict_files

    process = setup_process(args.device)  # under torchrun: this rank's shard of the inputs
    files = expand_inputs(args.inputs)
    mine = shard(files, process)
    segmenter = _segmenter(args, str(process.device))
    written = done_before = failures = 0
    talk = process.world_size == 1
    with tqdm(total=len(mine), unit="image", desc="predicting", disable=not process.is_main) as bar:
        results = predict_files(segmenter, mine, args.out, args.save_probs, redo=args.redo)
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
                    tqdm.write(f"{result.path.name}: {result.shares}")
    written, done_before, failures = sum_over_ranks([written, done_before, failures], process)
    _say(
        f"wrote {written} prediction(s) to {args.out}"
        + (f" ({process.world_size} processes)" if process.world_size > 1 else "")
        + (f"; {done_before} already there (--redo to redo)" if done_before else "")
        + (f"; {failures} input(s) could not be read" if failures else "")
    )
    return 1 if failures else 0


# --- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.demo import DemoSettings, run_demo

    settings = DemoSettings(iterations=args.iterations, seed=args.seed)
    _say(f"pspnet demo: synthetic scenes, FCN vs PSPNet, {settings.iterations} iterations each")
    bars: dict[str, tqdm] = {}

    def on_event(variant: str, event: dict) -> None:
        if event["kind"] == "start":
            bars[variant] = tqdm(total=settings.iterations, desc=f"training {variant}", unit="it")
        elif event["kind"] == "step":
            bars[variant].update(event["iteration"] - bars[variant].n)
            bars[variant].set_postfix(loss=f"{event['loss']:.3f}", refresh=False)
        elif event["kind"] == "end":
            bars[variant].close()

    result = run_demo(args.out, settings, on_event)
    _say(f"\nValidation IoU (%):\n{result.table}\n")
    _say(f"finished in {result.seconds:.0f} s; report: {result.report}, pictures: {result.grid}")
    return 0


# --- export -----------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from pspnet.checkpoints import load_model
    from pspnet.export.onnx import export_onnx
    from pspnet.optimized.optimize import exact_rewrite

    download = download_bar()
    model = load_model(args.checkpoint, progress=download.update_to)
    download.close()
    exported = exact_rewrite(model, exportable=True) if args.optimize else model
    export_onnx(exported, args.out, example_size=(args.size, args.size))
    _say(
        f"wrote {args.out}: input images (N, 3, H, W) of any size, output logits "
        f"(N, {model.config.num_classes}, H, W)"
    )
    return 0


# --- models -----------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from pspnet.weights import cache_dir, registry
    from pspnet.weights.registry import estimated_bytes, is_cached

    entries = [e for e in registry().values() if args.dataset in (None, e.dataset)]
    pspnets = [e for e in entries if e.kind == "pspnet"]
    backbones = [e for e in entries if e.kind == "backbone" and args.dataset is None]
    if not pspnets and not backbones:
        known = sorted({e.dataset for e in registry().values() if e.dataset})
        raise ConfigError(f"--dataset {args.dataset}: no published weights; known: {known}")
    if pspnets:
        _say("| name | dataset | mIoU | ms+flip | size | cached |")
        _say("|:---|:---|---:|---:|---:|:---|")
        for e in pspnets:
            ms = "n/a" if e.miou_ms_flip is None else f"{e.miou_ms_flip:.2f}"
            cached = "unsupported: " + e.unsupported if e.unsupported else _yes(is_cached(e))
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            _say(f"| {e.name} | {e.dataset} | {e.miou:.2f} | {ms} | {size} | {cached} |")
    if backbones:
        _say("\n| ImageNet backbone | depth | stem | top-1 | size | cached |")
        _say("|:---|:---|:---|---:|---:|:---|")
        for e in backbones:
            top1 = "n/a" if e.top1 is None else f"{e.top1:.2f}"
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            model = e.model
            _say(
                f"| {e.name} | {model['backbone']} | {model['stem']} | {top1} | {size} | "
                f"{_yes(is_cached(e))} |"
            )
    _say(f"\nsizes estimated from the parameter count (fp32); cache: {cache_dir()}")
    return 0


def _yes(value: bool) -> str:
    return "yes" if value else "no"


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from pspnet.serve import ServeSettings, serve
    except ImportError as err:
        raise ConfigError(
            f"pspnet serve needs the serve extra ({err.name} is missing): "
            "pip install 'pspnet[serve]'"
        ) from err
    settings = ServeSettings(
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        timeout=args.timeout,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"

    def ready(segmenter) -> None:
        _say(
            f"pspnet serve: ready, {segmenter.num_classes} classes; the page is at {url}, "
            f"the API at {url}v1/segment (Ctrl+C stops)"
        )

    _say(f"pspnet serve: loading {args.checkpoint} (health at {url}healthz)")
    serve(lambda: _segmenter(args), settings, args.host, args.port, ready)
    return 0


# --- reproduce --------------------------------------------------------------------------------


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pspnet.reproduce import reproduce_ablation

    if not args.report_only and args.root is None:
        raise ConfigError("--root is needed to train the grid (or --report-only)")
    bar = ProgressBar(unit="it")

    def progress(event: dict) -> None:
        eta = event["eta_seconds"]
        left = "" if eta is None else f", grid done in ~{eta / 60:.0f} min"
        bar.update_to(event["iteration"], event["iterations"])
        if bar.bar is not None:
            bar.bar.set_description(
                f"run {event['index'] + 1}/{event['total']} {event['run']}{left}", refresh=False
            )
            if event["iteration"] == event["iterations"]:
                bar.close()

    report, chart = reproduce_ablation(
        args.dataset, args.root, args.budget, str(args.out), args.seeds, args.test_split,
        args.report_only, progress,
    )  # fmt: skip
    bar.close()
    _say(f"wrote {report} and {chart}")
    return 0
