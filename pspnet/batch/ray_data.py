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
from pathlib import Path
from typing import Any

import numpy as np

from pspnet.files import make_folder
from pspnet.inference import Segmenter
from pspnet.predict import output_paths, write_outputs


class SegmentImages:
    """A ``map_batches`` callable: each image of a batch segmented, its PNGs written.

    Args:
        checkpoint: a file, a registry name or a URL (each actor loads it once).
        out_dir: where the label, colour and overlay PNGs go (as ``pspnet predict`` names
            them, by the input's file stem); None writes nothing.
        device: "cpu" or "cuda" (give the actors ``num_gpus`` for the latter).
        unknown_below: label pixels whose confidence is under this as unknown (255).
        **inference: InferenceConfig fields, as for ``Segmenter.from_checkpoint``.

    Call:
        ``batch["image"]``: (N, H, W, 3) uint8 RGB, or N arrays of different sizes;
        ``batch["path"]``: N paths (``read_images(..., include_paths=True)``). Returns
        ``{"path", "label_png", "classes", "shares", "confidence"}``: the written label PNG,
        the classes present, the shares of every pixel (JSON, "unknown" included) and each
        present class's mean confidence (JSON).
    """

    def __init__(
        self,
        checkpoint: str,
        out_dir: str | None = None,
        device: str = "cpu",
        unknown_below: float | None = None,
        **inference: Any,
    ):
        self.segmenter = Segmenter.from_checkpoint(checkpoint, device, **inference)
        self.out_dir = None if out_dir is None else make_folder(out_dir)
        self.unknown_below = unknown_below

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        rows: dict[str, list[str]] = {key: [] for key in COLUMNS}
        for image, path in zip(batch["image"], batch["path"], strict=True):
            image = np.ascontiguousarray(image, dtype=np.uint8)  # (H, W, 3)
            result = self.segmenter.segment(image, unknown_below=self.unknown_below)
            name = Path(str(path))
            written = ""
            if self.out_dir is not None:
                outputs = output_paths(self.out_dir, name)
                write_outputs(image, result, name, outputs)
                written = str(outputs[0])
            names = result.class_names
            rows["path"].append(str(path))
            rows["label_png"].append(written)
            rows["classes"].append(",".join(names[c] for c in result.present()))
            rows["shares"].append(json.dumps(result.shares()))
            confidence = {names[c]: v for c, v in result.mean_confidence().items()}
            rows["confidence"].append(json.dumps(confidence))
        return {key: np.array(values) for key, values in rows.items()}


COLUMNS = ("path", "label_png", "classes", "shares", "confidence")


def segment_with_ray(
    inputs: str | list[str],
    checkpoint: str,
    out_dir: str,
    actors: int = 1,
    batch_size: int = 4,
    **inference: Any,
) -> list[dict[str, str]]:
    """Read images with Ray Data, segment them in an actor pool, write PNGs; one row each.

    The end-to-end example in one call (``ray.init`` first for a cluster, or Ray starts a
    local one). Returns the rows of :class:`SegmentImages`.
    """
    import ray

    images = ray.data.read_images(inputs, include_paths=True, mode="RGB")
    done = images.map_batches(
        SegmentImages,
        fn_constructor_kwargs={"checkpoint": checkpoint, "out_dir": out_dir, **inference},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    return [{key: str(value) for key, value in row.items()} for row in done.iter_rows()]
