"""``pspnet predict`` on videos and streams: the outputs, the cuts, interruptions and errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import trained_like
from PIL import Image
from video_helpers import SIZE, decoded_frames, http_server, video_facts, write_clip

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.errors import InferenceError, OutputError
from pspnet.inference import Segmenter
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet
from pspnet.predict.settings import VideoSettings
from pspnet.predict.video import predict_video
from pspnet.video import VideoSource

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(trained_like(PSPNet(11, backbone="resnet18", base_width=4)), path)
    return path


def predict(checkpoint, *args) -> int:
    return main(["predict", *map(str, args), "--checkpoint", str(checkpoint), "--mode", "whole"])


def labels_of(folder: Path) -> dict[int, np.ndarray]:
    return {int(p.name[:6]): np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("threads", ["0", "2"])  # serial, or decoding and encoding overlapped
def test_the_overlay_video_has_the_inputs_frames_size_and_rate(
    tmp_path, checkpoint, capsys, monkeypatch, threads
):
    monkeypatch.setenv("PSPNET_IO_THREADS", threads)
    clip = write_clip(tmp_path / "clip.mp4", 9, fps=12)
    assert predict(checkpoint, clip, "--out", tmp_path / "out", "--save-labels") == 0
    overlay = tmp_path / "out" / "clip_overlay.mp4"
    assert video_facts(overlay) == (9, SIZE, 12.0)
    out = capsys.readouterr().out
    assert f"clip.mp4: 9 frames -> {overlay} (mp4v, 12 fps, 64x48)" in out
    segmenter = Segmenter.from_checkpoint(checkpoint, inference=InferenceOverrides(mode="whole"))
    labels = labels_of(tmp_path / "out" / "clip")
    assert sorted(labels) == list(range(9))
    for index, frame in enumerate(decoded_frames(clip)):  # what predict gives that frame
        assert np.array_equal(labels[index], segmenter.segment(frame).labels), index
    assert Image.open(tmp_path / "out" / "clip" / "000004_label.png").mode == "P"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip", "clip_overlay.mp4"]


def test_every_start_duration_and_max_frames_cut_the_outputs(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "clip.mp4", 12, fps=12)
    cuts = {
        "every": (["--every", "3"], [0, 3, 6, 9], 4.0),
        "start": (["--start", "0.5", "--duration", "0.25"], [6, 7, 8], 12.0),
        "both": (["--start", "0.25", "--every", "2", "--max-frames", "2"], [3, 5], 6.0),
    }
    for name, (options, kept, fps) in cuts.items():
        out = tmp_path / name
        assert predict(checkpoint, clip, "--out", out, "--save-labels", *options) == 0
        assert sorted(labels_of(out / "clip")) == kept, name
        assert video_facts(out / "clip_overlay.mp4") == (len(kept), SIZE, fps), name


def test_videos_are_found_in_folders_and_lists_beside_images(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "drive.avi", 3, fourcc="MJPG")
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(folder / "photo.png")
    assert predict(checkpoint, folder, "--out", tmp_path / "out") == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["drive_overlay.mp4", "photo_color.png", "photo_label.png", "photo_overlay.png"]
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    listing = tmp_path / "list.txt"
    renamed = tmp_path / "drive_clip"  # no extension: known by its content
    renamed.write_bytes((folder / "drive.avi").read_bytes())
    listing.write_text(f"{renamed}\n")
    assert predict(checkpoint, f"@{listing}", "--out", tmp_path / "listed") == 0
    assert video_facts(tmp_path / "listed" / "drive_clip_overlay.mp4")[0] == 3
    assert predict(checkpoint, folder, "--out", tmp_path / "out") == 0  # a rerun: all there
    assert "0 prediction(s) to" in capsys.readouterr().out


def test_a_stream_is_recorded_until_max_frames(tmp_path, checkpoint, capsys):
    with http_server(tmp_path) as url:
        args = ["--source", f"{url}/live.mjpg", "--out", tmp_path / "out", "--save-labels"]
        assert predict(checkpoint, *args, "--max-frames", "4") == 0
    assert video_facts(tmp_path / "out" / "live_overlay.mp4")[:2] == (4, SIZE)
    assert sorted(labels_of(tmp_path / "out" / "live")) == [0, 1, 2, 3]
    assert "4 frames (--max-frames) -> " in capsys.readouterr().out


def test_a_stalled_stream_keeps_its_frames_and_is_reported(tmp_path, checkpoint, capsys):
    began = time.monotonic()
    with http_server(tmp_path) as url:
        args = ["--source", f"{url}/stall.mjpg", "--out", tmp_path / "out", "--stall-timeout", "1"]
        assert predict(checkpoint, *args) == 0
    assert time.monotonic() - began < 20
    assert video_facts(tmp_path / "out" / "stall_overlay.mp4")[0] == 5
    assert "5 frames (stalled: no frame for 1 s) -> " in capsys.readouterr().out


def run_until_labels(args: list[str], staging: Path, count: int) -> subprocess.Popen:
    """``pspnet predict ARGS`` in a process, returned once ``count`` label PNGs are staged."""
    run = subprocess.Popen(
        [sys.executable, "-m", "pspnet", "predict", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(staging.glob("*_label.png"))) < count:
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    return run


def test_ctrl_c_finalises_a_live_recording(tmp_path, checkpoint):
    out = tmp_path / "out"
    with http_server(tmp_path) as url:
        args = [
            "--source",
            f"{url}/live.mjpg",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--mode",
            "whole",
            "--save-labels",
        ]
        run = run_until_labels(args, out / ".live.part", 3)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    frames, size, _ = video_facts(out / "live_overlay.mp4")  # playable, every frame there
    assert frames >= 3 and size == SIZE and len(labels_of(out / "live")) == frames
    assert "(stopped by Ctrl+C)" in stdout and not (out / ".live.part").exists()


def test_a_killed_run_leaves_no_video_and_the_next_run_cleans_up(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "clip.mp4", 150, fps=25)
    out = tmp_path / "out"
    args = [
        str(clip),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--mode",
        "whole",
        "--save-labels",
    ]
    run = run_until_labels(args, out / ".clip.part", 3)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert [p.name for p in out.iterdir()] == [".clip.part"]  # nothing under a final name
    assert predict(checkpoint, clip, "--out", out, "--save-labels", "--max-frames", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip_overlay.mp4"]


def test_an_interrupted_or_failed_file_leaves_nothing(tmp_path, checkpoint, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", 6)
    segmenter = Segmenter.from_checkpoint(checkpoint, inference=InferenceOverrides(mode="whole"))
    segment = segmenter._segment  # the routine under segment(), which names a failed frame
    for error in (KeyboardInterrupt, RuntimeError):
        calls = []

        def fail_at_the_third(*args, error=error, calls=calls):
            calls.append(1)
            if len(calls) == 3:
                raise error("stop")
            return segment(*args)

        monkeypatch.setattr(segmenter, "_segment", fail_at_the_third)
        with VideoSource(clip) as video, pytest.raises((KeyboardInterrupt, InferenceError)):
            predict_video(
                segmenter, video, tmp_path / "out", "clip", VideoSettings(save_labels=True)
            )
        assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: d.joinpath("cut.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + bytes(99)),
            "cut.mp4: cannot be opened as a video",
        ),
        (
            lambda d: d.joinpath("odd.avi").write_bytes(
                write_clip(d / "src.avi", 2, fourcc="MJPG").read_bytes().replace(b"MJPG", b"ZZZZ")
            ),
            "odd.avi: cannot be opened as a video (not a video, truncated",
        ),
    ],
)
def test_an_unreadable_video_is_one_line_and_no_output(tmp_path, checkpoint, capsys, make, message):
    make(tmp_path)
    bad = next(p for p in tmp_path.iterdir() if p.name != "src.avi")
    assert predict(checkpoint, bad, "--out", tmp_path / "out") == 1  # skipped, as images are
    err = capsys.readouterr().err
    assert f"skipped {bad}" in err and message in err and "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_truncated_video_writes_nothing(tmp_path, checkpoint, capsys):
    data = write_clip(tmp_path / "full.mkv", 30).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    assert predict(checkpoint, tmp_path / "cut.mkv", "--out", tmp_path / "o", "--save-labels") == 1
    assert "cut.mkv: truncated or damaged" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "97"], "camera 97: cannot be opened as a video (no such camera"),
        (
            ["--source", "http://127.0.0.1:9/cam.mjpg", "--stall-timeout", "2"],
            "http://127.0.0.1:9/cam.mjpg: cannot be opened",
        ),
        (["clip.mp4", "--source", "0"], "give INPUT files, folders or globs, or --source"),
        ([], "give INPUT files, folders or globs, or --source"),
        (
            ["photo.png", "--every", "2", "--smooth", "0.5"],
            "--every, --smooth: only for videos, and no input is one",
        ),
        (["clip.mp4", "--confidence"], "--confidence: only for images"),
        (["clip.mp4", "--out", "a_file"], "a_file: exists and is not a folder"),
        (["--source", "http://127.0.0.1:9/x", "--start", "3"], "start cuts video files"),
    ],
)
def test_bad_sources_options_and_outputs_are_one_line(
    tmp_path, checkpoint, capsys, args, message, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "clip.mp4", 2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "a_file").touch()
    out = [] if "--out" in args else ["--out", "out"]
    assert predict(checkpoint, *args, *out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_an_output_in_the_way_is_refused_before_any_frame(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "clip.mp4", 2)
    (tmp_path / "out" / "clip_overlay.mp4").mkdir(parents=True)
    segmenter = Segmenter.from_checkpoint(checkpoint, inference=InferenceOverrides(mode="whole"))
    with VideoSource(clip) as video, pytest.raises(OutputError, match="is a folder"):
        predict_video(segmenter, video, tmp_path / "out", "clip", VideoSettings(), redo=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip_overlay.mp4"]
