"""Running a service as a process: logging, signals, orderly stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from shared import logs, metrics
from shared.settings import Environment

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def run(name: str, factory: Callable[[Environment], Service]) -> None:
    """Start the service and run it until SIGINT or SIGTERM."""
    logs.setup(name)
    asyncio.run(_serve(name, factory(Environment())))


async def _serve(name: str, service: Service) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    log.info("%s started", name)
    await stopping.wait()
    log.info("%s stopping", name)
    await service.stop()
    log.info("%s stopped", name)


async def start_health(
    env: Environment, ready: Callable[[], bool]
) -> asyncio.Server | None:
    """/healthz and /metrics on PERIMETER_METRICS_LISTEN, when it is set."""
    if not env.metrics_listen:
        return None
    return await metrics.serve_health(env.metrics_listen, ready)


async def stop_health(server: asyncio.Server | None) -> None:
    if server is not None:
        server.close()
        await server.wait_closed()
