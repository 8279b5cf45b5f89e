"""Mail for a domain with no route and no smarthost goes to the domain's
mail hosts (RFC 5321 §5.1): best preference first, the next when one cannot
be reached, the domain itself when it has no MX, and never to a domain
that says it takes no mail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.client import message, send
from tests.support.dnsserver import DnsServer
from tests.support.operator import Operator
from tests.support.sink import Sink
from tests.support.stack import Product

SENDER = "alice@sender.example"


async def trusted(operator: Operator, unique: str) -> str:
    """A client in relay_networks, which may send to any domain."""
    client = f"100.64.77.{sum(map(ord, unique)) % 250 + 1}"
    await operator.add("relay_networks", client)
    return client


async def submit(gateway: Product, client: str, rcpt: str, sender: str = SENDER) -> int:
    code, _ = await asyncio.to_thread(
        send, gateway, sender, [rcpt], message(sender or "x@y.example", rcpt), client
    )
    return code


def with_mail_host(dns_server: DnsServer, domain: str) -> str:
    """`domain`, with the test's mail exchanger as its one MX host."""
    dns_server.zone(domain)
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", "127.0.0.1")
    return domain


def sender_with_mail_host(dns_server: DnsServer, unique: str) -> str:
    """A sender whose bounces the test's mail exchanger receives."""
    return f"alice@{with_mail_host(dns_server, f'{unique}.senders.example')}"


def null_mx_domain(dns_server: DnsServer, unique: str) -> str:
    """A domain that says it takes no mail (RFC 7505)."""
    domain = f"{unique}.nomail.example"
    dns_server.zone(domain)
    dns_server.add(domain, "MX", "0 .")
    return domain


async def failed_entry(operator: Operator, rcpt: str) -> dict[str, Any]:
    """The message kept in PERIMETER_FAILED for `rcpt`, once it is there."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = await operator.client.get("/queue", params={"state": "failed"})
        assert response.status_code == 200, response.text
        for entry in response.json():
            if rcpt in entry["recipients"]:
                return dict(entry)
        await asyncio.sleep(0.2)
    raise AssertionError(f"no failed entry for {rcpt}")


async def test_mail_goes_to_the_best_mail_host_that_answers(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = f"{unique}.outside.example"
    dns_server.zone(domain)
    # The best host has an address where nothing listens; the next takes it.
    dns_server.add(domain, "MX", f"10 down.{domain}.")
    dns_server.add(domain, "MX", f"20 up.{domain}.")
    dns_server.add(f"down.{domain}", "A", "127.0.0.9")
    dns_server.add(f"up.{domain}", "A", "127.0.0.1")
    client = await trusted(operator, unique)
    rcpt = f"bob@{domain}"

    assert await submit(gateway, client, rcpt) == 250
    delivered = await mail_exchanger.wait_for(rcpt, timeout=15)
    assert delivered.sender == SENDER
    assert b"Received: from client.test" in delivered.content


async def test_a_domain_without_mx_gets_its_mail_at_its_own_address(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = f"{unique}.implicit.example"
    dns_server.zone(domain)
    dns_server.add(domain, "A", "127.0.0.1")
    client = await trusted(operator, unique)
    rcpt = f"carol@{domain}"

    assert await submit(gateway, client, rcpt) == 250
    await mail_exchanger.wait_for(rcpt, timeout=15)


async def test_a_domain_with_a_null_mx_fails_for_good_and_is_bounced(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = null_mx_domain(dns_server, unique)
    sender = sender_with_mail_host(dns_server, unique)
    client = await trusted(operator, unique)
    rcpt = f"dave@{domain}"

    assert await submit(gateway, client, rcpt, sender) == 250
    entry = await failed_entry(operator, rcpt)
    assert "5.1.10" in entry["error"] and "null MX" in entry["error"]
    assert mail_exchanger.count(rcpt) == 0
    bounce = await mail_exchanger.wait_for(sender, timeout=15)
    assert bounce.sender == ""
    notice = bounce.content.decode("utf-8", "replace")
    assert "multipart/report; report-type=delivery-status" in notice
    assert f"Final-Recipient: rfc822; {rcpt}" in notice
    assert "Status: 5.1.10" in notice
    assert f"To: <{sender}>" in notice


async def test_a_recipient_the_route_refuses_after_250_is_bounced(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    refusing = Sink(rcpt_reply="550 5.1.1 no such user here")
    await refusing.start()
    domain = f"{unique}.inside.example"
    await operator.add("relay_domains", domain, route=refusing.route, verify="none")
    sender = sender_with_mail_host(dns_server, unique)
    rcpt = f"gone@{domain}"
    try:
        code, _ = await asyncio.to_thread(
            send, gateway, sender, [rcpt], message(sender, rcpt)
        )
        assert code == 250
        bounce = await mail_exchanger.wait_for(sender, timeout=15)
    finally:
        await refusing.stop()

    notice = bounce.content.decode("utf-8", "replace")
    assert "Status: 5.1.1" in notice
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user here" in notice
    assert "Subject: Hello" in notice  # the original's headers, part 3


async def test_a_bounce_that_fails_is_not_bounced(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = null_mx_domain(dns_server, unique)
    client = await trusted(operator, unique)
    rcpt = f"erin@{domain}"

    assert await submit(gateway, client, rcpt, sender="") == 250
    entry = await failed_entry(operator, rcpt)

    assert entry["sender"] == ""
    await asyncio.sleep(1.0)
    notices = [m for m in mail_exchanger.messages if entry["id"].encode() in m.content]
    assert notices == []


async def test_a_domain_whose_dns_fails_is_retried_and_delivered_when_it_answers(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = with_mail_host(dns_server, f"{unique}.flaky.example")
    dns_server.fail(domain)  # SERVFAIL: the DNS cannot say, for now
    client = await trusted(operator, unique)
    rcpt = f"frank@{domain}"

    assert await submit(gateway, client, rcpt) == 250
    await asyncio.sleep(2.0)  # a few tries, with the tests' short backoff
    assert mail_exchanger.count(rcpt) == 0
    response = await operator.client.get("/queue", params={"state": "failed"})
    assert all(rcpt not in entry["recipients"] for entry in response.json())

    dns_server.recover(domain)
    await mail_exchanger.wait_for(rcpt, timeout=15)
