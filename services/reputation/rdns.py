"""Reverse DNS of the client address, and whether it confirms forward.

The `rdns` rule only asks whether the client's address has a PTR record
(IPv4 under `in-addr.arpa`, IPv6 as nibbles under `ip6.arpa`, RFC 3596 §2.5).
The same lookup feeds the `iprev` result of the Authentication-Results header
(RFC 8601 §3), which also looks the PTR names up forward and checks that one
of them leads back to the client address:

| iprev | when |
|---|---|
| `pass` | a PTR name has an A (IPv4) or AAAA (IPv6) record equal to the client |
| `fail` | PTR names were found, every forward lookup completed, none matched |
| `temperror` | the PTR lookup, or a forward lookup that could have matched, failed |
| `permerror` | the address has no PTR record (NXDOMAIN or NODATA) |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from shared.dns import Answer, Resolver

# Forward lookups made for one client at most, as RFC 7208 §4.6.4 bounds the
# PTR names an SPF check may follow.
MAX_CONFIRMED_NAMES = 10


class Ptr(StrEnum):
    FOUND = "found"
    NONE = "none"
    UNAVAILABLE = "unavailable"


class Iprev(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class ReverseDns:
    """PTR outcome for one address: `names` as the DNS gave them."""

    ptr: Ptr
    names: tuple[str, ...]
    iprev: Iprev

    @property
    def name(self) -> str | None:
        """The first PTR name, the one a Received header shows."""
        return self.names[0] if self.names else None


async def reverse_dns(resolver: Resolver, ip: str) -> ReverseDns:
    """Look up the PTR names of `ip` and confirm them forward."""
    answer = await resolver.ptr(ip)
    if answer.unavailable:
        return ReverseDns(Ptr.UNAVAILABLE, (), Iprev.TEMPERROR)
    if not answer.found:
        return ReverseDns(Ptr.NONE, (), Iprev.PERMERROR)

    iprev = await _confirm(resolver, ip, answer.records[:MAX_CONFIRMED_NAMES])
    return ReverseDns(Ptr.FOUND, answer.records, iprev)


async def _confirm(resolver: Resolver, ip: str, names: tuple[str, ...]) -> Iprev:
    """RFC 8601 §3: pass when a PTR name resolves back to the address."""
    address = _unmapped(ip)
    rdtype = "A" if address.version == 4 else "AAAA"
    answers = await resolver.query_all([(name, rdtype) for name in names])

    if any(address in _addresses(answer) for answer in answers):
        return Iprev.PASS
    if any(answer.unavailable for answer in answers):
        return Iprev.TEMPERROR
    return Iprev.FAIL


def _unmapped(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a client really has: IPv4-mapped IPv6 is its IPv4."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _addresses(answer: Answer) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return {ipaddress.ip_address(record) for record in answer.records}
