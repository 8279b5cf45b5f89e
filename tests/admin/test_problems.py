"""Error answers: readable 422s, and a 500 that tells nothing."""

from __future__ import annotations

import httpx

from services.admin.app import create_app
from services.admin.problems import describe
from shared.settings import Environment, Settings
from tests.admin.conftest import OPS_TOKEN

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


async def test_an_unexpected_error_is_a_plain_500_without_its_text() -> None:
    app = create_app(Environment(admin_token=OPS_TOKEN))

    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/api/v1/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/api/v1/explode", headers=AUTH)

    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_a_body_that_is_not_json_gets_a_readable_422(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/api/v1/lists/banned_ips",
        content=b"{value: 1",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == "the body is not valid JSON"


def test_pydantic_errors_read_as_field_and_reason() -> None:
    try:
        Settings.model_validate({"rate_limit": {"period": "fifteen", "x": 1}})
    except ValueError as exc:
        items = describe(exc.errors())  # type: ignore[attr-defined]

    assert [(i.location, i.message) for i in items] == [
        ("rate_limit.period", "'fifteen' is not a duration like 30s, 15m, 1h or 2d"),
        ("rate_limit.x", "is not a known field"),
    ]
