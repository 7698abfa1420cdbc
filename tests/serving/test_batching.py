"""The micro-batcher on its own (a scoring function that records its calls): what it gathers into
one call, what it never splits or holds back, and what it refuses when too much is waiting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from src.serving.batching import BatchStats, MicroBatcher, QueueFullError

GUARD = 60  # seconds: a hang fails the test instead of stalling the suite


class Recorder:
    """A scoring function that answers each item with itself and records each call's items."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.release = release
        self.entered = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.entered.set()
        if self.release is not None and "gate" in items:
            self.release.wait(GUARD)
        self.calls.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        return [item.upper() for item in items]


def _run(scenario: Callable[[], object]) -> object:
    return asyncio.run(asyncio.wait_for(scenario(), GUARD))  # type: ignore[arg-type]


async def _gated(batcher: MicroBatcher[str, str], score: Recorder) -> asyncio.Future[list[str]]:
    """A first request that holds the scoring thread until `score.release` is set: what is
    submitted meanwhile waits, and is then gathered as the worker would find it under load."""
    gate = asyncio.ensure_future(batcher.submit(["gate"]))
    while not score.entered.is_set():
        await asyncio.sleep(0.01)
    return gate


def _batcher(score: Recorder, **options: float) -> MicroBatcher[str, str]:
    settings = {"max_batch": 64, "max_wait": 0.0, "max_queued": 256, **options}
    return MicroBatcher(
        score,
        max_batch=int(settings["max_batch"]),
        max_wait=settings["max_wait"],
        max_queued=int(settings["max_queued"]),
    )


def _arriving_together(
    batcher: MicroBatcher[str, str], score: Recorder, requests: list[list[str]]
) -> list[list[str]]:
    """The answers to `requests`, all submitted while a first request holds the scoring thread,
    so the worker finds them waiting together, as under load."""
    assert score.release is not None
    release = score.release

    async def scenario() -> list[list[str]]:
        batcher.start()
        try:
            gate = await _gated(batcher, score)
            waiting = [asyncio.ensure_future(batcher.submit(items)) for items in requests]
            await asyncio.sleep(0)
            release.set()
            await gate
            return await asyncio.gather(*waiting)
        finally:
            release.set()
            await batcher.stop()

    return _run(scenario)  # type: ignore[return-value]


def test_requests_that_arrive_together_are_one_call_and_each_gets_its_rows() -> None:
    score = Recorder(threading.Event())

    answers = _arriving_together(_batcher(score), score, [[f"a{i}", f"b{i}"] for i in range(5)])

    assert answers == [[f"A{i}", f"B{i}"] for i in range(5)]
    assert score.calls[0] == ["gate"] and len(score.calls) == 2 and len(score.calls[1]) == 10


def test_a_request_is_never_split_and_a_batch_never_exceeds_its_maximum() -> None:
    score = Recorder(threading.Event())
    sizes = [64, 1, 40, 30, 3]
    stats: list[BatchStats] = []
    batcher = MicroBatcher(
        score, max_batch=64, max_wait=0.0, max_queued=1000, on_batch=stats.append
    )

    answers = _arriving_together(
        batcher, score, [[f"r{r}-{i}" for i in range(n)] for r, n in enumerate(sizes)]
    )

    assert [len(answer) for answer in answers] == sizes
    # The gate; 64 alone; then 1 + 40 (30 more would exceed 64); then 30 + 3.
    assert [len(call) for call in score.calls] == [1, 64, 41, 33]
    assert [(s.requests, s.items) for s in stats] == [(1, 1), (1, 64), (2, 41), (2, 33)]


def test_a_lone_request_on_an_idle_batcher_is_not_held_for_the_maximum_wait() -> None:
    score = Recorder()

    async def scenario() -> list[str]:
        batcher = _batcher(score, max_wait=3600.0)  # an hour: the guard would fail the test
        batcher.start()
        try:
            return await batcher.submit(["alone"])
        finally:
            await batcher.stop()

    assert _run(scenario) == ["ALONE"]


def test_too_many_waiting_listings_refuse_a_request_at_once() -> None:
    release = threading.Event()
    score = Recorder(release)

    async def scenario() -> None:
        batcher = _batcher(score, max_queued=3)
        batcher.start()
        try:
            first = await _gated(batcher, score)  # taken, scoring is held
            waiting = asyncio.ensure_future(batcher.submit(["y", "z", "w"]))
            await asyncio.sleep(0)
            assert batcher.queued == 3
            with pytest.raises(QueueFullError, match="3 listings are waiting"):
                await batcher.submit(["v"])
            release.set()
            assert await first == ["GATE"] and await waiting == ["Y", "Z", "W"]
            assert batcher.queued == 0
            assert await batcher.submit(["v"]) == ["V"]  # room again
        finally:
            release.set()
            await batcher.stop()

    _run(scenario)


def test_a_failed_call_fails_its_requests_only() -> None:
    score = Recorder()

    async def scenario() -> tuple[BaseException | list[str], list[str]]:
        batcher = _batcher(score)
        batcher.start()
        try:
            failed = await asyncio.gather(batcher.submit(["boom"]), return_exceptions=True)
            return failed[0], await batcher.submit(["fine"])
        finally:
            await batcher.stop()

    failed, fine = _run(scenario)  # type: ignore[misc]

    assert isinstance(failed, ValueError) and fine == ["FINE"]


def test_a_stopped_batcher_starts_again() -> None:
    score = Recorder()

    async def scenario() -> list[list[str]]:
        batcher = _batcher(score)
        answers = []
        for word in ("first", "second"):  # an app's lifespan may run twice
            batcher.start()
            try:
                answers.append(await batcher.submit([word]))
            finally:
                await batcher.stop()
        return answers

    assert _run(scenario) == [["FIRST"], ["SECOND"]]
