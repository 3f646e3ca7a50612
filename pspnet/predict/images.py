"""Writing predictions people can use and look at: label, colour and overlay PNGs per image.

Built for large collections: the next images are read and decoded, and the finished ones
encoded and written, on threads while the network runs (where a core is spare for them, see
:func:`io_threads`); every file is written atomically,
so a killed run leaves no half-written PNG, and a rerun skips images whose outputs are all
there. Under torchrun each rank is given its own shard of the inputs (see the CLI).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pspnet.data.images import to_rgb
from pspnet.errors import DatasetError, InferenceError, PSPNetError
from pspnet.files import atomic_write, make_folder
from pspnet.inference import Segmentation, Segmenter
from pspnet.inference.result import UNKNOWN_NAME
from pspnet.visualize import colorize, format_shares, overlay

# Images decoded ahead of the network, and outputs waiting to be written: bounds memory.
PREFETCH = 4
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
    """

    path: Path
    outputs: tuple[Path, ...] = ()
    shares: str = ""
    error: str | None = None
    done_before: bool = False


def label_png(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> Image.Image:
    """A palette-indexed PNG image: pixel values are the class indices, shown in colour."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


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
    out_dir: Path, name: Path, save_probs: bool = False, confidence: bool = False
) -> tuple[Path, ...]:
    """NAME_label.png, NAME_color.png, NAME_overlay.png (NAME_confidence.png, NAME_probs.npy)
    in ``out_dir``, NAME as :func:`output_names` gives it (subfolders included)."""
    suffixes = [*SUFFIXES] + ["_confidence.png"] * confidence + ["_probs.npy"] * save_probs
    return tuple(out_dir / f"{name}{suffix}" for suffix in suffixes)


def predict_files(
    segmenter: Segmenter,
    files: Sequence[Path],
    out_dir: str | Path,
    save_probs: bool = False,
    redo: bool = False,
    confidence: bool = False,
    unknown_below: float | None = None,
    names: dict[Path, Path] | None = None,
    limit: int | None = None,
) -> Iterator[PredictionResult]:
    """Segment each file and write its outputs (see :func:`output_paths`).

    Inputs whose outputs all exist are reported first and skipped (a resumed run), unless
    ``redo``; then the others in input order. An unreadable input, or one over ``limit``
    pixels, is reported in its result and skipped; the others go on.

    Args:
        segmenter: the model and its inference settings.
        files: image files.
        out_dir: output folder (created).
        save_probs: also write NAME_probs.npy, the (C, H, W) float16 probabilities.
        redo: segment every input again, even those with all their outputs.
        confidence: also write NAME_confidence.png (255 = probability 1).
        unknown_below: label pixels whose confidence is under this as unknown (255).
        names: each file's outputs' name (:func:`output_names` of every input, when ``files``
            is one process's shard of them); :func:`output_names` of ``files`` when None.
        limit: the pixel limit of an input (e.g. :meth:`Segmenter.pixel_limit`); the decoders'
            when None.

    Raises:
        DatasetError: two inputs would share outputs (before any work).
        InferenceError: the model failed on an image (e.g. out of memory), naming it.
    """
    names = output_names(files) if names is None else names
    out_dir = make_folder(out_dir)
    todo = []
    for path in files:
        outputs = output_paths(out_dir, names[path], save_probs, confidence)
        if not redo and all(p.is_file() for p in outputs):
            yield PredictionResult(path, outputs, done_before=True)
        else:
            todo.append((path, outputs))
    with io_executor(segmenter) as io:
        reads = deque(io.submit(_read, path, limit) for path, _ in todo[:PREFETCH])
        writes: deque[Future] = deque()
        for index, (path, outputs) in enumerate(todo):
            image = reads.popleft().result()  # (H, W, 3) uint8, or an error message
            if index + PREFETCH < len(todo):
                reads.append(io.submit(_read, todo[index + PREFETCH][0], limit))
            if isinstance(image, str):
                writes.append(_done(PredictionResult(path, error=image)))
            else:
                result = segment_image(segmenter, image, path, save_probs, unknown_below)
                writes.append(io.submit(write_outputs, image, result, path, outputs))
            while writes and (writes[0].done() or len(writes) > PREFETCH):
                yield writes.popleft().result()
        while writes:
            yield writes.popleft().result()


def io_threads(segmenter: Segmenter) -> int:
    """Threads for reading and writing beside the network: 2 where a core is spare, else 0.

    On a CPU whose every core already runs the network's threads, I/O threads only take
    cores from it (measured slower, docs/benchmarks.md); on a GPU, or with cores to spare,
    they hide the I/O. ``$PSPNET_IO_THREADS`` overrides.
    """
    if "PSPNET_IO_THREADS" in os.environ:
        return max(0, int(os.environ["PSPNET_IO_THREADS"]))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    busy = torch.get_num_threads() * processes
    return 2 if segmenter.device.type != "cpu" or busy < (os.cpu_count() or 1) else 0


def io_executor(segmenter: Segmenter) -> Executor:
    threads = io_threads(segmenter)
    return ThreadPoolExecutor(threads, "pspnet-io") if threads else InlineExecutor()


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread (no I/O threads)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


def _read(path: Path, limit: int | None) -> np.ndarray | str:
    try:
        return to_rgb(path, limit)
    except DatasetError as err:
        return str(err)


def segment_image(
    segmenter: Segmenter,
    image: np.ndarray,
    name: Path | str,
    probs: bool,
    unknown_below: float | None,
) -> Segmentation:
    """``segmenter.segment``, a failure raised as an :class:`InferenceError` naming the input."""
    try:
        return segmenter.segment(image, probs=probs, unknown_below=unknown_below)
    except PSPNetError:
        raise
    except Exception as err:  # out of memory, a broken runtime: name the image it failed on
        raise InferenceError(f"{name}: inference failed ({type(err).__name__}: {err})") from err


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
    return PredictionResult(path, outputs, format_shares(list(result.shares().items())))


def _picture(suffix: str, image: np.ndarray, result: Segmentation) -> Image.Image:
    labels, palette = result.labels, result.palette
    if suffix == "_label.png":
        return label_png(labels, palette)
    if suffix == "_color.png":
        return Image.fromarray(colorize(labels, palette))
    if suffix == "_overlay.png":
        return overlay(image, labels, palette, class_names=result.class_names, unknown=UNKNOWN_NAME)
    return Image.fromarray(result.confidence_png_values())  # _confidence.png


def _done(result: PredictionResult) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def _save_array(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file object: np.save would add ".npy" to a name
        np.save(file, array)
