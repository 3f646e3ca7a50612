"""Command-line options generated from settings dataclasses (:mod:`pspnet.settings`).

Each field becomes one option: its flag from its name (or its :class:`~pspnet.settings.Option`),
its help from the class docstring's ``Attributes:`` line, its default from the field, its
choices from a ``Literal`` type, and a value out of the field's range is argparse's one-line
usage error naming the option. A nested settings dataclass becomes a group of options.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from pspnet.settings import Option, field_docs, option_of, without_none


def add_settings(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, prefix: str = ""
) -> None:
    """One option per field of the settings dataclass ``cls`` (nested ones as groups)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint, dest = hints[field.name], prefix + field.name
        if dataclasses.is_dataclass(hint):
            title = docs.get(field.name, field.name).rstrip(".")
            group = parser.add_argument_group(title) if prefix == "" else parser
            add_settings(group, hint, dest + ".")
            continue
        option = option_of(field)
        flags, keywords = _argument(field, hint, option, docs.get(field.name, ""))
        if option.positional:
            parser.add_argument(dest, **keywords)
        else:
            parser.add_argument(*flags, dest=dest, **keywords)


def settings_from(args: argparse.Namespace, cls: type, prefix: str = "") -> Any:
    """The settings dataclass ``cls`` built from the options :func:`add_settings` added."""
    hints, values = typing.get_type_hints(cls), {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            values[field.name] = settings_from(args, hint, prefix + field.name + ".")
        else:
            value = getattr(args, prefix + field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def default_text(field: dataclasses.Field) -> str:
    """A field's default as help and the option tables show it ("" when there is none, and
    for a flag, whose presence is the change)."""
    shown = option_of(field).shown_default
    if shown is not None:
        return shown
    value = field.default
    if value is dataclasses.MISSING or value is None or isinstance(value, bool) or value == ():
        return ""
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_text(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _argument(
    field: dataclasses.Field, hint: Any, option: Option, doc: str
) -> tuple[list[str], dict]:
    """The flags and ``add_argument`` keywords of one field."""
    flag = option.flag or "--" + field.name.replace("_", "-")
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    default = None if required else _default(field)
    shown = default_text(field)
    help_text = doc.rstrip(".") + (f" (default: {shown})" if shown else "")
    keywords: dict[str, Any] = {"help": help_text.replace("%", "%%")}
    if required and not option.positional:
        keywords["required"] = True
    elif not option.positional or option.nargs is not None:
        keywords["default"] = default
    value = without_none(hint)
    if value is bool:
        if default is None:
            keywords["action"] = argparse.BooleanOptionalAction
        elif default:  # a default of True is switched off by its --no- flag
            keywords.update(action="store_false")
        else:
            keywords.update(action="store_true")
        return [flag], keywords
    keywords.update(_values(value, option))
    if option.metavar is not None:
        keywords["metavar"] = option.metavar
    elif "choices" not in keywords:  # a nested field's dest is dotted: name the value plainly
        keywords["metavar"] = field.name.upper()
    return [flag], keywords


def _default(field: dataclasses.Field) -> Any:
    value = field.default
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    return list(value) if isinstance(value, tuple) else value  # argparse extends lists


def _values(hint: Any, option: Option) -> dict[str, Any]:
    """``type``, ``choices``, ``nargs`` and ``action`` of a valued option."""
    keywords: dict[str, Any] = {}
    item, args = hint, typing.get_args(hint)
    variadic = len(args) == 2 and args[1] is Ellipsis
    if typing.get_origin(hint) is tuple and not option.whole and (variadic or option.parse is None):
        item = args[0]  # a fixed-size tuple with its own parse is one word (I/K)
        if option.repeat:
            keywords.update(action="extend", nargs="+")
        else:
            keywords["nargs"] = option.nargs or ("+" if variadic else len(args))
    elif option.nargs is not None:
        keywords["nargs"] = option.nargs
    if typing.get_origin(item) is typing.Literal:
        keywords["choices"] = list(typing.get_args(item))
        kinds = {type(v) for v in keywords["choices"]}
        if kinds != {str}:
            keywords["type"] = kinds.pop()
        return keywords
    keywords["type"] = _parser(item, option)
    return keywords


def _parser(kind: Any, option: Option):
    """An argparse type: the word as ``kind`` (or ``option.parse``), checked against the range."""
    convert = option.parse or (Path if kind is Path else kind if kind in (int, float) else str)
    numeric = option.parse is None and kind in (int, float)
    accepted = option.requirement(kind) if numeric else getattr(kind, "__name__", "value")

    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, TypeError) as err:
            if option.parse is not None:
                raise argparse.ArgumentTypeError(str(err)) from None
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if numeric and not option.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    parse.__name__ = accepted  # argparse names the type in some messages
    return parse
