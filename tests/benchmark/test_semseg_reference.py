"""semseg's network, the benchmark's reference: semseg's own key names, the same output."""

import pytest
import torch
import torch.nn.functional as F

from pspnet.benchmark.semseg import SemsegPSPNet, semseg_difference
from pspnet.checkpoints import semseg
from pspnet.models import PSPNet
from pspnet.models.pspnet import ModelConfig


@pytest.mark.parametrize(
    "options",
    [
        {"backbone": "resnet50"},
        {"backbone": "resnet101", "aux": False},
        {"backbone": "resnet50", "use_ppm": False, "bins": (1, 2, 3, 6)},
        {"backbone": "resnet50", "bins": (1, 2, 4)},
    ],
)
def test_semseg_network_runs_our_weights_as_semseg_would(trained, options):
    torch.manual_seed(0)
    model = trained(PSPNet(7, base_width=8, **options))
    reference = SemsegPSPNet.of(model)
    images = torch.randn(2, 3, 41, 57)
    with torch.inference_mode():
        ours = F.interpolate(
            model.stride_logits(images), (41, 57), mode="bilinear", align_corners=True
        )
        theirs = reference(images)
    assert theirs.shape == (2, 7, 41, 57)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5 * ours.abs().max().item())


def test_its_state_is_a_semseg_checkpoint(trained):
    """Its keys are the ones semseg writes: our semseg converter reads them back to our weights."""
    torch.manual_seed(1)
    model = trained(PSPNet(5, backbone="resnet50", base_width=8))
    state = SemsegPSPNet.of(model).state_dict()
    assert {
        "layer0.0.weight",
        "layer0.7.running_var",
        "ppm.features.3.1.weight",
        "cls.4.bias",
    } <= set(state)
    assert semseg.matches({"state_dict": state})
    config, converted = semseg.convert({"state_dict": state}, "reference.pth")
    assert config == model.config
    ours = model.state_dict()
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[key], ours[key]) for key in ours)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"backbone": "resnet18"}, "semseg builds ResNet-50/101/152 only, not resnet18"),
        ({"align_corners": False}, "not semseg's network (align_corners=False)"),
        ({"stem": "torchvision", "output_stride": 16}, "(stem='torchvision', output_stride=16)"),
        ({"in_channels": 4}, "(in_channels=4)"),
    ],
)
def test_what_semseg_cannot_build_is_named(options, reason):
    config = ModelConfig(11, **options)
    assert reason in semseg_difference(config)
    with pytest.raises(ValueError, match="semseg"):
        SemsegPSPNet(config)
    assert semseg_difference(ModelConfig(150, backbone="resnet152", dropout=0.2)) is None
