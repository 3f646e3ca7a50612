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

from pathlib import Path
from typing import Any

import numpy as np

from pspnet.files import make_folder
from pspnet.predict import output_paths, write_outputs
from pspnet.segmenter import Segmenter


class SegmentImages:
    """A ``map_batches`` callable: each image of a batch segmented, its PNGs written.

    Args:
        checkpoint: a file, a registry name or a URL (each actor loads it once).
        out_dir: where the label, colour and overlay PNGs go (as ``pspnet predict`` names
            them, by the input's file stem); None writes nothing.
        device: "cpu" or "cuda" (give the actors ``num_gpus`` for the latter).
        **inference: InferenceConfig fields, as for ``Segmenter.from_checkpoint``.

    Call:
        ``batch["image"]``: (N, H, W, 3) uint8 RGB, or N arrays of different sizes;
        ``batch["path"]``: N paths (``read_images(..., include_paths=True)``). Returns
        ``{"path", "label_png", "classes"}``: the written label PNG and the classes present.
    """

    def __init__(
        self,
        checkpoint: str,
        out_dir: str | None = None,
        device: str = "cpu",
        **inference: Any,
    ):
        self.segmenter = Segmenter.from_checkpoint(checkpoint, device, **inference)
        self.out_dir = None if out_dir is None else make_folder(out_dir)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        paths, labels, classes = [], [], []
        for image, path in zip(batch["image"], batch["path"], strict=True):
            image = np.ascontiguousarray(image, dtype=np.uint8)  # (H, W, 3)
            probs = self.segmenter.probs(image)  # (C, H, W)
            name = Path(str(path))
            written = ""
            if self.out_dir is not None:
                outputs = output_paths(self.out_dir, name, save_probs=False)
                write_outputs(self.segmenter, image, probs, name, outputs)
                written = str(outputs[0])
            present = np.unique(probs.argmax(0))
            paths.append(str(path))
            labels.append(written)
            classes.append(",".join(self.segmenter.class_names[c] for c in present))
        return {
            "path": np.array(paths),
            "label_png": np.array(labels),
            "classes": np.array(classes),
        }


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
    local one). Returns the rows ``{"path", "label_png", "classes"}``.
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
