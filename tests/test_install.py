"""The install tells the truth: the Python and torch floors in pyproject.toml hold."""

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Published torch advisories -> the first release that fixes them (pyproject.toml names each).
TORCH_ADVISORIES = {
    "CVE-2025-32434": "2.6.0",  # torch.load(weights_only=True) runs code, GHSA-53q9-r3pm-6pq6
    "CVE-2025-2953": "2.7.1",  # mkldnn_max_pool2d denial of service, GHSA-3749-ghw9-m3mg
    "CVE-2025-3730": "2.8.0",  # ctc_loss denial of service, GHSA-887c-mr87-cxwp
    "CVE-2025-2999": "2.9.1",  # unpack_sequence memory corruption
    "CVE-2025-3001": "2.10.0",  # lstm_cell memory corruption
    "CVE-2026-24747": "2.10.0",  # weights_only unpickler memory corruption, GHSA-63cw-57p8-fm3p
    "CVE-2025-3000": "2.13.0",  # torch.jit.script memory corruption, GHSA-rrmf-rvhw-rf47
}


def python_floor() -> tuple[int, int]:
    """``requires-python = ">=3.11"`` -> (3, 11); any other form is refused, to be read here."""
    spec = PROJECT["project"]["requires-python"]
    assert spec.startswith(">=") and "," not in spec, f"expected '>=X.Y', got {spec!r}"
    return tuple(int(part) for part in spec.removeprefix(">=").split(".")[:2])


def dependency(name: str) -> Requirement:
    found = [Requirement(d) for d in PROJECT["project"]["dependencies"]]
    return next(r for r in found if r.name == name)


def vermin(*paths: Path) -> list[str]:
    """vermin's parsable lines (``file:line:col:py2:py3:feature``) for ``paths``; the last one,
    ``:::py2:py3:``, holds the minimum over every file.

    ``--eval-annotations``: config.build reads the dataclasses' annotations with
    typing.get_type_hints, so ``X | None`` in them runs, whatever ``from __future__`` says.
    No ``--backport``: pspnet imports no backport package (typing_extensions, tomli ...).
    """
    pytest.importorskip("vermin")  # the dev extra installs it
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    options = ["--no-config-file", "--no-tips", "--eval-annotations", "--format", "parsable"]
    done = subprocess.run(
        [*command, *options, *map(str, paths)], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def required(line: str) -> tuple[int, int]:
    """The Python 3 version a parsable line requires: ``3.11`` -> (3, 11), ``~3`` -> (3, 0);
    ``!3`` (no Python 3 has it, as vermin reads it) is above any floor, so it is shown."""
    version = line.split(":")[-2]
    if version.startswith("!"):
        return (99, 0)
    major, _, minor = version.lstrip("~").partition(".")
    return int(major), int(minor or 0)


def test_the_python_floor_covers_everything_the_package_uses():
    lines = vermin(ROOT / "pspnet")
    floor = python_floor()
    above = "\n".join(line for line in lines[:-1] if required(line) > floor)
    assert required(lines[-1]) <= floor, f"needs more than Python {floor}:\n{above}"


def test_vermin_sees_what_a_lower_floor_would_break(tmp_path):
    # What pspnet serve waits with: with a floor of 3.10 the test above fails.
    (tmp_path / "serve.py").write_text("import asyncio\n\nasync def f():\n    asyncio.timeout(1)\n")
    assert required(vermin(tmp_path)[-1]) == (3, 11)


def test_ruff_targets_the_python_floor():
    major, minor = python_floor()
    assert PROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"


def test_the_torch_floor_is_past_every_known_advisory():
    (clause,) = dependency("torch").specifier
    assert clause.operator == ">=", f"expected torch>=X, got torch{clause}"
    unfixed = {
        cve: fixed
        for cve, fixed in TORCH_ADVISORIES.items()
        if Version(clause.version) < Version(fixed)
    }
    assert not unfixed, f"torch{clause} allows releases these advisories affect: {unfixed}"


def test_the_installed_torch_satisfies_the_floor():
    requirement = dependency("torch")
    installed = version("torch")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"torch {installed} installed, pyproject.toml requires torch{requirement.specifier}"
    )
