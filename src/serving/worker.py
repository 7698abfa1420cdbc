"""A worker thread shared by every lifespan of one app: the first starts it, the last stops it.

An app whose lifespan runs in two event loops at once (a test client beside schemathesis's)
must neither start a second worker nor stop the one the other lifespan still uses. The
micro-batcher and the call recorder are such workers.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod


class LifespanWorker(ABC):
    """One daemon thread running `_run`, counted in and out by `start` and `stop`.

    Subclasses share `_lock` (a condition) with their thread: `_run` returns once `_stopping`
    is set, and `stop` notifies the condition after setting it.
    """

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._lock = threading.Condition()
        self._starts = 0  # lifespans that started it and have not stopped it
        self._worker: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the thread, unless a lifespan already did."""
        with self._lock:
            self._starts += 1
            if self._worker is None:
                self._stopping = False
                self._worker = threading.Thread(
                    target=self._run, name=self._thread_name, daemon=True
                )
                self._worker.start()

    async def stop(self) -> None:
        """Once the last lifespan stops: end the thread, wait for it, then `_stopped`."""
        with self._lock:
            self._starts -= 1
            if self._starts > 0 or self._worker is None:
                return
            self._stopping = True
            self._lock.notify_all()
            worker, self._worker = self._worker, None
        await asyncio.to_thread(worker.join)
        self._stopped()

    @abstractmethod
    def _run(self) -> None:
        """The thread's body: it returns once `_stopping` is set."""

    def _stopped(self) -> None:  # noqa: B027 (an optional hook, not an abstract step)
        """What is left to do once the thread has ended (nothing unless a subclass says)."""
