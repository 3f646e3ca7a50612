import numpy as np
import pytest
import torch
from PIL import Image

from pspnet.engine.metrics import ConfusionMatrix
from pspnet.visualize import (
    class_shares,
    colorize,
    confusion_heatmap,
    format_shares,
    legend,
    make_grid,
    overlay,
)

# Colours that no anti-aliased dark text on white can produce, so a colour found in a picture
# was painted as a swatch or a label.
PALETTE = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250)]
NAMES = ["red", "green", "blue", "yellow", "cyan"]


def colours_in(picture: Image.Image) -> set[tuple[int, int, int]]:
    pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in p) for p in np.unique(pixels, axis=0)}


def test_colorize_paints_every_class_and_ignore_black():
    label = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    coloured = colorize(label, PALETTE)
    assert coloured.shape == (2, 3, 3) and coloured.dtype == np.uint8
    for (row, col), value in np.ndenumerate(label):
        expected = (0, 0, 0) if value == 255 else PALETTE[value]
        assert tuple(coloured[row, col]) == expected


def test_colorize_refuses_classes_beyond_the_palette():
    with pytest.raises(ValueError, match="palette"):
        colorize(np.array([[5]]), PALETTE)


def test_class_shares_match_numpy_counts():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 3, 255], np.uint8), size=(20, 30), p=[0.5, 0.2, 0.2, 0.1])
    shares = class_shares(label, NAMES)
    valid = label[label != 255]
    values, counts = np.unique(valid, return_counts=True)
    expected = {NAMES[v]: c / valid.size for v, c in zip(values, counts)}
    assert dict(shares) == pytest.approx(expected)
    assert [name for name, _ in shares] == sorted(expected, key=expected.get, reverse=True)
    assert sum(share for _, share in shares) == pytest.approx(1.0)
    assert class_shares(np.full((3, 3), 255), NAMES) == []


def test_format_shares():
    shares = [("road", 0.412), ("car", 0.12), ("sky", 0.095)]
    assert format_shares(shares) == "road 41.2%, car 12.0%, sky 9.5%"
    assert format_shares(shares, limit=1) == "road 41.2%, +2 more"


def test_legend_lists_the_asked_classes_and_grows_by_rows():
    three = legend(NAMES, PALETTE, classes=[4, 0, 2], shares=[0.5, 0.3, 0.2])
    assert set(map(tuple, [PALETTE[4], PALETTE[0], PALETTE[2]])) <= colours_in(three)
    assert not {PALETTE[1], PALETTE[3]} & colours_in(three)
    one = legend(NAMES, PALETTE, classes=[4])
    full = legend(NAMES, PALETTE)
    assert set(PALETTE) <= colours_in(full)
    row = (three.height - one.height) / 2
    assert row > 10 and full.height - one.height == pytest.approx(4 * row)
    assert three.width > one.width  # the share column takes room
    with pytest.raises(ValueError):
        legend(NAMES, PALETTE, classes=[0, 1], shares=[1.0])


def test_overlay_blends_and_its_legend_lists_only_present_classes_by_share():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    label = np.full((40, 60), 255, dtype=np.uint8)
    label[:, :30], label[:10, 30:], label[10:, 30:50] = 3, 1, 0  # 1200, 300, 600 pixels
    picture = overlay(image, label, PALETTE, alpha=0.25, class_names=NAMES)
    assert picture.width > 60 and picture.height >= 40

    pixels = np.asarray(picture)
    colours = np.array([PALETTE[v] if v != 255 else (0, 0, 0) for v in label.ravel()])
    weight = np.where(label.ravel() == 255, 0.0, 0.25)[:, None]
    expected = (1 - weight) * image.reshape(-1, 3) + weight * colours
    assert np.abs(pixels[:40, :60].reshape(-1, 3).astype(float) - expected).max() <= 0.5

    panel = picture.crop((60, 0, picture.width, picture.height))
    present = [PALETTE[3], PALETTE[0], PALETTE[1]]  # by share: yellow, red, green
    assert set(present) <= colours_in(panel)
    assert not {PALETTE[2], PALETTE[4]} & colours_in(panel)
    panel_pixels = np.asarray(panel)
    rows = [np.nonzero((panel_pixels == c).all(-1))[0].mean() for c in present]
    assert rows == sorted(rows)  # largest share on top

    bare = overlay(image, label, PALETTE, legend=False)
    assert bare.size == (60, 40)


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="label"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.uint8), PALETTE)


def solid(colour, width, height) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def cell_box(grid: Image.Image, colour) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero((np.asarray(grid) == colour).all(-1))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_make_grid_is_the_cells_plus_titles():
    sizes = [[(50, 30), (70, 20)], [(40, 45), (60, 35)]]  # (width, height) per cell
    rows = [[solid(PALETTE[2 * r + c], *sizes[r][c]) for c in range(2)] for r in range(2)]
    grid = make_grid(rows, ["a", "b"], gap=0)
    widths, heights = [50, 70], [30, 45]  # widest per column, tallest per row
    title_band = grid.height - sum(heights)
    assert grid.width == sum(widths)
    assert title_band > 8
    assert (np.asarray(grid)[:title_band] < 100).all(-1).any()  # the titles are drawn
    # Cells sit centred in their slot; each slot starts where the previous ones end.
    for r in range(2):
        for c in range(2):
            width, height = sizes[r][c]
            left = sum(widths[:c]) + (widths[c] - width) // 2
            top = title_band + sum(heights[:r]) + (heights[r] - height) // 2
            assert cell_box(grid, PALETTE[2 * r + c]) == (left, top, left + width, top + height)


def test_make_grid_gaps_row_titles_and_cell_size():
    rows = [[solid(PALETTE[0], 10, 10), np.full((8, 12), 128, np.uint8)]]
    grid = make_grid(rows, ["image", "label"], row_titles=["first"], cell_size=(64, 48), gap=5)
    red = cell_box(grid, PALETTE[0])
    grey = cell_box(grid, (128, 128, 128))
    assert red[2] - red[0] == 64 and red[3] - red[1] == 48
    assert grey[0] - red[2] == 5 and grey[1] == red[1]
    assert grid.width == grey[2] + 5 and grid.height == red[3] + 5
    assert red[0] > 5 + 10  # the row title band comes first
    with pytest.raises(ValueError):
        make_grid(rows, ["only one title"])


@pytest.mark.parametrize("classes", [11, 150])
def test_heatmap_is_a_png_with_the_diagonal_in_the_top_colour(tmp_path, classes):
    labels = torch.arange(classes).repeat(3)
    matrix = ConfusionMatrix(classes)
    matrix.update(labels[labels != 1], labels[labels != 1])  # perfect, class 1 without truth
    path = tmp_path / "heat.png"
    names = [f"class number {i}" for i in range(classes)]
    confusion_heatmap(matrix.compute().matrix, names).save(path)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert 300 < image.shape[0] < 2000 and 300 < image.shape[1] < 2000
    packed = image.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])  # (H, W) one int per colour
    colours = set(np.unique(packed).tolist())
    assert 253 << 16 | 231 << 8 | 37 in colours  # viridis at 1: the perfect diagonal
    assert 68 << 16 | 1 << 8 | 84 in colours  # viridis at 0: everything off it
    assert 200 << 16 | 200 << 8 | 200 in colours  # the row without ground truth
