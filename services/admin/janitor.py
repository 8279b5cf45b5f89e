"""The janitor: deletes list entries whose `expires_at` has passed.

Workers stop matching an expired entry on their own (`ListIndex` checks the
time); the janitor makes it disappear from the bucket too. It follows the
bucket with a KV watcher, keeps the expiry of every entry that has one, and
every `interval` seconds deletes those past due, each with the revision it
saw, so an entry written again meanwhile is left alone and two admin
replicas never both delete (nor both audit) the same entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from services.admin.audit import AuditLog
from shared.errors import InvalidEntry
from shared.lists import CATALOG, Entry, parse_entry

log = logging.getLogger(__name__)

_DELETED = ("DEL", "PURGE")
_WRONG_LAST = (10071, 10164)  # JetStream: wrong last sequence for subject
JANITOR = "janitor"


class Janitor:
    """Deletes expired entries every `interval` seconds until cancelled."""

    def __init__(self, kv: KeyValue, audit: AuditLog, interval: float = 5.0) -> None:
        self._kv = kv
        self._audit = audit
        self._interval = interval
        self._due: dict[str, tuple[float, int, Entry]] = {}

    async def run(self) -> None:
        """Follow the bucket and sweep; start over if the watch breaks."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the janitor's watch broke; starting over")
            await asyncio.sleep(self._interval)

    async def _follow(self) -> None:
        watcher = await self._kv.watchall()
        try:
            next_sweep = time.monotonic() + self._interval
            while True:
                wait = max(next_sweep - time.monotonic(), 0.01)
                with suppress(NatsTimeout):
                    update = await watcher.updates(timeout=wait)
                    if update is not None:
                        self._note(update)
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self._interval
        finally:
            with suppress(Exception):
                await watcher.stop()

    def _note(self, update: KeyValue.Entry) -> None:
        key = update.key
        self._due.pop(key, None)
        name = key.partition(".")[0]
        if update.operation in _DELETED or name not in CATALOG or not update.value:
            return
        try:
            entry = parse_entry(name, update.value)
        except InvalidEntry:
            return
        if entry.expires_at is not None:
            expires = entry.expires_at.timestamp()
            self._due[key] = (expires, update.revision or 0, entry)

    async def sweep(self) -> int:
        """Delete what is due now; returns how many were deleted."""
        now = time.time()
        due = [(k, v) for k, v in self._due.items() if v[0] <= now]
        deleted = 0
        for key, (_, revision, entry) in due:
            self._due.pop(key, None)
            if await self._delete(key, revision):
                deleted += 1
                name = key.partition(".")[0]
                log.info("expired %s (%s) from %s", entry.id, entry.value, name)
                await self._audit.entry(JANITOR, "expire", name, entry)
        return deleted

    async def _delete(self, key: str, revision: int) -> bool:
        try:
            await self._kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                return False  # written again since, or deleted by another
            raise
        return True
