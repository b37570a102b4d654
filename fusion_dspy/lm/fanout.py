"""Worker threads shared by the fan-out inside one example: pool teachers, rollouts, ratings.

Why not a fresh ``ThreadPoolExecutor`` per call: a long run would then start and end threads for
every example, and each new thread opens its own per-thread resources (DSPy's disk cache opens a
SQLite connection per thread and shard), so memory grew with the number of examples. Here the
threads live for the process and are reused, so the number ever started is bounded by the peak
number of calls in flight, not by the length of the run.

Each nesting depth has its own executor (a task running on depth ``d`` fans out on ``d + 1``), so a
task never waits for work queued behind itself: no deadlock, however deep or busy.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Threads per depth at most; each call is further bounded by its own ``max_workers``.
MAX_THREADS = 128

_local = threading.local()
_executors: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _mark_depth(depth: int) -> None:
    _local.depth = depth


def _executor(depth: int) -> ThreadPoolExecutor:
    with _lock:
        ex = _executors.get(depth)
        if ex is None:
            ex = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix=f"fusion-fanout-{depth}",
                                    initializer=_mark_depth, initargs=(depth + 1,))
            _executors[depth] = ex
        return ex


def fan_out(fn: Callable[[T], R], items: Iterable[T], *, max_workers: int) -> list[R]:
    """``[fn(x) for x in items]`` with at most ``max_workers`` running at once, on shared threads.

    Each call runs in a copy of the caller's context (DSPy settings such as ``dspy.context(lm=...)``
    carry over). Results keep the order of ``items``. Every call finishes before this returns; the
    first exception (in ``items`` order) is then raised, as ``ThreadPoolExecutor.map`` would.
    """
    items = list(items)
    if max_workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    executor = _executor(getattr(_local, "depth", 0))
    slots = threading.BoundedSemaphore(max_workers)
    futures: list[Future[R]] = []
    try:
        for x in items:
            slots.acquire()
            fut = executor.submit(contextvars.copy_context().run, fn, x)
            fut.add_done_callback(lambda _f: slots.release())
            futures.append(fut)
    finally:
        wait(futures)
    return [f.result() for f in futures]


def threads_started() -> int:
    """Threads the shared executors have started so far (for tests and benchmarks)."""
    with _lock:
        return sum(len(ex._threads) for ex in _executors.values())  # noqa: SLF001 - no public accessor


def _reset_for_tests() -> None:
    """Shut the shared executors down (they are recreated on next use)."""
    with _lock:
        executors = list(_executors.values())
        _executors.clear()
    for ex in executors:
        ex.shutdown(wait=True)


__all__ = ["MAX_THREADS", "fan_out", "threads_started"]
