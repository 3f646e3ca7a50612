"""Label files as train ids: index, palette and colour PNGs, each recognised per file.

- index: a single-channel 8-bit PNG of stored values, mapped to train ids by the preset's
  table (``label_map``), as every benchmark ships them;
- palette: a paletted PNG; its indices are the stored values (PASCAL VOC's
  ``SegmentationClass``), not the colours they are drawn with;
- colour: an RGB(A) PNG (CVAT's "Segmentation mask" export, hand-painted masks) whose colours
  are the classes' colours, as a names file or a preset gives them. A colour that is no
  class's is an error naming the file, the colour, its pixel count and where the colours
  come from; alpha is dropped.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pspnet.data.images import decode, header_size, read_bytes
from pspnet.data.presets import IGNORE_INDEX, DatasetPreset
from pspnet.errors import DatasetError

__all__ = ["read_label", "read_stored_label"]


def read_label(path: str | Path, preset: DatasetPreset) -> np.ndarray:
    """A label file as (H, W) uint8 train ids, validated against the preset's classes.

    Raises:
        DatasetError: unreadable file, 16-bit or two-channel label, a colour that is no
            class, or values that are neither a class nor ignore (255); the message names the
            file and the fix.
    """
    path = Path(path)
    return stored_to_ids(read_stored_label(path), preset, path)


def stored_to_ids(stored: np.ndarray, preset: DatasetPreset, path: Path) -> np.ndarray:
    """Stored label values ((H, W) indices or (H, W, 3) colours) as (H, W) uint8 train ids,
    validated as :func:`read_label` does; ``path`` names them in errors."""
    if stored.ndim == 3:
        return colours_to_ids(stored, preset, path)
    label = preset.label_map[stored]
    invalid = (label >= preset.num_classes) & (label != IGNORE_INDEX)
    if invalid.any():
        values = np.unique(stored[invalid]).tolist()
        shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
        raise DatasetError(
            f"{path}: label values {shown} are not classes of the {preset.name!r} preset "
            f"({preset.num_classes} classes, {IGNORE_INDEX} ignored); map them with "
            "data.label_map (e.g. {VALUE: CLASS} or {VALUE: 255} to ignore), or check the preset"
        )
    return label


def read_stored_label(path: Path) -> np.ndarray:
    """The file's stored values: (H, W) uint8 indices, or (H, W, 3) uint8 RGB for colour PNGs."""
    data = read_bytes(path, "label")
    if _is_paletted(data):
        return _palette_indices(data, path)
    stored = decode(data, cv2.IMREAD_UNCHANGED, path, "label")
    if stored.dtype != np.uint8:
        raise DatasetError(
            f"{path}: label is {stored.dtype}; labels must be 8-bit PNGs (index, palette or RGB)"
        )
    if stored.ndim == 2:
        return stored
    if stored.shape[2] not in (3, 4):
        raise DatasetError(f"{path}: label has {stored.shape[2]} channels; expected 1, 3 or 4")
    return np.ascontiguousarray(stored[..., 2::-1])  # BGR(A) -> RGB, alpha dropped


def _palette_indices(data: np.ndarray, path: Path) -> np.ndarray:
    """A paletted PNG's (H, W) uint8 indices, not the colours they are drawn with; its size is
    checked against the pixel limit before decoding, and a broken file is one DatasetError."""
    header_size(data.tobytes(), path, "label")
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL's ways to say "broken"
        raise DatasetError(f"{path}: label cannot be decoded ({err}); re-save it as a PNG") from err


def _is_paletted(data: np.ndarray) -> bool:
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:  # the header only
            return image.mode == "P"
    except Exception:  # not an image PIL knows: OpenCV decides (and names the problem)
        return False


def colours_to_ids(rgb: np.ndarray, preset: DatasetPreset, path: Path) -> np.ndarray:
    """(H, W, 3) RGB colours -> (H, W) uint8 train ids through the preset's class colours."""
    if preset.colours_from is None:
        raise DatasetError(
            f"{path}: an RGB colour label, but the {preset.name!r} preset has no class colours; "
            "give a names file with 'name R G B' lines (or CVAT's labelmap.txt), or save the "
            "labels as single-channel index PNGs"
        )
    keys = _pack(rgb)  # (H, W) int32
    palette = _pack(np.asarray(preset.palette, dtype=np.uint8)[None])[0]  # (C,)
    order = np.argsort(palette)
    sorted_keys = palette[order]
    slot = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    known = sorted_keys[slot] == keys
    if not known.all():
        colours, counts = np.unique(keys[~known], return_counts=True)
        worst = np.argsort(-counts)[:5]
        shown = ", ".join(f"{_unpack(colours[i])} in {counts[i]:,} pixels" for i in worst) + (
            f" and {len(colours) - 5} more colours" if len(colours) > 5 else ""
        )
        raise DatasetError(
            f"{path}: colour(s) {shown} belong to no class of {preset.colours_from}; add each "
            "as a class there, or repaint those pixels"
        )
    return order[slot].astype(np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int32 ``R << 16 | G << 8 | B``."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(key: int) -> tuple[int, int, int]:
    return (int(key) >> 16 & 255, int(key) >> 8 & 255, int(key) & 255)
