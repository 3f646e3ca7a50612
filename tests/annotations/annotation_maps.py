"""Small label maps whose every region is drawn by hand, and one realistic CamVid label."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

H, W = 32, 40
NAMES = ["sky", "road", "car", "person", "tree", "sign"]  # "sign" never appears
PALETTE = [
    (128, 128, 128),
    (128, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (128, 128, 0),
    (192, 128, 128),
]
CAMVID = Path("/work/shared/data/camvid/trainannot")
CAMVID_VOID = 11


def label_map() -> np.ndarray:
    """Several classes in nested holes, touching regions, lines, single pixels and 255 pixels.

    - sky (0) everywhere else, holding the rest in its holes;
    - a road (1) ring whose hole holds a car (2) whose hole holds a road island: depths 1-3;
    - a person (3) and a tree (4) rectangle side by side, touching;
    - 255 pixels on the top edge (open) and inside the tree (enclosed in its hole);
    - a 1-pixel car, a 1-pixel-wide person line, two tree pixels touching only diagonally
      (two regions under 4-connectivity).
    """
    labels = np.zeros((H, W), np.uint8)
    labels[4:16, 4:16] = 1
    labels[7:13, 7:13] = 2
    labels[9:11, 9:11] = 1
    labels[20:28, 4:12] = 3
    labels[20:28, 12:20] = 4
    labels[23:25, 15:17] = 255  # enclosed by the tree
    labels[0:3, 30:40] = 255  # on the image's edge
    labels[29, 30] = 2
    labels[16, 24:35] = 3
    labels[5, 25] = labels[6, 26] = 4
    return labels


def enclosed_filled(labels: np.ndarray) -> np.ndarray:
    """What outlines (no holes) give back for :func:`label_map`: the enclosed 255 is tree."""
    expected = labels.copy()
    expected[23:25, 15:17] = 4
    return expected


def confidence(labels: np.ndarray, seed: int, low: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, 1.0, labels.shape).astype(np.float32)


def camvid_label() -> np.ndarray:
    """The first CamVid train label (360 x 480, 11 classes), void as 255."""
    files = sorted(CAMVID.glob("*.png"))
    if not files:
        pytest.skip(f"no CamVid labels in {CAMVID}")
    labels = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    return np.where(labels == CAMVID_VOID, 255, labels).astype(np.uint8)


def write_image(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((height, width, 3), np.uint8))
    return path
