"""Our state dicts in a publisher's key layout, by running its converter's rules backwards."""

import torch

from pspnet.checkpoints import mmseg, semseg
from pspnet.checkpoints.native import Rule, foreign_key
from pspnet.models import ModelConfig


def mmseg_rules(config: ModelConfig) -> list[Rule]:
    """mmseg's rules for the stem ``config`` has (two rules fill our stem.0: pick the one)."""
    seven_by_seven = config.stem == "torchvision"
    return [
        rule
        for rule in mmseg.RULES
        if not (seven_by_seven and rule[0].startswith(r"backbone\.stem"))
        and not (not seven_by_seven and rule[0].startswith((r"backbone\.conv1", r"backbone\.bn1")))
    ]


def foreign(state: dict[str, torch.Tensor], rules: list[Rule]) -> dict[str, torch.Tensor]:
    """``state`` under the foreign names the rules turn into ours; every key must have one."""
    renamed = {}
    for key, value in state.items():
        name = foreign_key(key, rules)
        assert name is not None, f"no rule gives {key}"
        renamed[name] = value
    return renamed


def mmseg_checkpoint(state: dict[str, torch.Tensor], config: ModelConfig) -> dict:
    """What mmseg's ``save_checkpoint`` writes: meta and the model's state dict."""
    return {"meta": {"mmseg_version": "0.x"}, "state_dict": foreign(state, mmseg_rules(config))}


def semseg_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What semseg's train.py writes: the DataParallel-wrapped state dict and its epoch."""
    renamed = foreign(state, semseg.PSPNET_RULES)
    return {"epoch": 100, "state_dict": {f"module.{k}": v for k, v in renamed.items()}}
