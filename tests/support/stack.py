"""The whole product on free loopback ports, as `make run` starts it:
nats-server and every service as its own process."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.support.natsserver import NatsServer, free_port
from tools.stack import Stack, wait_listening

TOKEN = "test-admin-token"
HOSTNAME = "gateway.test"
# Connections from this address must begin with a PROXY header; the tests
# use it to speak for any client address, IPv4 or IPv6.
PROXY_SOURCE = "127.0.0.2"


@dataclass
class Product:
    """A running stack and where to reach it."""

    nats: NatsServer
    data_dir: str
    env: dict[str, str]
    replicas: dict[str, int] = field(default_factory=dict)
    stack: Stack | None = None
    log_path: str = ""
    _log: BinaryIO | None = None

    @property
    def smtp(self) -> tuple[str, int]:
        host, _, port = self.env["PERIMETER_SMTP_LISTEN"].rpartition(":")
        return host, int(port)

    @property
    def admin_url(self) -> str:
        return "http://" + self.env["PERIMETER_ADMIN_LISTEN"]

    def start(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.stack = Stack(dict(self.env), self.replicas, output=self._log.fileno())
        self.stack.start()
        if self.replicas.get("ingress", 1):
            wait_listening(*self.smtp, timeout=60)
        host, port = self.env["PERIMETER_ADMIN_LISTEN"].split(":")
        if self.replicas.get("admin", 1):
            wait_listening(host, int(port), timeout=60)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    def restart(self) -> None:
        """Stop every process, nats-server included, and start again on the
        same data."""
        self.stop()
        self.nats.restart()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        text = Path(self.log_path).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def product(
    dns_port: int | None = None,
    replicas: dict[str, int] | None = None,
    **overrides: str,
) -> Product:
    """A stack ready to `start()`, with its own nats-server running."""
    nats = NatsServer()
    nats.start()
    data_dir = tempfile.mkdtemp(prefix="perimeter-stack-")
    env = dict(os.environ)
    env.update(
        PERIMETER_NATS_URL=nats.url,
        PERIMETER_SMTP_LISTEN=f"127.0.0.1:{free_port()}",
        PERIMETER_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        PERIMETER_ADMIN_TOKEN=TOKEN,
        PERIMETER_HOSTNAME=HOSTNAME,
        PERIMETER_DATA_DIR=data_dir,
        PERIMETER_TRUSTED_PROXIES=f"{PROXY_SOURCE}/32",
        PERIMETER_DELIVERY_RETRY_BASE="0.5",
        PERIMETER_DELIVERY_RETRY_MAX="2",
        PERIMETER_STAGE_BUDGET="5",
    )
    if dns_port is not None:
        env["PERIMETER_DNS_NAMESERVERS"] = f"127.0.0.1:{dns_port}"
    env.update(overrides)
    return Product(
        nats, data_dir, env, replicas or {}, log_path=f"{data_dir}/stack.log"
    )
