"""The audit trail: every change to a list, to the settings or to the queue.

Each change is one JSON record on `perimeter.audit.{list}` (or
`perimeter.audit.settings`, `perimeter.audit.queue`) in the stream
PERIMETER_AUDIT, which keeps a year. A record names the token that made
the change, never a password. GET /api/v1/audit reads the newest records
back.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from services.admin.auth import token_name
from services.admin.problems import ApiError, responses
from services.admin.runtime import RuntimeDep
from services.admin.tail import SCAN_LIMIT, newest
from shared.lists import CATALOG, Entry
from shared.store import AUDIT_STREAM, AUDIT_SUBJECTS

log = logging.getLogger(__name__)

Action = Literal["create", "delete", "update", "import", "expire", "retry", "drop"]
SETTINGS = "settings"
QUEUE = "queue"


class AuditRecord(BaseModel):
    """One change: when, by which token, what."""

    time: datetime
    token_name: str
    action: Action
    list: str
    id: str | None = None
    value: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AuditLog:
    """Publishes audit records and reads them back."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def entry(self, token: str, action: Action, name: str, entry: Entry) -> None:
        """Record a change to one list entry."""
        await self._publish(
            AuditRecord(
                time=_now(),
                token_name=token,
                action=action,
                list=name,
                id=entry.id,
                value=entry.value,
            )
        )

    async def settings(
        self, token: str, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        """Record a change of the settings document."""
        record = AuditRecord(
            time=_now(),
            token_name=token,
            action="update",
            list=SETTINGS,
            before=before,
            after=after,
        )
        await self._publish(record)

    async def message(
        self,
        token: str,
        action: Action,
        queue_id: str,
        before: dict[str, Any],
        after: dict[str, Any] | None = None,
    ) -> None:
        """Record an operator's retry or drop of a failed message."""
        record = AuditRecord(
            time=_now(),
            token_name=token,
            action=action,
            list=QUEUE,
            id=queue_id,
            before=before,
            after=after,
        )
        await self._publish(record)

    async def newest(self, name: str | None, limit: int) -> list[AuditRecord]:
        subject = f"perimeter.audit.{name}" if name else AUDIT_SUBJECTS
        return await newest(self._js, AUDIT_STREAM, subject, limit, _parse)

    async def _publish(self, record: AuditRecord) -> None:
        # The change is made already; a lost record is logged, not raised.
        try:
            data = record.model_dump_json().encode()
            await self._js.publish(f"perimeter.audit.{record.list}", data)
        except Exception:
            log.exception("could not record %s on %s", record.action, record.list)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _parse(data: bytes) -> AuditRecord | None:
    try:
        return AuditRecord.model_validate_json(data)
    except ValidationError:
        log.debug("skipping an unreadable audit record")
        return None


router = APIRouter(
    prefix="/api/v1",
    tags=["audit"],
    dependencies=[Depends(token_name)],
    responses=responses(400, 401, 422, 503),
)


@router.get(
    "/audit",
    summary="Recent changes to lists, settings and the queue, newest first",
    description="Reads the last "
    f"{SCAN_LIMIT:,} audit records at most; `list` narrows to one list "
    "(or `settings`, or `queue` for retried and dropped messages).",
    responses=responses(422),
)
async def read_audit(
    runtime: RuntimeDep,
    list_name: Annotated[
        str | None,
        Query(alias="list", description="a list name, settings or queue"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[AuditRecord]:
    if list_name is not None and list_name not in (*CATALOG, SETTINGS, QUEUE):
        raise ApiError(422, f"there is no list named '{list_name[:60]}'")
    return await runtime.audit.newest(list_name, limit)
