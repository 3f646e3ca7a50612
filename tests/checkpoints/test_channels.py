"""3-band weights into models of other bands: the stem rule, backbones, init and native files."""

import json

import pytest
import torch
import torch.nn.functional as F
from test_torchvision import torchvision_state

from pspnet.checkpoints import build_model, load_checkpoint, save_model
from pspnet.checkpoints.channels import adapt_input_channels
from pspnet.checkpoints.transfer import init_from
from pspnet.errors import CheckpointError
from pspnet.models import ModelConfig, PSPNet
from pspnet.models.resnet import ResNet


def rgb_stem_weight() -> torch.Tensor:
    """The first conv of a 7x7 ResNet stem, (8, 3, 7, 7), as it is initialised."""
    torch.manual_seed(0)
    return ResNet("resnet18", "torchvision", base_width=8).stem[0].conv.weight.detach()


def test_the_stem_rule_repeats_rgb_cyclically_and_scales_by_three_over_n():
    weight = rgb_stem_weight()
    four = adapt_input_channels(weight, 4)
    assert four.shape == (8, 4, 7, 7)
    for band, rgb in enumerate([0, 1, 2, 0]):
        torch.testing.assert_close(four[:, band], weight[:, rgb] * 0.75, rtol=0, atol=0)
    thirteen = adapt_input_channels(weight, 13)
    for band in range(13):
        torch.testing.assert_close(thirteen[:, band], weight[:, band % 3] * (3 / 13))
    torch.testing.assert_close(adapt_input_channels(weight, 1)[:, 0], weight.sum(1))
    assert adapt_input_channels(weight, 3) is weight
    with pytest.raises(ValueError, match="3-band"):
        adapt_input_channels(four, 5)


@pytest.mark.parametrize("bands", [1, 6])
def test_a_flat_image_gives_the_rgb_response(bands):
    # One band, or RGB repeated whole: an image whose every band holds one value gives the
    # stem the response the RGB image of that value gave.
    weight = rgb_stem_weight()
    image = torch.rand(1, 1, 20, 20)
    rgb = F.conv2d(image.expand(1, 3, 20, 20), weight)
    adapted = F.conv2d(image.expand(1, bands, 20, 20), adapt_input_channels(weight, bands))
    torch.testing.assert_close(adapted, rgb, rtol=1e-5, atol=1e-5)


def test_imagenet_backbone_into_a_4_band_model(trained, tmp_path):
    torch.manual_seed(0)
    state = torchvision_state(trained(ResNet("resnet18", "torchvision", base_width=8)))
    torch.save(state, tmp_path / "resnet18.pth")
    notes = []
    config = ModelConfig(3, backbone="resnet18", stem="torchvision", base_width=8, in_channels=4)
    model = build_model(config, tmp_path / "resnet18.pth", report=notes.append)
    stem = model.backbone.stem[0].conv.weight
    torch.testing.assert_close(stem, adapt_input_channels(state["conv1.weight"], 4))
    loaded = torchvision_state(model.backbone)
    for key in loaded.keys() - {"fc.weight", "fc.bias", "conv1.weight"}:
        assert torch.equal(loaded[key], state[key]), key
    assert notes == [
        "stem.0.conv.weight: 3-band weights adapted to 4 bands (its RGB filters repeated "
        "cyclically over the bands, scaled by 3/4)"
    ]
    assert model(torch.randn(1, 4, 32, 32)) is not None


def test_rgb_backbone_reports_nothing(tmp_path):
    torch.save(torchvision_state(ResNet("resnet18", "torchvision", base_width=8)), tmp_path / "r")
    notes = []
    config = ModelConfig(3, backbone="resnet18", stem="torchvision", base_width=8)
    build_model(config, tmp_path / "r", report=notes.append)
    assert notes == []


def tiny(**options) -> PSPNet:
    return PSPNet(3, backbone="resnet18", base_width=4, **options)


def test_init_from_an_rgb_model_adapts_the_stem_and_says_so(trained, tmp_path):
    torch.manual_seed(0)
    source = trained(tiny())
    names = ["sky", "road", "tree"]
    save_model(source, tmp_path / "rgb.safetensors", {"class_names": json.dumps(names)})
    model = tiny(in_channels=13)
    transfer = init_from(model, tmp_path / "rgb.safetensors", names)
    key = "backbone.stem.0.conv.weight"
    expected = adapt_input_channels(source.state_dict()[key], 13)
    torch.testing.assert_close(model.state_dict()[key], expected)
    layer = "backbone.layer4.1.conv2.weight"
    assert torch.equal(model.state_dict()[layer], source.state_dict()[layer])
    assert "adapted to 13 bands" in transfer.to_text()
    assert any("scaled by 3/13" in note for note in transfer.to_dict()["notes"])


def test_init_from_a_model_of_other_bands_is_refused_with_the_fitting_setting(tmp_path):
    save_model(tiny(in_channels=4), tmp_path / "four.safetensors")
    with pytest.raises(CheckpointError, match=r"stem\.0\.conv\.weight.*model\.in_channels=4"):
        init_from(tiny(in_channels=13), tmp_path / "four.safetensors", ["a", "b", "c"])


def test_a_native_4_band_checkpoint_loads_strictly(trained, tmp_path):
    model = trained(tiny(in_channels=4))
    save_model(model, tmp_path / "four.safetensors")
    loaded = load_checkpoint(tmp_path / "four.safetensors")
    assert loaded.config.in_channels == 4
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
