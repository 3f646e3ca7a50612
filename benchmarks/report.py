"""Shared by the benchmark scripts: the CPU's name, the command line and docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
import shlex
import sys
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery table below was written by the script named in its section, with the "
    "command shown. Compare numbers only within one table: the CPU differs between machines.\n"
)


def cpu_model() -> str:
    """The CPU's model name and PyTorch's vector capability, e.g. 'AMD EPYC (AVX2), 2 threads'."""
    name = platform.processor() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        name = found.group(1).strip() if found else name
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name} ({capability}), {torch.get_num_threads()} threads"


def command_line() -> str:
    """How this script was run, as ``python -m benchmarks.FOLDER.NAME ...`` from the root."""
    return shlex.join(["python", "-m", module_name(sys.argv[0]), *sys.argv[1:]])


def module_name(script: str) -> str:
    """``.../benchmarks/cpu/latency.py`` (``python -m`` puts the file in argv[0]) as a module.

    A name that is no ``.py`` file is taken as a module name already (the tests set one).
    """
    parts = Path(script).with_suffix("").parts
    if not script.endswith(".py") or "benchmarks" not in parts:
        return script
    last = len(parts) - 1 - parts[::-1].index("benchmarks")
    return ".".join(parts[last:])


def write_section(title: str, body: str, path: Path = DOC) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md, keeping the others."""
    text = path.read_text() if path.is_file() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
