"""Waiting for services to say they are ready on /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx


async def wait_healthy(ports: Iterable[int], attempts: int = 150) -> None:
    """Until every port answers /healthz with 200 (about 30 s at most)."""
    ports = list(ports)
    codes: list[int] = []
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(attempts):
            codes = [await _status(http, port) for port in ports]
            if all(code == 200 for code in codes):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(
        f"services not healthy: {dict(zip(ports, codes, strict=False))}"
    )


async def _status(http: httpx.AsyncClient, port: int) -> int:
    try:
        return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code
    except httpx.TransportError:
        return 0
