"""The native safetensors format, and the errors of reading any checkpoint."""

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

import pspnet
from pspnet import CheckpointError, PSPNet
from pspnet.checkpoints import read_checkpoint, save_model


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "backbone": "resnet18",
            "stem": "torchvision",
            "output_stride": 16,
            "contract_dilation": True,
            "bins": (1, 3),
            "pooling": "max",
            "reduction": False,
            "aux": False,
            "align_corners": False,
            "dropout": 0.3,
        },
    ],
)
def test_save_then_load_is_bit_exact(options, trained, tmp_path):
    torch.manual_seed(0)
    model = trained(PSPNet(4, base_width=8, **options))
    save_model(
        model, tmp_path / "model.safetensors", metadata={"classes": json.dumps(list("abcd"))}
    )
    loaded = pspnet.load_checkpoint(tmp_path / "model.safetensors")
    assert loaded.config == model.config
    assert not loaded.model.training
    assert json.loads(loaded.metadata["classes"]) == list("abcd")
    expected = model.state_dict()
    assert loaded.model.state_dict().keys() == expected.keys()
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    images = torch.randn(1, 3, 33, 35)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), model(images))


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.pth: no such checkpoint file"):
        pspnet.load_model(tmp_path / "nowhere.pth")


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    # weights_only loading never runs a pickle's code; an arbitrary object is refused.
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.01)}, tmp_path / "args.pth")
    with pytest.raises(CheckpointError, match=r"args\.pth: not a readable PyTorch weights file"):
        read_checkpoint(tmp_path / "args.pth")


def test_garbage_file_is_refused(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        read_checkpoint(tmp_path / "junk.pth")


def test_unrecognised_dict_is_refused(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: unrecognised.*encoder\.weight"):
        read_checkpoint(tmp_path / "other.pth")


def test_safetensors_without_config_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match=r"plain\.safetensors.*pspnet model config"):
        read_checkpoint(tmp_path / "plain.safetensors")


def test_native_weights_that_do_not_fit_are_refused(tmp_path):
    model = PSPNet(4, base_width=8)
    save_model(model, tmp_path / "model.safetensors")
    config, state, metadata = read_checkpoint(tmp_path / "model.safetensors")
    del state["head.classifier.bias"]
    save_file(state, tmp_path / "cut.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*missing.*head\.classifier\.bias"):
        pspnet.load_model(tmp_path / "cut.safetensors")
