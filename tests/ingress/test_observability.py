"""Every service of the local stack answers /healthz and /metrics, and the
counters move when a rule rejects."""

from __future__ import annotations

import asyncio

import httpx

from shared import replies
from shared.rules import Rule
from tests.support.client import Dialogue
from tests.support.health import wait_healthy
from tests.support.natsserver import free_port
from tests.support.stack import TOKEN, product
from tools.stack import wait_listening


async def test_each_service_serves_health_and_metrics_and_counts_rejections(
    dns_server_session,
) -> None:
    ports = {name: free_port() for name in ("ingress", "reputation", "content")}
    running = product(
        dns_port=dns_server_session.address[1],
        replicas={"ingress": 0, "reputation": 0, "content": 0},
    )
    running.start()
    assert running.stack is not None
    for name, port in ports.items():
        running.stack.start_service(
            name, {"PERIMETER_METRICS_LISTEN": f"127.0.0.1:{port}"}
        )
    try:
        await asyncio.to_thread(wait_listening, *running.smtp)
        async with httpx.AsyncClient(timeout=10) as http:
            await wait_healthy(ports.values())
            async with Dialogue(running) as smtp:
                await smtp.reply()
                refused = await smtp.command("EHLO 192.0.2.9")
            async with Dialogue(running) as smtp:
                await smtp.reply()
                await smtp.command("EHLO client.test")
                await smtp.command("MAIL FROM:<bob@sender.example>")
                no_relay = await smtp.command("RCPT TO:<carol@elsewhere.example>")
            await asyncio.sleep(0.5)
            texts = {
                name: (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                for name, port in ports.items()
            }
            admin = await http.get(
                running.admin_url + "/metrics",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            admin_health = await http.get(running.admin_url + "/healthz")
    finally:
        running.stop()
        running.nats.stop()

    assert refused == replies.RULE_REPLIES[Rule.HELO_IP].render()
    assert no_relay == replies.RULE_REPLIES[Rule.RELAY].render()
    # helo_ip is the ingress's own check; relay is the reputation service's.
    helo_ip = 'perimeter_rule_rejects_total{rule="helo_ip",stage="helo"} 1.0'
    assert helo_ip in texts["ingress"]
    relay = 'perimeter_rule_rejects_total{rule="relay",stage="rcpt"} 1.0'
    assert relay in texts["reputation"]
    assert 'perimeter_stage_seconds_count{stage="helo"} 2.0' in texts["ingress"]
    assert 'perimeter_stage_seconds_count{stage="rcpt"} 1.0' in texts["ingress"]
    assert "perimeter_clamd_errors_total" in texts["content"]
    assert admin.status_code == 200 and admin_health.status_code == 200
