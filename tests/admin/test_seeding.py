"""The defaults of SPEC §5, written once ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from shared.lists import DEFAULT_ZONES, ListIndex, parse_entry, seed_defaults
from shared.settings import Settings
from shared.store import (
    LISTS_BUCKET,
    SETTINGS_BUCKET,
    SETTINGS_KEY,
    current,
    ensure_store,
)
from tests.support.natsserver import NatsServer


@pytest.fixture
async def fresh_js() -> AsyncIterator[JetStreamContext]:
    server = NatsServer()
    server.start()
    client = await nats.connect(server.url)
    js = client.jetstream()
    await ensure_store(js)
    yield js
    await client.close()
    server.stop()


async def entries(js: JetStreamContext, name: str) -> dict[str, str]:
    """value -> key of a list's entries."""
    found = current(js, LISTS_BUCKET, f"{name}.*")
    return {parse_entry(name, value).value: key async for key, value in found}


async def loaded(js: JetStreamContext) -> ListIndex:
    """A ListIndex holding every key of the lists bucket."""
    index = ListIndex()
    async for key, value in current(js, LISTS_BUCKET):
        index.apply(key, value)
    return index


async def test_first_seeding_writes_zones_extensions_and_settings(
    fresh_js: JetStreamContext,
) -> None:
    assert await seed_defaults(fresh_js) is True

    index = await loaded(fresh_js)
    assert {z.value: z.codes for z in index.rbl_zones()} == DEFAULT_ZONES
    assert {"exe", "pif", "bat", "scr", "lnk", "com"} <= index.extensions()
    settings_kv = await fresh_js.key_value(SETTINGS_BUCKET)
    stored = Settings.model_validate_json(
        (await settings_kv.get(SETTINGS_KEY)).value or b""
    )
    assert stored == Settings()


async def test_a_deleted_default_does_not_come_back(fresh_js: JetStreamContext) -> None:
    await seed_defaults(fresh_js)
    kv = await fresh_js.key_value(LISTS_BUCKET)
    await kv.delete((await entries(fresh_js, "rbl_zones"))["rbl.baruwa.net"])

    again = await seed_defaults(fresh_js)

    assert again is False
    assert "rbl.baruwa.net" not in await entries(fresh_js, "rbl_zones")
    assert len(await entries(fresh_js, "rbl_zones")) == 5


async def test_processes_seeding_at_once_write_each_default_once(
    fresh_js: JetStreamContext,
) -> None:
    results = await asyncio.gather(*(seed_defaults(fresh_js) for _ in range(3)))

    assert results.count(True) == 1
    kv = await fresh_js.key_value(LISTS_BUCKET)
    keys = [k for k in await kv.keys() if k.startswith("rbl_zones.")]
    assert len(keys) == len(DEFAULT_ZONES)


async def test_seeding_keeps_settings_an_operator_changed(
    fresh_js: JetStreamContext,
) -> None:
    await seed_defaults(fresh_js)
    settings_kv = await fresh_js.key_value(SETTINGS_BUCKET)
    changed = Settings(max_recipients=5).model_dump_json().encode()
    await settings_kv.put(SETTINGS_KEY, changed)

    await seed_defaults(fresh_js)

    assert (await settings_kv.get(SETTINGS_KEY)).value == changed


async def test_the_admin_service_seeded_its_store_at_start(
    api: httpx.AsyncClient,
) -> None:
    zones = (await api.get("/api/v1/lists/rbl_zones")).json()
    by_name = {z["value"]: z["codes"] for z in zones}

    assert by_name["zen.spamhaus.org"] == ["127.0.0.2-127.0.0.11"]
    assert by_name["hostkarma.junkemailfilter.com"] == ["127.0.0.2"]
