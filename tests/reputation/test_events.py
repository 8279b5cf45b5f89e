"""Shared counts: two replicas' copies of PERIMETER_EVENTS agree, a replica
sees its own events at once, events age out with their TTL, and a replica
that starts later counts what the stream already holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from services.reputation.events import Events
from shared.bus import Bus
from shared.store import ensure_store
from tests.support.natsserver import NatsServer


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def replica(nats: NatsServer) -> AsyncIterator[Callable[[], object]]:
    """Start Events as a reputation replica would: its own connection."""
    started: list[tuple[Bus, Events]] = []

    async def start() -> Events:
        bus = await Bus.connect(nats.url, "test-events")
        await ensure_store(bus.js, 1)
        events = Events(bus)
        await events.start()
        started.append((bus, events))
        return events

    yield start
    for bus, events in started:
        await events.stop()
        await bus.close()


async def eventually(check: Callable[[], object], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "never true"
        await asyncio.sleep(0.02)


async def test_each_replica_counts_the_events_of_both(replica) -> None:
    a, b = await replica(), await replica()
    key = f"ip:192.0.2.{time.monotonic_ns() % 250}"

    assert await a.record_and_count("rate", key, 60) == 1
    assert await b.record_and_count("rate", key, 60) == 2
    assert await a.record_and_count("rate", key, 60) == 3

    async def b_sees_three() -> bool:
        return await b.count("rate", key) == 3

    await eventually(b_sees_three)
    assert await a.count("rate", "ip:198.51.100.1") == 0
    assert await a.count("other", key) == 0


async def test_events_leave_the_count_when_their_window_ends(replica) -> None:
    events = await replica()
    key = f"ip:203.0.113.{time.monotonic_ns() % 250}"
    await events.record("badrcpt", key, 1)
    assert await events.record_and_count("badrcpt", key, 60) == 2

    async def one_left() -> bool:
        return await events.count("badrcpt", key) == 1

    await eventually(one_left, seconds=4.0)


async def test_a_replica_started_later_counts_what_the_stream_holds(replica) -> None:
    first = await replica()
    key = f"user:late{time.monotonic_ns()}"
    for _ in range(4):
        await first.record("rate", key, 60)

    later = await replica()

    assert await later.count("rate", key) == 4


async def test_a_shorter_window_after_a_longer_one_ages_out_first(replica) -> None:
    """The settings changed the window between two events of one key."""
    events = await replica()
    key = f"ip:198.51.100.{time.monotonic_ns() % 250}"
    await events.record("rate", key, 60)
    assert await events.record_and_count("rate", key, 1) == 2

    async def the_longer_one_is_left() -> bool:
        return await events.count("rate", key) == 1

    await eventually(the_longer_one_is_left, seconds=4.0)


async def test_a_replica_starts_when_the_last_event_aged_out_before_replay(
    replica,
) -> None:
    first = await replica()
    key = f"ip:192.0.2.{time.monotonic_ns() % 250}"
    await first.record("rate", key, 60)
    await first.record("rate", f"{key}:short", 1)  # the stream's last message
    await asyncio.sleep(2.0)  # gone from the stream and from every copy

    async with asyncio.timeout(10):  # a hang, not a speed, is what fails here
        later = await replica()

    assert await later.count("rate", key) == 1
    assert await later.count("rate", f"{key}:short") == 0
