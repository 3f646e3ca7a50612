"""``pspnet predict`` on images: label, colour and overlay PNGs per image.

Built for large collections: the next images are read and decoded, and the finished ones
encoded and written, on threads while the network runs (where a core is spare for them, see
:func:`pspnet.readahead.io_threads`); every file is written atomically, so a killed run
leaves no half-written PNG, and a rerun skips images whose outputs are all there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pspnet.data.images import to_rgb
from pspnet.errors import DatasetError
from pspnet.files import make_folder
from pspnet.inference import Segmentation, Segmenter
from pspnet.predict.outputs import PredictionResult, output_names, output_paths, write_outputs
from pspnet.readahead import in_order, io_executor


def predict_images(
    segmenter: Segmenter,
    files: Sequence[Path],
    out_dir: str | Path,
    *,
    save_probs: bool = False,
    confidence: bool = False,
    unknown_below: float | None = None,
    redo: bool = False,
    names: dict[Path, Path] | None = None,
    limit: int | None = None,
    annotate: Callable[[Path, Segmentation], None] | None = None,
) -> Iterator[PredictionResult]:
    """Segment each file and write its outputs (see :func:`~pspnet.predict.outputs.output_paths`).

    Inputs whose outputs all exist are reported first and skipped (a resumed run), unless
    ``redo``; then the others in input order. An unreadable input, or one over ``limit``
    pixels, is reported in its result and skipped; the others go on.

    Args:
        segmenter: the model and its inference settings.
        files: image files.
        out_dir: output folder (created).
        save_probs: also write NAME_probs.npy, the (C, H, W) float16 probabilities.
        confidence: also write NAME_confidence.png (255 = probability 1).
        unknown_below: label pixels whose confidence is under this as unknown (255).
        redo: segment every input again, even those with all their outputs.
        names: each file's outputs' name (``output_names`` of every input, when ``files``
            is one process's shard of them); ``output_names`` of ``files`` when None.
        limit: the pixel limit of an input (e.g. :meth:`Segmenter.pixel_limit`); the decoders'
            when None.
        annotate: called with each segmented image's path and result, in input order (the
            pre-annotations of :mod:`pspnet.annotations`).

    Raises:
        DatasetError: two inputs would share outputs (before any work).
        InferenceError: the model failed on an image (e.g. out of memory), naming it.
    """
    names = output_names(files) if names is None else names
    out_dir = make_folder(out_dir)
    todo = []
    for path in files:
        outputs = output_paths(out_dir, names[path], save_probs=save_probs, confidence=confidence)
        if not redo and all(p.is_file() for p in outputs):
            yield PredictionResult(path, outputs, done_before=True)
        else:
            todo.append((path, outputs))

    def read(item: tuple[Path, tuple[Path, ...]]) -> tuple[Path, tuple[Path, ...], object]:
        path, outputs = item
        try:
            return path, outputs, to_rgb(path, limit)  # (H, W, 3) uint8
        except DatasetError as err:
            return path, outputs, str(err)

    def segment(read_items: Iterator) -> Iterator[tuple]:
        for path, outputs, image in read_items:
            if isinstance(image, str):
                yield path, outputs, None, image
            else:
                result = segmenter.segment(
                    image, probs=save_probs, unknown_below=unknown_below, name=path
                )
                if annotate is not None:
                    annotate(path, result)
                yield path, outputs, image, result

    def write(item: tuple) -> PredictionResult:
        path, outputs, image, result = item
        if image is None:
            return PredictionResult(path, error=result)
        return write_outputs(image, result, path, outputs)

    with io_executor(segmenter.device) as io:
        yield from in_order(io, write, segment(in_order(io, read, todo)))
