"""A route: a real SMTP server that keeps what it receives.

It stands for the organisation's mail server behind the gateway, which is
outside the product, so the tests run aiosmtpd as it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    content: bytes


@dataclass
class Sink:
    port: int = 0
    messages: list[Delivered] = field(default_factory=list)
    rcpt_reply: str = "250 2.1.5 Ok"
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="route.test", data_size_limit=None),
            "127.0.0.1",
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def route(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt_reply

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
        self.messages.append(Delivered(sender, list(envelope.rcpt_tos), content))
        return "250 2.0.0 Ok"

    async def wait_for(self, recipient: str, timeout: float = 10.0) -> Delivered:
        """The first message for `recipient`, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if recipient in message.recipients:
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing for {recipient} arrived in {timeout}s")

    def count(self, recipient: str) -> int:
        return sum(recipient in m.recipients for m in self.messages)
