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
import json
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
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    others: float = 0.0
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


@dataclass
class Requests:
    """One run of bus requests and what each process spent on it."""

    label: str
    result: dict[str, Any]
    cpu: dict[str, float]
    busy: float
    others: float

    @property
    def answered(self) -> int:
        return int(self.result["answered"])

    @property
    def rate(self) -> float:
        return self.answered / max(float(self.result["seconds"]), 1e-9)

    def cpu_ms(self, *prefixes: str) -> float:
        """CPU ms per answer of the processes whose names start so."""
        spent = sum(v for k, v in self.cpu.items() if k.startswith(prefixes))
        return 1000.0 * spent / max(self.answered, 1)


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
        """DNS server, route, load generator, then the stack, configured."""
        self.dns.start()
        self.exits.callback(self.dns.stop)
        setup.local_records(self.dns)
        self.route = await self.child("tools.bench_sink", "fast")
        self.load = await self.child("tools.bench_load")
        self._start_product()
        await self._configure()

    def _start_product(self) -> None:
        replicas = {
            "reputation": self.options.reputation_replicas,
            "content": self.options.content_replicas,
        }
        self.product = product(dns_port=self.dns.port, replicas=replicas)
        self.exits.callback(_discard_product, self.product)
        self.product.start()
        self.admin = setup.Admin(self.product)
        self.exits.push_async_callback(self.admin.close)

    async def _configure(self) -> None:
        """The relay domain to the fast sink, no rate limit in the way, and
        the DNSBL zones answered by the loopback DNS server."""
        await self.admin.relay_domain(setup.DOMAIN, self.route_address, "none")
        # rate_limit still counts every MAIL; it just never refuses one.
        limit = {"messages": 1_000_000, "period": "1h"}
        self.unthrottled = await self.admin.settings(rate_limit=limit)
        self.rbl_zones = await self.admin.rbl_zones()
        for zone in self.rbl_zones:
            self.dns.zone(zone, minimum=3600)
        await asyncio.sleep(SETTLE)

    @property
    def route_address(self) -> str:
        return f"127.0.0.1:{self.route.ready['port']}"

    @property
    def running(self) -> Product:
        assert self.product is not None and self.product.stack is not None
        return self.product

    @property
    def smtp_port(self) -> int:
        return self.running.smtp[1]

    def stack_pids(self) -> dict[str, int]:
        """The product's processes, and the route and DNS beside them."""
        running = self.running
        assert running.stack is not None and running.nats.process is not None
        pids = {"nats-server": running.nats.process.pid}
        for name, processes in running.stack.services.items():
            for index, process in enumerate(processes, 1):
                label = name if len(processes) == 1 else f"{name}#{index}"
                pids[label] = process.pid
        pids["route sink"] = self.route.pid
        pids["bench + DNS"] = os.getpid()
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
        timeout = float(plan["timeout"]) + 30.0
        run = Run(label, await self.load.ask(json.dumps(plan), "result", timeout))
        if sink is not None:
            await self._delivered(run, sink, int(before))
        run.cpu = window.stop()
        run.busy = window.machine_busy
        run.others = max(0.0, window.machine_seconds - sum(run.cpu.values()))
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

    async def warm(self, plan: dict[str, Any], sink: Child | None = None) -> Run:
        """Run a plan unmeasured: pools, caches and streams fill up."""
        run = await self.measure("warmup", plan, {}, sink)
        if run.result["errors"]:
            progress(f"warmup errors: {_errors(run)}")
        return run

    async def settings(self, spine_only: bool) -> None:
        """With --spine-rules, turn the rules of later issues off or on."""
        if self.options.spine_rules:
            await self.admin.modes(spine_only)
            await asyncio.sleep(SETTLE)


def _discard_product(running: Product) -> None:
    running.stop()
    running.nats.stop()
    shutil.rmtree(running.data_dir, ignore_errors=True)
    shutil.rmtree(running.nats.store_dir, ignore_errors=True)


# Sections --------------------------------------------------------------


async def spine_and_bare(lab: Lab) -> None:
    options = lab.options
    await lab.settings(spine_only=True)
    progress("warming the stack up")
    await lab.warm(lab.plan(lab.smtp_port, options.warmup), lab.route)
    progress(f"stack: {options.messages} messages")
    plan = lab.plan(lab.smtp_port, options.messages)
    runs = [await lab.measure("stack", plan, lab.stack_pids(), lab.route)]
    if not options.skip_bare:
        runs.append(await _bare(lab))
    print_spine(lab, runs)


async def _bare(lab: Lab) -> Run:
    bare = await lab.child("tools.bench_sink", "aiosmtpd")
    port = int(bare.ready["port"])
    progress("warming the bare aiosmtpd sink up")
    await lab.warm(lab.plan(port, lab.options.warmup))
    progress(f"bare aiosmtpd: {lab.options.messages} messages")
    plan = lab.plan(port, lab.options.messages)
    run = await lab.measure("bare aiosmtpd", plan, {"bare sink": bare.pid})
    await bare.stop()
    return run


async def bus(lab: Lab) -> None:
    url = lab.running.nats.url
    responder = await lab.child("tools.bench_bus", "serve", url)
    requester = await lab.child("tools.bench_bus", "request", url)
    pids = {
        "nats-server": lab.stack_pids()["nats-server"],
        "responder": responder.pid,
        "requester": requester.pid,
    }
    runs = []
    for concurrency in (1, 16):
        progress(f"bus round trip, {concurrency} at a time")
        warm = {"kind": "roundtrip", "requests": 500, "concurrency": concurrency}
        await requester.ask(json.dumps(warm), "result", 60)
        plan = warm | {"requests": lab.options.bus_requests}
        label = f"{concurrency} at a time"
        runs.append(await _requests(label, requester, plan, pids))
    await requester.stop()
    await responder.stop()
    print_bus(runs, int(requester.ready["size"]), int(responder.ready["size"]))


async def _requests(
    label: str, requester: Child, plan: dict[str, Any], pids: dict[str, int]
) -> Requests:
    """One measured plan of bus requests, and each process's CPU."""
    window = CpuWindow(pids | {"requester": requester.pid})
    window.start()
    result = await requester.ask(json.dumps(plan), "result", 330)
    cpu = window.stop()
    others = max(0.0, window.machine_seconds - sum(cpu.values()))
    return Requests(label, result, cpu, window.machine_busy, others)


async def rcpt(lab: Lab) -> None:
    options, clients = lab.options, lab.options.rcpt_clients
    setup.client_records(lab.dns, clients)
    await lab.admin.relay_domain(setup.RCPT_DOMAIN, lab.route_address, "callout")
    await lab.settings(spine_only=False)
    await asyncio.sleep(SETTLE)
    progress("warming the RCPT checks up from 127.0.0.1")
    warm = lab.plan(
        lab.smtp_port,
        min(options.warmup, 100),
        recipient=f"warm{{n}}@{setup.RCPT_DOMAIN}",
        distinct=100,
        stop_after="rcpt",
        per_connection=1,
    )
    await lab.warm(warm)
    plan = warm | {
        "messages": clients,
        "distinct": clients,
        "client_base": setup.CLIENT_BASE,
        "sender": f"bench@s{{n}}.senders.{setup.DOMAIN}",
        "recipient": f"r{{n}}@{setup.RCPT_DOMAIN}",
    }
    runs, questions = [], []
    for label in ("DNS cold", "DNS warm"):
        progress(f"RCPT, {label}: {clients} clients")
        asked = lab.dns.questions
        runs.append(await lab.measure(label, plan, lab.stack_pids()))
        questions.append(lab.dns.questions - asked)
    print_rcpt(lab, runs, questions)


async def content(lab: Lab) -> None:
    message = lab.workdir / "signed.eml"
    message.write_bytes(setup.signed_message(lab.dns))
    await lab.settings(spine_only=False)
    requester = await lab.child("tools.bench_bus", "request", lab.running.nats.url)
    smtp_runs, direct = [], []
    for extra in (0, 1):
        if extra:
            await _add_content_replica(lab)
        replicas = len(lab.running.stack.services["content"])  # type: ignore[union-attr]
        smtp_runs.append(await _content_smtp(lab, message, replicas))
        direct.append(await _content_direct(lab, requester, message, replicas))
    await requester.stop()
    print_content(smtp_runs, direct, message.stat().st_size)


async def _content_smtp(lab: Lab, message: Path, replicas: int) -> Run:
    count = lab.options.content_messages
    plan = lab.plan(lab.smtp_port, 50, message_file=str(message))
    await lab.warm(plan, lab.route)
    progress(f"content through SMTP, {replicas} replica(s): {count} messages")
    label = f"content x{replicas}"
    return await lab.measure(
        label, plan | {"messages": count}, lab.stack_pids(), lab.route
    )


async def _content_direct(
    lab: Lab, requester: Child, message: Path, replicas: int
) -> Requests:
    plan = {
        "kind": "content",
        "requests": 200,
        "concurrency": 16,
        "message_file": str(message),
        "sender": setup.SENDER,
        "recipient": f"user@{setup.DOMAIN}",
    }
    await requester.ask(json.dumps(plan), "result", 120)
    progress(f"content over the bus, {replicas} replica(s)")
    pids = {
        name: pid
        for name, pid in lab.stack_pids().items()
        if name == "nats-server" or name.startswith("content")
    }
    plan["requests"] = max(200, lab.options.content_messages * 2)
    return await _requests(f"content x{replicas}", requester, plan, pids)


async def _add_content_replica(lab: Lab) -> None:
    """One more content worker; ready once its start-up CPU settles."""
    assert lab.running.stack is not None
    process = lab.running.stack.start_service("content")
    await idle(process.pid)


async def idle(pid: int, bound: float = 30.0) -> None:
    """Wait until a process has used no CPU for a second (bounded)."""
    from tools.bench_proc import cpu_seconds

    deadline = time.monotonic() + bound
    last, quiet_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return


# Report ----------------------------------------------------------------


def progress(text: str) -> None:
    print(f"  ... {text}", file=sys.stderr, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first to the left, numbers to the right."""
    every = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in every) for i in range(len(header))]
    lines = []
    for row in every:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _errors(run: Run) -> str:
    errors = run.result["errors"]
    if not errors:
        return "none"
    return ", ".join(f"{what}: {count}" for what, count in errors.items())


def latency_table(runs: Sequence[Run], unit: str = "msgs/s") -> str:
    rows = [
        [
            run.label,
            str(run.sent),
            f"{run.rate:.1f}",
            ms(run.result["latency"]["p50"]),
            ms(run.result["latency"]["p99"]),
            _errors(run),
        ]
        for run in runs
    ]
    return table(["run", "done", unit, "p50 ms", "p99 ms", "errors"], rows)


def stage_table(runs: Sequence[Run]) -> str:
    stages = [s for s in ("connect", "ehlo", "mail", "rcpt", "data", "quit")]
    stages = [s for s in stages if any(s in run.result["stages"] for run in runs)]
    rows = []
    for run in runs:
        row = [run.label]
        for stage in stages:
            spread = run.result["stages"].get(stage)
            row.append(f"{ms(spread['p50'])}/{ms(spread['p99'])}" if spread else "-")
        rows.append(row)
    return table(["p50/p99 ms", *stages], rows)


def cpu_table(runs: Sequence[Run], unit: str = "msg") -> str:
    names: list[str] = []
    for run in runs:
        names += [name for name in run.cpu if name not in names]
    rows = [[name] + [_cell(run, name) for run in runs] for name in names]
    totals = [f"{1000 * sum(run.cpu.values()) / max(run.sent, 1):.2f}" for run in runs]
    rows.append(["total", *totals])
    others = [f"{1000 * run.others / max(run.sent, 1):.2f}" for run in runs]
    rows.append(["other processes", *others])
    rows.append(["machine busy", *[f"{100 * run.busy:.0f}%" for run in runs]])
    return table([f"CPU ms per {unit}", *[run.label for run in runs]], rows)


def _cell(run: Run, name: str) -> str:
    return f"{run.cpu_ms(name):.2f}" if name in run.cpu else "-"


def print_header(options: Options) -> None:
    print("Perimeter benchmark")
    print(f"  machine: {os.cpu_count()} CPUs, {_cpu_model()}, {_memory()}")
    print(f"  python {platform.python_version()}, {platform.platform()}")
    print(f"  load: {_load_words(options)}")


def _load_words(options: Options) -> str:
    return (
        f"{options.messages} messages of {options.size} bytes, "
        f"{options.concurrency} clients, {options.per_connection} message(s) "
        f"per connection, after {options.warmup} unmeasured"
    )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def _memory() -> str:
    first = Path("/proc/meminfo").read_text().splitlines()[0]
    return f"{int(first.split()[1]) // 1024} MB RAM"


def print_spine(lab: Lab, runs: Sequence[Run]) -> None:
    stack = runs[0]
    rules = (
        "only helo_ip, helo_required, relay"
        if lab.options.spine_rules
        else ("every rule the product has, in its default mode")
    )
    print("\n== Issue 2: the whole stack vs a bare aiosmtpd sink")
    print(f"  stack: nats-server + {_replicas(lab)}; rules: {rules}")
    print(f"  rate_limit raised for the load: {'yes' if lab.unthrottled else 'no'}")
    print(f"  route: fast sink; DNS: loopback server, {len(lab.rbl_zones)} DNSBL zones")
    print(latency_table(runs))
    print(
        f"  end to end: {stack.delivered} of {stack.sent} accepted delivered, "
        f"{stack.end_to_end_rate:.1f} msgs/s from the first connect to the "
        "last delivery"
    )
    if len(runs) > 1 and runs[1].rate:
        ratio = stack.rate / runs[1].rate
        verdict = "met" if ratio >= 0.5 else "NOT met"
        print(f"  ratio stack/bare: {ratio:.2f} (target >= 0.5: {verdict})")
    print(stage_table(runs))
    print(cpu_table(runs))


def _replicas(lab: Lab) -> str:
    stack = lab.running.stack
    assert stack is not None
    return ", ".join(f"{name} x{len(p)}" for name, p in stack.services.items())


def print_bus(runs: Sequence[Requests], request_size: int, reply_size: int) -> None:
    print("\n== Bus round trip: shared.bus request/serve on the stack's nats-server")
    print(f"  request {request_size} B, reply {reply_size} B of msgpack")
    names = list(runs[0].cpu)
    rows = [
        [
            run.label,
            str(run.answered),
            f"{run.rate:.0f}",
            ms(run.result["p50"]),
            ms(run.result["p99"]),
            *[f"{1000 * run.cpu_ms(name):.0f}" for name in names],
            f"{100 * run.busy:.0f}%",
        ]
        for run in runs
    ]
    header = ["", "answered", "req/s", "p50 ms", "p99 ms"]
    cpu = [f"{name} us" for name in names]
    print(table([*header, *cpu, "machine busy"], rows))
    p50 = float(runs[0].result["p50"])
    verdict = "met" if p50 < 0.001 else "NOT met"
    print(f"  target p50 < 1 ms (one at a time): {ms(p50)} ms, {verdict}")


def print_rcpt(lab: Lab, runs: Sequence[Run], questions: Sequence[int]) -> None:
    print("\n== Issue 3: connect, HELO, MAIL and RCPT with every reputation rule")
    print(
        f"  {runs[0].sent} transactions, each from its own client address "
        "(PROXY v1), sender domain and recipient; relay domain with "
        "verify: callout to the fast sink; transactions end after RCPT"
    )
    print(latency_table(runs, "tx/s"))
    print(stage_table(runs))
    for run, asked in zip(runs, questions, strict=True):
        per = asked / max(run.sent, 1)
        print(f"  {run.label}: {asked} DNS questions, {per:.1f} per transaction")
    print(cpu_table(runs, "transaction"))


def print_content(
    smtp_runs: Sequence[Run], direct: Sequence[Requests], size: int
) -> None:
    print("\n== Issue 4: content scan of a signed message with a PDF attachment")
    print(f"  message: {size} bytes, DKIM-signed (rsa-sha256, 2048 bits)")
    print("  through SMTP (the whole stack, delivered to the fast sink):")
    print(latency_table(smtp_runs))
    print(cpu_table(smtp_runs))
    if len(smtp_runs) == 2 and smtp_runs[0].rate:
        ratio = smtp_runs[1].rate / smtp_runs[0].rate
        print(f"  more replicas / fewer, through SMTP: {ratio:.2f}")
    print("  straight to the content workers over the bus, 16 at a time:")
    print(_direct_table(direct))
    if len(direct) == 2 and direct[0].rate:
        ratio = direct[1].rate / direct[0].rate
        verdict = "met" if ratio >= 1.7 else "NOT met"
        print(f"  more replicas / fewer, over the bus: {ratio:.2f}", end="")
        print(f" (target for 2/1 >= 1.7 when content is the bottleneck: {verdict})")


def _direct_table(runs: Sequence[Requests]) -> str:
    rows = [
        [
            run.label,
            str(run.answered),
            f"{run.rate:.1f}",
            ms(run.result["p50"]),
            ms(run.result["p99"]),
            f"{run.cpu_ms('content'):.2f}",
            f"{run.cpu_ms('nats-server'):.2f}",
            f"{run.cpu_ms('requester'):.2f}",
            f"{1000 * run.others / max(run.answered, 1):.2f}",
            f"{100 * run.busy:.0f}%",
            ", ".join(f"{k}: {v}" for k, v in run.result["outcomes"].items()),
        ]
        for run in runs
    ]
    header = ["", "verdicts", "per s", "p50 ms", "p99 ms"]
    cpu = ["content ms", "nats ms", "requester ms", "others ms", "busy"]
    return table([*header, *cpu, "outcomes"], rows)


# Main ------------------------------------------------------------------


async def run(options: Options) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print_header(options)
    async with AsyncExitStack() as exits:
        lab = Lab(options, exits)
        try:
            await _sections(lab)
        except (ChildError, TimeoutError, OSError, RuntimeError) as exc:
            _explain_failure(lab, exc)
            raise SystemExit(1) from exc


async def _sections(lab: Lab) -> None:
    progress("starting the DNS server, the route and the stack")
    await lab.start()
    await spine_and_bare(lab)
    if not lab.options.skip_bus:
        await bus(lab)
    if lab.options.rcpt:
        await rcpt(lab)
    if lab.options.content:
        await content(lab)


def _explain_failure(lab: Lab, exc: BaseException) -> None:
    print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    children = lab.workdir / "children.log"
    if children.exists():
        tail = children.read_text(errors="replace").splitlines()[-20:]
        print("children's log:", *tail, sep="\n  ", file=sys.stderr)
    if lab.product is not None and Path(lab.product.log_path).exists():
        print("stack log:", lab.product.log_tail(40), sep="\n", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        asyncio.run(run(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "\ninterrupted; everything the benchmark started is stopped",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
