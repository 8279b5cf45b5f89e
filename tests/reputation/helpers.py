"""Test doubles at the network edge for the reputation checks: an SMTP
server that answers RCPT as told, and a clock moved by hand."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Asked:
    """One RCPT as the server saw it."""

    helo: str | None
    mail_from: str | None
    rcpt_to: str


@dataclass
class RcptServer:
    """An aiosmtpd server that answers RCPT TO from `replies` (address to
    reply line), `default` for any other address, and MAIL with `mail_reply`."""

    replies: dict[str, str] = field(default_factory=dict)
    default: str = "250 2.1.5 Ok"
    mail_reply: str = "250 2.1.0 Ok"
    asked: list[Asked] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="route.test"), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        envelope.mail_from = address
        return self.mail_reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.asked.append(Asked(session.host_name, envelope.mail_from, address))
        return self.replies.get(address, self.default)


class Clock:
    """A clock the test moves by hand, for the caches' TTLs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
