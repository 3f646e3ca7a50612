"""The ``pspnet`` command: each subcommand parses its arguments and calls one library function.

``build_parser`` lays out the subcommands, :mod:`pspnet.cli.arguments` says what each option
accepts, :mod:`pspnet.cli.commands` and :mod:`pspnet.cli.trained` run them,
:mod:`pspnet.cli.output` shows their progress; ``main`` turns every error into one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pspnet.cli.arguments import (
    add_dataset_options,
    add_inference_options,
    choices,
    fraction_below_one,
    non_negative_int,
    port_number,
    positive_float,
    positive_int,
    probability,
    shard_spec,
    unit_fraction,
)
from pspnet.cli.commands import (
    cmd_convert,
    cmd_data_check,
    cmd_data_import,
    cmd_demo,
    cmd_info,
    cmd_models,
    cmd_reproduce,
    cmd_train,
)
from pspnet.cli.trained import cmd_eval, cmd_export, cmd_predict, cmd_serve
from pspnet.data.importers import ImportFormat
from pspnet.engine.metrics import AbsentPolicy
from pspnet.errors import PSPNetError
from pspnet.limits import DEFAULT_MEMORY_BUDGET_MB
from pspnet.models.resnet import BackboneName, OutputStride, Stem


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
    convert.add_argument("src", help="a checkpoint file, a registry name (pspnet models) or a URL")
    convert.add_argument("dst", type=Path)
    convert.set_defaults(run=cmd_convert)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser("check", help="check every image/label pair of a split")
    check.add_argument("root", type=Path)
    add_dataset_options(check)
    check.add_argument("--split", default="train")
    check.add_argument("--list-file", type=Path, help="an `image label` list instead of SPLIT.txt")
    check.set_defaults(run=cmd_data_check)
    imports = data_commands.add_parser(
        "import", help="turn a COCO, LabelMe or CVAT export into a custom dataset"
    )
    imports.add_argument("format", choices=choices(ImportFormat))
    imports.add_argument(
        "source", type=Path,
        help="COCO instances JSON, a LabelMe JSON file or folder, or CVAT's annotations.xml",
    )  # fmt: skip
    imports.add_argument(
        "--out", type=Path, required=True, help="the dataset folder to create (new or empty)"
    )
    imports.add_argument(
        "--images", type=Path, help="the folder holding the images (default: beside SOURCE)"
    )
    imports.add_argument(
        "--val-fraction", type=fraction_below_one, default=0.2,
        help="share of images for the val split (default 0.2)",
    )  # fmt: skip
    imports.add_argument(
        "--seed", type=non_negative_int, default=0, help="the split's shuffle (default 0)"
    )
    imports.add_argument(
        "--background", metavar="NAME",
        help="class of unannotated pixels (default: 255, ignored); added as class 0 if new",
    )  # fmt: skip
    imports.add_argument(
        "--classes", type=Path, metavar="FILE",
        help="a names file ('name [R G B]' per line) fixing the classes' order and colours",
    )  # fmt: skip
    imports.set_defaults(run=cmd_data_import)

    train = commands.add_parser("train", help="train with the paper's recipe (resumable)")
    train.add_argument("--config", type=Path, help="YAML config (configs/*.yaml)")
    train.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. optim.lr=0.02 data.crop_size=[321,321]; "
        "repeat --set or give several (each applies, later ones win for the same key)",
    )
    train.add_argument(
        "--out", type=Path, required=True, help="run folder; a run it holds (last.pt) resumes"
    )
    train.add_argument("--no-resume", action="store_true", help="start over, ignoring last.pt")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser(
        "eval", help="mIoU, mean class accuracy and pixel accuracy of a checkpoint or of saved PNGs"
    )
    evaluate.add_argument(
        "--checkpoint", help="model to evaluate: a file, a registry name (pspnet models) or a URL"
    )
    evaluate.add_argument("--root", type=Path, help="dataset root")
    evaluate.add_argument("--split", default="val")
    add_dataset_options(evaluate, default=None)
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
    evaluate.add_argument(
        "--unknown-below", type=probability, metavar="P",
        help="leave pixels whose confidence is under P undecided: scores are over the decided "
        "pixels, with their coverage (share of labelled pixels decided)",
    )  # fmt: skip
    add_inference_options(evaluate)
    evaluate.set_defaults(run=cmd_eval)

    predict = commands.add_parser(
        "predict",
        help="label, colour and overlay PNGs for images, folders or globs; overlay videos",
    )
    predict.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image and video files, folders (searched recursively), globs, or @LIST (a file "
        "of paths)",
    )  # fmt: skip
    predict.add_argument(
        "--source", metavar="SRC",
        help="a live source instead of INPUT: a camera index (0) or an rtsp:// or http(s):// "
        "stream; stopped by --max-frames, --duration or Ctrl+C, its outputs kept",
    )  # fmt: skip
    predict.add_argument(
        "--checkpoint", required=True, help="a file, a registry name (pspnet models) or a URL"
    )
    predict.add_argument("--out", type=Path, required=True)
    predict.add_argument("--save-probs", action="store_true", help="also NAME_probs.npy (C,H,W)")
    predict.add_argument(
        "--confidence", action="store_true",
        help="also NAME_confidence.png: each pixel's largest class probability (255 = 1.0)",
    )  # fmt: skip
    predict.add_argument(
        "--unknown-below", type=probability, metavar="P",
        help="label pixels whose confidence is under P as unknown (255; black in the pictures)",
    )  # fmt: skip
    predict.add_argument(
        "--memory-budget-mb", type=positive_float, default=DEFAULT_MEMORY_BUDGET_MB,
        metavar="MB",
        help="memory one image may cost (its decoded pixels, the network's logits and "
        "activations, the outputs; an estimate): larger images are skipped with a message, "
        f"before decoding (default {DEFAULT_MEMORY_BUDGET_MB})",
    )  # fmt: skip
    predict.add_argument(
        "--redo", action="store_true", help="segment inputs again whose outputs are all there"
    )
    video = predict.add_argument_group(
        "videos and streams", "NAME_overlay.mp4 (the frames' size and rate), NAME/*_label.png"
    )
    video.add_argument(
        "--save-labels", action="store_true",
        help="also NAME/NNNNNN_label.png for every kept frame (NNNNNN: its index)",
    )  # fmt: skip
    video.add_argument(
        "--every", type=positive_int, default=1, metavar="N",
        help="keep every N-th frame (the overlay's rate is the source's / N)",
    )  # fmt: skip
    video.add_argument("--start", type=float, default=0.0, metavar="SEC",
                       help="skip a video file's first SEC seconds")  # fmt: skip
    video.add_argument(
        "--duration", type=positive_float, metavar="SEC",
        help="keep SEC seconds: of a file from --start, of a live source's recording",
    )  # fmt: skip
    video.add_argument("--max-frames", type=positive_int, metavar="N",
                       help="stop after N kept frames")  # fmt: skip
    video.add_argument(
        "--smooth", type=unit_fraction, metavar="A",
        help="average class probabilities over frames (weight A on the new frame) before the "
        "argmax: less flicker, a lag behind motion; 1 is off (docs/benchmarks.md)",
    )  # fmt: skip
    video.add_argument(
        "--stall-timeout", type=positive_float, default=10.0, metavar="SEC",
        help="a camera or stream with no frame for SEC seconds has stalled: its outputs are "
        "kept and the stall reported (default 10)",
    )  # fmt: skip
    add_inference_options(predict)
    predict.set_defaults(run=cmd_predict)

    export = commands.add_parser("export", help="ONNX with dynamic batch, height and width")
    export.add_argument("checkpoint", help="a file, a registry name (pspnet models) or a URL")
    export.add_argument("out", type=Path, help="e.g. model.onnx")
    export.add_argument("--size", type=positive_int, default=473, help="example size traced")
    export.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="export the plain graph (default: BN folded, factorised head)",
    )
    export.set_defaults(run=cmd_export)

    serve = commands.add_parser(
        "serve",
        help="an HTTP service and a web page over a checkpoint (needs pspnet[serve])",
        description="An HTTP service and a web page over a checkpoint. --backend auto stays "
        "eager here; --backend compile recompiles for every new image size, on the request "
        "path (15-22 s each for a ResNet-50 on a CPU), so use it only for images of one size.",
    )
    serve.add_argument(
        "--checkpoint", required=True, help="a file, a registry name (pspnet models) or a URL"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument(
        "--max-queue", type=non_negative_int, default=4,
        help="requests waiting behind the running one, their uploads and unsent answers "
        "included; more get 503 (default 4)",
    )  # fmt: skip
    serve.add_argument(
        "--max-upload-mb", type=positive_float, default=20.0,
        help="the largest request body in MiB; larger get 413 (default 20)",
    )  # fmt: skip
    serve.add_argument(
        "--memory-budget-mb", type=positive_float, default=2048.0,
        help="MiB one image's inference may use beyond the weights (the decoded image, the "
        "network's activations, the outputs and the overlay); sets the default --max-pixels. "
        "Queued uploads (--max-queue x --max-upload-mb) come on top (default 2048)",
    )  # fmt: skip
    serve.add_argument(
        "--max-pixels", type=positive_int,
        help="the largest image, width x height; larger get 413 (default: what "
        "--memory-budget-mb allows; never more than the decoders' limit, "
        "PSPNET_MAX_IMAGE_PIXELS or 100000000)",
    )  # fmt: skip
    serve.add_argument(
        "--timeout", type=positive_float, default=120.0,
        help="seconds a request may wait and run before 504; its inference stops at the next "
        "window (default 120)",
    )  # fmt: skip
    serve.add_argument(
        "--upload-timeout", type=positive_float, default=30.0,
        help="seconds a client has to send its image (then 408) and to read its answer (then "
        "the connection closes) (default 30)",
    )  # fmt: skip
    serve.add_argument(
        "--max-uploads", type=positive_int, default=8,
        help="uploads read at once; more get 503 unread. A slow upload holds one of these, "
        "never a --max-queue place (default 8)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", type=positive_int, default=64,
        help="open connections at once; more get 503 (default 64)",
    )  # fmt: skip
    serve.add_argument(
        "--allowed-hosts", action="append", default=[], metavar="NAME",
        help="a Host name clients reach the service by, e.g. the proxy's public name "
        "(repeatable); the bound address and localhost are always allowed, others get 400",
    )  # fmt: skip
    serve.add_argument(
        "--api-key",
        help="a key every route but /healthz needs, as 'Authorization: Bearer KEY' or "
        "'X-API-Key: KEY'; the page too, so a browser reaches it only through a proxy that "
        "adds the header (default: $PSPNET_API_KEY, else none)",
    )
    add_inference_options(serve)
    serve.set_defaults(run=cmd_serve)

    reproduce = commands.add_parser(
        "reproduce", help="the paper's ablations (tables 1 and 2) as a resumable grid of runs"
    )
    what = reproduce.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    ablation = what.add_parser("ablation", help="pyramid settings and auxiliary loss weight")
    ablation.add_argument("--dataset", default="camvid", help="dataset preset")
    ablation.add_argument("--root", type=Path, help="dataset root")
    ablation.add_argument(
        "--budget", default="cpu", choices=["cpu", "gpu", "tiny"],
        help="run size: cpu (a small ResNet-18, hours on 2 cores), gpu (one GPU, minutes), "
        "tiny (tests); docs/ablation_camvid_cpu.md has the times measured",
    )  # fmt: skip
    ablation.add_argument(
        "--shard", type=shard_spec, metavar="I/K",
        help="train only every K-th run from the I-th (0-based): K processes or machines "
        "share one grid folder",
    )  # fmt: skip
    ablation.add_argument("--out", type=Path, required=True, help="grid folder (resumable)")
    ablation.add_argument("--seeds", type=positive_int, default=2)
    ablation.add_argument("--test-split", help="also score this split (e.g. test)")
    ablation.add_argument(
        "--report-only", action="store_true", help="rebuild the report from finished runs"
    )
    ablation.set_defaults(run=cmd_reproduce)

    models = commands.add_parser(
        "models", help="published weights to use by name: dataset, mIoU, size, cached or not"
    )
    models.add_argument("--dataset", help="only this dataset's (ade20k, cityscapes, voc ...)")
    models.set_defaults(run=cmd_models)

    demo = commands.add_parser(
        "demo", help="train PSPNet and its FCN baseline on built-in synthetic scenes (no download)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--iterations", type=positive_int, default=600, help="per network")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.set_defaults(run=cmd_demo)
    return parser


def _last_line(message: str) -> str:
    """The error itself: a DataLoader worker wraps it in a traceback users need not read."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("pspnet.errors.") else last


def _rank() -> str:
    """``rank N: `` under torchrun, where every rank reports its own error."""
    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


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
    status = 1
    try:
        status = args.run(args)
        return status
    except PSPNetError as err:
        print(f"pspnet {args.command}: error: {_rank()}{_last_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"pspnet {args.command}: error: {_rank()}{_file_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning
        if "pspnet.engine.distributed" in sys.modules:  # a command that may have joined a group
            from pspnet.engine.distributed import leave

            leave(together=status == 0)
