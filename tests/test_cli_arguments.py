"""The CLI's options are generated from the settings dataclasses: one source of truth for
names, defaults, choices, ranges and help, shared with the documentation."""

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

from pspnet.cli import COMMANDS, Group, build_parser, main
from pspnet.cli.arguments import default_text, settings_from
from pspnet.config import InferenceConfig, Mode
from pspnet.engine.metrics import AbsentPolicy
from pspnet.errors import ConfigError
from pspnet.inference.settings import Backend, InferenceOverrides, Precision, RuntimeSettings
from pspnet.models.resnet import BackboneName, OutputStride, Stem
from pspnet.predict.settings import PredictSettings
from pspnet.serve.settings import ServiceLimits
from pspnet.settings import field_docs, option_of


def commands():
    """(words, settings class) of every subcommand, nested ones included."""
    for entry in COMMANDS:
        if isinstance(entry, Group):
            for sub in entry.commands:
                yield (entry.name, sub.name), sub.settings
        else:
            yield (entry.name,), entry.settings


COMMAND_IDS = [" ".join(words) for words, _ in commands()]


def subparser(words):
    parser = build_parser()
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def leaves(cls, prefix=""):
    """(dest, field) of every option a settings class gives, nested classes flattened."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            yield from leaves(hints[field.name], prefix + field.name + ".")
        else:
            yield prefix + field.name, field


def option(parser, dest: str):
    return next(a for a in parser._actions if a.dest == dest)


@pytest.mark.parametrize(("words", "cls"), list(commands()), ids=COMMAND_IDS)
def test_every_field_is_an_option_with_its_default_and_help(words, cls):
    parser = subparser(words)
    for dest, field in leaves(cls):
        action = option(parser, dest)
        assert action.help.strip(), dest
        if field.default is not dataclasses.MISSING:
            default = action.default
            assert (tuple(default) if isinstance(default, list) else default) == field.default
            if default_text(field):
                assert f"(default: {default_text(field)})" in action.help, dest


@pytest.mark.parametrize(("words", "cls"), list(commands()), ids=COMMAND_IDS)
def test_the_documentation_shows_the_same_defaults(words, cls):
    from pspnet.cli.reference import cli_reference

    reference = cli_reference()
    parser = subparser(words)
    for dest, field in leaves(cls):
        action = option(parser, dest)
        if not action.option_strings or not default_text(field):
            continue
        flag = action.option_strings[0]
        rows = [line for line in reference.splitlines() if f"`{flag}" in line]
        assert any(default_text(field) in row for row in rows), (words, flag)


@pytest.mark.parametrize(("words", "cls"), list(commands()), ids=COMMAND_IDS)
def test_parsing_nothing_but_the_required_gives_the_dataclass_defaults(words, cls, tmp_path):
    required = {
        "checkpoint": ["--checkpoint", "m"],
        "out": ["--out", str(tmp_path)],
        "root": ["--root", str(tmp_path)],
    }
    argv = [*words]
    for dest, field in leaves(cls):
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            argv += ["x"] if option_of(field).positional else required[dest]
    if words == ("predict",):
        argv.append("x.png")
    given = {"inputs", "report_only"}
    if words[0] == "eval":
        argv += required["checkpoint"] + required["root"]
        given |= {"checkpoint", "root"}
    if words == ("reproduce", "ablation"):
        argv.append("--report-only")
    if words == ("data", "import"):
        argv[2] = "coco"
    if words == ("data", "download"):
        argv[2] = "camvid"
    settings = settings_from(build_parser().parse_args(argv), cls)
    for dest, field in leaves(cls):
        if field.default is not dataclasses.MISSING and dest not in given:
            value = settings
            for part in dest.split("."):
                value = getattr(value, part)
            assert value == field.default, dest


@pytest.mark.parametrize(
    ("words", "dest", "literal"),
    [
        (("info",), "backbone", BackboneName),
        (("info",), "stem", Stem),
        (("info",), "output_stride", OutputStride),
        (("eval",), "absent", AbsentPolicy),
        (("predict",), "inference.mode", Mode),
        (("predict",), "runtime.precision", Precision),
        (("serve",), "runtime.backend", Backend),
    ],
)
def test_choices_are_the_literal_types(words, dest, literal):
    assert option(subparser(words), dest).choices == list(typing.get_args(literal))


def test_options_given_become_the_inference_config():
    argv = "predict x.png --checkpoint m --out o --mode whole --crop 5 7 --stride-rate 0.5"
    argv += " --scales 0.5 1 --base-size 64 --no-flip --window-batch 3"
    settings = settings_from(build_parser().parse_args(argv.split()), PredictSettings)
    config = settings.inference.apply(InferenceConfig())
    assert config == InferenceConfig("whole", (5, 7), 0.5, (0.5, 1.0), 64, False, 3)


def test_options_not_given_are_left_to_the_checkpoint():
    args = build_parser().parse_args("predict x.png --checkpoint m --out o".split())
    settings = settings_from(args, PredictSettings)
    assert settings.inference == InferenceOverrides()
    recorded = InferenceConfig(mode="whole", crop_size=(33, 44), flip=False)
    assert settings.inference.apply(recorded) == recorded


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("predict x --checkpoint m --out o --every 0", "--every: expected an integer >= 1"),
        ("predict x --checkpoint m --out o --smooth 1.5", "--smooth: expected a number in (0, 1]"),
        ("predict x --checkpoint m --out o --stride-rate 0", "expected a number in (0, 1]"),
        ("serve --checkpoint m --port 70000", "--port: expected an integer in 0..65535"),
        ("serve --checkpoint m --max-upload-mb nan", "expected a number > 0"),
        ("data import coco s --out o --val-fraction 1", "expected a number in [0, 1)"),
        ("eval --label-map 300:1", "expected values in 0..255"),
        ("reproduce ablation --out o --shard 2/2", "expected I/K with 0 <= I < K"),
    ],
)
def test_a_value_out_of_range_is_a_usage_error_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv.split())
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_library_refuses_the_same_values_in_the_same_words():
    with pytest.raises(ConfigError, match=r"max_queue must be an integer >= 0, got -1"):
        ServiceLimits(max_queue=-1)
    with pytest.raises(ConfigError, match=r"stride_rate must be a number in \(0, 1\]"):
        InferenceConfig(stride_rate=1.5)
    with pytest.raises(ConfigError, match="precision must be one of"):
        RuntimeSettings(precision="fp64")
    with pytest.raises(ConfigError, match="int8 needs --calibration"):
        RuntimeSettings(precision="int8")


def test_a_check_in_the_settings_is_one_line_from_the_command(capsys, tmp_path):
    status = main(["predict", "--checkpoint", "m", "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("pspnet predict: error: give INPUT files")
    assert err.count("\n") == 1


def test_repeated_options_each_apply():
    argv = "serve --checkpoint m --allowed-hosts a.example --allowed-hosts b.example c.example"
    args = build_parser().parse_args(argv.split())
    assert args.__dict__["limits.allowed_hosts"] == ["a.example", "b.example", "c.example"]


def test_field_docs_read_each_attribute_with_its_continuation_lines():
    docs = field_docs(InferenceConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(InferenceConfig)}
    assert docs["scales"].endswith("1.25 1.5 1.75.")  # the continuation line is joined
    assert docs["window_batch"].startswith("windows per forward pass")


def test_paths_are_paths():
    args = build_parser().parse_args(["train", "--out", "runs/x"])
    assert args.out == Path("runs/x")
