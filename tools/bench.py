"""`make bench`: what Perimeter costs, measured on this machine.

Sections (the default runs the first three; `--all` runs every one):

spine (issue 2)
    The whole local stack as `make run` starts it (nats-server with
    JetStream and every service as its own process, admin included) on
    free loopback ports, a relay domain routed to a fast sink. A load
    generator sends `--messages` messages of `--size` bytes from
    `--concurrency` clients, a new connection each (or `--per-connection`
    messages each). It reports messages/s and the p50/p99 latency from the
    connect to the 250 after DATA, per SMTP stage too, then waits until the
    sink has every accepted message and reports the end-to-end rate.
bare (issue 2)
    The same load against a bare aiosmtpd server that answers 250, in the
    same run, and the ratio stack/bare (target: at least 0.5).
bus (issue 2)
    NATS request/reply through the product's own bus layer against the
    stack's nats-server: `--bus-requests` requests of about 300 bytes of
    msgpack, one at a time and then 16 at a time (target: p50 under 1 ms).
rcpt (issue 3, `--rcpt`)
    The cost of the connect, HELO, MAIL and RCPT checks with every
    reputation rule that exists, each transaction from another client
    address (PROXY protocol from the trusted proxy address) with its own
    DNS records: a first pass with the DNS caches cold, a second with the
    same clients, senders and recipients, warm.
content (issue 4, `--content`)
    Throughput of a 30 KB message with a PDF attachment and a DKIM
    signature, with the configured content replicas and with one more;
    through SMTP, and straight to the content workers over the bus, where
    content is the bottleneck.

How: every process is separate, so each one's CPU can be told apart. The
load generator, the sinks and the bus clients are children of this
process (tools/bench_load.py, tools/bench_sink.py, tools/bench_bus.py). CPU
is user plus system time from /proc/PID/stat, read before and after each
run, per message; the machine's busy share comes from /proc/stat. The
loopback DNS server runs in this process (tools/bench_setup.py), so its
CPU is the `bench + DNS` row. Every process and temporary directory is
removed at the end, on error and on Ctrl-C.

    python -m tools.bench [--all] [--messages N] [--concurrency N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.stack import Product, product
from tools import bench_setup as setup
from tools.bench_proc import Child, ChildError, CpuWindow

SETTLE = 1.0  # SPEC §1: a change is live within 2 s; the product takes ms


# Options ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    messages: int
    concurrency: int
    per_connection: int
    size: int
    warmup: int
    skip_bare: bool
    skip_bus: bool
    reputation_replicas: int
    content_replicas: int
    bus_requests: int
    rcpt: bool
    rcpt_clients: int
    content: bool
    content_messages: int
    spine_rules: bool
    timeout: float


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Measure Perimeter's throughput, latency and CPU.",
    )
    add = parser.add_argument
    add("--messages", type=int, default=2000, help="messages per load run")
    add("--concurrency", type=int, default=8, help="concurrent SMTP clients")
    add("--per-connection", type=int, default=1, help="messages per connection")
    add("--size", type=int, default=2048, help="message size in bytes")
    add("--warmup", type=int, default=200, help="messages before measuring")
    add("--skip-bare", action="store_true", help="no bare aiosmtpd run")
    add("--skip-bus", action="store_true", help="no bus round trip")
    add("--reputation-replicas", type=int, default=1)
    add("--content-replicas", type=int, default=1)
    add("--bus-requests", type=int, default=5000)
    add("--rcpt", action="store_true", help="RCPT cost, DNS cold and warm")
    add("--rcpt-clients", type=int, default=500, help="distinct clients")
    add("--content", action="store_true", help="content scale-out section")
    add("--content-messages", type=int, default=1000)
    add("--spine-rules", action="store_true", help="only helo_ip, helo_required, relay")
    add("--all", action="store_true", help="every section")
    add("--timeout", type=float, default=600.0, help="bound of one load run, s")
    args = parser.parse_args(argv)
    every = bool(args.all)
    return Options(
        messages=args.messages,
        concurrency=args.concurrency,
        per_connection=args.per_connection,
        size=args.size,
        warmup=args.warmup,
        skip_bare=args.skip_bare,
        skip_bus=args.skip_bus,
        reputation_replicas=args.reputation_replicas,
        content_replicas=args.content_replicas,
        bus_requests=args.bus_requests,
        rcpt=args.rcpt or every,
        rcpt_clients=args.rcpt_clients,
        content=args.content or every,
        content_messages=args.content_messages,
        spine_rules=args.spine_rules,
        timeout=args.timeout,
    )


# One measured load -----------------------------------------------------


@dataclass
class Run:
    """One load run and what each process spent on it."""

    label: str
    result: dict[str, Any]
    cpu: dict[str, float]
    busy: float
    delivered: int = 0
    delivered_at: float = 0.0

    @property
    def sent(self) -> int:
        return int(self.result["sent"])

    @property
    def rate(self) -> float:
        return self.sent / max(float(self.result["seconds"]), 1e-9)

    @property
    def end_to_end_rate(self) -> float:
        seconds = self.delivered_at - float(self.result["started_at"])
        return self.delivered / max(seconds, 1e-9)

    def cpu_ms(self, name: str) -> float:
        return 1000.0 * self.cpu.get(name, 0.0) / max(self.sent, 1)


class Lab:
    """Everything the benchmark starts, and its orderly stop."""

    def __init__(self, options: Options, exits: AsyncExitStack) -> None:
        self.options = options
        self.exits = exits
        self.workdir = Path(tempfile.mkdtemp(prefix="perimeter-bench-"))
        exits.callback(shutil.rmtree, self.workdir, True)
        self.log: IO[bytes] = open(self.workdir / "children.log", "wb")  # noqa: SIM115
        exits.callback(self.log.close)
        self.dns = setup.CountingDns()
        self.product: Product | None = None

    async def child(self, module: str, *args: str) -> Child:
        """A child process, stopped when the benchmark ends."""
        child = Child(module, args, self.log)
        self.exits.push_async_callback(child.stop)
        await child.start()
        return child

    async def start(self) -> None:
        """DNS server, route, load generator, then the stack."""
        self.dns.start()
        self.exits.callback(self.dns.stop)
        setup.local_records(self.dns)
        self.route = await self.child("tools.bench_sink", "fast")
        self.route_port = int((await self.route.ask("count", "count", 5)) and 0)
        self.load = await self.child("tools.bench_load")
        await self._start_product()

    async def _start_product(self) -> None:
        replicas = {
            "reputation": self.options.reputation_replicas,
            "content": self.options.content_replicas,
        }
        self.product = product(dns_port=self.dns.port, replicas=replicas)
        self.exits.callback(_discard_product, self.product)
        self.product.start()
        self.admin = setup.Admin(self.product)
        self.exits.push_async_callback(self.admin.close)

    @property
    def running(self) -> Product:
        assert self.product is not None and self.product.stack is not None
        return self.product

    def stack_pids(self) -> dict[str, int]:
        running = self.running
        assert running.stack is not None and running.nats.process is not None
        pids = {"nats-server": running.nats.process.pid}
        for name, processes in running.stack.services.items():
            for index, process in enumerate(processes, 1):
                label = name if len(processes) == 1 else f"{name}#{index}"
                pids[label] = process.pid
        return pids

    def plan(self, port: int, messages: int, **fields: Any) -> dict[str, Any]:
        options = self.options
        return {
            "host": "127.0.0.1",
            "port": port,
            "messages": messages,
            "concurrency": options.concurrency,
            "per_connection": options.per_connection,
            "size": options.size,
            "helo": setup.HELO,
            "sender": setup.SENDER,
            "recipient": f"user@{setup.DOMAIN}",
            "timeout": options.timeout,
        } | fields

    async def measure(
        self,
        label: str,
        plan: dict[str, Any],
        pids: dict[str, int],
        sink: Child | None = None,
    ) -> Run:
        """Run the plan; with a sink, wait until it has what was accepted."""
        before = (await sink.ask("count", "count", 5))["messages"] if sink else 0
        window = CpuWindow(pids | {"load generator": self.load.pid})
        window.start()
        result = await self.load.ask(_json(plan), "result", plan["timeout"] + 30)
        run = Run(label, result, {}, 0.0)
        if sink is not None:
            await self._delivered(run, sink, before)
        run.cpu = window.stop()
        run.busy = window.machine_busy
        return run

    async def _delivered(self, run: Run, sink: Child, before: int) -> None:
        """Wait, bounded, until the sink has every accepted message."""
        deadline = time.monotonic() + 60.0 + run.sent * 0.05
        while True:
            count = await sink.ask("count", "count", 5)
            run.delivered = int(count["messages"]) - before
            run.delivered_at = float(count["last_at"])
            if run.delivered >= run.sent or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    async def warm(self, plan: dict[str, Any], sink: Child | None) -> None:
        """Run a plan unmeasured (JIT-free Python still has caches, pools
        and JetStream streams to fill)."""
        if plan["messages"] > 0:
            await self.measure("warmup", plan, {}, sink)


def _discard_product(running: Product) -> None:
    running.stop()
    running.nats.stop()
    shutil.rmtree(running.data_dir, ignore_errors=True)
    shutil.rmtree(running.nats.store_dir, ignore_errors=True)


def _json(plan: dict[str, Any]) -> str:
    import json

    return json.dumps(plan)
