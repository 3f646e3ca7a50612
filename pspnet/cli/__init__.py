"""The ``pspnet`` command: each subcommand parses its settings and calls one library function.

Every subcommand's options are generated from its settings dataclass
(:mod:`pspnet.cli.arguments`); :mod:`pspnet.cli.commands` and :mod:`pspnet.cli.trained` run
them, :mod:`pspnet.cli.output` shows their progress; ``main`` turns every error into one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pspnet.benchmark import BenchmarkSettings
from pspnet.checkpoints import ConvertSettings
from pspnet.cli.arguments import add_settings, settings_from
from pspnet.cli.commands import (
    cmd_convert,
    cmd_data_check,
    cmd_data_download,
    cmd_data_import,
    cmd_demo,
    cmd_info,
    cmd_models,
    cmd_reproduce,
    cmd_train,
)
from pspnet.cli.trained import cmd_benchmark, cmd_eval, cmd_export, cmd_predict, cmd_serve
from pspnet.config import TrainSettings
from pspnet.data.check import DataCheckSettings
from pspnet.data.download import DataDownloadSettings
from pspnet.data.importers import ImportSettings
from pspnet.demo import DemoSettings
from pspnet.engine.scoring import EvalSettings
from pspnet.engine.summary import InfoSettings
from pspnet.errors import PSPNetError
from pspnet.export import ExportSettings
from pspnet.predict.settings import PredictSettings
from pspnet.reproduce import AblationSettings
from pspnet.serve.settings import ServeSettings
from pspnet.weights.registry import ModelsSettings


@dataclass(frozen=True)
class Command:
    """A subcommand: its settings dataclass, the function that runs them, its one-line help."""

    name: str
    settings: type
    run: Callable[[object], int]
    help: str


@dataclass(frozen=True)
class Group:
    """A subcommand that holds subcommands (``pspnet data check``)."""

    name: str
    help: str
    commands: tuple[Command, ...]


COMMANDS: tuple[Command | Group, ...] = (
    Command("info", InfoSettings, cmd_info, "parameters and FLOPs per part of the network"),
    Command(
        "convert",
        ConvertSettings,
        cmd_convert,
        "write any supported checkpoint (semseg, mmseg, pspnet) as native safetensors",
    ),
    Group(
        "data",
        "dataset tools",
        (
            Command("check", DataCheckSettings, cmd_data_check, "check every pair of a split"),
            Command(
                "import",
                ImportSettings,
                cmd_data_import,
                "turn a COCO, LabelMe or CVAT export into a custom dataset",
            ),
            Command(
                "download",
                DataDownloadSettings,
                cmd_data_download,
                "a public dataset (camvid, ade20k, voc) at a pinned version, verified",
            ),
        ),
    ),
    Command("train", TrainSettings, cmd_train, "train with the paper's recipe (resumable)"),
    Command(
        "eval",
        EvalSettings,
        cmd_eval,
        "mIoU, mean class accuracy and pixel accuracy of a checkpoint or of saved PNGs",
    ),
    Command(
        "predict",
        PredictSettings,
        cmd_predict,
        "label, colour and overlay PNGs for images, folders or globs; overlay videos",
    ),
    Command(
        "export",
        ExportSettings,
        cmd_export,
        "ONNX or OpenVINO IR with dynamic batch, height and width",
    ),
    Command(
        "benchmark",
        BenchmarkSettings,
        cmd_benchmark,
        "every inference path measured on this machine; --save makes auto run the fastest",
    ),
    Command(
        "serve",
        ServeSettings,
        cmd_serve,
        "an HTTP service and a web page over a checkpoint (needs pspnet[serve])",
    ),
    Group(
        "reproduce",
        "the paper's ablations (tables 1 and 2) as a resumable grid of runs",
        (
            Command(
                "ablation",
                AblationSettings,
                cmd_reproduce,
                "pyramid settings and auxiliary loss weight",
            ),
        ),
    ),
    Command(
        "models",
        ModelsSettings,
        cmd_models,
        "published weights to use by name: dataset, mIoU, size, cached or not",
    ),
    Command(
        "demo",
        DemoSettings,
        cmd_demo,
        "train PSPNet and its FCN baseline on built-in synthetic scenes (no download)",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``pspnet`` parser: one subparser per :data:`COMMANDS` entry, options generated."""
    parser = argparse.ArgumentParser(
        prog="pspnet", description="PSPNet, the Pyramid Scene Parsing Network (Zhao et al., 2017)"
    )
    _add_commands(parser, COMMANDS, "command")
    return parser


def _add_commands(parser: argparse.ArgumentParser, commands: Sequence, dest: str) -> None:
    subparsers = parser.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    for entry in commands:
        sub = subparsers.add_parser(entry.name, help=entry.help, description=entry.help)
        if isinstance(entry, Group):
            _add_commands(sub, entry.commands, f"{entry.name}_command")
        else:
            add_settings(sub, entry.settings)
            sub.set_defaults(command_entry=entry)


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
        entry: Command = args.command_entry
        status = entry.run(settings_from(args, entry.settings))
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
