"""The ``pspnet`` command: each subcommand parses its arguments and calls one library function.

Only this module prints, and under torchrun only rank 0 does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pspnet.errors import PSPNetError


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _say(*parts: object) -> None:
    if _is_main_rank():
        print(*parts)


# --- info -------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from pspnet.engine.summary import summarize
    from pspnet.models.pspnet import ModelConfig

    config = ModelConfig(
        args.num_classes, args.backbone, args.stem, args.output_stride, use_ppm=not args.no_ppm
    )
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
    from pspnet.checkpoints import load_model

    model = load_model(args.src)
    model.save(args.dst, {k: str(v) for k, v in getattr(model, "metadata", {}).items()})
    config = model.config
    _say(
        f"wrote {args.dst}: {config.backbone}, {config.num_classes} classes, "
        f"stem {config.stem}, align_corners {config.align_corners}"
    )
    return 0


# --- data check -------------------------------------------------------------------------------


def cmd_data_check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.data.datasets import check_dataset
    from pspnet.data.presets import get_preset

    preset = get_preset(args.dataset, args.num_classes, args.names_file)
    with tqdm(desc=f"checking {args.split}", unit="pair", disable=not _is_main_rank()) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = check_dataset(args.root, preset, args.split, args.list_file, progress)
    _say(report.to_text(preset.class_names))
    return 1 if report.problems else 0


# --- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.config import load_train_config
    from pspnet.engine.train import train

    config = load_train_config(args.config, args.set)
    main = _is_main_rank()
    bar = tqdm(total=config.iterations, unit="it", disable=not main, dynamic_ncols=True)
    val_bar = None

    def on_event(event: dict) -> None:
        nonlocal val_bar
        kind = event["kind"]
        if kind == "start":
            bar.n = event["iteration"]
            bar.refresh()
            if event["iteration"] and main:
                tqdm.write(f"resuming {args.out} at iteration {event['iteration']}")
        elif kind == "step":
            bar.update(event["iteration"] - bar.n)
            info = {"loss": f"{event['loss']:.3f}", "lr": f"{event['lr']:.2e}"}
            if "images_per_s" in event:
                info["img/s"] = f"{event['images_per_s']:.1f}"
            bar.set_postfix(info, refresh=False)
        elif kind == "val_progress":
            if val_bar is None:
                val_bar = tqdm(
                    total=event["total"], desc="validating", leave=False, disable=not main
                )
            val_bar.update(event["done"] - val_bar.n)
        elif kind == "val":
            if val_bar is not None:
                val_bar.close()
                val_bar = None
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


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspnet", description="PSPNet, the Pyramid Scene Parsing Network (Zhao et al., 2017)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="parameters and FLOPs per part of the network")
    info.add_argument(
        "--backbone",
        default="resnet50",
        choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
    )
    info.add_argument("--num-classes", type=int, default=150)
    info.add_argument("--size", type=int, default=473, help="square input size")
    info.add_argument("--stem", default="deep", choices=["deep", "torchvision", "deep_narrow"])
    info.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32])
    info.add_argument("--no-ppm", action="store_true", help="the FCN baseline")
    info.set_defaults(run=cmd_info)

    convert = commands.add_parser(
        "convert",
        help="write any supported checkpoint (semseg, mmseg, pspnet) as native safetensors",
    )
    convert.add_argument("src", type=Path)
    convert.add_argument("dst", type=Path)
    convert.set_defaults(run=cmd_convert)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser("check", help="check every image/label pair of a split")
    check.add_argument("root", type=Path)
    _add_dataset_options(check)
    check.add_argument("--split", default="train")
    check.add_argument("--list-file", type=Path, help="an `image label` list instead of SPLIT.txt")
    check.set_defaults(run=cmd_data_check)

    train = commands.add_parser("train", help="train with the paper's recipe (resumable)")
    train.add_argument("--config", type=Path, help="YAML config (configs/*.yaml)")
    train.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. optim.lr=0.02 data.crop_size=[321,321]",
    )
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (the default when it holds last.pt)",
    )
    train.add_argument("--no-resume", action="store_true", help="start over, ignoring last.pt")
    train.set_defaults(run=cmd_train)
    return parser


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default="camvid", help="preset: ade20k, voc, cityscapes, camvid or custom"
    )
    parser.add_argument("--num-classes", type=int, help="class count of a custom dataset")
    parser.add_argument("--names-file", type=Path, help="class names of a custom dataset")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pspnet`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PSPNetError as err:
        print(f"pspnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
