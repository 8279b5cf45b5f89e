"""Settings over HTTP: GET, PATCH as a merge, validation, storage, audit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from services.admin.settings import merge_patch
from shared.settings import Settings
from shared.store import SETTINGS_BUCKET, SETTINGS_KEY


async def current(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/api/v1/settings")
    assert response.status_code == 200
    return dict(response.json())


async def test_get_returns_a_whole_valid_settings_document(
    api: httpx.AsyncClient,
) -> None:
    document = await current(api)

    assert Settings.model_validate(document).model_dump(mode="json") == document


async def test_patch_merges_nested_objects_and_leaves_the_rest(
    api: httpx.AsyncClient,
) -> None:
    before = await current(api)

    response = await api.patch(
        "/api/v1/settings",
        json={"rate_limit": {"messages": 120}, "auth_failures": {"ban": "2h"}},
    )

    after = response.json()
    assert response.status_code == 200
    assert after["rate_limit"] == {**before["rate_limit"], "messages": 120}
    assert after["auth_failures"] == {**before["auth_failures"], "ban": "2h"}
    unchanged = set(before) - {"rate_limit", "auth_failures"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert await current(api) == after


async def test_modes_merge_rule_by_rule_and_null_resets_one(
    api: httpx.AsyncClient,
) -> None:
    await api.patch("/api/v1/settings", json={"modes": {"spf": "monitor"}})
    await api.patch("/api/v1/settings", json={"modes": {"dkim": "off"}})
    both = (await current(api))["modes"]

    await api.patch("/api/v1/settings", json={"modes": {"spf": None}})

    assert (both["spf"], both["dkim"]) == ("monitor", "off")
    modes = (await current(api))["modes"]
    assert "spf" not in modes and modes["dkim"] == "off"


async def test_a_patch_is_stored_in_the_settings_bucket(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    await api.patch("/api/v1/settings", json={"max_recipients": 77})

    kv = await js.key_value(SETTINGS_BUCKET)
    stored = Settings.model_validate_json((await kv.get(SETTINGS_KEY)).value or b"")

    assert stored.max_recipients == 77


BAD = [
    pytest.param(
        {"rate_limit": {"period": "fifteen"}},
        "rate_limit.period: 'fifteen' is not a duration like 30s, 15m, 1h or 2d",
        id="period-in-words",
    ),
    pytest.param(
        {"auth_failures": {"ban": "1 hour"}}, "auth_failures.ban", id="ban-spaced"
    ),
    pytest.param({"max_recipients": 0}, "max_recipients", id="zero-recipients"),
    pytest.param({"modes": {"rbl": "sometimes"}}, "modes.rbl", id="unknown-mode"),
    pytest.param({"modes": {"no_rule": "off"}}, "modes.no_rule", id="unknown-rule"),
    pytest.param({"fail_open": ["nope"]}, "fail_open.0", id="unknown-fail-open"),
    pytest.param({"colour": "blue"}, "colour: is not a known field", id="unknown-key"),
    pytest.param({"rate_limit": "250/15m"}, "rate_limit", id="not-an-object"),
    pytest.param(
        {"sender_verification": "maybe"}, "sender_verification", id="bad-choice"
    ),
]


@pytest.mark.parametrize(("patch", "message"), BAD)
async def test_a_bad_value_is_422_and_changes_nothing(
    api: httpx.AsyncClient, patch: dict[str, Any], message: str
) -> None:
    before = await current(api)

    response = await api.patch("/api/v1/settings", json=patch)

    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert await current(api) == before


async def test_a_body_that_is_not_an_object_is_422(api: httpx.AsyncClient) -> None:
    response = await api.patch("/api/v1/settings", json=[1, 2])

    assert response.status_code == 422


async def test_a_settings_change_is_audited_with_before_and_after(
    api: httpx.AsyncClient,
) -> None:
    await api.patch("/api/v1/settings", json={"dictionary_threshold": 3})

    await api.patch("/api/v1/settings", json={"dictionary_threshold": 9})

    (record,) = (await api.get("/api/v1/audit?list=settings&limit=1")).json()
    assert (record["action"], record["token_name"]) == ("update", "ops")
    assert record["before"]["dictionary_threshold"] == 3
    assert record["after"]["dictionary_threshold"] == 9


@pytest.mark.parametrize(
    ("target", "patch", "merged"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
    ids=["add", "nested", "null-removes", "list-replaces", "scalar-to-object"],
)
def test_merge_patch_follows_rfc_7396(
    target: dict[str, Any], patch: dict[str, Any], merged: dict[str, Any]
) -> None:
    assert merge_patch(target, patch) == merged
