"""Bulk import and export of a list, as JSON and as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

CSV = {"Content-Type": "text/csv"}


async def add(api: httpx.AsyncClient, name: str, body: dict[str, Any]) -> None:
    response = await api.post(f"/api/v1/lists/{name}", json=body)
    assert response.status_code == 201, response.text


async def clear(api: httpx.AsyncClient, name: str) -> None:
    for entry in (await api.get(f"/api/v1/lists/{name}")).json():
        await api.delete(f"/api/v1/lists/{name}/{entry['id']}")


def comparable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    drop = {"id", "created_at"}
    rows = [{k: v for k, v in e.items() if k not in drop} for e in entries]
    return sorted(rows, key=lambda e: e["value"])


async def test_a_json_export_imports_back_to_the_same_entries(
    api: httpx.AsyncClient,
) -> None:
    name = "dkim_exemptions"
    await clear(api, name)
    await add(api, name, {"value": "signed.example", "comment": "old MTA"})
    await add(api, name, {"value": "192.0.2.64/26", "expires_in": "2d"})
    exported = (await api.get(f"/api/v1/lists/{name}/export?format=json")).json()
    await clear(api, name)

    response = await api.post(f"/api/v1/lists/{name}/import", json=exported)

    assert response.status_code == 200, response.text
    assert response.json() == {"created": 2, "skipped": []}
    after = (await api.get(f"/api/v1/lists/{name}")).json()
    assert comparable(after) == comparable(exported)


async def test_a_csv_export_imports_back_with_routes_and_quoting(
    api: httpx.AsyncClient,
) -> None:
    name = "relay_domains"
    await clear(api, name)
    comment = 'sales, "EU" office'
    body = {"value": "csv.example", "route": "mx.csv.example:25", "comment": comment}
    await add(api, name, {**body, "verify": "callout"})
    await add(api, name, {"value": "csv2.example", "route": "[2001:db8::2]:2525"})
    before = (await api.get(f"/api/v1/lists/{name}")).json()
    exported = await api.get(f"/api/v1/lists/{name}/export?format=csv")
    await clear(api, name)

    response = await api.post(
        f"/api/v1/lists/{name}/import", content=exported.content, headers=CSV
    )

    assert exported.headers["content-type"].startswith("text/csv")
    header = next(csv.reader(io.StringIO(exported.text)))
    assert header[:2] == ["id", "value"] and "route" in header
    assert response.status_code == 200, response.text
    after = (await api.get(f"/api/v1/lists/{name}")).json()
    assert comparable(after) == comparable(before)


async def test_rbl_codes_travel_in_one_csv_cell(api: httpx.AsyncClient) -> None:
    body = "value,codes\nimported.example,127.0.0.2 127.0.0.5-127.0.0.7\n"

    response = await api.post(
        "/api/v1/lists/rbl_zones/import", content=body, headers=CSV
    )

    assert response.status_code == 200, response.text
    zones = (await api.get("/api/v1/lists/rbl_zones")).json()
    (zone,) = [z for z in zones if z["value"] == "imported.example"]
    assert zone["codes"] == ["127.0.0.2", "127.0.0.5-127.0.0.7"]


async def test_an_import_with_bad_rows_writes_nothing_and_names_each_line(
    api: httpx.AsyncClient,
) -> None:
    body = (
        "value,comment\n"
        "198.51.100.31,good\n"
        "10.0.0.300,typo\n"
        "198.51.100.32,good\n"
        "not-an-ip,worse\n"
    )

    response = await api.post(
        "/api/v1/lists/approved_ips/import", content=body, headers=CSV
    )

    assert response.status_code == 422
    problem = response.json()
    assert [e["line"] for e in problem["errors"]] == [3, 5]
    assert (
        "line 3: '10.0.0.300' is not an IP address or CIDR network" in problem["detail"]
    )
    values = {e["value"] for e in (await api.get("/api/v1/lists/approved_ips")).json()}
    assert "198.51.100.31" not in values


async def test_a_bad_json_item_is_named_by_its_position(api: httpx.AsyncClient) -> None:
    items = [{"value": "ok.example"}, {"value": "bad domain"}, "not an object"]

    response = await api.post("/api/v1/lists/spf_exemptions/import", json=items)

    assert response.status_code == 422
    assert [e["line"] for e in response.json()["errors"]] == [2, 3]


async def test_values_already_listed_are_skipped(api: httpx.AsyncClient) -> None:
    await add(api, "banned_domains", {"value": "already.example"})
    items = [{"value": "ALREADY.example"}, {"value": "new-one.example"}]

    response = await api.post("/api/v1/lists/banned_domains/import", json=items)

    assert response.json() == {
        "created": 1,
        "skipped": [{"line": 1, "value": "already.example"}],
    }


async def test_an_import_is_audited_entry_by_entry(api: httpx.AsyncClient) -> None:
    items = [{"value": "audit-a.example"}, {"value": "audit-b.example"}]

    await api.post("/api/v1/lists/spf_exemptions/import", json=items)

    records = (await api.get("/api/v1/audit?list=spf_exemptions&limit=2")).json()
    assert {(r["action"], r["value"]) for r in records} == {
        ("import", "audit-a.example"),
        ("import", "audit-b.example"),
    }


async def test_an_import_needs_a_header_and_a_known_format(
    api: httpx.AsyncClient,
) -> None:
    no_header = await api.post(
        "/api/v1/lists/banned_ips/import", content="192.0.2.1\n", headers=CSV
    )
    plain = await api.post(
        "/api/v1/lists/banned_ips/import",
        content="value\n192.0.2.1\n",
        headers={"Content-Type": "text/plain"},
    )

    assert no_header.status_code == 422
    assert "'value'" in no_header.json()["detail"]
    assert plain.status_code == 415


async def test_smtp_users_import_hashes_passwords(api: httpx.AsyncClient) -> None:
    body = "value,password\nimported-user,a long password\n"

    response = await api.post(
        "/api/v1/lists/smtp_users/import", content=body, headers=CSV
    )

    assert response.status_code == 200
    exported = (await api.get("/api/v1/lists/smtp_users/export?format=csv")).text
    assert "imported-user" in exported and "a long password" not in exported
