"""ONNX export: exact at sizes other than the traced one, eval graph only, runner as a model."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import trained_like
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from pspnet.config import InferenceConfig  # noqa: E402
from pspnet.errors import CheckpointError  # noqa: E402
from pspnet.export import ExactAdaptivePool2d, OnnxRuntimeModel, export_onnx, exportable_copy  # noqa: E402
from pspnet.inference.optimized.optimize import exact_rewrite  # noqa: E402
from pspnet.inference.protocol import probabilities  # noqa: E402
from pspnet.models import PSPNet  # noqa: E402

NUM_CLASSES = 5
EXAMPLE_SIZE = (40, 40)
# Odd and non-multiple-of-8 sizes; 25x25 leaves a 4x4 feature map, fewer cells than 6 bins.
SIZES = [(33, 47), (64, 64), (57, 80), (25, 25)]
# Filled into the aux classifier: if any initialiser holds it, the aux head was exported.
AUX_SENTINEL = 7.25

CONFIGS = {
    "align-avg-1236": dict(align_corners=True, pooling="avg", bins=(1, 2, 3, 6)),
    "half-avg-25": dict(align_corners=False, pooling="avg", bins=(2, 5)),
    "align-max-1236": dict(align_corners=True, pooling="max", bins=(1, 2, 3, 6)),
    "half-max-148": dict(align_corners=False, pooling="max", bins=(1, 4, 8)),
    "no-ppm": dict(align_corners=False, use_ppm=False),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread each for torch and onnxruntime: on a CPU shared with other test runs, two
    spinning thread pools slow these tiny convolutions a hundredfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_trained(**options) -> PSPNet:
    """A tiny PSPNet, in train mode, whose BatchNorms and classifier are not at their init."""
    torch.manual_seed(0)
    model = PSPNet(NUM_CLASSES, backbone="resnet18", base_width=8, **options)
    model = trained_like(model).train()
    with torch.no_grad():
        model.head.classifier.weight.normal_(0, 0.5)
        model.aux_head.classifier.weight.fill_(AUX_SENTINEL)
    return model


@dataclass
class Exported:
    model: PSPNet
    path: Path
    graph: "onnx.ModelProto"
    runner: OnnxRuntimeModel
    state_kept: bool
    mode_kept: bool
    modules_kept: bool


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def exported(request, tmp_path_factory) -> Exported:
    """Export each config once, from a train-mode model, recording what the export did to it."""
    model = tiny_trained(**CONFIGS[request.param]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "model.onnx", example_size=EXAMPLE_SIZE
    )
    after = model.state_dict()
    state_kept = before.keys() == after.keys() and all(
        torch.equal(before[k], after[k]) for k in before
    )
    modules_kept = [type(m) for m in model.modules()] == modules_before
    mode_kept = model.training
    # One thread: a spinning thread pool crawls on a CPU shared with other test runs.
    runner = OnnxRuntimeModel(path, threads=1)
    return Exported(
        model.eval(), path, onnx.load(path), runner, state_kept, mode_kept, modules_kept
    )


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnx_matches_eager_at_sizes_other_than_traced(exported, size):
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = exported.model(images)
    got = exported.runner(images)
    assert got.shape == want.shape == (1, NUM_CLASSES, *size)
    assert max_rel_err(got, want) <= 1e-5
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_onnx_batch_is_dynamic(exported):
    images = torch.randn(3, 3, 41, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = exported.model(images)
    got = exported.runner(images)
    assert got.shape == want.shape
    assert max_rel_err(got, want) <= 1e-5


def test_graph_declares_dynamic_batch_height_width(exported):
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (images,), (logits,) = exported.graph.graph.input, exported.graph.graph.output
    assert (images.name, dims(images)) == ("images", ["batch", 3, "height", "width"])
    assert (logits.name, dims(logits)) == ("logits", ["batch", NUM_CLASSES, "height", "width"])


def test_resize_keeps_align_corners(exported):
    modes = [
        attribute.s.decode()
        for node in exported.graph.graph.node
        if node.op_type == "Resize"
        for attribute in node.attribute
        if attribute.name == "coordinate_transformation_mode"
    ]
    config = exported.model.config
    assert len(modes) == 1 + (len(config.bins) if config.use_ppm else 0)
    if config.align_corners:
        assert set(modes) == {"align_corners"}
    else:
        assert set(modes) <= {"half_pixel", "pytorch_half_pixel"}


def test_graph_holds_no_aux_head(exported):
    initializers = exported.graph.graph.initializer
    assert not [i.name for i in initializers if "aux" in i.name]
    assert not any((numpy_helper.to_array(i) == AUX_SENTINEL).any() for i in initializers)
    aux = sum(p.numel() for p in exported.model.aux_head.parameters())
    without_aux = sum(v.numel() for v in exported.model.state_dict().values()) - aux
    assert sum(int(np.prod(i.dims)) for i in initializers) <= without_aux


def test_export_leaves_the_model_untouched(exported):
    assert exported.state_kept and exported.modules_kept and exported.mode_kept
    assert isinstance(exported.model.aux_head, nn.Module)


def test_export_leaves_only_the_named_file(exported):
    assert [p.name for p in exported.path.parent.iterdir()] == ["model.onnx"]


def test_runner_carries_config_and_acts_as_eval_model(exported):
    runner = exported.runner
    assert runner.config == exported.model.config
    assert runner.training is False and runner.eval() is runner
    assert list(runner.parameters()) == []  # it runs a session on the CPU, not torch
    with pytest.raises(ValueError, match="eval forward only"):
        runner.train()
    options = OnnxRuntimeModel(exported.path).session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_predict_probs_runs_the_runner_unchanged(exported):
    image = torch.randn(3, 45, 38, generator=torch.Generator().manual_seed(3))
    config = InferenceConfig(mode="slide", crop_size=(32, 32), flip=True)
    want = probabilities(exported.model, image, config)
    got = probabilities(exported.runner, image, config)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, 8])
def test_exact_pool_matches_pytorch_adaptive_pool(pooling, bins):
    reference = nn.AdaptiveAvgPool2d(bins) if pooling == "avg" else nn.AdaptiveMaxPool2d(bins)
    pool = ExactAdaptivePool2d(bins, pooling)
    for height, width in [(1, 1), (2, 5), (4, 4), (7, 13), (12, 18), (31, 9)]:
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        got, want = pool(x), reference(x)
        assert got.shape == want.shape == (2, 3, bins, bins)
        if pooling == "max":
            assert torch.equal(got, want)
        else:
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-6)


def test_exportable_copy_drops_aux_and_replaces_every_pool():
    model = tiny_trained(pooling="max", bins=(1, 3))
    exportable = exportable_copy(model)
    assert exportable.aux_head is None and not exportable.training
    pools = [branch[0] for branch in exportable.ppm.branches]
    assert [(type(p), p.bins, p.pooling) for p in pools] == [
        (ExactAdaptivePool2d, 1, "max"),
        (ExactAdaptivePool2d, 3, "max"),
    ]
    assert all(isinstance(branch[0], nn.AdaptiveMaxPool2d) for branch in model.ppm.branches)


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(tiny_trained(), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_runner_rejects_a_foreign_onnx_file(tmp_path):
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    result = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "identity", [value], [result]
    )
    path = tmp_path / "identity.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(CheckpointError, match="not a PSPNet export"):
        OnnxRuntimeModel(path)
    with pytest.raises(CheckpointError, match="no such file"):
        OnnxRuntimeModel(tmp_path / "missing.onnx")


@pytest.mark.parametrize("align_corners", [True, False])
def test_exact_rewrite_traces_without_freezing_a_size(tmp_path, align_corners):
    """A TracerWarning means a Python branch on a size was frozen into the graph."""
    model = exact_rewrite(tiny_trained(align_corners=align_corners).eval(), exportable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        export_onnx(model, tmp_path / "model.onnx", example_size=EXAMPLE_SIZE)


def test_a_13_band_model_exports_with_13_input_bands(tmp_path):
    model = tiny_trained(in_channels=13).eval()
    path = export_onnx(model, tmp_path / "s2.onnx", example_size=EXAMPLE_SIZE)
    graph_input = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert graph_input[1].dim_value == 13
    runner = OnnxRuntimeModel(path, threads=1)
    assert runner.config.in_channels == 13
    images = torch.randn(2, 13, 33, 47)
    with torch.no_grad():
        torch.testing.assert_close(runner(images), model(images), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"images must be \(N, 13, H, W\)"):
        runner(torch.randn(1, 3, 33, 47))
