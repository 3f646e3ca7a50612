"""predict on many images: atomic outputs, resumable, sharded over torchrun ranks like one."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import torchrun
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.inference import Segmenter
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet
from pspnet.predict.images import predict_images
from pspnet.predict.outputs import SUFFIXES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkpoint(tmp_path, trained):
    path = tmp_path / "model.safetensors"
    save_model(trained(PSPNet(11, backbone="resnet18", base_width=4)), path)
    return path


def images(folder: Path, count: int, size=(40, 48)) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_rerun_redoes_only_what_is_missing(tmp_path, checkpoint):
    inputs = sorted(images(tmp_path / "in", 3).iterdir())
    segmenter = Segmenter.from_checkpoint(
        checkpoint, inference=InferenceOverrides(mode="whole", flip=False)
    )
    first = list(predict_images(segmenter, inputs, tmp_path / "out"))
    assert [r.done_before for r in first] == [False] * 3 and all(r.shares for r in first)
    (tmp_path / "out" / "img_001_overlay.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    second = list(predict_images(segmenter, inputs, tmp_path / "out"))
    assert [(r.path.name, r.done_before) for r in second] == [
        ("img_000.png", True),
        ("img_002.png", True),
        ("img_001.png", False),
    ]
    for path, stamp in before.items():
        if path.name.startswith(("img_000", "img_002")):
            assert path.stat().st_mtime_ns == stamp, path  # not written again
    assert len(list((tmp_path / "out").iterdir())) == 9
    redone = list(predict_images(segmenter, inputs, tmp_path / "out", redo=True))
    assert not any(r.done_before for r in redone)


def test_list_files_name_inputs(tmp_path, checkpoint, capsys):
    inputs = images(tmp_path / "in", 3)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the survey\n{inputs / 'img_002.png'}\n\n{inputs / 'img_000.png'}\n")
    argv = ["predict", f"@{listing}", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert main([*argv, "--mode", "whole"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        f"img_{i}{suffix}" for i in ("000", "002") for suffix in SUFFIXES
    )


def test_a_killed_run_resumes_without_redoing_finished_images(tmp_path, checkpoint):
    inputs = images(tmp_path / "in", 30, size=(96, 128))
    out = tmp_path / "out"
    args = [
        "predict",
        str(inputs),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--mode",
        "whole",
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "pspnet", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*_overlay.png"))) < 4:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    finished = {p.name[: -len("_overlay.png")] for p in out.glob("*_overlay.png")}
    assert 4 <= len(finished) < 30, "the run must be killed part-way"
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    for path in visible:  # whatever is visible is whole: every PNG decodes
        Image.open(path).load()
    stamps = {p.name: p.stat().st_mtime_ns for p in visible}
    assert main(args) == 0
    for name, stamp in stamps.items():
        if name.rsplit("_", 1)[0] in finished:
            assert (out / name).stat().st_mtime_ns == stamp, name  # finished: not redone
    reference = tmp_path / "reference"
    assert main([*args[:4], "--out", str(reference), "--mode", "whole"]) == 0
    resumed = {k: v for k, v in files_of(out).items() if not k.startswith(".")}
    assert resumed == files_of(reference)


def test_two_torchrun_processes_write_what_one_process_writes(tmp_path, checkpoint):
    inputs = images(tmp_path / "in", 7)
    common = [str(inputs), "--checkpoint", str(checkpoint), "--mode", "whole"]
    assert main(["predict", *common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(["predict", *common, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert len(files_of(tmp_path / "one")) == 21
    assert done.stdout.count("wrote 7 prediction(s)") == 1  # reported once, by rank 0


def test_two_torchrun_processes_score_what_one_process_scores(tmp_path, checkpoint, tiny_camvid):
    common = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--root",
        str(tiny_camvid),
        "--split",
        "train",
        "--mode",
        "whole",
    ]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*common, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    one = (tmp_path / "one" / "metrics.json").read_text()
    assert (tmp_path / "two" / "metrics.json").read_text() == one
    assert (tmp_path / "two" / "confusion.csv").read_text() == (
        tmp_path / "one" / "confusion.csv"
    ).read_text()
    assert done.stdout.count("| mIoU | mAcc | pixel acc |") == 1


def test_a_failing_image_stops_the_run_naming_it_and_the_rank(tmp_path, checkpoint, monkeypatch):
    from pspnet.cli import _rank
    from pspnet.errors import InferenceError

    inputs = sorted(images(tmp_path / "in", 2).iterdir())
    segmenter = Segmenter.from_checkpoint(checkpoint, inference=InferenceOverrides(mode="whole"))

    def out_of_memory(*args):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(segmenter, "_segment", out_of_memory)  # the routine under segment()
    with pytest.raises(InferenceError, match="img_000.png: inference failed .*not enough memory"):
        list(predict_images(segmenter, inputs, tmp_path / "out"))
    assert _rank() == ""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _rank() == "rank 1: "  # how `pspnet CMD: error:` names the rank under torchrun


def test_same_named_inputs_in_different_folders_keep_their_own_outputs(tmp_path, checkpoint):
    images(tmp_path / "in" / "a", 1)
    images(tmp_path / "in" / "b", 1, size=(32, 56))  # also img_000.png, another image
    args = [
        "predict",
        str(tmp_path / "in" / "a" / "img_000.png"),
        str(tmp_path / "in" / "b" / "img_000.png"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "out"),
        "--mode",
        "whole",
    ]
    assert main(args) == 0
    for folder, size in (("a", (40, 48)), ("b", (32, 56))):
        label = Image.open(tmp_path / "out" / folder / "img_000_label.png")
        assert label.size == size[::-1]
    segmenter = Segmenter.from_checkpoint(checkpoint, inference=InferenceOverrides(mode="whole"))
    inputs = sorted((tmp_path / "in").rglob("*.png"))
    again = list(predict_images(segmenter, inputs, tmp_path / "out"))
    assert all(result.done_before for result in again)  # each found its own outputs


def test_inputs_that_would_share_outputs_are_refused_before_any_work(tmp_path, checkpoint, capsys):
    folder = images(tmp_path / "in", 1)
    Image.open(folder / "img_000.png").save(folder / "img_000.jpg")
    args = ["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "img_000.jpg and" in err and "img_000.png would both write img_000_label.png" in err
    assert not (tmp_path / "o").exists()


def test_an_image_over_the_memory_budget_is_skipped_before_decoding(tmp_path, checkpoint, capsys):
    folder = images(tmp_path / "in", 1, size=(400, 400))
    images(tmp_path / "small", 1)
    args = [
        "predict",
        str(folder / "img_000.png"),
        str(tmp_path / "small" / "img_000.png"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "out"),
        "--mode",
        "whole",
        "--memory-budget-mb",
        "5",
    ]
    assert main(args) == 1
    out = capsys.readouterr()
    assert "in/img_000.png: image is 400x400" in out.err and "--memory-budget-mb" in out.err
    assert (tmp_path / "out" / "small" / "img_000_label.png").is_file()
    assert not (tmp_path / "out" / "in").exists()


def test_the_summary_lists_the_least_confident_images_first(tmp_path, checkpoint):
    import csv

    images(tmp_path / "in", 4)
    summary = tmp_path / "summary.csv"
    args = [
        "predict",
        str(tmp_path / "in"),
        "--checkpoint",
        str(checkpoint),
        "--mode",
        "whole",
        "--out",
        str(tmp_path / "out"),
        "--summary",
        str(summary),
        "--unknown-below",
        "0.5",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader(summary.open()))
    assert len(rows) == 4
    confidences = [float(row["mean_confidence"]) for row in rows]
    assert confidences == sorted(confidences)
    for row in rows:
        label = np.asarray(Image.open(tmp_path / "out" / (Path(row["image"]).stem + "_label.png")))
        assert float(row["unknown_share"]) == pytest.approx((label == 255).mean(), abs=1e-4)
        shares = [float(row[name]) for name in list(row)[3:]]
        assert sum(shares) + float(row["unknown_share"]) == pytest.approx(1.0, abs=1e-3)
