"""Bearer tokens of the admin API (SPEC §6).

PERIMETER_ADMIN_TOKEN holds one token, or several as `name:token,...` so the
audit can say which one made a change; a token written alone is named
"admin". Every path under /api/ needs `Authorization: Bearer <token>`; the
check runs in a middleware, before the body is read, so a caller without a
token learns nothing but 401. Tokens are compared with
`hmac.compare_digest` against every configured token, whatever matches.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from services.admin.problems import Problem, problem_response

log = logging.getLogger(__name__)

DEFAULT_NAME = "admin"
PROTECTED_PREFIX = "/api/"


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret: bytes

    def __repr__(self) -> str:
        return f"Token(name={self.name!r})"  # never the secret


def parse_tokens(text: str) -> tuple[Token, ...]:
    """Tokens from `token` or `name:token,name2:token2`."""
    tokens = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, colon, secret = item.partition(":")
        if not colon:
            name, secret = DEFAULT_NAME, item
        if name.strip() and secret.strip():
            tokens.append(Token(name.strip(), secret.strip().encode()))
    return tuple(tokens)


class TokenCheck:
    """Which configured token, if any, an Authorization header carries."""

    def __init__(self, tokens: tuple[Token, ...]) -> None:
        self._tokens = tokens
        if not tokens:
            log.warning("PERIMETER_ADMIN_TOKEN is not set: every API call gets 401")

    def identify(self, header: str | None) -> str | None:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        given = credentials.strip().encode()
        found = None
        for token in self._tokens:
            if hmac.compare_digest(given, token.secret) and found is None:
                found = token.name
        return found


class BearerAuth:
    """ASGI middleware: 401 for any /api/ request without a valid token."""

    def __init__(self, app: ASGIApp, check: TokenCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        name = self.check.identify(header)
        if name is None:
            client = (scope.get("client") or ("-",))[0]
            log.info("401 for %s %s from %s", scope.get("method"), path, client)
            problem = Problem(detail="a valid bearer token is required")
            response = problem_response(401, problem, **{"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["token_name"] = name
        await self.app(scope, receive, send)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token of PERIMETER_ADMIN_TOKEN",
)


def token_name(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The name of the token the caller used (set by `BearerAuth`)."""
    return str(getattr(request.state, "token_name", "unknown"))


TokenName = Annotated[str, Depends(token_name)]
