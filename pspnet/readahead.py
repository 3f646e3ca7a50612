"""Work kept a few items ahead of the network: reading before it, writing after it.

Used by ``predict`` (images and videos) and ``eval``: :func:`in_order` keeps a bounded number
of calls running on an executor and hands their results back in order; :func:`io_executor`
gives I/O threads only where a core is spare for them; :func:`read_ahead_on_thread` produces
an iterator's items (a live source's frames) on a thread, each awaited a bounded time.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
_END = object()
# Items read ahead of the network, and results waiting to be written: bounds memory.
PREFETCH = 4


def in_order(
    executor: Executor, work: Callable[[T], R], items: Iterable[T], ahead: int = PREFETCH
) -> Iterator[R]:
    """``work(item)`` for each item, run on ``executor`` up to ``ahead`` items ahead, results
    in the items' order, each as soon as it and those before it are done.

    Memory holds at most ``ahead + 1`` results. An error of ``work`` is raised where its
    result would have been; an error of ``items`` (a live source stopped by Ctrl+C) is raised
    once the calls already running have finished, so that nothing is left half-done.
    """
    running: deque[Future] = deque()
    try:
        for item in items:
            running.append(executor.submit(work, item))
            while running and (running[0].done() or len(running) > ahead):
                yield running.popleft().result()
    except BaseException:
        wait(running)
        raise
    while running:
        yield running.popleft().result()


def io_threads(device: torch.device) -> int:
    """Threads for reading and writing beside the network: 2 where a core is spare, else 0.

    On a CPU whose every core already runs the network's threads, I/O threads only take
    cores from it (measured slower, docs/benchmarks.md); on a GPU, or with cores to spare,
    they hide the I/O. ``$PSPNET_IO_THREADS`` overrides.
    """
    if "PSPNET_IO_THREADS" in os.environ:
        return max(0, int(os.environ["PSPNET_IO_THREADS"]))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    busy = torch.get_num_threads() * processes
    return 2 if device.type != "cpu" or busy < (os.cpu_count() or 1) else 0


def io_executor(device: torch.device, threads: int | None = None) -> Executor:
    """A thread pool of ``threads`` (default :func:`io_threads`), or an :class:`InlineExecutor`
    where there are none."""
    threads = io_threads(device) if threads is None else min(threads, io_threads(device))
    return ThreadPoolExecutor(threads, "pspnet-io") if threads else InlineExecutor()


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread (no I/O threads)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


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
