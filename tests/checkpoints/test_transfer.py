"""Fine-tuning from a trained segmentation model: every weight, classifier rows by class name."""

import json

import pytest
import torch
from helpers import tiny_overrides

from pspnet.checkpoints import build_model, load_checkpoint, save_model
from pspnet.checkpoints.transfer import init_from
from pspnet.cli import main
from pspnet.config import load_train_config
from pspnet.engine.train import train
from pspnet.errors import CheckpointError
from pspnet.models.pspnet import ModelConfig, PSPNet

SOURCE_NAMES = ["road", "car", "person", "sky", "tree"]
TARGET_NAMES = ["Car", "pedestrian", "bus", "road"]
CLASSIFIER_KEYS = [f"{h}.classifier.{s}" for h in ("head", "aux_head") for s in ("weight", "bias")]


def tiny(num_classes: int, **options) -> PSPNet:
    return PSPNet(num_classes, backbone="resnet18", base_width=4, **options)


@pytest.fixture
def source(tmp_path, trained):
    torch.manual_seed(1)
    model = trained(tiny(len(SOURCE_NAMES)))
    with torch.no_grad():  # classifier biases the fresh init leaves at 0, so rows differ
        for key in CLASSIFIER_KEYS:
            if key.endswith("bias"):
                model.state_dict()[key].copy_(torch.randn(len(SOURCE_NAMES)))
    path = tmp_path / "source.safetensors"
    save_model(model, path, {"class_names": json.dumps(SOURCE_NAMES)})
    return path, model.state_dict()


def test_rows_are_carried_by_name_and_fresh_rows_are_named(source):
    path, theirs = source
    torch.manual_seed(2)
    model = tiny(len(TARGET_NAMES))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    transfer = init_from(model, path, TARGET_NAMES, {"pedestrian": "person"})
    ours = model.state_dict()
    for key in ours:
        if key not in CLASSIFIER_KEYS:
            assert torch.equal(ours[key], theirs[key]), key
    # Car <- car (case-insensitive), pedestrian <- person (init_classes), road <- road.
    for key in CLASSIFIER_KEYS:
        for row, source_row in ((0, 1), (1, 2), (3, 0)):
            assert torch.equal(ours[key][row], theirs[key][source_row]), key
        assert torch.equal(ours[key][2], fresh[key][2]), key  # bus: its fresh row
    assert transfer.carried == [("Car", "car"), ("pedestrian", "person"), ("road", "road")]
    assert transfer.initialised == ["bus"]
    assert "bus: initialised" in transfer.to_text()


def test_fresh_classifier_initialises_every_row(source):
    path, theirs = source
    model = tiny(len(TARGET_NAMES))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    transfer = init_from(model, path, TARGET_NAMES, classifier="fresh")
    assert transfer.carried == [] and transfer.initialised == TARGET_NAMES
    assert all(torch.equal(model.state_dict()[k], fresh[k]) for k in CLASSIFIER_KEYS)
    assert torch.equal(
        model.state_dict()["backbone.stem.0.conv.weight"], theirs["backbone.stem.0.conv.weight"]
    )


def test_another_width_is_an_error_naming_the_key_and_the_fix(source):
    path, _ = source
    with pytest.raises(CheckpointError) as err:
        init_from(PSPNet(4, backbone="resnet18", base_width=8), path, TARGET_NAMES)
    message = str(err.value)
    assert "backbone." in message and "in the source" in message
    assert "model.base_width=4" in message


@pytest.mark.parametrize(
    "pairs,needle",
    [({"lorry": "car"}, "not classes of this model"), ({"bus": "tram"}, "'tram'")],
)
def test_init_classes_must_name_real_classes(source, pairs, needle):
    with pytest.raises(CheckpointError, match=needle):
        init_from(tiny(len(TARGET_NAMES)), source[0], TARGET_NAMES, pairs)


def test_a_source_without_names_initialises_the_classifier_and_says_so(tmp_path, trained):
    path = tmp_path / "anonymous.safetensors"
    save_model(trained(tiny(4)), path)
    transfer = init_from(tiny(4), path, TARGET_NAMES)
    assert transfer.initialised == TARGET_NAMES
    assert "records no class names" in transfer.notes[0]


def test_a_published_dataset_names_the_source_classes(tmp_path, trained):
    path = tmp_path / "camvid.safetensors"
    save_model(trained(tiny(11)), path, {"dataset": "camvid"})
    transfer = init_from(tiny(2), path, ["road", "Bicyclist"])
    assert transfer.carried == [("road", "Road"), ("Bicyclist", "Bicyclist")]


def test_a_source_without_aux_head_leaves_ours_fresh(tmp_path, trained):
    path = tmp_path / "noaux.safetensors"
    save_model(trained(tiny(5, aux=False)), path, {"class_names": json.dumps(SOURCE_NAMES)})
    model = tiny(4)
    fresh = model.state_dict()["aux_head.fuse.conv.weight"].clone()
    transfer = init_from(model, path, TARGET_NAMES)
    assert torch.equal(model.state_dict()["aux_head.fuse.conv.weight"], fresh)
    assert any("no auxiliary head" in note for note in transfer.notes)


def test_build_model_takes_init(source):
    config = ModelConfig(4, backbone="resnet18", base_width=4)
    model = build_model(config, init=source[0], class_names=TARGET_NAMES)
    assert torch.equal(
        model.state_dict()["head.classifier.weight"][3], source[1]["head.classifier.weight"][0]
    )
    with pytest.raises(CheckpointError, match="class_names"):
        build_model(config, init=source[0])


def test_training_from_init_records_the_transfer_and_resume_wins(tiny_camvid, tmp_path, trained):
    names = [
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "car",
        "Pedestrian",
        "Bicyclist",
    ]
    source = tmp_path / "source.safetensors"
    save_model(trained(tiny(11)), source, {"class_names": json.dumps(names)})
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_camvid, init=str(source), iterations=4)
    train(load_train_config(None, overrides), run)
    record = json.loads((run / "init.json").read_text())
    assert record["source"] == str(source) and len(record["carried"]) == 11
    assert {"class": "Car", "from": "car"} in record["carried"]
    assert json.loads(load_checkpoint(run / "last.pt").metadata["init"]) == record
    source.unlink()  # a resumed run reads last.pt, never init again
    longer = load_train_config(None, [*overrides[:-1], "iterations=6"])
    with pytest.raises(Exception, match="different config"):  # iterations changed: refused
        train(longer, run)
    result = train(load_train_config(None, overrides), run)
    assert result.iteration == 4


def test_cli_training_prints_what_was_carried(tiny_camvid, tmp_path, trained, capsys):
    source = tmp_path / "source.safetensors"
    save_model(trained(tiny(3)), source, {"class_names": json.dumps(["road", "sky", "boat"])})
    overrides = tiny_overrides(tiny_camvid, iterations=2)
    args = ["train", "--out", str(tmp_path / "run"), "--set", *overrides, "--set", f"init={source}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "init from" in out and "Road <- road" in out and "Sky <- sky" in out
    assert "Car: initialised" in out
