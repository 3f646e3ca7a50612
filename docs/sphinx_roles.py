"""A griffe extension for the API pages: the docstrings' Sphinx roles become links.

The docstrings cross-reference in Sphinx's notation (:class:`Segmenter`, :mod:`.bands`,
:func:`~pspnet.predict.video.predict_video`; tests/test_cross_references.py checks each names
something), which Markdown would show as it is written. Each role becomes an optional
cross-reference: a link where the site documents the object, plain code where it does not.
Names are resolved as Sphinx does: a leading dot from the enclosing module and its parents, a
bare name from the enclosing classes, the module and its imports.
"""

from __future__ import annotations

import re

import griffe

# As tests/test_cross_references.py reads them: :func:`x`, :py:meth:`~a.B.c`, :class:`t <a.B>`.
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|mod|attr|exc|obj|const):`([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.docstring is None:
            return

        def link(match: re.Match) -> str:
            return _reference(obj, loader, match.group(1))

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)


def _reference(obj: griffe.Object, loader: griffe.GriffeLoader, written: str) -> str:
    title, target = written, written
    if "<" in written:  # :class:`title <target>`
        title, target = (part.strip(" >") for part in written.split("<", 1))
    if target.startswith("!"):  # Sphinx: no link
        return f"`{target[1:]}`"
    target = target.removesuffix("()")
    if target.startswith("~"):
        target = target[1:]
        title = target.rsplit(".", 1)[-1]
    elif "<" not in written:
        title = target.lstrip(".")
    path = _resolve(obj, loader, target)
    if path is None:
        return f"`{title}`"
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'


def _resolve(obj: griffe.Object, loader: griffe.GriffeLoader, target: str) -> str | None:
    """The full dotted path ``target`` names from ``obj``'s docstring, or None."""
    modules = loader.modules_collection
    if target.startswith("."):
        scopes = obj.module.path.split(".")
        candidates = [".".join(scopes[:cut]) + target for cut in range(len(scopes), 0, -1)]
    else:
        first, _, rest = target.partition(".")
        candidates = []
        try:
            resolved = obj.resolve(first)
            candidates.append(f"{resolved}.{rest}" if rest else resolved)
        except griffe.NameResolutionError:
            pass
        candidates.append(target)  # absolute: pspnet.x.y
    for path in candidates:
        try:
            modules[path]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return path
    return None
