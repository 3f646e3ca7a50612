"""Starting a model from another trained segmentation model, its classes carried by name.

Every weight of the source (a native, semseg or mmseg checkpoint, a published name or a URL)
is loaded into the new model (a 3-band stem adapted to a model of other bands by the rule of
:mod:`pspnet.checkpoints.channels`, and said so). Only the classifiers (main and auxiliary
heads) may differ in their rows: a row of ours whose class the source also has (by name,
case-insensitively, or as ``init_classes`` pairs them) is the source's row; the others keep
their fresh initialisation. Every other difference (depth, width, a missing pyramid) is an
error naming the key: nothing is dropped silently, unlike the non-strict loading that peers
advise for this.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from pspnet.checkpoints import read_checkpoint
from pspnet.checkpoints.channels import STEM_WEIGHT, adapt_stem
from pspnet.data.presets import PRESETS
from pspnet.errors import CheckpointError
from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.weights.download import Progress

__all__ = ["ClassTransfer", "init_from"]

Classifier = Literal["by_name", "fresh"]

# The classifier convolutions: one row (output channel) per class.
CLASSIFIERS = ("head.classifier", "aux_head.classifier")
# Fields of ModelConfig that decide a weight's shape, named in the advice of a mismatch.
SHAPE_FIELDS = ("backbone", "stem", "base_width", "bins", "reduction", "use_ppm", "in_channels")


@dataclass
class ClassTransfer:
    """What ``init_from`` carried over.

    Attributes:
        source: the checkpoint as given (path, name or URL).
        carried: (our class, the source's class) for every classifier row taken over.
        initialised: our classes whose rows were freshly initialised.
        notes: other decisions worth reading (no class names in the source, aux head).
    """

    source: str
    carried: list[tuple[str, str]] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "carried": [{"class": ours, "from": theirs} for ours, theirs in self.carried],
            "initialised": self.initialised,
            "notes": self.notes,
        }

    def to_text(self) -> str:
        lines = [
            f"init from {self.source}: {len(self.carried)} classes carried, "
            f"{len(self.initialised)} initialised"
        ]
        lines += [f"  {ours} <- {theirs}" for ours, theirs in self.carried]
        lines += [f"  {name}: initialised" for name in self.initialised]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def init_from(
    model: PSPNet,
    spec: str | Path,
    class_names: Sequence[str],
    init_classes: dict[str, str] | None = None,
    classifier: Classifier = "by_name",
    progress: Progress | None = None,
) -> ClassTransfer:
    """Load every weight of checkpoint ``spec`` into ``model``, classifier rows by class name.

    Args:
        model: the freshly initialised network; its fresh classifier rows are kept for
            classes the source lacks.
        spec: a checkpoint file, a published name (``pspnet models``) or a URL.
        class_names: our classes, one per classifier row.
        init_classes: ``{our class: the source's class}`` for names that differ.
        classifier: "by_name" carries matching rows, "fresh" initialises every row.
        progress: download progress, ``progress(bytes_done, bytes_total or None)``.

    Raises:
        CheckpointError: a weight other than the classifier rows does not fit (named, with the
            model settings that would fit), or ``init_classes`` names an unknown class.
    """
    source_config, source_state, metadata = read_checkpoint(spec, progress)
    ours = model.state_dict()
    transfer = ClassTransfer(str(spec))
    state = _fitting_weights(ours, source_state, source_config, model.config, transfer)
    rows = _matching_rows(
        class_names,
        _source_names(metadata, source_config),
        init_classes,
        classifier,
        transfer,
        str(spec),
    )
    for prefix in CLASSIFIERS:
        if f"{prefix}.weight" not in ours or f"{prefix}.weight" not in source_state:
            continue
        for suffix in ("weight", "bias"):
            key = f"{prefix}.{suffix}"
            merged = ours[key].clone()  # (C, mid, 1, 1) or (C,): fresh rows
            for row, source_row in rows.items():
                merged[row] = source_state[key][source_row]
            state[key] = merged
    model.load_state_dict(state, strict=True)
    return transfer


def _fitting_weights(
    ours: dict[str, torch.Tensor],
    theirs: dict[str, torch.Tensor],
    source: ModelConfig,
    target: ModelConfig,
    transfer: ClassTransfer,
) -> dict[str, torch.Tensor]:
    """Our state with the source's weights in it, classifiers aside; raises on any misfit."""
    theirs = dict(theirs)
    stem = adapt_stem(theirs, ours, f"backbone.{STEM_WEIGHT}")
    if stem is not None:
        transfer.notes.append(stem)
    classifier_keys = {f"{p}.{s}" for p in CLASSIFIERS for s in ("weight", "bias")}
    aux_ours = any(k.startswith("aux_head.") for k in ours)
    aux_theirs = any(k.startswith("aux_head.") for k in theirs)
    if aux_ours and not aux_theirs:
        transfer.notes.append("the source has no auxiliary head: ours is initialised")
    if aux_theirs and not aux_ours:
        transfer.notes.append("the source's auxiliary head is not used (this model has none)")
    skip = {k for k in {*ours, *theirs} if k.startswith("aux_head.") and aux_ours != aux_theirs}
    problems = []
    state = dict(ours)
    for key in [*ours, *(k for k in theirs if k not in ours)]:  # the model's order
        if key in skip or key in classifier_keys:
            continue
        if key not in theirs:
            problems.append(f"{key}: missing in the source")
        elif key not in ours:
            problems.append(f"{key}: the source has it, this model does not")
        elif theirs[key].shape != ours[key].shape:
            problems.append(
                f"{key}: {tuple(theirs[key].shape)} in the source, {tuple(ours[key].shape)} here"
            )
        else:
            state[key] = theirs[key]
    for key in classifier_keys & set(ours) & set(theirs):
        if theirs[key].shape[1:] != ours[key].shape[1:]:
            problems.append(
                f"{key}: {tuple(theirs[key].shape)} in the source, {tuple(ours[key].shape)} here"
            )
    if problems:
        raise CheckpointError(f"init {transfer.source}: {_misfit(problems, source, target)}")
    return state


def _misfit(problems: list[str], source: ModelConfig, target: ModelConfig) -> str:
    settings = [
        f"model.{name}={_yaml(getattr(source, name))}"
        for name in SHAPE_FIELDS
        if getattr(source, name) != getattr(target, name)
    ]
    advice = f"; the source fits {' '.join(settings)}" if settings else ""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    shown = "; ".join(problems[:3]) + more
    return f"{len(problems)} weights do not fit this model: {shown}{advice}"


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _source_names(metadata: dict, config: ModelConfig) -> list[str] | None:
    """The source's class names: saved with it, or its dataset preset's; None if unknown."""
    if "class_names" in metadata:
        names = json.loads(metadata["class_names"])
        if len(names) == config.num_classes:
            return list(names)
    preset = PRESETS.get(metadata.get("dataset", ""))
    if preset is not None and preset.num_classes == config.num_classes:
        return list(preset.class_names)
    return None


def _matching_rows(
    ours: Sequence[str],
    theirs: list[str] | None,
    init_classes: dict[str, str] | None,
    classifier: Classifier,
    transfer: ClassTransfer,
    spec: str,
) -> dict[int, int]:
    """{our row: the source's row} of every class carried; fills ``transfer``."""
    pairs = {k.casefold(): v for k, v in (init_classes or {}).items()}
    unknown = sorted(set(pairs) - {name.casefold() for name in ours})
    if unknown:
        raise CheckpointError(
            f"init_classes names {unknown}, which are not classes of this model ({list(ours)})"
        )
    if classifier == "fresh":
        transfer.initialised = list(ours)
        transfer.notes.append("init_classifier=fresh: every classifier row initialised")
        return {}
    if theirs is None:
        if init_classes:
            raise CheckpointError(
                f"{spec}: the checkpoint records no class names, so init_classes cannot be "
                "matched; use init_classifier=fresh"
            )
        transfer.initialised = list(ours)
        transfer.notes.append("the source records no class names: every classifier row initialised")
        return {}
    index = {name.casefold(): row for row, name in enumerate(theirs)}
    wanted = {name.casefold(): pairs.get(name.casefold(), name) for name in ours}
    missing = sorted(v for v in pairs.values() if v.casefold() not in index)
    if missing:
        raise CheckpointError(
            f"init_classes maps to {missing}, which are not classes of {spec} ({theirs})"
        )
    rows = {}
    for row, name in enumerate(ours):
        source_name = wanted[name.casefold()]
        if source_name.casefold() in index:
            rows[row] = index[source_name.casefold()]
            transfer.carried.append((name, theirs[rows[row]]))
        else:
            transfer.initialised.append(name)
    return rows
