"""The command-line reference, in Markdown, read off the parser ``build_parser`` returns.

The documentation site renders it at build time (``docs/hooks.py``), so the reference cannot
drift from the parser: every subcommand, nested ones included, gets a section with a table of
its arguments (option, default, choices or values, description). Only argparse's own structures
are read (``_actions``, ``_action_groups``, ``_SubParsersAction.choices``), never how the parser
was built.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Iterator

from pspnet.cli import build_parser

HEADER = (
    "# Command line\n\n"
    "Generated from the parser of the `pspnet` command when the documentation is built, so "
    "it lists exactly what `pspnet COMMAND --help` shows. Every command also takes "
    "`-h`/`--help`. A blank default means the option is unset unless given.\n"
)
USAGE_WIDTH = 100  # usage lines wrap here, not at the width of the terminal that builds the docs
TABLE_HEAD = "| option | default | choices / values | description |\n|---|---|---|---|"
# The titles argparse gives its two default groups (Python 3.10+, and before).
DEFAULT_GROUPS = {"positional arguments", "options", "optional arguments"}

Command = tuple[str, argparse.ArgumentParser, str | None]  # full name, parser, its help=


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of every command of ``parser``.

    Args:
        parser: the parser to describe; ``pspnet.cli.build_parser()`` when None.

    Returns:
        One ``## pspnet COMMAND`` section per command (``###`` for nested ones), each with
        its help, usage, a table of its subcommands and a table of its arguments.
    """
    parser = build_parser() if parser is None else parser
    sections = [_section(command) for command in _commands((parser.prog, parser, None))]
    return "\n".join([HEADER, *sections])


def _commands(command: Command) -> Iterator[Command]:
    """``command`` and every command below it, depth first, in the parser's order."""
    yield command
    for sub in _subcommands(command):
        yield from _commands(sub)


def _subcommands(command: Command) -> list[Command]:
    name, parser, _ = command
    found: list[Command] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        # The subcommands' help= strings; an alias shares its parser and is listed once.
        helps = {choice.dest: choice.help for choice in getattr(action, "_choices_actions", [])}
        seen: set[int] = set()
        for sub_name, sub_parser in action.choices.items():
            if id(sub_parser) not in seen:
                seen.add(id(sub_parser))
                found.append((f"{name} {sub_name}", sub_parser, helps.get(sub_name)))
    return found


def _section(command: Command) -> str:
    name, parser, summary = command
    depth = max(name.count(" "), 1)  # pspnet and its commands at level 2, nested ones below
    lines = [f"{'#' * (depth + 1)} {name}", ""]
    for text in dict.fromkeys(t for t in (summary, parser.description) if t):
        lines += [_text(_expand(text, {"prog": parser.prog})), ""]
    lines += ["```text", _usage(parser), "```", ""]
    subcommands = _subcommands(command)
    if subcommands:
        lines += ["| command | what it does |", "|---|---|"]
        lines += [
            f"| [{sub}](#{_anchor(sub)}) | {_text(text or '')} |" for sub, _, text in subcommands
        ]
        lines.append("")
    for title, description, actions in _groups(parser):
        if title is not None:
            lines += [
                f"**{_text(title)}**" + (f": {_text(description)}" if description else ""),
                "",
            ]
        lines += [TABLE_HEAD, *(_row(parser, action) for action in actions), ""]
    return "\n".join(lines)


def _groups(
    parser: argparse.ArgumentParser,
) -> list[tuple[str | None, str | None, list[argparse.Action]]]:
    """The arguments by the groups ``--help`` shows, as ``(title, description, actions)``.

    Positional arguments and options come first, untitled, then each titled group; an action
    in no group (a parser built without them) joins the first table.
    """
    main: list[argparse.Action] = []
    titled: list[tuple[str | None, str | None, list[argparse.Action]]] = []
    placed: set[int] = set()
    for group in getattr(parser, "_action_groups", []):
        members = [a for a in getattr(group, "_group_actions", []) if _shown(a)]
        placed.update(id(a) for a in members)
        if group.title is None or group.title in DEFAULT_GROUPS:
            main += members
        elif members:
            titled.append((group.title, group.description, members))
    main += [a for a in parser._actions if _shown(a) and id(a) not in placed]
    main.sort(key=lambda a: bool(a.option_strings))  # positionals first, as in the usage
    return [(None, None, main), *titled] if main else titled


def _shown(action: argparse.Action) -> bool:
    """Arguments a user gives: not ``--help``, not subcommands (they get sections), not hidden."""
    hidden = isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    return not hidden and action.help is not argparse.SUPPRESS


def _usage(parser: argparse.ArgumentParser) -> str:
    try:
        formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    except TypeError:  # a formatter class that takes no width
        return parser.format_usage().strip()
    groups = getattr(parser, "_mutually_exclusive_groups", [])
    formatter.add_usage(parser.usage, parser._actions, groups)
    return formatter.format_help().strip()


def _row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    cells = (
        _code(_invocation(action)),
        _default(action),
        _values(action),
        _text(_expand(action.help or "", _help_params(parser, action))),
    )
    return "| " + " | ".join(cells) + " |"


def _invocation(action: argparse.Action) -> str:
    """``--set KEY=VALUE [KEY=VALUE ...]`` or ``[INPUT ...]``, as ``--help`` writes it."""
    args = _arguments(action)
    if not action.option_strings:
        return args
    return ", ".join(action.option_strings) + (f" {args}" if args else "")


def _arguments(action: argparse.Action) -> str:
    nargs = action.nargs
    if _is_flag(action):
        return ""
    default = action.dest.upper() if action.option_strings else action.dest
    metavar = action.metavar if action.metavar is not None else default
    names = list(metavar) if isinstance(metavar, tuple) else [metavar]
    first, last = names[0], names[-1]
    if nargs == argparse.OPTIONAL:
        return f"[{first}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{first} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{first} [{last} ...]"
    if nargs == argparse.REMAINDER:
        return "..."
    if isinstance(nargs, int):
        return " ".join(names if len(names) == nargs else [first] * nargs)
    return first


def _is_flag(action: argparse.Action) -> bool:
    """An option that takes no value: store_true/false/const, count, --flag/--no-flag."""
    no_value = (argparse._StoreConstAction, argparse._CountAction, argparse._VersionAction)
    return action.nargs == 0 or isinstance(action, no_value)


def _default(action: argparse.Action) -> str:
    default = action.default
    if action.required and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
        return "required"  # argparse marks a `*` positional required, yet it takes none too
    if isinstance(action, argparse.BooleanOptionalAction) and isinstance(default, bool):
        return _code(action.option_strings[0 if default else -1])
    if _is_flag(action):
        return ""  # off unless given (store_false's default True would read backwards)
    if default is None or default is argparse.SUPPRESS:
        return ""
    if isinstance(default, list | tuple):
        # An empty list is an append/extend option's start: nothing given.
        return _code(" ".join(str(item) for item in default))
    return _code(str(default))


def _values(action: argparse.Action) -> str:
    if action.choices is not None:
        return ", ".join(_code(str(choice)) for choice in action.choices)
    if _is_flag(action):
        return "flag"
    if isinstance(action, argparse._AppendAction | argparse._ExtendAction):
        return "repeatable"
    if action.nargs in (argparse.ONE_OR_MORE, argparse.ZERO_OR_MORE):
        return "several"
    return ""


def _help_params(parser: argparse.ArgumentParser, action: argparse.Action) -> dict[str, object]:
    """What ``%(name)s`` may name in a help string, filled in as argparse's formatter does."""
    params = {
        key: getattr(value, "__name__", value)
        for key, value in dict(vars(action), prog=parser.prog).items()
        if value is not argparse.SUPPRESS
    }
    if action.choices is not None:
        params["choices"] = ", ".join(str(choice) for choice in action.choices)
    return params


def _expand(text: str, params: dict[str, object]) -> str:
    """``%(default)s`` and the like filled in; a help string with a stray ``%`` kept as is."""
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def _anchor(heading: str) -> str:
    """The id MkDocs gives a heading of plain words: ``pspnet data check`` -> its dashed form."""
    return "-".join(heading.lower().split())


def _code(text: str) -> str:
    """A code span; a pipe inside one does not split a table cell in Python-Markdown."""
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _text(text: str) -> str:
    """Prose for a table cell: one line, HTML, pipes and emphasis escaped, code spans kept."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = html.escape(parts[i], quote=False)
        parts[i] = parts[i].replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
    return "`".join(parts)
