"""What ``pspnet predict`` takes: inputs, outputs and how videos are read, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pspnet.errors import ConfigError
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
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
    inference: InferenceOverrides = field(default_factory=InferenceOverrides)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        check_settings(self)
        if bool(self.inputs) == (self.source is not None):
            raise ConfigError("give INPUT files, folders or globs, or --source SRC, not both")

    def check_kinds(self, videos: bool, images: bool) -> None:
        """Refuse options that apply to no input, so a mistyped command fails before any work.

        Args:
            videos: some input is a video or a live source.
            images: some input is an image.
        """
        image_only = ["--save-probs"] * self.save_probs + ["--confidence"] * self.confidence
        for used, given, kind in (
            (self.video.given(), videos, "videos"),
            (image_only, images, "images"),
        ):
            if used and not given:
                raise ConfigError(f"{', '.join(used)}: only for {kind}, and no input is one")
