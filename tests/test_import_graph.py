"""The package's imports point one way: cli -> engine/segmenter -> models, data, checkpoints."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pspnet"

# What each part may import besides itself, the shared errors and the atomic file writes.
# Lazy imports inside functions count: a cycle through a function is still a cycle.
ALLOWED = {
    "models": set(),
    "data": set(),
    "weights": {"models"},
    "checkpoints": {"models", "weights", "data"},  # data: class names of published datasets
    "config": {"models", "data", "checkpoints"},  # checkpoints: what init_classifier takes
    "export": {"models"},
    "visualize": {"data"},
    # inference: the one routine, its result, the Segmenter and the fast paths.
    "inference": {"models", "data", "checkpoints", "config", "export", "weights"},
    "engine": {"models", "data", "checkpoints", "config", "inference", "visualize"},
    # predict: one module per kind of input over the inference routine; torchrun's shards.
    "predict": {
        "data",
        "inference",
        "visualize",
        "engine",
        "video",
        "rasters",
        "config",
        "annotations",
    },
    # annotations: predictions as the labelling tools' files; label maps in, files out.
    "annotations": set(),
    # rasters: GDAL scenes read by window, streamed through the routine, GeoTIFFs written.
    "rasters": {"data", "inference", "config"},
    "demo": {"models", "data", "checkpoints", "config", "engine", "inference", "visualize"},
    # batch and serve (the same, set below) sit above everything but the CLI: adapters over
    # the inference package.
    "batch": {"data", "inference", "visualize", "predict"},
    "reproduce": {"models", "data", "checkpoints", "config", "engine", "inference"},
    # benchmark: every inference path timed and scored through the one evaluation routine.
    "benchmark": {"models", "data", "checkpoints", "config", "engine", "inference", "weights"},
}
# serve tells a missing local checkpoint from a registry name or URL before it starts.
ALLOWED["serve"] = ALLOWED["batch"] | {"weights"}
ALLOWED["video"] = {"data", "inference", "visualize"}  # videos, cameras, streams
# settings: how settings dataclasses declare their fields; readahead: work kept a few ahead.
SHARED = {"errors", "files", "devices", "limits", "downloads", "settings", "readahead"}


def part(module: str) -> str:
    """``pspnet.engine.train`` -> ``engine``; ``pspnet`` itself -> ``pspnet``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def imports() -> dict[str, set[str]]:
    """Every pspnet module (dotted name) -> the pspnet modules it imports, anywhere in it."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {name for name in found if name.split(".")[0] == "pspnet"}
    return graph


def test_the_graph_is_read_from_the_whole_package():
    graph = imports()
    assert {"pspnet.cli", "pspnet.models.pspnet", "pspnet.engine.train"} <= set(graph)
    assert "pspnet.checkpoints" in graph["pspnet.engine.train"]  # a real edge is seen


def test_nothing_imports_the_cli():
    importers = [
        m for m, targets in imports().items() if "pspnet.cli" in targets and part(m) != "cli"
    ]
    assert importers == ["pspnet.__main__"]


def test_only_predict_and_the_cli_import_video():
    importers = {
        part(module)
        for module, targets in imports().items()
        if part(module) != "video" and any(part(target) == "video" for target in targets)
    }
    assert importers <= {"cli", "predict"}, sorted(importers)


@pytest.mark.parametrize("source", sorted(ALLOWED))
def test_each_part_imports_only_the_parts_below_it(source):
    wrong = {
        f"{module} -> {target}"
        for module, targets in imports().items()
        if part(module) == source
        for target in targets
        if part(target) not in ALLOWED[source] | SHARED | {source}
    }
    assert not wrong, sorted(wrong)


def test_models_import_no_other_package_module():
    wrong = {
        f"{module} -> {target}"
        for module, targets in imports().items()
        if part(module) == "models"
        for target in targets
        if part(target) != "models"
    }
    assert not wrong, sorted(wrong)


def test_the_allowed_parts_form_no_cycle():
    # Depth-first search over ALLOWED itself, so a future edit cannot allow a cycle.
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in ALLOWED.get(name, ()):
            assert state.get(target) != "open", " -> ".join([*trail, name, target])
            if target not in state:
                visit(target, [*trail, name])
        state[name] = "done"

    for name in ALLOWED:
        if name not in state:
            visit(name, [])
