"""Decoding only what can be size-checked first, under OpenCV's ceiling set to ours."""

import os
import subprocess
import sys

import numpy as np
import pytest

from pspnet.data.images import decode_image, read_image
from pspnet.errors import DatasetError, UnsupportedImageError

# A Radiance HDR header declaring 100000 x 100000 pixels: PIL cannot read it, OpenCV would.
HDR = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n" + bytes(64)


def test_formats_whose_size_cannot_be_checked_are_refused(tmp_path):
    with pytest.raises(UnsupportedImageError, match="upload"):
        decode_image(HDR, "upload")
    (tmp_path / "sky.hdr").write_bytes(HDR)
    with pytest.raises(DatasetError, match="sky.hdr: image is not an image in a format"):
        read_image(tmp_path / "sky.hdr")


def test_opencv_refuses_more_than_our_limit_even_when_called_directly():
    code = (
        "import pspnet, numpy as np, cv2\n"
        "ok, png = cv2.imencode('.png', np.zeros((100, 100, 3), np.uint8))\n"
        "try:\n"
        "    cv2.imdecode(png, cv2.IMREAD_COLOR)\n"
        "    print('decoded')\n"
        "except cv2.error:\n"
        "    print('refused')\n"
    )
    env = {**os.environ, "PSPNET_MAX_IMAGE_PIXELS": "5000"}
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "refused", done.stderr
    assert np.prod((100, 100)) > 5000
