"""The mail queue through the API: entries are stored by the ingress's own
Spool, the delivery worker is played by a durable consumer made the way the
worker makes it, and the API lists, retries and drops them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from nats.errors import TimeoutError as NatsTimeout

from services.ingress.delivery import DURABLE
from services.ingress.spool import Queued, Spool
from shared.bodies import Bodies
from shared.bus import Bus
from shared.store import QUEUE_STREAM, QUEUE_SUBJECTS
from tests.admin.conftest import AdminServer

PREPEND = b"Received: from mail.example.com (198.51.100.7)\r\n"
BODY = b"Subject: quarterly figures\r\n\r\nThe figures are attached.\r\n"
RECEIVED = 1_900_000_000.0
RECEIVED_TEXT = "2030-03-17T17:46:40Z"

Worker = JetStreamContext.PullSubscription


def message(**fields: Any) -> Queued:
    """A queue entry as the ingress makes one, with a fresh id."""
    defaults: dict[str, Any] = {
        "id": secrets.token_hex(8).upper(),
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
        "prepend": PREPEND,
        "body": BODY,
        "client": "198.51.100.7",
        "received": RECEIVED,
    }
    return Queued(**(defaults | fields))


@pytest.fixture(scope="module")
def spool(nc: Client) -> Spool:
    return Spool(Bus(nc))


@pytest.fixture(scope="module")
async def bodies(nc: Client) -> Bodies:
    store = Bodies(Bus(nc))
    await store.start()
    return store


@pytest.fixture(scope="module")
async def worker(js: JetStreamContext) -> AsyncIterator[Worker]:
    """The delivery worker's durable consumer, configured as it does."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, ack_wait=300.0, max_ack_pending=10_000
    )
    sub = await js.pull_subscribe(
        QUEUE_SUBJECTS, durable=DURABLE, stream=QUEUE_STREAM, config=config
    )
    yield sub
    await sub.unsubscribe()
    await js.delete_consumer(QUEUE_STREAM, DURABLE)


async def take(worker: Worker, queue_id: str) -> Queued:
    """Fetch as the worker does until the entry of `queue_id` comes; ack it
    and put the others off for an hour, as a temporary failure would."""
    while True:
        try:
            batch = await worker.fetch(64, timeout=2.0)
        except NatsTimeout:
            raise AssertionError(f"{queue_id} never reached the worker") from None
        found = None
        for msg in batch:
            item = Queued.decode(msg.data)
            if item.id == queue_id and found is None:
                found = item
                await msg.ack_sync()
            else:
                await msg.nak(delay=3600)
        if found is not None:
            return found


async def listed(api: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/queue?limit=1000&{query}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def entries_of(
    api: httpx.AsyncClient, queue_id: str, query: str = ""
) -> list[dict[str, Any]]:
    return [e for e in await listed(api, query) if e["id"] == queue_id]


async def test_a_queued_message_is_listed_with_its_envelope_but_not_its_body(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    item = message(recipients=["bob@example.org", "carol@example.org"])
    await spool.enqueue(item)

    (entry,) = await entries_of(api, item.id)

    assert entry == {
        "id": item.id,
        "seq": entry["seq"],
        "state": "waiting",
        "sender": "alice@example.com",
        "recipients": ["bob@example.org", "carol@example.org"],
        "size": len(PREPEND) + len(BODY),
        "received": RECEIVED_TEXT,
        "client": "198.51.100.7",
        "error": None,
    }
    assert isinstance(entry["seq"], int)


async def test_no_body_is_ever_in_the_listing(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    item = message(body=b"Subject: x\r\n\r\nsecret-payload-7731\r\n")
    await spool.enqueue(item)
    await spool.fail(message(body=b"Subject: y\r\n\r\nsecret-payload-7732\r\n"))

    response = await api.get("/api/v1/queue?limit=1000")

    assert "secret-payload" not in response.text
    assert "Received: from" not in response.text


async def test_a_message_the_worker_has_tried_is_listed_as_retrying(
    api: httpx.AsyncClient, spool: Spool, worker: Worker
) -> None:
    tried, untried = message(), message()
    await spool.enqueue(tried)
    await take(worker, "none-" + tried.id) if False else None
    await _put_off(worker, tried.id)
    await spool.enqueue(untried)

    states = {e["id"]: e["state"] for e in await listed(api)}

    assert states[tried.id] == "retrying"
    assert states[untried.id] == "waiting"


async def _put_off(worker: Worker, queue_id: str) -> None:
    """Fetch until `queue_id` comes and nak everything for an hour."""
    while True:
        batch = await worker.fetch(64, timeout=2.0)
        ids = []
        for msg in batch:
            ids.append(Queued.decode(msg.data).id)
            await msg.nak(delay=3600)
        if queue_id in ids:
            return


STATE_FILTERS = [
    ("state=waiting", {"untried"}),
    ("state=retrying", {"tried"}),
    ("state=queued", {"tried", "untried"}),
    ("state=failed", {"failed"}),
    ("state=all", {"tried", "untried", "failed"}),
    ("", {"tried", "untried", "failed"}),
]


@pytest.mark.parametrize(
    ("query", "expected"), STATE_FILTERS, ids=[q or "default" for q, _ in STATE_FILTERS]
)
async def test_the_state_filter_picks_entries_of_that_state(
    api: httpx.AsyncClient,
    spool: Spool,
    worker: Worker,
    query: str,
    expected: set[str],
) -> None:
    named = {"tried": message(), "untried": message(), "failed": message()}
    await spool.enqueue(named["tried"])
    await _put_off(worker, named["tried"].id)
    await spool.enqueue(named["untried"])
    await spool.fail(named["failed"])

    found = {e["id"] for e in await listed(api, query)}

    assert {name for name, item in named.items() if item.id in found} == expected
