"""Argument types, choices and generated options: what the library accepts, said once.

Choices come from the library's ``Literal`` types, the inference options from the fields of
:class:`pspnet.config.InferenceConfig` (their help from its docstring), and every number is
checked by its type, so a bad value is argparse's one-line usage error naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pspnet.config import InferenceConfig
from pspnet.errors import ConfigError
from pspnet.inference.optimized.optimize import AMORTIZED_AFTER, Backend, Precision


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
probability = _number(float, lambda v: 0 <= v <= 1, "a probability in [0, 1]")
fraction_below_one = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
port_number = _number(int, lambda v: 0 <= v <= 65535, "a port number in 0..65535")


def device_name(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N)."""
    from pspnet.devices import resolve_device

    try:
        resolve_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def shard_spec(text: str) -> tuple[int, int]:
    """``I/K`` with 0 <= I < K, for ``reproduce ablation --shard``."""
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K such as 0/2, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"expected I/K with 0 <= I < K, got {text!r}")
    return shard


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


def inference_options(args: argparse.Namespace) -> dict:
    """The InferenceConfig fields given on the command line (others keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(InferenceConfig)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}


_INFERENCE_FLAGS = {
    "crop_size": ("--crop", ("H", "W")),
    "fit_within": ("--fit-within", ("LONG", "SHORT")),
}
_INFERENCE_TYPES = {"stride_rate": unit_fraction, "scales": positive_float}


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """One option per InferenceConfig field; help from its docstring, choices from its type."""
    docs, hints = field_docs(InferenceConfig), typing.get_type_hints(InferenceConfig)
    for field in dataclasses.fields(InferenceConfig):
        flag, metavar = _INFERENCE_FLAGS.get(
            field.name, ("--" + field.name.replace("_", "-"), None)
        )
        default = _default_text(field)
        help_text = f"{docs[field.name].rstrip('.')}; default: the checkpoint's, else {default}"
        options: dict = {"dest": field.name, "help": help_text}
        hint = hints[field.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            options["choices"] = list(args)
        elif hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            is_tuple = typing.get_origin(hint) is tuple
            item = args[0] if is_tuple else hint
            options["type"] = _INFERENCE_TYPES.get(
                field.name, positive_int if item is int else positive_float
            )
            if is_tuple:
                options["nargs"] = "+" if Ellipsis in args else len(args)
            options["metavar"] = metavar
        parser.add_argument(flag, default=None, **options)
    parser.add_argument(
        "--device", default="cpu", type=device_name, help="cpu, cuda or cuda:N (default cpu)"
    )
    parser.add_argument(
        "--precision",
        choices=choices(Precision),
        default="auto",
        help="auto (default): the exact fp32 rewrites (BN folded, factorised head, "
        "channels_last; logits equal to float rounding) on every device, or what was measured "
        "fastest on this kind of device; none: the model as trained (for debugging); fp32: "
        "exact; bf16: CUDA, or a CPU with native bf16; fp16: CUDA; int8: CPU, ONNX Runtime",
    )
    parser.add_argument(
        "--backend",
        choices=choices(Backend),
        default="auto",
        help="auto (default): eager, except torch.compile where it was measured faster on this "
        "kind of device and the work repays its warm-up (docs/benchmarks.md): predict over "
        f"{AMORTIZED_AFTER}+ images (never serve: each new image size would recompile); "
        "compile: torch.compile; "
        "cudagraphs: compile with CUDA graphs (CUDA; shapes that repeat, as sliding windows); "
        "onnx: ONNX Runtime (CPU)",
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


def add_dataset_options(parser: argparse.ArgumentParser, default: str | None = "camvid") -> None:
    """--dataset, --num-classes, --names-file; ``default`` None: the checkpoint's dataset."""
    also = "; default: the checkpoint's dataset, else camvid" if default is None else ""
    parser.add_argument(
        "--dataset",
        default=default,
        help=f"preset: ade20k, voc, cityscapes, camvid or custom{also}",
    )
    parser.add_argument("--num-classes", type=positive_int, help="class count of a custom dataset")
    parser.add_argument(
        "--names-file",
        type=Path,
        help="class names (and colours) of a custom dataset: 'name [R G B]' per line or CVAT's "
        "labelmap.txt; default: ROOT/classes.txt when present",
    )
    parser.add_argument(
        "--label-map",
        nargs="+",
        type=label_map_entry,
        metavar="VALUE:ID",
        help="map stored label values to train ids (255 ignores), e.g. 255:1 for 0/255 masks",
    )


def label_map_entry(text: str) -> tuple[int, int]:
    """``VALUE:ID`` with both in 0..255, for ``--label-map``."""
    stored, _, train_id = text.partition(":")
    try:
        entry = int(stored), int(train_id)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VALUE:ID such as 255:1, got {text!r}") from None
    if not all(0 <= v <= 255 for v in entry):
        raise argparse.ArgumentTypeError(f"expected values in 0..255, got {text!r}")
    return entry


def dataset_preset(args: argparse.Namespace, dataset: str, root: Path | None = None):
    """The preset the dataset options describe (a custom ``root`` may hold classes.txt)."""
    from pspnet.data.presets import get_preset

    label_map = dict(args.label_map) if args.label_map else None
    return get_preset(dataset, args.num_classes, args.names_file, label_map, root)
