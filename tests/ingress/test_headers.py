"""Trace headers: results that claim to be ours are removed on the way in
(RFC 8601 §5); everything else in the header block stays as written."""

from __future__ import annotations

import asyncio

import pytest

from services.ingress.headers import without_forged_results
from tests.support.client import message, send
from tests.support.sink import Sink
from tests.support.stack import HOSTNAME, Product

OURS = "mx.example.org"


def test_results_claiming_our_authserv_id_are_removed() -> None:
    head = (
        b"Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=a@b\r\n"
        b"Subject: hi\r\n"
        b"Authentication-Results: relay.example.net; dkim=pass\r\n"
        b"authentication-results : (forged) MX.Example.Org. 1; dkim=pass\r\n"
        b'Authentication-Results: "mx.example.org"; iprev=pass\r\n'
    )
    message = head + b"\r\nAuthentication-Results: mx.example.org; in the body\r\n"

    assert without_forged_results(message, OURS) == (
        b"Subject: hi\r\n"
        b"Authentication-Results: relay.example.net; dkim=pass\r\n"
        b"\r\nAuthentication-Results: mx.example.org; in the body\r\n"
    )


@pytest.mark.parametrize(
    "message",
    [
        b"Subject: hi\r\n\r\nbody\r\n",
        b"Authentication-Results: mx.example.org.evil; spf=pass\r\n\r\nbody\r\n",
        b"X-Authentication-Results: mx.example.org; spf=pass\r\n\r\nbody\r\n",
        b"Subject: no body\r\n",
    ],
    ids=["none", "another-id", "another-field", "no-body"],
)
def test_a_message_without_forged_results_is_the_same_object(message: bytes) -> None:
    assert without_forged_results(message, OURS) is message


def test_a_header_block_with_a_bare_cr_is_left_alone() -> None:
    message = b"Authentication-Results: mx.example.org; x\r\nA: b\rc\r\n\r\nbody\r\n"
    assert without_forged_results(message, OURS) is message


async def test_forged_results_do_not_reach_the_route(
    gateway: Product, route: Sink, relay_domain: str
) -> None:
    rcpt = f"forged@{relay_domain}"
    forged = f"Authentication-Results: {HOSTNAME}; spf=pass; dkim=pass\r\n".encode()
    sender = "bob@sender.example"
    content = forged + message(sender, rcpt)
    code, _ = await asyncio.to_thread(send, gateway, sender, [rcpt], content)

    assert code == 250
    delivered = await route.wait_for(rcpt)
    head = delivered.content.split(b"\r\n\r\n", 1)[0].decode()
    assert head.count(f"Authentication-Results: {HOSTNAME}") == 1
    assert "spf=pass; dkim=pass" not in head
