"""The mail queue as the operator sees it: read it, retry or drop a failure.

Accepted mail waits in the work-queue stream PERIMETER_QUEUE until the
delivery worker (durable consumer "delivery") acknowledges it; mail that
failed for good is kept in PERIMETER_FAILED (services/ingress/spool.py).
Both are read with the stream's message-get API, one message per request:
a work-queue stream admits no second consumer over the worker's subjects.

Whether a queued message is retrying is read from the worker's consumer.
It is handed messages in stream order, so one at or below the last
sequence it was handed has had an attempt (the first may still be under
way) and one above it has not. JetStream keeps the delivery count of each
message to itself, so the number of attempts is not shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.ingress.delivery import DURABLE
from services.ingress.spool import FAILED_PREFIX, QUEUE_PREFIX, Queued
from shared.bodies import Bodies
from shared.store import FAILED_STREAM, FAILED_SUBJECTS, QUEUE_STREAM, QUEUE_SUBJECTS

log = logging.getLogger(__name__)

State = Literal["waiting", "retrying", "failed"]
# A message splits into a new entry only when some recipients are done and
# others are not, so it has at most one entry per recipient.
ENTRIES_PER_MESSAGE = 1000


@dataclass(frozen=True, slots=True)
class Stored:
    """A queue entry, the sequence it has in its stream, and its state."""

    seq: int
    state: State
    item: Queued


class NotFailed(Exception):
    """No failed entry has the id; `queued` says whether the queue has one."""

    def __init__(self, queue_id: str, queued: bool) -> None:
        super().__init__(queue_id)
        self.queue_id = queue_id
        self.queued = queued


class BodyGone(Exception):
    """The body of the message is no longer in the object store."""


class MailQueue:
    """Reads PERIMETER_QUEUE and PERIMETER_FAILED; retries and drops."""

    def __init__(self, js: JetStreamContext, bodies: Bodies) -> None:
        self._js = js
        self._bodies = bodies

    async def queued(self, limit: int, state: State | None = None) -> list[Stored]:
        """Up to `limit` queued entries in delivery order, of one state or
        of both."""
        handed = await self._handed()
        start = handed + 1 if state == "waiting" else 1
        stop = handed if state == "retrying" else None

        found = await self._scan(QUEUE_STREAM, QUEUE_SUBJECTS, limit, start, stop)
        return [
            Stored(seq, "waiting" if seq > handed else "retrying", item)
            for seq, item in found
        ]

    async def failed(self, limit: int) -> list[Stored]:
        """Up to `limit` failed entries, oldest first."""
        found = await self._scan(FAILED_STREAM, FAILED_SUBJECTS, limit)
        return [Stored(seq, "failed", item) for seq, item in found]

    async def size(self, item: Queued) -> int | None:
        """The message's size in bytes; None when its body is gone."""
        if not item.body_ref:
            return len(item.prepend) + len(item.body or b"")
        try:
            info = await self._bodies.store.get_info(item.body_ref)
        except NotFoundError:
            return None
        return len(item.prepend) + (info.size or 0)

    async def retry(self, queue_id: str) -> tuple[list[Queued], Stored]:
        """Queue the failed entries of `queue_id` again, as one entry for
        all their recipients; returns the failed entries and the new one."""
        failed = await self._failed_or_raise(queue_id)
        queued = await self._of(QUEUE_STREAM, queue_id)
        item = _merged([i for _, i in failed], [i for _, i in queued])
        if await self.size(item) is None:
            raise BodyGone(queue_id)

        # One id per failed entry: a repeated request queues it only once.
        msg_id = f"{queue_id}.retry.{failed[-1][0]}"
        ack = await self._js.publish(
            QUEUE_PREFIX + queue_id, item.encode(), headers={"Nats-Msg-Id": msg_id}
        )
        await self._forget([seq for seq, _ in failed])
        return [i for _, i in failed], Stored(ack.seq, "waiting", item)

    async def drop(self, queue_id: str) -> list[Queued]:
        """Delete the failed entries of `queue_id`, and their body unless a
        queued entry of the same message still needs it."""
        failed = await self._failed_or_raise(queue_id)
        await self._forget([seq for seq, _ in failed])

        queued = await self._of(QUEUE_STREAM, queue_id)
        needed = {item.body_ref for _, item in queued}
        for ref in {item.body_ref for _, item in failed} - needed:
            if ref:
                await self._bodies.drop(ref)
        return [item for _, item in failed]

    async def _failed_or_raise(self, queue_id: str) -> list[tuple[int, Queued]]:
        failed = await self._of(FAILED_STREAM, queue_id)
        if failed:
            return failed
        queued = await self._of(QUEUE_STREAM, queue_id)
        raise NotFailed(queue_id, queued=bool(queued))

    async def _of(self, stream: str, queue_id: str) -> list[tuple[int, Queued]]:
        """The entries of one message in a stream. A message has one entry
        per group of recipients whose delivery went its own way."""
        prefix = QUEUE_PREFIX if stream == QUEUE_STREAM else FAILED_PREFIX
        return await self._scan(stream, prefix + queue_id, ENTRIES_PER_MESSAGE)

    async def _handed(self) -> int:
        """The last stream sequence the delivery worker was handed."""
        try:
            info = await self._js.consumer_info(QUEUE_STREAM, DURABLE)
        except NotFoundError:  # the worker has not started yet
            return 0
        return info.delivered.stream_seq if info.delivered else 0

    async def _scan(
        self,
        stream: str,
        subject: str,
        limit: int,
        start: int = 1,
        stop: int | None = None,
    ) -> list[tuple[int, Queued]]:
        """Entries on `subject` from sequence `start` up to `stop`, oldest
        first, at most `limit` of them."""
        found: list[tuple[int, Queued]] = []
        seq = start
        while len(found) < limit:
            try:
                msg = await self._js.get_msg(
                    stream, seq=seq, subject=subject, next=True
                )
            except NotFoundError:
                break
            if msg.seq is None or (stop is not None and msg.seq > stop):
                break
            item = _decode(msg.data or b"")
            if item is not None:
                found.append((msg.seq, item))
            seq = msg.seq + 1
        return found

    async def _forget(self, sequences: list[int]) -> None:
        for seq in sequences:
            try:
                await self._js.delete_msg(FAILED_STREAM, seq)
            except NotFoundError:  # a concurrent retry or drop took it
                log.debug("failed entry %d was already gone", seq)


def _merged(failed: list[Queued], queued: list[Queued]) -> Queued:
    """One entry for every recipient of the failed entries, error cleared.

    Its generation is above every generation still stored of the message:
    the worker names each next generation `{id}.{generation}`, and
    JetStream drops a name it saw within its duplicate window.
    """
    recipients = [r for item in failed for r in item.recipients]
    generation = 1 + max(item.generation for item in failed + queued)
    return replace(
        failed[0],
        recipients=list(dict.fromkeys(recipients)),
        generation=generation,
        error="",
    )


def _decode(data: bytes) -> Queued | None:
    try:
        return Queued.decode(data)
    except Exception:  # msgpack and the dataclass raise several kinds
        log.debug("skipping an unreadable queue entry")
        return None
