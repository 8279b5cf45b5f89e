"""DNSBL lookups against zones served by the loopback DNS server."""

from __future__ import annotations

import time

import pytest

from services.reputation.rbl import DEFAULT_ZONES, Listing, Zone, lookup, query_name
from shared.dns import Resolver, Status
from tests.support.dnsserver import DnsServer

CLIENT = "192.0.2.99"
CLIENT_V6 = "2001:db8::99"
NIBBLES = "9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"

# What each default zone may answer for a client, and whether that is a
# listing (SPEC §5). Answers outside a zone's codes never reject.
ZONE_ANSWERS = [
    ("zen.spamhaus.org", "127.0.0.2", True),
    ("zen.spamhaus.org", "127.0.0.4", True),
    ("zen.spamhaus.org", "127.0.0.11", True),
    ("zen.spamhaus.org", "127.0.0.12", False),
    ("zen.spamhaus.org", "127.255.255.252", False),
    ("zen.spamhaus.org", "127.255.255.254", False),
    ("zen.spamhaus.org", "127.255.255.255", False),
    ("bl.spamcop.net", "127.0.0.2", True),
    ("bl.spamcop.net", "127.0.0.1", False),
    ("cbl.abuseat.org", "127.0.0.2", True),
    ("cbl.abuseat.org", "127.0.0.1", False),
    ("rbl.baruwa.net", "127.0.0.2", True),
    ("rbl.baruwa.net", "127.0.0.1", False),
    ("bl.spameatingmonkey.net", "127.0.0.2", True),
    ("bl.spameatingmonkey.net", "127.0.0.1", False),
    ("hostkarma.junkemailfilter.com", "127.0.0.2", True),
    ("hostkarma.junkemailfilter.com", "127.0.0.1", False),
    ("hostkarma.junkemailfilter.com", "127.0.0.3", False),
    ("hostkarma.junkemailfilter.com", "127.0.0.4", False),
    ("hostkarma.junkemailfilter.com", "127.0.0.5", False),
]


def default_zone(name: str) -> Zone:
    return next(zone for zone in DEFAULT_ZONES if zone.name == name)


@pytest.mark.parametrize(
    ("zone", "answer", "listed"),
    ZONE_ANSWERS,
    ids=[
        f"{zone} {answer} {'lists' if listed else 'never lists'}"
        for zone, answer, listed in ZONE_ANSWERS
    ],
)
async def test_each_default_zone_lists_only_on_its_codes(
    dns_server: DnsServer, resolver: Resolver, zone: str, answer: str, listed: bool
) -> None:
    dns_server.add(f"99.2.0.192.{zone}", "A", answer)

    [result] = await lookup(resolver, CLIENT, [default_zone(zone)])

    assert result.listed is listed
    assert result.answers == (answer,)


def test_the_six_default_zones_are_those_of_the_spec() -> None:
    assert [zone.name for zone in DEFAULT_ZONES] == [
        "zen.spamhaus.org",
        "bl.spamcop.net",
        "cbl.abuseat.org",
        "rbl.baruwa.net",
        "bl.spameatingmonkey.net",
        "hostkarma.junkemailfilter.com",
    ]


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.99", "99.2.0.192.zen.spamhaus.org"),
        ("::ffff:192.0.2.99", "99.2.0.192.zen.spamhaus.org"),
        ("2001:db8::99", f"{NIBBLES}.zen.spamhaus.org"),
    ],
    ids=["IPv4 reversed octets", "IPv4-mapped as IPv4", "IPv6 nibbles"],
)
def test_the_query_name_follows_rfc_5782(ip: str, name: str) -> None:
    assert query_name(ip, "zen.spamhaus.org") == name


async def test_an_ipv6_client_is_looked_up_in_nibble_form(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add(f"{NIBBLES}.zen.spamhaus.org", "A", "127.0.0.3")

    [result] = await lookup(resolver, CLIENT_V6, [default_zone("zen.spamhaus.org")])

    assert result.listing is Listing.LISTED


async def test_every_zone_is_asked_and_reported_in_order(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("99.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("99.2.0.192.hostkarma.junkemailfilter.com", "A", "127.0.0.1")
    dns_server.silence("cbl.abuseat.org")
    dns_server.fail("rbl.baruwa.net")

    results = await lookup(resolver, CLIENT, DEFAULT_ZONES)

    assert [(r.zone, r.listing, r.dns) for r in results] == [
        ("zen.spamhaus.org", Listing.LISTED, Status.OK),
        ("bl.spamcop.net", Listing.NOT_LISTED, Status.NXDOMAIN),
        ("cbl.abuseat.org", Listing.UNAVAILABLE, Status.TIMEOUT),
        ("rbl.baruwa.net", Listing.UNAVAILABLE, Status.ERROR),
        ("bl.spameatingmonkey.net", Listing.NOT_LISTED, Status.NXDOMAIN),
        ("hostkarma.junkemailfilter.com", Listing.NOT_LISTED, Status.OK),
    ]


async def test_zones_are_asked_concurrently(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    for zone in DEFAULT_ZONES:
        dns_server.silence(zone.name)
    started = time.monotonic()

    results = await lookup(resolver, CLIENT, DEFAULT_ZONES)

    assert {result.listing for result in results} == {Listing.UNAVAILABLE}
    assert time.monotonic() - started < 2 * resolver.lifetime


@pytest.mark.parametrize(
    ("codes", "answer", "listed"),
    [
        (["127.0.0.2"], "127.0.0.2", True),
        (["127.0.0.2-127.0.0.11"], "127.0.0.11", True),
        (["127.0.0.2-127.0.0.11"], "127.0.0.1", False),
        (["127.0.1.0/24"], "127.0.1.200", True),
        (["127.0.1.0/24", "127.0.0.5"], "127.0.0.5", True),
        ([], "127.0.0.9", True),
        ([], "10.0.0.1", False),
        (["127.0.0.2"], "2001:db8::2", False),
    ],
    ids=[
        "single address",
        "range end",
        "outside the range",
        "CIDR",
        "second code",
        "no codes: any 127/8",
        "no codes: not 127/8",
        "IPv6 answer",
    ],
)
def test_zone_codes_are_addresses_ranges_or_cidrs(
    codes: list[str], answer: str, listed: bool
) -> None:
    assert Zone("zone.test", codes).lists(answer) is listed


@pytest.mark.parametrize(
    "code",
    ["127.0.0.300", "127.0.0.9-127.0.0.2", "127.0.0.0/33", "listed"],
    ids=["bad address", "backwards range", "bad prefix", "a word"],
)
def test_a_malformed_code_is_refused_when_the_zone_is_made(code: str) -> None:
    with pytest.raises(ValueError):
        Zone("zone.test", [code])
