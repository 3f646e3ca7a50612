"""The confusion matrix and its scores against hand counts and an independent numpy count."""

import csv
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pspnet.engine.metrics import ConfusionMatrix

IGNORE = 255

# 3 classes, 2 x 3 pixels. The last pixel is ignored (its prediction 2 must not count), so
# class 2 appears in neither ground truth nor prediction: it is absent.
TARGET = [[0, 0, 1], [1, 1, IGNORE]]
PRED = [[0, 1, 1], [0, 1, 2]]
# Valid (truth, prediction) pairs: (0,0) (0,1) (1,1) (1,0) (1,1).
# class 0: TP 1, FP 1, FN 1 -> IoU 1/3, acc 1/2.  class 1: TP 2, FP 1, FN 1 -> IoU 2/4, acc 2/3.
HAND_MATRIX = [[1, 1, 0], [1, 2, 0], [0, 0, 0]]


def small_example() -> ConfusionMatrix:
    matrix = ConfusionMatrix(3, ignore_index=IGNORE)
    matrix.update(torch.tensor(PRED), torch.tensor(TARGET))
    return matrix


def test_hand_example_matrix():
    assert small_example().matrix.tolist() == HAND_MATRIX


def test_hand_example_exclude_absent():
    metrics = small_example().compute()
    assert metrics.iou[0] == pytest.approx(1 / 3)
    assert metrics.iou[1] == pytest.approx(1 / 2)
    assert math.isnan(metrics.iou[2])
    assert metrics.acc[:2] == pytest.approx((1 / 2, 2 / 3))
    assert math.isnan(metrics.acc[2])
    assert metrics.miou == pytest.approx((1 / 3 + 1 / 2) / 2)  # 5/12
    assert metrics.mean_acc == pytest.approx((1 / 2 + 2 / 3) / 2)  # 7/12
    assert metrics.pixel_acc == pytest.approx(3 / 5)


def test_hand_example_absent_as_zero():
    metrics = small_example().compute(absent="zero")
    assert metrics.miou == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)  # 5/18
    assert metrics.mean_acc == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)  # 7/18
    assert metrics.pixel_acc == pytest.approx(3 / 5)
    assert math.isnan(metrics.iou[2])  # per-class values stay undefined


def test_predicted_but_not_in_truth_scores_zero_iou_and_nan_accuracy():
    # truth [0, 0], prediction [0, 1]: class 1 has FP 1 -> IoU 0 (present), no truth -> acc NaN.
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    metrics = matrix.compute()
    assert metrics.iou == pytest.approx((1 / 2, 0.0))
    assert metrics.miou == pytest.approx(1 / 4)
    assert metrics.mean_acc == pytest.approx(1 / 2)
    assert matrix.compute(absent="zero").mean_acc == pytest.approx(1 / 4)


def numpy_scores(pred: np.ndarray, target: np.ndarray, classes: int):
    """Per-class IoU and accuracy by masks, one class at a time."""
    valid = target != IGNORE
    iou, acc = [], []
    for c in range(classes):
        truth, guess = (target == c) & valid, (pred == c) & valid
        inter = np.logical_and(truth, guess).sum()
        union = np.logical_or(truth, guess).sum()
        iou.append(inter / union if union else np.nan)
        acc.append(inter / truth.sum() if truth.sum() else np.nan)
    pixel = (pred[valid] == target[valid]).sum() / valid.sum()
    return np.array(iou), np.array(acc), pixel


def random_labels(rng, classes: int, shape, absent=(), ignore_rate=0.1):
    target = rng.integers(0, classes, shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, classes, shape))
    for c in absent:
        target[target == c] = (c + 1) % classes
        pred[pred == c] = (c + 1) % classes
    target[rng.random(shape) < ignore_rate] = IGNORE
    return pred, target


@pytest.mark.parametrize("shape", [(37,), (2, 19, 23), (3, 1, 8, 9)])
def test_agrees_with_numpy_on_random_labels(shape):
    rng = np.random.default_rng(sum(shape))
    pred, target = random_labels(rng, 7, shape, absent=(4,))
    matrix = ConfusionMatrix(7, IGNORE)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    iou, acc, pixel = numpy_scores(pred, target, 7)
    metrics = matrix.compute()
    np.testing.assert_allclose(metrics.iou, iou, equal_nan=True)
    np.testing.assert_allclose(metrics.acc, acc, equal_nan=True)
    assert metrics.miou == pytest.approx(np.nanmean(iou))
    assert metrics.mean_acc == pytest.approx(np.nanmean(acc))
    assert metrics.pixel_acc == pytest.approx(pixel)


def test_zero_mode_matches_semseg_epsilon_formula():
    rng = np.random.default_rng(3)
    pred, target = random_labels(rng, 6, (40, 40), absent=(2, 5))
    matrix = ConfusionMatrix(6, IGNORE)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    valid = target != IGNORE
    inter = np.array([((pred == c) & (target == c) & valid).sum() for c in range(6)])
    area_pred = np.array([((pred == c) & valid).sum() for c in range(6)])
    area_truth = np.array([((target == c) & valid).sum() for c in range(6)])
    union = area_pred + area_truth - inter
    metrics = matrix.compute(absent="zero")
    assert metrics.miou == pytest.approx(np.mean(inter / (union + 1e-10)))
    assert metrics.mean_acc == pytest.approx(np.mean(inter / (area_truth + 1e-10)))


def test_updates_accumulate_like_one_update():
    rng = np.random.default_rng(1)
    pred, target = random_labels(rng, 5, (4, 16, 16))
    whole, parts = ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(torch.from_numpy(pred), torch.from_numpy(target))
    for p, t in zip(pred, target, strict=True):
        parts.update(torch.from_numpy(p), torch.from_numpy(t))
    assert torch.equal(whole.matrix, parts.matrix)
    assert whole.matrix.sum() == (target != IGNORE).sum()


def test_computed_metrics_are_a_snapshot():
    matrix = small_example()
    metrics = matrix.compute()
    matrix.update(torch.tensor([2]), torch.tensor([2]))
    assert metrics.matrix.tolist() == HAND_MATRIX
    assert not math.isnan(matrix.compute().iou[2])


@pytest.mark.parametrize(
    ("pred", "target"),
    [([0, 3], [0, 1]), ([0, 1], [0, 3]), ([0, -1], [0, 1]), ([0, 1, 2], [0, 1])],
)
def test_bad_labels_raise(pred, target):
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(torch.tensor(pred), torch.tensor(target))


def test_float_predictions_raise():
    with pytest.raises(ValueError, match="argmax"):
        ConfusionMatrix(3).update(torch.rand(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_counts(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    matrix = ConfusionMatrix(3)
    # rank 0 sees one (0, 0) pixel, rank 1 one (2, 1) pixel.
    matrix.update(torch.tensor([rank]), torch.tensor([2 * rank]))
    matrix.all_reduce()
    queue.put((rank, matrix.matrix.tolist()))
    dist.destroy_process_group()


def test_all_reduce_sums_over_ranks():
    context = mp.get_context("fork")
    queue = context.Queue()
    port = _free_port()
    workers = [context.Process(target=_rank_counts, args=(r, port, queue)) for r in range(2)]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    expected = [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert results == {0: expected, 1: expected}


def test_all_reduce_without_process_group_is_a_no_op():
    matrix = small_example()
    matrix.all_reduce()
    assert matrix.matrix.tolist() == HAND_MATRIX


def test_markdown_and_dict_report_the_numbers():
    metrics = small_example().compute()
    text = metrics.to_markdown(["sky", "road", "car"])
    assert "| 41.67 | 58.33 | 60.00 |" in text  # 5/12, 7/12, 3/5
    assert "| 0 | sky | 33.33 | 50.00 |" in text
    assert "| 2 | car | n/a | n/a |" in text
    assert metrics.to_dict()["miou"] == pytest.approx(5 / 12)
    with pytest.raises(ValueError, match="names"):
        metrics.to_markdown(["sky"])


def test_csv_holds_the_matrix(tmp_path):
    path = tmp_path / "confusion.csv"
    small_example().compute().save_csv(path, ["sky", "road", "car"])
    rows = list(csv.reader(path.open()))
    assert rows[0][1:] == ["sky", "road", "car"]
    assert [row[0] for row in rows[1:]] == ["sky", "road", "car"]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == HAND_MATRIX
