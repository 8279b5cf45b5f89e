"""Fixtures shared by the end-to-end tests: the product on free loopback
ports with its own nats-server, a DNS server on loopback, a route."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.clamd import ClamdServer, clamd_binary, require_clamd
from tests.support.dnsserver import (  # noqa: F401
    DnsServer,
    dns_server,
    dns_server_session,
    resolver,
)
from tests.support.natsserver import free_port
from tests.support.operator import Operator
from tests.support.sink import Sink
from tests.support.stack import Product, product

_names = itertools.count(1)
# Where other domains' mail hosts listen in the tests (PERIMETER_MX_PORT):
# every mail exchanger the test DNS names is on loopback at this port.
MX_PORT = free_port()


# The part of the DNS every end-to-end test relies on: the loopback client
# has a PTR that confirms forward, and the senders the tests use have mail
# hosts. Everything else answers NXDOMAIN, the DNSBLs included.
WORLD = [
    ("127.0.0.1", "PTR", "localhost."),
    ("localhost", "A", "127.0.0.1"),
    ("sender.example", "MX", "10 mx.sender.example."),
    ("mx.sender.example", "A", "192.0.2.25"),
    ("x.example", "A", "192.0.2.26"),
]


@pytest.fixture(scope="session")
def gateway(dns_server_session: DnsServer) -> Iterator[Product]:  # noqa: F811
    """One running product for the end-to-end tests that share it."""
    dns_server_session.baseline(WORLD)
    # A real clamd with the EICAR signature. Without clamav-daemon the
    # product runs without antivirus, as SPEC §7 allows, and the tests that
    # need clamd skip; under CI a missing clamd fails (require_clamd).
    found = clamd_binary() or os.environ.get("CI")
    clamd = ClamdServer(require_clamd()) if found else None
    antivirus = {"PERIMETER_CLAMD": clamd.address} if clamd else {}
    if clamd:
        clamd.start()
    # Two replicas of each worker: shared counters, bans and list changes
    # must hold across them (SPEC §1), and every end-to-end test exercises
    # that.
    running = product(
        dns_port=dns_server_session.address[1],
        replicas={"reputation": 2, "content": 2},
        PERIMETER_MX_PORT=str(MX_PORT),
        **antivirus,
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        running.nats.stop()
        if clamd:
            clamd.cleanup()


@pytest.fixture(scope="session")
async def operator(gateway: Product) -> AsyncIterator[Operator]:
    client = Operator(gateway)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def route() -> AsyncIterator[Sink]:
    """The organisation's mail server behind the gateway."""
    sink = Sink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture(scope="session")
async def mail_exchanger() -> AsyncIterator[Sink]:
    """Another organisation's mail host, reached through its MX records."""
    sink = Sink(port=MX_PORT)
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def relay_domain(operator: Operator, route: Sink) -> str:
    """A fresh relay domain delivered to `route`, unique to the test."""
    name = f"d{next(_names)}.example"
    await operator.add("relay_domains", name, route=route.route, verify="none")
    return name


@pytest.fixture
def unique() -> str:
    """A short token no other test uses, for addresses and subjects."""
    return f"u{next(_names)}"
