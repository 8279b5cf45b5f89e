"""SPF through pyspf, with every lookup answered by the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest
import spf as pyspf

from services.reputation.spf import Spf, check_spf
from shared.dns import Resolver
from tests.support.dnsserver import DnsServer

# Each domain's policy exercises one record shape pyspf reads through us:
# TXT, A, AAAA, MX (pyspf then asks A of the exchange) and PTR.
RECORDS = [
    ("pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("fail.test", "TXT", "v=spf1 -all"),
    ("softfail.test", "TXT", "v=spf1 ~all"),
    ("neutral.test", "TXT", "v=spf1 ?all"),
    ("nospf.test", "TXT", "google-site-verification=abc"),
    ("include.test", "TXT", "v=spf1 include:pass.test -all"),
    ("mx.test", "TXT", "v=spf1 mx -all"),
    ("mx.test", "MX", "10 mail.mx.test"),
    ("mail.mx.test", "A", "192.0.2.10"),
    ("helo.test", "TXT", "v=spf1 a -all"),
    ("helo.test", "A", "192.0.2.20"),
    ("v6.test", "TXT", "v=spf1 a -all"),
    ("v6.test", "AAAA", "2001:db8::25"),
    ("ptr.test", "TXT", "v=spf1 ptr -all"),
    ("192.0.2.30", "PTR", "host.ptr.test"),
    ("host.ptr.test", "A", "192.0.2.30"),
    ("typo.test", "TXT", "v=spf1 ip4:192.0.2.0/24 bogus -all"),
    ("slowinclude.test", "TXT", "v=spf1 include:spf.slow.test -all"),
]


@pytest.fixture(autouse=True)
def zone_records(dns_server: DnsServer) -> None:
    for zone in ("pass.test", "fail.test", "nospf.test", "mx.test", "helo.test"):
        dns_server.zone(zone)
    dns_server.load(RECORDS)
    dns_server.silence("slow.test")


CASES = [
    ("192.0.2.1", "alice@pass.test", "client.test", Spf.PASS),
    ("198.51.100.1", "alice@pass.test", "client.test", Spf.FAIL),
    ("198.51.100.1", "alice@fail.test", "client.test", Spf.FAIL),
    ("198.51.100.1", "alice@softfail.test", "client.test", Spf.SOFTFAIL),
    ("198.51.100.1", "alice@neutral.test", "client.test", Spf.NEUTRAL),
    ("198.51.100.1", "alice@nospf.test", "client.test", Spf.NONE),
    ("198.51.100.1", "alice@nowhere.test", "client.test", Spf.NONE),
    ("192.0.2.1", "alice@include.test", "client.test", Spf.PASS),
    ("192.0.2.10", "alice@mx.test", "client.test", Spf.PASS),
    ("192.0.2.11", "alice@mx.test", "client.test", Spf.FAIL),
    ("2001:db8::25", "alice@v6.test", "client.test", Spf.PASS),
    ("192.0.2.30", "alice@ptr.test", "client.test", Spf.PASS),
    ("192.0.2.31", "alice@ptr.test", "client.test", Spf.FAIL),
    ("192.0.2.20", "", "helo.test", Spf.PASS),
    ("192.0.2.21", "", "helo.test", Spf.FAIL),
    ("192.0.2.1", "alice@typo.test", "client.test", Spf.PERMERROR),
    ("192.0.2.1", "alice@spf.slow.test", "client.test", Spf.TEMPERROR),
    ("192.0.2.1", "alice@slowinclude.test", "client.test", Spf.TEMPERROR),
]


@pytest.mark.parametrize(
    ("ip", "sender", "helo", "result"),
    CASES,
    ids=[
        "ip4 pass",
        "ip4 outside the range fails",
        "-all fails",
        "~all softfails",
        "?all is neutral",
        "no SPF record",
        "no such domain",
        "include pass",
        "mx pass",
        "mx fail",
        "a over IPv6 pass",
        "ptr pass",
        "ptr fail",
        "null sender checks postmaster@helo: pass",
        "null sender checks postmaster@helo: fail",
        "unknown mechanism is permerror",
        "silent zone is temperror",
        "silent include is temperror",
    ],
)
async def test_spf_result(
    resolver: Resolver, ip: str, sender: str, helo: str, result: Spf
) -> None:
    assert (await check_spf(resolver, ip, sender, helo)).result is result


async def test_a_fail_carries_the_explanation(resolver: Resolver) -> None:
    checked = await check_spf(resolver, "198.51.100.1", "a@fail.test", "client.test")

    assert checked.explanation


async def test_spf_asks_only_our_nameserver_and_shares_its_cache(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    for _ in range(2):
        await check_spf(resolver, "192.0.2.10", "alice@mx.test", "client.test")

    assert dns_server.asked("mx.test", "TXT") == 1
    assert dns_server.asked("mx.test", "MX") == 1
    assert dns_server.asked("mail.mx.test", "A") == 1
    assert resolver.cache_hits >= 3


async def test_pyspf_outside_a_check_cannot_reach_any_dns() -> None:
    result, _ = await asyncio.to_thread(
        pyspf.check2, i="192.0.2.1", s="alice@pass.test", h="client.test"
    )

    assert result == "temperror"
