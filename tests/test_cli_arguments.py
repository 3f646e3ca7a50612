"""The CLI's options follow the library's types: one source of truth for names and choices."""

import dataclasses
import typing

import pytest

from pspnet.cli import build_parser
from pspnet.cli.arguments import field_docs, inference_options
from pspnet.config import InferenceConfig, Mode
from pspnet.engine.metrics import AbsentPolicy
from pspnet.inference.optimized.optimize import Backend, Precision
from pspnet.models.resnet import BackboneName, OutputStride, Stem


def subparser(name: str):
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return commands.choices[name]


def option(parser, dest: str):
    return next(a for a in parser._actions if a.dest == dest)


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_every_inference_field_is_an_option(command):
    parser = subparser(command)
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(InferenceConfig)} <= dests
    for field in dataclasses.fields(InferenceConfig):
        assert option(parser, field.name).help.strip(), field.name


@pytest.mark.parametrize(
    ("command", "dest", "literal"),
    [
        ("info", "backbone", BackboneName),
        ("info", "stem", Stem),
        ("info", "output_stride", OutputStride),
        ("eval", "absent", AbsentPolicy),
        ("predict", "mode", Mode),
        ("predict", "precision", Precision),
        ("predict", "backend", Backend),
    ],
)
def test_choices_are_the_literal_types(command, dest, literal):
    assert option(subparser(command), dest).choices == list(typing.get_args(literal))


def test_options_given_become_the_inference_config():
    argv = "predict x.png --checkpoint m --out o --mode whole --crop 5 7 --stride-rate 0.5"
    argv += " --scales 0.5 1 --base-size 64 --no-flip --window-batch 3"
    args = build_parser().parse_args(argv.split())
    config = InferenceConfig(**inference_options(args))
    assert config == InferenceConfig("whole", (5, 7), 0.5, (0.5, 1.0), 64, False, 3)


def test_options_not_given_are_left_to_the_checkpoint():
    args = build_parser().parse_args("predict x.png --checkpoint m --out o".split())
    assert inference_options(args) == {}


def test_field_docs_read_each_attribute_with_its_continuation_lines():
    docs = field_docs(InferenceConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(InferenceConfig)}
    assert docs["scales"].endswith("1.25 1.5 1.75.")  # the continuation line is joined
    assert docs["window_batch"].startswith("windows per forward pass")
