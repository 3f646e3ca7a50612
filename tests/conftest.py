"""Fixtures shared by the test folders: a tiny CamVid-layout dataset and trained-looking BN."""

from pathlib import Path

import pytest
from helpers import trained_like, write_tiny_camvid


@pytest.fixture
def tiny_camvid(tmp_path: Path) -> Path:
    return write_tiny_camvid(tmp_path / "camvid")


@pytest.fixture
def trained():
    """``helpers.trained_like``: random BatchNorm statistics and affine terms, as training
    would leave them, then eval(); folding, conversion and export need BatchNorm to change values.
    """
    return trained_like
