"""``pspnet serve``: an HTTP service and a web page over the one inference routine.

Needs the ``serve`` extra (``pip install 'pspnet[serve]'``: FastAPI, uvicorn,
prometheus-client, python-multipart).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable

from pspnet.inference import Segmenter
from pspnet.serve.app import ServeSettings, create_app

__all__ = ["API_KEY_VARIABLE", "ServeSettings", "create_app", "is_loopback", "serve"]

API_KEY_VARIABLE = "PSPNET_API_KEY"
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


def serve(
    load: Callable[[], Segmenter],
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[Segmenter, int], None] | None = None,
) -> None:
    """Run the service with uvicorn until interrupted.

    Args:
        load: returns the Segmenter to serve; called once, in the background.
        settings: queue, upload, pixel, time, connection and access limits.
        host: address to bind; loopback by default (put a proxy in front to expose it). It
            joins ``settings.allowed_hosts``.
        port: TCP port.
        on_ready: called with the Segmenter and the pixel limit once the model is loaded and
            warmed up.
    """
    import uvicorn

    hosts = (*settings.allowed_hosts, host)
    app = create_app(load, dataclasses.replace(settings, allowed_hosts=hosts), on_ready)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
