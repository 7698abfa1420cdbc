"""Recording answered calls off the request path: one writer thread, many calls per transaction.

Writing each call in a transaction of its own, from the request's thread, cost the API a thread
hand-off, a connection checkout and a commit per request (a third of the process's time under
load). The recorder takes each call at once, and its thread writes everything that waits, in
order, in one `write` call (the store's one multi-row insert). Nothing is dropped while the store
keeps up: `stop` writes what is left before it returns. A `write` that raises is its own caller's
to report (the calls it held are not retried, as a request's record never was), and while the
store is down at most `max_pending` calls wait: `add` refuses more, so memory stays bounded.
Like the micro-batcher, it belongs to no event loop: the first lifespan starts it, the last
stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from src.serving.worker import LifespanWorker

logger = logging.getLogger(__name__)

Call = TypeVar("Call")


class CallRecorder(LifespanWorker, Generic[Call]):
    """Hands the calls given to `add` to `write`, in order, in batches of at most `max_batch`."""

    def __init__(
        self, write: Callable[[list[Call]], None], max_batch: int = 500, max_pending: int = 10_000
    ) -> None:
        super().__init__("call-recorder")
        self._write = write
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[Call] = []
        self._added = 0  # calls ever added
        self._done = 0  # calls ever handed to `write` and returned from it

    @property
    def pending(self) -> int:
        """Calls not yet handed to `write`."""
        return len(self._pending)

    def add(self, call: Call) -> bool:
        """Queue a call to be written (never blocks on the store); False, and the call is not
        kept, when `max_pending` calls already wait."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                return False
            self._pending.append(call)
            self._added += 1
            self._lock.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call added so far is written (or its batch failed); False on
        timeout. For callers that read the store next: the tests, a shutdown hook."""
        with self._lock:
            target = self._added
            return self._lock.wait_for(lambda: self._done >= target, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if not self._pending:  # stopping, and everything is written
                    return
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            try:
                self._write(batch)
            except Exception:  # the writer must outlive a failed batch
                logger.exception("recording %d calls failed", len(batch))
            with self._lock:
                self._done += len(batch)
                self._lock.notify_all()
