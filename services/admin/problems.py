"""Error responses of the admin API.

Every 4xx and 503 answer has one JSON shape, `Problem`: a `detail` a person
can act on, and `errors` naming each bad field or import line. Validation
errors of FastAPI and pydantic are rewritten into that shape, so an operator
reads "rate_limit.period: 'fifteen' is not a duration like 30s, 15m, 1h or
2d" rather than a regular expression. A 500 stays Starlette's plain
"Internal Server Error"; the detail goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from shared.errors import BusError
from shared.settings import Duration

log = logging.getLogger(__name__)

_DURATION_PATTERN = Duration.__metadata__[0].pattern  # type: ignore[attr-defined]
_SOURCES = ("body", "query", "path", "header")


class ProblemItem(BaseModel):
    """One thing wrong with a request."""

    location: str | None = None
    line: int | None = None
    message: str


class Problem(BaseModel):
    """An error answer: what went wrong, and each problem found."""

    detail: str
    errors: list[ProblemItem] = []


class ApiError(Exception):
    """Raised by a route to answer with a `Problem`."""

    def __init__(
        self, status: int, detail: str, errors: Sequence[ProblemItem] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)


def invalid(errors: Sequence[ProblemItem]) -> ApiError:
    """A 422 whose detail sums up every problem."""
    shown = [_line(item) for item in errors[:5]]
    more = len(errors) - len(shown)
    detail = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    return ApiError(422, detail, errors)


def _line(item: ProblemItem) -> str:
    where = [f"line {item.line}"] if item.line is not None else []
    where += [item.location] if item.location else []
    return ": ".join([*where, item.message])


def short(value: Any, width: int = 60) -> str:
    """A value quoted for a message, cut to a readable length."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= width else text[: width - 3] + "..."
    return f"'{text}'" if isinstance(value, str) else text


def describe(errors: Iterable[Any], line: int | None = None) -> list[ProblemItem]:
    """Pydantic's error list as problems people can read."""
    items = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _SOURCES:
            loc = loc[1:]
        where = ".".join(loc) if error.get("type") != "json_invalid" else ""
        message = _message(error)
        items.append(ProblemItem(location=where or None, line=line, message=message))
    return items


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    value = error.get("input")
    pattern = (error.get("ctx") or {}).get("pattern")
    if kind == "string_pattern_mismatch" and pattern == _DURATION_PATTERN:
        return f"{short(value)} is not a duration like 30s, 15m, 1h or 2d"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "the body is not valid JSON"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "value_error" or isinstance(value, dict | list) or value is None:
        return message
    return f"{short(value)}: {message}"


def problem_response(status: int, problem: Problem, **headers: str) -> JSONResponse:
    return JSONResponse(problem.model_dump(), status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, Problem(detail=exc.detail, errors=exc.errors))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = invalid(describe(exc.errors()))
    return problem_response(422, Problem(detail=error.detail, errors=error.errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return problem_response(exc.status_code, Problem(detail=str(exc.detail)), **headers)


async def _bus_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: the bus failed: %r", request.method, request.url.path, exc)
    detail = "the message bus is unavailable; try again shortly"
    return problem_response(503, Problem(detail=detail), **{"Retry-After": "5"})


def install(app: FastAPI) -> None:
    """Register the handlers that turn errors into `Problem` answers."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(NatsError, _bus_down)
    app.add_exception_handler(BusError, _bus_down)
    app.add_exception_handler(TimeoutError, _bus_down)


def responses(
    *statuses: int, meaning: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer; `meaning`
    says what a status means where the usual text does not fit."""
    text = {
        400: "The body could not be read",
        401: "No bearer token, or not one of PERIMETER_ADMIN_TOKEN",
        404: "No such list or entry",
        409: "The value is already in the list",
        413: "The body is too large",
        415: "The body is neither JSON nor CSV",
        422: "The request does not validate; `errors` says where and why",
        503: "NATS is unreachable",
    }
    text |= meaning or {}
    return {s: {"model": Problem, "description": text[s]} for s in statuses}
