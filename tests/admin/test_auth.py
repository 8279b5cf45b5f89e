"""Bearer tokens: 401 without a valid one, the token's name for the audit,
and /healthz open to probes."""

from __future__ import annotations

import httpx
import pytest

from services.admin.auth import TokenCheck, parse_tokens
from tests.admin.conftest import AUDITOR_TOKEN, OPS_TOKEN, AdminServer

BAD_HEADERS = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {OPS_TOKEN}x"}, id="token-plus-one"),
    pytest.param({"Authorization": f"Bearer {OPS_TOKEN[:-1]}"}, id="token-less-one"),
    pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    pytest.param({"Authorization": f"Basic {OPS_TOKEN}"}, id="basic-scheme"),
    pytest.param({"Authorization": f"ops:{OPS_TOKEN}"}, id="no-scheme"),
]

CALLS = [
    ("GET", "/api/v1/lists"),
    ("POST", "/api/v1/lists/banned_ips"),
    ("DELETE", "/api/v1/lists/banned_ips/0123456789ab"),
    ("PATCH", "/api/v1/settings"),
    ("GET", "/api/v1/decisions"),
    ("GET", "/api/v1/audit"),
    ("POST", "/api/v1/lists/banned_ips/import"),
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_every_call_without_a_valid_token_is_401(
    admin: AdminServer, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=admin.url, headers=headers) as client:
        for method, path in CALLS:
            response = await client.request(method, path, content=b"{not json")

            assert response.status_code == 401, (method, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert OPS_TOKEN not in response.text


@pytest.mark.parametrize("token", [OPS_TOKEN, AUDITOR_TOKEN], ids=["ops", "auditor"])
async def test_each_configured_token_is_accepted(
    admin: AdminServer, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=admin.url, headers=headers) as client:
        assert (await client.get("/api/v1/lists")).status_code == 200


async def test_healthz_needs_no_token_and_reports_nats(admin: AdminServer) -> None:
    async with httpx.AsyncClient(base_url=admin.url) as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_the_openapi_document_declares_bearer_security(
    admin: AdminServer,
) -> None:
    async with httpx.AsyncClient(base_url=admin.url) as client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")

    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/v1/lists"]["get"]["security"] == [{"bearer": []}]
    assert docs.status_code == 200


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("plain-token", ["admin"]),
        ("ops:t1,ci:t2", ["ops", "ci"]),
        (" ops : t1 , , ci:t2 ", ["ops", "ci"]),
        ("", []),
        ("ops:", []),
    ],
    ids=["plain", "named", "spaces", "empty", "no-secret"],
)
def test_tokens_are_read_from_the_environment_value(
    text: str, names: list[str]
) -> None:
    assert [t.name for t in parse_tokens(text)] == names


def test_a_token_is_identified_by_its_name_and_never_shown() -> None:
    tokens = parse_tokens("ops:t1,ci:t2")
    check = TokenCheck(tokens)

    assert check.identify("Bearer t2") == "ci"
    assert check.identify("bearer t1") == "ops"
    assert check.identify("Bearer t3") is None
    assert "t1" not in repr(tokens)
