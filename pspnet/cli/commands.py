"""The subcommands that build, train and describe models: info, convert, data check and
import, train, demo, models and reproduce. Each parses nothing, calls one library function
and does the talking; only rank 0 talks.
"""

from __future__ import annotations

import argparse

from pspnet.cli.output import ProgressBar, download_bar, is_main_rank, say
from pspnet.errors import ConfigError

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
    say(f"PSPNet {args.backbone}, {args.num_classes} classes, input {args.size}x{args.size}")
    say(f"{'part':<18}{'parameters':>14}{'GFLOPs':>10}")
    for row in rows:
        say(f"{row.name:<18}{row.parameters:>14,}{row.gflops:>10.1f}")
    test_rows = [r for r in rows if r.name != "aux head"]
    say(
        f"{'total (test)':<18}{sum(r.parameters for r in test_rows):>14,}"
        f"{sum(r.gflops for r in test_rows):>10.1f}"
    )
    say(
        f"{'total (train)':<18}{sum(r.parameters for r in rows):>14,}"
        f"{sum(r.gflops for r in rows):>10.1f}"
    )
    return 0


# --- convert ----------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from pspnet.checkpoints import load_checkpoint, save_model

    download = download_bar()
    checkpoint = load_checkpoint(args.src, progress=download.update_to)
    download.close()
    save_model(checkpoint.model, args.dst, checkpoint.metadata)
    config = checkpoint.config
    say(
        f"wrote {args.dst}: {config.backbone}, {config.num_classes} classes, "
        f"stem {config.stem}, align_corners {config.align_corners}"
    )
    return 0


# --- data check -------------------------------------------------------------------------------


def cmd_data_check(args: argparse.Namespace) -> int:
    from pspnet.cli.arguments import dataset_preset
    from pspnet.data.check import check_dataset

    preset = dataset_preset(args, args.dataset, args.root)
    bar = ProgressBar(desc=f"checking {args.split}", unit="pair")
    report = check_dataset(args.root, preset, args.split, args.list_file, bar.update_to)
    bar.close()
    say(report.to_text(preset.class_names))
    return 1 if report.problems else 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from pspnet.data.importers import import_annotations

    bar = ProgressBar(desc=f"importing {args.format}", unit="image")
    report = import_annotations(
        args.format,
        args.source,
        args.out,
        images=args.images,
        val_fraction=args.val_fraction,
        seed=args.seed,
        background=args.background,
        classes_file=args.classes,
        progress=bar.update_to,
    )
    bar.close()
    say(report.to_text())
    say(f"next: pspnet data check {args.out} --dataset custom --split train")
    return 0


# --- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.config import load_train_config
    from pspnet.engine.train import train

    config = load_train_config(args.config, args.set)
    main = is_main_rank()
    bar = ProgressBar(unit="it")
    val_bar = ProgressBar(desc="validating", leave=False)

    download = download_bar()

    check_bar = ProgressBar(desc="checking labels", unit="pair", leave=False)

    def on_event(event: dict) -> None:
        kind = event["kind"]
        if kind == "download":
            download.update_to(event["done"], event["total"])
        elif kind == "check":
            check_bar.update_to(event["done"], event["total"])
        elif kind == "class_weights":
            check_bar.close()
            weights = ", ".join(f"{k} {v:.2f}" for k, v in event["weights"].items())
            say(f"class weights (median frequency): {weights}")
        elif kind == "init":
            download.close()
            say(event["transfer"].to_text())
        elif kind == "start":
            check_bar.close()
            download.close()
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
    say(
        f"done: {result.iteration} iterations, best mIoU {100 * result.best_miou:.2f}, "
        f"checkpoints in {result.run_dir}"
    )
    return 0


# --- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.demo import DemoSettings, run_demo

    settings = DemoSettings(iterations=args.iterations, seed=args.seed)
    say(f"pspnet demo: synthetic scenes, FCN vs PSPNet, {settings.iterations} iterations each")
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
    say(f"\nValidation IoU (%):\n{result.table}\n")
    say(f"finished in {result.seconds:.0f} s; report: {result.report}, pictures: {result.grid}")
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
        say("| name | dataset | mIoU | ms+flip | size | cached |")
        say("|:---|:---|---:|---:|---:|:---|")
        for e in pspnets:
            ms = "n/a" if e.miou_ms_flip is None else f"{e.miou_ms_flip:.2f}"
            cached = "unsupported: " + e.unsupported if e.unsupported else _yes(is_cached(e))
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            say(f"| {e.name} | {e.dataset} | {e.miou:.2f} | {ms} | {size} | {cached} |")
    if backbones:
        say("\n| ImageNet backbone | depth | stem | top-1 | size | cached |")
        say("|:---|:---|:---|---:|---:|:---|")
        for e in backbones:
            top1 = "n/a" if e.top1 is None else f"{e.top1:.2f}"
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            model = e.model
            say(
                f"| {e.name} | {model['backbone']} | {model['stem']} | {top1} | {size} | "
                f"{_yes(is_cached(e))} |"
            )
    say(
        f"\nsizes estimated from the parameter count (fp32); cache: {cache_dir()}; hashes are "
        "the publishers' 8-hex prefixes: they detect corruption, not substitution (the full "
        "SHA-256 is recorded at the first check and enforced after)"
    )
    return 0


def _yes(value: bool) -> str:
    return "yes" if value else "no"


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
        args.report_only, progress, args.shard,
    )  # fmt: skip
    bar.close()
    say(f"wrote {report} and {chart}")
    return 0
