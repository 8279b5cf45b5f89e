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


async def submit(gateway: Product, client: str, rcpt: str) -> int:
    code, _ = await asyncio.to_thread(
        send, gateway, SENDER, [rcpt], message(SENDER, rcpt), client
    )
    return code


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


async def test_a_domain_with_a_null_mx_fails_for_good(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    mail_exchanger: Sink,
    unique: str,
) -> None:
    domain = f"{unique}.nomail.example"
    dns_server.zone(domain)
    dns_server.add(domain, "MX", "0 .")
    client = await trusted(operator, unique)
    rcpt = f"dave@{domain}"

    assert await submit(gateway, client, rcpt) == 250
    entry = await failed_entry(operator, rcpt)
    assert "5.1.10" in entry["error"] and "null MX" in entry["error"]
    assert mail_exchanger.count(rcpt) == 0
