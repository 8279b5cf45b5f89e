"""The admin API application (SPEC §6).

`create_app(env)` builds the FastAPI app. Its lifespan connects to NATS
(retrying while the server comes up), creates the streams and buckets,
writes the defaults of SPEC §5 on the very first start, and runs the
janitor that deletes expired list entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.admin import audit, decisions, lists, queue, settings
from services.admin.auth import BearerAuth, TokenCheck, parse_tokens
from services.admin.janitor import Janitor
from services.admin.problems import install
from services.admin.runtime import Runtime
from shared.bus import Bus
from shared.lists import seed_defaults
from shared.settings import Environment
from shared.store import ensure_store

log = logging.getLogger(__name__)

DESCRIPTION = """
The operator's API of Perimeter: the lists of SPEC §5, the settings, the
decision records of recent SMTP transactions, the mail queue, and the audit
trail.

Every call under `/api/v1` needs `Authorization: Bearer <token>`, a token of
`PERIMETER_ADMIN_TOKEN`. Errors answer with `{"detail": ..., "errors": [...]}`.
A change is in force on every worker within 2 seconds.
"""


class Health(BaseModel):
    status: str


def create_app(env: Environment, *, janitor_interval: float = 5.0) -> FastAPI:
    """The admin API for this environment."""
    app = FastAPI(
        title="Perimeter admin API",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan(env, janitor_interval),
    )
    install(app)
    for module in (lists, settings, decisions, queue, audit):
        app.include_router(module.router)
    app.add_api_route(
        "/healthz",
        healthz,
        tags=["health"],
        summary="200 when the service reaches NATS",
        response_model=Health,
        responses={503: {"model": Health, "description": "NATS unreachable"}},
    )
    app.add_api_route(
        "/metrics",
        metrics,
        tags=["health"],
        summary="Prometheus metrics of this process (no token)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    app.add_middleware(BearerAuth, check=TokenCheck(parse_tokens(env.admin_token)))
    return app


async def healthz(request: Request) -> Any:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None and runtime.bus.connected:
        return Health(status="ok")
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _lifespan(
    env: Environment, interval: float
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus = await Bus.connect(env.nats_url, "perimeter-admin")
        try:
            await ensure_store(bus.js)
            await seed_defaults(bus.js)
            runtime = await Runtime.open(bus)
            janitor = Janitor(runtime.entries.kv, runtime.audit, interval)
            async with _running(janitor.run()):
                app.state.runtime = runtime
                log.info("admin API ready")
                yield
        finally:
            app.state.runtime = None
            await _close(bus)

    return lifespan


async def _close(bus: Bus) -> None:
    """Drain the connection; if NATS is gone, just close it."""
    try:
        await bus.close()
    except NatsError as exc:
        log.warning("could not drain the NATS connection: %r", exc)
        with suppress(NatsError, OSError):
            await bus.nc.close()


@asynccontextmanager
async def _running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` as a task for the life of the block, then cancel it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
