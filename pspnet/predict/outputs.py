"""What a prediction leaves on disk: each input's output names, its files, written atomically.

``predict`` (images), Ray Data's batch inference and the video outputs name and write their
files here, so the same input gets the same outputs whichever path segments it.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pspnet.errors import DatasetError
from pspnet.files import atomic_write
from pspnet.inference import Segmentation
from pspnet.inference.result import UNKNOWN_NAME
from pspnet.visualize import colorize, format_shares, label_png, overlay

SUFFIXES = ("_label.png", "_color.png", "_overlay.png")
OUTPUT_SUFFIXES = (*SUFFIXES, "_confidence.png", "_probs.npy")


@dataclass(frozen=True)
class PredictionResult:
    """One input's outcome: the files written, or why it was skipped.

    Attributes:
        path: the input image.
        outputs: the files it has in the output folder.
        shares: its class shares, formatted ("" when it was not segmented now).
        error: why the input could not be read, or None.
        done_before: its outputs were all there already, so it was not segmented again.
        confidence: its mean confidence (NaN when it was not segmented now).
        unknown: the share of its pixels under ``unknown_below`` (0 without it).
        class_shares: each present class's share of its pixels.
    """

    path: Path
    outputs: tuple[Path, ...] = ()
    shares: str = ""
    error: str | None = None
    done_before: bool = False
    confidence: float = float("nan")
    unknown: float = 0.0
    class_shares: dict[str, float] = field(default_factory=dict)


def output_names(files: Sequence[Path]) -> dict[Path, Path]:
    """Each input's outputs' name: its path below the inputs' common folder, less its suffix.

    ``predict photos/`` mirrors the folder tree, so two ``x.jpg`` in different subfolders keep
    apart; a single image is named by its stem.

    Raises:
        DatasetError: two inputs would share outputs (``x.png`` and ``x.jpg`` in one folder),
            naming both, before any work.
    """
    if not files:
        return {}
    common = common_folder(files)
    names = {
        path: Path(os.path.abspath(path)).relative_to(common).with_suffix("") for path in files
    }
    seen: dict[Path, Path] = {}
    for path, name in names.items():
        if name in seen:
            raise DatasetError(
                f"{seen[name]} and {path} would both write {name}_label.png ...; rename one, "
                "or predict them into different --out folders"
            )
        seen[name] = path
    return names


def common_folder(files: Sequence[Path]) -> Path:
    """The deepest folder holding every file (absolute)."""
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in files]))


def output_paths(
    out_dir: Path, name: Path, *, save_probs: bool = False, confidence: bool = False
) -> tuple[Path, ...]:
    """NAME_label.png, NAME_color.png, NAME_overlay.png (NAME_confidence.png, NAME_probs.npy)
    in ``out_dir``, NAME as :func:`output_names` gives it (subfolders included)."""
    suffixes = [*SUFFIXES] + ["_confidence.png"] * confidence + ["_probs.npy"] * save_probs
    return tuple(out_dir / f"{name}{suffix}" for suffix in suffixes)


def write_outputs(
    image: np.ndarray, result: Segmentation, path: Path, outputs: tuple[Path, ...]
) -> PredictionResult:
    """Write one image's outputs (:func:`output_paths`), each atomically.

    Args:
        image: the input, (H, W, 3) uint8 RGB.
        result: its segmentation.
        path: the input's path, named in the result.
        outputs: where to write, as :func:`output_paths` names them.
    """
    for target in outputs:
        suffix = next(s for s in OUTPUT_SUFFIXES if target.name.endswith(s))
        if suffix == "_probs.npy":
            probs = result.probs.astype(np.float16)
            atomic_write(target, lambda tmp, probs=probs: _save_array(tmp, probs))
        else:
            picture = _picture(suffix, image, result)
            atomic_write(target, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
    return summarised(
        PredictionResult(path, outputs, format_shares(list(result.shares().items()))), result
    )


def summarised(record: PredictionResult, result: Segmentation) -> PredictionResult:
    """``record`` with the segmentation's mean confidence, unknown share and class shares."""
    shares = {name: share for name, share in result.shares().items() if name != UNKNOWN_NAME}
    return dataclasses.replace(
        record,
        confidence=float(result.confidence.mean()),
        unknown=result.unknown_share(),
        class_shares=shares,
    )


def write_summary(path: Path, results: list[PredictionResult], class_names: Sequence[str]) -> Path:
    """One CSV row per segmented image, least confident first: what to label next. Columns:
    the image, its mean confidence, its share of unknown pixels and each class's share."""
    rows = sorted(
        (r for r in results if r.error is None and not r.done_before),
        key=lambda r: (r.confidence, str(r.path)),
    )

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as file:
            table = csv.writer(file)
            table.writerow(["image", "mean_confidence", "unknown_share", *class_names])
            for r in rows:
                shares = [f"{r.class_shares.get(name, 0.0):.4f}" for name in class_names]
                table.writerow([str(r.path), f"{r.confidence:.4f}", f"{r.unknown:.4f}", *shares])

    atomic_write(path, write)
    return path


def _picture(suffix: str, image: np.ndarray, result: Segmentation) -> Image.Image:
    labels, palette = result.labels, result.palette
    if suffix == "_label.png":
        return label_png(labels, palette)
    if suffix == "_color.png":
        return Image.fromarray(colorize(labels, palette))
    if suffix == "_overlay.png":
        return overlay(image, labels, palette, class_names=result.class_names, unknown=UNKNOWN_NAME)
    return Image.fromarray(result.confidence_png_values())  # _confidence.png


def _save_array(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file object: np.save would add ".npy" to a name
        np.save(file, array)
