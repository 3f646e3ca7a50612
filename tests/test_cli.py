import csv
import importlib
import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from helpers import tiny_overrides
from PIL import Image

from pspnet.checkpoints import load_checkpoint, load_model
from pspnet.cli import main
from pspnet.config import InferenceConfig
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.engine.evaluate import evaluate
from pspnet.inference.protocol import Network


@pytest.fixture
def trained(tiny_camvid, tmp_path):
    run = tmp_path / "run"
    assert (
        main(["train", "--out", str(run), "--set", *tiny_overrides(tiny_camvid, iterations=2)]) == 0
    )
    return run


def test_info_prints_parameters_and_flops_per_part(capsys):
    assert main(["info", "--backbone", "resnet50", "--num-classes", "150", "--size", "473"]) == 0
    out = capsys.readouterr().out
    for part in ("stem + backbone", "pyramid pooling", "head", "aux head"):
        assert part in out
    assert "46,782,550" in out and "49,180,908" in out


def test_convert_training_state_to_native(trained, tmp_path, capsys):
    assert main(["convert", str(trained / "last.pt"), str(tmp_path / "m.safetensors")]) == 0
    a, b = load_model(trained / "last.pt"), load_model(tmp_path / "m.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (
        json.loads(load_checkpoint(tmp_path / "m.safetensors").metadata["class_names"])[3] == "Road"
    )


def test_convert_refuses_garbage_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "x.pth").write_bytes(b"garbage")
    assert main(["convert", str(tmp_path / "x.pth"), str(tmp_path / "y.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "x.pth" in err and "Traceback" not in err


def test_eval_writes_metrics_tables_and_pictures(trained, tiny_camvid, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--dataset",
        "camvid",
        "--root",
        str(tiny_camvid),
        "--split",
        "val",
        "--mode",
        "slide",
        "--crop",
        "24",
        "24",
        "--flip",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # The same checkpoint scored here with the options spelled out, not read from the CLI.
    preset = get_preset("camvid")
    inference = InferenceConfig(mode="slide", crop_size=(24, 24), flip=True)
    expected = evaluate(
        Network.of(load_model(trained / "best.safetensors")),
        SegmentationDataset(tiny_camvid, "val", preset),
        inference,
    ).compute()
    rows = list(csv.reader((out / "confusion.csv").open()))
    assert rows[0][1:] == list(preset.class_names)
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])  # (11, 11)
    assert np.array_equal(counts, expected.matrix)
    labels = [np.asarray(Image.open(p)) for p in sorted((tiny_camvid / "valannot").glob("*.png"))]
    assert counts.sum() == sum(int((label != 11).sum()) for label in labels)  # 11: CamVid void
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    iou = [tp[c] / union[c] if union[c] else math.nan for c in range(11)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iou"] == pytest.approx(iou, nan_ok=True)
    assert metrics["miou"] == pytest.approx(np.nanmean(iou))
    summary = f"| {100 * expected.miou:.2f} | {100 * expected.mean_acc:.2f} |"
    assert summary in printed and summary in (out / "metrics.md").read_text()
    assert "| 10 | Bicyclist |" in (out / "metrics.md").read_text()
    assert Image.open(out / "confusion.png").size[0] > 100


def test_eval_refuses_a_checkpoint_with_another_class_count(trained, tiny_camvid, capsys):
    args = [
        "eval",
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--dataset",
        "voc",
        "--root",
        str(tiny_camvid),
    ]
    assert main(args) == 2
    assert "11 classes" in capsys.readouterr().err


def test_predict_then_score_the_saved_pngs(trained, tiny_camvid, tmp_path, capsys):
    out = tmp_path / "pred"
    broken = tmp_path / "inputs"
    broken.mkdir()
    for name in ("val_000.png", "val_001.png", "val_002.png"):
        shutil.copy(tiny_camvid / "val" / name, broken / name)
    (broken / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(
        [
            "predict",
            str(broken),
            "--checkpoint",
            str(trained / "best.safetensors"),
            "--out",
            str(out),
            "--save-probs",
        ]
    )
    assert code == 1  # one input could not be read; the others were written
    captured = capsys.readouterr()
    assert "zz_broken.png" in captured.out + captured.err
    label = Image.open(out / "val_000_label.png")
    assert label.mode == "P" and np.asarray(label).max() < 11
    assert Image.open(out / "val_000_color.png").mode == "RGB"
    overlay = Image.open(out / "val_000_overlay.png")
    assert overlay.size[0] >= 48 and overlay.size[1] >= 40
    assert np.load(out / "val_000_probs.npy").shape == (11, 40, 48)
    assert not (out / "zz_broken_label.png").exists()
    score = [
        "eval",
        "--pred-dir",
        str(out),
        "--gt-dir",
        str(tiny_camvid / "valannot"),
        "--dataset",
        "camvid",
        "--out",
        str(tmp_path / "scored"),
    ]
    assert main(score) == 0
    direct = [
        "eval",
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--dataset",
        "camvid",
        "--root",
        str(tiny_camvid),
        "--out",
        str(tmp_path / "direct"),
    ]
    assert main(direct) == 0
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    model = json.loads((tmp_path / "direct" / "metrics.json").read_text())
    assert scored["miou"] == pytest.approx(model["miou"])


def test_data_check_lists_every_bad_file(tiny_camvid, capsys):
    (tiny_camvid / "trainannot" / "train_001.png").write_bytes(b"broken")
    Image.fromarray(np.full((40, 48), 77, np.uint8)).save(
        tiny_camvid / "trainannot" / "train_002.png"
    )
    assert main(["data", "check", str(tiny_camvid), "--dataset", "camvid", "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "train_001.png" in out and "train_002.png" in out


def test_bad_override_is_a_clear_error(tiny_camvid, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r"), "--set", "optim.lr=fast"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "fast" in err and "Traceback" not in err  # the key and value


@pytest.mark.parametrize("workers", [0, 1])
def test_training_stops_on_the_first_bad_sample_naming_it(tiny_camvid, tmp_path, capsys, workers):
    (tiny_camvid / "trainannot" / "train_003.png").write_bytes(b"not a png")
    args = [
        "train",
        "--out",
        str(tmp_path / "r"),
        "--set",
        *tiny_overrides(tiny_camvid, **{"data.workers": workers, "batch_size": 8}),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train_003.png" in err and "Traceback" not in err


def test_int8_eval_calibrates_on_the_given_images(trained, tiny_camvid, tmp_path, capsys):
    base = [
        "eval",
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--dataset",
        "camvid",
        "--root",
        str(tiny_camvid),
        "--split",
        "val",
    ]
    assert main([*base, "--precision", "int8", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--calibration" in err and "Traceback" not in err
    assert main([*base, "--calibration", str(tiny_camvid / "train"), "--out", str(tmp_path)]) == 2
    assert "only used with --precision int8" in capsys.readouterr().err
    calibrated = [
        *base,
        "--precision",
        "int8",
        "--calibration",
        str(tiny_camvid / "train"),
        "--calibration-count",
        "5",
        "--out",
        str(tmp_path / "int8"),
    ]
    assert main(calibrated) == 0
    assert len(json.loads((tmp_path / "int8" / "metrics.json").read_text())["iou"]) == 11


def test_fast_path_argument_clash_is_a_clear_error(trained, tiny_camvid, tmp_path, capsys):
    args = [
        "predict",
        str(tiny_camvid / "val"),
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--out",
        str(tmp_path),
        "--precision",
        "bf16",
        "--backend",
        "onnx",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no native bf16 here: said, not tested
        assert main(args) == 2
    err = capsys.readouterr().err
    assert "ONNX Runtime" in err and "Traceback" not in err


def test_forced_bf16_warns_in_one_line(trained, tiny_camvid, tmp_path, capsys, monkeypatch):
    optimize_module = importlib.import_module("pspnet.inference.optimized.optimize")
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: False)
    args = [
        "predict",
        str(tiny_camvid / "val" / "val_000.png"),
        "--checkpoint",
        str(trained / "best.safetensors"),
        "--out",
        str(tmp_path),
        "--precision",
        "bf16",
        "--backend",
        "eager",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "pspnet predict: warning: this CPU" in err and "no native bf16" in err
    assert "optimize(" not in err  # no source line of the library


def test_every_set_flag_applies_however_it_is_written(tiny_camvid, tmp_path, capsys):
    first, *rest = tiny_overrides(tiny_camvid, iterations=3)
    one_per_flag = [arg for item in rest for arg in ("--set", item)]
    args = ["train", "--out", str(tmp_path / "r"), "--set", first, *one_per_flag]
    assert main(args) == 0
    assert "done: 3 iterations" in capsys.readouterr().out
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "iterations: 3" in saved and f"root: {tiny_camvid}" in saved
