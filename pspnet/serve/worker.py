"""The inference worker: one thread runs the model, requests wait in a bounded queue.

PyTorch already spreads one forward pass over every core, so requests run one at a time on a
single worker thread; the event loop only waits for them, so health, metrics and the page
answer while an image is being segmented. A request is admitted only while fewer than
``max_queue`` wait behind the running one; a request whose client has gone is cancelled
before it starts, so its inference never runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from pspnet.inference import Segmentation, Segmenter
from pspnet.serve.metrics import Metrics

T = TypeVar("T")

# How often a waiting request checks whether its client is still there.
POLL_SECONDS = 0.05
WARM_UP_SIZE = 64


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


class ClientGone(Exception):
    """The client disconnected before its result was ready."""


class TimedOut(Exception):
    """The result was not ready within the timeout."""


class InferenceWorker:
    """Loads the model in the background, then segments images one at a time.

    Args:
        load: builds the Segmenter (reads or downloads the checkpoint); run on the worker.
        max_queue: requests that may wait behind the running one.
        on_ready: called (from the worker thread) once the model is loaded and warmed up.
        metrics: counts images segmented and requests dropped.
    """

    def __init__(
        self,
        load: Callable[[], Segmenter],
        max_queue: int,
        on_ready: Callable[[Segmenter], None] | None = None,
        metrics: Metrics | None = None,
    ):
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self.segmenter: Segmenter | None = None
        self.load_error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pspnet-infer")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished: the running one and those waiting
        self._running = 0
        self._on_ready = on_ready
        self._executor.submit(self._load, load)

    @property
    def ready(self) -> bool:
        return self.segmenter is not None

    @property
    def waiting(self) -> int:
        """Requests queued behind the running one."""
        with self._lock:
            return self._pending - self._running

    @property
    def running(self) -> int:
        return self._running

    def admit(self, reserved: int = 0) -> None:
        """Raise :class:`QueueFull` unless one more request fits (``reserved`` are on their way)."""
        with self._lock:
            if self._pending + reserved >= self.max_queue + 1:  # one runs, max_queue wait
                raise QueueFull

    async def run(
        self,
        work: Callable[[Segmenter], T],
        disconnected: Callable[[], Awaitable[bool]],
        timeout: float,
    ) -> T:
        """``work(segmenter)`` on the worker thread, awaited without blocking the event loop.

        The whole request runs there, decoding, the network and encoding the answer, so one
        thread hop separates it from the loop and a queued request holds only its bytes.

        Raises:
            QueueFull: the queue is full.
            ClientGone: ``disconnected()`` became true first (the queued work is cancelled).
            TimedOut: no result within ``timeout`` seconds (cancelled if it had not started).
        """
        future = self._submit(work)
        started = time.perf_counter()
        while True:
            done, _ = await asyncio.wait({asyncio.wrap_future(future)}, timeout=POLL_SECONDS)
            if done:
                return future.result()
            if await disconnected():
                if future.cancel():
                    self.metrics.dropped.inc()
                raise ClientGone
            if time.perf_counter() - started > timeout:
                future.cancel()
                raise TimedOut

    def segment(self, image: np.ndarray, unknown_below: float | None = None) -> Segmentation:
        """Segment ``image`` (H, W, 3) uint8; call from work given to :meth:`run`."""
        result = self.segmenter.segment(image, unknown_below=unknown_below)
        self.metrics.segmented.inc()
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, work: Callable[[Segmenter], T]) -> Future:
        with self._lock:
            if self._pending >= self.max_queue + 1:
                raise QueueFull
            self._pending += 1
        future = self._executor.submit(self._run, work)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def _run(self, work: Callable[[Segmenter], T]) -> T:
        with self._lock:
            self._running += 1
        try:
            return work(self.segmenter)
        finally:
            with self._lock:
                self._running -= 1

    def _load(self, load: Callable[[], Segmenter]) -> None:
        try:
            segmenter = load()
            # The first call pays for allocation and, on a compiled path, compilation.
            segmenter.probs(np.zeros((WARM_UP_SIZE, WARM_UP_SIZE, 3), np.uint8))
        except Exception as err:  # reported by /readyz; the process keeps answering
            self.load_error = f"{type(err).__name__}: {err}"
            return
        self.segmenter = segmenter
        if self._on_ready is not None:
            self._on_ready(segmenter)
