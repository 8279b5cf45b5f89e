"""The spine end to end: SMTP in, verdicts over NATS, JetStream, delivery."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import pytest

from shared import replies
from shared.rules import Rule
from tests.support.client import Dialogue, message, send
from tests.support.health import wait_healthy
from tests.support.natsserver import free_port
from tests.support.operator import Operator
from tests.support.sink import Sink
from tests.support.stack import HOSTNAME, Product, product

RELAY = replies.RULE_REPLIES[Rule.RELAY]


async def test_a_message_to_a_relay_domain_arrives_with_a_received_header(
    gateway: Product, route: Sink, relay_domain: str
) -> None:
    rcpt = f"alice@{relay_domain}"
    code, text = await asyncio.to_thread(
        send, gateway, "bob@sender.example", [rcpt], message("bob@sender.example", rcpt)
    )

    assert code == 250 and text.decode().startswith("2.0.0 Ok: queued as ")
    delivered = await route.wait_for(rcpt)
    head = delivered.content.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Authentication-Results: " + HOSTNAME)
    assert f"by {HOSTNAME} (Perimeter) with ESMTP id" in head
    assert delivered.sender == "bob@sender.example"


async def test_a_recipient_in_another_domain_is_refused_relay(
    gateway: Product,
) -> None:
    async with Dialogue(gateway) as smtp:
        await smtp.reply()
        await smtp.command("EHLO client.test")
        await smtp.command("MAIL FROM:<bob@sender.example>")
        answer = await smtp.command("RCPT TO:<carol@elsewhere.example>")

    assert answer == RELAY.render()


async def test_a_null_sender_is_accepted(
    gateway: Product, route: Sink, relay_domain: str
) -> None:
    rcpt = f"bounce@{relay_domain}"
    code, _ = await asyncio.to_thread(send, gateway, "", [rcpt], message("", rcpt))

    assert code == 250
    assert (await route.wait_for(rcpt)).sender == ""


@pytest.mark.parametrize(
    "inner",
    [b"\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\n"],
    ids=["lf-dot-crlf", "lf-dot-lf", "cr-dot-cr", "crlf-dot-lf"],
)
async def test_a_lone_dot_after_a_bare_line_end_does_not_end_the_data(
    gateway: Product, route: Sink, relay_domain: str, inner: bytes
) -> None:
    rcpt = f"smuggle{abs(hash(inner))}@{relay_domain}"
    smuggled = (
        b"MAIL FROM:<evil@sender.example>\r\nRCPT TO:<" + rcpt.encode() + b">\r\n"
    )
    async with Dialogue(gateway) as smtp:
        await smtp.reply()
        await smtp.command("EHLO client.test")
        await smtp.command("MAIL FROM:<bob@sender.example>")
        await smtp.command(f"RCPT TO:<{rcpt}>")
        await smtp.command("DATA")
        await smtp.send(b"Subject: one\r\n\r\nfirst" + inner + smuggled + b"DATA\r\n")
        await smtp.send(b"Subject: two\r\n\r\nsecond\r\n.\r\n")
        answer = await smtp.reply()

    assert answer.startswith("250 2.0.0 Ok: queued as ")
    delivered = await route.wait_for(rcpt)
    await asyncio.sleep(0.5)
    assert route.count(rcpt) == 1
    body = delivered.content.split(b"\r\n\r\n", 1)[1]
    assert b"first\r\n" in body and b"second" in body
    assert b"\n" not in body.replace(b"\r\n", b"")


async def test_a_twenty_megabyte_message_arrives_intact(
    gateway: Product, route: Sink, relay_domain: str
) -> None:
    rcpt = f"big@{relay_domain}"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    content = message("bob@sender.example", rcpt) + line * (20_000_000 // len(line))
    code, _ = await asyncio.to_thread(
        send, gateway, "bob@sender.example", [rcpt], content
    )

    assert code == 250
    delivered = await route.wait_for(rcpt, timeout=60)
    body = delivered.content.split(b"\r\n\r\n", 1)[1]
    assert (
        hashlib.sha256(body).digest()
        == hashlib.sha256(content.split(b"\r\n\r\n", 1)[1]).digest()
    )


async def test_a_message_over_the_size_limit_gets_552_at_mail(gateway: Product) -> None:
    async with Dialogue(gateway) as smtp:
        await smtp.reply()
        await smtp.command("EHLO client.test")
        answer = await smtp.command("MAIL FROM:<bob@sender.example> SIZE=999999999")

    assert answer == replies.TOO_BIG.render()


async def test_a_message_accepted_while_the_route_is_down_is_delivered_when_it_is_back(
    gateway: Product, operator: Operator, unique: str
) -> None:
    route = Sink(port=free_port())
    domain = f"{unique}.down.example"
    await operator.add("relay_domains", domain, route=route.route)
    rcpt = f"alice@{domain}"

    code, _ = await asyncio.to_thread(
        send, gateway, "bob@sender.example", [rcpt], message("bob@sender.example", rcpt)
    )
    await asyncio.sleep(1.5)
    await route.start()
    try:
        await route.wait_for(rcpt, timeout=15)
    finally:
        await route.stop()

    assert code == 250


async def test_two_reputation_replicas_both_answer(dns_server_session) -> None:
    """Each replica counts the verdicts it gave on its own /metrics."""
    ports = [free_port(), free_port()]
    running = product(
        dns_port=dns_server_session.address[1], replicas={"reputation": 0}
    )
    running.start()
    assert running.stack is not None
    for port in ports:
        running.stack.start_service(
            "reputation", {"PERIMETER_METRICS_LISTEN": f"127.0.0.1:{port}"}
        )
    try:
        await wait_healthy(ports)
        for _ in range(20):
            async with Dialogue(running) as smtp:
                await smtp.reply()
                await smtp.command("EHLO client.test")
                await smtp.command("MAIL FROM:<bob@sender.example>")
                await smtp.command("QUIT")
        counts = [await _mail_verdicts(port) for port in ports]
    finally:
        running.stop()
        running.nats.stop()

    assert all(count > 0 for count in counts), counts
    assert sum(counts) == 20


async def _mail_verdicts(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    for line in text.splitlines():
        if line.startswith('perimeter_stage_seconds_count{stage="mail"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_reputation_service_that_does_not_answer_gives_451_within_the_budget(
    dns_server_session,
) -> None:
    running = product(
        dns_port=dns_server_session.address[1], PERIMETER_STAGE_BUDGET="1.5"
    )
    running.start()
    assert running.stack is not None
    hung = running.stack.services["reputation"][0]
    try:
        await asyncio.sleep(1.0)
        os.kill(hung.pid, signal.SIGSTOP)
        async with Dialogue(running) as smtp:
            # Connect and HELO are the ingress's own checks (session_checks).
            greeting = await smtp.reply()
            await smtp.command("EHLO client.test")
            started = time.monotonic()
            answer = await smtp.command("MAIL FROM:<bob@sender.example>")
            waited = time.monotonic() - started
        os.kill(hung.pid, signal.SIGCONT)
    finally:
        running.stop()
        running.nats.stop()

    assert greeting.startswith("220 ")
    assert answer == replies.TEMPORARY_FAILURE.render()
    assert 1.4 < waited < 5.0


async def test_a_message_accepted_before_a_full_restart_is_delivered_once(
    dns_server_session,
) -> None:
    route = Sink(port=free_port())
    running = product(dns_port=dns_server_session.address[1])
    running.start()
    operator = Operator(running)
    try:
        await operator.add("relay_domains", "restart.example", route=route.route)
        rcpt = "alice@restart.example"
        code, _ = await asyncio.to_thread(
            send, running, "bob@sender.example", [rcpt], message("bob@x.example", rcpt)
        )
        assert code == 250
        await asyncio.to_thread(running.restart)
        await route.start()
        await route.wait_for(rcpt, timeout=20)
        await asyncio.sleep(3.0)
        assert route.count(rcpt) == 1
    finally:
        await operator.close()
        await route.stop()
        running.stop()
        running.nats.stop()
