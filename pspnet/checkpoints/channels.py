"""3-band weights for a model of other input bands: the stem's first conv, adapted by one rule.

Every published ResNet and PSPNet takes RGB, so its first conv weight is (C, 3, k, k). A model
of N bands starts from it as segmentation_models_pytorch does (``patch_first_conv``): the RGB
filters are repeated cyclically over the N bands (R, G, B, R, G, B, ...) and scaled by 3/N, so
an image whose every band holds the same value gives the stem the response it gave RGB; one
band takes the RGB filters' sum. Every other weight loads unchanged.
"""

from __future__ import annotations

import torch

__all__ = ["STEM_WEIGHT", "adapt_input_channels", "adapt_stem"]

# The first conv of every stem (the 7x7 one and the deep stems' first 3x3), in the backbone.
STEM_WEIGHT = "stem.0.conv.weight"
RGB = 3


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A 3-band conv weight (C, 3, k, k) for ``in_channels`` bands: (C, in_channels, k, k).

    Band ``i`` takes RGB filter ``i % 3`` times ``3 / in_channels``; one band takes their sum.
    """
    if weight.ndim != 4 or weight.shape[1] != RGB:
        raise ValueError(f"expected a 3-band conv weight (C, 3, k, k), got {tuple(weight.shape)}")
    if in_channels == RGB:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)  # (C, 1, k, k)
    cycle = torch.arange(in_channels) % RGB  # 0, 1, 2, 0, 1, 2, ...
    return weight[:, cycle] * (RGB / in_channels)  # (C, in_channels, k, k)


def adapt_stem(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], key: str
) -> str | None:
    """Adapt ``state[key]``, a 3-band stem weight, to the band count of ``expected[key]``.

    Only the band axis may differ; any other mismatch is left for strict loading to name.

    Args:
        state: the weights to load, changed in place (the dict; the tensor is not written).
        expected: the model's state dict (or shapes alike).
        key: the stem's first conv weight in these dicts (``backbone.`` + :data:`STEM_WEIGHT`
            in a whole model).

    Returns:
        A sentence saying what was adapted, for the load's report; None when nothing was.
    """
    weight, target = state.get(key), expected.get(key)
    if weight is None or target is None or weight.ndim != 4 or target.ndim != 4:
        return None
    bands = target.shape[1]
    if weight.shape[1] != RGB or bands == RGB:
        return None
    if weight.shape[0] != target.shape[0] or weight.shape[2:] != target.shape[2:]:
        return None
    state[key] = adapt_input_channels(weight, bands)
    rule = (
        "the sum of its RGB filters"
        if bands == 1
        else f"its RGB filters repeated cyclically over the bands, scaled by 3/{bands}"
    )
    return f"{key}: 3-band weights adapted to {bands} bands ({rule})"
