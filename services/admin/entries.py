"""List entries in the KV bucket `perimeter_lists`, as the admin API reads
and writes them.

Reads go to the bucket each time (the last message of each key's subject
in the bucket's stream), so an answer always reflects the last write,
whichever admin replica made it. Writes of one list are serialised in
this process, which makes the duplicate check hold for one admin replica;
two replicas adding the same value in the same instant could both succeed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.errors import InvalidEntry
from shared.lists import CATALOG, Entry, entry_key, identity, parse_entry
from shared.store import LISTS_BUCKET, current

log = logging.getLogger(__name__)

_ID_LENGTH = 12
_HEX = frozenset("0123456789abcdef")


class DuplicateEntry(Exception):
    """The value is already in the list, as `existing`."""

    def __init__(self, existing: Entry) -> None:
        super().__init__(existing.value)
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Skipped:
    """An imported row not written because its value is already there."""

    line: int
    value: str


def valid_id(entry_id: str) -> bool:
    return len(entry_id) == _ID_LENGTH and set(entry_id) <= _HEX


class EntryStore:
    """Read, add and delete the entries of the lists."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def kv(self) -> KeyValue:
        return self._kv

    async def entries(self, name: str) -> list[Entry]:
        """The entries of a list that apply now, oldest first."""
        now = time.time()
        found = [e async for _, e in self._scan(f"{name}.*") if not e.expired(now)]
        return sorted(found, key=lambda e: (e.created_at, e.value))

    async def sizes(self) -> dict[str, int]:
        """How many entries that apply now each list holds."""
        now = time.time()
        sizes = dict.fromkeys(CATALOG, 0)
        async for name, entry in self._scan(">"):
            if not entry.expired(now):
                sizes[name] += 1
        return sizes

    async def add(self, name: str, entry: Entry) -> Entry:
        """Store a new entry; `DuplicateEntry` if its value is there."""
        async with self._locks[name]:
            wanted = identity(name, entry.value)
            for existing in await self.entries(name):
                if identity(name, existing.value) == wanted:
                    raise DuplicateEntry(existing)
            await self._kv.create(entry_key(name, entry.id), entry.to_json())
        return entry

    async def add_many(
        self, name: str, rows: Sequence[tuple[int, Entry]]
    ) -> tuple[list[Entry], list[Skipped]]:
        """Store imported entries; values already present are skipped."""
        created: list[Entry] = []
        skipped: list[Skipped] = []
        async with self._locks[name]:
            seen = {identity(name, e.value) for e in await self.entries(name)}
            for line, entry in rows:
                wanted = identity(name, entry.value)
                if wanted in seen:
                    skipped.append(Skipped(line, entry.value))
                    continue
                seen.add(wanted)
                await self._kv.create(entry_key(name, entry.id), entry.to_json())
                created.append(entry)
        return created, skipped

    async def delete(self, name: str, entry_id: str) -> Entry | None:
        """Delete an entry; None if there is none that applies now."""
        if not valid_id(entry_id):
            return None
        key = entry_key(name, entry_id)
        async with self._locks[name]:
            try:
                stored = await self._kv.get(key)
            except KeyNotFoundError:
                return None
            await self._kv.delete(key)
        entry = _read(name, key, stored.value or b"")
        return None if entry is None or entry.expired() else entry

    async def _scan(self, keys: str) -> AsyncIterator[tuple[str, Entry]]:
        """(list, entry) for every current key matching `keys`."""
        async for key, value in current(self._js, LISTS_BUCKET, keys):
            name = key.partition(".")[0]
            entry = _read(name, key, value)
            if entry is not None:
                yield name, entry


def _read(name: str, key: str, raw: bytes) -> Entry | None:
    if name not in CATALOG:
        return None
    try:
        return parse_entry(name, raw)
    except InvalidEntry:
        log.warning("skipping unreadable list entry %s", key)
        return None
