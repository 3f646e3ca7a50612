"""A video's outputs under Ctrl+C: a frame goes into the overlay and the labels together."""

import os
import signal

import numpy as np
import pytest

from pspnet.inference import Segmentation
from pspnet.video.frames import VideoFrame
from pspnet.video.writer import VideoOutputs, interrupt_after


def test_ctrl_c_inside_the_block_is_raised_when_it_ends():
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupt_after():
            os.kill(os.getpid(), signal.SIGINT)
            finished = True
    assert finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class InterruptedWriter:
    """Stands in for OpenCV's writer: Ctrl+C arrives while a frame is being encoded."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, image: np.ndarray) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        self.writer.write(image)

    def release(self) -> None:
        self.writer.release()


def test_a_frame_interrupted_mid_write_still_gets_its_label(tmp_path):
    labels = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64) % 3
    result = Segmentation(
        labels,
        np.ones((48, 64), np.float32),
        ("a", "b", "c"),
        ((0, 0, 0), (255, 0, 0), (0, 255, 0)),
    )
    frame = VideoFrame(7, 0.28, np.zeros((48, 64, 3), np.uint8), result)
    outputs = VideoOutputs(tmp_path, "live", 25.0, (48, 64), save_labels=True)
    outputs._writer = InterruptedWriter(outputs._writer)
    with pytest.raises(KeyboardInterrupt):
        outputs.add(frame)
    assert outputs.frames == 1
    assert [p.name for p in outputs.staging.glob("*_label.png")] == ["000007_label.png"]
    outputs.finish()
    assert (tmp_path / "live" / "000007_label.png").is_file() and outputs.overlay.is_file()
