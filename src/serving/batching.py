"""Micro-batching: the listings of requests that arrive together are scored in one model call.

Each /predict request puts its listings on a queue and awaits its rows on its event loop. One
worker thread, off the event loop, takes the first waiting request, then the others already
queued (whole requests, up to `max_batch` listings; a request larger than that is still scored
alone and whole), runs one scoring call, and hands each request its own rows on the request's
own loop. The batcher belongs to no event loop: an app whose lifespan runs in two loops at once
(a test client beside schemathesis's) shares one worker, started by the first lifespan and
stopped by the last.
A model's call has a fixed cost (text cleaning, each branch's call) that a batch pays once, so
concurrent clients share it instead of queueing for it.

On an idle server a lone request is scored at once: the worker waits up to `max_wait` seconds
for more listings only while requests keep arriving together (the batch before held more than
one), so batching never adds latency where there is nothing to batch.

Back-pressure: a request whose listings would bring the listings waiting (not yet being scored)
over `max_queued` is refused at once (`QueueFullError`, the API's 503 with Retry-After), instead
of letting every client wait ever longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Generic, TypeVar

from src.serving.worker import LifespanWorker

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Row = TypeVar("Row")


class QueueFullError(Exception):
    """The queue holds too many listings to take a request now: try again shortly."""


def _settle(
    answer: asyncio.Future[list[Row]], rows: list[Row] | None, error: Exception | None
) -> None:
    """Give a waiting request its rows or its error, unless its client went away."""
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(rows or [])


@dataclass
class _Request(Generic[Item, Row]):
    items: Sequence[Item]
    answer: asyncio.Future[list[Row]] = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)

    def settle(self, rows: list[Row] | None = None, error: Exception | None = None) -> None:
        """Hand the answer over on the request's own event loop (from the worker thread)."""
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_settle, self.answer, rows, error)


@dataclass(frozen=True)
class BatchStats:
    """One scoring call: its requests, its listings and its time in seconds."""

    requests: int
    items: int
    seconds: float


class MicroBatcher(LifespanWorker, Generic[Item, Row]):
    """Gathers the items of concurrent requests into batches for `score` (one call at a time)."""

    def __init__(
        self,
        score: Callable[[list[Item]], list[Row]],
        max_batch: int,
        max_wait: float,
        max_queued: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        # One thread: scoring calls never overlap (the model's own ops use the cores).
        super().__init__("micro-batcher")
        self._score = score
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queued = max_queued
        self._on_batch = on_batch
        self._waiting: deque[_Request[Item, Row]] = deque()
        self._queued = 0  # items waiting, not yet in a scoring call
        self._busy = False  # the batch before held more than one request

    @property
    def queued(self) -> int:
        """Listings waiting to be scored (not counting those being scored now)."""
        return self._queued

    def _stopped(self) -> None:
        """Requests still waiting when the worker ended fail: the API is shutting down."""
        with self._lock:
            left, self._queued = list(self._waiting), 0
            self._waiting.clear()
        for request in left:
            request.settle(error=RuntimeError("the API is shutting down"))

    async def submit(self, items: Sequence[Item]) -> list[Row]:
        """The rows `score` gives `items`, in their order, scored with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        request: _Request[Item, Row] = _Request(items, loop.create_future(), loop)
        with self._lock:
            if self._worker is None:
                raise RuntimeError("the batcher is not started")
            if self._queued + len(items) > self.max_queued:
                raise QueueFullError(
                    f"{self._queued} listings are waiting to be scored; at most {self.max_queued}"
                )
            self._waiting.append(request)
            self._queued += len(items)
            self._lock.notify()
        return await request.answer

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                gathered = self._gather()
                self._queued -= sum(len(request.items) for request in gathered)
            # A client that went away before its turn: nothing to score for it.
            batch = [request for request in gathered if not request.answer.cancelled()]
            if batch:
                self._score_batch(batch)

    def _score_batch(self, batch: list[_Request[Item, Row]]) -> None:
        items = [item for request in batch for item in request.items]
        started = perf_counter()
        try:
            rows = self._score(items)
        except Exception as error:  # the requests of this batch fail, the worker goes on
            logger.exception("scoring a batch of %d listings failed", len(items))
            for request in batch:
                request.settle(error=error)
            return
        seconds = perf_counter() - started
        start = 0
        for request in batch:
            end = start + len(request.items)
            request.settle(rows[start:end])
            start = end
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(batch), len(items), seconds))

    def _gather(self) -> list[_Request[Item, Row]]:
        """The next batch (under the lock): the first waiting request, then whole requests while
        they fit, waiting up to `max_wait` for more while requests arrive together."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].items)
        deadline = monotonic() + self.max_wait if self._busy else 0.0
        while size < self.max_batch:
            if self._waiting:
                if size + len(self._waiting[0].items) > self.max_batch:
                    break
                request = self._waiting.popleft()
                batch.append(request)
                size += len(request.items)
                continue
            left = deadline - monotonic()
            if left <= 0 or self._stopping:
                break
            self._lock.wait(left)
        self._busy = len(batch) > 1
        return batch
