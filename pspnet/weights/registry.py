"""The registry of published weights: ``registry.yaml`` read into typed entries.

Two kinds of entry: ``pspnet`` checkpoints (mmsegmentation's published PSPNets, loaded by our
mmseg converter) and ImageNet ``backbones`` (torchvision's and open-mmlab's ResNets, for
``backbone_weights``). Each carries its URL and expected hash; a PSPNet entry also carries
its dataset, the publisher's test settings and published mIoU. The hashes are the 8 hex digits
the publisher's file names carry: they detect a corrupt download, not a substituted one
(:mod:`pspnet.weights.download` records and enforces the full digest after the first check).
"""

from __future__ import annotations

import functools
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pspnet.errors import ConfigError
from pspnet.models.pspnet import ModelConfig

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")

# What every mmsegmentation PSPNet config shares (configs/_base_/models/pspnet_r50-d8.py):
# ResNetV1c with contract_dilation, output stride 8, pool_scales (1, 2, 3, 6), an FCN aux head.
MMSEG_PSPNET = {"output_stride": 8, "contract_dilation": True, "bins": (1, 2, 3, 6), "aux": True}

Kind = Literal["pspnet", "backbone"]


@dataclass(frozen=True)
class PublishedWeights:
    """One published weights file.

    Attributes:
        name: the publisher's name for it (mmseg's config name, or ours for a backbone).
        kind: "pspnet" (a whole network) or "backbone" (ImageNet ResNet weights).
        url: where it is downloaded from.
        sha256_prefix: the start of the file's SHA-256 hex digest, as its name carries it
            (torch.hub's rule; a prefix detects corruption, not substitution).
        model: ModelConfig fields it fixes (a backbone's depth and stem; a PSPNet's shape).
        dataset: the dataset it was trained on (our preset's name where we have one).
        num_classes: its classes (PSPNet entries).
        test: the publisher's test settings (mode, crop_size, stride, resize).
        miou: published single-scale mIoU (%).
        miou_ms_flip: published multi-scale + flip mIoU (%), where given.
        top1: published ImageNet top-1 accuracy (%) of a backbone.
        unsupported: why our converters cannot load it exactly, or None.
    """

    name: str
    kind: Kind
    url: str
    sha256_prefix: str
    model: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    num_classes: int | None = None
    test: dict[str, Any] = field(default_factory=dict)
    miou: float | None = None
    miou_ms_flip: float | None = None
    top1: float | None = None
    unsupported: str | None = None

    @property
    def file_name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name

    def model_config(self) -> ModelConfig:
        """The network this PSPNet file holds, as our converter must read it."""
        if self.kind != "pspnet":
            raise ConfigError(f"{self.name} is a backbone, not a whole PSPNet")
        # An entry's own fields win: the d32 models' output_stride is 32.
        return ModelConfig(num_classes=self.num_classes, **{**MMSEG_PSPNET, **self.model})

    def inference(self) -> dict[str, Any]:
        """The publisher's single-scale test as InferenceConfig fields."""
        test = self.test
        settings: dict[str, Any] = {"mode": test["mode"], "flip": False, "scales": [1.0]}
        if test["mode"] == "slide":
            settings["crop_size"] = list(test["crop_size"])
            settings["stride_rate"] = test["stride"][0] / test["crop_size"][0]
        settings["fit_within"] = list(test["resize"])  # mmseg's keep-ratio Resize
        return settings


def registry() -> dict[str, PublishedWeights]:
    """Every entry by name, read once from ``registry.yaml``."""
    return dict(_read(REGISTRY_FILE))


@functools.cache
def _read(path: Path) -> tuple[tuple[str, PublishedWeights], ...]:
    raw = yaml.safe_load(path.read_text())
    entries = []
    for kind, section in (("pspnet", "pspnet"), ("backbone", "backbones")):
        for values in raw[section]:
            entry = PublishedWeights(kind=kind, **values)
            entries.append((entry.name, entry))
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: names must be unique")
    return tuple(entries)


def find(name: str) -> PublishedWeights | None:
    """The entry called ``name``, or the one whose URL is ``name``; None when neither."""
    entries = registry()
    if name in entries:
        return entries[name]
    return next((e for e in entries.values() if e.url == name), None)


def imagenet_backbone(backbone: str, stem: str) -> PublishedWeights:
    """The ImageNet weights that fit a backbone: open-mmlab's v1c, else torchvision's V1.

    Raises:
        ConfigError: no published ImageNet ResNet has this depth and stem, listing those that do.
    """
    candidates = [
        entry
        for entry in registry().values()
        if entry.kind == "backbone" and entry.model == {"backbone": backbone, "stem": stem}
    ]
    # torchvision's V1 weights first: the ones mmseg's 7x7-stem PSPNets were trained from.
    candidates.sort(key=lambda entry: not entry.name.endswith("_v1"))
    if candidates:
        return candidates[0]
    offered = sorted(
        {
            f"{e.model['backbone']} with stem {e.model['stem']}"
            for e in registry().values()
            if e.kind == "backbone"
        }
    )
    raise ConfigError(
        f"no published ImageNet weights for {backbone} with stem {stem!r} (the paper's 64-64-128 "
        f"stem has none to download); published: {', '.join(offered)}; or give a file"
    )


def estimated_bytes(entry: PublishedWeights) -> int:
    """The size of the entry's weights as fp32 tensors, from its parameter and buffer count."""
    import torch

    from pspnet.models.pspnet import PSPNet
    from pspnet.models.resnet import ResNet

    with torch.device("meta"):
        if entry.kind == "pspnet":
            module = PSPNet.from_config(entry.model_config())
            extra = 0
        else:
            module = ResNet(entry.model["backbone"], entry.model["stem"])
            extra = (module.out_channels + 1) * 1000  # the ImageNet classifier
    tensors = [*module.parameters(), *module.buffers()]
    return 4 * (sum(t.numel() for t in tensors) + extra)


def is_cached(entry: PublishedWeights) -> bool:
    """Whether the entry's file is in the download cache already."""
    from pspnet.weights.download import cache_path

    return cache_path(entry.url).is_file()


@dataclass(frozen=True)
class ModelsSettings:
    """``pspnet models``: published weights to use by name.

    Attributes:
        dataset: only this dataset's (ade20k, cityscapes, voc ...).
        speed: also each model's latency and memory on this machine, from what pspnet
            benchmark --checkpoint NAME --save measured here.
    """

    dataset: str | None = None
    speed: bool = False
