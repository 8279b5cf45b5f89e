"""Reading the newest records of a JetStream stream, newest first.

JetStream reads forwards, so the tail is read in windows of sequence
numbers going backwards from the last one: each window is one short-lived
pull consumer starting at its first sequence (filtered by subject), and the
reading stops once enough records matched or `scan` sequences were looked
at. The bound keeps one query cheap on a stream of millions of records.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TypeVar

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

SCAN_LIMIT = 10_000
WINDOW = 1_000
FETCH = 256


async def newest(
    js: JetStreamContext,
    stream: str,
    subject: str,
    limit: int,
    pick: Callable[[bytes], T | None],
    scan: int = SCAN_LIMIT,
) -> list[T]:
    """Up to `limit` records that `pick` keeps, newest first, among the last
    `scan` sequences of the stream."""
    state = (await js.stream_info(stream)).state
    floor = max(state.first_seq, state.last_seq - scan + 1, 1)
    found: list[T] = []
    high = state.last_seq
    while high >= floor and len(found) < limit:
        low = max(floor, high - WINDOW + 1)
        window = await _read(js, stream, subject, low, high)
        for data in reversed(window):
            item = pick(data)
            if item is not None:
                found.append(item)
                if len(found) == limit:
                    break
        high = low - 1
    return found


async def _read(
    js: JetStreamContext, stream: str, subject: str, low: int, high: int
) -> list[bytes]:
    """The payloads of the records from `low` to `high`, oldest first."""
    name = f"tail_{secrets.token_hex(8)}"
    config = ConsumerConfig(
        name=name,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=low,
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    info = await js.add_consumer(stream, config=config)
    sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        return await _drain(sub, info.num_pending or 0, high)
    finally:
        await sub.unsubscribe()
        await _forget(js, stream, name)


async def _drain(
    sub: JetStreamContext.PullSubscription, pending: int, high: int
) -> list[bytes]:
    records: list[bytes] = []
    while pending > 0:
        try:
            batch = await sub.fetch(min(pending, FETCH), timeout=5.0)
        except NatsTimeout:  # records aged out of the stream meanwhile
            return records
        for msg in batch:
            meta = msg.metadata
            if meta.sequence.stream > high:
                return records
            records.append(msg.data)
            pending = meta.num_pending
    return records


async def _forget(js: JetStreamContext, stream: str, consumer: str) -> None:
    try:
        await js.delete_consumer(stream, consumer)
    except Exception as exc:  # it goes by itself after inactive_threshold
        log.debug("could not delete consumer %s: %r", consumer, exc)
