"""A scene through the one inference routine, streamed: memory follows a row of windows."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pspnet.config import InferenceConfig
from pspnet.inference import Segmenter
from pspnet.inference.streaming import stream_segments
from pspnet.rasters.outputs import NODATA, SceneOutputs
from pspnet.rasters.scene import Scene

Progress = Callable[[int, int], None]


def segment_scene(
    segmenter: Segmenter,
    scene: Scene,
    outputs: SceneOutputs,
    config: InferenceConfig,
    *,
    rows: tuple[int, int] | None = None,
    unknown_below: float | None = None,
    progress: Progress | None = None,
) -> None:
    """Segment ``scene`` window by window and write each finished band of rows to ``outputs``.

    Nodata pixels are written as 255 (nodata) with confidence 0, and windows holding no valid
    pixel are not run through the network.

    Args:
        segmenter: the model; it normalises each window as training did.
        scene: the opened raster.
        outputs: where the rows go.
        config: the sliding-window settings (one scale, the scene's resolution).
        rows: the scene rows [first, last) to segment (a torchrun rank's strip).
        unknown_below: label pixels whose confidence is under this as unknown (255).
        progress: ``progress(windows_done, windows_total)``.
    """

    def read(top: int, left: int, height: int, width: int):
        pixels, valid = scene.read(top, left, height, width)
        return segmenter.normalize(pixels), torch.from_numpy(valid)

    size = (scene.height, scene.width)
    bands = stream_segments(
        segmenter.network,
        read,
        size,
        config,
        rows=rows,
        unknown_below=unknown_below,
        progress=progress,
    )
    for band in bands:
        labels = band.labels.to(torch.uint8).cpu().numpy()  # (rows, W); 255: unknown
        confidence = band.confidence.cpu().numpy() if outputs.confidence else None
        if scene.may_lack_data:
            invalid = ~scene.valid(band.first, 0, labels.shape[0], scene.width)
            labels[invalid] = NODATA
            if confidence is not None:
                confidence[invalid] = 0
        outputs.write(band.first, labels, confidence)
