"""An SMTP callout: ask a server whether it would take mail for an address.

Sender verification asks the sender's MX, recipient verification asks the
route of a relay domain; both have the same short conversation, with a null
reverse-path so that no bounce can ever come of it (RFC 5321 §4.5.5):

    EHLO <our hostname>    (HELO if EHLO is refused)
    MAIL FROM:<>
    RCPT TO:<address>
    QUIT

Only the answer to RCPT decides (RFC 5321 §4.2.1): 2xx accepted, 5xx
rejected. A 4xx anywhere, or a 5xx before RCPT (the server will not talk to
us, or refuses the null sender) says nothing about the address: deferred. No
answer at all (refused, timed out, dropped) is unreachable, and the caller may
try another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

logger = logging.getLogger(__name__)

QUIT_TIMEOUT = 2.0


class ProbeOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Probe:
    """How a callout ended: `code` is the server's reply code when there was
    one, `detail` its text or the error, for logs and the decision record."""

    outcome: ProbeOutcome
    code: int | None = None
    detail: str = ""


async def probe(
    host: str, port: int, address: str, *, helo_name: str, budget: float
) -> Probe:
    """Ask `host:port` about `address`, all within `budget` seconds."""
    if any(char in address for char in "\r\n<>"):
        return Probe(ProbeOutcome.DEFERRED, None, "address cannot be sent")

    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=helo_name,
        timeout=budget,
        start_tls=False,
    )
    try:
        async with asyncio.timeout(budget):
            result = await _converse(client, address)
        await _quit(client)
    except aiosmtplib.SMTPResponseException as exc:
        result = Probe(ProbeOutcome.DEFERRED, exc.code, exc.message)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        result = Probe(ProbeOutcome.UNREACHABLE, None, str(exc) or type(exc).__name__)
    finally:
        client.close()

    logger.debug("callout %s:%s for %s: %s", host, port, address, result)
    return result


async def _converse(client: aiosmtplib.SMTP, address: str) -> Probe:
    await client.connect()
    await _greet(client)

    options = b""
    if not address.isascii():
        if not client.supports_extension("smtputf8"):
            return Probe(ProbeOutcome.DEFERRED, None, "server lacks SMTPUTF8")
        options = b" SMTPUTF8"  # RFC 6531 §3.4
    mail = await client.execute_command(b"MAIL", b"FROM:<>" + options)
    if mail.code != 250:
        return Probe(ProbeOutcome.DEFERRED, mail.code, mail.message)

    rcpt = await client.execute_command(b"RCPT", f"TO:<{address}>".encode())
    return Probe(_outcome(rcpt.code), rcpt.code, rcpt.message)


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO from a server that does not know EHLO (RFC 5321 §3.2)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _quit(client: aiosmtplib.SMTP) -> None:
    """Say goodbye; the answer is already in hand, so failures do not matter."""
    with contextlib.suppress(TimeoutError, aiosmtplib.SMTPException, OSError):
        async with asyncio.timeout(QUIT_TIMEOUT):
            await client.quit()


def _outcome(code: int) -> ProbeOutcome:
    if 200 <= code < 300:
        return ProbeOutcome.ACCEPTED
    if 500 <= code < 600:
        return ProbeOutcome.REJECTED
    return ProbeOutcome.DEFERRED


def address_key(address: str) -> str:
    """An address as a cache key: local parts may be case-sensitive (RFC 5321
    §2.4), domains are not."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"
