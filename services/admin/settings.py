"""The operator's settings document (SPEC §6): GET and PATCH.

The document is the key `current` of the KV bucket `perimeter_settings`,
`shared.settings.Settings` as JSON. PATCH is a JSON merge patch (RFC 7396):
objects such as `rate_limit` or `modes` merge key by key, `null` removes a
key (a top-level setting then returns to its default, a rule in `modes` to
`enforce`), anything else replaces. The result is validated as a whole and
written with the revision it was read at; when another writer came first,
the patch is applied again to the newer document.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from services.admin.auth import TokenName, token_name
from services.admin.problems import ApiError, describe, invalid, responses
from services.admin.runtime import RuntimeDep
from shared.settings import Settings
from shared.store import SETTINGS_KEY

log = logging.getLogger(__name__)

ATTEMPTS = 5


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: `patch` applied to `target`."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class SettingsStore:
    """Reads and updates the settings document."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def current(self) -> tuple[Settings, int]:
        """The settings and their revision (0 if never written)."""
        try:
            stored = await self._kv.get(SETTINGS_KEY)
        except KeyNotFoundError:
            return Settings(), 0
        revision = stored.revision or 0
        try:
            return Settings.model_validate_json(stored.value or b""), revision
        except ValidationError:
            log.error("the stored settings do not validate; showing defaults")
            return Settings(), revision

    async def patch(self, changes: dict[str, Any]) -> tuple[Settings, Settings]:
        """Merge `changes` in; returns the settings before and after."""
        for _ in range(ATTEMPTS):
            before, revision = await self.current()
            after = _validated(merge_patch(before.model_dump(mode="json"), changes))
            if after == before:
                return before, after
            try:
                await self._write(after, revision)
            except KeyWrongLastSequenceError:
                log.info("settings changed while patching; trying again")
                continue
            return before, after
        raise ApiError(409, "the settings kept changing under this update; retry")

    async def _write(self, settings: Settings, revision: int) -> None:
        data = settings.model_dump_json().encode()
        if revision:
            await self._kv.update(SETTINGS_KEY, data, last=revision)
        else:
            await self._kv.create(SETTINGS_KEY, data)


def _validated(document: Any) -> Settings:
    try:
        return Settings.model_validate(document)
    except ValidationError as exc:
        raise invalid(describe(exc.errors())) from None


router = APIRouter(
    prefix="/api/v1",
    tags=["settings"],
    dependencies=[Depends(token_name)],
    responses=responses(400, 401, 422, 503),
)

_EXAMPLES = {
    "rate_limit": {
        "summary": "Allow 500 messages per 15 minutes",
        "value": {"rate_limit": {"messages": 500}},
    },
    "monitor_rbl": {
        "summary": "Only record what RBLs would reject",
        "value": {"modes": {"rbl": "monitor"}},
    },
    "reset_mode": {
        "summary": "Put a rule back to enforce",
        "value": {"modes": {"rbl": None}},
    },
}


@router.get("/settings", summary="The settings in force")
async def get_settings(runtime: RuntimeDep) -> Settings:
    settings, _ = await runtime.settings.current()
    return settings


@router.patch(
    "/settings",
    summary="Change some settings (JSON merge patch, RFC 7396)",
    responses=responses(409, 422),
)
async def patch_settings(
    runtime: RuntimeDep,
    who: TokenName,
    changes: Annotated[
        dict[str, Any],
        Body(
            description="The settings to change; objects merge, null resets.",
            openapi_examples=_EXAMPLES,
            media_type="application/json",
        ),
    ],
) -> Settings:
    before, after = await runtime.settings.patch(changes)
    if after != before:
        log.info("settings changed by %s: %s", who, sorted(changes))
        await runtime.audit.settings(
            who, before.model_dump(mode="json"), after.model_dump(mode="json")
        )
    return after
