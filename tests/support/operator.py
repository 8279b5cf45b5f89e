"""The operator's side: the admin API over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.stack import TOKEN, Product

# SPEC §1: a change is in force on every replica within 2 s. The watchers
# apply it in milliseconds; this is the margin the tests leave.
SETTLE = 0.5


class Operator:
    def __init__(self, product: Product) -> None:
        self.client = httpx.AsyncClient(
            base_url=product.admin_url + "/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10.0,
        )

    async def add(self, list_name: str, value: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post(
            f"/lists/{list_name}", json={"value": value, **fields}
        )
        assert response.status_code == 201, response.text
        await asyncio.sleep(SETTLE)
        return dict(response.json())

    async def remove(self, list_name: str, entry_id: str) -> None:
        response = await self.client.delete(f"/lists/{list_name}/{entry_id}")
        assert response.status_code == 204, response.text
        await asyncio.sleep(SETTLE)

    async def settings(self, **changes: Any) -> dict[str, Any]:
        response = await self.client.patch("/settings", json=changes)
        assert response.status_code == 200, response.text
        await asyncio.sleep(SETTLE)
        return dict(response.json())

    async def close(self) -> None:
        await self.client.aclose()
