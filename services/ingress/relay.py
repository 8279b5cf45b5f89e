"""SMTP connections to the routes, kept open between messages.

Opening a connection and saying EHLO costs two round trips and a good part
of a millisecond of CPU; a gateway relays thousands of messages a minute to
the same few routes, so connections are pooled per route and reused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import aiosmtplib

log = logging.getLogger(__name__)

_IDLE_SECONDS = 30.0
_PER_ROUTE = 16


@dataclass(slots=True)
class RecipientResult:
    code: int
    message: str

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class RouteError(Exception):
    """The route refused the whole message; `code` says how."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class _Stale(Exception):
    """A pooled connection the route had closed while it sat idle."""


class RelayPool:
    """Per-route pools of connected aiosmtplib clients."""

    def __init__(self, hostname: str, timeout: float = 60.0) -> None:
        self.hostname = hostname
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[tuple[float, aiosmtplib.SMTP]]] = (
            defaultdict(list)
        )
        self._limits: dict[tuple[str, int], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(_PER_ROUTE)
        )

    async def send(
        self, route: tuple[str, int], sender: str, recipients: list[str], message: bytes
    ) -> dict[str, RecipientResult]:
        """Relay one message; per-recipient results, or RouteError."""
        async with self._limits[route]:
            client = self._reuse(route)
            if client is not None:
                try:
                    return await self._send_on(
                        route, client, sender, recipients, message
                    )
                except _Stale:
                    log.debug("pooled connection to %s:%d had closed", *route)
            client = await self._connect(route)
            try:
                return await self._send_on(route, client, sender, recipients, message)
            except _Stale as exc:
                raise RouteError(451, "the route closed the connection") from exc

    async def _send_on(
        self,
        route: tuple[str, int],
        client: aiosmtplib.SMTP,
        sender: str,
        recipients: list[str],
        message: bytes,
    ) -> dict[str, RecipientResult]:
        try:
            results = await self._transaction(client, sender, recipients, message)
        except BaseException:
            client.close()
            raise
        self._idle[route].append((time.monotonic(), client))
        return results

    def _reuse(self, route: tuple[str, int]) -> aiosmtplib.SMTP | None:
        idle = self._idle[route]
        while idle:
            since, client = idle.pop()
            if client.is_connected and time.monotonic() - since < _IDLE_SECONDS:
                return client
            client.close()
        return None

    async def _connect(self, route: tuple[str, int]) -> aiosmtplib.SMTP:
        host, port = route
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=self.hostname,
            timeout=self.timeout,
            start_tls=None,
            validate_certs=False,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPException as exc:
            raise RouteError(451, f"cannot connect to {host}:{port}: {exc}") from exc
        return client

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipients: list[str],
        message: bytes,
    ) -> dict[str, RecipientResult]:
        try:
            await client.mail(sender)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _Stale from exc
        try:
            results = {rcpt: await _rcpt(client, rcpt) for rcpt in recipients}
            if any(r.delivered for r in results.values()):
                await client.data(message)
            else:
                await client.rset()
        except aiosmtplib.SMTPResponseException as exc:
            raise RouteError(exc.code, exc.message) from exc
        except aiosmtplib.SMTPException as exc:
            raise RouteError(451, str(exc)) from exc
        return results

    async def close(self) -> None:
        for idle in self._idle.values():
            for _, client in idle:
                client.close()
        self._idle.clear()


async def _rcpt(client: aiosmtplib.SMTP, recipient: str) -> RecipientResult:
    try:
        response = await client.rcpt(recipient)
    except aiosmtplib.SMTPRecipientRefused as exc:
        return RecipientResult(exc.code, exc.message)
    return RecipientResult(response.code, response.message)
