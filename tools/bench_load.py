"""The SMTP load generator of the benchmark, run as its own process.

A raw asyncio client (a protocol class, no SMTP library) so that the load
costs little CPU beside what it measures. `concurrency` clients share
`messages` messages; each connection says EHLO and then sends
`per_connection` transactions (MAIL, RCPT, DATA) before QUIT. With a
`client_base` address every connection comes from the PROXY source address
and begins with a PROXY v1 header naming another client.

Per message it measures the latency from the start of the transaction (the
connect for a connection's first message, MAIL for the others) to the 250
after DATA, or to the RCPT reply when `stop_after` is `rcpt`; per stage it
measures each command's round trip.

Protocol (see tools/bench_proc.py): prints `ready`, then for each JSON
`Plan` read on stdin runs it and prints `result`; exits at end of input.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from tools.bench_proc import percentile, say, stdin_lines

STAGES = ("connect", "ehlo", "mail", "rcpt", "data", "quit")


@dataclass
class Plan:
    """One run of the load, as the parent asks for it."""

    host: str
    port: int
    messages: int
    concurrency: int = 8
    per_connection: int = 1
    size: int = 2048
    message_file: str = ""
    helo: str = "client.bench.example"
    sender: str = "bench@sender.bench.example"
    recipient: str = "user@bench.example"
    distinct: int = 1
    client_base: str = ""
    proxy_source: str = "127.0.0.2"
    stop_after: str = "data"
    timeout: float = 300.0
    reply_timeout: float = 60.0

    def sender_of(self, n: int) -> str:
        return self.sender.format(n=n % self.distinct)

    def recipient_of(self, n: int) -> str:
        return self.recipient.format(n=n % self.distinct)

    def client_of(self, n: int) -> str:
        return str(ip_address(self.client_base) + n % self.distinct)


class SmtpFailure(Exception):
    """A reply the transaction did not expect, or a lost connection."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"{stage} {code}")
        self.stage = stage
        self.code = code


class ClientProtocol(asyncio.Protocol):
    """Reads whole SMTP replies (RFC 5321 §4.2.1) into a queue of codes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.codes: deque[int] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line = self.buffer[:end]
            del self.buffer[: end + 2]
            if line[3:4] != b"-":
                self.codes.append(int(line[:3]))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def reply(self, stage: str) -> int:
        while not self.codes:
            if self.lost:
                raise SmtpFailure(stage, 0)
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.codes.popleft()

    async def command(self, stage: str, line: bytes, expect: int) -> None:
        self.transport.write(line)
        code = await self.reply(stage)
        if code != expect:
            raise SmtpFailure(stage, code)


@dataclass
class Tally:
    """What the clients measured, in seconds."""

    latency: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(
        default_factory=lambda: {stage: [] for stage in STAGES}
    )
    errors: Counter[str] = field(default_factory=Counter)

    def timed(self, stage: str, since: float) -> float:
        now = time.monotonic()
        self.stages[stage].append(now - since)
        return now


class Load:
    """The clients of one plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tally = Tally()
        self.body = _content(plan)
        self.loop = asyncio.get_running_loop()

    def _chunks(self) -> Iterator[tuple[int, int]]:
        """(first message number, message count) for each connection."""
        step = self.plan.per_connection
        for first in range(0, self.plan.messages, step):
            yield first, min(step, self.plan.messages - first)

    async def run(self) -> dict[str, Any]:
        chunks = self._chunks()
        workers = [self._worker(chunks) for _ in range(self.plan.concurrency)]
        cpu, started = _cpu(), time.monotonic()
        timed_out = False
        try:
            async with asyncio.timeout(self.plan.timeout):
                await asyncio.gather(*workers)
        except TimeoutError:
            timed_out = True
        ended = time.monotonic()
        return self._summary(started, ended, _cpu() - cpu, timed_out)

    async def _worker(self, chunks: Iterator[tuple[int, int]]) -> None:
        for first, count in chunks:
            try:
                async with asyncio.timeout(self.plan.reply_timeout * (count + 2)):
                    await self._connection(first, count)
            except SmtpFailure as failure:
                self.tally.errors[str(failure)] += 1
            except (OSError, TimeoutError) as exc:
                self.tally.errors[f"connection {type(exc).__name__}"] += 1

    async def _connection(self, first: int, count: int) -> None:
        started = time.monotonic()
        client = await self._open(first)
        try:
            await client.command("connect", b"", 220)
            now = self.tally.timed("connect", started)
            line = f"EHLO {self.plan.helo}\r\n".encode()
            await client.command("ehlo", line, 250)
            self.tally.timed("ehlo", now)
            last = first + count - 1
            for n in range(first, last + 1):
                await self._transaction(client, n, started, more=n < last)
                started = time.monotonic()
            now = time.monotonic()
            await client.command("quit", b"QUIT\r\n", 221)
            self.tally.timed("quit", now)
        finally:
            client.transport.close()

    async def _open(self, n: int) -> ClientProtocol:
        plan = self.plan
        local = (plan.proxy_source, 0) if plan.client_base else None
        _, client = await self.loop.create_connection(
            ClientProtocol, plan.host, plan.port, local_addr=local
        )
        if plan.client_base:
            client.transport.write(_proxy_header(plan.client_of(n), plan.port))
        return client

    async def _transaction(
        self, client: ClientProtocol, n: int, began: float, more: bool
    ) -> None:
        """One MAIL transaction; RSET after it when another one follows and
        this one did not end with DATA."""
        plan, tally = self.plan, self.tally
        complete = False
        try:
            now = time.monotonic()
            line = f"MAIL FROM:<{plan.sender_of(n)}>\r\n".encode()
            await client.command("mail", line, 250)
            now = tally.timed("mail", now)
            line = f"RCPT TO:<{plan.recipient_of(n)}>\r\n".encode()
            await client.command("rcpt", line, 250)
            now = tally.timed("rcpt", now)
            if plan.stop_after != "rcpt":
                await client.command("data", b"DATA\r\n", 354)
                await client.command("data", self.body, 250)
                tally.timed("data", now)
                complete = True
            tally.latency.append(time.monotonic() - began)
        except SmtpFailure as failure:
            if client.lost:
                raise
            tally.errors[str(failure)] += 1
        if more and not complete:
            await client.command("rset", b"RSET\r\n", 250)

    def _summary(
        self, started: float, ended: float, cpu: float, timed_out: bool
    ) -> dict[str, Any]:
        tally = self.tally
        stages = {
            name: _spread(values) for name, values in tally.stages.items() if values
        }
        return {
            "sent": len(tally.latency),
            "errors": dict(tally.errors),
            "started_at": started,
            "ended_at": ended,
            "seconds": ended - started,
            "cpu": cpu,
            "latency": _spread(tally.latency),
            "stages": stages,
            "timed_out": timed_out,
        }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "mean": sum(values) / len(values) if values else 0.0,
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _proxy_header(client: str, port: int) -> bytes:
    """A PROXY protocol v1 line naming `client` as the peer."""
    family = "TCP6" if ip_address(client).version == 6 else "TCP4"
    local = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {client} {local} 40000 {port}\r\n".encode()


def _content(plan: Plan) -> bytes:
    """The message as DATA sends it: dot-stuffed, ending with CRLF.CRLF."""
    if plan.message_file:
        with open(plan.message_file, "rb") as source:
            raw = source.read()
    else:
        raw = synthetic_message(plan.size)
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    body = b"\r\n".join(stuffed).rstrip(b"\r\n")
    return body + b"\r\n.\r\n"


def synthetic_message(size: int) -> bytes:
    """A plain text message of about `size` bytes."""
    head = (
        b"From: Bench <bench@sender.bench.example>\r\n"
        b"To: <user@bench.example>\r\n"
        b"Subject: Benchmark message\r\n"
        b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        b"Message-ID: <bench@client.bench.example>\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    count = max(1, (size - len(head)) // len(line))
    return head + line * count


async def serve() -> None:
    say("ready", {"pid": os.getpid()})
    commands = await stdin_lines()
    while line := await commands.readline():
        plan = Plan(**json.loads(line))
        say("result", await Load(plan).run())


def main() -> None:
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
