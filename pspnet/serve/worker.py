"""The inference worker: one thread runs the model, requests wait their turn.

PyTorch already spreads one forward pass over every core, so requests run one at a time on a
single worker thread; the event loop only waits for them, so health, metrics and the page
answer while an image is being segmented. How many requests may wait is the application's
admission (:class:`pspnet.serve.middleware.Admission`), not the worker's.

Every request is a :class:`Job` with a deadline and a stop flag. The event loop sets the flag
when the client leaves, the deadline passes or the service stops; the job checks it between
the network's forward passes (the inference routine's ``progress`` callback), so a request
nobody waits for any more gives the worker back within one window, and one whose client left
while it was queued never starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from pspnet.inference import Segmentation, Segmenter
from pspnet.serve.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger("pspnet.serve")

# How often a waiting request checks whether its client is still there and its deadline.
POLL_SECONDS = 0.05
WARM_UP_SIZE = 64


class ClientGone(Exception):
    """The client disconnected before its result was ready."""


class TimedOut(Exception):
    """The result was not ready within the timeout."""


class Cancelled(Exception):
    """Raised inside a job that must stop; never leaves the worker (private to this module)."""


class Job:
    """One request's claim on the worker: a deadline and a flag that stops it.

    Args:
        timeout: seconds from now until the deadline.
    """

    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def check(self) -> None:
        """Raise :class:`Cancelled` once the job was stopped or its deadline passed."""
        if self.stopped.is_set() or time.monotonic() > self.deadline:
            raise Cancelled

    def progress(self, done: int, total: int) -> None:
        """:meth:`check` as the inference routine's progress callback, after each window."""
        self.check()


class InferenceWorker:
    """Loads the model in the background, then segments images one at a time.

    Args:
        load: builds the Segmenter (reads or downloads the checkpoint); run on a daemon
            thread, so stopping the service never waits for a download.
        on_ready: called (from the loading thread) once the model is loaded and warmed up.
        metrics: counts images segmented and requests dropped or stopped.
    """

    def __init__(
        self,
        load: Callable[[], Segmenter],
        on_ready: Callable[[Segmenter], None] | None = None,
        metrics: Metrics | None = None,
    ):
        self.metrics = metrics or Metrics()
        self.segmenter: Segmenter | None = None
        self.load_error: str | None = None  # a reason without the server's paths
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pspnet-infer")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished: the running one and those waiting
        self._running = 0
        self._jobs: set[Job] = set()
        self._on_ready = on_ready
        threading.Thread(target=self._load, args=(load,), name="pspnet-load", daemon=True).start()

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

    async def run(
        self,
        work: Callable[[Job], T],
        disconnected: Callable[[], Awaitable[bool]],
        timeout: float,
    ) -> T:
        """``work(job)`` on the worker thread, awaited without blocking the event loop.

        The whole request runs there, decoding, the network and encoding the answer, so one
        thread hop separates it from the loop and a queued request holds only its bytes.
        ``work`` passes ``job`` to :meth:`segment` and may call ``job.check()`` between steps.

        Raises:
            ClientGone: ``disconnected()`` became true first; the work is stopped.
            TimedOut: no result within ``timeout`` seconds; the work is stopped.
        """
        job = Job(timeout)
        future = self._submit(work, job)
        finished = asyncio.wrap_future(future)
        # A result nobody awaits any more (the client left) must not be logged as unretrieved.
        finished.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            while True:
                done, _ = await asyncio.wait({finished}, timeout=POLL_SECONDS)
                if done:
                    try:
                        return future.result()
                    except Cancelled:  # its deadline passed on the worker thread
                        raise TimedOut from None
                if await disconnected():
                    if future.cancel():
                        self.metrics.dropped.inc()
                    raise ClientGone
                if time.monotonic() > job.deadline:
                    raise TimedOut
        finally:  # whatever ended the wait (a result, a timeout, the service stopping)
            job.stop()
            future.cancel()
            with self._lock:
                self._jobs.discard(job)

    def segment(self, image: np.ndarray, unknown_below: float | None, job: Job) -> Segmentation:
        """Segment ``image`` (H, W, 3) uint8 for ``job``; call from work given to :meth:`run`."""
        result = self.segmenter.segment(image, unknown_below=unknown_below, progress=job.progress)
        self.metrics.segmented.inc()
        return result

    def close(self) -> None:
        """Stop every job (the running one at its next window) and the queued ones."""
        with self._lock:
            for job in self._jobs:
                job.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, work: Callable[[Job], T], job: Job) -> Future:
        with self._lock:
            self._pending += 1
            self._jobs.add(job)
        future = self._executor.submit(self._run, work, job)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def _run(self, work: Callable[[Job], T], job: Job) -> T:
        job.check()  # stopped between its cancel() failing and its start: never run it
        with self._lock:
            self._running += 1
        try:
            return work(job)
        except Cancelled:
            self.metrics.stopped.inc()
            raise
        finally:
            with self._lock:
                self._running -= 1

    def _load(self, load: Callable[[], Segmenter]) -> None:
        try:
            segmenter = load()
            # The first call pays for allocation and, on a compiled path, compilation.
            segmenter.probs(np.zeros((WARM_UP_SIZE, WARM_UP_SIZE, 3), np.uint8))
        except Exception as err:  # the process keeps answering; /readyz gives the reason
            log.exception("the model failed to load")
            self.load_error = (
                f"the model failed to load ({type(err).__name__}); the server's log says why"
            )
            return
        self.segmenter = segmenter
        if self._on_ready is not None:
            self._on_ready(segmenter)
