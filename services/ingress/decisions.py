"""Decision records (SPEC §6), published a batch at a time.

One record per transaction is what operators query through the admin API.
It is not mail and the client does not wait for it, but publishing each at
once costs a write to nats-server and a wake-up of it per message, as much
as one leg of a stage request. Records are gathered for up to
`FLUSH_SECONDS` (or `MAX_BATCH` of them) and published together, which the
NATS client writes in one go. On a normal stop the buffer is published
first; a record still buffered when the process is killed is lost, the
mail it describes is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from typing import Any

from shared.bus import Bus

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
MAX_BATCH = 256


class DecisionLog:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._publish()

    def add(self, outcome: str, record: dict[str, Any]) -> None:
        """Queue the record of one transaction under `outcome`."""
        self._pending.append((f"perimeter.decisions.{outcome}", record))
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            if len(self._pending) < MAX_BATCH:
                await asyncio.sleep(FLUSH_SECONDS)
            self._ready.clear()
            try:
                await self._publish()
            except Exception:
                # The bus is down: the records wait for the next round.
                log.warning("decision records not published yet", exc_info=True)
                await asyncio.sleep(1.0)
                self._ready.set()

    async def _publish(self) -> None:
        batch, self._pending = self._pending, []
        for index, (subject, record) in enumerate(batch):
            try:
                await self.bus.nc.publish(subject, json.dumps(record).encode())
            except Exception:
                self._pending[:0] = batch[index:]
                raise
