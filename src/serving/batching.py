"""Micro-batching: the listings of requests that arrive together are scored in one model call.

Each /predict request puts its listings on an asyncio queue and awaits its rows. One worker task
takes the first waiting request, then the others already queued (whole requests, up to
`max_batch` listings; a request larger than that is still scored alone and whole), and runs one
scoring call in a thread of its own, off the event loop; each request then gets its own rows.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import perf_counter
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Row = TypeVar("Row")


class QueueFullError(Exception):
    """The queue holds too many listings to take a request now: try again shortly."""


@dataclass
class _Request(Generic[Item, Row]):
    items: Sequence[Item]
    answer: asyncio.Future[list[Row]] = field(repr=False)


@dataclass(frozen=True)
class BatchStats:
    """One scoring call: its requests, its listings and its time in seconds."""

    requests: int
    items: int
    seconds: float


class MicroBatcher(Generic[Item, Row]):
    """Gathers the items of concurrent requests into batches for `score` (one call at a time)."""

    def __init__(
        self,
        score: Callable[[list[Item]], list[Row]],
        max_batch: int,
        max_wait: float,
        max_queued: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._score = score
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queued = max_queued
        self._on_batch = on_batch
        self._waiting: deque[_Request[Item, Row]] = deque()
        self._queued = 0  # items waiting, not yet in a scoring call
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False  # the batch before held more than one request
        # One thread: scoring calls never overlap (the model's own ops use the cores).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="score")

    @property
    def queued(self) -> int:
        """Listings waiting to be scored (not counting those being scored now)."""
        return self._queued

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get a `RuntimeError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._waiting:
            request = self._waiting.popleft()
            if not request.answer.done():
                request.answer.set_exception(RuntimeError("the API is shutting down"))
        self._queued = 0
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Item]) -> list[Row]:
        """The rows `score` gives `items`, in their order, scored with whatever else is waiting."""
        if self._worker is None or self._arrived is None:
            raise RuntimeError("the batcher is not started")
        if self._queued + len(items) > self.max_queued:
            raise QueueFullError(
                f"{self._queued} listings are waiting to be scored; at most {self.max_queued}"
            )
        request: _Request[Item, Row] = _Request(items, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._queued += len(items)
        self._arrived.set()
        return await request.answer

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            gathered = await self._gather()
            self._queued -= sum(len(request.items) for request in gathered)
            # A client that went away before its turn: nothing to score for it.
            batch = [request for request in gathered if not request.answer.cancelled()]
            if not batch:
                continue
            items = [item for request in batch for item in request.items]
            started = perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self._score, items)
            except Exception as error:  # the requests of this batch fail, the worker goes on
                logger.exception("scoring a batch of %d listings failed", len(items))
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(error)
                continue
            seconds = perf_counter() - started
            start = 0
            for request in batch:
                end = start + len(request.items)
                if not request.answer.done():  # a client that left cancelled its future
                    request.answer.set_result(rows[start:end])
                start = end
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), len(items), seconds))

    async def _gather(self) -> list[_Request[Item, Row]]:
        """The next batch: the first waiting request, then whole requests while they fit,
        waiting up to `max_wait` for more while requests arrive together."""
        assert self._arrived is not None
        batch = [self._waiting.popleft()]
        size = len(batch[0].items)
        deadline = perf_counter() + self.max_wait if self._busy else 0.0
        while size < self.max_batch:
            if self._waiting:
                if size + len(self._waiting[0].items) > self.max_batch:
                    break
                request = self._waiting.popleft()
                batch.append(request)
                size += len(request.items)
                continue
            left = deadline - perf_counter()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
        self._busy = len(batch) > 1
        return batch
