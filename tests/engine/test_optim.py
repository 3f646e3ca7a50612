import pytest
import torch

from pspnet.engine.optim import build_optimizer, poly_lr, set_learning_rate
from pspnet.models import PSPNet


@pytest.fixture(scope="module")
def model() -> PSPNet:
    return PSPNet(3, backbone="resnet18", base_width=4)


def ids(parameters) -> list[int]:
    return [id(p) for p in parameters]


def test_groups_are_the_backbone_and_everything_else(model):
    groups = {g["name"]: g for g in build_optimizer(model).param_groups}
    assert list(groups) == ["backbone", "head"]
    backbone, head = ids(groups["backbone"]["params"]), ids(groups["head"]["params"])
    assert backbone == ids(model.backbone.parameters())
    assert not set(backbone) & set(head)
    assert sorted(backbone + head) == sorted(ids(model.parameters()))
    # The pyramid and both heads are new layers: every one of their parameters is in "head".
    for part in (model.ppm, model.head, model.aux_head):
        assert set(ids(part.parameters())) <= set(head)


@pytest.mark.parametrize("head_lr_mult", [10.0, 3.0])
def test_set_learning_rate_multiplies_the_head_group(model, head_lr_mult):
    optimizer = build_optimizer(model, lr=0.01, head_lr_mult=head_lr_mult)
    set_learning_rate(optimizer, 0.004)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"backbone": pytest.approx(0.004), "head": pytest.approx(0.004 * head_lr_mult)}


def test_a_step_moves_head_weights_by_the_multiplied_rate():
    model = PSPNet(3, backbone="resnet18", base_width=4)
    optimizer = build_optimizer(model, momentum=0.0, weight_decay=0.0, head_lr_mult=10.0)
    set_learning_rate(optimizer, 0.5)
    stem, classifier = next(model.backbone.parameters()), model.head.classifier.weight
    before = stem.detach().clone(), classifier.detach().clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert torch.allclose(before[0] - stem.detach(), torch.full_like(stem, 0.5))
    assert torch.allclose(before[1] - classifier.detach(), torch.full_like(classifier, 5.0))


def test_momentum_and_weight_decay_reach_both_groups(model):
    optimizer = build_optimizer(model, lr=0.02, momentum=0.8, weight_decay=5e-4)
    assert isinstance(optimizer, torch.optim.SGD)
    for group in optimizer.param_groups:
        assert (group["momentum"], group["weight_decay"]) == (0.8, 5e-4), group["name"]
    assert optimizer.defaults["lr"] == 0.02


def test_poly_lr_at_start_middle_and_end():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 75, 100, power=1.0) == pytest.approx(0.0025)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert poly_lr(0.01, 130, 100) == 0.0  # past the end it stays at zero, never negative
