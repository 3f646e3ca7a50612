"""Ray Data: one Segmenter per actor, writing the same files as ``pspnet predict``.

::

    import ray
    from pspnet.batch import SegmentImages

    images = ray.data.read_images("s3://bucket/survey/", include_paths=True, mode="RGB")
    done = images.map_batches(
        SegmentImages,
        fn_constructor_kwargs={"checkpoint": "pspnet_r50-d8_4xb4-80k_ade20k-512x512",
                               "out_dir": "/shared/labels"},
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=4),  # or num_gpus=1 per actor
    )
    done.write_parquet("/shared/labels/index")  # or .materialize() / .iter_rows()
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pspnet.data.images import decode_image, expand_inputs, max_pixels
from pspnet.errors import ConfigError, PSPNetError
from pspnet.files import make_folder
from pspnet.inference import Segmenter
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.predict.outputs import common_folder, output_names, output_paths, write_outputs


class SegmentImages:
    """A ``map_batches`` callable: each image of a batch segmented, its PNGs written.

    A row whose image cannot be read or segmented (not an image, over the pixel limit) gets
    the reason in its ``error`` column and empty results; the other rows go on, as
    ``pspnet predict`` reports an image and carries on.

    Args:
        checkpoint: a file, a registry name or a URL (each actor loads it once).
        out_dir: where the label, colour and overlay PNGs go, named as ``pspnet predict``
            names them: the input's path below ``relative_to``, less its suffix; None writes
            nothing.
        device: "cpu" or "cuda" (give the actors ``num_gpus`` for the latter).
        unknown_below: label pixels whose confidence is under this as unknown (255).
        relative_to: the inputs' common folder; by default each input's whole path is
            mirrored (its drive or root dropped), so two inputs never share outputs.
        **inference: InferenceConfig fields, as for ``Segmenter.from_checkpoint``.

    Call:
        ``batch["path"]``: N paths, and ``batch["bytes"]`` (``read_binary_files``: decoded
        here as ``predict`` decodes files) or ``batch["image"]`` (``read_images``: (H, W, 3)
        uint8 RGB arrays). Returns :data:`COLUMNS`: the path, the written label PNG, the
        classes present, the shares of every pixel (JSON, "unknown" included), each present
        class's mean confidence (JSON) and the error ("" when none).
    """

    def __init__(
        self,
        checkpoint: str,
        out_dir: str | None = None,
        *,
        runtime: RuntimeSettings | None = None,
        inference: InferenceOverrides | None = None,
        unknown_below: float | None = None,
        relative_to: str | None = None,
    ):
        self.segmenter = Segmenter.from_checkpoint(checkpoint, runtime, inference)
        self.out_dir = None if out_dir is None else make_folder(out_dir)
        self.unknown_below = unknown_below
        self.relative_to = None if relative_to is None else Path(relative_to)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        rows: dict[str, list[str]] = {key: [] for key in COLUMNS}
        images = batch["bytes"] if "bytes" in batch else batch["image"]
        for data, path in zip(images, batch["path"], strict=True):
            try:
                row = self._segment(data, str(path))
            except PSPNetError as err:
                row = dict.fromkeys(COLUMNS, "") | {"path": str(path), "error": str(err)}
            for key in COLUMNS:
                rows[key].append(row[key])
        return {key: np.array(values) for key, values in rows.items()}

    def _segment(self, data: Any, path: str) -> dict[str, str]:
        if isinstance(data, (bytes, bytearray)):
            image = decode_image(bytes(data), path, max_pixels())
        else:
            image = np.ascontiguousarray(data, dtype=np.uint8)  # (H, W, 3)
        result = self.segmenter.segment(image, unknown_below=self.unknown_below)
        written = ""
        if self.out_dir is not None:
            outputs = output_paths(self.out_dir, self._name(path))
            write_outputs(image, result, Path(path), outputs)
            written = str(outputs[0])
        names = result.class_names
        confidence = {names[c]: v for c, v in result.mean_confidence().items()}
        return {
            "path": path,
            "label_png": written,
            "classes": ",".join(names[c] for c in result.present()),
            "shares": json.dumps(result.shares()),
            "confidence": json.dumps(confidence),
            "error": "",
        }

    def _name(self, path: str) -> Path:
        """The outputs' name: the path below ``relative_to``, else the whole path, no suffix."""
        full = Path(path)
        if self.relative_to is not None and full.is_relative_to(self.relative_to):
            return full.relative_to(self.relative_to).with_suffix("")
        return Path(*full.parts[1:] if full.anchor else full.parts).with_suffix("")


COLUMNS = ("path", "label_png", "classes", "shares", "confidence", "error")

# Ray's logical CPUs: reading files is I/O, so readers take a quarter of one each, and the
# actors share what is left, so that as many actors as CPUs still leave the readers room.
READER_CPUS = 0.25
LEAST_ACTOR_CPUS = 0.25


def actor_cpus(actors: int, cpus: float) -> float:
    """Logical CPUs per actor of a pool of ``actors`` on ``cpus``, readers' share set aside.

    Raises:
        ConfigError: the pool cannot run there, naming the numbers.
    """
    if actors < 1:
        raise ConfigError(f"actors must be at least 1, got {actors}")
    share = min(1.0, (cpus - READER_CPUS) / actors)
    if share < LEAST_ACTOR_CPUS:
        most = max(0, int((cpus - READER_CPUS) / LEAST_ACTOR_CPUS))
        raise ConfigError(
            f"{actors} actors do not fit {cpus:g} CPUs ({READER_CPUS} kept for reading, at "
            f"least {LEAST_ACTOR_CPUS} per actor): use at most {most}"
        )
    return share


def segment_with_ray(
    inputs: str | list[str],
    checkpoint: str,
    out_dir: str,
    *,
    actors: int = 1,
    batch_size: int = 4,
    runtime: RuntimeSettings | None = None,
    inference: InferenceOverrides | None = None,
    unknown_below: float | None = None,
) -> list[dict[str, str]]:
    """Read images with Ray Data, segment them in an actor pool, write PNGs; one row each.

    The end-to-end example in one call (``ray.init`` first for a cluster, or Ray starts a
    local one). Local inputs (files, folders, globs, ``@LIST``) are listed first, as
    ``pspnet predict`` lists them, and named as it names them (two inputs that would share
    outputs are refused before any work); the actors get the CPUs the readers leave (see
    :func:`actor_cpus`). Returns the rows of :class:`SegmentImages`; those with an ``error``
    could not be read or segmented.

    Args:
        inputs: paths as ``pspnet predict`` takes them, or URIs Ray reads (``s3://...``).
        checkpoint: a file, a registry name or a URL.
        out_dir: where the outputs go.
        actors: the pool's size.
        batch_size: images per call of an actor.
        runtime: device and fast path of each actor.
        inference: the checkpoint's inference settings to replace.
        unknown_below: label pixels whose confidence is under this as unknown (255).
    """
    import ray

    items = [inputs] if isinstance(inputs, str) else list(inputs)
    relative_to = None
    if not any("://" in str(item) for item in items):
        files = expand_inputs(items)
        output_names(files)  # refuses two inputs that would share outputs, before any work
        relative_to = str(common_folder(files))
        items = [os.path.abspath(f) for f in files]
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    share = actor_cpus(actors, ray.cluster_resources().get("CPU", 1.0))
    data = ray.data.read_binary_files(items, include_paths=True, num_cpus=READER_CPUS)
    done = data.map_batches(
        SegmentImages,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "out_dir": out_dir,
            "relative_to": relative_to,
            "runtime": runtime,
            "inference": inference,
            "unknown_below": unknown_below,
        },
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=share,
    )
    return [{key: str(value) for key, value in row.items()} for row in done.iter_rows()]
