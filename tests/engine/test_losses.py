import pytest
import torch

from pspnet.data.presets import IGNORE_INDEX
from pspnet.engine.losses import SegmentationLoss

CLASSES = 4


def outputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, CLASSES, 3, 5, generator=generator)  # (N, C, H, W)
    aux = torch.randn(2, CLASSES, 3, 5, generator=generator)
    return logits, aux


def labels(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, CLASSES, (2, 3, 5), generator=generator)  # (N, H, W)
    target[0, 0, :2] = IGNORE_INDEX
    target[1, 2, 4] = IGNORE_INDEX
    return target


def mean_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy by hand: -log p(true class), averaged over the labelled pixels."""
    log_probs = logits.log_softmax(1).permute(0, 2, 3, 1)  # (N, H, W, C)
    labelled = target != IGNORE_INDEX
    return -log_probs[labelled].gather(1, target[labelled][:, None]).mean()


@pytest.mark.parametrize("aux_weight", [0.4, 1.5])
def test_total_is_main_plus_weighted_aux(aux_weight):
    logits, aux = outputs()
    target = labels()
    total, parts = SegmentationLoss(aux_weight)((logits, aux), target)
    main, auxiliary = mean_nll(logits, target), mean_nll(aux, target)
    assert parts["loss_main"].item() == pytest.approx(main.item(), rel=1e-6)
    assert parts["loss_aux"].item() == pytest.approx(auxiliary.item(), rel=1e-6)
    assert total.item() == pytest.approx((main + aux_weight * auxiliary).item(), rel=1e-6)
    assert parts["loss"].item() == total.item()


def test_without_aux_logits_the_total_is_the_main_loss():
    logits, _ = outputs()
    target = labels()
    total, parts = SegmentationLoss(0.4)((logits, None), target)
    assert total.item() == pytest.approx(mean_nll(logits, target).item(), rel=1e-6)
    assert set(parts) == {"loss_main", "loss"}
    assert parts["loss"].item() == parts["loss_main"].item() == total.item()


def test_aux_weight_zero_leaves_the_aux_logits_out():
    logits, aux = (t.requires_grad_(True) for t in outputs())
    target = labels()
    total, parts = SegmentationLoss(0.0)((logits, aux), target)
    total.backward()
    assert total.item() == pytest.approx(mean_nll(logits, target).item(), rel=1e-6)
    assert "loss_aux" not in parts
    assert aux.grad is None  # no graph through the aux head at all


def test_ignored_pixels_contribute_nothing():
    logits, aux = outputs()
    target = labels()
    criterion = SegmentationLoss(0.4)
    before, _ = criterion((logits, aux), target)
    ignored = (target == IGNORE_INDEX)[:, None].expand_as(logits)  # (N, C, H, W)
    noise = 100 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    after, _ = criterion((logits + noise * ignored, aux - noise * ignored), target)
    assert after.item() == before.item()
    changed, _ = criterion((logits + noise * ~ignored, aux), target)
    assert changed.item() != pytest.approx(before.item())  # the same noise elsewhere counts


def test_one_labelled_pixel_is_scored_alone():
    logits, aux = outputs()
    target = torch.full((2, 3, 5), IGNORE_INDEX)
    target[1, 1, 3] = 2
    total, parts = SegmentationLoss(0.5)((logits, aux), target)
    main = -logits[1, :, 1, 3].log_softmax(0)[2]
    auxiliary = -aux[1, :, 1, 3].log_softmax(0)[2]
    assert parts["loss_main"].item() == pytest.approx(main.item(), rel=1e-6)
    assert total.item() == pytest.approx((main + 0.5 * auxiliary).item(), rel=1e-6)


def test_a_custom_ignore_index_is_the_one_left_out():
    logits, aux = outputs()
    target = labels().clamp(max=CLASSES - 1)  # no 255 left; class 0 plays ignore
    total, _ = SegmentationLoss(0.4, ignore_index=0)((logits, aux), target)
    kept = target.masked_fill(target == 0, IGNORE_INDEX)
    expected = mean_nll(logits, kept) + 0.4 * mean_nll(aux, kept)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
