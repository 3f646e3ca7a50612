"""Reading weights: the native format and every foreign layout we convert, one file per format."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pspnet.checkpoints import mmseg, semseg, torchvision
from pspnet.checkpoints.channels import STEM_WEIGHT, adapt_stem
from pspnet.checkpoints.loaded import LoadedCheckpoint, loaded
from pspnet.checkpoints.native import is_native, load_state_strict, read_native, save_model
from pspnet.errors import CheckpointError
from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.resnet import ResNet
from pspnet.settings import check_settings, setting
from pspnet.weights import PublishedWeights, imagenet_backbone, resolve
from pspnet.weights.download import Progress

__all__ = [
    "LoadedCheckpoint",
    "build_model",
    "load_backbone_weights",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_model",
]

# Foreign full-model layouts, tried in order; each module offers matches() and convert().
FORMATS = (semseg, mmseg)


def torch_load(path: Path) -> dict:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickles).

    torch's own messages are not passed on: its weights_only refusal advises retrying with
    ``weights_only=False``, which runs whatever code the file holds.
    """
    unreadable = f"{path}: not a readable PyTorch weights file"
    try:
        file = open(path, "rb")  # opened here: torch raises OSError for a corrupt zip too
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from err
    try:
        with file:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except EOFError as err:
        raise CheckpointError(f"{unreadable} (empty or truncated)") from err
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CheckpointError(f"{unreadable} (corrupt or truncated)") from err
        raise CheckpointError(
            f"{unreadable}: it holds Python objects other than tensors ({found[1]}), which "
            "pspnet does not unpickle for safety; use a file of tensors only (a state dict, "
            "or safetensors)"
        ) from err
    except Exception as err:  # zip, pickle-opcode and lookup errors have no common base
        raise CheckpointError(f"{unreadable} (corrupt or truncated)") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def read_checkpoint(
    spec: str | Path, progress: Progress | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """Recognise a checkpoint's layout and return (config, native state dict, metadata).

    Native safetensors files, pspnet training states (``last.pt``), hszhao/semseg and
    mmsegmentation checkpoints are recognised by their keys and shapes. A registry name or an
    http(s) URL is downloaded into the cache first (see :mod:`pspnet.weights`); a published
    file gets its publisher's settings (dataset, test settings, mIoU) as metadata.

    Args:
        spec: a path, a registry name (``pspnet models``) or a URL.
        progress: download progress, ``progress(bytes_done, bytes_total or None)``.
    """
    path, entry = resolve(spec, progress)
    config, state, metadata = _read_file(path)
    if entry is not None:
        config, metadata = _as_published(config, metadata, entry, path)
    return config, state, metadata


def _read_file(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        native = is_native(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from err
    if native:
        return read_native(path)
    obj = torch_load(path)
    if "model" in obj and "model_config" in obj:  # a pspnet training state
        try:
            config = ModelConfig.from_dict(obj["model_config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{path}: training state with an invalid model_config: {err}"
            ) from err
        return config, obj["model"], obj.get("metadata", {})
    for fmt in FORMATS:
        if fmt.matches(obj):
            config, state = fmt.convert(obj, source=str(path))
            return config, state, {"source_format": fmt.NAME}
    if torchvision.matches(obj) or semseg.matches_imagenet(obj) or mmseg.matches_imagenet(obj):
        raise CheckpointError(
            f"{path}: ImageNet ResNet weights (backbone only); pass them as "
            "build_model(config, backbone_weights=PATH) or --set backbone_weights=PATH"
        )
    keys = list(obj.get("state_dict", obj))[:8]
    raise CheckpointError(
        f"{path}: unrecognised checkpoint layout (first keys: {keys}); supported: pspnet "
        "safetensors, pspnet training states, hszhao/semseg and mmsegmentation PSPNet"
    )


def _as_published(
    config: ModelConfig, metadata: dict, entry: PublishedWeights, path: Path
) -> tuple[ModelConfig, dict]:
    """The registry's config (it alone knows mmseg.NOT_IN_WEIGHTS) and settings as metadata."""
    published = entry.model_config()
    unseen = {name: getattr(published, name) for name in mmseg.NOT_IN_WEIGHTS}
    if dataclasses.replace(config, **unseen) != published:
        raise CheckpointError(
            f"{path}: holds {config}, not the {published} the registry lists for {entry.name}"
        )
    metadata = {
        **metadata,
        "published_name": entry.name,
        "dataset": entry.dataset,
        "inference": json.dumps(entry.inference()),
        "published_miou": str(entry.miou),
    }
    if entry.miou_ms_flip is not None:
        metadata["published_miou_ms_flip"] = str(entry.miou_ms_flip)
    return published, metadata


def build_model(
    config: ModelConfig,
    backbone_weights: str | Path | None = None,
    progress: Progress | None = None,
    *,
    init: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    init_classes: dict[str, str] | None = None,
    report: Callable[[str], None] | None = None,
) -> PSPNet:
    """A PSPNet for ``config``: fresh, its backbone from ImageNet, or from a segmentation model.

    3-band weights (every published one) start a model of other ``config.in_channels`` through
    the stem rule of :mod:`pspnet.checkpoints.channels`; ``report`` is told so.

    Args:
        config: the network's shape.
        backbone_weights: ``"imagenet"`` (the published ImageNet ResNet of ``config``'s depth
            and stem, downloaded once), a registry name, a URL, or an ImageNet ResNet file
            (torchvision, semseg or open-mmlab layout); loaded strictly into the backbone.
        progress: download progress, ``progress(bytes_done, bytes_total or None)``.
        init: a trained segmentation model (file, published name or URL) whose every weight
            is loaded, classifier rows carried by class name (see
            :func:`pspnet.checkpoints.transfer.init_from`, which also reports what was
            carried); applied after ``backbone_weights``.
        class_names: our classes, needed with ``init``.
        init_classes: ``{our class: the init model's class}`` for names that differ.
        report: called with a sentence for each decision worth reading: a stem adapted to
            ``config.in_channels``, and the notes of ``init``'s transfer.
    """
    report = report or (lambda note: None)
    model = PSPNet.from_config(config)
    if backbone_weights is not None:
        if backbone_weights == "imagenet":
            backbone_weights = imagenet_backbone(config.backbone, config.stem).name
        path, _ = resolve(backbone_weights, progress)
        for note in load_backbone_weights(model.backbone, path):
            report(note)
    if init is not None:
        from pspnet.checkpoints.transfer import init_from

        if class_names is None or len(class_names) != config.num_classes:
            raise CheckpointError(
                f"init={init}: give class_names, one per class ({config.num_classes})"
            )
        transfer = init_from(model, init, class_names, init_classes, progress=progress)
        for note in transfer.notes:
            report(note)
    return model


def load_checkpoint(
    spec: str | Path, device: str | torch.device = "cpu", progress: Progress | None = None
) -> LoadedCheckpoint:
    """Build the network a checkpoint describes, load its weights strictly, in eval mode, with
    its metadata, class names and colours.

    Args:
        spec: native ``.safetensors``, a pspnet training state, a semseg/mmseg checkpoint, a
            registry name or a URL.
        device: where to put the model.
        progress: download progress, ``progress(bytes_done, bytes_total or None)``.
    """
    config, state, metadata = read_checkpoint(spec, progress)
    model = PSPNet.from_config(config)
    load_state_strict(model, state, str(spec))
    device = torch.device(device)
    return loaded(model.to(device).eval(), metadata, device, spec)


def load_model(
    spec: str | Path, device: str | torch.device = "cpu", progress: Progress | None = None
) -> PSPNet:
    """The network of :func:`load_checkpoint` alone (same arguments)."""
    return load_checkpoint(spec, device, progress).model


def load_backbone_weights(backbone: ResNet, path: str | Path) -> list[str]:
    """Load ImageNet ResNet weights (torchvision or semseg layout) into ``backbone``, strictly.

    The classifier ``fc.*`` is dropped; every other key must map onto the backbone. The 3-band
    stem of a backbone of other bands is adapted (:mod:`pspnet.checkpoints.channels`).

    Returns:
        What was adapted, a sentence each (none for an RGB backbone).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such backbone weights file")
    obj = torch_load(path)
    obj = obj.get("state_dict", obj)
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    if semseg.matches_imagenet(obj):
        state = semseg.convert_imagenet(obj, source=str(path))
    elif mmseg.matches_imagenet(obj):
        state = mmseg.convert_imagenet(obj, source=str(path))
    elif torchvision.matches(obj):
        state = torchvision.convert(obj, source=str(path))
    else:
        raise CheckpointError(
            f"{path}: not a torchvision, semseg or open-mmlab ImageNet ResNet (first keys: "
            f"{list(obj)[:6]})"
        )
    note = adapt_stem(state, backbone.state_dict(), STEM_WEIGHT)
    load_state_strict(backbone, state, str(path))
    return [] if note is None else [note]


@dataclasses.dataclass(frozen=True)
class ConvertSettings:
    """``pspnet convert``: any supported checkpoint written as native safetensors.

    Attributes:
        src: a checkpoint file, a registry name (pspnet models) or a URL.
        dst: the native file to write.
    """

    src: str = setting(positional=True)
    dst: Path = setting(positional=True)

    def __post_init__(self) -> None:
        check_settings(self)
