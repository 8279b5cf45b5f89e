"""Reverse DNS of the client, and its iprev result (RFC 8601 §3)."""

from __future__ import annotations

import pytest

from services.reputation.rdns import Iprev, Ptr, reverse_dns
from shared.dns import Resolver
from tests.support.dnsserver import DnsServer

RECORDS = [
    ("192.0.2.1", "PTR", "mail.example.test"),
    ("mail.example.test", "A", "192.0.2.1"),
    ("2001:db8::1", "PTR", "mail6.example.test"),
    ("mail6.example.test", "AAAA", "2001:db8::1"),
    ("192.0.2.2", "PTR", "liar.example.test"),
    ("liar.example.test", "A", "198.51.100.7"),
    ("192.0.2.3", "PTR", "dangling.example.test"),
    ("192.0.2.4", "PTR", "host.slow.test"),
    ("192.0.2.5", "PTR", "other.example.test"),
    ("192.0.2.5", "PTR", "mail5.example.test"),
    ("mail5.example.test", "A", "192.0.2.5"),
]


@pytest.fixture(autouse=True)
def zone_records(dns_server: DnsServer) -> None:
    dns_server.zone("example.test")
    dns_server.load(RECORDS)
    dns_server.silence("slow.test")
    dns_server.silence("192.0.2.6")  # its PTR name


CASES = [
    ("192.0.2.1", Ptr.FOUND, ("mail.example.test",), Iprev.PASS),
    ("2001:db8::1", Ptr.FOUND, ("mail6.example.test",), Iprev.PASS),
    ("::ffff:192.0.2.1", Ptr.FOUND, ("mail.example.test",), Iprev.PASS),
    ("192.0.2.5", Ptr.FOUND, ("other.example.test", "mail5.example.test"), Iprev.PASS),
    ("192.0.2.2", Ptr.FOUND, ("liar.example.test",), Iprev.FAIL),
    ("192.0.2.3", Ptr.FOUND, ("dangling.example.test",), Iprev.FAIL),
    ("192.0.2.4", Ptr.FOUND, ("host.slow.test",), Iprev.TEMPERROR),
    ("192.0.2.200", Ptr.NONE, (), Iprev.PERMERROR),
    ("2001:db8::200", Ptr.NONE, (), Iprev.PERMERROR),
    ("192.0.2.6", Ptr.UNAVAILABLE, (), Iprev.TEMPERROR),
]


@pytest.mark.parametrize(
    ("ip", "ptr", "names", "iprev"),
    CASES,
    ids=[
        "IPv4 confirmed",
        "IPv6 confirmed",
        "IPv4-mapped confirmed",
        "second of two names confirms",
        "name points elsewhere",
        "name does not resolve",
        "forward lookup times out",
        "IPv4 without PTR",
        "IPv6 without PTR",
        "PTR lookup times out",
    ],
)
async def test_reverse_dns_reports_the_ptr_and_iprev(
    resolver: Resolver,
    ip: str,
    ptr: Ptr,
    names: tuple[str, ...],
    iprev: Iprev,
) -> None:
    result = await reverse_dns(resolver, ip)

    assert (result.ptr, set(result.names), result.iprev) == (ptr, set(names), iprev)


async def test_the_first_ptr_name_is_the_name(resolver: Resolver) -> None:
    assert (await reverse_dns(resolver, "192.0.2.1")).name == "mail.example.test"
    assert (await reverse_dns(resolver, "192.0.2.200")).name is None
