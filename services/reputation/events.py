"""Counts that every replica agrees on, over a sliding window.

Each counted event (a MAIL, a failed recipient, a failed AUTH) is one
message in the JetStream stream PERIMETER_EVENTS on a subject of its own
kind and key, with a per-message TTL of the window (`Nats-TTL`, nats-server
2.11+). The number of messages a subject holds is then exactly the number
of events in the last window, whichever replica counted them; JetStream
removes them as they age out. Recording is one publish, counting one
stream-info request.
"""

from __future__ import annotations

import hashlib
import json

from nats.errors import Error as NatsError

from shared.bus import Bus
from shared.errors import DependencyUnavailable
from shared.store import EVENTS_STREAM

_PREFIX = "perimeter.event"


def subject(kind: str, key: str) -> str:
    """Keys hold dots and colons (IPs, addresses); subjects want tokens."""
    token = hashlib.blake2s(key.encode(), digest_size=12).hexdigest()
    return f"{_PREFIX}.{kind}.{token}"


class Events:
    def __init__(self, bus: Bus, timeout: float = 2.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def record(self, kind: str, key: str, window: int) -> None:
        """Count one event that ages out after `window` seconds."""
        try:
            await self.bus.js.publish(
                subject(kind, key), b"", headers={"Nats-TTL": f"{window}s"}
            )
        except NatsError as exc:
            raise DependencyUnavailable(f"cannot record {kind}: {exc}") from exc

    async def count(self, kind: str, key: str) -> int:
        """How many events of `kind` for `key` are inside their window."""
        name = subject(kind, key)
        request = json.dumps({"subjects_filter": name}).encode()
        try:
            reply = await self.bus.nc.request(
                f"$JS.API.STREAM.INFO.{EVENTS_STREAM}", request, timeout=self.timeout
            )
        except NatsError as exc:
            raise DependencyUnavailable(f"cannot count {kind}: {exc}") from exc
        state = json.loads(reply.data).get("state", {})
        return int((state.get("subjects") or {}).get(name, 0))

    async def record_and_count(self, kind: str, key: str, window: int) -> int:
        await self.record(kind, key, window)
        return await self.count(kind, key)
