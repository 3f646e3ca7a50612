"""``pspnet serve``: an HTTP service and a web page over the one inference routine.

Needs the ``serve`` extra (``pip install 'pspnet[serve]'``: FastAPI, uvicorn,
prometheus-client, python-multipart).
"""

from __future__ import annotations

from collections.abc import Callable

from pspnet.inference import Segmenter
from pspnet.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app", "serve"]


def serve(
    load: Callable[[], Segmenter],
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[Segmenter], None] | None = None,
) -> None:
    """Run the service with uvicorn until interrupted.

    Args:
        load: returns the Segmenter to serve; called once, in the background.
        settings: queue, upload, pixel and time limits.
        host: address to bind; loopback by default (put a proxy in front to expose it).
        port: TCP port.
        on_ready: called once the model is loaded and warmed up.
    """
    import uvicorn

    app = create_app(load, settings, on_ready)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
