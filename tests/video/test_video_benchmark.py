"""The video benchmark's measures on a tiny CamVid clip, so the script keeps up with the library."""

import numpy as np
from helpers import trained_like, write_tiny_camvid

from benchmarks.cpu import video
from pspnet.checkpoints import save_model
from pspnet.data.labels import read_label
from pspnet.data.presets import get_preset
from pspnet.inference import Segmenter
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet


def test_flicker_is_the_share_of_pixels_that_change_label():
    a, b = np.zeros((2, 5), np.uint8), np.zeros((2, 5), np.uint8)
    b[0, :2] = 1  # 2 of 10 pixels change
    assert video.flicker([a, b, b]) == (0.2 + 0.0) / 2
    b[1, :] = 255  # void in one of the frames: left out
    assert video.flicker([a, b], ignore=255) == 2 / 5


def test_smoothing_rows_score_every_weight_on_a_clip(tmp_path):
    root = write_tiny_camvid(tmp_path / "camvid", num_train=1, num_val=3)
    images = sorted((root / "val").glob("*.png"))
    frames = video.make_clip(images, tmp_path / "clip.mp4", fps=15)
    assert len(frames) == 3 and frames[0].shape == (40, 48, 3)
    model = tmp_path / "model.safetensors"
    save_model(trained_like(PSPNet(11, backbone="resnet18", base_width=4)), model)
    segmenter = Segmenter.from_checkpoint(
        model, inference=InferenceOverrides(mode="whole", flip=False)
    )
    truths = [read_label(root / "valannot" / p.name, get_preset("camvid")) for p in images]
    rows = video.smoothing_rows(segmenter, tmp_path / "clip.mp4", truths)
    assert [row[0] for row in rows] == list(video.WEIGHTS)
    assert all(0 <= flicker <= 1 and 0 <= miou <= 1 for _, flicker, miou, _ in rows)
