"""The lists over HTTP: validation, duplicates, deletion, secrets, expiry
and the audit trail, against a real admin server and nats-server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from shared.lists import ListIndex, SmtpUserEntry, parse_entry
from shared.store import LISTS_BUCKET
from tests.admin.conftest import AUDITOR_TOKEN

GOOD: list[Any] = [
    pytest.param("banned_ips", {"value": "192.0.2.1"}, "192.0.2.1", id="ipv4"),
    pytest.param(
        "banned_ips", {"value": "198.51.100.7/24"}, "198.51.100.0/24", id="ipv4-cidr"
    ),
    pytest.param("banned_ips", {"value": "2001:DB8:0:0::1"}, "2001:db8::1", id="ipv6"),
    pytest.param(
        "banned_ips",
        {"value": "2001:db8:abcd::/48"},
        "2001:db8:abcd::/48",
        id="v6-cidr",
    ),
    pytest.param(
        "banned_ips", {"value": "::ffff:203.0.113.5"}, "203.0.113.5", id="v4-mapped"
    ),
    pytest.param("banned_ips", {"value": "192.0.2.9/32"}, "192.0.2.9", id="host-cidr"),
    pytest.param(
        "banned_domains", {"value": "Spam.EXAMPLE."}, "spam.example", id="domain"
    ),
    pytest.param(
        "banned_domains",
        {"value": "bücher.example"},
        "xn--bcher-kva.example",
        id="idna",
    ),
    pytest.param(
        "approved_ips", {"value": "198.51.100.8"}, "198.51.100.8", id="appr-ip"
    ),
    pytest.param(
        "approved_senders",
        {"value": "Partner@Example.COM"},
        "Partner@example.com",
        id="address",
    ),
    pytest.param(
        "approved_senders",
        {"value": "user@bücher.example"},
        "user@xn--bcher-kva.example",
        id="idna-address",
    ),
    pytest.param(
        "approved_senders",
        {"value": "partner.example"},
        "partner.example",
        id="sndr-dom",
    ),
    pytest.param(
        "relay_domains",
        {"value": "Relay.Example", "route": "MX.relay.example:2525", "verify": "list"},
        "relay.example",
        id="relay",
    ),
    pytest.param(
        "relay_networks", {"value": "10.20.0.0/16"}, "10.20.0.0/16", id="relay-net"
    ),
    pytest.param(
        "smtp_users",
        {"value": "carol", "password": "long enough pw"},
        "carol",
        id="user",
    ),
    pytest.param(
        "valid_recipients",
        {"value": "Bob@Example.ORG"},
        "Bob@example.org",
        id="recipient",
    ),
    pytest.param(
        "valid_recipients",
        {"value": "@Catchall.Example"},
        "@catchall.example",
        id="catch-all",
    ),
    pytest.param(
        "rbl_zones",
        {"value": "dnsbl.example.net", "codes": ["127.0.0.2", "127.0.0.4-127.0.0.6"]},
        "dnsbl.example.net",
        id="zone",
    ),
    pytest.param("blocked_extensions", {"value": ".DOCM"}, "docm", id="extension"),
    pytest.param(
        "blocked_subjects", {"value": "Cheap Watches"}, "Cheap Watches", id="subject"
    ),
    pytest.param(
        "blocked_subjects",
        {"value": r"re:^urgent\s+transfer"},
        r"re:^urgent\s+transfer",
        id="regex",
    ),
    pytest.param(
        "empty_reply_exemptions", {"value": "192.0.2.77"}, "192.0.2.77", id="er-ip"
    ),
    pytest.param(
        "empty_reply_exemptions",
        {"value": "News@Lists.Example.org"},
        "News@lists.example.org",
        id="er-address",
    ),
    pytest.param(
        "empty_reply_exemptions",
        {"value": "lists.example.net"},
        "lists.example.net",
        id="er-domain",
    ),
    pytest.param(
        "dnsbl_exemptions", {"value": "203.0.113.0/25"}, "203.0.113.0/25", id="dnsbl"
    ),
    pytest.param(
        "spf_exemptions", {"value": "forwarder.example"}, "forwarder.example", id="spf"
    ),
    pytest.param(
        "ratelimit_exemptions",
        {"value": "2001:db8:1::/48"},
        "2001:db8:1::/48",
        id="rl-net",
    ),
    pytest.param(
        "ratelimit_exemptions", {"value": "bulk-sender"}, "bulk-sender", id="rl-user"
    ),
    pytest.param("av_exemptions", {"value": "10.9.8.7"}, "10.9.8.7", id="av"),
    pytest.param(
        "dkim_exemptions", {"value": "legacy.example"}, "legacy.example", id="dkim-dom"
    ),
    pytest.param(
        "dkim_exemptions", {"value": "192.0.2.128/25"}, "192.0.2.128/25", id="dkim-net"
    ),
    pytest.param(
        "auth_blacklist", {"value": "192.0.2.200"}, "192.0.2.200", id="auth-bl"
    ),
]

BAD: list[Any] = [
    pytest.param(
        "banned_ips",
        {"value": "10.0.0.300"},
        "'10.0.0.300' is not an IP address or CIDR network",
        id="bad-octet",
    ),
    pytest.param("banned_ips", {"value": "192.0.2.0/33"}, "CIDR", id="bad-prefix"),
    pytest.param("banned_ips", {"value": "2001:db8::g"}, "IP address", id="bad-v6"),
    pytest.param("banned_ips", {"value": "example.com"}, "IP address", id="not-ip"),
    pytest.param(
        "banned_domains",
        {"value": "exa mple.com"},
        "is not a domain name",
        id="space-domain",
    ),
    pytest.param(
        "banned_domains", {"value": "-bad.example"}, "not a domain", id="hyphen"
    ),
    pytest.param(
        "banned_domains", {"value": "*.spam.example"}, "without '*.'", id="wildcard"
    ),
    pytest.param("banned_domains", {"value": "a..b"}, "not a domain", id="empty-label"),
    pytest.param("approved_ips", {"value": "300.1.1.1"}, "IP address", id="appr-bad"),
    pytest.param(
        "approved_senders", {"value": "user@"}, "not an email address", id="no-domain"
    ),
    pytest.param(
        "approved_senders",
        {"value": "two words@example.com"},
        "not an email address",
        id="space-local",
    ),
    pytest.param(
        "relay_domains", {"value": "norelay.example"}, "needs a route", id="no-route"
    ),
    pytest.param(
        "relay_domains",
        {"value": "r.example", "route": "mx.example:99999"},
        "port",
        id="bad-port",
    ),
    pytest.param(
        "relay_domains",
        {"value": "r.example", "route": "mx:25", "verify": "sometimes"},
        "verify",
        id="bad-verify",
    ),
    pytest.param("relay_networks", {"value": "10.0.0.0/8/2"}, "CIDR", id="relay-bad"),
    pytest.param("smtp_users", {"value": "dave"}, "needs a password", id="no-pw"),
    pytest.param(
        "smtp_users",
        {"value": "dave", "password": "short"},
        "at least 8 characters",
        id="short-pw",
    ),
    pytest.param(
        "smtp_users",
        {"value": "da ve", "password": "long enough pw"},
        "not a user name",
        id="space-user",
    ),
    pytest.param(
        "valid_recipients",
        {"value": "bob"},
        "is not an email address, or @domain",
        id="no-at",
    ),
    pytest.param("valid_recipients", {"value": "@"}, "catch-all", id="bare-at"),
    pytest.param(
        "rbl_zones",
        {"value": "z.example", "codes": ["127.0.0.300"]},
        "code '127.0.0.300'",
        id="bad-code",
    ),
    pytest.param(
        "rbl_zones",
        {"value": "z.example", "codes": ["127.0.0.9-127.0.0.2"]},
        "range",
        id="backwards-range",
    ),
    pytest.param(
        "rbl_zones", {"value": "z.example", "codes": []}, "at least one", id="no-codes"
    ),
    pytest.param(
        "blocked_extensions", {"value": "tar.gz"}, "without dots", id="dotted-ext"
    ),
    pytest.param(
        "blocked_subjects",
        {"value": "re:(unclosed"},
        "is not a regular expression",
        id="bad-regex",
    ),
    pytest.param(
        "blocked_subjects", {"value": "re:.*"}, "every subject", id="match-all"
    ),
    pytest.param("blocked_subjects", {"value": "   "}, "required", id="blank"),
    pytest.param(
        "empty_reply_exemptions",
        {"value": "10.0.0.300"},
        "not an IP address or CIDR",
        id="er-bad-ip",
    ),
    pytest.param(
        "empty_reply_exemptions",
        {"value": "not a domain"},
        "IP address, CIDR network, email address or domain",
        id="er-bad",
    ),
    pytest.param("dnsbl_exemptions", {"value": "203.0.113.0/25x"}, "CIDR", id="dnsbl"),
    pytest.param(
        "spf_exemptions", {"value": "1.2.3.4"}, "not a domain name", id="spf-ip"
    ),
    pytest.param(
        "ratelimit_exemptions", {"value": "10.0.0.300"}, "IP address", id="rl-bad-ip"
    ),
    pytest.param(
        "ratelimit_exemptions", {"value": "two words"}, "user name", id="rl-space"
    ),
    pytest.param("av_exemptions", {"value": "10.9.8"}, "IP address", id="av-bad"),
    pytest.param(
        "dkim_exemptions", {"value": "legacy..example"}, "domain", id="dkim-bad"
    ),
    pytest.param(
        "auth_blacklist", {"value": "192.0.2.0/24"}, "not an IP address", id="auth-net"
    ),
    pytest.param(
        "banned_ips",
        {"value": "192.0.2.1", "route": "mx:25"},
        "'route' applies only to relay_domains",
        id="stray-field",
    ),
    pytest.param(
        "banned_ips",
        {"value": "192.0.2.1", "expires_at": "2001-01-01T00:00:00Z"},
        "in the past",
        id="past-expiry",
    ),
    pytest.param(
        "banned_ips",
        {"value": "192.0.2.1", "colour": "blue"},
        "colour: is not a known field",
        id="unknown-field",
    ),
    pytest.param(
        "banned_ips", {"comment": "no value"}, "value: is required", id="no-value"
    ),
]


@pytest.mark.parametrize(("name", "body", "stored"), GOOD)
async def test_every_list_accepts_a_good_value_in_canonical_form(
    api: httpx.AsyncClient, name: str, body: dict[str, Any], stored: str
) -> None:
    response = await api.post(f"/api/v1/lists/{name}", json=body)

    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["value"] == stored
    listed = (await api.get(f"/api/v1/lists/{name}")).json()
    assert entry["id"] in {e["id"] for e in listed}


@pytest.mark.parametrize(("name", "body", "message"), BAD)
async def test_every_list_rejects_a_malformed_value_with_a_readable_422(
    api: httpx.AsyncClient, name: str, body: dict[str, Any], message: str
) -> None:
    response = await api.post(f"/api/v1/lists/{name}", json=body)

    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert "Traceback" not in response.text


async def test_a_relay_domain_keeps_its_normalised_route_and_verify(
    api: httpx.AsyncClient,
) -> None:
    body = {"value": "routes.example", "route": "[2001:DB8::25]:2525"}

    entry = (await api.post("/api/v1/lists/relay_domains", json=body)).json()

    assert (entry["route"], entry["verify"]) == ("[2001:db8::25]:2525", "none")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/lists/no_such_list"),
        ("POST", "/api/v1/lists/no_such_list"),
        ("DELETE", "/api/v1/lists/no_such_list/0123456789ab"),
        ("GET", "/api/v1/lists/no_such_list/export"),
        ("DELETE", "/api/v1/lists/banned_ips/0123456789ab"),
        ("DELETE", "/api/v1/lists/banned_ips/not-an-id"),
    ],
    ids=["get-list", "post-list", "delete-list", "export", "entry", "bad-id"],
)
async def test_an_unknown_list_or_entry_is_404(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    body = {"value": "192.0.2.1"} if method == "POST" else None

    response = await api.request(method, path, json=body)

    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "first", "again"),
    [
        ("banned_ips", "192.0.2.50", "192.0.2.50/32"),
        ("banned_ips", "2001:db8:50::1", "2001:DB8:50:0:0:0:0:1"),
        ("banned_domains", "dup.example", "DUP.Example."),
        ("blocked_subjects", "Lottery Win", "lottery win"),
        ("valid_recipients", "Eve@dup.example", "eve@DUP.example"),
    ],
    ids=["ipv4", "ipv6", "domain", "subject", "address"],
)
async def test_the_same_value_twice_is_409(
    api: httpx.AsyncClient, name: str, first: str, again: str
) -> None:
    created = await api.post(f"/api/v1/lists/{name}", json={"value": first})
    assert created.status_code == 201

    response = await api.post(f"/api/v1/lists/{name}", json={"value": again})

    assert response.status_code == 409
    assert created.json()["id"] in response.json()["detail"]


async def test_a_deleted_entry_is_204_then_gone(api: httpx.AsyncClient) -> None:
    path = "/api/v1/lists/dnsbl_exemptions"
    entry = (await api.post(path, json={"value": "198.51.100.99"})).json()

    deleted = await api.delete(f"{path}/{entry['id']}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = (await api.get(path)).json()
    assert entry["id"] not in {e["id"] for e in listed}
    assert (await api.delete(f"{path}/{entry['id']}")).status_code == 404


async def test_a_password_is_stored_hashed_and_never_returned(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    secret = "s3cret-passw0rd"
    body = {"value": "mallory", "password": secret}

    created = await api.post("/api/v1/lists/smtp_users", json=body)

    entry = created.json()
    shown = [
        created.text,
        (await api.get("/api/v1/lists/smtp_users")).text,
        (await api.get("/api/v1/lists/smtp_users/export?format=csv")).text,
        (await api.get("/api/v1/lists/smtp_users/export")).text,
        (await api.get("/api/v1/audit?list=smtp_users")).text,
    ]
    assert not any(secret in text or "argon2" in text for text in shown)
    assert "password" not in entry and "password_hash" not in entry
    kv = await js.key_value(LISTS_BUCKET)
    stored = parse_entry(
        "smtp_users", (await kv.get(f"smtp_users.{entry['id']}")).value or b""
    )
    assert isinstance(stored, SmtpUserEntry)
    assert stored.password_hash.startswith("$argon2id$")
    assert stored.check_password(secret) and not stored.check_password("guess")


async def test_an_expired_entry_is_not_listed_and_the_janitor_deletes_it(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    kv = await js.key_value(LISTS_BUCKET)
    past = datetime.now(UTC) - timedelta(minutes=1)
    entry = {
        "id": "e0e0e0e0e0e0",
        "value": "192.0.2.222",
        "comment": "",
        "expires_at": past.isoformat(),
        "created_at": past.isoformat(),
    }
    await kv.put("banned_ips.e0e0e0e0e0e0", json.dumps(entry).encode())

    listed = (await api.get("/api/v1/lists/banned_ips")).json()

    assert "e0e0e0e0e0e0" not in {e["id"] for e in listed}
    await _until_gone(kv, "banned_ips.e0e0e0e0e0e0")
    audit = (await api.get("/api/v1/audit?list=banned_ips")).json()
    assert any(r["action"] == "expire" and r["id"] == "e0e0e0e0e0e0" for r in audit)


async def _until_gone(kv: Any, key: str) -> None:
    async with asyncio.timeout(5.0):
        while True:
            try:
                await kv.get(key)
            except KeyNotFoundError:
                return
            await asyncio.sleep(0.1)


async def test_an_entry_with_a_lifetime_stops_matching_in_the_index(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    body = {"value": "203.0.113.77", "expires_in": "1h"}
    entry = (await api.post("/api/v1/lists/banned_ips", json=body)).json()
    kv = await js.key_value(LISTS_BUCKET)
    key = f"banned_ips.{entry['id']}"
    stored = (await kv.get(key)).value or b""
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    now_index, later_index = ListIndex(), ListIndex(clock=later.timestamp)

    for index in (now_index, later_index):
        index.apply(key, stored)

    assert now_index.ip_in("banned_ips", "203.0.113.77") is not None
    assert later_index.ip_in("banned_ips", "203.0.113.77") is None
    assert later_index.entries("banned_ips") == []


async def test_the_audit_records_each_change_with_the_token_name(
    api: httpx.AsyncClient,
) -> None:
    headers = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
    path = "/api/v1/lists/spf_exemptions"
    body = {"value": "audited.example"}
    entry = (await api.post(path, json=body, headers=headers)).json()
    await api.delete(f"{path}/{entry['id']}")

    records = (await api.get("/api/v1/audit?list=spf_exemptions&limit=2")).json()

    assert [(r["action"], r["token_name"]) for r in records] == [
        ("delete", "ops"),
        ("create", "auditor"),
    ]
    assert {r["value"] for r in records} == {"audited.example"}
    assert all(r["id"] == entry["id"] for r in records)


async def test_lists_reports_every_list_with_its_size(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/lists/av_exemptions", json={"value": "10.77.0.0/16"})

    sizes = {s["name"]: s["size"] for s in (await api.get("/api/v1/lists")).json()}
    entries = (await api.get("/api/v1/lists/av_exemptions")).json()

    assert len(sizes) == 18
    assert any(entry["value"] == "10.77.0.0/16" for entry in entries)
    assert sizes["av_exemptions"] == len(entries)
