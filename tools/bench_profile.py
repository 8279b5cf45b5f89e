"""Where a service's CPU goes during a measured run, with py-spy.

`--profile ingress,reputation` samples those services of the stack with
`py-spy record` for the length of the stack run and prints, for each, the
functions whose own code was on CPU (self time) and the product's own functions
with everything they call (inclusive time). py-spy is not a dependency of
the product: `pip install py-spy` in the venv first.

Samples of a thread waiting for work (the event loop in epoll, an idle
worker of a thread pool) are left out: py-spy cannot always tell them from
work on this kind of virtual machine.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_worker (concurrent/futures/thread.py",
)
_LOCATION = re.compile(r" \((?P<file>[^():]+):\d+\)$")
_PREFIXES = re.compile(r"^.*/site-packages/|^.*/lib/python3\.\d+/|^/work/main/")
_PRODUCT = ("services/", "shared/")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """The samples of one process, folded by frame."""

    name: str
    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def add(self, frames: list[str], count: int) -> None:
        if frames[-1].startswith(_IDLE_LEAVES):
            return
        self.samples += count
        self.self_time[_short(frames[-1])] += count
        mine = {_short(f) for f in frames if _file(f).startswith(_PRODUCT)}
        for frame in mine:
            self.inclusive[frame] += count

    def report(self, top: int = 10) -> str:
        lines = [f"  {self.name}: {self.samples} samples on CPU"]
        lines.append("    self time by function:")
        lines += self._lines(self.self_time, top)
        lines.append("    the product's functions, inclusive:")
        lines += self._lines(self.inclusive, top)
        return "\n".join(lines)

    def _lines(self, counter: Counter[str], top: int) -> list[str]:
        share = max(self.samples, 1)
        return [
            f"      {100 * n / share:5.1f}%  {what}"
            for what, n in counter.most_common(top)
        ]


def _short(frame: str) -> str:
    """`function (file)` with the file relative to its package root."""
    match = _LOCATION.search(frame)
    if match is None:
        return frame
    where = _PREFIXES.sub("", match.group("file"))
    return f"{frame[: match.start()]} ({where})"


def _file(frame: str) -> str:
    match = _LOCATION.search(frame)
    return _PREFIXES.sub("", match.group("file")) if match else frame


def fold(name: str, path: Path) -> Profile:
    """Read py-spy's raw (collapsed stack) output."""
    profile = Profile(name)
    if not path.exists():
        return profile
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            profile.add(stack.split(";"), int(count))
    return profile


class Profiler:
    """py-spy on some processes from `start` until `stop`."""

    def __init__(self, folder: Path, log: IO[bytes]) -> None:
        self.folder = folder
        self.log = log
        self.running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, pids: dict[str, int]) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        for name, pid in pids.items():
            self.running[name] = await asyncio.create_subprocess_exec(
                binary,
                *("record", "--pid", str(pid), "--rate", "100", "--nonblocking"),
                *("--format", "raw", "--output", str(self._path(name))),
                stdout=self.log,
                stderr=self.log,
            )

    async def stop(self) -> list[Profile]:
        """End the recordings (py-spy writes its file on SIGINT)."""
        for process in self.running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in self.running.values():
            try:
                await asyncio.wait_for(process.wait(), 15.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        profiles = [fold(name, self._path(name)) for name in self.running]
        self.running.clear()
        return profiles

    def _path(self, name: str) -> Path:
        return self.folder / f"profile-{name}.txt"
