"""The worker thread shared by an app's lifespans: started by the first, stopped by the last."""

from __future__ import annotations

import asyncio
import threading

from src.serving.worker import LifespanWorker


class _Waiter(LifespanWorker):
    """Waits until told to stop; counts its runs and what `_stopped` saw."""

    def __init__(self) -> None:
        super().__init__("test-worker")
        self.runs = 0
        self.stopped_after_join: list[bool] = []

    def _run(self) -> None:
        with self._lock:
            self.runs += 1
            self._lock.wait_for(lambda: self._stopping)

    def _stopped(self) -> None:
        self.stopped_after_join.append(self._worker is None and self._threads() == 0)

    @staticmethod
    def _threads() -> int:
        return sum(t.name == "test-worker" for t in threading.enumerate())


def test_two_lifespans_share_one_thread_until_the_last_stops() -> None:
    worker = _Waiter()
    worker.start()
    worker.start()  # a second lifespan, in another event loop
    assert worker._threads() == 1
    asyncio.run(worker.stop())
    assert worker._threads() == 1 and worker.stopped_after_join == []  # one lifespan still runs
    asyncio.run(worker.stop())
    assert worker._threads() == 0 and worker.stopped_after_join == [True]
    assert worker.runs == 1


def test_a_worker_stopped_by_every_lifespan_starts_again() -> None:
    worker = _Waiter()
    for _ in range(2):
        worker.start()
        asyncio.run(worker.stop())
    assert worker.runs == 2 and worker.stopped_after_join == [True, True]
