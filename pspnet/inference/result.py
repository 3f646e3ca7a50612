"""One image's segmentation: what every output (files, service, batch rows, eval) is made of."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspnet.data.presets import IGNORE_INDEX

UNKNOWN = IGNORE_INDEX  # the label of pixels under ``unknown_below``
UNKNOWN_NAME = "unknown"
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Segmentation:
    """Labels, confidence and (when asked) probabilities of one image, with its classes.

    Attributes:
        labels: (H, W) class indices (uint8 up to 255 classes, else int32); ``UNKNOWN``
            (255) where the confidence is under ``unknown_below``.
        confidence: (H, W) float32, each pixel's largest class probability (after the scales
            and flips are averaged).
        class_names: one name per class.
        palette: one RGB colour per class.
        probs: (C, H, W) float32 probabilities when asked for, else None.
        unknown_below: the confidence under which pixels are "unknown", or None.
        seconds: time spent segmenting.
    """

    labels: np.ndarray
    confidence: np.ndarray
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    probs: np.ndarray | None = None
    unknown_below: float | None = None
    seconds: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.labels.shape

    def counts(self) -> np.ndarray:
        """(C + 1,) pixels per class; the last entry counts unknown pixels."""
        counts = np.bincount(self.labels.ravel(), minlength=max(len(self.class_names), UNKNOWN + 1))
        return np.append(counts[: len(self.class_names)], counts[UNKNOWN])

    def present(self) -> list[int]:
        """The classes with at least one pixel, by index."""
        return np.flatnonzero(self.counts()[:-1]).tolist()

    def shares(self) -> dict[str, float]:
        """Share of the image's pixels per present class (and "unknown"), largest first."""
        counts = self.counts()
        names = [*self.class_names, UNKNOWN_NAME]
        shares = {names[i]: counts[i] / self.labels.size for i in np.flatnonzero(counts)}
        return dict(sorted(shares.items(), key=lambda item: -item[1]))

    def mean_confidence(self) -> dict[int, float]:
        """Each present class's mean confidence over its pixels: its mean probability there."""
        labels = self.labels.ravel()
        size = max(len(self.class_names), UNKNOWN + 1)
        sums = np.bincount(labels, weights=self.confidence.ravel(), minlength=size)
        counts = np.bincount(labels, minlength=size)
        return {c: float(sums[c] / counts[c]) for c in self.present()}

    def classes(self) -> list[dict]:
        """``[{id, name, color, share, confidence}]`` of the present classes, by index."""
        counts, confidence = self.counts(), self.mean_confidence()
        return [
            {
                "id": c,
                "name": self.class_names[c],
                "color": list(self.palette[c]),
                "share": float(counts[c] / self.labels.size),
                "confidence": confidence[c],
            }
            for c in self.present()
        ]

    def unknown_share(self) -> float:
        return float(self.counts()[-1] / self.labels.size)

    def confidence_png_values(self) -> np.ndarray:
        """(H, W) uint8 confidence, 255 = 1.0 (``NAME_confidence.png``)."""
        return np.clip(np.rint(self.confidence * 255), 0, 255).astype(np.uint8)


def compact_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels in the smallest type holding the classes and ``UNKNOWN``."""
    return labels.astype(np.uint8 if num_classes <= UNKNOWN else np.int32)
