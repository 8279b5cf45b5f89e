"""A live, local view of the operator's lists and settings.

Each worker keeps the `perimeter_lists` and `perimeter_settings` buckets in
memory, loaded from a snapshot and then following their changes with KV
watchers, so a rule reads a list
without a bus round trip and an admin change is in force within moments on
every replica (SPEC §1).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.lists import ListIndex
from shared.settings import Settings
from shared.store import LISTS_BUCKET, SETTINGS_BUCKET, SETTINGS_KEY, current

log = logging.getLogger(__name__)

_DELETED = ("DEL", "PURGE")


class StoreView:
    """The lists and settings as they stand now, kept current."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.settings = Settings()
        self.lists = ListIndex()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded = {LISTS_BUCKET: asyncio.Event(), SETTINGS_BUCKET: asyncio.Event()}

    async def start(self, timeout: float = 30.0) -> None:
        """Load both buckets and follow them; return once loaded."""
        for bucket in (LISTS_BUCKET, SETTINGS_BUCKET):
            self._tasks.append(asyncio.create_task(self._follow(bucket)))
        async with asyncio.timeout(timeout):
            for event in self._loaded.values():
                await event.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _follow(self, bucket: str) -> None:
        """Watch a bucket for ever, starting over if the watch breaks."""
        while True:
            try:
                kv = await self._js.key_value(bucket)
                await self._watch(kv, bucket)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watch on %s broke; starting over", bucket)
            await asyncio.sleep(1.0)

    async def _watch(self, kv: KeyValue, bucket: str) -> None:
        """Load what the bucket holds, then apply every change after it.

        The load is a snapshot whose size the consumer states
        (`shared.store.current`), not the first part of the watch: nats-py
        can mark the end of a watch's current values while some are still
        on their way, and a service would then answer, for a moment, with
        a relay domain or a ban missing. The watch that follows replays
        the current values once more; applying a value twice is harmless.
        """
        await self._load(bucket)
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                raw = None if entry.operation in _DELETED else entry.value
                self._apply(bucket, entry.key, raw, None)
        finally:
            await watcher.stop()

    async def _load(self, bucket: str) -> None:
        fresh = ListIndex()
        async for key, value in current(self._js, bucket):
            self._apply(bucket, key, value, fresh)
        if bucket == LISTS_BUCKET:
            self.lists = fresh
        self._loaded[bucket].set()
        log.info("%s loaded", bucket)

    def _apply(
        self, bucket: str, key: str, raw: bytes | None, target: ListIndex | None
    ) -> None:
        if bucket == LISTS_BUCKET:
            (self.lists if target is None else target).apply(key, raw)
        elif key == SETTINGS_KEY and raw is not None:
            self._apply_settings(raw)

    def _apply_settings(self, raw: bytes) -> None:
        try:
            self.settings = Settings.model_validate_json(raw)
        except ValidationError:
            log.exception("ignoring a settings document that does not validate")
            return
        log.info("settings updated")
