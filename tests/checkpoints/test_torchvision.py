"""torchvision ImageNet ResNets as backbone weights."""

import pytest
import torch
from reference import rename_prefixes

import pspnet
from pspnet import CheckpointError
from pspnet.checkpoints import build_model
from pspnet.models import ModelConfig
from pspnet.models.resnet import ResNet


def torchvision_state(backbone: ResNet) -> dict[str, torch.Tensor]:
    """torchvision's resnet layout: conv1/bn1 (our stem.0), the blocks as ours, and fc."""
    state = rename_prefixes(backbone.state_dict(), {"stem.0.conv.": "conv1.", "stem.0.bn.": "bn1."})
    channels = backbone.out_channels
    return state | {"fc.weight": torch.randn(1000, channels), "fc.bias": torch.randn(1000)}


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_backbone_weights_load_exactly(depth, trained, tmp_path):
    torch.manual_seed(0)
    state = torchvision_state(trained(ResNet(depth, "torchvision", base_width=8)))
    assert state["conv1.weight"].shape == (8, 3, 7, 7)
    torch.save(state, tmp_path / "resnet.pth")
    model = build_model(
        ModelConfig(3, backbone=depth, stem="torchvision", base_width=8), tmp_path / "resnet.pth"
    )
    loaded = torchvision_state(model.backbone)
    assert loaded.keys() == state.keys()
    for key in loaded.keys() - {"fc.weight", "fc.bias"}:
        assert torch.equal(loaded[key], state[key]), key


def test_file_without_num_batches_tracked_loads(trained, tmp_path):
    # torchvision's original resnet50-19c8e357.pth predates num_batches_tracked.
    state = torchvision_state(trained(ResNet("resnet50", "torchvision", base_width=8)))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = build_model(ModelConfig(3, stem="torchvision", base_width=8), tmp_path / "old.pth")
    counts = [v for k, v in model.backbone.state_dict().items() if "num_batches_tracked" in k]
    assert counts and all(v.item() == 0 for v in counts)
    assert torch.equal(model.backbone.stem[0].bn.running_var, state["bn1.running_var"])


def test_wrong_stem_or_width_is_refused(tmp_path):
    torch.save(
        torchvision_state(ResNet("resnet50", "torchvision", base_width=8)), tmp_path / "r.pth"
    )
    with pytest.raises(CheckpointError, match=r"r\.pth.*stem\.0\.conv\.weight"):
        build_model(ModelConfig(3, stem="deep", base_width=8), tmp_path / "r.pth")
    with pytest.raises(CheckpointError, match=r"mis-shaped.*layer1\.0\.conv1\.weight"):
        build_model(ModelConfig(3, stem="torchvision", base_width=4), tmp_path / "r.pth")


def test_unknown_key_is_named(tmp_path):
    state = torchvision_state(ResNet("resnet18", "torchvision", base_width=8))
    state["avgpool.scale"] = torch.ones(1)
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"unknown keys: avgpool\.scale"):
        build_model(
            ModelConfig(3, backbone="resnet18", stem="torchvision", base_width=8),
            tmp_path / "r18.pth",
        )


@pytest.mark.parametrize(
    ("theirs", "expected"),
    [
        ("bn1.running_var", "missing keys: bn1.running_var (ours: stem.0.bn.running_var)"),
        # Block keys are named alike in both, so the name is given once.
        ("layer1.0.bn1.running_var", "missing keys: layer1.0.bn1.running_var"),
    ],
)
def test_missing_key_is_named_as_in_the_file(theirs, expected, tmp_path):
    state = torchvision_state(ResNet("resnet18", "torchvision", base_width=8))
    del state[theirs]
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"r18\.pth") as error:
        build_model(
            ModelConfig(3, backbone="resnet18", stem="torchvision", base_width=8),
            tmp_path / "r18.pth",
        )
    message = str(error.value)
    assert expected in message and "(ours: layer1" not in message


def test_block_counts_of_no_depth_are_refused(tmp_path):
    state = torchvision_state(ResNet("resnet50", "torchvision", base_width=8))
    state = {k: v for k, v in state.items() if not k.startswith("layer3.5.")}
    torch.save(state, tmp_path / "r45.pth")
    with pytest.raises(CheckpointError, match=r"\(3, 4, 5, 3\) match no ResNet depth"):
        build_model(ModelConfig(3, stem="torchvision", base_width=8), tmp_path / "r45.pth")


def test_imagenet_backbone_is_not_a_model(tmp_path):
    torch.save(
        torchvision_state(ResNet("resnet50", "torchvision", base_width=8)), tmp_path / "r.pth"
    )
    with pytest.raises(CheckpointError, match="backbone_weights"):
        pspnet.load_model(tmp_path / "r.pth")
