"""OpenVINO: the exact ONNX graph compiled for the CPU equals eager at any size, as a fast path
and as an IR written by ``pspnet export --format openvino``."""

import json

import pytest
import torch
from helpers import trained_like

pytest.importorskip("onnx")
pytest.importorskip("openvino")

from pspnet.checkpoints import save_model  # noqa: E402
from pspnet.cli import main  # noqa: E402
from pspnet.config import InferenceConfig  # noqa: E402
from pspnet.errors import CheckpointError, ConfigError  # noqa: E402
from pspnet.export import OpenVinoModel, export_openvino  # noqa: E402
from pspnet.inference.optimized.optimize import exact_rewrite, optimize  # noqa: E402
from pspnet.inference.protocol import probabilities  # noqa: E402
from pspnet.models import PSPNet  # noqa: E402

optimize_module = __import__("pspnet.inference.optimized.optimize", fromlist=["optimize"])
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model() -> PSPNet:
    torch.manual_seed(0)
    net = PSPNet(NUM_CLASSES, backbone="resnet18", base_width=8)
    torch.nn.init.normal_(net.head.classifier.weight, std=0.5)  # well separated classes
    return trained_like(net)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.fixture(scope="module")
def fast(model, tmp_path_factory):
    return optimize(model, "fp32", "openvino", work_dir=tmp_path_factory.mktemp("openvino"))


@pytest.mark.parametrize("size", [(41, 57), (64, 64)], ids=["41x57", "64x64"])
def test_fp32_equals_eager_at_sizes_of_its_own(model, fast, size):
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = model(images), fast(images)
    assert got.shape == want.shape == (2, NUM_CLASSES, *size)
    assert relative_error(got, want) <= 1e-5
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert (fast.precision, fast.backend) == ("fp32", "openvino")


def test_the_inference_routine_runs_it_unchanged(model, fast):
    image = torch.randn(3, 50, 70, generator=torch.Generator().manual_seed(2))
    config = InferenceConfig(mode="slide", crop_size=(32, 32), flip=True)
    want = probabilities(model, image, config)
    assert (probabilities(fast, image, config) - want).abs().max() <= 1e-5


def test_bf16_is_refused_on_a_cpu_without_native_bf16(model, monkeypatch):
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bf16"):
        optimize(model, "bf16", "openvino")


def test_an_exported_ir_loads_with_its_config_and_equals_eager(model, tmp_path):
    metadata = {"dataset": "camvid", "class_names": json.dumps(list("abcde"))}
    path = export_openvino(
        exact_rewrite(model, exportable=True),
        tmp_path / "model.xml",
        example_size=(40, 40),
        metadata=metadata,
    )
    assert path.is_file() and path.with_suffix(".bin").is_file()
    runner = OpenVinoModel(path, threads=1)
    assert runner.config == model.config
    assert runner.metadata["dataset"] == "camvid"
    images = torch.randn(1, 3, 57, 33, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = model(images)
    # fp16-compressed weights (OpenVINO's default) would miss this by ~1e-3.
    assert relative_error(runner(images), want) <= 1e-5


def test_a_file_that_is_not_a_pspnet_is_refused_by_name(tmp_path):
    bad = tmp_path / "model.xml"
    bad.write_text("<net/>")
    with pytest.raises(CheckpointError, match="model.xml"):
        OpenVinoModel(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        OpenVinoModel(tmp_path / "missing.xml")


def test_export_command_writes_an_ir_that_loads(model, tmp_path, capsys):
    checkpoint = tmp_path / "tiny.safetensors"
    save_model(model, checkpoint, {"dataset": "camvid"})
    out = tmp_path / "ir" / "tiny.xml"
    args = ["export", str(checkpoint), str(out), "--format", "openvino", "--size", "40"]
    assert main(args) == 0
    assert "tiny.bin" in capsys.readouterr().out
    runner = OpenVinoModel(out, threads=1)
    images = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert relative_error(runner(images), model(images)) <= 1e-5
    assert main(["export", str(checkpoint), str(tmp_path / "x.onnx"), "--format", "openvino"]) == 2
    assert "an .xml file" in capsys.readouterr().err
