"""``auto`` by measurement: a saved record decides the path on this machine for this model
shape, and where none matches the fallback rule does, each saying why."""

import dataclasses
import importlib

import pytest
import torch

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.config import InferenceConfig
from pspnet.inference import Segmenter
from pspnet.inference.optimized.measured import (
    Machine,
    MeasuredPath,
    ModelShape,
    Record,
    find_record,
    qualifies,
    records_file,
    save_record,
)
from pspnet.inference.optimized.optimize import choose_path, resolve_path
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet
from pspnet.weights import registry

optimize_module = importlib.import_module("pspnet.inference.optimized.optimize")
SHAPE = ModelShape("resnet18", 8, 8, 5, 3, (40, 40))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Records go to a fresh cache folder; the fallback rule is today's for an AVX2 CPU."""
    monkeypatch.setenv("PSPNET_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(optimize_module, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: False)
    monkeypatch.setattr(optimize_module, "MEASURED_FASTEST", {"cpu AVX2": ("fp32", "compile")})


def row(precision, backend, ms, *, error=0.0, agreement=1.0) -> MeasuredPath:
    return MeasuredPath(
        precision,
        backend,
        median_ms=ms,
        warmup_s=1.0,
        memory_mb=100.0,
        relative_error=error,
        agreement=agreement,
        qualifies=qualifies(precision, error, agreement),
    )


def record(shape: ModelShape, *paths: MeasuredPath) -> Record:
    plain = row("none", "eager", 1000.0)
    return Record(
        Machine.here(), shape, "2026-05-01T10:00:00", "4 synthetic images", (plain, *paths)
    )


def test_the_thresholds_are_the_exact_tolerance_and_the_agreement():
    assert qualifies("fp32", 1e-6, 0.9) and not qualifies("fp32", 1e-3, 1.0)
    assert qualifies("int8", 0.3, 0.9995) and not qualifies("int8", 0.0, 0.998)


def test_without_a_record_auto_follows_the_fallback_rule_and_says_so():
    chosen = resolve_path("auto", "auto", shape=SHAPE)
    assert (chosen.precision, chosen.backend, chosen.reason) == (
        "fp32",
        "eager",
        "the fallback rule",
    )
    assert resolve_path("auto", "auto", amortized=True, shape=SHAPE).backend == "compile"
    assert resolve_path("fp32", "onnx", shape=SHAPE).reason == "as asked"
    assert resolve_path("none", "auto", shape=SHAPE).reason == "as asked"


def test_a_record_decides_auto_with_its_date():
    save_record(record(SHAPE, row("fp32", "eager", 300.0), row("fp32", "onnx", 200.0)))
    chosen = resolve_path("auto", "auto", shape=SHAPE)
    assert (chosen.precision, chosen.backend) == ("fp32", "onnx")
    assert chosen.reason == "measured on 2026-05-01"
    assert choose_path("fp32", "auto", shape=SHAPE) == ("fp32", "onnx")
    assert choose_path("auto", "eager", shape=SHAPE) == ("fp32", "eager")
    assert resolve_path("fp32", "eager", shape=SHAPE).reason == "as asked"
    # Another crop, thread count or backbone is another model or machine: nothing measured.
    other = dataclasses.replace(SHAPE, crop=(48, 48))
    assert resolve_path("auto", "auto", shape=other).reason == "the fallback rule"
    assert find_record(dataclasses.replace(SHAPE, backbone="resnet50")) is None


def test_auto_passes_over_what_missed_its_threshold_compile_for_one_image_and_int8():
    fast = [
        row("fp32", "eager", 500.0),
        row("fp32", "compile", 100.0),
        row("fp32", "onnx", 50.0, error=1e-3),  # not exact: never taken
        row("int8", "onnx", 10.0, error=0.2, agreement=0.9995),
        row("int8", "openvino", 5.0, error=0.2, agreement=0.99),  # too many labels changed
    ]
    save_record(record(SHAPE, *fast))
    assert choose_path("auto", "auto", shape=SHAPE) == ("fp32", "eager")
    assert choose_path("auto", "auto", amortized=True, shape=SHAPE) == ("fp32", "compile")
    assert choose_path("int8", "auto", shape=SHAPE, calibrated=True) == ("int8", "onnx")


def test_records_keep_other_keys_and_read_back_equal():
    first = record(SHAPE, row("fp32", "eager", 300.0))
    second = record(dataclasses.replace(SHAPE, crop=(64, 64)), row("fp32", "onnx", 10.0))
    save_record(first)
    save_record(second)
    assert find_record(SHAPE) == first
    assert find_record(second.shape) == second
    records_file().write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert find_record(SHAPE) is None


def test_segmenter_runs_the_measured_path_and_says_why(tmp_path, trained):
    torch.manual_seed(0)
    model = trained(PSPNet(5, backbone="resnet18", base_width=8))
    checkpoint = tmp_path / "tiny.safetensors"
    save_model(model, checkpoint)
    crop = InferenceOverrides(crop_size=(40, 40))
    fallback = Segmenter.from_checkpoint(checkpoint, inference=crop)
    assert (fallback.precision, fallback.backend) == ("fp32", "eager")
    assert fallback.path_reason == "the fallback rule"
    save_record(record(SHAPE, row("fp32", "eager", 300.0), row("fp32", "onnx", 200.0)))
    assert ModelShape.of(model.config, InferenceConfig(crop_size=(40, 40)).crop_size) == SHAPE
    measured = Segmenter.from_checkpoint(checkpoint, inference=crop)
    assert (measured.precision, measured.backend) == ("fp32", "onnx")
    assert measured.path_reason == "measured on 2026-05-01"
    other_crop = Segmenter.from_checkpoint(
        checkpoint, inference=InferenceOverrides(crop_size=(48, 48))
    )
    assert other_crop.path_reason == "the fallback rule"


def test_models_speed_shows_a_measured_entry(capsys):
    entry = registry()["pspnet_r50-d8_4xb2-40k_cityscapes-769x769"]
    crop = InferenceConfig(**entry.inference()).crop_size
    shape = ModelShape.of(entry.model_config(), crop)
    save_record(record(shape, row("fp32", "openvino", 4321.0)))
    assert main(["models", "--dataset", "cityscapes", "--speed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (measured,) = [line for line in lines if entry.name + " " in line]
    assert "4321 ms, 100 MiB: fp32 openvino (2026-05-01)" in measured
    assert any("not measured" in line for line in lines if "r101" in line)
    assert main(["models", "--dataset", "cityscapes"]) == 0
    assert "4321 ms" not in capsys.readouterr().out
