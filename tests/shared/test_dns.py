"""The resolver against a real DNS server on loopback: answers, statuses,
the TTL cache and shared in-flight lookups."""

from __future__ import annotations

import asyncio
import struct

import pytest

from shared import dnswire
from shared.dns import Answer, MxRecord, Resolver, Status, parse_mx, reverse_pointer
from tests.support.dnsserver import DnsServer

RECORDS = [
    # name, type, value, ttl
    ("host.example.test", "A", "192.0.2.1", 300),
    ("host.example.test", "AAAA", "2001:db8::1", 200),
    ("example.test", "MX", "20 backup.example.test", 60),
    ("example.test", "MX", "10 mx.example.test", 60),
    ("nullmx.example.test", "MX", "0 .", 60),
    ("example.test", "TXT", "v=spf1 " + "ip4:192.0.2.0/24 " * 20 + "-all", 60),
    ("192.0.2.1", "PTR", "host.example.test", 60),
    ("2001:db8::1", "PTR", "host.example.test", 60),
    ("v4only.example.test", "A", "192.0.2.7", 60),
]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def zone_records(dns_server: DnsServer) -> None:
    dns_server.zone("example.test", minimum=30)
    dns_server.load(RECORDS)
    dns_server.silence("slow.test")
    dns_server.fail("broken.test")


def resolver_on(dns_server: DnsServer, **options: object) -> Resolver:
    return Resolver([dns_server.address], lifetime=0.5, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "rdtype", "records"),
    [
        ("host.example.test", "A", ("192.0.2.1",)),
        ("host.example.test", "AAAA", ("2001:db8::1",)),
        ("example.test", "MX", ("10 mx.example.test", "20 backup.example.test")),
        ("nullmx.example.test", "MX", ("0 .",)),
        ("1.2.0.192.in-addr.arpa", "PTR", ("host.example.test",)),
        ("example.test", "TXT", ("v=spf1 " + "ip4:192.0.2.0/24 " * 20 + "-all",)),
    ],
    ids=["A", "AAAA", "MX sorted", "null MX", "PTR", "long TXT joined"],
)
async def test_records_read_as_the_module_documents(
    resolver: Resolver, name: str, rdtype: str, records: tuple[str, ...]
) -> None:
    answer = await resolver.query(name, rdtype)

    assert answer.status is Status.OK
    assert answer.records == records


async def test_a_positive_answer_carries_its_record_ttl(resolver: Resolver) -> None:
    answer = await resolver.query("host.example.test", "A")

    assert answer == Answer(Status.OK, ("192.0.2.1",), 300)


async def test_a_missing_name_under_a_zone_is_nxdomain_for_the_soa_minimum(
    resolver: Resolver,
) -> None:
    answer = await resolver.query("nobody.example.test", "A")

    assert answer == Answer(Status.NXDOMAIN, (), 30)
    assert answer.absent and not answer.unavailable


async def test_a_name_without_that_type_is_nodata(resolver: Resolver) -> None:
    answer = await resolver.query("v4only.example.test", "AAAA")

    assert answer == Answer(Status.NODATA, (), 30)


async def test_a_missing_name_without_a_zone_is_cached_for_sixty_seconds(
    resolver: Resolver,
) -> None:
    answer = await resolver.query("nowhere.invalid", "A")

    assert answer == Answer(Status.NXDOMAIN, (), 60)


async def test_the_negative_ttl_is_the_soa_ttl_when_that_is_smaller(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.zone("short.test", minimum=3600, ttl=20)

    answer = await resolver.query("gone.short.test", "A")

    assert answer.ttl == 20


async def test_ttls_are_capped_at_an_hour_and_negative_ones_at_fifteen_minutes(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.zone("long.test", minimum=86400, ttl=86400)
    dns_server.add("host.long.test", "A", "192.0.2.9", ttl=86400)

    positive = await resolver.query("host.long.test", "A")
    negative = await resolver.query("gone.long.test", "A")

    assert (positive.ttl, negative.ttl) == (3600, 900)


async def test_a_silent_server_is_a_timeout_not_nxdomain(resolver: Resolver) -> None:
    answer = await resolver.query("host.slow.test", "A")

    assert answer == Answer(Status.TIMEOUT, (), 0)
    assert answer.unavailable and not answer.absent


async def test_servfail_is_an_error(resolver: Resolver) -> None:
    answer = await resolver.query("host.broken.test", "A")

    assert answer == Answer(Status.ERROR, (), 0)


@pytest.mark.parametrize(
    "name", ["host.slow.test", "host.broken.test"], ids=["timeout", "servfail"]
)
async def test_failures_are_not_cached(
    dns_server: DnsServer, resolver: Resolver, name: str
) -> None:
    await resolver.query(name, "A")
    await resolver.query(name, "A")

    assert dns_server.asked(name, "A") >= 2
    assert resolver.cache_hits == 0


async def test_an_answer_is_served_from_the_cache_until_its_ttl_runs_out(
    dns_server: DnsServer,
) -> None:
    clock = ManualClock()
    resolver = resolver_on(dns_server, clock=clock)
    dns_server.add("moving.example.test", "A", "192.0.2.10", ttl=5)
    first = await resolver.query("moving.example.test", "A")

    dns_server.remove("moving.example.test")
    dns_server.add("moving.example.test", "A", "192.0.2.11", ttl=5)
    clock.now += 4.9
    cached = await resolver.query("moving.example.test", "A")
    clock.now += 0.2
    fresh = await resolver.query("moving.example.test", "A")

    assert (first.records, cached.records) == (("192.0.2.10",), ("192.0.2.10",))
    assert fresh.records == ("192.0.2.11",)
    assert dns_server.asked("moving.example.test", "A") == 2


async def test_a_negative_answer_is_cached_until_its_ttl_runs_out(
    dns_server: DnsServer,
) -> None:
    clock = ManualClock()
    resolver = resolver_on(dns_server, clock=clock)
    await resolver.query("late.example.test", "A")

    dns_server.add("late.example.test", "A", "192.0.2.12")
    clock.now += 29
    still_missing = await resolver.query("late.example.test", "A")
    clock.now += 2
    found = await resolver.query("late.example.test", "A")

    assert still_missing.status is Status.NXDOMAIN
    assert found.status is Status.OK


async def test_a_zero_ttl_answer_is_not_cached(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.add("volatile.example.test", "A", "192.0.2.13", ttl=0)

    await resolver.query("volatile.example.test", "A")
    await resolver.query("volatile.example.test", "A")

    assert dns_server.asked("volatile.example.test", "A") == 2


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used(
    dns_server: DnsServer,
) -> None:
    resolver = resolver_on(dns_server, cache_size=2)

    await resolver.query("host.example.test", "A")
    await resolver.query("v4only.example.test", "A")
    await resolver.query("host.example.test", "A")  # now the most recent
    await resolver.query("example.test", "MX")  # pushes v4only out
    await resolver.query("host.example.test", "A")
    await resolver.query("v4only.example.test", "A")

    assert resolver.cache_size == 2
    assert dns_server.asked("host.example.test", "A") == 1
    assert dns_server.asked("v4only.example.test", "A") == 2


async def test_hits_and_misses_are_counted(resolver: Resolver) -> None:
    await resolver.query("host.example.test", "A")
    await resolver.query("HOST.Example.Test.", "a")

    assert (resolver.cache_misses, resolver.cache_hits) == (1, 1)


async def test_concurrent_identical_lookups_share_one_query(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    answers = await asyncio.gather(
        *(resolver.query("host.example.test", "A") for _ in range(20))
    )

    assert len(set(answers)) == 1
    assert dns_server.asked("host.example.test", "A") == 1


async def test_a_waiter_that_gives_up_does_not_cancel_the_shared_lookup(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    impatient = asyncio.create_task(resolver.query("host.slow.test", "A"))
    patient = asyncio.create_task(resolver.query("host.slow.test", "A"))
    await asyncio.sleep(0.05)

    impatient.cancel()

    assert (await patient).status is Status.TIMEOUT
    assert dns_server.asked("host.slow.test", "A") >= 1


async def test_a_aaaa_returns_both_families(resolver: Resolver) -> None:
    answer = await resolver.a_aaaa("host.example.test")

    assert answer == Answer(Status.OK, ("192.0.2.1", "2001:db8::1"), 200)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("v4only.example.test", Status.OK),
        ("example.test", Status.NODATA),
        ("nobody.example.test", Status.NXDOMAIN),
        ("host.slow.test", Status.TIMEOUT),
    ],
    ids=["one family", "neither family", "no such name", "timeout"],
)
async def test_a_aaaa_status_combines_both_lookups(
    resolver: Resolver, name: str, status: Status
) -> None:
    assert (await resolver.a_aaaa(name)).status is status


@pytest.mark.parametrize(
    "ip", ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"], ids=["v4", "v6", "mapped"]
)
async def test_ptr_finds_the_name_of_an_address(resolver: Resolver, ip: str) -> None:
    answer = await resolver.ptr(ip)

    assert answer.records == ("host.example.test",)


def test_reverse_pointers_follow_rfc_3596() -> None:
    assert reverse_pointer("192.0.2.1") == "1.2.0.192.in-addr.arpa"
    assert reverse_pointer("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    )


async def test_mx_and_txt_helpers_ask_for_their_types(resolver: Resolver) -> None:
    mx = await resolver.mx("example.test")
    txt = await resolver.txt("example.test")

    assert [parse_mx(record) for record in mx.records] == [
        MxRecord(10, "mx.example.test"),
        MxRecord(20, "backup.example.test"),
    ]
    assert txt.records[0].startswith("v=spf1 ")
    assert parse_mx("0 .").is_null


async def test_an_impossible_name_is_nxdomain_without_asking(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    answer = await resolver.query("empty..label.test", "A")

    assert answer.status is Status.NXDOMAIN
    assert dns_server.asked("empty..label.test", "A") == 0


async def test_the_blocking_lookup_shares_nameservers_and_cache(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    found = await asyncio.to_thread(resolver.lookup_sync, "host.example.test", "A")
    timeout = await asyncio.to_thread(resolver.lookup_sync, "x.slow.test", "TXT")

    again = await resolver.query("host.example.test", "A")

    assert found == again == Answer(Status.OK, ("192.0.2.1",), 300)
    assert timeout.status is Status.TIMEOUT
    assert dns_server.asked("host.example.test", "A") == 1


async def test_several_lookups_come_back_in_order_and_cached_ones_stay_local(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    await resolver.query("host.example.test", "A")
    misses = resolver.cache_misses

    answers = await resolver.query_all(
        [
            ("example.test", "MX"),
            ("host.example.test", "A"),
            ("nobody.example.test", "A"),
        ]
    )

    assert [a.status for a in answers] == [Status.OK, Status.OK, Status.NXDOMAIN]
    assert answers[1].records == ("192.0.2.1",)
    assert dns_server.asked("host.example.test", "A") == 1
    assert resolver.cache_misses == misses + 2


async def test_a_txt_record_too_big_for_udp_is_read_over_tcp(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    policy = "v=spf1 " + " ".join(f"ip4:198.51.100.{n}" for n in range(90)) + " -all"
    assert len(policy) > 1500
    dns_server.add("big.example.test", "TXT", policy)

    answer = await resolver.query("big.example.test", "TXT")

    assert answer.status is Status.OK
    assert answer.records == (policy,)


async def test_an_alias_is_followed_and_the_smallest_ttl_kept(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    dns_server.add("alias.example.test", "CNAME", "host.example.test.", ttl=40)

    answer = await resolver.query("alias.example.test", "A")

    assert answer == Answer(Status.OK, ("192.0.2.1",), 40)


def test_a_reply_whose_names_point_in_a_loop_is_unreadable() -> None:
    qname = dnswire.encode_name("loop.example.test")
    assert qname is not None
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    question = qname + struct.pack("!HH", 1, 1)
    looping = b"\xc0" + bytes([12 + len(question)])  # a pointer to itself
    answer = looping + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)

    with pytest.raises(dnswire.WireError):
        dnswire.parse(header + question + answer, 7, qname, 1)


def test_a_reply_to_another_question_or_id_is_not_taken() -> None:
    ours = dnswire.encode_name("ours.example.test")
    other = dnswire.encode_name("other.example.test")
    assert ours is not None and other is not None
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 0, 0, 0)
    reply = header + other + struct.pack("!HH", 1, 1)

    with pytest.raises(dnswire.WireError):
        dnswire.parse(reply, 7, ours, 1)
    with pytest.raises(dnswire.WireError):
        dnswire.parse(header + ours + struct.pack("!HH", 1, 1), 8, ours, 1)
