import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet.checkpoints import load_checkpoint, load_model
from pspnet.config import InferenceConfig
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import IGNORE_INDEX, get_preset
from pspnet.data.synthetic import CONTEXT_CLASSES, SYNTHETIC_CLASSES
from pspnet.demo import VARIANTS, DemoSettings, run_demo
from pspnet.engine.evaluate import evaluate
from pspnet.inference.protocol import Network

SETTINGS = DemoSettings(
    image_width=32,
    image_height=48,
    num_train=4,
    num_val=2,
    iterations=2,
    batch_size=2,
    base_width=4,
    grid_scenes=2,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(dataclasses.replace(SETTINGS, out=out))


def test_demo_writes_a_report_comparing_both_networks(demo):
    out, result = demo
    assert result.report == out / "report.md" and result.grid == out / "grid.png"
    report = result.report.read_text()
    assert "FCN" in report and "PSPNet" in report
    assert result.table in report
    for row, score in (("mIoU, all classes", "miou"), ("pixel accuracy", "pixel_acc")):
        line = next(line for line in report.splitlines() if row in line)
        expected = [f"{100 * getattr(result.metrics[t], score):.1f}" for t in VARIANTS]
        assert line.split("|")[2:4] == [f" {value} " for value in expected], line
    # One row of grid_scenes x (image, truth, FCN, PSPNet) cells, each at least a scene wide.
    assert Image.open(result.grid).size[0] >= SETTINGS.grid_scenes * 4 * SETTINGS.image_width


def test_demo_scores_are_the_saved_networks_on_every_val_pixel(demo):
    out, result = demo
    preset = get_preset("custom", len(SYNTHETIC_CLASSES), out / "data" / "classes.txt")
    val_set = SegmentationDataset(out / "data", "val", preset)
    labelled = sum(int((label != IGNORE_INDEX).sum()) for _, label in val_set)
    assert labelled > 0
    context = [SYNTHETIC_CLASSES.index(name) for name in CONTEXT_CLASSES]
    for title, name in VARIANTS.items():
        model = load_model(out / name / "last.pt")
        assert model.config.use_ppm == (name == "pspnet"), title  # the one difference
        metrics = result.metrics[title]
        inference = InferenceConfig(mode="whole", flip=False)
        again = evaluate(Network.of(model), val_set, inference).compute()
        assert np.array_equal(metrics.matrix, again.matrix), title
        assert metrics.matrix.sum() == labelled
        assert math.isfinite(metrics.miou) and math.isfinite(metrics.pixel_acc)
        expected_context = np.nanmean([metrics.iou[i] for i in context])
        assert result.context_miou[title] == pytest.approx(expected_context, nan_ok=True)
        assert result.train_seconds[title] > 0


def test_demo_saves_both_networks_for_serve_and_predict(demo):
    out, _ = demo
    for name in VARIANTS.values():
        saved = load_checkpoint(out / f"{name}.safetensors")
        trained = load_model(out / name / "last.pt")
        assert saved.config == trained.config
        for key, value in trained.state_dict().items():
            assert torch.equal(saved.model.state_dict()[key], value), key
        assert json.loads(saved.metadata["class_names"]) == list(SYNTHETIC_CLASSES)
