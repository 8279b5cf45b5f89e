"""The thin NATS layer every service uses: connect with retries, request a
verdict within a time budget, and the subjects of the stage checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from shared.errors import BusError, VerdictTimeout
from shared.rules import Stage

log = logging.getLogger(__name__)

VERSION = "v1"
REPUTATION_GROUP = "reputation"
CONTENT_GROUP = "content"


def stage_subject(stage: Stage) -> str:
    """The subject on which a stage's verdicts are asked for."""
    return f"perimeter.{VERSION}.stage.{stage.value}"


Handler = Callable[[Msg], Coroutine[Any, Any, None]]


class Bus:
    """One NATS connection and its JetStream context."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10.0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []

    @classmethod
    async def connect(cls, url: str, name: str, attempts: int = 60) -> Bus:
        """Connect, retrying while the server comes up (about a minute)."""
        for attempt in range(1, attempts + 1):
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=_log_error,
                    disconnected_cb=_log_disconnected,
                    reconnected_cb=_log_reconnected,
                )
            except (NoServersError, OSError, NatsTimeout) as exc:
                if attempt == attempts:
                    raise BusError(f"cannot reach NATS at {url}") from exc
                log.info("waiting for NATS at %s (attempt %d)", url, attempt)
                await asyncio.sleep(1.0)
                continue
            log.info("connected to NATS at %s", url)
            return cls(nc)
        raise BusError(f"cannot reach NATS at {url}")

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def request(self, subject: str, payload: bytes, budget: float) -> bytes:
        """Ask once and wait at most `budget` seconds for the answer."""
        try:
            msg = await self.nc.request(subject, payload, timeout=budget)
        except (NatsTimeout, NoRespondersError) as exc:
            raise VerdictTimeout(f"no answer on {subject} in {budget}s") from exc
        except ConnectionClosedError as exc:
            raise BusError("the NATS connection is closed") from exc
        return bytes(msg.data)

    async def serve(self, subject: str, group: str, handler: Handler) -> Subscription:
        """Answer requests on `subject` as one member of a queue group.

        nats-py calls a subscription's callback one message at a time; each
        request gets a task of its own so that one slow DNS lookup does not
        hold the others.
        """
        sub = await self.nc.subscribe(subject, queue=group, cb=self._spawner(handler))
        self._subs.append(sub)
        return sub

    def _spawner(self, handler: Handler) -> Handler:
        async def spawn(msg: Msg) -> None:
            task = asyncio.create_task(handler(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return spawn

    async def close(self) -> None:
        """Stop taking requests, finish those under way, then disconnect."""
        if self.nc.is_closed:
            return
        if not self.nc.is_connected:
            await self.nc.close()
            return
        for sub in self._subs:
            await sub.drain()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        try:
            async with asyncio.timeout(5.0):
                await self.nc.drain()
        except (NatsError, TimeoutError):
            # The server went first (Ctrl-C reaches every process at once):
            # nothing is left to flush to it.
            await self.nc.close()


async def _log_error(exc: Exception) -> None:
    log.warning("NATS error: %s", exc)


async def _log_disconnected() -> None:
    log.warning("disconnected from NATS")


async def _log_reconnected() -> None:
    log.info("reconnected to NATS")
