"""Bulk import and export of a list, as JSON or CSV.

Export writes what GET shows: JSON, an array of entries; CSV, a header row
`id,value,comment,expires_at,created_at` and the list's own fields (`route`
and `verify`, or `codes` separated by spaces). smtp_users never export a
password or its hash, so their export cannot be imported again as it is.

Import takes the same shapes back. The columns `id` and `created_at` are
ignored (every imported entry gets a new id); an smtp_users row needs a
`password`. Every row is checked before anything is written: one bad row
fails the import with 422 and the line of every bad row (in a JSON array,
`line` is the 1-based position of the item).
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from pydantic import ValidationError

from services.admin.problems import ProblemItem, describe
from shared.errors import InvalidEntry
from shared.lists import Entry, EntryRequest, ListSpec, new_entry

MAX_ROWS = 50_000
BASE_COLUMNS = ("id", "value", "comment", "expires_at", "created_at")
IGNORED = frozenset({"id", "created_at"})
ACCEPTED = frozenset(EntryRequest.model_fields) | IGNORED

Row = tuple[int, dict[str, Any]]


class UnreadableImport(Exception):
    """The body cannot be read as rows; `problems` say why."""

    def __init__(self, problems: list[ProblemItem]) -> None:
        super().__init__(problems[0].message if problems else "unreadable")
        self.problems = problems


def columns(spec: ListSpec) -> tuple[str, ...]:
    own = tuple(f for f in spec.fields if f != "password")
    return BASE_COLUMNS + own


def to_csv(spec: ListSpec, entries: list[Entry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns(spec), extrasaction="ignore")
    writer.writeheader()
    for entry in entries:
        row = entry.public()
        row["expires_at"] = row["expires_at"] or ""
        if "codes" in row:
            row["codes"] = " ".join(row["codes"])
        writer.writerow(row)
    return out.getvalue()


def read_rows(body: bytes, as_json: bool) -> list[Row]:
    """The rows of an import body, with their line numbers."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _unreadable("the body is not UTF-8 text") from None
    rows = _json_rows(text) if as_json else _csv_rows(text)
    if not rows:
        raise _unreadable("there is no row to import")
    if len(rows) > MAX_ROWS:
        raise _unreadable(f"at most {MAX_ROWS} rows can be imported at once")
    return rows


def _unreadable(message: str, line: int | None = None) -> UnreadableImport:
    return UnreadableImport([ProblemItem(line=line, message=message)])


def _json_rows(text: str) -> list[Row]:
    try:
        items = json.loads(text)
    except ValueError:
        raise _unreadable("the body is not valid JSON") from None
    if not isinstance(items, list):
        raise _unreadable("the body must be a JSON array of entries")
    return [(n, item) for n, item in enumerate(items, start=1)]


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        header = list(reader.fieldnames or [])
        _check_header(header)
        rows = []
        for record in reader:
            if None in record or any(v is None for v in record.values()):
                raise _unreadable(
                    "the row does not have as many cells as the header",
                    reader.line_num,
                )
            rows.append((reader.line_num, _cells(record)))
    except csv.Error:
        raise _unreadable("this is not valid CSV", reader.line_num) from None
    return rows


def _check_header(header: list[str]) -> None:
    if "value" not in header:
        raise _unreadable(
            "the first line must name the columns, with at least 'value'", 1
        )
    unknown = [name for name in header if name not in ACCEPTED]
    if unknown:
        known = ", ".join(sorted(ACCEPTED))
        raise _unreadable(f"unknown columns {unknown}; columns are: {known}", 1)


def _cells(record: dict[str, Any]) -> dict[str, Any]:
    cells = {k: v for k, v in record.items() if v not in ("", None)}
    if "codes" in cells:
        cells["codes"] = [c for c in re.split(r"[\s,;]+", cells["codes"]) if c]
    return cells


def build(
    spec: ListSpec, rows: list[Row]
) -> tuple[list[tuple[int, Entry]], list[ProblemItem]]:
    """New entries from rows, or every problem found (CPU-heavy for
    smtp_users, which hash passwords: run in a thread)."""
    entries: list[tuple[int, Entry]] = []
    problems: list[ProblemItem] = []
    for line, fields in rows:
        try:
            entries.append((line, _entry(spec, fields)))
        except ValidationError as exc:
            problems += describe(exc.errors(), line=line)
        except InvalidEntry as exc:
            problems.append(ProblemItem(line=line, message=str(exc)))
        except _NotAnObject:
            problems.append(ProblemItem(line=line, message="expected an object"))
    return entries, problems


class _NotAnObject(Exception):
    pass


def _entry(spec: ListSpec, fields: Any) -> Entry:
    if not isinstance(fields, dict):
        raise _NotAnObject
    wanted = {k: v for k, v in fields.items() if k not in IGNORED}
    return new_entry(spec.name, EntryRequest.model_validate(wanted))
