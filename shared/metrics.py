"""What every service tells Prometheus, and the small HTTP server that says it.

Each service serves `GET /healthz` and `GET /metrics` on
`PERIMETER_METRICS_LISTEN` (admin serves both on its API port instead). The
metrics live in prometheus-client's default registry, so `/metrics` also
carries the process and platform collectors.

Who counts what, so that a sum over every pod counts each event once:

| metric                             | counted by                           |
|------------------------------------|--------------------------------------|
| `perimeter_rule_rejects_total`     | the service that ran the rule        |
| `perimeter_rule_would_reject_total`| the same, for rules in monitor mode  |
| `perimeter_rule_errors_total`      | the same, when the rule could not run|
| `perimeter_stage_seconds`          | ingress; and the worker that answered|
| `perimeter_messages_total`         | ingress, once per transaction        |
| `perimeter_dns_errors_total`       | reputation and content               |
| `perimeter_clamd_errors_total`     | content                              |
| `perimeter_delivery_queue_depth`   | ingress's delivery worker            |

The health server reads only the request line and the headers after it; it
answers one request per connection and closes it, which is all a kubelet
probe or a Prometheus scrape needs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from contextlib import suppress
from http import HTTPStatus

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from shared.rules import Rule, Stage
from shared.settings import split_hostport

log = logging.getLogger(__name__)

# From a cached list lookup (under a millisecond) to a clamd scan of a large
# message or a slow callout (tens of seconds).
STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

RULE_REJECTS = Counter(
    "perimeter_rule_rejects_total",
    "Transactions a rule rejected, by rule and stage.",
    ["rule", "stage"],
)
RULE_WOULD_REJECT = Counter(
    "perimeter_rule_would_reject_total",
    "Rejections a rule in monitor mode would have made.",
    ["rule"],
)
RULE_ERRORS = Counter(
    "perimeter_rule_errors_total",
    "Checks that could not finish: a timeout or a dependency that is down.",
    ["rule"],
)
STAGE_SECONDS = Histogram(
    "perimeter_stage_seconds",
    "Time to reach a verdict at each SMTP stage.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
DNS_ERRORS = Counter(
    "perimeter_dns_errors_total",
    "DNS lookups that failed, by kind (timeout, servfail, refused, other).",
    ["kind"],
)
CLAMD_ERRORS = Counter(
    "perimeter_clamd_errors_total",
    "Scans clamd did not answer: unreachable, timed out or an error reply.",
)
DELIVERY_QUEUE_DEPTH = Gauge(
    "perimeter_delivery_queue_depth",
    "Accepted messages stored and waiting for delivery.",
)
MESSAGES = Counter(
    "perimeter_messages_total",
    "SMTP transactions by outcome (accepted, rejected, tempfail, aborted).",
    ["outcome"],
)

_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 100


def _start_rule_series() -> None:
    """Export every rule's series at zero, so `rate()` works from the start."""
    for rule in Rule:
        RULE_WOULD_REJECT.labels(rule=rule.value)
        RULE_ERRORS.labels(rule=rule.value)
    for stage in Stage:
        STAGE_SECONDS.labels(stage=stage.value)


_start_rule_series()


async def serve_health(listen: str, ready: Callable[[], bool]) -> asyncio.Server:
    """Serve `/healthz` and `/metrics` on `listen` (`host:port`, port 0 picks
    one); `/healthz` is 200 only while `ready()` is true."""
    host, port = split_hostport(listen, 9100)
    handler = functools.partial(_handle, ready=ready)
    server = await asyncio.start_server(handler, host, port)

    log.info("health and metrics on %s", _bound(server))
    return server


def _bound(server: asyncio.Server) -> str:
    """The `host:port` the server listens on, after port 0 is resolved."""
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ready: Callable[[], bool],
) -> None:
    """Answer one request and close the connection."""
    try:
        request_line = await asyncio.wait_for(_read_head(reader), _READ_TIMEOUT)
        status, content_type, body = _answer(request_line, ready)
        writer.write(_response(status, content_type, body))
        await writer.drain()
    except (TimeoutError, ConnectionError, ValueError) as exc:
        log.debug("health request dropped: %r", exc)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> str:
    """Read the request line, then skip the headers up to the blank line.

    The headers are read, not ignored: closing a socket with unread input
    makes the kernel send a reset, which can reach the client before the
    answer does.
    """
    request_line = await reader.readline()
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
    return request_line.decode("latin-1")


def _answer(
    request_line: str, ready: Callable[[], bool]
) -> tuple[HTTPStatus, str, bytes]:
    """Route the request line to a status, a content type and a body."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return HTTPStatus.BAD_REQUEST, "text/plain", b"bad request"
    method, target, _ = parts
    path = target.split("?", 1)[0]

    if method != "GET":
        return HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET only"
    if path == "/healthz":
        return _health(ready)
    if path == "/metrics":
        return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest()
    return HTTPStatus.NOT_FOUND, "text/plain", b"not found"


def _health(ready: Callable[[], bool]) -> tuple[HTTPStatus, str, bytes]:
    """200 while the service is ready, 503 while it is not."""
    try:
        is_ready = ready()
    except Exception:
        log.exception("readiness check raised; answering not ready")
        is_ready = False

    if is_ready:
        return HTTPStatus.OK, "text/plain", b"ok"
    return HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"not ready"


def _response(status: HTTPStatus, content_type: str, body: bytes) -> bytes:
    """An HTTP/1.1 response that closes the connection after the body."""
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body
