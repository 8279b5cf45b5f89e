"""DNSBL lookups: is the client address listed in a zone?

A DNSBL answers a query for the client's address, written backwards under the
zone, with an A record when the address is listed (RFC 5782 §2.1): IPv4 as
reversed octets (`2.0.0.127.zen.spamhaus.org`), IPv6 as 32 reversed nibbles
(RFC 5782 §2.4). Zones also use answers for other things: Spamhaus answers
`127.255.255.x` for errors such as queries through a public resolver, and
hostkarma answers `127.0.0.1` for whitelisted hosts. So each `Zone` lists the
answers that mean "listed" in `codes`, and any other answer is not a listing.

`lookup` asks every zone at once and tells three outcomes apart: listed, not
listed, and unavailable (timeout or error), so the caller can let mail through
a dead zone when the operator put `rbl` in `fail_open`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from shared.dns import Answer, Resolver, Status, reverse_pointer

logger = logging.getLogger(__name__)

# When a zone has no codes, RFC 5782 §2.3: DNSBL answers are in 127.0.0.0/8.
ANY_LOOPBACK = "127.0.0.0/8"


@lru_cache(maxsize=1024)
def _span(code: str) -> tuple[int, int]:
    """The inclusive range of IPv4 addresses a code stands for."""
    try:
        if "-" in code:
            first, last = (ipaddress.IPv4Address(p.strip()) for p in code.split("-"))
            if first > last:
                raise ValueError(f"{code!r} runs backwards")
            return int(first), int(last)
        network = ipaddress.IPv4Network(code.strip(), strict=False)
        return int(network.network_address), int(network.broadcast_address)
    except ValueError as exc:
        raise ValueError(
            f"{code!r} is not an IPv4 address, a range a-b or a CIDR"
        ) from exc


@dataclass
class Zone:
    """A DNSBL zone and the answers that count as listed; each code is an
    IPv4 address, a range `a-b`, or a CIDR. No codes: any 127.0.0.0/8 answer."""

    name: str
    codes: list[str]

    def __post_init__(self) -> None:
        for code in self.codes:
            _span(code)  # a malformed code fails here, not at the first query

    def lists(self, answer: str) -> bool:
        """Whether the answer address means the client is listed."""
        try:
            value = int(ipaddress.IPv4Address(answer))
        except ValueError:
            return False
        spans = [_span(code) for code in self.codes or [ANY_LOOPBACK]]
        return any(low <= value <= high for low, high in spans)


# SPEC §5: the zones every installation starts with.
DEFAULT_ZONES: tuple[Zone, ...] = (
    Zone("zen.spamhaus.org", ["127.0.0.2-127.0.0.11"]),
    Zone("bl.spamcop.net", ["127.0.0.2"]),
    Zone("cbl.abuseat.org", ["127.0.0.2"]),
    Zone("rbl.baruwa.net", ["127.0.0.2"]),
    Zone("bl.spameatingmonkey.net", ["127.0.0.2"]),
    Zone("hostkarma.junkemailfilter.com", ["127.0.0.2"]),
)


class Listing(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not_listed"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ZoneResult:
    """One zone's answer: `answers` are the A records it gave (listing or
    not), `dns` the status of the lookup (TIMEOUT or ERROR when unavailable)."""

    zone: str
    listing: Listing
    answers: tuple[str, ...]
    dns: Status

    @property
    def listed(self) -> bool:
        return self.listing is Listing.LISTED


def query_name(ip: str, zone: str) -> str:
    """The name to ask a zone about an address (RFC 5782 §2.1, §2.4)."""
    return f"{_reversed(ip)}.{zone.rstrip('.')}"


@lru_cache(maxsize=4096)
def _reversed(ip: str) -> str:
    """The address in the reversed form zones are asked in: the PTR name
    without in-addr.arpa or ip6.arpa."""
    return reverse_pointer(ip).rsplit(".", 2)[0]


async def lookup(
    resolver: Resolver, ip: str, zones: Iterable[Zone]
) -> list[ZoneResult]:
    """Ask every zone about `ip` concurrently; results in the zones' order."""
    zones = list(zones)
    answers = await resolver.query_all(
        [(query_name(ip, zone.name), "A") for zone in zones]
    )
    return [_result(zone, answer) for zone, answer in zip(zones, answers, strict=True)]


def _result(zone: Zone, answer: Answer) -> ZoneResult:
    if answer.unavailable:
        listing = Listing.UNAVAILABLE
    elif any(zone.lists(address) for address in answer.records):
        listing = Listing.LISTED
    else:
        listing = Listing.NOT_LISTED

    if answer.found and listing is Listing.NOT_LISTED:
        logger.debug("zone %s answered %s: not a listing", zone.name, answer.records)
    return ZoneResult(zone.name, listing, answer.records, answer.status)
