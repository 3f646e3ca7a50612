"""Opening and reading videos: files, a local HTTP stream, the selections and every error."""

import time

import cv2
import numpy as np
import pytest
from video_helpers import SIZE, decoded_frames, http_server, write_clip

from pspnet.errors import ConfigError, DatasetError
from pspnet.video.sources import (
    StreamStalled,
    VideoSource,
    is_video,
    parse_source,
    source_name,
)


@pytest.fixture
def clip(tmp_path):
    return write_clip(tmp_path / "clip.mp4", 12, fps=12)


def indices(video: VideoSource, read_ahead: int = 0) -> list[int]:
    return [index for index, _, _ in video.frames(read_ahead)]


def test_a_clip_reads_as_opencv_decodes_it_in_rgb(clip):
    with VideoSource(clip) as video:
        assert (video.kind, video.fps, video.size, video.frame_count) == ("file", 12, SIZE, 12)
        frames = list(video.frames())
    assert video.stop_reason == "end"
    expected = decoded_frames(clip)
    assert [index for index, _, _ in frames] == list(range(12))
    assert [seconds for _, seconds, _ in frames] == [i / 12 for i in range(12)]
    for (_, _, image), reference in zip(frames, expected, strict=True):
        assert image.dtype == np.uint8 and np.array_equal(image, reference)


@pytest.mark.parametrize("read_ahead", [0, 3])
def test_every_start_duration_and_max_frames_select_frames(clip, read_ahead):
    def kept(**selection) -> tuple[list[int], str | None, int | None]:
        with VideoSource(clip, **selection) as video:
            return indices(video, read_ahead), video.stop_reason, video.expected_frames()

    assert kept(every=3) == ([0, 3, 6, 9], "end", 4)
    assert kept(start=0.5) == ([6, 7, 8, 9, 10, 11], "end", 6)
    assert kept(start=0.5, duration=0.25) == ([6, 7, 8], "duration", 3)
    assert kept(start=0.5, duration=0.25, every=2) == ([6, 8], "duration", 2)
    assert kept(every=2, max_frames=2) == ([0, 2], "max_frames", 2)
    assert kept(start=5.0) == ([], "end", 0)  # past the end: nothing, no error


def test_videos_are_told_from_images_by_extension_then_by_content(tmp_path, clip):
    assert is_video(clip) and not is_video(tmp_path / "photo.png")
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(clip.read_bytes())
    assert is_video(renamed)
    avi = write_clip(tmp_path / "motion.avi", 2, fourcc="MJPG")
    (tmp_path / "motion.dat").write_bytes(avi.read_bytes())
    assert is_video(tmp_path / "motion.dat")
    heif = tmp_path / "photo.heic_without_suffix"
    heif.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(20))
    assert not is_video(heif)
    (tmp_path / "notes").write_text("hello")
    assert not is_video(tmp_path / "notes")


def test_sources_are_parsed_and_named():
    assert parse_source("0") == 0 and source_name(0) == "camera0"
    assert parse_source("rtsp://cam.local:554/live/ch1") == "rtsp://cam.local:554/live/ch1"
    assert source_name("rtsp://cam.local:554/live/ch1") == "ch1"
    assert source_name("http://127.0.0.1:8080/") == "127.0.0.1"
    assert source_name("https://x/a%20b.mjpg?token=1") == "a_20b"


def test_unreadable_videos_are_one_error_naming_them(tmp_path, clip):
    with pytest.raises(DatasetError, match="missing.mp4: no such video file"):
        VideoSource(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(DatasetError, match="empty.mp4: empty video file"):
        VideoSource(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video at all" * 50)
    with pytest.raises(DatasetError, match="text.mp4: cannot be opened as a video"):
        VideoSource(tmp_path / "text.mp4")
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # an MP4's index comes last
    with pytest.raises(DatasetError, match="cut.mp4: cannot be opened as a video .*truncated"):
        VideoSource(tmp_path / "cut.mp4")


def test_a_truncated_video_is_found_when_its_end_is_reached(tmp_path):
    full = write_clip(tmp_path / "full.mkv", 30)
    data = full.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with VideoSource(tmp_path / "cut.mkv") as video:
        with pytest.raises(DatasetError, match=r"cut.mkv: truncated .* of the 30 frames"):
            list(video.frames())
    with VideoSource(tmp_path / "cut.mkv", max_frames=2) as video:  # not reached: no error
        assert indices(video) == [0, 1]


def test_an_unsupported_codec_is_named_as_a_possible_cause(tmp_path):
    avi = write_clip(tmp_path / "clip.avi", 3, fourcc="MJPG").read_bytes()
    assert avi.count(b"MJPG") >= 1
    (tmp_path / "odd.avi").write_bytes(avi.replace(b"MJPG", b"ZZZZ"))  # no decoder has it
    with pytest.raises(DatasetError, match="odd.avi: cannot be opened .*codec"):
        VideoSource(tmp_path / "odd.avi")


def test_an_absent_camera_is_an_error_naming_it():
    with pytest.raises(DatasetError, match="camera 97: cannot be opened .*no such camera"):
        VideoSource(97)


def test_a_live_source_cannot_start_later():
    with pytest.raises(ConfigError, match="start cuts video files"):
        VideoSource("http://127.0.0.1:9/x.mjpg", start=2.0)


@pytest.mark.parametrize(
    "bad",
    [{"every": 0}, {"start": -1.0}, {"duration": 0.0}, {"max_frames": 0}, {"start": float("nan")}],
)
def test_selections_out_of_range_are_refused(clip, bad):
    with pytest.raises(ConfigError):
        VideoSource(clip, **bad)


def test_an_mjpeg_stream_and_a_file_over_http_are_read(tmp_path, clip):
    with http_server(tmp_path) as url:
        with VideoSource(f"{url}/live.mjpg", max_frames=6, every=2) as video:
            assert (video.kind, video.live, video.size) == ("stream", True, SIZE)
            frames = list(video.frames())
        assert [index for index, _, _ in frames] == [0, 2, 4, 6, 8, 10]
        assert video.stop_reason == "max_frames"
        assert all(b >= a for (_, a, _), (_, b, _) in zip(frames, frames[1:]))  # wall clock
        with VideoSource(f"{url}/clip.mp4") as video:
            assert len(list(video.frames())) == 12 and video.stop_reason == "end"


def test_a_live_source_stops_after_its_duration_of_recording(tmp_path):
    with http_server(tmp_path) as url, VideoSource(f"{url}/live.mjpg", duration=0.5) as video:
        began = time.monotonic()
        frames = list(video.frames())
    assert video.stop_reason == "duration" and 0.4 < time.monotonic() - began < 5
    assert 3 <= len(frames) <= 25  # 25 frames a second are served


def test_a_stalled_stream_is_reported_not_waited_on(tmp_path):
    with http_server(tmp_path) as url, VideoSource(f"{url}/stall.mjpg", stall_seconds=1) as video:
        began, got = time.monotonic(), []
        with pytest.raises(StreamStalled, match="stall.mjpg: stalled, no frame for 1 s"):
            for frame in video.frames():
                got.append(frame)
        assert len(got) == 5 and time.monotonic() - began < 10


def test_an_unreachable_stream_is_an_error_naming_it():
    with pytest.raises(DatasetError, match=r"http://127.0.0.1:9/x.mjpg: cannot be opened"):
        VideoSource("http://127.0.0.1:9/x.mjpg", stall_seconds=2)


def test_opencv_writes_the_codec_we_name():
    from pspnet.video.writer import video_codec

    fourcc, extension = video_codec()
    assert (fourcc, extension) in (("mp4v", ".mp4"), ("MJPG", ".avi"))
    assert cv2.VideoWriter_fourcc(*fourcc) > 0
