"""The durable hand-off: accepted mail in JetStream (SPEC §1).

A message is acknowledged with 250 only once `enqueue` returns, which is
after JetStream has stored it on file. Large bodies are in the object
store already (shared/bodies.py); the entry then carries the name.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shared.bus import Bus

log = logging.getLogger(__name__)

QUEUE_PREFIX = "perimeter.queue."
FAILED_PREFIX = "perimeter.failed."


@dataclass(slots=True)
class Queued:
    """One message waiting for delivery to the routes of its recipients."""

    id: str
    sender: str
    recipients: list[str]
    prepend: bytes
    body: bytes | None = None
    body_ref: str | None = None
    client: str = ""
    received: float = field(default_factory=time.time)
    generation: int = 0
    error: str = ""
    kept: bool = False

    def encode(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "v": 1,
                "id": self.id,
                "sender": self.sender,
                "recipients": self.recipients,
                "prepend": self.prepend,
                "body": self.body,
                "body_ref": self.body_ref,
                "client": self.client,
                "received": self.received,
                "generation": self.generation,
                "error": self.error,
                "kept": self.kept,
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> Queued:
        raw: dict[str, Any] = msgpack.unpackb(data, raw=False)
        raw.pop("v", None)
        return cls(**raw)


class Spool:
    """Stores queue entries in JetStream."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def enqueue(self, item: Queued, dedupe: str = "") -> None:
        """Store the entry; returns once JetStream holds it on file.

        `dedupe` names the entry for JetStream's duplicate window, so a
        publish repeated after a lost acknowledgement stores it once.
        """
        await self.bus.js.publish(
            QUEUE_PREFIX + item.id,
            item.encode(),
            headers={"Nats-Msg-Id": dedupe or item.id},
        )

    async def fail(self, item: Queued) -> None:
        """Keep a message whose delivery failed for good, for the operator."""
        await self.bus.js.publish(FAILED_PREFIX + item.id, item.encode())
