"""Writing predictions people can use and look at: label, colour and overlay PNGs per image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pspnet.data.images import to_rgb
from pspnet.errors import DatasetError
from pspnet.files import make_folder
from pspnet.segmenter import Segmenter
from pspnet.visualize import class_shares, colorize, format_shares, overlay


@dataclass(frozen=True)
class PredictionResult:
    """One input's outcome: the files written and its class shares, or why it was skipped."""

    path: Path
    outputs: tuple[Path, ...] = ()
    shares: str = ""
    error: str | None = None


def label_png(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> Image.Image:
    """A palette-indexed PNG image: pixel values are the class indices, shown in colour."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def predict_files(
    segmenter: Segmenter, files: Sequence[Path], out_dir: str | Path, save_probs: bool = False
) -> Iterator[PredictionResult]:
    """Segment each file and write NAME_label.png, NAME_color.png and NAME_overlay.png.

    An unreadable input is reported in its result and skipped; the others go on.

    Args:
        segmenter: the model and its inference settings.
        files: image files.
        out_dir: output folder (created).
        save_probs: also write NAME_probs.npy, the (C, H, W) float16 probabilities.
    """
    out_dir = make_folder(out_dir)
    for path in files:
        try:
            image = to_rgb(path)
        except DatasetError as err:
            yield PredictionResult(path, error=str(err))
            continue
        probs = segmenter.probs(image)  # (C, H, W)
        label = probs.argmax(0)  # (H, W)
        stem = out_dir / path.stem
        outputs = [
            Path(f"{stem}_label.png"),
            Path(f"{stem}_color.png"),
            Path(f"{stem}_overlay.png"),
        ]
        label_png(label, segmenter.palette).save(outputs[0])
        Image.fromarray(colorize(label, segmenter.palette)).save(outputs[1])
        overlay(image, label, segmenter.palette, class_names=segmenter.class_names).save(outputs[2])
        if save_probs:
            outputs.append(Path(f"{stem}_probs.npy"))
            np.save(outputs[-1], probs.astype(np.float16))
        shares = format_shares(class_shares(label, segmenter.class_names))
        yield PredictionResult(path, tuple(outputs), shares)
