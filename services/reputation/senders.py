"""Sender verification: could mail ever be returned to the envelope sender?

Domain mode asks the DNS only: the sender's domain must have an MX record,
or an address record that serves as its implicit MX (RFC 5321 §5.1), and must
not have a null MX (RFC 7505 §3: a single MX of preference 0 and exchange
`.`, which says the domain accepts no mail). Callout mode goes on to ask the
domain's mail hosts, best preference first, whether they take mail for the
sender (`callout.probe`, with a null sender).

Results are `ok`, `fail` (the sender cannot receive mail) and `unavailable`
(the DNS or every mail host could not say). `SenderCallout` caches `ok` and
`fail` per address; `unavailable` is asked again next time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from services.reputation.callout import Probe, ProbeOutcome, address_key, probe
from shared.dns import Resolver, Status, mail_hosts
from shared.ttlcache import TTLCache

logger = logging.getLogger(__name__)


class SenderStatus(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class SenderResult:
    """The outcome and why, for the decision record (never the client)."""

    status: SenderStatus
    reason: str


Hosts = tuple[str, ...]


async def check_domain(resolver: Resolver, sender: str) -> SenderResult:
    """Domain mode: the sender's domain can receive mail, by the DNS."""
    result, _ = await _mail_hosts(resolver, _domain(sender))
    return result


class SenderCallout:
    """Callout mode: the sender's mail hosts accept the sender as recipient."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        hostname: str,
        port: int = 25,
        timeout: float = 8.0,
        max_addresses: int = 3,
        cache_size: int = 10_000,
        ok_ttl: float = 3600,
        fail_ttl: float = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.hostname = hostname
        self.port = port
        self.timeout = timeout
        self.max_addresses = max_addresses
        self.ttls = {SenderStatus.OK: ok_ttl, SenderStatus.FAIL: fail_ttl}
        self.cache: TTLCache[str, SenderResult] = TTLCache(cache_size, clock)

    async def verify(self, sender: str) -> SenderResult:
        """Domain checks first, then the callout; `timeout` bounds it all."""
        key = address_key(sender)
        cached = self.cache.get(key)
        if cached is not None:
            return cached

        try:
            async with asyncio.timeout(self.timeout):
                result = await self._verify(sender)
        except TimeoutError:
            result = SenderResult(SenderStatus.UNAVAILABLE, "callout timed out")

        self.cache.put(key, result, self.ttls.get(result.status, 0))
        return result

    async def _verify(self, sender: str) -> SenderResult:
        result, hosts = await _mail_hosts(self.resolver, _domain(sender))
        if result.status is not SenderStatus.OK or not hosts:
            return result

        hosts = hosts[: self.max_addresses]
        answers = await asyncio.gather(*(self.resolver.a_aaaa(h) for h in hosts))
        addresses = tuple(address for answer in answers for address in answer.records)
        if addresses:
            return await self._ask(addresses[: self.max_addresses], sender)
        if any(answer.unavailable for answer in answers):
            return SenderResult(SenderStatus.UNAVAILABLE, "mail host lookup failed")
        return SenderResult(SenderStatus.FAIL, "mail hosts have no address")

    async def _ask(self, addresses: Hosts, sender: str) -> SenderResult:
        """The first mail host that answers decides (RFC 5321 §5.1)."""
        for address in addresses:
            answer = await probe(
                address,
                self.port,
                sender,
                helo_name=self.hostname,
                budget=self.timeout,
            )
            if answer.outcome is not ProbeOutcome.UNREACHABLE:
                return _from_probe(address, answer)
            logger.debug("callout to %s unreachable: %s", address, answer.detail)
        return SenderResult(SenderStatus.UNAVAILABLE, "no mail host answered")


async def _mail_hosts(
    resolver: Resolver, domain: str | None
) -> tuple[SenderResult, Hosts]:
    """The domain-mode result, and the hosts that take the domain's mail."""
    if domain is None:
        return SenderResult(SenderStatus.OK, "null sender"), ()
    if not domain or domain.startswith("["):
        return SenderResult(SenderStatus.FAIL, "no domain to verify"), ()
    found = await mail_hosts(resolver, domain)
    if found.status is Status.OK:
        return SenderResult(SenderStatus.OK, found.reason), found.hosts
    if found.status in (Status.TIMEOUT, Status.ERROR):
        return SenderResult(SenderStatus.UNAVAILABLE, found.reason), ()
    return SenderResult(SenderStatus.FAIL, found.reason), ()


def _from_probe(address: str, answer: Probe) -> SenderResult:
    reason = f"callout to {address}: {answer.code} {answer.detail}".strip()
    if answer.outcome is ProbeOutcome.ACCEPTED:
        return SenderResult(SenderStatus.OK, reason)
    if answer.outcome is ProbeOutcome.REJECTED:
        return SenderResult(SenderStatus.FAIL, reason)
    return SenderResult(SenderStatus.UNAVAILABLE, reason)


def _domain(sender: str) -> str | None:
    """The sender's domain; None for the null sender, which has nothing to
    verify (RFC 5321 §4.5.5: bounces are sent with it)."""
    if not sender:
        return None
    _, at, domain = sender.rpartition("@")
    return domain.rstrip(".").lower() if at else ""
