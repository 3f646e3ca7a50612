"""``pspnet predict`` on raster scenes: georeferenced label (and confidence) GeoTIFFs.

A scene is segmented at its own resolution by sliding windows of the model's crop, streamed
(:func:`pspnet.rasters.segment.segment_scene`), so memory follows a row of windows whatever
the scene's size. A checkpoint's photo-sized test resize (CamVid's ``base_size: 240``) would
shrink a 12,000-pixel scene to a thumbnail: it is set aside, and said so, unless the command
asks for a resize itself; then the scene must fit the memory budget, as an image does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pspnet.config import InferenceConfig
from pspnet.engine.distributed import Process, sum_over_ranks
from pspnet.errors import DatasetError
from pspnet.inference import Segmenter
from pspnet.inference.protocol import segment_tensor
from pspnet.inference.settings import InferenceOverrides
from pspnet.inference.streaming import check_streamable
from pspnet.predict.settings import PredictSettings
from pspnet.rasters.outputs import NODATA, SceneOutputs
from pspnet.rasters.scene import Scene, gdal_env
from pspnet.rasters.segment import segment_scene

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SceneResult:
    """What a scene gave.

    Attributes:
        source: the scene's path.
        outputs: the files written (or found, when done before).
        size: (height, width) of the scene.
        set_aside: the checkpoint's resize settings set aside, as words ("" when none).
        done_before: its outputs were all there, so it was not segmented again.
    """

    source: Path
    outputs: tuple[Path, ...]
    size: tuple[int, int] = (0, 0)
    set_aside: str = ""
    done_before: bool = False


def scene_inference(
    recorded: InferenceConfig, given: InferenceOverrides
) -> tuple[InferenceConfig, str]:
    """The settings a scene is segmented with: the checkpoint's, less the resizes the command
    did not ask for (base_size, fit_within, scales, whole mode); and what was set aside."""
    resets = {}
    if given.base_size is None and recorded.base_size is not None:
        resets["base_size"] = None
    if given.fit_within is None and recorded.fit_within is not None:
        resets["fit_within"] = None
    if given.scales is None and tuple(recorded.scales) != (1.0,):
        resets["scales"] = (1.0,)
    if given.mode is None and recorded.mode != "slide":
        resets["mode"] = "slide"
    said = ", ".join(f"{k} {_shown(getattr(recorded, k))}" for k in resets)
    return dataclasses.replace(recorded, **resets), said


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def scene_paths(out_dir: Path, name: Path, settings: PredictSettings) -> tuple[Path, ...]:
    """The outputs a scene gets: NAME_label.tif (NAME_confidence.tif, NAME_label.gpkg)."""
    paths = [out_dir / f"{name}_label.tif"]
    if settings.confidence:
        paths.append(out_dir / f"{name}_confidence.tif")
    if settings.raster.vector:
        paths.append(out_dir / f"{name}_label.gpkg")
    return tuple(paths)


def predict_scene(
    segmenter: Segmenter,
    path: Path,
    out_dir: Path,
    name: Path,
    settings: PredictSettings,
    *,
    pixel_limit: int,
    process: Process | None = None,
    progress: Progress | None = None,
) -> SceneResult:
    """Segment one scene into its georeferenced outputs (see :func:`scene_paths`).

    Under torchrun every rank segments its strip of rows into its own temporary files, and
    rank 0 merges them into the outputs, equal to one process's.

    Raises:
        DatasetError: the scene cannot be read, or a resize was asked for a scene beyond the
            memory budget (``pixel_limit``).
    """
    with gdal_env():  # memory follows a row of windows, GDAL's cache included
        return _predict_scene(
            segmenter,
            path,
            out_dir,
            name,
            settings,
            pixel_limit=pixel_limit,
            process=process,
            progress=progress,
        )


def _predict_scene(segmenter, path, out_dir, name, settings, *, pixel_limit, process, progress):
    expected = scene_paths(out_dir, name, settings)
    if not settings.redo and all(p.is_file() for p in expected):
        return SceneResult(path, expected, done_before=True)
    config, set_aside = scene_inference(segmenter.inference, settings.inference)
    process = process or Process(0, 1, segmenter.device)
    raster = settings.raster
    channels = segmenter.checkpoint.config.in_channels
    trained = segmenter.normalization
    bands = raster.bands or (None if trained.eight_bit_rgb else trained.bands)  # else as trained
    with Scene(path, bands=bands, channels=channels, nodata=raster.nodata) as scene:
        size = (scene.height, scene.width)
        strips = [
            strip(scene.height, rank, process.world_size) for rank in range(process.world_size)
        ]
        outputs = SceneOutputs(
            scene,
            out_dir,
            name,
            segmenter.class_names,
            segmenter.palette,
            confidence=settings.confidence,
            rank=process.rank,
        )
        try:
            rows = strips[process.rank]
            _segment(
                segmenter,
                scene,
                outputs,
                config,
                settings=settings,
                pixel_limit=pixel_limit,
                progress=progress,
                rows=rows,
            )
        except BaseException:
            outputs.discard()
            raise
    if process.world_size > 1:
        outputs.close()
        sum_over_ranks([0], process)  # every strip is written
        if not process.is_main:
            sum_over_ranks([0], process)  # rank 0 has put the outputs in place
            return SceneResult(path, expected, size, set_aside)
        outputs.merge(strips)
    written = _finish(outputs, segmenter, out_dir, name, settings)
    if process.world_size > 1:
        sum_over_ranks([0], process)
    return SceneResult(path, tuple(written), size, set_aside)


def _finish(outputs: SceneOutputs, segmenter, out_dir, name, settings) -> list[Path]:
    """The GeoTIFFs in place, then the polygons when asked for."""
    from pspnet.rasters.vector import write_polygons

    written = outputs.finish()
    if settings.raster.vector:
        vector = out_dir / f"{name}_label.gpkg"
        write_polygons(outputs.label, vector, segmenter.class_names)
        written.append(vector)
    return written


def strip(height: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows of a scene: contiguous strips of (nearly) one size."""
    return height * rank // world_size, height * (rank + 1) // world_size


def _segment(segmenter, scene, outputs, config, *, settings, pixel_limit, progress, rows) -> None:
    """Streamed where the settings allow it; else whole, within the memory budget."""
    unknown_below = settings.unknown_below
    try:
        check_streamable(config)
    except ValueError as why:
        pixels = scene.height * scene.width
        if pixels > pixel_limit:
            raise DatasetError(
                f"{scene.path}: a {scene.width}x{scene.height} scene is beyond the memory "
                f"budget ({pixel_limit:,} pixels) for these settings ({why}); use --mode slide "
                "--scales 1, or raise --memory-budget-mb"
            ) from None
        pixels, valid = scene.read(0, 0, scene.height, scene.width)
        raw = segment_tensor(
            segmenter.network, segmenter.normalize(pixels), config, unknown_below=unknown_below
        )
        labels = raw.labels.cpu().numpy().astype("uint8")
        confidence = raw.confidence.cpu().numpy()
        labels[~valid], confidence[~valid] = NODATA, 0
        outputs.write(0, labels, confidence)
        return
    segment_scene(
        segmenter, scene, outputs, config, rows=rows, unknown_below=unknown_below, progress=progress
    )
