"""Fixtures of the admin API tests: one real nats-server and one admin
service on free loopback ports for the whole session, an HTTP client with a
token, and a NATS connection of the tests' own."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import nats
import pytest
import uvicorn
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.admin.app import create_app
from shared.settings import Environment
from tests.support.natsserver import NatsServer, free_port

OPS_TOKEN = "ops-token-5f1c8e2a"
AUDITOR_TOKEN = "auditor-token-9b7d3e11"
TOKENS = f"ops:{OPS_TOKEN},auditor:{AUDITOR_TOKEN}"


class AdminServer:
    """The admin app under uvicorn, in a thread with its own event loop."""

    def __init__(self, nats_url: str) -> None:
        env = Environment(nats_url=nats_url, admin_token=TOKENS)
        self.port = free_port()
        config = uvicorn.Config(
            create_app(env, janitor_interval=0.3),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the admin server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin(nats_server: NatsServer) -> Iterator[AdminServer]:
    server = AdminServer(nats_server.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def api(admin: AdminServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with httpx.AsyncClient(base_url=admin.url, headers=headers) as client:
        yield client


@pytest.fixture(scope="session")
async def nc(nats_server: NatsServer, admin: AdminServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()
