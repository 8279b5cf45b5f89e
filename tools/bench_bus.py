"""Bus clients of the benchmark, each run as its own process.

`serve`: a responder in a queue group on `bench.roundtrip`, through the
product's own NATS layer (`shared.bus.Bus.serve`, a task per request as
the services have). It unpacks each msgpack request and answers a msgpack
verdict of about 300 bytes.

`request`: the requester. For each JSON plan read on stdin it sends
`requests` requests, `concurrency` at a time, through `Bus.request`, and
prints the latency spread, the rate and its own CPU. A plan of kind
`roundtrip` asks the responder above; a plan of kind `content` sends the
product's own end-of-DATA stage request with a message from a file to the
content service's subject, which measures the content workers without the
SMTP ingress in front of them.

    python -m tools.bench_bus serve|request NATS_URL
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from nats.aio.msg import Msg

from shared.bus import Bus, stage_subject
from shared.errors import BusError, VerdictTimeout
from shared.messages import Session, StageRequest, Verdict
from shared.rules import Stage
from tools.bench_proc import percentile, say, stdin_lines

SUBJECT = "bench.roundtrip"

Ask = Callable[[], Awaitable[str]]


def sample_request() -> bytes:
    """About 300 bytes of msgpack, shaped like a RCPT stage request."""
    return msgpack.packb(
        {
            "v": 1,
            "stage": "rcpt",
            "session": ["0F3A9C2B7D1E4F60", "198.51.100.23", "mail.example.org"],
            "sender": "newsletter-bounces+user=example.com@lists.example.org",
            "recipients": ["alice@example.com", "bob@example.com"],
            "recipient": "carol.longname@example.com",
            "auth": None,
            "pad": "x" * 96,
        }
    )


def sample_verdict() -> bytes:
    """About 300 bytes of msgpack, shaped like a verdict with its checks."""
    checks = [[rule, "pass", 0.042, ""] for rule in ("relay", "rbl", "rdns", "spf")]
    return msgpack.packb(
        {
            "v": 1,
            "outcome": "pass",
            "rule": None,
            "values": {},
            "checks": checks,
            "results": {"spf": "pass smtp.mailfrom=lists.example.org"},
            "pad": "y" * 120,
        }
    )


async def responder(url: str) -> None:
    bus = await Bus.connect(url, "bench-responder")
    answer = sample_verdict()

    async def respond(msg: Msg) -> None:
        msgpack.unpackb(msg.data)
        await msg.respond(answer)

    await bus.serve(SUBJECT, "bench", respond)
    say("ready", {"pid": os.getpid(), "size": len(answer)})
    commands = await stdin_lines()
    while await commands.readline():
        pass
    await bus.close()


async def requester(url: str) -> None:
    bus = await Bus.connect(url, "bench-requester")
    say("ready", {"pid": os.getpid(), "size": len(sample_request())})
    commands = await stdin_lines()
    while line := await commands.readline():
        plan = json.loads(line)
        say("result", await measure(_asker(bus, plan), plan))
    await bus.close()


def _asker(bus: Bus, plan: dict[str, Any]) -> Ask:
    if plan["kind"] == "content":
        return _content_asker(bus, plan)
    payload = sample_request()

    async def ask() -> str:
        await bus.request(SUBJECT, payload, plan.get("budget", 5.0))
        return "pass"

    return ask


def _content_asker(bus: Bus, plan: dict[str, Any]) -> Ask:
    """The end-of-DATA request the ingress sends, with the plan's message."""
    with open(plan["message_file"], "rb") as source:
        body = source.read()
    session = Session("BENCHCONTENT0000", "127.0.0.1", "client.bench.example")
    request = StageRequest(
        Stage.DATA, session, plan["sender"], [plan["recipient"]], body=body
    ).encode()
    subject = stage_subject(Stage.DATA)

    async def ask() -> str:
        reply = await bus.request(subject, request, plan.get("budget", 30.0))
        verdict = Verdict.decode(reply)
        return str(verdict.rule or verdict.outcome)

    return ask


async def measure(ask: Ask, plan: dict[str, Any]) -> dict[str, Any]:
    """`requests` calls of `ask`, `concurrency` at a time."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    remaining = iter(range(plan["requests"]))

    async def worker() -> None:
        for _ in remaining:
            began = time.monotonic()
            try:
                outcomes[await ask()] += 1
            except (VerdictTimeout, BusError, ValueError) as exc:
                outcomes[type(exc).__name__] += 1
                continue
            latencies.append(time.monotonic() - began)

    cpu, started = _cpu(), time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(plan.get("timeout", 300.0)):
            await asyncio.gather(*(worker() for _ in range(plan["concurrency"])))
    except TimeoutError:
        timed_out = True
    seconds = time.monotonic() - started
    return {
        "timed_out": timed_out,
        "answered": len(latencies),
        "outcomes": dict(outcomes),
        "seconds": seconds,
        "cpu": _cpu() - cpu,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("serve", "request"):
        raise SystemExit("usage: python -m tools.bench_bus serve|request NATS_URL")
    run = responder if sys.argv[1] == "serve" else requester
    try:
        asyncio.run(run(sys.argv[2]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
