"""Counts that every replica agrees on, over a sliding window.

Each counted event (a MAIL, a failed recipient, a failed AUTH) is one
message in the JetStream stream PERIMETER_EVENTS on a subject of its own
kind and key, with a per-message TTL of the window (`Nats-TTL`, nats-server
2.11+): JetStream is where the events live and how they age out.

Counting reads a local copy of that stream. Every replica follows it with
an ordered consumer that replays what the stream holds at start and then
receives each new event, whichever replica recorded it; an event counts
until its time in the stream plus its TTL. Asking the stream for a
subject's count instead would cost a request to nats-server per check, and
a rate-limited MAIL checks once, a RCPT once more. Recording is one
publish; the count that follows it waits until the copy has caught up with
that publish, so a replica always sees its own events, and another
replica's within the time a message takes to reach it.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import time
from collections import deque
from contextlib import suppress

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import DeliverPolicy

from shared.bus import Bus
from shared.errors import DependencyUnavailable
from shared.settings import seconds
from shared.store import EVENTS_STREAM, EVENTS_SUBJECTS

log = logging.getLogger(__name__)

_PREFIX = "perimeter.event"
_TTL_HEADER = "Nats-TTL"
_SWEEP_SECONDS = 60.0
_REPLAY_SECONDS = 30.0


def subject(kind: str, key: str) -> str:
    """Keys hold dots and colons (IPs, addresses); subjects want tokens."""
    token = hashlib.blake2s(key.encode(), digest_size=12).hexdigest()
    return f"{_PREFIX}.{kind}.{token}"


class Events:
    def __init__(self, bus: Bus, timeout: float = 2.0) -> None:
        self.bus = bus
        self.timeout = timeout
        # subject -> when each of its events leaves the window, ascending
        self._expiries: dict[str, deque[float]] = {}
        self._applied = 0  # the stream sequence the copy has reached
        self._drained = False  # the consumer had nothing more to send
        self._advanced = asyncio.Condition()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow the stream, and return once what it held is copied."""
        info = await self.bus.js.stream_info(EVENTS_STREAM)
        await self.bus.js.subscribe(
            EVENTS_SUBJECTS,
            stream=EVENTS_STREAM,
            cb=self._apply,
            ordered_consumer=True,
            headers_only=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        if info.state.messages:
            await self._replayed(info.state.last_seq)
        self._sweeper = asyncio.create_task(self._sweep())

    async def _replayed(self, last: int) -> None:
        """Wait for the copy to hold what the stream held at start. Events
        may age out of the stream before they are replayed, the last one
        too, so the copy is also done when the consumer has nothing more
        to send; and a slow replay delays the start, never stops it."""
        try:
            async with asyncio.timeout(_REPLAY_SECONDS), self._advanced:
                await self._advanced.wait_for(
                    lambda: self._applied >= last or self._drained
                )
        except TimeoutError:
            log.warning("events replay not done in %.0fs; going on", _REPLAY_SECONDS)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper

    async def record(self, kind: str, key: str, window: int) -> None:
        """Count one event that ages out after `window` seconds."""
        await self._publish(subject(kind, key), window)

    async def count(self, kind: str, key: str) -> int:
        """How many events of `kind` for `key` are inside their window."""
        if not self.bus.connected:
            # The copy stops following while the bus is away.
            raise DependencyUnavailable(f"cannot count {kind}: NATS is not connected")
        return self._live(subject(kind, key))

    async def record_and_count(self, kind: str, key: str, window: int) -> int:
        name = subject(kind, key)
        sequence = await self._publish(name, window)
        try:
            await self._caught_up(sequence, self.timeout)
        except TimeoutError as exc:
            raise DependencyUnavailable(f"{kind} events are not arriving") from exc
        return self._live(name)

    async def _publish(self, name: str, window: int) -> int:
        try:
            ack = await self.bus.js.publish(
                name, b"", headers={_TTL_HEADER: f"{window}s"}, timeout=self.timeout
            )
        except NatsError as exc:
            raise DependencyUnavailable(f"cannot record an event: {exc}") from exc
        return ack.seq

    def _live(self, name: str) -> int:
        expiries = self._expiries.get(name)
        if not expiries:
            return 0
        now = time.time()
        while expiries and expiries[0] <= now:
            expiries.popleft()
        return len(expiries)

    async def _apply(self, msg: Msg) -> None:
        """One event from the stream, recorded by any replica."""
        meta = msg.metadata
        ttl = (msg.headers or {}).get(_TTL_HEADER)
        try:
            window = seconds(ttl) if ttl else 0
        except ValueError:
            window = 0
        if window:
            expiry = meta.timestamp.timestamp() + window
            expiries = self._expiries.setdefault(msg.subject, deque())
            if not expiries or expiry >= expiries[-1]:
                # The stream stamps events in order and a kind keeps its
                # window, so this is the way nearly every event goes.
                expiries.append(expiry)
            else:  # the window was changed in the settings meanwhile
                expiries.insert(bisect.bisect_right(expiries, expiry), expiry)
        async with self._advanced:
            self._applied = max(self._applied, meta.sequence.stream)
            self._drained = meta.num_pending == 0
            self._advanced.notify_all()

    async def _caught_up(self, sequence: int, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._advanced:
            await self._advanced.wait_for(lambda: self._applied >= sequence)

    async def _sweep(self) -> None:
        """Forget keys whose events have all aged out."""
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            for name in list(self._expiries):
                if not self._live(name):
                    del self._expiries[name]
