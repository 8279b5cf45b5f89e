"""Fixtures for the end-of-DATA checks: a real clamd, and the loopback DNS
server that serves DKIM keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clamd import ClamdServer, require_clamd
from tests.support.dnsserver import (  # noqa: F401
    dns_server,
    dns_server_session,
    resolver,
)


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[ClamdServer]:
    """One clamd for the run, with the EICAR signature."""
    server = ClamdServer(require_clamd())
    server.start()
    yield server
    server.cleanup()
