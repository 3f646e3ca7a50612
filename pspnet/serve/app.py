"""The HTTP service: ``POST /v1/segment`` and friends over the one inference routine.

Every image goes through :class:`pspnet.inference.Segmenter` (so
:func:`pspnet.inference.protocol.segment_tensor`) on the inference worker. Formats of
``/v1/segment?format=``:

- ``png`` (default): the palette-indexed label PNG at the input's size (EXIF orientation
  applied; pixel values are class indices, 255 unknown), the class shares in
  ``X-Class-Shares`` (JSON);
- ``json``: size, the classes present ``{id, name, color, share, confidence}`` (confidence:
  the class's mean probability over its pixels), the unknown share, the label PNG in base64,
  the inference time;
- ``masks``: Hugging Face's image-segmentation output, ``[{label, mask, score}]`` with each
  mask a base64 black-and-white PNG and its score the class's mean probability over the mask,
  so its clients work unchanged;
- ``overlay``: the overlay picture with its legend, as ``pspnet predict`` draws it.

``?unknown_below=P`` labels pixels whose confidence is under P as unknown (255) in every format.

Errors are JSON ``{"error": ..., "status": ...}``: 400 not an image or a Host header this
service does not answer to, 401 no or a wrong API key, 403 sent by a page of another site
(its Origin), 408 the upload took too long, 413 too large (body or pixels), 415 not an image
type or a format whose size cannot be checked before decoding, 500 an unexpected failure
(logged; the body says only "internal error"), 503 every slot taken (with ``Retry-After``) or
model not ready, 504 timed out. A client that leaves is answered 499 (counted, never read).
Their messages name the upload, never a path of the server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import typing
from contextlib import asynccontextmanager
from importlib import resources
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.requests import ClientDisconnect

from pspnet.data.images import decode_image, max_pixels
from pspnet.errors import DatasetError, ImageTooLargeError, UnsupportedImageError
from pspnet.inference import Segmentation, Segmenter
from pspnet.inference.result import UNKNOWN_NAME
from pspnet.serve.metrics import Metrics
from pspnet.serve.middleware import (
    BUSY_HEADERS,
    Access,
    Admission,
    Busy,
    CountRequests,
    InternalErrors,
    Places,
    busy_message,
    problem,
    uploaded,
)
from pspnet.serve.settings import ServiceLimits
from pspnet.serve.worker import ClientGone, InferenceWorker, Job, TimedOut
from pspnet.visualize import label_png, overlay

Format = Literal["png", "json", "masks", "overlay"]
FORMATS = typing.get_args(Format)


class HTTPProblem(Exception):
    """An error response: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def create_app(load, settings: ServiceLimits | None = None, on_ready=None):
    """The FastAPI application serving the model that ``load()`` returns.

    Args:
        load: returns the :class:`Segmenter`; called once, on a background thread, so the
            service answers ``/healthz`` while the checkpoint loads and warms up.
        settings: the limits.
        on_ready: called with the Segmenter and the pixel limit once it is loaded and warm.
    """
    settings = settings or ServiceLimits()
    metrics = Metrics()
    limits = {}  # the pixel limit, known once the model is

    def load_and_size() -> Segmenter:
        segmenter = load()
        limits["max_pixels"] = pixel_limit(settings, segmenter)
        return segmenter

    def ready(segmenter: Segmenter) -> None:
        if on_ready is not None:
            on_ready(segmenter, limits["max_pixels"])

    @asynccontextmanager
    async def lifespan(app):
        app.state.worker = InferenceWorker(load_and_size, ready, metrics)
        yield
        app.state.worker.close()

    app = FastAPI(title="pspnet", lifespan=lifespan, docs_url=None, redoc_url=None)
    static = resources.files("pspnet.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    # Added innermost first: a request meets CountRequests, InternalErrors, Access, Admission.
    places = Places(queue=settings.max_queue + 1, reading=settings.max_uploads)
    app.add_middleware(
        Admission, path="/v1/segment", places=places, send_seconds=settings.upload_timeout
    )
    app.add_middleware(Access, hosts=settings.allowed_hosts, api_key=settings.api_key)
    app.add_middleware(InternalErrors)
    app.add_middleware(CountRequests, metrics=metrics)

    @app.exception_handler(HTTPProblem)
    async def answer_problem(request: Request, err: HTTPProblem):
        return problem(err.status, err.message, err.headers)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz():
        return {"alive": True}

    @app.get("/readyz")
    async def readyz(request: Request):
        worker: InferenceWorker = request.app.state.worker
        if worker.ready:
            return {"ready": True}
        body = {"ready": False, "error": worker.load_error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus(request: Request):
        worker: InferenceWorker = request.app.state.worker
        metrics.set_queue(worker.waiting, worker.running)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/model")
    async def model(request: Request):
        segmenter = ready_segmenter(request.app.state.worker)
        return {**describe(segmenter), "limits": served_limits(settings, limits["max_pixels"])}

    @app.post("/v1/segment")
    async def segment(
        request: Request,
        # A str, not Format: a wrong value gets our JSON 400, not FastAPI's 422 body.
        format: str = "png",  # noqa: A002 (the API's word)
        unknown_below: float | None = None,
    ):
        if format not in FORMATS:
            raise HTTPProblem(400, f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if unknown_below is not None and not 0 <= unknown_below <= 1:
            raise HTTPProblem(400, f"unknown_below must be in [0, 1], got {unknown_below}")
        worker: InferenceWorker = request.app.state.worker
        ready_segmenter(worker)
        try:
            data, name = await read_image_body(
                request, settings.max_upload_bytes, settings.upload_timeout
            )
        except ClientDisconnect:  # left mid-upload: nothing went wrong here
            return Response(status_code=499)
        try:
            uploaded(request.scope, places)  # a queue place, now that the body is here
        except Busy:
            raise HTTPProblem(503, busy_message(places), BUSY_HEADERS) from None

        def work(job: Job) -> Response:  # on the worker thread, start to finish
            image = decode_upload(data, name, limits["max_pixels"])
            job.check()  # a large image takes a while to decode
            return respond(format, image, worker.segment(image, unknown_below, job))

        try:
            return await worker.run(work, request.is_disconnected, settings.timeout)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed"
        except TimedOut:
            raise HTTPProblem(504, f"no result within {settings.timeout:g} s") from None

    return app


def pixel_limit(settings: ServiceLimits, segmenter: Segmenter) -> int:
    """``settings.max_pixels``, else what fits the memory budget; never over the decoders'."""
    if settings.max_pixels is None:
        return segmenter.pixel_limit(settings.memory_budget_mb)
    return min(settings.max_pixels, max_pixels())


def served_limits(settings: ServiceLimits, pixels: int) -> dict:
    """``/v1/model``'s ``limits``: what a client may send."""
    return {
        "max_pixels": pixels,
        "max_upload_bytes": settings.max_upload_bytes,
        "timeout_s": settings.timeout,
        "upload_timeout_s": settings.upload_timeout,
    }


def ready_segmenter(worker: InferenceWorker) -> Segmenter:
    if worker.segmenter is None:
        reason = worker.load_error or "the model is still loading"
        raise HTTPProblem(503, f"not ready: {reason}", {"Retry-After": "1"})
    return worker.segmenter


async def read_image_body(request, limit: int, seconds: float) -> tuple[bytes, str]:
    """The image bytes of a raw ``image/*`` body or of the multipart field ``image``.

    Raises:
        HTTPProblem: 415 not an image type, 413 over ``limit`` bytes, 408 not all sent
            within ``seconds``, 400 a form without the field.
        ClientDisconnect: the client left before sending it all.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data"):
        raise HTTPProblem(
            415,
            f"Content-Type {kind or '(none)'} is not an image; send the image as the body "
            "(image/png, image/jpeg ...) or as the multipart field 'image'",
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise HTTPProblem(413, f"body of {int(length):,} bytes is over the limit {limit:,}")
    try:
        async with asyncio.timeout(seconds):  # a client trickling bytes holds a slot
            body = await read_body(request, limit)
    except TimeoutError:
        raise HTTPProblem(
            408, f"the upload was not complete within {seconds:g} s", {"Connection": "close"}
        ) from None
    if kind.startswith("image/"):
        return body, "the uploaded image"
    request._body = body  # Starlette parses the form from the body already read
    form = await request.form()
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise HTTPProblem(400, "the multipart form has no file field 'image'")
    return await upload.read(), upload.filename or "the uploaded image"


async def read_body(request, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` bytes (chunked uploads too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(
                413, f"body is over the limit of {limit:,} bytes", {"Connection": "close"}
            )
        chunks.append(chunk)
    return b"".join(chunks)


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    try:
        return decode_image(data, name, max_pixels)
    except ImageTooLargeError as err:
        raise HTTPProblem(413, str(err)) from None
    except UnsupportedImageError as err:  # e.g. Radiance HDR: no size to check before decoding
        raise HTTPProblem(415, str(err)) from None
    except DatasetError as err:
        raise HTTPProblem(400, str(err)) from None


def respond(format: Format, image: np.ndarray, result: Segmentation) -> Response:
    labels, names, palette = result.labels, result.class_names, result.palette
    if format == "png":
        header = json.dumps({name: round(share, 6) for name, share in result.shares().items()})
        return Response(
            png_bytes(label_png(labels, palette)),
            media_type="image/png",
            headers={"X-Class-Shares": header, **timing(result)},
        )
    if format == "overlay":
        picture = overlay(image, labels, palette, class_names=names, unknown=UNKNOWN_NAME)
        return Response(png_bytes(picture), media_type="image/png", headers=timing(result))
    classes = result.classes()
    if format == "masks":
        return JSONResponse(
            [
                {"label": c["name"], "mask": mask_png(labels == c["id"]), "score": c["confidence"]}
                for c in classes
            ],
            headers=timing(result),
        )
    return JSONResponse(
        {
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "classes": classes,
            "unknown_share": result.unknown_share(),
            "label_png": base64.b64encode(png_bytes(label_png(labels, palette))).decode(),
            "inference_ms": round(1000 * result.seconds, 1),
        },
        headers=timing(result),
    )


def describe(segmenter: Segmenter) -> dict:
    """``/v1/model``: architecture, classes, palette, inference settings, fast path."""
    checkpoint = segmenter.checkpoint
    return {
        "architecture": checkpoint.config.to_dict(),
        "classes": list(segmenter.class_names),
        "palette": [list(c) for c in segmenter.palette],
        "inference": dataclasses.asdict(segmenter.inference),
        "precision": segmenter.precision,
        "backend": segmenter.backend,
        "published_name": checkpoint.metadata.get("published_name"),
    }


def timing(result: Segmentation) -> dict[str, str]:
    return {"X-Inference-Ms": f"{1000 * result.seconds:.1f}"}


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> str:
    """A boolean (H, W) mask as a base64 black-and-white PNG (255 inside), as HF returns."""
    return base64.b64encode(png_bytes(Image.fromarray(mask.astype(np.uint8) * 255))).decode()
