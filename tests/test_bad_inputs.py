"""Bad input, as a new user would give it, gets one clear line and never a traceback.

Each CLI case asserts the exit status, that stderr is ``pspnet CMD: error: ...`` naming the
option, key or path at fault, and that nothing escaped as a Python exception. The API cases
assert the package's own exception types with the same kind of message.
"""

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_camvid
from PIL import Image

import pspnet
from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.config import InferenceConfig
from pspnet.errors import CheckpointError, ConfigError, DatasetError
from pspnet.inference import Segmenter
from pspnet.inference.settings import RuntimeSettings
from pspnet.models import PSPNet


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose header declares ``width`` x ``height`` pixels (a pixel bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, a good image and a collection of bad files, made once for every case."""
    root = tmp_path_factory.mktemp("bad_inputs")
    made = {"root": root}
    made["model"] = root / "model.safetensors"
    save_model(PSPNet(11, backbone="resnet18", base_width=4).eval(), made["model"])
    made["image"] = root / "image.png"
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(made["image"])
    made["file"] = root / "a_file.txt"
    made["file"].write_text("not a folder")
    made["folder"] = root / "a_folder"
    made["folder"].mkdir()
    made["corrupt"] = root / "corrupt.pth"
    made["corrupt"].write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    made["bomb"] = png_header_only(root / "bomb.png", 100_000, 100_000)
    made["yaml"] = root / "bad.yaml"
    made["yaml"].write_text("optim: [unclosed\n")
    made["camvid"] = write_tiny_camvid(root / "camvid")
    return made


def run_cli(argv: list[str]) -> int:
    """main(argv)'s exit status, argparse's SystemExit included; anything else escapes."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


# (name, argv with {placeholders} from `files`, exit status, text the message must contain)
CLI_CASES = [
    ("predict --out is a file", "predict {image} --checkpoint {model} --out {file}", 2, "{file}"),
    ("export to an uncreatable folder", "export {model} /proc/no/such/m.onnx", 2, "/proc/no"),
    ("export onto a folder", "export {model} {folder}", 2, "{folder}"),
    ("convert onto a folder", "convert {model} {folder}", 2, "{folder}"),
    (
        "negative scale",
        "predict {image} --checkpoint {model} --out {root}/o --scales -1",
        2,
        "--scales",
    ),
    ("zero crop", "eval --checkpoint {model} --root {root} --crop 0 0", 2, "--crop"),
    (
        "zero window batch",
        "predict {image} --checkpoint {model} --out {root}/o --window-batch 0",
        2,
        "--window-batch",
    ),
    (
        "stride rate over 1",
        "predict {image} --checkpoint {model} --out {root}/o --stride-rate 2",
        2,
        "--stride-rate",
    ),
    (
        "zero base size",
        "predict {image} --checkpoint {model} --out {root}/o --base-size 0",
        2,
        "--base-size",
    ),
    (
        "unknown mode",
        "predict {image} --checkpoint {model} --out {root}/o --mode tiles",
        2,
        "--mode",
    ),
    (
        "absent CUDA device",
        "predict {image} --checkpoint {model} --out {root}/o --device cuda:99",
        2,
        "--device",
    ),
    (
        "unknown device",
        "predict {image} --checkpoint {model} --out {root}/o --device tpu",
        2,
        "--device",
    ),
    (
        "int8 without calibration",
        "predict {image} --checkpoint {model} --out {root}/o --precision int8",
        2,
        "--calibration",
    ),
    ("zero classes", "info --num-classes 0", 2, "--num-classes"),
    ("zero size", "info --size 0", 2, "--size"),
    ("not a number", "info --size big", 2, "--size"),
    ("unknown backbone", "info --backbone resnet51", 2, "--backbone"),
    ("negative limit", "eval --checkpoint {model} --root {root} --limit -1", 2, "--limit"),
    ("zero demo iterations", "demo --iterations 0", 2, "--iterations"),
    (
        "missing checkpoint",
        "predict {image} --checkpoint {root}/nope.pth --out {root}/o",
        2,
        "nope.pth",
    ),
    ("folder as checkpoint", "predict {image} --checkpoint {folder} --out {root}/o", 2, "{folder}"),
    ("corrupt checkpoint", "convert {corrupt} {root}/c.safetensors", 2, "{corrupt}"),
    (
        "missing input",
        "predict {root}/missing.png --checkpoint {model} --out {root}/o",
        2,
        "missing.png",
    ),
    (
        "image over the pixel limit",
        "predict {bomb} --checkpoint {model} --out {root}/o",
        1,
        "{bomb}",
    ),
    ("pred-dir without gt-dir", "eval --pred-dir {folder}", 2, "--gt-dir"),
    ("eval without a source", "eval --root {root}", 2, "--checkpoint"),
    ("missing dataset root", "eval --checkpoint {model} --root {root}/nowhere", 2, "nowhere"),
    ("unknown dataset preset", "data check {root} --dataset kitti", 2, "kitti"),
    ("missing data root", "data check {root}/nowhere", 2, "nowhere"),
    ("missing config file", "train --config {root}/none.yaml --out {root}/r", 2, "none.yaml"),
    ("unreadable config file", "train --config {yaml} --out {root}/r", 2, "{yaml}"),
    ("negative batch size", "train --out {root}/r --set batch_size=-2", 2, "batch_size"),
    ("zero learning rate", "train --out {root}/r --set optim.lr=0", 2, "optim.lr"),
    ("zero crop in config", "train --out {root}/r --set data.crop_size=[0,8]", 2, "data.crop_size"),
    ("negative workers", "train --out {root}/r --set data.workers=-1", 2, "data.workers"),
    ("zero iterations", "train --out {root}/r --set iterations=0", 2, "iterations"),
    (
        "unknown config key",
        "train --out {root}/r --set optim.learning_rate=0.1",
        2,
        "learning_rate",
    ),
    ("override without =", "train --out {root}/r --set optim.lr", 2, "optim.lr"),
    ("serve port out of range", "serve --checkpoint {model} --port 70000", 2, "--port"),
    ("serve negative queue", "serve --checkpoint {model} --max-queue -1", 2, "--max-queue"),
    (
        "serve zero upload limit",
        "serve --checkpoint {model} --max-upload-mb 0",
        2,
        "--max-upload-mb",
    ),
    ("serve missing checkpoint", "serve --checkpoint {root}/nope.safetensors", 2, "nope"),
    ("models of an unknown dataset", "models --dataset kitti", 2, "kitti"),
    ("reproduce without a root", "reproduce ablation --out {root}/grid", 2, "--root"),
    (
        "reproduce zero seeds",
        "reproduce ablation --root {root} --out {root}/g --seeds 0",
        2,
        "--seeds",
    ),
    ("reproduce unknown budget", "reproduce ablation --out {root}/g --budget huge", 2, "--budget"),
    (
        "missing list of inputs",
        "predict @{root}/nolist.txt --checkpoint {model} --out {root}/o",
        2,
        "nolist.txt",
    ),
    (
        "zero fit-within",
        "predict {image} --checkpoint {model} --out {root}/o --fit-within 0 5",
        2,
        "--fit-within",
    ),
    (
        "run folder is a file",
        "train --out {file} --set iterations=1 data.root={camvid}",
        2,
        "{file}",
    ),
]


@pytest.mark.parametrize(
    ("argv", "status", "named"), [case[1:] for case in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input_is_one_clear_line(argv, status, named, files, capsys):
    values = {key: str(path) for key, path in files.items()}
    got = run_cli(argv.format(**values).split())
    out, err = capsys.readouterr()
    command = argv.split()[0]
    assert got == status, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith(f"pspnet {command}")]
    if status == 2:
        assert message and ": error: " in message[-1], err
    named = named.format(**values)
    assert named in (err if status == 2 else out + err), err


def test_the_table_covers_every_subcommand():
    commands = {argv.split()[0] for _, argv, _, _ in CLI_CASES}
    assert commands == {
        "predict",
        "export",
        "convert",
        "eval",
        "info",
        "demo",
        "data",
        "train",
        "serve",
        "models",
        "reproduce",
    }


def test_segmenter_refuses_an_empty_image(files):
    segmenter = Segmenter.from_checkpoint(files["model"])
    with pytest.raises(DatasetError, match="empty"):
        segmenter(np.zeros((0, 5, 3), np.uint8))


def test_segmenter_refuses_a_nan_image(files):
    segmenter = Segmenter.from_checkpoint(files["model"])
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[2, 3, 1] = math.nan
    with pytest.raises(DatasetError, match="NaN"):
        segmenter(image)


def test_segmenter_refuses_an_image_over_the_pixel_limit(files, monkeypatch):
    segmenter = Segmenter.from_checkpoint(files["model"])
    with pytest.raises(DatasetError, match="over the limit"):
        segmenter(files["bomb"])
    monkeypatch.setenv("PSPNET_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(DatasetError, match=r"32x24 \(768 pixels\), over the limit of 100"):
        segmenter(files["image"])
    with pytest.raises(DatasetError, match="over the limit of 100"):
        segmenter(np.zeros((20, 20, 3), np.uint8))


def test_load_model_refuses_a_corrupt_file_without_unsafe_advice(files):
    with pytest.raises(CheckpointError) as error:
        pspnet.load_model(files["corrupt"])
    assert str(files["corrupt"]) in str(error.value)
    assert "weights_only" not in str(error.value)


def test_unknown_devices_are_config_errors(files):
    with pytest.raises(ConfigError, match="tpu"):
        Segmenter.from_checkpoint(files["model"], RuntimeSettings(device="tpu"))
    with pytest.raises(ConfigError, match="cuda:99"):
        Segmenter.from_checkpoint(files["model"], RuntimeSettings(device="cuda:99"))


def test_inference_settings_are_validated_as_config_errors():
    with pytest.raises(ConfigError, match="stride_rate"):
        InferenceConfig(stride_rate=1.5)
    with pytest.raises(ConfigError, match="window_batch"):
        InferenceConfig(window_batch=0)
    assert isinstance(ConfigError("x"), ValueError)  # callers catching ValueError still do


def test_a_good_image_still_segments(files):
    labels = Segmenter.from_checkpoint(files["model"])(files["image"])
    assert labels.shape == (24, 32) and labels.dtype == np.int64
    assert torch.from_numpy(labels).max() < 11
