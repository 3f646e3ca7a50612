"""Limits every entry point shares, set before any decoder loads.

OpenCV reads its own pixel ceiling (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 by default) once, when
the library loads, so ``pspnet`` sets it to the project's limit on import, before anything
imports ``cv2``: a format our header check does not cover cannot reach a larger decode.
"""

from __future__ import annotations

import os

# The largest image decoded, in pixels; PSPNET_MAX_IMAGE_PIXELS overrides it. 100 megapixels
# is 50 Cityscapes frames and about 0.3 GB as RGB, 1.2 GB as the network's float input.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_VARIABLE = "PSPNET_MAX_IMAGE_PIXELS"
OPENCV_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


def set_decoder_ceiling() -> None:
    """Give OpenCV our pixel limit unless the user set its own."""
    os.environ.setdefault(
        OPENCV_VARIABLE, os.environ.get(MAX_PIXELS_VARIABLE, str(DEFAULT_MAX_PIXELS))
    )
