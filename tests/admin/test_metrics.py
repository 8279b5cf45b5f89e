"""Prometheus scrapes the admin service on its API port, without a token."""

from __future__ import annotations

import httpx

from tests.admin.conftest import AdminServer


async def test_metrics_are_served_on_the_api_port_without_a_token(
    admin: AdminServer,
) -> None:
    async with httpx.AsyncClient(base_url=admin.url) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "python_info" in response.text
