"""Recipient verification by callout: does the route's server know the
recipient?

For a relay domain with `verify: callout`, the route (`host:port`) is asked
with a null sender and `RCPT TO` (`callout.probe`): a 2xx accepts, a 5xx
rejects, and a 4xx, a timeout or a refused connection leave it unavailable,
which the caller accepts. Accepts and rejects are cached per (route,
recipient), each with its own TTL, so a busy mailbox is not asked about on
every message.

The route host is connected to as written, resolved by the operating system
like the delivery to that route, not through the checks' nameservers.
Each check opens its own connection; reusing one per route (RSET between
recipients) would save a round trip per recipient and is not done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from services.reputation.callout import ProbeOutcome, address_key, probe
from shared.settings import split_hostport
from shared.ttlcache import TTLCache

logger = logging.getLogger(__name__)


class RecipientStatus(StrEnum):
    ACCEPTS = "accepts"
    REJECTS = "rejects"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The route's answer: `code` and `detail` are the server's reply (or
    the error), for the decision record, never for the client."""

    status: RecipientStatus
    code: int | None
    detail: str


_STATUS = {
    ProbeOutcome.ACCEPTED: RecipientStatus.ACCEPTS,
    ProbeOutcome.REJECTED: RecipientStatus.REJECTS,
}


class RecipientCallout:
    """Callouts to routes, with their answers cached."""

    def __init__(
        self,
        *,
        hostname: str,
        timeout: float = 8.0,
        cache_size: int = 10_000,
        accept_ttl: float = 3600,
        reject_ttl: float = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hostname = hostname
        self.timeout = timeout
        self.ttls = {
            RecipientStatus.ACCEPTS: accept_ttl,
            RecipientStatus.REJECTS: reject_ttl,
        }
        self.cache: TTLCache[tuple[str, str], RecipientResult] = TTLCache(
            cache_size, clock
        )

    async def verify(self, route: str, recipient: str) -> RecipientResult:
        """Ask `route` (`host:port`, port 25 when left out) about `recipient`."""
        key = (route.lower(), address_key(recipient))
        cached = self.cache.get(key)
        if cached is not None:
            return cached

        host, port = split_hostport(route, 25)
        answer = await probe(
            host, port, recipient, helo_name=self.hostname, budget=self.timeout
        )
        status = _STATUS.get(answer.outcome, RecipientStatus.UNAVAILABLE)
        result = RecipientResult(status, answer.code, answer.detail)

        logger.debug("recipient %s at %s: %s", recipient, route, result)
        self.cache.put(key, result, self.ttls.get(status, 0))
        return result
