"""The benchmark's results and how they are printed.

`Run` is one SMTP load with the CPU each process spent on it, `Requests`
one series of bus requests. Figures are per message (or per request): CPU
in milliseconds, latency as p50 and p99 in milliseconds. "other processes"
is what the rest of the machine used in the same window: on a shared
machine it says how far to trust the run.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench_load import STAGES
from tools.bench_profile import Profile


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


def errors_text(run: Run) -> str:
    errors = [f"{what}: {count}" for what, count in run.result["errors"].items()]
    if run.result["timed_out"]:
        errors.append("the run hit --timeout")
    return ", ".join(errors) or "none"


def latency_table(runs: Sequence[Run], unit: str = "msgs/s") -> str:
    rows = [
        [
            run.label,
            str(run.sent),
            f"{run.rate:.1f}",
            ms(run.result["latency"]["p50"]),
            ms(run.result["latency"]["p99"]),
            errors_text(run),
        ]
        for run in runs
    ]
    return table(["run", "done", unit, "p50 ms", "p99 ms", "errors"], rows)


def stage_table(runs: Sequence[Run]) -> str:
    stages = [s for s in STAGES if any(s in run.result["stages"] for run in runs)]
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


def print_header(load: str) -> None:
    print("Perimeter benchmark")
    print(f"  machine: {os.cpu_count()} CPUs, {_cpu_model()}, {_memory()}")
    print(f"  python {platform.python_version()}, {platform.platform()}")
    print(f"  load: {load}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def _memory() -> str:
    first = Path("/proc/meminfo").read_text().splitlines()[0]
    return f"{int(first.split()[1]) // 1024} MB RAM"


def print_spine(
    stacks: Sequence[Run], bares: Sequence[Run], notes: Sequence[str]
) -> None:
    """The run of median rate of each, and every round's rates."""
    stack = _median(stacks)
    runs = [stack, _median(bares)] if bares else [stack]
    print("\n== Issue 2: the whole stack vs a bare aiosmtpd sink")
    for note in notes:
        print(f"  {note}")
    print(f"  {len(stacks)} rounds, stack and bare in turn; msgs/s:")
    print(f"    stack      {_rates(stacks)}")
    if bares:
        print(f"    bare sink  {_rates(bares)}")
    print("  the tables show the run of median rate of each")
    print(latency_table(runs))
    print(
        f"  end to end: {stack.delivered} of {stack.sent} accepted delivered, "
        f"{stack.end_to_end_rate:.1f} msgs/s from the first connect to the "
        "last delivery"
    )
    if len(runs) > 1 and runs[1].rate:
        ratio = stack.rate / runs[1].rate
        verdict = "met" if ratio >= 0.5 else "NOT met"
        print(f"  ratio of the medians: {ratio:.2f} (target >= 0.5: {verdict})")
    print(stage_table(runs))
    print(cpu_table(runs))


def _rates(runs: Sequence[Run]) -> str:
    return " ".join(f"{run.rate:.0f}" for run in runs)


def _median(runs: Sequence[Run]) -> Run:
    ordered = sorted(runs, key=lambda run: run.rate)
    return ordered[len(ordered) // 2]


def print_profiles(profiles: Sequence[Profile]) -> None:
    if not profiles:
        return
    print("\n== Where the CPU goes in the stack run (py-spy, 100 Hz)")
    print("  the figures above were measured with py-spy attached")
    for profile in profiles:
        print(profile.report())


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


def print_rcpt(runs: Sequence[Run], questions: Sequence[int]) -> None:
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
        print(_ceiling(direct[0], direct[1]))


def _ceiling(fewer: Requests, more: Requests) -> str:
    """The best ratio this machine allows: its cores spent on nothing but
    the CPU one verdict costs with more replicas, over the rate with fewer.
    Below 1.7 the cores, not the replicas, bound the figure."""
    cores = os.cpu_count() or 1
    others = 1000 * more.others / max(more.answered, 1)
    per_verdict = more.cpu_ms("content", "nats-server", "requester") + others
    best = cores * 1000 / per_verdict
    return (
        f"  this machine's ceiling for that ratio: {best / fewer.rate:.2f}"
        f" ({cores} cores / {per_verdict:.2f} ms of CPU per verdict"
        f" = {best:.0f} verdicts/s, over {fewer.rate:.0f}/s with fewer)"
    )


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
