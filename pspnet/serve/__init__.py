"""``pspnet serve``: an HTTP service and a web page over the one inference routine.

Needs the ``serve`` extra (``pip install 'pspnet[serve]'``: FastAPI, uvicorn,
prometheus-client, python-multipart); :mod:`.settings` does not, so the command line can
describe the command everywhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable

from pspnet.errors import CheckpointError, ConfigError
from pspnet.inference import Segmenter
from pspnet.serve.settings import API_KEY_VARIABLE, ServeSettings, ServiceLimits

__all__ = ["API_KEY_VARIABLE", "ServeSettings", "ServiceLimits", "is_loopback", "serve"]

# Seconds Ctrl+C lets running requests finish before stopping them (at their next window).
GRACEFUL_SECONDS = 3
# Seconds an idle kept-alive connection stays open: connections are limited, idle ones cost.
KEEP_ALIVE_SECONDS = 2


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def with_api_key(settings: ServeSettings) -> ServeSettings:
    """``settings`` with the key from ``$PSPNET_API_KEY`` when none is given."""
    key = settings.limits.api_key or os.environ.get(API_KEY_VARIABLE) or None
    return dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, api_key=key))


def check_checkpoint(checkpoint: str) -> None:
    """A local checkpoint that is missing fails now, not at /readyz; names and URLs load in
    the background, where a download may take a while."""
    from pathlib import Path

    from pspnet.weights import find
    from pspnet.weights.download import is_url

    local = not (is_url(checkpoint) or find(checkpoint))
    if local and not Path(checkpoint).is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")


def serve(
    settings: ServeSettings,
    on_ready: Callable[[Segmenter, int], None] | None = None,
    load: Callable[[], Segmenter] | None = None,
) -> None:
    """Run the service with uvicorn until interrupted.

    Args:
        settings: the checkpoint, address, limits, inference and runtime settings. The bound
            host joins ``limits.allowed_hosts``; ``$PSPNET_API_KEY`` is the key when the
            settings give none.
        on_ready: called with the Segmenter and the pixel limit once the model is loaded and
            warmed up.
        load: returns the Segmenter to serve (called once, in the background); the settings'
            checkpoint when None.
    """
    try:
        import uvicorn

        from pspnet.serve.app import create_app
    except ImportError as err:
        raise ConfigError(
            f"pspnet serve needs the serve extra ({err.name} is missing): "
            "pip install 'pspnet[serve]'"
        ) from err

    def load_checkpoint() -> Segmenter:
        return Segmenter.from_checkpoint(settings.checkpoint, settings.runtime, settings.inference)

    limits = settings.limits
    hosts = (*limits.allowed_hosts, settings.host)
    app = create_app(
        load or load_checkpoint, dataclasses.replace(limits, allowed_hosts=hosts), on_ready
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
