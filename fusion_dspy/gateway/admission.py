"""A bound on the answers in flight: beyond it requests wait in a queue, then get 429 with Retry-After.

Each request holds one slot from the start of its sampling until its last upstream call has
stopped. A request that finds every slot taken waits (at most ``max_queue`` of them, each at most
``queue_timeout`` seconds); a request that finds the queue full, or waits too long, is refused with
:class:`Busy`, which carries the seconds to wait before trying again: the recent mean duration of
an answer, times the queue's length over the slots.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from fusion_dspy.errors import ConfigurationError


class Busy(Exception):
    """Every slot is taken and the queue is full (or the wait timed out)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """Slots for answers in flight, and a bounded queue in front of them.

    Args:
        max_in_flight: answers computed at the same time.
        max_queue: requests that may wait for a slot (0: refuse at once when full).
        queue_timeout: seconds a request waits for a slot before it is refused.
    """

    def __init__(self, max_in_flight: int = 4, max_queue: int = 16, queue_timeout: float = 30.0):
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_queue < 0 or queue_timeout < 0:
            raise ConfigurationError("max_queue and queue_timeout must be >= 0")
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._slots = anyio.Semaphore(max_in_flight)
        self.in_flight = 0
        self.queued = 0
        self.in_flight_max = 0
        self._durations: deque[float] = deque(maxlen=32)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the ``async with``; raises :class:`Busy` when none can be had."""
        if self._slots.value == 0 and self.queued >= self.max_queue:
            raise Busy(f"{self.in_flight} answers in flight and {self.queued} waiting: the endpoint is full", self.retry_after())
        self.queued += 1
        try:
            with anyio.move_on_after(self.queue_timeout) as waited:
                await self._slots.acquire()
        finally:
            self.queued -= 1
        if waited.cancelled_caught:
            raise Busy(f"no slot became free within {self.queue_timeout:g} s", self.retry_after())
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._durations.append(time.monotonic() - started)
            self._slots.release()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean recent duration times the queue over the slots."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, min(600, math.ceil(mean * (self.queued + 1) / self.max_in_flight)))
