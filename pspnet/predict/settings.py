"""What ``pspnet predict`` takes: inputs, outputs and how videos are read, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pspnet.annotations import Format as AnnotationFormat
from pspnet.annotations import Shapes
from pspnet.errors import ConfigError
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.rasters.scene import parse_bands
from pspnet.settings import check_settings, setting
from pspnet.video.sources import STALL_SECONDS


@dataclass(frozen=True)
class VideoSettings:
    """Which frames of a video or live source are kept, and what they give.

    Attributes:
        save_labels: also NAME/NNNNNN_label.png for every kept frame (NNNNNN: its index).
        every: keep every N-th frame (the overlay's rate is the source's / N).
        start: skip a video file's first SEC seconds.
        duration: keep SEC seconds: of a file from start, of a live source's recording.
        max_frames: stop after N kept frames.
        smooth: average class probabilities over frames (weight A on the new frame) before
            the argmax: less flicker, a lag behind motion; 1 is off (see the benchmarks).
        stall_timeout: a camera or stream with no frame for SEC seconds has stalled: its
            outputs are kept and the stall reported.
    """

    save_labels: bool = False
    every: int = setting(1, low=1, metavar="N")
    start: float = setting(0.0, low=0, metavar="SEC")
    duration: float | None = setting(None, low=0, low_open=True, metavar="SEC")
    max_frames: int | None = setting(None, low=1, metavar="N")
    smooth: float | None = setting(None, low=0, low_open=True, high=1, metavar="A")
    stall_timeout: float = setting(STALL_SECONDS, low=0, low_open=True, metavar="SEC")

    def __post_init__(self) -> None:
        check_settings(self)

    def selection(self) -> dict:
        """The keywords of :class:`~pspnet.video.sources.VideoSource` these settings give."""
        return dict(
            every=self.every,
            start=self.start,
            duration=self.duration,
            max_frames=self.max_frames,
            stall_seconds=self.stall_timeout,
        )

    def given(self) -> list[str]:
        """The options set away from their defaults, as flags (to refuse them for images)."""
        return [
            "--" + name.replace("_", "-")
            for name, default in vars(VideoSettings()).items()
            if name != "stall_timeout" and getattr(self, name) != default
        ]


@dataclass(frozen=True)
class RasterSettings:
    """Raster scenes (GeoTIFF, JPEG 2000, VRT ...): georeferenced NAME_label.tif.

    Attributes:
        bands: the file's bands to read, 1-based in GDAL's order, e.g. 4,3,2 (default: the
            first bands the model takes; red, green, blue where the file names them).
        nodata: the value of pixels without data in a scene (default: the file's nodata
            value, mask or alpha band).
        vector: also NAME_label.gpkg: a polygon per region with its class name and area in
            map units.
    """

    bands: tuple[int, ...] | None = setting(None, parse=parse_bands, whole=True, metavar="B,B")
    nodata: float | None = setting(None, metavar="V")
    vector: bool = False

    def __post_init__(self) -> None:
        check_settings(self)

    def given(self) -> list[str]:
        """The options set away from their defaults, as flags (to refuse them for images)."""
        return [
            "--" + name
            for name, default in vars(RasterSettings()).items()
            if getattr(self, name) != default
        ]


@dataclass(frozen=True)
class LabellingSettings:
    """What to label next, and predictions as pre-annotations for labelling tools.

    Attributes:
        summary: write one row per image to this CSV, least confident first: its mean
            confidence, its share of pixels under --unknown-below, each class's share.
        annotations: also write the predictions as one file a labelling tool imports as
            editable shapes with the checkpoint's class names, least confident image first:
            cvat (annotations.xml), coco (instances.json), labelme (labelme/NAME.json) or
            labelstudio (labelstudio.json and its labelling config); pixels under
            --unknown-below are left unannotated.
        shapes: masks (exact: CVAT masks, COCO RLE, LabelMe masks, Label Studio brushes) or
            polygons (one outline per region, simplified by --polygon-tolerance).
        polygon_tolerance: how far (pixels) a simplified outline may stray from the region's.
    """

    summary: Path | None = setting(None, metavar="CSV")
    annotations: AnnotationFormat | None = None
    shapes: Shapes = "masks"
    polygon_tolerance: float = setting(0.5, low=0)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True, kw_only=True)
class PredictSettings:
    """``pspnet predict``: label, colour and overlay PNGs for images; overlay videos.

    Attributes:
        inputs: image and video files, folders (searched recursively), globs, or @LIST (a
            file of paths).
        source: a live source instead of INPUT: a camera index (0) or an rtsp:// or
            http(s):// stream; stopped by --max-frames, --duration or Ctrl+C, its outputs kept.
        checkpoint: a file, a registry name (pspnet models) or a URL.
        out: the output folder; inputs' folders are mirrored below it.
        save_probs: also NAME_probs.npy, the (C, H, W) float16 probabilities.
        confidence: also NAME_confidence.png: each pixel's largest class probability
            (255 = 1.0).
        unknown_below: label pixels whose confidence is under P as unknown (255; black in the
            pictures).
        memory_budget_mb: memory one image may cost (its decoded pixels, the network's logits
            and activations, the outputs; an estimate): larger images are skipped with a
            message, before decoding.
        redo: segment inputs again whose outputs are all there.
        video: videos and streams: NAME_overlay.mp4 (the frames' size and rate),
            NAME/*_label.png.
        raster: raster scenes: NAME_label.tif, a Cloud-Optimised GeoTIFF with the scene's
            georeference, the classes' names and colours (needs pspnet[geo]).
        labelling: the labelling loop: what to label next, pre-annotations.
        inference: inference settings (each replaces the checkpoint's own).
        runtime: device and fast path.
    """

    inputs: tuple[str, ...] = setting((), positional=True, nargs="*", metavar="INPUT")
    source: str | None = setting(None, metavar="SRC")
    checkpoint: str
    out: Path
    save_probs: bool = False
    confidence: bool = False
    unknown_below: float | None = setting(None, low=0, high=1, metavar="P")
    memory_budget_mb: float = setting(4096.0, low=0, low_open=True, metavar="MB")
    redo: bool = False
    video: VideoSettings = field(default_factory=VideoSettings)
    raster: RasterSettings = field(default_factory=RasterSettings)
    labelling: LabellingSettings = field(default_factory=LabellingSettings)
    inference: InferenceOverrides = field(default_factory=InferenceOverrides)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        check_settings(self)
        if bool(self.inputs) == (self.source is not None):
            raise ConfigError("give INPUT files, folders or globs, or --source SRC, not both")

    def check_kinds(self, *, videos: bool, images: bool, scenes: bool = False) -> None:
        """Refuse options that apply to no input, so a mistyped command fails before any work.

        Args:
            videos: some input is a video or a live source.
            images: some input is an image.
            scenes: some input is a raster scene.
        """
        labelling = self.labelling
        image_only = ["--save-probs"] * self.save_probs + ["--summary"] * bool(labelling.summary)
        image_only += ["--annotations"] * bool(labelling.annotations)
        confidence = ["--confidence"] * self.confidence
        for used, given, kind in (
            (self.video.given(), videos, "videos"),
            (image_only, images, "images"),
            (confidence, images or scenes, "images and scenes"),
            (self.raster.given(), scenes, "raster scenes"),
        ):
            if used and not given:
                raise ConfigError(f"{', '.join(used)}: only for {kind}, and no input is one")
