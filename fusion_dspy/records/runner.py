"""The loop shared by ``eval`` and ``synth``: many examples, bounded concurrency, nothing lost.

Every item has a deterministic id. Items whose id is already in the records store are skipped, so
a rerun of the same command completes an interrupted run. A finished item is written (fsync-ed)
before it counts as done; an item that fails is logged with its reason in ``failed.jsonl`` beside
the records and is retried by the next run. Ctrl-C stops submitting new items, lets in-flight
items finish, and leaves the store consistent.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, FusionError, redact
from fusion_dspy.records.store import RecordStore

logger = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What a run did: counts and where it wrote."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "interrupted": self.interrupted,
                "seconds": round(self.seconds, 2), "failures": self.failures[:20]}


def failures_path(store: RecordStore) -> Path:
    return store.path.with_name(store.path.stem + ".failed.jsonl")


def run_items(
    items: Iterable[tuple[str, Any]],
    work: Callable[[Any], dict[str, Any]],
    store: RecordStore,
    *,
    concurrency: int = 1,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> RunStats:
    """Run ``work(payload)`` for each ``(id, payload)`` not yet in ``store`` and append its record.

    Args:
        items: ``(id, payload)`` pairs, consumed lazily (a huge input is never held in memory).
        work: turns a payload into a record (a JSON-serialisable dict; ``id`` is added). An
            exception marks the item failed with its reason; the run goes on.
        concurrency: items in flight at once (each may itself send several requests).
        on_record: called with each written record (progress, running metrics).
        progress: a tqdm-like object with ``update(n)``.
        stop: set it to stop submitting new items (Ctrl-C does the same).
    """
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    stats = RunStats()
    stop = stop or threading.Event()
    started = time.perf_counter()
    fail_log = failures_path(store)
    in_flight: dict[Future, str] = {}

    def failed(rid: str, exc: BaseException) -> None:
        reason = redact(f"{type(exc).__name__}: {exc}")[:1000]
        stats.failed += 1
        stats.failures.append(f"{rid}: {reason}")
        level = logging.ERROR if not isinstance(exc, FusionError) else logging.WARNING
        logger.log(level, "item %s failed: %s", rid, reason)
        _append_failure(fail_log, rid, reason)
        if progress is not None:
            progress.update(1)

    def finish(fut: Future, rid: str) -> None:
        try:
            record = fut.result()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one item never aborts the run
            failed(rid, exc)
            return
        record = {"id": rid, **{k: v for k, v in record.items() if k != "id"}}
        try:
            store.append(record)
        except Exception as exc:  # noqa: BLE001 - a record that cannot be written fails its item, not the run
            failed(rid, exc)
            return
        stats.done += 1
        if on_record is not None:
            on_record(record)
        if progress is not None:
            progress.update(1)

    import litellm  # noqa: F401 - import once here: first imports racing in worker threads fail half-initialised

    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fusion-run")
    memory = _BoundedMemory()
    try:
        for rid, payload in items:
            if stop.is_set():
                stats.interrupted = True
                break
            if rid in store:
                stats.skipped += 1
                if progress is not None:
                    progress.update(1)
                continue
            while len(in_flight) >= concurrency:
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(fut, in_flight.pop(fut))
            ctx = contextvars.copy_context()
            in_flight[executor.submit(ctx.run, memory.bounded, work, payload)] = rid
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in done:
                finish(fut, in_flight.pop(fut))
    except KeyboardInterrupt:
        stats.interrupted = True
        logger.warning("interrupted: finishing %d items in flight; rerun the same command to complete the rest", len(in_flight))
        for fut in list(in_flight):
            fut.cancel()
        for fut, rid in list(in_flight.items()):
            if not fut.cancelled():
                try:
                    wait([fut], timeout=120)
                    if fut.done():
                        finish(fut, rid)
                except KeyboardInterrupt:
                    break
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        memory.restore()
        stats.seconds = time.perf_counter() - started
    return stats


class _BoundedMemory:
    """Keeps a long run's memory flat: DSPy keeps every response of a process three times over.

    DSPy's in-memory response cache (up to a million entries), the global call history (10,000),
    each LM's history (10,000) and the predictor trace (10,000) grow with every request, which is
    about 150 KB per example in eval. A run's requests are all different (resume uses the disk
    cache, which stays on), so during the run the memory cache is off and the histories and trace
    keep the last ``HISTORY`` entries. The memory cache setting is restored when the run ends.
    """

    HISTORY = 64

    def __init__(self) -> None:
        import dspy

        self._cache = getattr(dspy, "cache", None)
        self._memory_cache = getattr(self._cache, "enable_memory_cache", None)
        if self._memory_cache:
            self._cache.enable_memory_cache = False

    def bounded(self, work: Callable[[Any], dict[str, Any]], payload: Any) -> dict[str, Any]:
        import dspy

        with dspy.context(max_history_size=self.HISTORY, max_trace_size=self.HISTORY):
            try:
                return work(payload)
            finally:
                self._trim_global_history()

    def _trim_global_history(self) -> None:
        try:
            from dspy.clients import base_lm
        except ImportError:  # pragma: no cover - a DSPy without it has nothing to trim
            return
        history = getattr(base_lm, "GLOBAL_HISTORY", None)
        if isinstance(history, list) and len(history) > 2 * self.HISTORY:
            del history[: len(history) - self.HISTORY]

    def restore(self) -> None:
        if self._memory_cache:
            self._cache.enable_memory_cache = True


def _append_failure(path: Path, rid: str, reason: str) -> None:
    # ASCII JSON: a reason quoting text that is not valid Unicode (a lone surrogate) is escaped, never a crash
    line = json.dumps({"id": rid, "error": reason, "time": time.time()}, ensure_ascii=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
