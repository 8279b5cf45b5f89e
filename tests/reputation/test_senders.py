"""Sender verification: the sender's domain in the DNS, then callouts to its
mail hosts, which are aiosmtpd servers on loopback."""

from __future__ import annotations

import pytest

from services.reputation.senders import (
    SenderCallout,
    SenderStatus,
    check_domain,
)
from shared.dns import Resolver
from tests.reputation.helpers import Clock, RcptServer
from tests.support.dnsserver import DnsServer

OURS = "perimeter.test"

# down.mx.test is 127.0.0.2, where nothing listens: connections are refused.
RECORDS = [
    ("mx.test", "MX", "10 mail.mx.test"),
    ("mail.mx.test", "A", "127.0.0.1"),
    ("implicit.test", "A", "127.0.0.1"),
    ("implicit6.test", "AAAA", "::1"),
    ("nullmx.test", "MX", "0 ."),
    ("nomail.test", "TXT", "v=spf1 -all"),
    ("backup.test", "MX", "10 down.backup.test"),
    ("backup.test", "MX", "20 up.backup.test"),
    ("down.backup.test", "A", "127.0.0.2"),
    ("up.backup.test", "A", "127.0.0.1"),
    ("dangling.test", "MX", "10 nowhere.dangling.test"),
    ("slowhost.test", "MX", "10 mail.slow.test"),
]


@pytest.fixture(autouse=True)
def zone_records(dns_server: DnsServer) -> None:
    for zone in ("mx.test", "nomail.test", "dangling.test"):
        dns_server.zone(zone)
    dns_server.load(RECORDS)
    dns_server.silence("slow.test")


DOMAIN_CASES = [
    ("alice@mx.test", SenderStatus.OK, "MX"),
    ("alice@implicit.test", SenderStatus.OK, "implicit MX"),
    ("alice@implicit6.test", SenderStatus.OK, "implicit MX"),
    ("alice@nullmx.test", SenderStatus.FAIL, "null MX"),
    ("alice@nomail.test", SenderStatus.FAIL, "no MX, A or AAAA record"),
    ("alice@gone.mx.test", SenderStatus.FAIL, "domain does not exist"),
    ("alice@[192.0.2.1]", SenderStatus.FAIL, "no domain to verify"),
    ("alice", SenderStatus.FAIL, "no domain to verify"),
    ("alice@host.slow.test", SenderStatus.UNAVAILABLE, "MX lookup timeout"),
    ("", SenderStatus.OK, "null sender"),
]


@pytest.mark.parametrize(
    ("sender", "status", "reason"),
    DOMAIN_CASES,
    ids=[
        "MX",
        "A as implicit MX",
        "AAAA as implicit MX",
        "null MX",
        "neither MX nor address",
        "no such domain",
        "address literal",
        "no domain at all",
        "DNS timeout",
        "null sender",
    ],
)
async def test_domain_mode(
    resolver: Resolver, sender: str, status: SenderStatus, reason: str
) -> None:
    result = await check_domain(resolver, sender)

    assert (result.status, result.reason) == (status, reason)


def callout(resolver: Resolver, port: int, **options: object) -> SenderCallout:
    settings: dict[str, object] = {"hostname": OURS, "port": port, "timeout": 1.0}
    return SenderCallout(resolver, **{**settings, **options})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("250 2.1.5 Ok", SenderStatus.OK),
        ("550 5.1.1 No such user", SenderStatus.FAIL),
        ("451 4.3.0 Try later", SenderStatus.UNAVAILABLE),
    ],
    ids=["250 is ok", "550 fails", "451 is unavailable"],
)
async def test_callout_follows_the_mx_answer_to_rcpt(
    resolver: Resolver, smtp_server: RcptServer, reply: str, status: SenderStatus
) -> None:
    smtp_server.default = reply

    result = await callout(resolver, smtp_server.port).verify("alice@mx.test")

    assert result.status is status
    assert reply.split()[0] in result.reason


async def test_callout_greets_with_our_name_and_a_null_sender(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    await callout(resolver, smtp_server.port).verify("alice@mx.test")

    [asked] = smtp_server.asked
    # aiosmtpd hands the null reverse-path over as "<>".
    assert (asked.helo, asked.mail_from, asked.rcpt_to) == (OURS, "<>", "alice@mx.test")


async def test_callout_uses_the_domain_itself_without_mx(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    result = await callout(resolver, smtp_server.port).verify("bob@implicit.test")

    assert result.status is SenderStatus.OK
    assert smtp_server.asked[0].rcpt_to == "bob@implicit.test"


async def test_callout_moves_to_the_next_mx_when_the_best_refuses_connections(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    smtp_server.default = "550 5.1.1 No such user"

    result = await callout(resolver, smtp_server.port).verify("carol@backup.test")

    assert result.status is SenderStatus.FAIL
    assert "127.0.0.1" in result.reason


async def test_callout_is_unavailable_when_connections_are_refused(
    resolver: Resolver, closed_port: int
) -> None:
    result = await callout(resolver, closed_port).verify("alice@mx.test")

    assert result.status is SenderStatus.UNAVAILABLE


async def test_callout_is_unavailable_when_the_mx_never_answers(
    resolver: Resolver, silent_port: int
) -> None:
    result = await callout(resolver, silent_port, timeout=0.3).verify("alice@mx.test")

    assert result.status is SenderStatus.UNAVAILABLE


async def test_callout_fails_a_null_mx_without_connecting(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    result = await callout(resolver, smtp_server.port).verify("alice@nullmx.test")

    assert result.status is SenderStatus.FAIL
    assert smtp_server.asked == []


@pytest.mark.parametrize(
    ("sender", "status"),
    [
        ("alice@dangling.test", SenderStatus.FAIL),
        ("alice@slowhost.test", SenderStatus.UNAVAILABLE),
    ],
    ids=["mail host has no address", "mail host lookup times out"],
)
async def test_callout_needs_an_address_for_a_mail_host(
    resolver: Resolver, smtp_server: RcptServer, sender: str, status: SenderStatus
) -> None:
    result = await callout(resolver, smtp_server.port).verify(sender)

    assert result.status is status
    assert smtp_server.asked == []


async def test_callout_results_are_cached_per_address_for_their_ttl(
    resolver: Resolver, smtp_server: RcptServer, clock: Clock
) -> None:
    smtp_server.replies = {"bad@mx.test": "550 5.1.1 No such user"}
    verifier = callout(
        resolver, smtp_server.port, ok_ttl=3600, fail_ttl=600, clock=clock
    )

    for sender in ("good@mx.test", "good@MX.test", "bad@mx.test", "bad@mx.test"):
        await verifier.verify(sender)
    clock.advance(601)
    await verifier.verify("good@mx.test")
    await verifier.verify("bad@mx.test")

    asked = [a.rcpt_to for a in smtp_server.asked]
    assert asked == ["good@mx.test", "bad@mx.test", "bad@mx.test"]


async def test_unavailable_callouts_are_not_cached(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    smtp_server.default = "451 4.3.0 Try later"
    verifier = callout(resolver, smtp_server.port)

    await verifier.verify("alice@mx.test")
    await verifier.verify("alice@mx.test")

    assert len(smtp_server.asked) == 2


async def test_the_callout_cache_is_bounded(
    resolver: Resolver, smtp_server: RcptServer
) -> None:
    verifier = callout(resolver, smtp_server.port, cache_size=2)

    for sender in ("a@mx.test", "b@mx.test", "c@mx.test", "a@mx.test"):
        await verifier.verify(sender)

    assert len(verifier.cache) == 2
    assert len(smtp_server.asked) == 4
