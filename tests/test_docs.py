"""The documentation: the generated CLI reference matches the parser; the README stays a front
page whose links lead somewhere. (``make test`` also builds the site with ``mkdocs build
--strict``, which checks every link and anchor between the pages.)"""

import argparse
import re
from pathlib import Path

import pytest

from pspnet.cli import build_parser
from pspnet.cli.reference import cli_reference

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# [text](target) and ![alt](target); the target ends at a space (a title) or the bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def subcommands(parser: argparse.ArgumentParser, name: str) -> dict[str, argparse.ArgumentParser]:
    """``{"pspnet data check": parser, ...}``: every command below ``parser``, nested ones too."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                found[f"{name} {sub_name}"] = sub_parser
                found.update(subcommands(sub_parser, f"{name} {sub_name}"))
    return found


def section(markdown: str, command: str) -> str:
    """The text under the heading ``## command`` (or ``###``) up to the next heading."""
    found = re.search(rf"^#+ {re.escape(command)}\n(.*?)(?=^#+ |\Z)", markdown, re.M | re.S)
    assert found, f"no section for {command!r}"
    return found.group(1)


def row(markdown: str, command: str, option: str) -> list[str]:
    """The cells of ``option``'s row in ``command``'s table (pipes escaped in prose skipped)."""
    for line in section(markdown, command).splitlines():
        if line.startswith(f"| `{option}"):
            return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"{command}: no row for {option}")


def action(parser: argparse.ArgumentParser, option: str) -> argparse.Action:
    return next(a for a in parser._actions if option in a.option_strings)


def test_cli_reference_has_a_section_for_every_command():
    parser = build_parser()
    reference = cli_reference(parser)
    commands = subcommands(parser, parser.prog)
    assert {"pspnet train", "pspnet serve", "pspnet data check"} <= set(commands)
    for command in commands:
        assert re.search(rf"^##+ {re.escape(command)}$", reference, re.M), command


@pytest.mark.parametrize(
    "command, option",
    [
        ("pspnet serve", "--port"),
        ("pspnet serve", "--max-queue"),
        ("pspnet predict", "--memory-budget-mb"),
        ("pspnet eval", "--absent"),
        ("pspnet demo", "--iterations"),
    ],
)
def test_cli_reference_shows_the_parsers_default(command, option):
    parser = build_parser()
    default = action(subcommands(parser, parser.prog)[command], option).default
    cells = row(cli_reference(parser), command, option)
    assert cells[1] == f"`{default}`", cells


def test_cli_reference_documents_the_serve_port_the_readme_promises():
    assert row(cli_reference(), "pspnet serve", "--port")[1] == "`8000`"


def test_cli_reference_reads_any_argparse_parser():
    parser = argparse.ArgumentParser(prog="tool")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    group = commands.add_parser("group", help="a group of commands")
    leaf = group.add_subparsers(dest="leaf").add_parser("leaf", help="a nested command")
    leaf.add_argument("paths", nargs="+", metavar="PATH", help="files to read")
    leaf.add_argument("--mode", choices=["fast", "exact"], default="exact", help="now %(default)s")
    leaf.add_argument("--quiet", action="store_true", help="say less | nothing")
    leaf.add_argument("--hidden", default=argparse.SUPPRESS, help="not set unless given")
    leaf.add_argument("--secret", help=argparse.SUPPRESS)
    reference = cli_reference(parser)

    assert "| [tool group](#tool-group) | a group of commands |" in reference
    assert row(reference, "tool group leaf", "--mode") == [
        "`--mode MODE`",
        "`exact`",
        "`fast`, `exact`",
        "now exact",
    ]
    assert row(reference, "tool group leaf", "--quiet") == [
        "`--quiet`",
        "",
        "flag",
        "say less \\| nothing",
    ]
    assert row(reference, "tool group leaf", "--hidden")[1] == ""
    assert row(reference, "tool group leaf", "PATH")[0] == "`PATH [PATH ...]`"
    assert "--secret" not in section(reference, "tool group leaf").split("```")[-1]


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines; move detail to docs/"


def test_every_relative_link_in_the_readme_exists():
    text = (ROOT / "README.md").read_text()
    targets = [target for target in LINK.findall(text) if not re.match(r"[a-z]+:|#", target)]
    assert targets, "no relative links found: has the link pattern broken?"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
