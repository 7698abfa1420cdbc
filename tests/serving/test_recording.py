"""The call recorder on its own (a `write` that keeps what it is given): every call is written, in
order, many per write while the writer is busy; nothing is lost when it stops; a failed write
does not stop it."""

from __future__ import annotations

import asyncio
import threading

from src.serving.recording import CallRecorder

GUARD = 60  # seconds: a hang fails the test instead of stalling the suite


class Store:
    """A `write` that keeps each batch; the first batch waits for `release` when given one."""

    def __init__(self, release: threading.Event | None = None, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = release
        self.fail_on = fail_on
        self.entered = threading.Event()

    def __call__(self, calls: list[int]) -> None:
        self.entered.set()
        if self.release is not None and not self.batches:
            self.release.wait(GUARD)
        self.batches.append(list(calls))
        if self.fail_on in calls:
            raise RuntimeError("the store is down")

    @property
    def written(self) -> list[int]:
        return [call for batch in self.batches for call in batch]


def test_calls_that_wait_for_a_busy_writer_are_written_together_in_order() -> None:
    release = threading.Event()
    store = Store(release)
    recorder: CallRecorder[int] = CallRecorder(store, max_batch=500)
    recorder.start()
    recorder.add(0)
    assert store.entered.wait(GUARD)  # the writer is busy with call 0
    for call in range(1, 101):
        recorder.add(call)
    release.set()
    assert recorder.flush(timeout=GUARD)
    assert store.written == list(range(101))
    assert store.batches == [[0], list(range(1, 101))]  # one write for the 100 that waited
    asyncio.run(recorder.stop())


def test_a_batch_never_holds_more_than_its_maximum() -> None:
    release = threading.Event()
    store = Store(release)
    recorder: CallRecorder[int] = CallRecorder(store, max_batch=30)
    recorder.start()
    recorder.add(0)
    assert store.entered.wait(GUARD)
    for call in range(1, 71):
        recorder.add(call)
    release.set()
    assert recorder.flush(timeout=GUARD)
    assert [len(batch) for batch in store.batches] == [1, 30, 30, 10]
    asyncio.run(recorder.stop())


def test_stopping_writes_every_call_still_waiting() -> None:
    release = threading.Event()
    store = Store(release)
    recorder: CallRecorder[int] = CallRecorder(store)
    recorder.start()
    for call in range(50):
        recorder.add(call)
    assert store.entered.wait(GUARD)

    async def stop() -> None:
        stopping = asyncio.create_task(recorder.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the writer
        release.set()
        await asyncio.wait_for(stopping, GUARD)

    asyncio.run(stop())
    assert store.written == list(range(50)) and recorder.pending == 0


def test_a_failed_write_loses_its_batch_only_and_the_writer_goes_on() -> None:
    store = Store(fail_on=1)
    recorder: CallRecorder[int] = CallRecorder(store)
    recorder.start()
    recorder.add(1)
    assert recorder.flush(timeout=GUARD)
    recorder.add(2)
    assert recorder.flush(timeout=GUARD)
    assert store.batches == [[1], [2]]
    asyncio.run(recorder.stop())


def test_the_writer_runs_until_the_last_lifespan_stops_and_starts_again() -> None:
    store = Store()
    recorder: CallRecorder[int] = CallRecorder(store)
    recorder.start()
    recorder.start()  # a second lifespan beside the first
    asyncio.run(recorder.stop())
    recorder.add(1)
    assert recorder.flush(timeout=GUARD)  # still written: one lifespan is left
    asyncio.run(recorder.stop())
    recorder.start()
    recorder.add(2)
    assert recorder.flush(timeout=GUARD)
    asyncio.run(recorder.stop())
    assert store.written == [1, 2]


def test_while_the_store_is_stuck_at_most_max_pending_calls_wait() -> None:
    release = threading.Event()
    store = Store(release)
    recorder: CallRecorder[int] = CallRecorder(store, max_pending=3)
    recorder.start()
    recorder.add(0)
    assert store.entered.wait(GUARD)  # the writer is stuck on call 0
    assert [recorder.add(call) for call in range(1, 6)] == [True, True, True, False, False]
    release.set()
    assert recorder.flush(timeout=GUARD)
    assert store.written == [0, 1, 2, 3]
    assert recorder.add(6)  # room again once written
    asyncio.run(recorder.stop())
    assert store.written == [0, 1, 2, 3, 6]
