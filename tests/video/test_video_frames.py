"""The Python API: a video's segmentations equal ``Segmenter.segment`` on its decoded frames."""

import numpy as np
import pytest
from helpers import trained_like
from video_helpers import decoded_frames, write_clip

from pspnet.checkpoints import save_model
from pspnet.errors import ConfigError, InferenceError
from pspnet.inference import UNKNOWN, Segmentation, Segmenter
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet
from pspnet.video import ProbabilityAverage, VideoSource, segment_frames, segment_video


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(trained_like(PSPNet(11, backbone="resnet18", base_width=4)), path)
    return Segmenter.from_checkpoint(path, inference=InferenceOverrides(mode="whole", flip=False))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 10, fps=10)


@pytest.mark.parametrize("threads", ["0", "2"])
def test_each_frame_is_segmented_as_segment_would(segmenter, clip, threads, monkeypatch):
    monkeypatch.setenv("PSPNET_IO_THREADS", threads)  # read ahead on a thread, or not
    decoded = decoded_frames(clip)
    frames = list(segment_video(segmenter, clip, every=2, start=0.2))
    assert [(f.index, f.time) for f in frames] == [(2, 0.2), (4, 0.4), (6, 0.6), (8, 0.8)]
    for frame in frames:
        assert np.array_equal(frame.image, decoded[frame.index])
        expected = segmenter.segment(decoded[frame.index])
        assert np.array_equal(frame.segmentation.labels, expected.labels)
        assert np.array_equal(frame.segmentation.confidence, expected.confidence)
        assert frame.segmentation.probs is None


def test_smoothing_averages_probabilities_before_the_argmax(segmenter, clip):
    weight = 0.5
    frames = list(segment_video(segmenter, clip, smooth=weight, unknown_below=0.4))
    average = None
    for frame, image in zip(frames, decoded_frames(clip), strict=True):
        probs = segmenter.segment(image, probs=True).probs
        average = probs if average is None else weight * probs + (1 - weight) * average
        result = frame.segmentation
        np.testing.assert_allclose(result.probs, average, rtol=1e-6, atol=1e-7)
        labels = np.where(average.max(0) < 0.4, UNKNOWN, average.argmax(0))
        agree = np.mean(result.labels == labels)
        assert agree > 0.999  # ties within float rounding aside
        assert result.unknown_below == 0.4
    assert not np.shares_memory(frames[0].segmentation.probs, frames[1].segmentation.probs)


def test_a_weight_of_one_is_no_smoothing(segmenter, clip):
    plain = [f.segmentation.labels for f in segment_video(segmenter, clip, max_frames=3)]
    ones = [f.segmentation.labels for f in segment_video(segmenter, clip, max_frames=3, smooth=1)]
    assert all(np.array_equal(a, b) for a, b in zip(plain, ones, strict=True))


def test_smoothing_keeps_a_label_through_single_frame_dropouts():
    average = ProbabilityAverage(0.5)
    alone, smoothed = [], []
    for step in range(12):  # class 0 at 0.65, but every third frame the model drops to 0.4
        p = 0.4 if step % 3 == 2 else 0.65
        probs = np.array([p, 1 - p], np.float32).reshape(2, 1, 1)  # (C, H, W)
        result = Segmentation(
            probs.argmax(0).astype(np.uint8),
            probs.max(0),
            ("a", "b"),
            ((0, 0, 0), (255, 255, 255)),
            probs.copy(),
        )
        alone.append(int(result.labels[0, 0]))
        smoothed.append(int(average.update(result).labels[0, 0]))
    assert alone.count(1) == 4 and smoothed == [0] * 12


def test_a_weight_out_of_range_is_refused(segmenter, clip):
    with pytest.raises(ConfigError, match=r"smooth must be in \(0, 1\]"):
        next(segment_video(segmenter, clip, smooth=1.5))


def test_an_inference_failure_names_the_frame(segmenter, clip, monkeypatch):
    def fail(*args):
        raise RuntimeError("not enough memory")

    monkeypatch.setattr(segmenter, "_segment", fail)  # the routine under segment()
    with VideoSource(clip) as video, pytest.raises(InferenceError, match="clip.mp4 frame 0: "):
        next(segment_frames(segmenter, video))
