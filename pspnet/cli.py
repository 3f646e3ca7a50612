"""The ``pspnet`` command: each subcommand parses its arguments and calls one library function.

Only this module prints, and under torchrun only rank 0 does.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from pspnet.config import InferenceConfig
from pspnet.engine.metrics import AbsentPolicy
from pspnet.errors import ConfigError, PSPNetError
from pspnet.models.resnet import BackboneName, OutputStride, Stem
from pspnet.optimized.optimize import Backend, Precision


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

    model = load_model(args.src)
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


def _inference_options(args: argparse.Namespace) -> dict:
    """The InferenceConfig fields given on the command line (others keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(InferenceConfig)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}


def _segmenter(args: argparse.Namespace):
    """The checkpoint as a Segmenter with the command line's inference and fast-path options."""
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
    return Segmenter.from_checkpoint(
        args.checkpoint,
        args.device,
        args.precision,
        args.backend,
        calibration=calibration,
        **_inference_options(args),
    )


def cmd_eval(args: argparse.Namespace) -> int:

    from pspnet.data.presets import get_preset
    from pspnet.engine.evaluate import evaluate, score_predictions
    from pspnet.files import make_folder
    from pspnet.visualize import confusion_heatmap

    preset = get_preset(args.dataset, args.num_classes, args.names_file)
    bar = ProgressBar(desc="evaluating", unit="image")
    progress = bar.update_to
    if args.pred_dir is not None:
        if args.gt_dir is None:
            raise ConfigError("--pred-dir needs --gt-dir (the ground-truth label folder)")
        matrix = score_predictions(args.pred_dir, args.gt_dir, preset, progress)
        source = f"predictions in {args.pred_dir}"
    else:
        if args.checkpoint is None or args.root is None:
            raise ConfigError("give --checkpoint and --root, or --pred-dir and --gt-dir")
        matrix, source = _evaluate_checkpoint(args, preset, evaluate, progress)
    bar.close()
    metrics = matrix.compute(absent=args.absent)
    report = metrics.to_markdown(list(preset.class_names))
    _say(f"{source}, {preset.name} {args.split}:\n{report}")
    if args.out is not None and _is_main_rank():
        make_folder(args.out)
        (args.out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2))
        (args.out / "metrics.md").write_text(f"# {source}, {preset.name} {args.split}\n\n{report}")
        metrics.save_csv(args.out / "confusion.csv", list(preset.class_names))
        confusion_heatmap(metrics.matrix, preset.class_names).save(args.out / "confusion.png")
        _say(f"wrote metrics.json, metrics.md, confusion.csv and confusion.png to {args.out}")
    return 0


def _evaluate_checkpoint(args, preset, evaluate, progress):
    from pspnet.data.datasets import SegmentationDataset

    segmenter = _segmenter(args)
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
    )
    inference = segmenter.inference
    scales = ",".join(f"{s:g}" for s in inference.scales)
    source = (
        f"{args.checkpoint} ({inference.mode}, crop {inference.crop_size[0]}x"
        f"{inference.crop_size[1]}, scales {scales}, flip {'on' if inference.flip else 'off'})"
    )
    return matrix, source


# --- predict ----------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pspnet.data.images import expand_inputs
    from pspnet.predict import predict_files

    files = expand_inputs(args.inputs)
    segmenter = _segmenter(args)
    failures = 0
    with tqdm(total=len(files), unit="image", desc="predicting") as bar:
        for result in predict_files(segmenter, files, args.out, save_probs=args.save_probs):
            bar.update(1)
            if result.error is not None:
                failures += 1
                tqdm.write(f"skipped {result.error}")
            else:
                tqdm.write(f"{result.path.name}: {result.shares}")
    _say(
        f"wrote {len(files) - failures} prediction(s) to {args.out}"
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

    model = load_model(args.checkpoint)
    exported = exact_rewrite(model, exportable=True) if args.optimize else model
    export_onnx(exported, args.out, example_size=(args.size, args.size))
    _say(
        f"wrote {args.out}: input images (N, 3, H, W) of any size, output logits "
        f"(N, {model.config.num_classes}, H, W)"
    )
    return 0


# --- argument types -------------------------------------------------------------------------


def _number(kind: Callable[[str], float], test: Callable[[float], bool], accepted: str):
    """An argparse type: ``kind(text)`` that passes ``test``, else a message naming the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    parse.__name__ = accepted  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
unit_fraction = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def device_name(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N)."""
    from pspnet.engine.devices import resolve_device

    try:
        resolve_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def choices(literal: object) -> list:
    """The values of a ``Literal[...]`` type, so the CLI offers exactly what the library takes."""
    return list(typing.get_args(literal))


def field_docs(cls: type) -> dict[str, str]:
    """Each field's text from a dataclass's Google-style ``Attributes:`` section."""
    docs: dict[str, str] = {}
    section = inspect.cleandoc(cls.__doc__ or "").partition("Attributes:")[2]
    name = None
    for line in section.splitlines():
        match = re.match(r"\s{4}(\w+): (.*)", line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            name, docs[match.group(1)] = match.group(1), match.group(2).strip()
        elif name and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        elif line.strip():
            name = None
    return docs


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspnet", description="PSPNet, the Pyramid Scene Parsing Network (Zhao et al., 2017)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="parameters and FLOPs per part of the network")
    info.add_argument("--backbone", default="resnet50", choices=choices(BackboneName))
    info.add_argument("--num-classes", type=positive_int, default=150)
    info.add_argument("--size", type=positive_int, default=473, help="square input size")
    info.add_argument("--stem", default="deep", choices=choices(Stem))
    info.add_argument("--output-stride", type=int, default=8, choices=choices(OutputStride))
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
    train.add_argument(
        "--out", type=Path, required=True, help="run folder; a run it holds (last.pt) resumes"
    )
    train.add_argument("--no-resume", action="store_true", help="start over, ignoring last.pt")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser(
        "eval", help="mIoU, mean class accuracy and pixel accuracy of a checkpoint or of saved PNGs"
    )
    evaluate.add_argument("--checkpoint", type=Path, help="model to evaluate")
    evaluate.add_argument("--root", type=Path, help="dataset root")
    evaluate.add_argument("--split", default="val")
    _add_dataset_options(evaluate)
    evaluate.add_argument("--pred-dir", type=Path, help="score saved prediction PNGs instead")
    evaluate.add_argument("--gt-dir", type=Path, help="ground-truth labels for --pred-dir")
    evaluate.add_argument(
        "--absent",
        default="exclude",
        choices=choices(AbsentPolicy),
        help="classes absent from ground truth and prediction: left out of the means "
        "(default) or counted as 0 like the official code",
    )
    evaluate.add_argument(
        "--limit", type=non_negative_int, default=0, help="evaluate the first N images only"
    )
    evaluate.add_argument("--out", type=Path, help="write metrics.json/.md, confusion.csv/.png")
    _add_inference_options(evaluate)
    evaluate.set_defaults(run=cmd_eval)

    predict = commands.add_parser(
        "predict", help="label, colour and overlay PNGs for images, folders or globs"
    )
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    predict.add_argument("--checkpoint", type=Path, required=True)
    predict.add_argument("--out", type=Path, required=True)
    predict.add_argument("--save-probs", action="store_true", help="also NAME_probs.npy (C,H,W)")
    _add_inference_options(predict)
    predict.set_defaults(run=cmd_predict)

    export = commands.add_parser("export", help="ONNX with dynamic batch, height and width")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("out", type=Path, help="e.g. model.onnx")
    export.add_argument("--size", type=positive_int, default=473, help="example size traced")
    export.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="export the plain graph (default: BN folded, factorised head)",
    )
    export.set_defaults(run=cmd_export)

    demo = commands.add_parser(
        "demo", help="train PSPNet and its FCN baseline on built-in synthetic scenes (no download)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--iterations", type=positive_int, default=600, help="per network")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.set_defaults(run=cmd_demo)
    return parser


# Flags whose name is shorter than their InferenceConfig field's, and their value names.
_INFERENCE_FLAGS = {"crop_size": ("--crop", ("H", "W"))}
_INFERENCE_TYPES = {"stride_rate": unit_fraction, "scales": positive_float}


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    """One option per InferenceConfig field; help from its docstring, choices from its type."""
    docs, hints = field_docs(InferenceConfig), typing.get_type_hints(InferenceConfig)
    for field in dataclasses.fields(InferenceConfig):
        flag, metavar = _INFERENCE_FLAGS.get(
            field.name, ("--" + field.name.replace("_", "-"), None)
        )
        options: dict = {
            "dest": field.name,
            "help": f"{docs[field.name]} (default: as "
            "validated in training, else %s)" % _default_text(field),
        }
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Literal:
            options["choices"] = list(args)
        elif hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            item = args[0] if args else hint
            options["type"] = _INFERENCE_TYPES.get(
                field.name, positive_int if item is int else positive_float
            )
            if typing.get_origin(hint) is tuple:
                options["nargs"] = "+" if Ellipsis in args else len(args)
            options["metavar"] = metavar
        parser.add_argument(flag, default=None, **options)
    parser.add_argument(
        "--device", default="cpu", type=device_name, help="cpu, cuda or cuda:N (default cpu)"
    )
    parser.add_argument(
        "--precision",
        choices=choices(Precision),
        help="CPU fast path (BN folding, factorised head): fp32 is exact; bf16 only where the "
        "CPU has it natively; default: the plain eager model",
    )
    parser.add_argument(
        "--backend",
        choices=choices(Backend),
        help="runtime of the fast path: auto picks the fastest measured on this kind of CPU",
    )
    parser.add_argument(
        "--calibration",
        nargs="+",
        metavar="IMAGES",
        help="with --precision int8: training images (files, folders or globs) that set the "
        "activation ranges",
    )
    parser.add_argument(
        "--calibration-count",
        type=positive_int,
        default=200,
        help="at most this many --calibration images, spread evenly (default 200)",
    )


def _default_text(field: dataclasses.Field) -> str:
    value = field.default
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default="camvid", help="preset: ade20k, voc, cityscapes, camvid or custom"
    )
    parser.add_argument("--num-classes", type=positive_int, help="class count of a custom dataset")
    parser.add_argument("--names-file", type=Path, help="class names of a custom dataset")


def _last_line(message: str) -> str:
    """The error itself: a DataLoader worker wraps it in a traceback users need not read."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("pspnet.errors.") else last


def _file_error(err: OSError) -> str:
    """An operating-system error as ``PATH: reason``, the way a user reads it."""
    reason = err.strerror or str(err)
    return f"{err.filename}: {reason}" if err.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pspnet`` command line; returns the exit status.

    Every error the library raises on purpose (:class:`PSPNetError`), and every file the
    system refuses to read or write, is one line ``pspnet CMD: error: ...`` with status 2,
    like argparse's own usage errors.
    """
    args = build_parser().parse_args(argv)
    show_warning = warnings.showwarning
    warnings.showwarning = lambda message, *_, **__: print(
        f"pspnet {args.command}: warning: {message}", file=sys.stderr
    )
    try:
        return args.run(args)
    except PSPNetError as err:
        print(f"pspnet {args.command}: error: {_last_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"pspnet {args.command}: error: {_file_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning


if __name__ == "__main__":
    sys.exit(main())
