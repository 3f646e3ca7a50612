"""Which device a name means, checked against this machine before any work starts."""

from __future__ import annotations

import torch

from pspnet.errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` names ("cpu", "cuda", "cuda:1"), if this machine has it.

    Raises:
        ConfigError: an unknown device type, or a CUDA device this machine does not have.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from err
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"unsupported device {name!r}; expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s)")
    return device
