import importlib

import numpy as np
import pytest
import torch

from pspnet.config import InferenceConfig
from pspnet.errors import ConfigError
from pspnet.inference.optimized.int8 import quantize_int8
from pspnet.inference.optimized.optimize import choose_path, optimize
from pspnet.inference.optimized.reduced import reduced_precision
from pspnet.inference.protocol import probabilities
from pspnet.models import PSPNet

# The module, not the function of the same name that pspnet.inference.optimized exports.
optimize_module = importlib.import_module("pspnet.inference.optimized.optimize")


@pytest.fixture
def model(trained):
    torch.manual_seed(0)
    net = PSPNet(5, backbone="resnet18", base_width=8)
    torch.nn.init.normal_(net.head.classifier.weight, std=0.5)  # well separated classes
    return trained(net)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("backend", ["eager", "onnx"])
def test_fp32_paths_are_exact_at_several_sizes(model, backend, tmp_path):
    fast = optimize(model, "fp32", backend, work_dir=tmp_path)
    for size in [(41, 57), (64, 64)]:
        images = torch.randn(2, 3, *size)
        with torch.inference_mode():
            expected, got = model(images), fast(images)
        assert got.shape == expected.shape
        assert relative_error(got, expected) <= 1e-5
        assert torch.equal(got.argmax(1), expected.argmax(1))


def test_compiled_path_is_exact(model):
    fast = optimize(model, "fp32", "compile")
    images = torch.randn(1, 3, 48, 40)
    with torch.inference_mode():
        assert relative_error(fast(images), model(images)) <= 1e-5


def test_the_inference_routine_runs_every_path_unchanged(model, tmp_path):
    image = torch.randn(3, 50, 70)
    config = InferenceConfig(mode="slide", crop_size=(32, 32), flip=True)
    expected = probabilities(model, image, config)
    fast = optimize(model, "fp32", "onnx", work_dir=tmp_path)
    assert (probabilities(fast, image, config) - expected).abs().max() <= 1e-5


def test_forced_bf16_on_a_cpu_without_it_warns_and_stays_close(model, monkeypatch):
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        fast = optimize(model, "bf16", "eager")
    images = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        got, expected = fast(images), model(images)
    assert got.dtype == torch.float32
    assert relative_error(got, expected) <= 0.05
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.95


def dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_bf16_model_keeps_early_stages_pyramid_sums_and_classifier_in_fp32(model, monkeypatch):
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: True)
    fast = optimize(model, "bf16", "eager")
    network = fast.inner.model
    backbone = network.backbone
    assert dtypes(backbone.stem) == dtypes(backbone.layer1) == {torch.float32}
    for stage in (backbone.layer2, backbone.layer3, backbone.layer4, network.head.features):
        assert dtypes(stage) == {torch.bfloat16}
    classifier = network.head.classifier.module
    assert torch.equal(classifier.weight, model.head.classifier.weight)  # never rounded
    with torch.inference_mode():
        got = fast(torch.randn(1, 3, 40, 40))
    assert got.dtype == torch.float32
    assert not torch.equal(got, got.bfloat16().float())  # logits not on bf16's grid


def test_bf16_stages_to_keep_in_fp32_are_a_choice(model, monkeypatch):
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: True)
    everywhere = optimize(model, "bf16", "eager", fp32_stages=())
    assert dtypes(everywhere.inner.model.backbone) == {torch.bfloat16}
    images = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        assert relative_error(everywhere(images), model(images)) <= 0.05
    with pytest.raises(ValueError, match="unknown: layer5"):
        optimize(model, "bf16", "eager", fp32_stages=("stem", "layer5"))


def test_int8_runs_and_agrees_within_its_tolerance(model, tmp_path):
    calibration = [torch.randn(2, 3, 48, 48) for _ in range(4)]
    fast = optimize(model, "int8", "onnx", calibration=calibration, work_dir=tmp_path)
    assert (tmp_path / "model.int8.onnx").is_file()
    images = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        got, expected = fast(images), model(images)
    assert relative_error(got, expected) <= 0.15
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.9
    with pytest.raises(ValueError, match="calibration"):
        optimize(model, "int8", "onnx", work_dir=tmp_path / "again")


def test_auto_is_the_exact_rewrite_and_compiles_only_when_it_pays(monkeypatch):
    monkeypatch.setattr(optimize_module, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: False)
    monkeypatch.setattr(optimize_module, "MEASURED_FASTEST", {"cpu AVX2": ("fp32", "compile")})
    assert choose_path("auto", "auto") == ("fp32", "eager")  # one image: no warm-up to repay
    assert choose_path("auto", "auto", amortized=True) == ("fp32", "compile")
    assert choose_path("bf16", "auto", amortized=True) == ("bf16", "eager")  # not what was timed
    assert choose_path("int8", "auto") == ("int8", "onnx")
    monkeypatch.setattr(optimize_module, "cpu_capability", lambda: "UNMEASURED")
    assert choose_path("auto", "auto", amortized=True) == ("fp32", "eager")


def test_auto_takes_a_reduced_precision_only_where_it_was_measured(monkeypatch):
    monkeypatch.setattr(optimize_module, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(optimize_module, "native_bf16", lambda: True)
    assert optimize_module.device_kind("cpu") == "cpu AVX512 bf16"
    monkeypatch.setattr(optimize_module, "MEASURED_FASTEST", {})
    assert choose_path("auto", "auto") == ("fp32", "eager")
    measured = {"cpu AVX512 bf16": ("bf16", "compile")}
    monkeypatch.setattr(optimize_module, "MEASURED_FASTEST", measured)
    assert choose_path("auto", "auto", amortized=True) == ("bf16", "compile")


@pytest.mark.parametrize(
    ("precision", "backend", "message"),
    [
        ("fp16", "eager", "fp16 runs on CUDA"),
        ("fp32", "cudagraphs", "cudagraphs needs CUDA"),
        ("none", "compile", "plain eager model"),
        ("int8", "eager", "ONNX Runtime"),
        ("bf16", "onnx", "not offered through ONNX Runtime"),
        ("fp64", "eager", "precision must be"),
        ("fp32", "tvm", "backend must be"),
    ],
)
def test_paths_this_device_cannot_run_are_refused(model, precision, backend, message):
    with pytest.raises(ConfigError, match=message):
        optimize(model, precision, backend)


def test_cuda_refuses_the_onnx_paths(monkeypatch):
    monkeypatch.setattr(optimize_module, "device_kind", lambda device: "cuda TEST GPU")
    for precision, backend in [("int8", "auto"), ("fp32", "onnx")]:
        with pytest.raises(ConfigError, match="on the CPU"):
            choose_path(precision, backend, torch.device("cuda"))
    assert choose_path("fp16", "cudagraphs", torch.device("cuda")) == ("fp16", "cudagraphs")
    assert choose_path("auto", "auto", torch.device("cuda")) == ("fp32", "eager")


def test_precision_none_is_the_plain_model(model):
    assert optimize(model, "none", "auto") is model


def test_fp16_keeps_the_sums_and_classifier_in_fp32(model):
    """The CUDA fp16 path's casting, checked on the CPU: fp32 logits close to the exact ones."""
    exact = optimize_module.exact_rewrite(model)
    half = reduced_precision(optimize_module.exact_rewrite(model), torch.float16)
    assert half.head.classifier.module.weight.dtype == torch.float32
    assert half.backbone.layer3.module[0].conv1.weight.dtype == torch.float16
    assert half.backbone.layer1.module[0].conv1.weight.dtype == torch.float32  # kept, by default
    image = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        reference, logits = exact(image), half(image)
    assert logits.dtype == torch.float32
    assert relative_error(logits, reference) < 0.05
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() > 0.95


def test_optimised_model_is_inference_only(model):
    fast = optimize(model, "fp32", "eager")
    assert not fast.training and fast.config == model.config
    with pytest.raises(ValueError, match="inference only"):
        fast.train()
    assert np.isfinite(fast(torch.randn(1, 3, 24, 24)).numpy()).all()


def quantization_parameters(path) -> dict[str, np.ndarray]:
    """Every scale and zero point of a QDQ model, by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if t.name.endswith(("_scale", "_zero_point"))
    }


def test_int8_calibration_reads_every_image(model, tmp_path):
    """The last image is much brighter: ranges that ignore it would equal the first five's."""
    from pspnet.export.onnx import export_onnx

    source = export_onnx(optimize_module.exact_rewrite(model, True), tmp_path / "model.onnx")
    calibration = [torch.randn(1, 3, 32, 32) for _ in range(5)] + [8 * torch.randn(1, 3, 32, 32)]
    every = quantization_parameters(quantize_int8(source, tmp_path / "all.onnx", calibration))
    first_five = quantization_parameters(
        quantize_int8(source, tmp_path / "five.onnx", calibration[:5])
    )
    assert every.keys() == first_five.keys() and len(every) > 10
    assert any(not np.array_equal(every[k], first_five[k]) for k in every)


def test_unknown_precision_is_a_clear_error(model):
    with pytest.raises(ConfigError, match="precision must be"):
        optimize(model, "fp8", "eager")
