"""Regions of a label map: 4-connected per class, scored, nested by depth, outlined exactly."""

import cv2
import numpy as np
import pytest
from annotation_maps import camvid_label, confidence, enclosed_filled, label_map

from pspnet.annotations.regions import find_regions, polygon, run_lengths


def paint(regions, shape, tolerance=0.0):
    canvas = np.full(shape, 255, np.uint8)
    for region in regions:
        cv2.fillPoly(canvas, [polygon(region, tolerance)], int(region.label))
    return canvas


def test_regions_cover_each_class_once_and_never_255():
    labels = label_map()
    regions = find_regions(labels, confidence(labels, 0))
    canvas = np.full(labels.shape, 255, np.uint8)
    count = np.zeros(labels.shape, np.int32)
    for region in regions:
        height, width = region.mask.shape
        window = np.s_[region.top : region.top + height, region.left : region.left + width]
        canvas[window][region.mask] = region.label
        count[window] += region.mask
    assert np.array_equal(canvas, labels)
    assert count.max() == 1


def test_regions_are_4_connected_components():
    labels = label_map()
    regions = find_regions(labels, confidence(labels, 0))
    by_class = {label: sum(r.label == label for r in regions) for label in range(5)}
    # sky 1; road ring + island 2; car 1 + the single pixel 2; person rectangle + line 2;
    # tree rectangle + the two diagonal pixels 3.
    assert by_class == {0: 1, 1: 2, 2: 2, 3: 2, 4: 3}


def test_a_region_scores_its_mean_confidence():
    labels = label_map()
    scores = confidence(labels, 1)
    for region in find_regions(labels, scores):
        height, width = region.mask.shape
        window = scores[region.top : region.top + height, region.left : region.left + width]
        assert region.score == pytest.approx(float(window[region.mask].mean()), rel=1e-6)
        assert region.area == int(region.mask.sum())


def test_depth_counts_the_regions_around_and_orders_outermost_first():
    labels = label_map()
    regions = find_regions(labels, confidence(labels, 0), outlines=True)
    depth = {(r.label, r.left, r.top): r.depth for r in regions}
    assert depth[(0, 0, 0)] == 0  # sky
    assert depth[(1, 4, 4)] == 1  # road ring, in sky's hole
    assert depth[(2, 7, 7)] == 2  # car, in the ring's hole
    assert depth[(1, 9, 9)] == 3  # road island, in the car's hole
    assert depth[(3, 4, 20)] == 1
    assert [r.depth for r in regions] == sorted(r.depth for r in regions)


def test_outlines_painted_by_depth_give_back_the_labels_with_enclosed_255_filled():
    labels = label_map()
    regions = find_regions(labels, confidence(labels, 0), outlines=True)
    assert np.array_equal(paint(regions, labels.shape), enclosed_filled(labels))


def test_outlines_are_exact_on_every_labelled_pixel_of_a_camvid_label():
    labels = camvid_label()
    regions = find_regions(labels, np.ones(labels.shape, np.float32), outlines=True)
    canvas = paint(regions, labels.shape)
    known = labels != 255
    assert np.array_equal(canvas[known], labels[known])


def test_tolerance_drops_vertices_and_keeps_99_percent_of_camvid_pixels():
    # The first train label keeps 99.2% at tolerance 1; CamVid's hundreds of specks and thin
    # void borders per image keep the median train label at 98.9% (99.8% at tolerance 0.5).
    labels = camvid_label()
    regions = find_regions(labels, np.ones(labels.shape, np.float32), outlines=True)
    exact = sum(len(polygon(region, 0)) for region in regions)
    simple = sum(len(polygon(region, 1.0)) for region in regions)
    assert simple < exact / 2
    assert (paint(regions, labels.shape, 1.0) == labels).mean() >= 0.99


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 3.0])
def test_a_pixel_or_a_line_still_gets_three_points_that_paint_it(tolerance):
    labels = np.full((9, 12), 255, np.uint8)
    labels[2, 3] = 0
    labels[6, 2:10] = 1
    labels[1:8, 11] = 2
    for region in find_regions(labels, np.ones(labels.shape, np.float32), outlines=True):
        points = polygon(region, tolerance)
        assert len(points) >= 3
        canvas = np.full(labels.shape, 255, np.uint8)
        cv2.fillPoly(canvas, [points], int(region.label))
        assert np.array_equal(canvas == region.label, labels == region.label)


def naive_runs(flat: np.ndarray) -> list[int]:
    lengths, value, count = [], False, 0
    for pixel in flat.tolist():
        if pixel == value:
            count += 1
        else:
            lengths.append(count)
            value, count = pixel, 1
    return [*lengths, count]


@pytest.mark.parametrize("seed", range(6))
def test_run_lengths_match_reading_the_whole_array(seed):
    rng = np.random.default_rng(seed)
    rows, columns = rng.integers(1, 12, 2)
    height, width = rng.integers(1, rows + 1), rng.integers(1, columns + 1)
    top, left = rng.integers(0, rows - height + 1), rng.integers(0, columns - width + 1)
    mask = rng.random((height, width)) < [0.2, 0.5, 0.95][seed % 3]
    if seed == 5:
        mask[:] = True  # one run crossing every row
    whole = np.zeros((rows, columns), bool)
    whole[top : top + height, left : left + width] = mask
    runs = run_lengths(mask, (top, left), (rows, columns)).tolist()
    expected = naive_runs(whole.ravel())
    if expected[-1] == 0:
        expected.pop()
    assert runs == expected
    assert sum(runs) == rows * columns
