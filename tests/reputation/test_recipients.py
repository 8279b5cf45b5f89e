"""Recipient verification by callout to a route, an aiosmtpd server on
loopback."""

from __future__ import annotations

import time

import pytest

from services.reputation.recipients import RecipientCallout, RecipientStatus
from tests.reputation.helpers import Clock, RcptServer

OURS = "perimeter.test"


def callout(**options: object) -> RecipientCallout:
    settings: dict[str, object] = {"hostname": OURS, "timeout": 1.0, **options}
    return RecipientCallout(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("250 2.1.5 Ok", RecipientStatus.ACCEPTS),
        ("251 2.1.5 Will forward", RecipientStatus.ACCEPTS),
        ("550 5.1.1 No such user", RecipientStatus.REJECTS),
        ("553 5.1.3 Bad address", RecipientStatus.REJECTS),
        ("451 4.3.0 Try later", RecipientStatus.UNAVAILABLE),
        ("452 4.2.2 Mailbox full", RecipientStatus.UNAVAILABLE),
    ],
    ids=["250 accepts", "251 accepts", "550 rejects", "553 rejects", "451", "452"],
)
async def test_the_route_answer_to_rcpt_decides(
    smtp_server: RcptServer, reply: str, status: RecipientStatus
) -> None:
    smtp_server.default = reply

    result = await callout().verify(f"127.0.0.1:{smtp_server.port}", "bob@corp.test")

    assert result.status is status
    assert result.code == int(reply.split()[0])


async def test_the_route_is_asked_with_our_name_and_a_null_sender(
    smtp_server: RcptServer,
) -> None:
    await callout().verify(f"127.0.0.1:{smtp_server.port}", "bob@corp.test")

    [asked] = smtp_server.asked
    # aiosmtpd hands the null reverse-path over as "<>".
    assert (asked.helo, asked.mail_from, asked.rcpt_to) == (OURS, "<>", "bob@corp.test")


async def test_a_route_refusing_the_null_sender_says_nothing_about_the_recipient(
    smtp_server: RcptServer,
) -> None:
    smtp_server.mail_reply = "550 5.7.1 No bounces here"

    result = await callout().verify(f"127.0.0.1:{smtp_server.port}", "bob@corp.test")

    assert result.status is RecipientStatus.UNAVAILABLE
    assert result.code == 550


async def test_a_route_refusing_connections_is_unavailable(closed_port: int) -> None:
    result = await callout().verify(f"127.0.0.1:{closed_port}", "bob@corp.test")

    assert (result.status, result.code) == (RecipientStatus.UNAVAILABLE, None)


async def test_a_route_that_never_answers_is_unavailable_within_the_timeout(
    silent_port: int,
) -> None:
    started = time.monotonic()

    result = await callout(timeout=0.3).verify(
        f"127.0.0.1:{silent_port}", "bob@corp.test"
    )

    assert (result.status, result.code) == (RecipientStatus.UNAVAILABLE, None)
    assert time.monotonic() - started < 1.0


async def test_accepts_and_rejects_are_cached_for_their_own_ttls(
    smtp_server: RcptServer, clock: Clock
) -> None:
    smtp_server.replies = {"gone@corp.test": "550 5.1.1 No such user"}
    verifier = callout(accept_ttl=3600, reject_ttl=600, clock=clock)
    route = f"127.0.0.1:{smtp_server.port}"

    for address in ("bob@corp.test", "bob@CORP.test", "gone@corp.test"):
        await verifier.verify(route, address)
        await verifier.verify(route, address)
    clock.advance(601)
    await verifier.verify(route, "bob@corp.test")
    await verifier.verify(route, "gone@corp.test")
    clock.advance(3000)
    await verifier.verify(route, "bob@corp.test")

    asked = [a.rcpt_to for a in smtp_server.asked]
    assert asked == [
        "bob@corp.test",
        "gone@corp.test",
        "gone@corp.test",
        "bob@corp.test",
    ]


async def test_unavailable_answers_are_not_cached(smtp_server: RcptServer) -> None:
    smtp_server.default = "451 4.3.0 Try later"
    verifier = callout()
    route = f"127.0.0.1:{smtp_server.port}"

    await verifier.verify(route, "bob@corp.test")
    await verifier.verify(route, "bob@corp.test")

    assert len(smtp_server.asked) == 2


async def test_the_cache_is_kept_per_route(
    smtp_server: RcptServer, silent_port: int
) -> None:
    verifier = callout(timeout=0.3)

    accepted = await verifier.verify(f"127.0.0.1:{smtp_server.port}", "bob@corp.test")
    elsewhere = await verifier.verify(f"127.0.0.1:{silent_port}", "bob@corp.test")

    assert accepted.status is RecipientStatus.ACCEPTS
    assert elsewhere.status is RecipientStatus.UNAVAILABLE


async def test_the_recipient_cache_is_bounded(smtp_server: RcptServer) -> None:
    verifier = callout(cache_size=2)
    route = f"127.0.0.1:{smtp_server.port}"

    for address in ("a@corp.test", "b@corp.test", "c@corp.test", "a@corp.test"):
        await verifier.verify(route, address)

    assert len(verifier.cache) == 2
    assert len(smtp_server.asked) == 4
