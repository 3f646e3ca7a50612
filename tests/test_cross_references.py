"""Docstrings name only what exists: every Sphinx role and every ``pspnet.`` dotted name resolves.

A module moved or a function renamed leaves docstrings naming the old place; nothing else
notices. Each reference is resolved the way Sphinx's Python domain would look it up: a full
dotted name by importing its longest module prefix and getattr-ing the rest; a bare or partial
one (:func:`output_paths`, :meth:`Segmenter.segment`, :mod:`.bands`) from the enclosing classes,
then the module's globals and its imports (lazy and ``TYPE_CHECKING`` ones too), then builtins.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pspnet"

# :func:`x`, :py:meth:`~a.B.c`, :class:`title <a.B>`; ``!`` (no link) is not a reference.
ROLE = re.compile(r":(?:py:)?(func|class|meth|data|mod|attr|exc|obj|const):`([^`]+)`")
DEFINITIONS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def dotted_names(package: str) -> re.Pattern:
    """``package.x.y``, not a file name such as runs/pspnet.pt or my_pspnet.yaml."""
    return re.compile(rf"(?<![\w/.-]){package}(?:\.\w+)+")


@dataclass(frozen=True)
class Reference:
    line: int
    written: str  # as the docstring writes it, for the message
    target: str  # the dotted name to resolve
    classes: tuple[str, ...]  # the classes the docstring sits in, outermost first


def module_name(path: Path, root: Path) -> str:
    """``root/pspnet/serve/app.py`` -> ``pspnet.serve.app``; a package's ``__init__`` -> it."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def references(tree: ast.Module, package: str) -> Iterator[Reference]:
    """The references in the module's, its classes' and its functions' docstrings."""
    names = dotted_names(package)

    def visit(node: ast.AST, classes: tuple[str, ...]) -> Iterator[Reference]:
        inner = (*classes, node.name) if isinstance(node, ast.ClassDef) else classes
        if isinstance(node, DEFINITIONS):
            yield from in_docstring(node, inner, names)  # a class's docstring is inside the class
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner)

    yield from visit(tree, ())


def in_docstring(node: ast.AST, classes: tuple[str, ...], names: re.Pattern) -> Iterator[Reference]:
    first = node.body[0] if node.body else None
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return
    text, start = first.value.value, first.value.lineno
    roles = list(ROLE.finditer(text))
    for match in roles:
        written = match.group(2)
        target = written.split("<")[-1].rstrip(">").strip() if "<" in written else written
        if target.startswith("!"):
            continue
        target = target.lstrip("~").removesuffix("()")
        line = start + text.count("\n", 0, match.start())
        yield Reference(line, match.group(0), target, classes)
    for match in names.finditer(text):
        if any(role.start() < match.start() < role.end() for role in roles):
            continue  # the role's own target, checked above
        line = start + text.count("\n", 0, match.start())
        yield Reference(line, match.group(0), match.group(0), ())


def imported_names(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    """Local name -> the dotted name it stands for, for every import anywhere in the module."""
    package = module if is_package else module.rpartition(".")[0]
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{source}" if source else base
            for alias in node.names:
                names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def resolve_absolute(dotted: str) -> bool:
    """Import the longest module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name and not name.startswith(f"{err.name}."):
                raise  # the module exists but cannot be imported: reported as such
            continue
        return attributes(found, parts[cut:])
    return False


def attributes(found: object, names: list[str]) -> bool:
    for name in names:
        if hasattr(found, name):
            found = getattr(found, name)
        elif isinstance(found, type) and declared(found, name):
            return name == names[-1]  # a field or instance attribute: nothing to walk into
        else:
            return False
    return True


def declared(cls: type, name: str) -> bool:
    """Whether instances of ``cls`` have ``name``: an annotated field, or a name its
    ``__init__`` uses as an attribute (``self.name = ...``)."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return True
        init = vars(klass).get("__init__")
        code = getattr(init, "__code__", None)
        if code is not None and name in code.co_names:
            return True
    return False


def resolves(reference: Reference, module: object, imports: dict[str, str]) -> bool:
    target = reference.target
    if target.startswith("."):
        # Sphinx: a leading dot looks the name up relative to where the docstring is.
        scopes = module.__name__.split(".")
        return any(
            resolve_absolute(".".join(scopes[:cut]) + target) for cut in range(len(scopes), 0, -1)
        )
    names = target.split(".")
    # The enclosing classes, innermost first (:meth:`segment` inside Segmenter), then the
    # module's globals; a name that fails there may still be absolute (pspnet.models.pspnet
    # shadows the package for pspnet.models).
    depths = range(len(reference.classes), -1, -1)
    if any(attributes(module, [*reference.classes[:depth], *names]) for depth in depths):
        return True
    if names[0] in imports and resolve_absolute(".".join([imports[names[0]], *names[1:]])):
        return True
    return attributes(builtins, names) or resolve_absolute(target)


def unresolved(root: Path, package: str) -> list[str]:
    """``file:line: reference`` for every reference under ``root/package`` that names nothing."""
    problems = []
    for path in sorted((root / package).rglob("*.py")):
        if path.name == "__main__.py":
            continue  # importing it runs the program
        name = module_name(path, root)
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(root)
        try:
            module = importlib.import_module(name)
        except Exception as err:  # any failure: the module's references cannot be checked
            problems.append(f"{where}:1: cannot import {name} ({type(err).__name__}: {err})")
            continue
        imports = imported_names(tree, name, path.name == "__init__.py")
        for reference in references(tree, package):
            try:
                found = resolves(reference, module, imports)
            except Exception as err:  # a module it names fails to import
                problems.append(f"{where}:{reference.line}: {reference.written} ({err!r})")
            else:
                if not found:
                    problems.append(f"{where}:{reference.line}: {reference.written}")
    return problems


def test_every_reference_in_a_docstring_names_something_that_exists():
    problems = unresolved(PACKAGE.parent, "pspnet")
    assert not problems, "docstrings name what does not exist:\n" + "\n".join(problems)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An importable package ``xrefs`` in tmp_path, its modules written by the test."""
    (tmp_path / "xrefs").mkdir()
    (tmp_path / "xrefs" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "xrefs" or m.startswith("xrefs.")]:
        del sys.modules[name]


def test_the_check_finds_what_is_missing_and_accepts_what_is_there(package):
    (package / "xrefs" / "tools.py").write_text(
        '"""Tools; :func:`xrefs.tools.gone` and :mod:`.missing` are not here."""\n'
        "import json\n"
        "from xrefs import helpers as h\n\n\n"
        "class Box:\n"
        '    """Holds :attr:`size` and :meth:`open`; :meth:`Box.close` is gone."""\n\n'
        "    size: int\n\n"
        "    def open(self):\n"
        '        """Found: :func:`json.loads`, :func:`~h.helper`, :class:`ValueError`,\n'
        "        :func:`xrefs.helpers.helper`, :mod:`.helpers`, xrefs.tools.Box.size. Missing:\n"
        '        :func:`h.nothing`, :func:`nowhere`, xrefs.no_such_module."""\n'
    )
    (package / "xrefs" / "helpers.py").write_text("def helper():\n    pass\n")
    problems = unresolved(package, "xrefs")
    assert problems == [
        "xrefs/tools.py:1: :func:`xrefs.tools.gone`",
        "xrefs/tools.py:1: :mod:`.missing`",
        "xrefs/tools.py:7: :meth:`Box.close`",
        "xrefs/tools.py:14: :func:`h.nothing`",
        "xrefs/tools.py:14: :func:`nowhere`",
        "xrefs/tools.py:14: xrefs.no_such_module",
    ]
