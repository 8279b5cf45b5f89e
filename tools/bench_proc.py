"""Processes for the benchmark: CPU accounting from /proc and child
processes driven over a line protocol.

Every load generator, sink and bus client of the benchmark runs as a
process of its own, so that its CPU is counted apart from the product's.
A child speaks JSON lines on stdout: `{"ready": ...}` when it is set up
(it then waits for one line on stdin before it starts measuring), and
`{"result": ...}` with what it measured. It exits when its stdin closes, so
nothing outlives the benchmark, even when the benchmark is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (proc(5))."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    # Fields 14 and 15 (utime, stime); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / TICKS, total / TICKS


@dataclass
class CpuWindow:
    """CPU seconds each named process used between `start` and `stop`."""

    pids: Mapping[str, int]

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_cpu()

    def stop(self) -> dict[str, float]:
        used = {
            name: cpu_seconds(pid) - self._before[name]
            for name, pid in self.pids.items()
        }
        busy, total = machine_cpu()
        self.machine_seconds = busy - self._machine[0]
        self.machine_busy = self.machine_seconds / max(total - self._machine[1], 1e-9)
        return used


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


class ChildError(RuntimeError):
    """A benchmark child process failed or did not answer in time."""


class Child:
    """A benchmark process started with `python -m module args...`."""

    def __init__(self, module: str, args: Iterable[str], log: IO[bytes]) -> None:
        self.module = module
        self.args = list(args)
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, within: float = 30.0) -> dict[str, Any]:
        """Start the process and wait for its first `ready` line."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
        )
        self.ready = await self.expect("ready", within)
        return self.ready

    async def expect(self, key: str, within: float) -> dict[str, Any]:
        """The next line that carries `key`; other lines are skipped."""
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    code = await self.process.wait()
                    raise ChildError(f"{self.module} exited ({code})")
                message = json.loads(line)
                if key in message:
                    return dict(message[key])

    async def send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def ask(self, command: str, key: str, within: float) -> dict[str, Any]:
        await self.send(command)
        return await self.expect(key, within)

    async def stop(self) -> None:
        """Close its stdin, then signal it if it does not leave."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                await asyncio.wait_for(process.wait(), 5.0)
                return
            except TimeoutError:
                process.send_signal(sig)
        await process.wait()


# The child's side of the protocol ------------------------------------------


def say(key: str, value: Mapping[str, Any]) -> None:
    """Write one protocol line to the parent."""
    sys.stdout.write(json.dumps({key: value}) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    """The parent's commands, readable without blocking the event loop."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader
