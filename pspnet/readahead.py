"""Items of an iterator produced on a thread, a few ahead, each awaited a bounded time."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead_on_thread(
    items: Generator[T, None, None],
    depth: int,
    patience: float | None,
    stalled: Callable[[], BaseException],
) -> Iterator[T]:
    """``items``, produced on a daemon thread up to ``depth`` ahead of the consumer.

    The thread owns ``items``: it closes it when it stops (at the end, on an error, or once the
    consumer has stopped), so a resource the iterator holds is released in the thread that
    uses it. An error raised there is raised again here.

    Args:
        items: what to produce, e.g. decoded frames.
        depth: items produced ahead at most (memory is bounded by it).
        patience: seconds to wait for the next item (None: for ever).
        stalled: the exception raised when ``patience`` runs out; the thread is then left to
            its blocked call (a stream's read timeout ends it).
    """
    waiting: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as err:  # raised again in the consumer's thread
            put(err)
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="pspnet-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = waiting.get(timeout=patience)
            except queue.Empty:
                raise stalled() from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=1.0)
