"""MkDocs hooks: ``reference/cli.md`` generated from the ``pspnet`` parser at build time.

The page is never committed, so it cannot drift from the parser. It is rendered in a fresh
interpreter on every build, so ``mkdocs serve`` (which watches ``pspnet/``) shows an edited
parser without a restart. That interpreter imports pspnet (and torch: seconds), so it starts
with the build and is waited for only when the page's turn comes, meanwhile the other pages
and the API reference are rendered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

CLI_PAGE = "reference/cli.md"
RENDER = "from pspnet.cli.reference import cli_reference; print(cli_reference(), end='')"

_rendering: dict[str, subprocess.Popen] = {}  # this build's renderer, by page


def on_pre_build(config: MkDocsConfig) -> None:
    root = Path(config.config_file_path).parent  # the repository: pspnet/ imports from here
    _rendering[CLI_PAGE] = subprocess.Popen(
        [sys.executable, "-c", RENDER],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def on_files(files: Files, config: MkDocsConfig) -> Files:
    stale = files.get_file_from_path(CLI_PAGE)
    if stale is not None:
        files.remove(stale)
    files.append(File.generated(config, CLI_PAGE, content=""))  # filled in below
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != CLI_PAGE:
        return markdown
    render = _rendering.pop(CLI_PAGE)
    out, err = render.communicate()
    if render.returncode != 0:
        raise PluginError(f"{CLI_PAGE} could not be generated:\n{err}")
    return out
