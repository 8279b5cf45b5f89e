"""The health and metrics server, driven over real HTTP on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import (
    DELIVERY_QUEUE_DEPTH,
    RULE_REJECTS,
    STAGE_SECONDS,
    serve_health,
)
from shared.rules import Rule, Stage


@dataclass
class Readiness:
    """A switch the test flips; the server reads it on every request."""

    ready: bool = True
    broken: bool = False

    def __call__(self) -> bool:
        if self.broken:
            raise RuntimeError("the readiness check itself failed")
        return self.ready


@dataclass
class Health:
    readiness: Readiness
    base_url: str
    port: int


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    readiness = Readiness()
    server = await serve_health("127.0.0.1:0", readiness)
    port = server.sockets[0].getsockname()[1]

    yield Health(readiness, f"http://127.0.0.1:{port}", port)

    server.close()
    await server.wait_closed()


async def get(health: Health, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=health.base_url, timeout=5) as client:
        return await client.get(path)


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of one sample in a /metrics page, or None if it is absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()

    answer = await asyncio.wait_for(reader.read(), timeout=5)

    writer.close()
    await writer.wait_closed()
    return answer


async def test_healthz_answers_200_ok_when_the_service_is_ready(
    health: Health,
) -> None:
    response = await get(health, "/healthz")

    assert response.status_code == 200
    assert response.text == "ok"


async def test_healthz_answers_503_when_the_service_is_not_ready(
    health: Health,
) -> None:
    health.readiness.ready = False

    response = await get(health, "/healthz")

    assert response.status_code == 503


async def test_healthz_follows_readiness_from_one_request_to_the_next(
    health: Health,
) -> None:
    health.readiness.ready = False
    before = await get(health, "/healthz")
    health.readiness.ready = True
    after = await get(health, "/healthz")

    assert (before.status_code, after.status_code) == (503, 200)


async def test_healthz_answers_503_when_the_readiness_check_raises(
    health: Health,
) -> None:
    health.readiness.broken = True

    response = await get(health, "/healthz")

    assert response.status_code == 503


async def test_metrics_are_served_in_the_prometheus_text_format(
    health: Health,
) -> None:
    response = await get(health, "/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE perimeter_rule_rejects_total counter" in response.text


async def test_a_rule_reject_shows_in_metrics_as_its_counter_moves(
    health: Health,
) -> None:
    labels = {"rule": Rule.RBL.value, "stage": Stage.RCPT.value}
    name = "perimeter_rule_rejects_total"
    before = sample((await get(health, "/metrics")).text, name, labels) or 0.0

    RULE_REJECTS.labels(**labels).inc()
    after = sample((await get(health, "/metrics")).text, name, labels)

    assert after == before + 1


async def test_every_rule_exports_its_would_reject_series_from_the_start(
    health: Health,
) -> None:
    text = (await get(health, "/metrics")).text

    missing = [
        rule
        for rule in Rule
        if sample(text, "perimeter_rule_would_reject_total", {"rule": rule}) is None
    ]

    assert missing == []


async def test_stage_latency_buckets_run_from_half_a_millisecond_to_30_seconds(
    health: Health,
) -> None:
    STAGE_SECONDS.labels(stage=Stage.DATA.value).observe(0.002)
    text = (await get(health, "/metrics")).text
    name = "perimeter_stage_seconds_bucket"

    smallest = sample(text, name, {"stage": "data", "le": "0.0005"})
    largest = sample(text, name, {"stage": "data", "le": "30.0"})

    assert smallest is not None and largest is not None
    assert largest >= smallest + 1


async def test_the_delivery_queue_depth_gauge_reports_what_was_set(
    health: Health,
) -> None:
    DELIVERY_QUEUE_DEPTH.set(7)

    text = (await get(health, "/metrics")).text

    assert sample(text, "perimeter_delivery_queue_depth", {}) == 7.0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"hello\r\n\r\n", b"400"),
        (b"GET /healthz?probe=1 HTTP/1.0\r\n\r\n", b"200"),
    ],
    ids=["unknown-path", "post", "not-http", "query-string"],
)
async def test_the_server_answers_each_request_with_its_status_and_closes(
    health: Health, request_bytes: bytes, status: bytes
) -> None:
    answer = await raw_exchange(health.port, request_bytes)

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == status
    assert b"Connection: close" in rest


async def test_a_client_that_sends_nothing_does_not_hold_the_server(
    health: Health,
) -> None:
    _, idle = await asyncio.open_connection("127.0.0.1", health.port)

    response = await get(health, "/healthz")

    assert response.status_code == 200
    idle.close()
    await idle.wait_closed()
