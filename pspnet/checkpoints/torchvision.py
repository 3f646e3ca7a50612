"""torchvision's ImageNet ResNets (``resnet50-*.pth``): backbone weights only.

Our ResNet keeps torchvision's block names (``layer1.0.conv1`` ...), which semseg and mmseg
share too, so this module also owns the block-key pattern and depth detection they reuse.
"""

from __future__ import annotations

import torch

from pspnet.checkpoints.native import Rule, foreign_state, rename_strict
from pspnet.errors import CheckpointError
from pspnet.models.resnet import DEPTHS, BackboneName, ResNet, Stem

# Any parameter or buffer of a residual block, in torchvision's (and our) naming.
BLOCK_KEY = r"layer[1-4]\.\d+\.(?:conv[1-3]|bn[1-3]|downsample\.[01])\.\w+"

RULES: list[Rule] = [
    (r"conv1\.weight", "stem.0.conv.weight"),  # the 7x7 stride-2 conv
    (r"bn1\.(\w+)", r"stem.0.bn.\1"),
    (rf"({BLOCK_KEY})", r"\1"),
    (r"fc\.(weight|bias)", None),  # the ImageNet classifier: PSPNet has its own head
]


def matches(obj: dict) -> bool:
    """Whether ``obj`` is a torchvision ResNet state dict (a 7x7 ``conv1`` and ``layer1``)."""
    conv1 = obj.get("conv1.weight")
    return (
        isinstance(conv1, torch.Tensor)
        and conv1.ndim == 4
        and conv1.shape[-1] == 7
        and "layer1.0.conv1.weight" in obj
    )


def convert(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict onto :class:`ResNet` with the torchvision stem.

    Args:
        obj: the loaded file, a state dict.
        source: the file's path, named in errors.

    Returns:
        The state dict of ``ResNet(depth, stem="torchvision", base_width=...)``, ``fc``
        dropped; depth and width are read from the file.
    """
    return rename_backbone(obj, source, RULES, "torchvision")


def rename_backbone(
    obj: dict, source: str, rules: list[Rule], stem: Stem
) -> dict[str, torch.Tensor]:
    """An ImageNet ResNet file renamed onto :class:`ResNet` with ``stem``, strictly.

    The depth and width are read from the file's blocks; the shared step of the torchvision,
    semseg and open-mmlab ImageNet converters.
    """
    state = foreign_state(obj, source)
    depth = resnet_depth(state, source)
    base_width = state["layer1.0.conv1.weight"].shape[0]
    with torch.device("meta"):  # only names and shapes are needed
        expected = ResNet(depth, stem, base_width=base_width).state_dict()
    return rename_strict(state, rules, expected, source)


def resnet_depth(state: dict[str, torch.Tensor], source: str, prefix: str = "") -> BackboneName:
    """The ResNet depth whose block kind and blocks per stage match ``state``'s keys.

    Args:
        state: a state dict with torchvision block names.
        source: the file, named in errors.
        prefix: what precedes ``layer1`` in the keys (``"backbone."`` in mmseg).
    """
    counts = tuple(
        len({key[len(prefix) :].split(".")[1] for key in state if key.startswith(stage)})
        for stage in (f"{prefix}layer{n}." for n in range(1, 5))
    )
    kind = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state else "basic"
    for name, layout in DEPTHS.items():
        if layout == (kind, counts):
            return name
    raise CheckpointError(
        f"{source}: {kind} blocks per stage {counts} match no ResNet depth; "
        f"supported: {', '.join(f'{n} {c}' for n, (_, c) in DEPTHS.items())}"
    )
