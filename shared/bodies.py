"""Message bodies too big for one NATS message.

NATS' default max payload is 1 MB and messages go to 25 MB. A body that
fits travels inline in the DATA request and the queue entry; a larger one
is put once in the JetStream object store `perimeter_bodies` (file storage,
128 KB chunks) and the messages carry only its name.
"""

from __future__ import annotations

import io
import logging

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from shared.bus import Bus
from shared.store import BODIES_BUCKET

log = logging.getLogger(__name__)

# Room for the envelope, headers and msgpack framing beside the body.
_HEADROOM = 64 * 1024


class Bodies:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._store: ObjectStore | None = None

    async def start(self) -> None:
        self._store = await self.bus.js.object_store(BODIES_BUCKET)

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "Bodies.start() was not awaited"
        return self._store

    def fits_inline(self, size: int) -> bool:
        return size + _HEADROOM <= self.bus.max_payload

    async def put(self, name: str, body: bytes) -> str:
        await self.store.put(name, body)
        return name

    async def get(self, name: str) -> bytes:
        sink = io.BytesIO()
        await self.store.get(name, writeinto=sink)
        return sink.getvalue()

    async def drop(self, name: str) -> None:
        try:
            await self.store.delete(name)
        except NotFoundError:
            log.debug("body %s was already gone", name)
