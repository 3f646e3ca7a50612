"""Settings declared once: each entry point takes one frozen dataclass of typed fields.

A field's type says what it accepts (``Literal[...]`` for choices), its default is the one
default, its ``Attributes:`` line in the class docstring is its help, and :func:`setting`
adds what a type cannot say: a numeric range, the command-line flag's spelling, how to parse
a value from text. The ``pspnet`` command's options (:mod:`pspnet.cli.arguments`) and the
documentation's option tables are generated from these fields, and :func:`check_settings`
checks the same ranges when the settings are built in Python, so a value is refused with the
same words wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pspnet.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """What a settings field says beyond its type and default (``dataclasses.field`` metadata).

    Attributes:
        flag: the command-line flag; None: ``--`` and the field's name with dashes.
        positional: a positional argument instead of a flag.
        metavar: the value's name in help, one per value of a fixed-size tuple.
        nargs: argparse's nargs where the type does not decide it (``"*"``).
        low: the smallest value accepted (None: no lower bound).
        high: the largest value accepted (None: no upper bound).
        low_open: ``low`` itself is refused.
        high_open: ``high`` itself is refused.
        repeat: a tuple given by repeating the flag (``--allowed-hosts a --allowed-hosts b``)
            or several values after it; every value counts.
        parse: turns one command-line word into the value (raises ValueError with the
            reason); None: the type's own constructor.
        whole: ``parse`` takes the whole value of a tuple as one word (``--bands 4,3,2``).
        shown_default: how the default reads in help and tables when its value alone would
            mislead (``"the checkpoint's"``).
    """

    flag: str | None = None
    positional: bool = False
    metavar: str | tuple[str, ...] | None = None
    nargs: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    repeat: bool = False
    parse: Callable[[str], Any] | None = None
    whole: bool = False
    shown_default: str | None = None

    def accepts(self, value: float) -> bool:
        """Whether a number lies in the range."""
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def requirement(self, kind: type) -> str:
        """The range in words: ``an integer >= 1``, ``a number in (0, 1]``."""
        noun = "an integer" if kind is int else "a number"
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{noun} <= {self.high:g}"
        if kind is int and not (self.low_open or self.high_open):
            return f"{noun} in {self.low:g}..{self.high:g}"
        return (
            f"{noun} in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )


def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    repr: bool = True,
    **option: Any,
) -> Any:
    """A dataclass field with its :class:`Option` (``setting(4, low=0)``)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        repr=repr,
        metadata={"option": Option(**option)},
    )


def option_of(field: dataclasses.Field) -> Option:
    """A field's :class:`Option` (the plain one when it was declared without :func:`setting`)."""
    return field.metadata.get("option", Option())


def field_docs(cls: type) -> dict[str, str]:
    """Each field's text from a dataclass's Google-style ``Attributes:`` section."""
    docs: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    section = inspect.cleandoc(cls.__doc__ or "").partition("Attributes:")[2]
    name = None
    for line in section.splitlines():
        match = re.match(r"\s{4}(\w+): (.*)", line)
        if match and match.group(1) in names:
            name, docs[match.group(1)] = match.group(1), match.group(2).strip()
        elif name and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        elif line.strip():
            name = None
    return docs


def without_none(hint: Any) -> Any:
    """``X`` of ``X | None``; other types as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else functools.reduce(operator.or_, options)
    return hint


def check_settings(settings: Any) -> None:
    """Check every field of a settings dataclass against its type and range.

    Call it from ``__post_init__``. Lists become tuples, so settings built from YAML or
    JSON compare equal to those built in Python.

    Raises:
        ConfigError: ``NAME must be REQUIREMENT, got VALUE`` for the first field that fails.
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(settings, field.name, value)
        problem = _problem(hints[field.name], value, option_of(field))
        if value == () and field.default != ():  # an empty tuple only where it is the default
            problem = "one or more values"
        if problem is not None:
            raise ConfigError(f"{field.name} must be {problem}, got {value!r}")


def _problem(hint: Any, value: Any, option: Option) -> str | None:
    """What ``value`` should have been, or None when it is what ``hint`` and ``option`` ask."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_problem(a, value, option) for a in args if a is not type(None)]
        if None in problems:
            return None
        return " or ".join(problems) + (" or None" if type(None) in args else "")
    if origin is Literal:
        return None if value in args else f"one of {list(args)}"
    if origin is tuple:
        return _tuple_problem(args, value, option)
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, hint) else f"a {hint.__name__}"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint in (int, float):
        number = isinstance(value, int if hint is int else (int, float))
        if number and not isinstance(value, bool) and option.accepts(value):
            return None
        return option.requirement(hint)
    if hint is Path:
        return None if isinstance(value, (str, Path)) else "a path"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    return None  # Any, callables: what the code using them checks


def _tuple_problem(args: tuple, value: Any, option: Option) -> str | None:
    variadic = len(args) == 2 and args[1] is Ellipsis
    if not isinstance(value, tuple) or (not variadic and len(value) != len(args)):
        count = "one or more values" if variadic else f"{len(args)} values"
        return f"{count} ({_type_name(args[0])})"
    kinds = [args[0]] * len(value) if variadic else args
    for kind, item in zip(kinds, value):
        problem = _problem(kind, item, option)
        if problem is not None:
            return f"values that are each {problem}"
    return None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
