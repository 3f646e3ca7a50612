"""The native format: safetensors weights with the model config in the file's metadata."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pspnet.errors import CheckpointError
from pspnet.files import atomic_write
from pspnet.models.pspnet import ModelConfig, PSPNet

FORMAT = "pspnet"
FORMAT_VERSION = "1"


def save_model(model: PSPNet, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights and config to ``path`` (safetensors), atomically.

    Args:
        model: the network; a DDP or ``torch.compile`` wrapper is unwrapped first.
        path: destination, conventionally ``*.safetensors``.
        metadata: extra string entries stored beside the config (class names, dataset ...).

    Raises:
        CheckpointError: ``model`` is not a PSPNet (an optimised model's weights are folded
            and cast for inference: save the model it was made from).
    """
    model = unwrap(model)
    if not isinstance(model, PSPNet):
        raise CheckpointError(
            f"{path}: save_model saves a PSPNet, got {type(model).__name__} (an optimised model "
            "is for inference only: save the model it was made from)"
        )
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    meta.update(metadata or {})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_native(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, str]]:
    """Config, weights and metadata of a native file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises several unrelated types
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without a pspnet model config in its metadata; "
            "write it with `pspnet convert` or PSPNet.save"
        )
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model config in metadata: {err}") from err
    return config, tensors, metadata


def is_native(path: str | Path) -> bool:
    with open(path, "rb") as f:
        header = f.read(9)
    # safetensors: 8-byte little-endian header length, then a JSON object.
    return len(header) == 9 and header[8:9] == b"{"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, raising on any missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    ]
    raise_problems(
        source,
        {
            "missing": set(expected) - set(state),
            "unexpected": set(state) - set(expected),
            "mis-shaped": misshaped,
        },
    )
    model.load_state_dict(state, strict=True)


def foreign_state(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a foreign checkpoint, every value checked to be a tensor.

    Training scripts save ``{"state_dict": ..., "optimizer": ...}`` or the bare state dict;
    DataParallel and DistributedDataParallel prefix every key with ``module.``, and semseg
    saves its model still wrapped, so the prefix is removed here.
    """
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    raise_problems(source, {"non-tensor": not_tensors})
    return {k.removeprefix("module."): v for k, v in state.items()}


# A regular expression matching a whole foreign key, and our key as a ``Match.expand``
# template (``\1`` for the first group), or None for a key dropped on purpose.
Rule = tuple[str, str | None]


def rename_strict(
    foreign: dict[str, torch.Tensor],
    rules: list[Rule],
    expected: dict[str, torch.Tensor],
    source: str,
) -> dict[str, torch.Tensor]:
    """Rename a foreign state dict into ours, accounting for every key on both sides.

    Files older than PyTorch 0.4.1 have no ``num_batches_tracked`` in their BatchNorms; it is
    filled with 0, as BatchNorm itself does when loading such files (the count only matters
    for ``momentum=None``, which no model here uses).

    Args:
        foreign: the file's tensors under its own key names.
        rules: tried in order; the first whose pattern matches the whole key decides.
        expected: our state dict for the detected config (meta tensors suffice: only key
            names and shapes are compared).
        source: the file, named in every error.

    Raises:
        CheckpointError: naming every foreign key no rule covers, every key whose target is
            not in the model, taken already or of another shape, and every model key left
            unfilled, the last under the file's name for it with ours beside it
            (:func:`foreign_key`).
    """
    compiled = [(re.compile(rule[0]), rule) for rule in rules]
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # our key -> the foreign key it came from
    used: set[Rule] = set()  # the rules this file's keys took
    unknown, unexpected, misshaped, duplicate = [], [], [], []
    for key, value in foreign.items():
        found = next(((m, rule) for p, rule in compiled if (m := p.fullmatch(key))), None)
        if found is None:
            unknown.append(key)
            continue
        match, rule = found
        used.add(rule)
        target = rule[1]
        if target is None:
            continue
        ours = match.expand(target)
        if ours not in expected:
            unexpected.append(f"{key} (as {ours})")
        elif ours in origin:
            duplicate.append(f"{key} and {origin[ours]} (both as {ours})")
        elif value.shape != expected[ours].shape:
            shapes = f"file {tuple(value.shape)} vs model {tuple(expected[ours].shape)}"
            misshaped.append(f"{key} (as {ours}): {shapes}")
        else:
            state[ours], origin[ours] = value, key
    for key in set(expected) - set(state):
        running_mean = key.removesuffix("num_batches_tracked") + "running_mean"
        if key.endswith(".num_batches_tracked") and running_mean in state:
            state[key] = torch.zeros((), dtype=torch.long)
    # Where two rules fill one key (mmseg's deep and 7x7 stems), the rules the file's other
    # keys took name the missing ones.
    preferred = sorted(rules, key=lambda rule: rule not in used)
    raise_problems(
        source,
        {
            "unknown": unknown,
            "unexpected": unexpected,
            "mis-shaped": misshaped,
            "duplicate": duplicate,
            "missing": [_as_in_file(key, preferred) for key in set(expected) - set(state)],
        },
    )
    return state


def _as_in_file(ours: str, rules: list[Rule]) -> str:
    """Our key under the file's name for it, ours beside it where the two differ."""
    theirs = foreign_key(ours, rules)
    return ours if theirs in (None, ours) else f"{theirs} (ours: {ours})"


def foreign_key(ours: str, rules: list[Rule]) -> str | None:
    """The foreign key that ``rules`` rename to our key ``ours``: the first rule, run backwards.

    A rule runs backwards when its target, read as a regex (``\\N`` as the pattern's group
    N), matches ``ours`` and its pattern is literal text around capturing groups: those
    groups take the values read from ``ours``. The key so built counts only if the rule
    renames it to ``ours`` again.

    Args:
        ours: a key of our state dict.
        rules: the converter's rules, tried in order.

    Returns:
        The foreign key, or None where no rule runs backwards to ``ours``.
    """
    for pattern, target in rules:
        key = None if target is None else _backwards(pattern, target, ours)
        forward = None if key is None else re.fullmatch(pattern, key)
        if forward is not None and forward.expand(target) == ours:
            return key
    return None


def _backwards(pattern: str, target: str, ours: str) -> str | None:
    """``pattern`` with each capturing group replaced by what ``target`` leaves it in ``ours``."""
    parsed = _literal_around_groups(pattern)
    if parsed is None:
        return None
    pieces, groups = parsed
    regex = _template_regex(target, groups)
    match = None if regex is None else regex.fullmatch(ours)
    if match is None or any(f"g{n}" not in regex.groupindex for n in groups):
        return None  # a group the target drops cannot be read back
    return "".join(p if isinstance(p, str) else match[f"g{p}"] for p in pieces)


# One token of a regex: an escape, a character class, a group's opening, or one character.
_TOKEN = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]])*\]|\((?:\?P<\w+>|\?)?|.", re.DOTALL)


def _literal_around_groups(pattern: str) -> tuple[list[str | int], dict[int, str]] | None:
    """``pattern`` as literal characters and top-level capturing groups (by number), and the
    regex inside each of those groups; None if anything outside them is not literal.
    """
    pieces: list[str | int] = []
    groups: dict[int, str] = {}
    number = depth = top = 0  # groups opened so far (nested too, as ``re`` numbers them)
    inside: list[str] = []  # the tokens of the top-level group being read
    for token in _TOKEN.findall(pattern):
        opens = token.startswith("(")
        capturing = opens and token != "(?"
        if depth:
            depth += opens - (token == ")")
            number += capturing
            if depth:
                inside.append(token)
            else:
                groups[top] = "".join(inside)
        elif capturing:
            number = top = number + 1
            pieces.append(top)
            depth, inside = 1, []
        elif len(token) == 1 and token not in "\\.^$*+?{}[]()|":
            pieces.append(token)
        elif token[0] == "\\" and not token[1].isalnum():  # an escaped ".", "-" ...
            pieces.append(token[1])
        else:
            return None
    return pieces, groups


def _template_regex(target: str, groups: dict[int, str]) -> re.Pattern | None:
    """A ``Match.expand`` template as a regex: group N's regex as ``gN`` where ``\\N`` stands."""
    regex, seen = "", set()
    for i, piece in enumerate(re.split(r"\\(\d+)", target)):
        if i % 2 == 0:
            if "\\" in piece:
                return None  # another kind of escape: not supported
            regex += re.escape(piece)
        elif int(piece) not in groups:
            return None  # a nested group, read with its enclosing one
        elif piece in seen:
            regex += f"(?P=g{piece})"
        else:
            regex += f"(?P<g{piece}>{groups[int(piece)]})"
            seen.add(piece)
    return re.compile(regex)


def raise_problems(source: str, problems: dict[str, Iterable[str]]) -> None:
    """Raise one CheckpointError listing every non-empty group of offending keys, by title."""
    lines = []
    for title, keys in problems.items():
        keys = sorted(keys)
        if keys:
            shown = ", ".join(keys[:20]) + (f" ... ({len(keys)} in all)" if len(keys) > 20 else "")
            lines.append(f"{title} keys: {shown}")
    if lines:
        raise CheckpointError(f"{source}: weights do not fit the model; " + "; ".join(lines))
