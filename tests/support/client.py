"""SMTP clients for the tests: stdlib smtplib, and a raw dialogue for what
smtplib will not send. Both can speak for another client address through
a PROXY header from the trusted proxy address."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from ipaddress import ip_address
from types import TracebackType

from tests.support.stack import PROXY_SOURCE, Product


def proxy_header(client: str, port: int) -> bytes:
    """A PROXY protocol v1 line naming `client` as the peer."""
    family = "TCP6" if ip_address(client).version == 6 else "TCP4"
    local = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {client} {local} 40000 {port}\r\n".encode()


class ProxiedSMTP(smtplib.SMTP):
    """smtplib, connecting through the trusted proxy address."""

    def __init__(self, client: str, host: str, port: int) -> None:
        self.client = client
        super().__init__(host, port, timeout=30)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, (PROXY_SOURCE, 0))
        sock.sendall(proxy_header(self.client, port))
        return sock


def connect(product: Product, client: str | None = None) -> smtplib.SMTP:
    host, port = product.smtp
    if client is None:
        return smtplib.SMTP(host, port, timeout=30)
    return ProxiedSMTP(client, host, port)


def message(
    sender: str, recipient: str, subject: str = "Hello", body: str = ""
) -> bytes:
    text = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((sender, recipient, subject)))}@client.test>\r\n"
        f"\r\n{body or 'Hello there.'}\r\n"
    )
    return text.encode()


def send(
    product: Product,
    sender: str,
    recipients: list[str],
    content: bytes,
    client: str | None = None,
    helo: str = "client.test",
) -> tuple[int, bytes]:
    """One transaction with smtplib; the reply to DATA."""
    with connect(product, client) as smtp:
        smtp.ehlo(helo)
        smtp.mail(sender)
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            if code >= 400:
                return code, text
        return smtp.data(content)


class Dialogue:
    """A raw SMTP conversation: send lines, read whole replies."""

    def __init__(self, product: Product, client: str | None = None) -> None:
        self.product = product
        self.client = client

    async def __aenter__(self) -> Dialogue:
        host, port = self.product.smtp
        local = (PROXY_SOURCE, 0) if self.client else None
        self.reader, self.writer = await asyncio.open_connection(
            host, port, local_addr=local
        )
        if self.client:
            self.writer.write(proxy_header(self.client, port))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.writer.close()

    async def send(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.writer.write(raw if raw.endswith(b"\n") else raw + b"\r\n")
        await self.writer.drain()

    async def reply(self, timeout: float = 15.0) -> str:
        """One whole reply, its lines joined with newlines."""
        lines = []
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    raise ConnectionError("the server closed the connection")
                lines.append(line.rstrip("\r\n"))
                if line[3:4] != "-":
                    return "\n".join(lines)

    async def command(self, line: str) -> str:
        await self.send(line)
        return await self.reply()

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server has closed the connection."""
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""
