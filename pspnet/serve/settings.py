"""What ``pspnet serve`` takes: the checkpoint, the address and the service's limits.

Importable without the ``serve`` extra, so the command line can describe the command on an
install that cannot run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.settings import check_settings, setting

API_KEY_VARIABLE = "PSPNET_API_KEY"
MIB = 2**20


@dataclass(frozen=True)
class ServiceLimits:
    """Limits of the service.

    Attributes:
        max_queue: requests waiting behind the running one, their uploads and unsent answers
            included; more get 503. A request takes its place once its upload is read and
            holds it until its answer is sent.
        max_upload_mb: the largest request body in MiB; larger ones get 413 unread.
        memory_budget_mb: MiB one image's inference may use beyond the weights (the decoded
            image, the network's activations, the outputs and the overlay); sets the default
            max_pixels. Queued uploads (max_queue x max_upload_mb) come on top.
        max_pixels: the largest image, width x height; larger get 413 undecoded (default:
            what memory_budget_mb allows; never more than the decoders' limit,
            PSPNET_MAX_IMAGE_PIXELS or 100000000).
        timeout: seconds a request may wait and run before 504; its inference stops at the
            next window.
        upload_timeout: seconds a client has to send its image (then 408) and to read its
            answer (then the connection closes).
        max_uploads: uploads read at once; more get 503 unread. A slow upload holds one of
            these, never a max_queue place.
        max_connections: open connections at once; more get 503.
        allowed_hosts: a Host name clients reach the service by, e.g. the proxy's public name
            (repeatable); the bound address and localhost are always allowed, others get 400.
        api_key: a key every route but /healthz needs, as 'Authorization: Bearer KEY' or
            'X-API-Key: KEY'; the page too, so a browser reaches it only through a proxy that
            adds the header (default: $PSPNET_API_KEY, else none).
    """

    max_queue: int = setting(4, low=0)
    max_upload_mb: float = setting(20.0, low=0, low_open=True)
    memory_budget_mb: float = setting(2048.0, low=0, low_open=True)
    max_pixels: int | None = setting(None, low=1)
    timeout: float = setting(120.0, low=0, low_open=True)
    upload_timeout: float = setting(30.0, low=0, low_open=True)
    max_uploads: int = setting(8, low=1)
    max_connections: int = setting(64, low=1)
    allowed_hosts: tuple[str, ...] = setting((), repeat=True, metavar="NAME")
    api_key: str | None = setting(None, repr=False)

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """``pspnet serve``: an HTTP service and a web page over a checkpoint.

    Attributes:
        checkpoint: a file, a registry name (pspnet models) or a URL.
        host: address to bind (loopback by default: put a proxy in front to expose it).
        port: TCP port.
        limits: limits of the service.
        inference: inference settings (each replaces the checkpoint's own).
        runtime: device and fast path (backend auto stays eager here: compile would
            recompile for every new image size, on the request path).
    """

    checkpoint: str
    host: str = "127.0.0.1"
    port: int = setting(8000, low=0, high=65535)
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    inference: InferenceOverrides = field(default_factory=InferenceOverrides)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        check_settings(self)
