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
run, per message; the machine's busy share comes from /proc/stat, and what
other processes used in the same window is printed beside ours. The
loopback DNS server runs in this process (tools/bench_setup.py), so its
CPU is the `bench + DNS` row. Each load is preceded by `--warmup`
unmeasured messages. `--profile ingress,reputation` samples those services
with py-spy during the stack run (tools/bench_profile.py). Every process
and temporary directory is removed at the end, on error and on Ctrl-C.

    python -m tools.bench [--all] [--messages N] [--concurrency N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.support.stack import Product, product
from tools import bench_setup as setup
from tools.bench_proc import Child, ChildError, CpuWindow, cpu_seconds
from tools.bench_profile import Profile, Profiler
from tools.bench_report import (
    Requests,
    Run,
    errors_text,
    print_bus,
    print_content,
    print_header,
    print_profiles,
    print_rcpt,
    print_spine,
    progress,
)

SETTLE = 1.0  # SPEC §1: a change is live within 2 s; the product takes ms


# Options ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    messages: int
    concurrency: int
    per_connection: int
    size: int
    warmup: int
    rounds: int
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
    profile: tuple[str, ...]
    timeout: float


def parse_options(argv: Sequence[str] | None = None) -> Options:
    values = vars(_parser().parse_args(argv))
    every = values.pop("all")
    values["rcpt"] |= every
    values["content"] |= every
    values["profile"] = tuple(name for name in values["profile"].split(",") if name)
    return Options(**values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Measure Perimeter's throughput, latency and CPU.",
    )
    add = parser.add_argument
    add("--messages", type=_count, default=2000, help="messages per load run")
    add("--concurrency", type=_count, default=8, help="concurrent SMTP clients")
    add("--per-connection", type=_count, default=1, help="messages per connection")
    add("--size", type=_count, default=2048, help="message size in bytes")
    add("--warmup", type=int, default=200, help="messages before measuring")
    add("--rounds", type=_count, default=3, help="stack and bare runs, alternated")
    add("--skip-bare", action="store_true", help="no bare aiosmtpd run")
    add("--skip-bus", action="store_true", help="no bus round trip")
    add("--reputation-replicas", type=_count, default=1)
    add("--content-replicas", type=_count, default=1)
    add("--bus-requests", type=_count, default=5000)
    add("--rcpt", action="store_true", help="RCPT cost, DNS cold and warm")
    add("--rcpt-clients", type=_count, default=500, help="distinct clients")
    add("--content", action="store_true", help="content replicas, 30 KB DKIM")
    add("--content-messages", type=_count, default=1000)
    add("--spine-rules", action="store_true", help="only the spine's 3 rules")
    add("--profile", default="", help="services to sample with py-spy: a,b")
    add("--timeout", type=float, default=600.0, help="bound of one load run, s")
    add("--all", action="store_true", help="every section")
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


# One measured load -----------------------------------------------------


class Lab:
    """Everything the benchmark starts, and its orderly stop."""

    def __init__(self, options: Options, exits: AsyncExitStack) -> None:
        self.options = options
        self.exits = exits
        self.workdir = Path(tempfile.mkdtemp(prefix="perimeter-bench-"))
        exits.callback(shutil.rmtree, self.workdir, True)
        self.log: IO[bytes] = open(self.workdir / "children.log", "wb")
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

    def replicas(self, service: str) -> int:
        assert self.running.stack is not None
        return len(self.running.stack.services.get(service, []))

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
        self.check_alive()
        return run

    def check_alive(self) -> None:
        """Fail loudly when a process of the stack died during a run."""
        running = self.running
        assert running.stack is not None and running.nats.process is not None
        processes = [("nats-server", running.nats.process)]
        for name, group in running.stack.services.items():
            processes += [(name, process) for process in group]
        for name, process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}) in a run")

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
            progress(f"warmup errors: {errors_text(run)}")
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
    plan = lab.plan(lab.smtp_port, options.messages)
    # The stack and the bare sink take turns: a machine whose speed drifts
    # (a shared VM) then moves both, and the medians are compared.
    stacks: list[Run] = []
    bares: list[Run] = []
    profiles: list[Profile] = []
    for turn in range(options.rounds):
        progress(f"stack: {options.messages} messages ({turn + 1}/{options.rounds})")
        profiler = await _profiler(lab) if turn == 0 else None
        stacks.append(await lab.measure("stack", plan, lab.stack_pids(), lab.route))
        profiles = await profiler.stop() if profiler else profiles
        if not options.skip_bare:
            bares.append(await _bare(lab))
    print_spine(stacks, bares, _spine_notes(lab))
    print_profiles(profiles)


def _spine_notes(lab: Lab) -> list[str]:
    assert lab.running.stack is not None
    services = lab.running.stack.services
    replicas = ", ".join(f"{name} x{len(group)}" for name, group in services.items())
    rules = "every rule the product has, in its default mode"
    if lab.options.spine_rules:
        rules = "only helo_ip, helo_required and relay"
    throttled = "raised so the load is never refused" if lab.unthrottled else "as is"
    return [
        f"stack: nats-server + {replicas}",
        f"rules: {rules}; rate_limit {throttled}",
        f"route: the fast sink; DNS: loopback, {len(lab.rbl_zones)} DNSBL zones",
    ]


async def _profiler(lab: Lab) -> Profiler | None:
    """py-spy on the services named by --profile, if any."""
    wanted = lab.options.profile
    if not wanted:
        return None
    pids = {
        name: pid
        for name, pid in lab.stack_pids().items()
        if name.partition("#")[0] in wanted
    }
    profiler = Profiler(lab.workdir, lab.log)
    lab.exits.push_async_callback(profiler.stop)
    await profiler.start(pids)
    return profiler


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
    print_rcpt(runs, questions)


async def content(lab: Lab) -> None:
    message = lab.workdir / "signed.eml"
    message.write_bytes(setup.signed_message(lab.dns))
    await lab.settings(spine_only=False)
    requester = await lab.child("tools.bench_bus", "request", lab.running.nats.url)
    smtp_runs, direct = [], []
    for extra in (0, 1):
        if extra:
            await _add_content_replica(lab)
        replicas = lab.replicas("content")
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
    deadline = time.monotonic() + bound
    last, quiet_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return


# Main ------------------------------------------------------------------


async def run(options: Options) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print_header(_load_words(options))
    async with AsyncExitStack() as exits:
        lab = Lab(options, exits)
        try:
            await _sections(lab)
        except (ChildError, TimeoutError, OSError, RuntimeError) as exc:
            _explain_failure(lab, exc)
            raise SystemExit(1) from exc


def _load_words(options: Options) -> str:
    return (
        f"{options.messages} messages of {options.size} bytes, "
        f"{options.concurrency} clients, {options.per_connection} message(s) "
        f"per connection, after {options.warmup} unmeasured"
    )


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
    # A shell without job control starts background commands with SIGINT
    # ignored; Ctrl-C must still stop the benchmark and what it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
