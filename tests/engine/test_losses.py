import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

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


# Class weights and online hard example mining, against a loop over pixels.

WEIGHTS = [0.5, 2.0, 0.0, 1.25]  # class 2 weighs nothing


def batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, CLASSES, 5, 5, generator=generator)  # (N, C, H, W)
    aux = torch.randn(n, CLASSES, 5, 5, generator=generator)
    target = torch.randint(0, CLASSES, (n, 5, 5), generator=generator)  # (N, H, W)
    target[0, 1, 1:4] = IGNORE_INDEX
    target[-1, 4, :2] = IGNORE_INDEX
    return logits, aux, target


def reference(logits, aux, target, class_weights=None, ohem_thresh=None, ohem_min_kept=0):
    """The loss by hand, pixel by pixel in float64, and the pixels it scored.

    OHEM keeps the ``ohem_min_kept`` pixels of lowest true-class probability plus every one
    below ``ohem_thresh``; the aux logits are scored on the same pixels, weighed by 0.4.
    """
    n, c, h, w = logits.shape
    pixels = [(b, i, j) for b in range(n) for i in range(h) for j in range(w)]
    kept = [(b, i, j) for b, i, j in pixels if target[b, i, j] != IGNORE_INDEX]
    if ohem_thresh is not None:
        p = {}
        for b, i, j in kept:
            scores = [math.exp(logits[b, k, i, j].item()) for k in range(c)]
            p[b, i, j] = scores[int(target[b, i, j])] / sum(scores)
        hardest = sorted(kept, key=lambda pixel: p[pixel])[:ohem_min_kept]
        kept = [px for px in kept if p[px] < ohem_thresh or px in hardest]

    def mean_nll(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        total, norm = 0.0, 0.0
        for b, i, j in kept:
            y = int(target[b, i, j])
            weight = 1.0 if class_weights is None else class_weights[y]
            total = total - weight * (x[b, y, i, j] - torch.logsumexp(x[b, :, i, j], 0))
            norm += weight
        return total / norm

    return mean_nll(logits), mean_nll(aux), kept


def check_against_reference(**options) -> list[tuple[int, int, int]]:
    """Loss parts and gradients of SegmentationLoss(0.4, **options) against ``reference``."""
    logits, aux, target = (t.requires_grad_(t.is_floating_point()) for t in batch())
    weights = options.get("class_weights")
    if weights is not None:
        options["class_weights"] = torch.tensor(weights)
    total, parts = SegmentationLoss(0.4, **options)((logits, aux), target)
    main, auxiliary, kept = reference(logits, aux, target, weights, **ohem_options(options))
    assert parts["loss_main"].item() == pytest.approx(main.item(), rel=1e-6)
    assert parts["loss_aux"].item() == pytest.approx(auxiliary.item(), rel=1e-6)
    assert total.item() == pytest.approx((main + 0.4 * auxiliary).item(), rel=1e-6)
    if "ohem_thresh" in options:
        labelled = (target != IGNORE_INDEX).sum().item()
        assert parts["ohem_kept"].item() == pytest.approx(len(kept) / labelled)
    grads = torch.autograd.grad(total, (logits, aux))
    expected = torch.autograd.grad(main + 0.4 * auxiliary, (logits, aux))
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad, want.float(), rtol=1e-5, atol=1e-7)
    return kept


def ohem_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k.startswith("ohem")}


def test_class_weights_match_the_pixel_loop():
    check_against_reference(class_weights=WEIGHTS)


def test_ohem_keeps_the_min_kept_hardest_when_the_threshold_keeps_fewer():
    kept = check_against_reference(ohem_thresh=1e-6, ohem_min_kept=7)
    assert len(kept) == 7  # no pixel is that sure to be wrong: min_kept decides


def test_ohem_keeps_every_pixel_below_the_threshold_when_they_are_more():
    kept = check_against_reference(ohem_thresh=0.3, ohem_min_kept=3)
    assert 3 < len(kept) < (batch()[2] != IGNORE_INDEX).sum()  # the threshold decides


@pytest.mark.parametrize("thresh", [1e-6, 0.2])  # min_kept decides, then the threshold
def test_ohem_with_class_weights_is_the_weighted_mean_over_the_kept_pixels(thresh):
    kept = check_against_reference(class_weights=WEIGHTS, ohem_thresh=thresh, ohem_min_kept=12)
    assert (len(kept) == 12) == (thresh == 1e-6)


def test_ohem_keeps_every_labelled_pixel_when_there_are_fewer_than_min_kept():
    kept = check_against_reference(ohem_thresh=1e-6, ohem_min_kept=1000)
    assert len(kept) == (batch()[2] != IGNORE_INDEX).sum()


def test_without_the_options_the_loss_is_torch_cross_entropy():
    logits, aux, target = batch()
    total, parts = SegmentationLoss()((logits, aux), target)
    main = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    auxiliary = F.cross_entropy(aux, target, ignore_index=IGNORE_INDEX)
    assert total.item() == pytest.approx((main + 0.4 * auxiliary).item(), rel=1e-6)
    assert set(parts) == {"loss", "loss_main", "loss_aux"}
    weighted, _ = SegmentationLoss(class_weights=torch.tensor(WEIGHTS))((logits, None), target)
    expected = F.cross_entropy(
        logits, target, weight=torch.tensor(WEIGHTS), ignore_index=IGNORE_INDEX
    )
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ohem_parts_are_detached_and_report_the_kept_fraction():
    logits, aux, target = (t.requires_grad_(t.is_floating_point()) for t in batch())
    criterion = SegmentationLoss(0.4, ohem_thresh=1e-6, ohem_min_kept=9)
    total, parts = criterion((logits, aux), target)
    assert total.requires_grad
    assert set(parts) == {"loss", "loss_main", "loss_aux", "ohem_kept"}
    assert not any(part.requires_grad for part in parts.values())
    assert parts["ohem_kept"].item() == pytest.approx(9 / (target != IGNORE_INDEX).sum().item())


def test_bf16_logits_are_scored_in_float32():
    logits, aux, target = batch()
    logits, aux = logits.bfloat16(), aux.bfloat16()
    criterion = SegmentationLoss(
        0.4, class_weights=torch.tensor(WEIGHTS), ohem_thresh=0.3, ohem_min_kept=5
    )
    low, _ = criterion((logits, aux), target)
    high, _ = criterion((logits.float(), aux.float()), target)
    assert low.dtype == torch.float32
    assert low.item() == high.item()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"class_weights": torch.ones(2, 2)}, "1-D"),
        ({"class_weights": torch.tensor([1.0, float("nan"), 1.0, 1.0])}, "finite"),
        ({"class_weights": torch.tensor([1.0, float("inf"), 1.0, 1.0])}, "finite"),
        ({"class_weights": torch.tensor([1.0, -0.5, 1.0, 1.0])}, ">= 0"),
        ({"ohem_thresh": 0.0}, r"\(0, 1\]"),
        ({"ohem_thresh": 1.5}, r"\(0, 1\]"),
        ({"ohem_thresh": 0.7, "ohem_min_kept": -1}, ">= 0"),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        SegmentationLoss(0.4, **options)


def test_class_weights_for_another_class_count_raise_naming_both():
    logits, aux, target = batch()
    criterion = SegmentationLoss(0.4, class_weights=torch.ones(3))
    with pytest.raises(ValueError, match="3 weights.* 4 classes"):
        criterion((logits, aux), target)


# Under DistributedDataParallel: two gloo ranks, each on its half of one batch.

DDP_CASES = {
    "plain": {},
    "weighted": {"class_weights": WEIGHTS},
    "ohem": {"ohem_thresh": 1e-6, "ohem_min_kept": 12},
    "ohem_weighted": {"class_weights": WEIGHTS, "ohem_thresh": 0.1, "ohem_min_kept": 20},
}


def ddp_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four images; the first two (rank 0's) have fewer labelled and easier pixels."""
    logits, aux, target = batch(n=4, seed=3)
    target[0, :2] = IGNORE_INDEX
    truth = F.one_hot(target.masked_fill(target == IGNORE_INDEX, 0), CLASSES)  # (N, H, W, C)
    logits[:2] += 2 * truth[:2].permute(0, 3, 1, 2)  # (2, C, H, W)
    return logits, aux, target


def ddp_criterion(case: str) -> SegmentationLoss:
    options = dict(DDP_CASES[case])
    if "class_weights" in options:
        options["class_weights"] = torch.tensor(options["class_weights"])
    return SegmentationLoss(0.4, **options)


def _rank_losses(rank: int, folder: str) -> None:
    """One rank: the loss, gradients and kept fraction on its half, for every case."""
    torch.set_num_threads(1)
    init = f"file://{folder}/init"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    logits, aux, target = ddp_batch()
    half = slice(2 * rank, 2 * rank + 2)
    results = {}
    for case in DDP_CASES:
        main, auxiliary = (x[half].clone().requires_grad_(True) for x in (logits, aux))
        loss, parts = ddp_criterion(case)((main, auxiliary), target[half])
        loss.backward()
        results[case] = {
            "loss": loss.detach(),
            "grads": (main.grad, auxiliary.grad),
            "ohem_kept": parts.get("ohem_kept"),
        }
    torch.save(results, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_losses, args=(str(folder),), nprocs=2)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.parametrize("case", DDP_CASES)
def test_two_ranks_give_the_loss_and_gradient_of_the_whole_batch(rank_results, case):
    logits, aux, target = (t.requires_grad_(t.is_floating_point()) for t in ddp_batch())
    options = DDP_CASES[case]
    main, auxiliary, kept = reference(
        logits, aux, target, options.get("class_weights"), **ohem_options(options)
    )
    whole = main + 0.4 * auxiliary
    ranks = [result[case] for result in rank_results]
    assert sum(r["loss"].item() for r in ranks) / 2 == pytest.approx(whole.item(), rel=1e-6)
    expected = torch.autograd.grad(whole, (logits, aux))
    for i, want in enumerate(expected):  # DDP averages the ranks' gradients
        averaged = torch.cat([r["grads"][i] for r in ranks]) / 2
        torch.testing.assert_close(averaged, want.float(), rtol=1e-5, atol=1e-7)
    if "ohem_thresh" in options:
        labelled = (target != IGNORE_INDEX).sum().item()
        for r in ranks:
            assert r["ohem_kept"].item() == pytest.approx(len(kept) / labelled)
        per_rank = sum(b < 2 for b, _, _ in kept)
        assert len(kept) == options["ohem_min_kept"]  # min_kept binds ...
        assert per_rank != len(kept) - per_rank  # ... and unevenly: the global k-th matters
