"""Pictures: colour label maps, overlays with a legend, titled grids, confusion heat maps.

PIL and numpy only, so the API and the demo draw without a plotting library. Text uses PIL's
built-in scalable font (``ImageFont.load_default(size=...)``, Pillow 10.1 or later), so no
font file has to be found on the machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pspnet.data.presets import IGNORE_INDEX

Palette = Sequence[Sequence[int]] | np.ndarray
Cell = Image.Image | np.ndarray

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_OUTLINE = (60, 60, 60)


def colorize(label: np.ndarray, palette: Palette, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Paint each class with its palette colour.

    Args:
        label: (H, W) integer class indices.
        palette: one RGB triple per class.
        ignore_index: painted black (unlabelled pixels).

    Returns:
        (H, W, 3) uint8 colour image.
    """
    colours = _palette_array(palette)
    label = np.asarray(label)
    valid = label != ignore_index
    if valid.any() and (label[valid].min() < 0 or label[valid].max() >= len(colours)):
        raise ValueError(
            f"label holds classes {label[valid].min()}..{label[valid].max()} but the palette "
            f"has {len(colours)} colours; pass a palette with one colour per class"
        )
    coloured = np.zeros((*label.shape, 3), dtype=np.uint8)
    coloured[valid] = colours[label[valid]]
    return coloured


def class_shares(
    label: np.ndarray, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX
) -> list[tuple[str, float]]:
    """The classes present in ``label`` and their fraction of the labelled pixels.

    Args:
        label: (H, W) integer class indices.
        class_names: one name per class index.
        ignore_index: pixels left out of the count.

    Returns:
        ``(name, share)`` for every present class, largest share first; the shares sum to 1
        (an empty list when no pixel is labelled).
    """
    return [(class_names[index], share) for index, share in _present(label, ignore_index)]


def format_shares(shares: Sequence[tuple[str, float]], limit: int | None = None) -> str:
    """One line such as ``"road 41.2%, car 12.0%, sky 9.5%"``.

    Args:
        shares: ``(name, share)`` pairs as :func:`class_shares` returns them.
        limit: list at most this many, then say how many more there are.
    """
    shown = shares if limit is None else shares[:limit]
    text = ", ".join(f"{name} {100 * share:.1f}%" for name, share in shown)
    hidden = len(shares) - len(shown)
    return f"{text}, +{hidden} more" if hidden else text


def legend(
    class_names: Sequence[str],
    palette: Palette,
    classes: Sequence[int] | None = None,
    shares: Sequence[float] | None = None,
    font_size: int = 14,
) -> Image.Image:
    """A panel listing classes with their colour swatch, name and (optionally) share.

    Args:
        class_names: one name per class index.
        palette: one RGB triple per class index.
        classes: the indices to list, in order; all classes when None.
        shares: fraction of the pixels of each listed class (same order as ``classes``),
            printed as a percentage in a right-aligned column.
        font_size: text height in pixels; the swatches and spacing scale with it.

    Returns:
        An RGB image on a white background.
    """
    classes = list(range(len(class_names))) if classes is None else list(classes)
    if shares is not None and len(shares) != len(classes):
        raise ValueError(f"got {len(shares)} shares for {len(classes)} classes")
    colours = _palette_array(palette)
    names = [class_names[index] for index in classes]
    percentages = None if shares is None else [f"{100 * share:.1f}%" for share in shares]
    return _legend_panel(names, [tuple(colours[i]) for i in classes], percentages, font_size)


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: Palette,
    *,
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    legend: bool = True,
    ignore_index: int = IGNORE_INDEX,
    unknown: str | None = None,
) -> Image.Image:
    """The image blended with its colour label map, with a legend of the classes present.

    Args:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) integer class indices; ``ignore_index`` pixels show the bare image.
        palette: one RGB triple per class.
        alpha: weight of the label colours (0 shows the image, 1 the label map).
        class_names: names for the legend; ``class <i>`` when None.
        legend: add a panel on the right listing the present classes, largest share first,
            with swatch, name and share of the labelled pixels.
        ignore_index: the unlabelled value.
        unknown: the legend's name for ``ignore_index`` pixels (e.g. "unknown": pixels the
            model was unsure of); shares are then of every pixel and the legend lists them
            too, with the black of :func:`colorize`.

    Returns:
        An RGB image: (H, W) without the legend, wider (and taller if the legend needs it)
        with it.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != np.shape(label):
        raise ValueError(
            f"image must be (H, W, 3) and label (H, W); got {image.shape} and {np.shape(label)}"
        )
    colours = colorize(label, palette, ignore_index)
    weight = np.where(np.asarray(label) == ignore_index, np.float32(0), np.float32(alpha))
    weight = weight[..., None]  # (H, W, 1) float32: the blend stays float32, 12 bytes a pixel
    blended = image.astype(np.float32)
    blended *= 1 - weight
    blended += weight * colours
    picture = Image.fromarray(np.rint(blended, out=blended).astype(np.uint8))
    if not legend:
        return picture
    present = _present(label, ignore_index, of_all=unknown is not None)
    palette = _palette_array(palette)
    names = class_names or [f"class {index}" for index in range(len(palette))]
    rows = [(names[index], tuple(palette[index]), share) for index, share in present]
    ignored = float(np.mean(np.asarray(label) == ignore_index))
    if unknown is not None and ignored > 0:
        rows.append((unknown, (0, 0, 0), ignored))
    font_size = int(np.clip(picture.height // 18, 12, 28))  # legible beside small and large images
    panel = _legend_panel(
        [name for name, _, _ in rows],
        [colour for _, colour, _ in rows],
        [f"{100 * share:.1f}%" for _, _, share in rows],
        font_size,
    )
    size = (picture.width + panel.width, max(picture.height, panel.height))
    canvas = Image.new("RGB", size, _BACKGROUND)
    canvas.paste(picture, (0, 0))
    canvas.paste(panel, (picture.width, 0))
    return canvas


def make_grid(
    rows: Sequence[Sequence[Cell]],
    column_titles: Sequence[str],
    row_titles: Sequence[str] | None = None,
    cell_size: int | tuple[int, int] | None = None,
    gap: int = 4,
) -> Image.Image:
    """Lay pictures out in a table with a title above each column (and left of each row).

    Args:
        rows: pictures per row: PIL images, (H, W, 3) uint8 arrays or (H, W) uint8 arrays.
        column_titles: one title per column, drawn centred above it.
        row_titles: optional title per row, drawn left of it.
        cell_size: resize every picture to this (width, height), or square side; when None
            each column is as wide as its widest picture (or its title, if wider) and each row
            as tall as its tallest, and smaller pictures sit centred in their cell.
        gap: white pixels between cells and around the table.

    Returns:
        An RGB image of width ``row title band + sum(column widths) + gap * (columns + 1)``
        and height ``title band + sum(row heights) + gap * (rows + 1)``.
    """
    cells = [[_as_rgb(cell, cell_size) for cell in row] for row in rows]
    columns = len(column_titles)
    if any(len(row) != columns for row in cells):
        raise ValueError(f"every row must hold {columns} pictures, one per column title")
    if row_titles is not None and len(row_titles) != len(cells):
        raise ValueError(f"got {len(row_titles)} row titles for {len(cells)} rows")
    widths = [max(row[c].width for row in cells) for c in range(columns)]
    heights = [max(cell.height for cell in row) for row in cells]
    font = _font_fitting(column_titles, widths)
    # A title that does not fit even in the smallest font widens its column.
    widths = [max(w, _text_width(font, t) + 4) for w, t in zip(widths, column_titles)]
    title_band = _line_height(font) + gap
    row_band = 0 if row_titles is None else max(_text_width(font, t) for t in row_titles) + gap

    width = row_band + sum(widths) + gap * (columns + 1)
    height = title_band + sum(heights) + gap * (len(cells) + 1)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    lefts = [row_band + gap + sum(widths[:c]) + gap * c for c in range(columns)]
    for left, cell_width, title in zip(lefts, widths, column_titles):
        draw.text((left + cell_width / 2, title_band / 2 + gap / 2), title, _TEXT, font, "mm")
    top = title_band + gap
    for r, (row, row_height) in enumerate(zip(cells, heights)):
        if row_titles is not None:
            draw.text((gap, top + row_height / 2), row_titles[r], _TEXT, font, "lm")
        for left, cell_width, cell in zip(lefts, widths, row):
            offset = ((cell_width - cell.width) // 2, (row_height - cell.height) // 2)
            canvas.paste(cell, (left + offset[0], top + offset[1]))
        top += row_height + gap
    return canvas


def confusion_heatmap(matrix: np.ndarray, class_names: Sequence[str]) -> Image.Image:
    """A heat map of a confusion matrix, each row normalised to sum to 1.

    Cells scale with the class count (every k-th class is named when cells are small), a
    viridis ramp with a colour bar, grey rows for classes without ground-truth pixels.

    Args:
        matrix: (C, C) counts, rows ground truth, columns prediction
            (``SegmentationMetrics.matrix``).
        class_names: one name per class.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {matrix.shape}")
    if len(class_names) != matrix.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for {matrix.shape[0]} classes")
    return _draw_confusion(matrix, [str(name) for name in class_names])


def _palette_array(palette: Palette) -> np.ndarray:
    colours = np.asarray(palette, dtype=np.int64)
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.min() < 0 or colours.max() > 255:
        raise ValueError(f"palette must be RGB triples in 0..255, got shape {colours.shape}")
    return colours.astype(np.uint8)


def _present(label: np.ndarray, ignore_index: int, of_all: bool = False) -> list[tuple[int, float]]:
    """(class index, share of labelled pixels, or ``of_all`` pixels) of each present class,
    largest first."""
    values = np.asarray(label).ravel()
    total = values.size
    values = values[values != ignore_index]
    if values.size == 0:
        return []
    counts = np.bincount(values.astype(np.int64))
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(index), counts[index] / (total if of_all else values.size)) for index in order]


def _legend_panel(
    names: Sequence[str],
    colours: Sequence[tuple[int, ...]],
    percentages: Sequence[str] | None,
    font_size: int,
) -> Image.Image:
    """Rows of swatch, name and right-aligned percentage; padding scales with the font."""
    font = ImageFont.load_default(size=font_size)
    pad = max(font_size // 2, 4)
    row_height = _line_height(font) + pad // 2
    swatch = font_size
    name_width = max((_text_width(font, name) for name in names), default=0)
    share_width = max((_text_width(font, text) for text in percentages or []), default=0)
    share_column = pad + share_width if percentages else 0
    width = pad + swatch + pad + name_width + share_column + pad
    height = 2 * pad + row_height * len(names)
    panel = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for row, (name, colour) in enumerate(zip(names, colours)):
        middle = pad + row * row_height + row_height / 2
        box = (pad, middle - swatch / 2, pad + swatch, middle + swatch / 2)
        draw.rectangle(box, fill=tuple(int(c) for c in colour), outline=_OUTLINE)
        draw.text((2 * pad + swatch, middle), name, _TEXT, font, "lm")
        if percentages:
            draw.text((width - pad, middle), percentages[row], _TEXT, font, "rm")
    return panel


def _font_fitting(titles: Sequence[str], widths: Sequence[int]) -> ImageFont.FreeTypeFont:
    """A font near a tenth of the narrowest column, shrunk until every title fits its column."""
    size = int(np.clip(min(widths, default=0) // 10, 12, 28))
    font = ImageFont.load_default(size=size)
    while size > 11 and any(_text_width(font, t) > w - 4 for t, w in zip(titles, widths)):
        size -= 1
        font = ImageFont.load_default(size=size)
    return font


def _text_width(font: ImageFont.FreeTypeFont, text: str) -> int:
    return int(np.ceil(font.getlength(text)))


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _as_rgb(cell: Cell, cell_size: int | tuple[int, int] | None) -> Image.Image:
    picture = cell if isinstance(cell, Image.Image) else Image.fromarray(np.asarray(cell))
    picture = picture.convert("RGB")
    if cell_size is None:
        return picture
    size = (cell_size, cell_size) if isinstance(cell_size, int) else tuple(cell_size)
    # Nearest keeps label colours pure when enlarging; box averaging shrinks photos cleanly.
    enlarging = size[0] >= picture.width and size[1] >= picture.height
    return picture.resize(size, Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX)


# Nine evenly spaced stops of matplotlib's viridis (checked against matplotlib), a perceptually
# uniform ramp legible in grey scale and to colour-blind readers; interpolating them linearly
# stays within 17/255 of the full map.
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ],
    dtype=np.float64,
)
_NO_TRUTH_GREY = (200, 200, 200)


def _viridis(values: np.ndarray) -> np.ndarray:
    """Colours (..., 3) uint8 of values in [0, 1], interpolated between the stops."""
    position = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(position.astype(np.int64), len(_VIRIDIS) - 2)
    weight = (position - low)[..., None]
    return np.rint(_VIRIDIS[low] * (1 - weight) + _VIRIDIS[low + 1] * weight).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _short(name: str, limit: int = 20) -> str:
    return name if len(name) <= limit else name[: limit - 2] + ".."


def _rotated(text: str, font: ImageFont.ImageFont, fill: tuple[int, int, int]) -> Image.Image:
    """White-backed text turned 90 degrees counter-clockwise (reads bottom to top)."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right + 2, bottom + 2), "white")
    ImageDraw.Draw(image).text((1, 1), text, font=font, fill=fill)
    return image.rotate(90, expand=True)


def _draw_confusion(matrix: np.ndarray, names: list[str]) -> Image.Image:
    """The heat map: cells scaled to the class count, every k-th label when cells are small."""
    count = len(names)
    cell = int(np.clip(1200 // count, 8, 48))
    label_font = _font(int(np.clip(round(cell * 0.75), 11, 15)))
    step = math.ceil((label_font.size + 3) / cell)  # label every step-th class when dense
    shown = {i: _short(names[i]) for i in range(0, count, step)}
    label_width = max(int(label_font.getlength(t)) for t in shown.values())
    title_font, axis_font = _font(18), _font(14)
    pad, side = 16, count * cell
    left = pad + 20 + label_width + 6
    top = pad + 26 + 20 + label_width + 6
    width, height = left + side + 110, top + side + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), "Confusion matrix, row-normalised", font=title_font, fill="black")
    draw.text(
        (pad + title_font.getlength("Confusion matrix, row-normalised") + 12, pad + 3),
        "(rows: ground truth, columns: prediction)",
        font=axis_font,
        fill=(90, 90, 90),
    )
    _draw_cells(image, matrix, left, top, cell)
    for index, text in shown.items():
        middle = index * cell + cell // 2
        draw.text((left - 6, top + middle), text, font=label_font, fill="black", anchor="rm")
        draw.line([(left - 4, top + middle), (left - 1, top + middle)], fill="black")
        column = _rotated(text, label_font, (0, 0, 0))
        image.paste(column, (left + middle - column.width // 2, top - 6 - column.height))
        draw.line([(left + middle, top - 4), (left + middle, top - 1)], fill="black")
    draw.text((left + side // 2, pad + 30), "prediction", font=axis_font, fill="black", anchor="mt")
    axis = _rotated("ground truth", axis_font, (0, 0, 0))
    image.paste(axis, (pad, top + side // 2 - axis.height // 2))
    _draw_colour_bar(image, left + side + 24, top, side)
    draw.text(
        (left, top + side + 10),
        f"{count} classes; grey rows: no ground-truth pixels"
        + (f"; one class in {step} named" if step > 1 else ""),
        font=axis_font,
        fill=(90, 90, 90),
    )
    return image


def _draw_cells(image: Image.Image, matrix: np.ndarray, left: int, top: int, cell: int) -> None:
    """Cell colours from the row fractions; the percentage written in cells big enough."""
    totals = matrix.sum(axis=1, keepdims=True)  # (C, 1) ground-truth pixels per class
    fractions = matrix / np.maximum(totals, 1)  # (C, C), rows sum to 1 where defined
    colours = _viridis(fractions)  # (C, C, 3)
    colours[totals[:, 0] == 0] = _NO_TRUTH_GREY
    pixels = colours.repeat(cell, axis=0).repeat(cell, axis=1)  # (C*cell, C*cell, 3)
    image.paste(Image.fromarray(pixels), (left, top))
    if cell < 30:
        return
    draw, font = ImageDraw.Draw(image), _font(int(cell * 0.36))
    for (row, column), value in np.ndenumerate(fractions):
        percent = round(100 * value)
        if percent == 0:
            continue
        centre = (left + column * cell + cell // 2, top + row * cell + cell // 2)
        ink = "black" if value > 0.6 else "white"
        draw.text(centre, str(percent), font=font, fill=ink, anchor="mm")


def _draw_colour_bar(image: Image.Image, x: int, top: int, length: int) -> None:
    ramp = _viridis(np.linspace(1.0, 0.0, length))  # (length, 3), top is 1
    bar = np.repeat(ramp[:, None, :], 18, axis=1)  # (length, 18, 3)
    image.paste(Image.fromarray(bar), (x, top))
    draw, font = ImageDraw.Draw(image), _font(12)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + round((1 - fraction) * (length - 1))
        draw.line([(x + 18, y), (x + 22, y)], fill="black")
        draw.text((x + 25, y), f"{round(100 * fraction)}%", font=font, fill="black", anchor="lm")


def label_png(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> Image.Image:
    """A palette-indexed PNG image: pixel values are the class indices, shown in colour."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image
