"""Signatures say what they take: keyword-only options, short command functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pspnet"
MAX_POSITIONAL = 6
MAX_CLI_LINES = 60


def functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def positional(node: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    return [n for n in names if n not in ("self", "cls")]


def test_no_function_takes_more_than_six_parameters_by_position():
    wide = [
        f"{path}:{node.lineno} {node.name}({', '.join(positional(node))})"
        for path, node in functions(PACKAGE)
        if len(positional(node)) > MAX_POSITIONAL
    ]
    assert not wide, "make the options keyword-only:\n" + "\n".join(wide)


def test_no_command_function_is_longer_than_sixty_lines():
    long = [
        f"{path}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path, node in functions(PACKAGE / "cli")
        if node.end_lineno - node.lineno + 1 > MAX_CLI_LINES
    ]
    assert not long, "\n".join(long)


def test_the_check_can_fail():
    source = "def f(a, b, c, d, e, f, g):\n    pass\n"
    (node,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert len(positional(node)) > MAX_POSITIONAL
