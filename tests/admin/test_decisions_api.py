"""Decision records: published the way the ingress does, read back
newest first and filtered."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext


def record(
    client: str,
    outcome: str,
    sender: str = "alice@example.com",
    checks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "session": uuid.uuid4().hex[:12],
        "time": "2030-01-01T12:00:00Z",
        "client": client,
        "helo": "mail.example.com",
        "sender": sender,
        "recipients": ["bob@example.org"],
        "checks": checks or [],
        "reply": "250 2.0.0 Ok: queued as X" if outcome == "accepted" else "554 5.7.1",
        "outcome": outcome,
        "queue_id": "X" if outcome == "accepted" else None,
    }


def check(rule: str, result: str) -> dict[str, Any]:
    return {"stage": "rcpt", "rule": rule, "result": result, "ms": 1.5, "detail": ""}


RECORDS = [
    record("198.18.0.1", "accepted", checks=[check("rbl", "pass")]),
    record("198.18.0.2", "rejected", checks=[check("rbl", "reject")]),
    record("2001:db8:18::5", "rejected", sender="x@spam.example"),
    record("198.18.1.9", "tempfail", checks=[check("spf", "tempfail")]),
    record("198.18.0.1", "accepted", sender="", checks=[check("rbl", "would_reject")]),
    record("198.18.0.3", "aborted", sender="Bob@Mail.Partner.example"),
]


@pytest.fixture(scope="module")
async def published(js: JetStreamContext) -> list[dict[str, Any]]:
    for item in RECORDS:
        subject = f"perimeter.decisions.{item['outcome']}"
        await js.publish(subject, json.dumps(item).encode())
    return RECORDS


async def sessions(api: httpx.AsyncClient, query: str) -> list[str]:
    response = await api.get(f"/api/v1/decisions?{query}")
    assert response.status_code == 200, response.text
    return [r["session"] for r in response.json()]


def ids(*indexes: int) -> list[str]:
    return [RECORDS[i]["session"] for i in indexes]


FILTERS = [
    ("ip=198.18.0.1", [4, 0]),
    ("ip=198.18.0.0/24", [5, 4, 1, 0]),
    ("ip=2001:DB8:18:0::5", [2]),
    ("sender=x@spam.example", [2]),
    ("sender=partner.example", [5]),
    ("sender=<>", [4]),
    ("rule=rbl", [4, 1]),
    ("outcome=rejected", [2, 1]),
    ("outcome=accepted&ip=198.18.0.0/16", [4, 0]),
    ("ip=198.18.0.0/16&limit=2", [5, 4]),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS, ids=[q for q, _ in FILTERS])
async def test_decisions_are_filtered_and_newest_first(
    api: httpx.AsyncClient,
    published: list[dict[str, Any]],
    query: str,
    expected: list[int],
) -> None:
    found = await sessions(api, query)

    ours = [s for s in found if s in ids(*range(len(RECORDS)))]
    assert ours == ids(*expected)


async def test_a_decision_shows_every_field_of_the_record(
    api: httpx.AsyncClient, published: list[dict[str, Any]]
) -> None:
    response = await api.get("/api/v1/decisions?ip=198.18.0.2")

    (found,) = response.json()
    assert found == RECORDS[1]


@pytest.mark.parametrize(
    "query",
    ["ip=198.18.0.300", "rule=no_such_rule", "outcome=maybe", "limit=0"],
    ids=["bad-ip", "bad-rule", "bad-outcome", "zero-limit"],
)
async def test_a_bad_filter_is_422(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"/api/v1/decisions?{query}")

    assert response.status_code == 422
    assert response.json()["detail"]
