"""The lists of SPEC §5 over HTTP: read, add, delete, import and export.

Every change is recorded in the audit trail with the name of the token that
made it. Entries whose `expires_at` has passed are never shown; the janitor
deletes their keys.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from services.admin.auth import TokenName, token_name
from services.admin.entries import DuplicateEntry, Skipped
from services.admin.problems import ApiError, invalid, responses, short
from services.admin.runtime import RuntimeDep
from services.admin.transfer import UnreadableImport, build, read_rows, to_csv
from shared.errors import InvalidEntry
from shared.lists import (
    CATALOG,
    LIST_NAMES,
    Entry,
    EntryRequest,
    ListSpec,
    Verify,
    new_entry,
)

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 16 << 20


class ListSummary(BaseModel):
    """A list, what its values are, and how many entries apply now."""

    name: str
    size: int
    value: str
    meaning: str
    fields: list[str]


class EntryView(BaseModel):
    """An entry as the API shows it; list-specific fields only where they
    belong, and never a password or its hash."""

    id: str
    value: str
    comment: str
    expires_at: datetime | None
    created_at: datetime
    route: str | None = None
    verify: Verify | None = None
    codes: list[str] | None = None


class ImportSkip(BaseModel):
    line: int
    value: str


class ImportResult(BaseModel):
    """How many rows were written; rows whose value was there are skipped."""

    created: int
    skipped: list[ImportSkip]


def _view(entry: Entry) -> EntryView:
    return EntryView.model_validate(entry.public())


def spec_or_404(name: str) -> ListSpec:
    spec = CATALOG.get(name)
    if spec is None:
        raise ApiError(404, f"there is no list named {short(name)}")
    return spec


ListName = Annotated[
    str,
    Path(
        description="One of the lists of SPEC §5",
        json_schema_extra={"enum": list(LIST_NAMES)},
        examples=["banned_ips"],
    ),
]

router = APIRouter(
    prefix="/api/v1/lists",
    tags=["lists"],
    dependencies=[Depends(token_name)],
    responses=responses(400, 401, 422, 503),
)


@router.get("", summary="Every list with its size")
async def list_lists(runtime: RuntimeDep) -> list[ListSummary]:
    sizes = await runtime.entries.sizes()
    return [
        ListSummary(
            name=spec.name,
            size=sizes[spec.name],
            value=spec.value,
            meaning=spec.meaning,
            fields=list(spec.fields),
        )
        for spec in CATALOG.values()
    ]


@router.get(
    "/{name}",
    summary="The entries of a list",
    response_model_exclude_unset=True,
    responses=responses(404),
)
async def list_entries(name: ListName, runtime: RuntimeDep) -> list[EntryView]:
    spec_or_404(name)
    return [_view(e) for e in await runtime.entries.entries(name)]


_ADD_EXAMPLES: dict[str, Any] = {
    "banned_ips": {
        "summary": "banned_ips: a network, for a week",
        "value": {"value": "192.0.2.0/24", "comment": "spam run", "expires_in": "7d"},
    },
    "relay_domains": {
        "summary": "relay_domains: a domain and its route",
        "value": {
            "value": "example.org",
            "route": "mx1.example.org:25",
            "verify": "list",
        },
    },
    "smtp_users": {
        "summary": "smtp_users: a user and a password",
        "value": {"value": "alice", "password": "correct horse battery"},
    },
    "rbl_zones": {
        "summary": "rbl_zones: a zone and its listing answers",
        "value": {"value": "zen.spamhaus.org", "codes": ["127.0.0.2-127.0.0.11"]},
    },
    "blocked_subjects": {
        "summary": "blocked_subjects: a regular expression",
        "value": {"value": "re:^urgent.*wire transfer"},
    },
}


@router.post(
    "/{name}",
    status_code=201,
    summary="Add an entry",
    response_model_exclude_unset=True,
    responses=responses(404, 409, 422),
)
async def add_entry(
    name: ListName,
    runtime: RuntimeDep,
    who: TokenName,
    request: Annotated[EntryRequest, Body(openapi_examples=_ADD_EXAMPLES)],
) -> EntryView:
    spec = spec_or_404(name)
    try:
        entry = await asyncio.to_thread(new_entry, spec.name, request)
    except InvalidEntry as exc:
        raise ApiError(422, str(exc)) from None
    try:
        await runtime.entries.add(name, entry)
    except DuplicateEntry as exc:
        raise ApiError(
            409,
            f"{short(exc.existing.value)} is already in {name} "
            f"(entry {exc.existing.id})",
        ) from None
    log.info("%s added %s to %s as %s", who, entry.value, name, entry.id)
    await runtime.audit.entry(who, "create", name, entry)
    return _view(entry)


@router.delete(
    "/{name}/{entry_id}",
    status_code=204,
    summary="Delete an entry",
    responses=responses(404),
)
async def delete_entry(
    name: ListName,
    entry_id: Annotated[
        str, Path(description="the entry's id", examples=["0f3a9c1b2d4e"])
    ],
    runtime: RuntimeDep,
    who: TokenName,
) -> Response:
    spec_or_404(name)
    entry = await runtime.entries.delete(name, entry_id)
    if entry is None:
        raise ApiError(404, f"{name} has no entry {short(entry_id)}")
    log.info("%s deleted %s (%s) from %s", who, entry.id, entry.value, name)
    await runtime.audit.entry(who, "delete", name, entry)
    return Response(status_code=204)


@router.get(
    "/{name}/export",
    summary="Export a list as JSON or CSV",
    response_model=list[EntryView],
    response_model_exclude_unset=True,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **responses(404),
    },
)
async def export_entries(
    name: ListName,
    runtime: RuntimeDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    spec = spec_or_404(name)
    entries = await runtime.entries.entries(name)
    if format == "json":
        return [_view(e) for e in entries]
    disposition = f'attachment; filename="{name}.csv"'
    return Response(
        to_csv(spec, entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/EntryRequest"},
                },
                "example": [{"value": "192.0.2.1"}, {"value": "2001:db8::/32"}],
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "value,comment,expires_at\n192.0.2.1,spam,\n",
            },
        },
    }
}


@router.post(
    "/{name}/import",
    summary="Import entries from JSON or CSV",
    description="All rows are checked first; if any is bad, nothing is "
    "written and the 422 names the line of each bad row. Values already in "
    "the list are skipped.",
    openapi_extra=_IMPORT_BODY,
    responses=responses(404, 413, 415, 422),
)
async def import_entries(
    name: ListName, request: Request, runtime: RuntimeDep, who: TokenName
) -> ImportResult:
    spec = spec_or_404(name)
    as_json = _is_json(request)
    try:
        rows = read_rows(await _body(request), as_json)
    except UnreadableImport as exc:
        raise invalid(exc.problems) from None
    entries, problems = await asyncio.to_thread(build, spec, rows)
    if problems:
        raise invalid(problems)
    created, skipped = await runtime.entries.add_many(name, entries)
    log.info("%s imported %d entries into %s", who, len(created), name)
    for entry in created:
        await runtime.audit.entry(who, "import", name, entry)
    return ImportResult(created=len(created), skipped=[_skip(s) for s in skipped])


def _skip(skipped: Skipped) -> ImportSkip:
    return ImportSkip(line=skipped.line, value=skipped.value)


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_IMPORT_BYTES:
            raise ApiError(413, f"an import body may hold {MAX_IMPORT_BYTES} bytes")
    return bytes(body)


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return True
    if media in ("text/csv", "application/csv"):
        return False
    raise ApiError(415, "send the entries as application/json or text/csv")
