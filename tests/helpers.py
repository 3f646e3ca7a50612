"""Plain functions the tests share (fixtures live in conftest.py).

Imported as ``from helpers import ...``: pytest puts tests/ on ``sys.path`` when it loads
tests/conftest.py, for the test files in every sub-folder too.
"""

from pathlib import Path


def tiny_overrides(root: Path, **extra) -> list[str]:
    """``--set`` overrides for a seconds-long CPU run of a tiny PSPNet on ``root``."""
    values = {
        "model.backbone": "resnet18",
        "model.base_width": 4,
        "data.root": str(root),
        "data.crop_size": "[32,32]",
        "data.workers": 0,
        "batch_size": 2,
        "iterations": 6,
        "checkpoint_every": 2,
        "log_every": 1,
        "evaluation.mode": "whole",
        "evaluation.flip": "false",
        "device": "cpu",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
