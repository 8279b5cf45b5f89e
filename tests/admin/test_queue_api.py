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
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

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


async def take(worker: Worker, queue_id: str, ack: bool = True) -> Queued:
    """Fetch as the worker does until the entry of `queue_id` comes, and
    ack it (delivered) or put it off; others are put off for an hour, as a
    temporary failure would."""
    while True:
        try:
            batch = await worker.fetch(64, timeout=2.0)
        except NatsTimeout:
            raise AssertionError(f"{queue_id} never reached the worker") from None
        found = None
        for msg in batch:
            item = Queued.decode(msg.data)
            if item.id == queue_id and ack:
                await msg.ack_sync()
            else:
                await msg.nak(delay=3600)
            found = item if item.id == queue_id else found
        if found is not None:
            return found


async def put_off(worker: Worker, queue_id: str) -> None:
    """The worker tries `queue_id` and defers it for an hour."""
    await take(worker, queue_id, ack=False)


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
    await put_off(worker, tried.id)
    await spool.enqueue(untried)

    states = {e["id"]: e["state"] for e in await listed(api)}

    assert states[tried.id] == "retrying"
    assert states[untried.id] == "waiting"


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
    await put_off(worker, named["tried"].id)
    await spool.enqueue(named["untried"])
    await spool.fail(named["failed"])

    found = {e["id"] for e in await listed(api, query)}

    assert {name for name, item in named.items() if item.id in found} == expected


async def test_a_failed_message_is_listed_with_its_error(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    item = message(generation=1, error="<bob@example.org>: 550 5.1.1 no such user")
    await spool.fail(item)

    (entry,) = await entries_of(api, item.id, "state=failed")

    assert entry["state"] == "failed"
    assert entry["error"] == "<bob@example.org>: 550 5.1.1 no such user"


async def test_queued_messages_come_before_failed_ones_and_limit_cuts_the_list(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    await spool.fail(message())
    await spool.enqueue(message())

    everything = await listed(api)
    first_two = await listed(api, "limit=2")

    states = [e["state"] for e in everything]
    assert states.index("failed") > max(
        i for i, s in enumerate(states) if s != "failed"
    )
    assert first_two == everything[:2]


async def test_a_large_message_is_sized_from_its_stored_body(
    api: httpx.AsyncClient, spool: Spool, bodies: Bodies
) -> None:
    item = message(body=None)
    item.body_ref = await bodies.put(item.id, b"x" * 300_000)
    await spool.enqueue(item)

    (entry,) = await entries_of(api, item.id)

    assert entry["size"] == len(PREPEND) + 300_000


async def test_retrying_a_failed_message_hands_it_to_the_worker_again(
    api: httpx.AsyncClient, spool: Spool, worker: Worker
) -> None:
    item = message(generation=1, error="<bob@example.org>: 552 mailbox full")
    await spool.fail(item)

    response = await api.post(f"/api/v1/queue/{item.id}/retry")
    delivered = await take(worker, item.id)

    assert response.status_code == 202, response.text
    assert response.json()["state"] == "waiting"
    assert response.json()["error"] is None
    assert await entries_of(api, item.id, "state=failed") == []
    assert delivered.recipients == item.recipients
    assert (delivered.generation, delivered.error) == (2, "")
    assert (delivered.body, delivered.prepend) == (BODY, PREPEND)


async def test_a_retried_message_waits_again_so_a_second_retry_is_409(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    item = message(generation=1, error="<bob@example.org>: 552 mailbox full")
    await spool.fail(item)

    first = await api.post(f"/api/v1/queue/{item.id}/retry")
    second = await api.post(f"/api/v1/queue/{item.id}/retry")

    assert first.status_code == 202
    assert second.status_code == 409
    assert [e["state"] for e in await entries_of(api, item.id)] == ["waiting"]


async def test_retrying_joins_the_failed_entries_of_one_message(
    api: httpx.AsyncClient, spool: Spool, worker: Worker
) -> None:
    first = message(recipients=["a@example.org"], generation=1, error="550 a")
    later = message(id=first.id, recipients=["b@example.org"], generation=2)
    later.error = "550 b"
    await spool.fail(first)
    await spool.fail(later)

    response = await api.post(f"/api/v1/queue/{first.id}/retry")
    delivered = await take(worker, first.id)

    assert response.json()["recipients"] == ["a@example.org", "b@example.org"]
    assert delivered.recipients == ["a@example.org", "b@example.org"]
    assert delivered.generation == 3


async def test_retrying_a_message_whose_body_expired_is_409(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    item = message(body=None, body_ref="expired-body", error="550 x", generation=1)
    await spool.fail(item)

    response = await api.post(f"/api/v1/queue/{item.id}/retry")

    assert response.status_code == 409
    assert "can only be dropped" in response.json()["detail"]
    (entry,) = await entries_of(api, item.id)
    assert (entry["state"], entry["size"]) == ("failed", None)


async def test_dropping_a_failed_message_deletes_it_and_its_body(
    api: httpx.AsyncClient, spool: Spool, bodies: Bodies
) -> None:
    item = message(body=None, error="550 x", generation=1)
    item.body_ref = await bodies.put(item.id, b"y" * 200_000)
    await spool.fail(item)

    first = await api.delete(f"/api/v1/queue/{item.id}")
    second = await api.delete(f"/api/v1/queue/{item.id}")

    assert (first.status_code, second.status_code) == (204, 404)
    assert await entries_of(api, item.id) == []
    with pytest.raises(NotFoundError):
        await bodies.store.get_info(item.id)


async def test_dropping_keeps_a_body_that_a_queued_entry_still_needs(
    api: httpx.AsyncClient, spool: Spool, bodies: Bodies
) -> None:
    failed = message(body=None, recipients=["a@example.org"], generation=1)
    failed.body_ref = await bodies.put(failed.id, b"z" * 200_000)
    failed.error = "550 a"
    waiting = message(id=failed.id, body=None, body_ref=failed.body_ref, generation=1)
    await spool.fail(failed)
    await spool.enqueue(waiting)

    response = await api.delete(f"/api/v1/queue/{failed.id}")

    assert response.status_code == 204
    assert (await bodies.store.get_info(failed.id)).size == 200_000
    assert [e["state"] for e in await entries_of(api, failed.id)] == ["waiting"]


@pytest.mark.parametrize("method", ["POST", "DELETE"], ids=["retry", "drop"])
async def test_a_message_still_waiting_cannot_be_retried_or_dropped(
    api: httpx.AsyncClient, spool: Spool, method: str
) -> None:
    item = message()
    await spool.enqueue(item)

    response = await api.request(method, _target(method, item.id))

    assert response.status_code == 409
    assert "waiting for delivery" in response.json()["detail"]


@pytest.mark.parametrize("method", ["POST", "DELETE"], ids=["retry", "drop"])
async def test_an_unknown_id_is_404(api: httpx.AsyncClient, method: str) -> None:
    response = await api.request(method, _target(method, "0000DEADBEEF0000"))

    assert response.status_code == 404
    assert response.json()["detail"] == "no failed message has the id 0000DEADBEEF0000"


@pytest.mark.parametrize(
    "query",
    ["state=stuck", "limit=0", "limit=1001"],
    ids=["bad-state", "zero-limit", "huge-limit"],
)
async def test_a_bad_query_is_422(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"/api/v1/queue?{query}")

    assert response.status_code == 422
    assert response.json()["detail"]


async def test_an_id_that_cannot_be_a_queue_id_is_422(api: httpx.AsyncClient) -> None:
    response = await api.delete("/api/v1/queue/a.b>c")

    assert response.status_code == 422


async def test_retry_and_drop_are_in_the_audit_trail(
    api: httpx.AsyncClient, spool: Spool
) -> None:
    retried = message(generation=1, error="552 mailbox full")
    dropped = message(generation=1, error="550 no such user")
    await spool.fail(retried)
    await spool.fail(dropped)

    await api.post(f"/api/v1/queue/{retried.id}/retry")
    await api.delete(f"/api/v1/queue/{dropped.id}")
    response = await api.get("/api/v1/audit?list=queue&limit=1000")

    records = {r["id"]: r for r in response.json()}
    assert records[retried.id]["action"] == "retry"
    assert records[retried.id]["token_name"] == "ops"
    assert records[retried.id]["before"]["error"] == "552 mailbox full"
    assert records[dropped.id]["action"] == "drop"
    assert records[dropped.id]["before"]["recipients"] == ["bob@example.org"]


CALLS = [
    ("GET", "/api/v1/queue"),
    ("POST", "/api/v1/queue/0000DEADBEEF0000/retry"),
    ("DELETE", "/api/v1/queue/0000DEADBEEF0000"),
]


@pytest.mark.parametrize(("method", "path"), CALLS, ids=["list", "retry", "drop"])
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token"], ids=["no-token", "wrong-token"]
)
async def test_the_queue_needs_a_token(
    admin: AdminServer, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=admin.url) as client:
        response = await client.request(method, path, headers=headers)

    assert response.status_code == 401


def _target(method: str, queue_id: str) -> str:
    suffix = "/retry" if method == "POST" else ""
    return f"/api/v1/queue/{queue_id}{suffix}"
