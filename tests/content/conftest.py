"""Fixtures for the end-of-DATA checks: a real clamd. The loopback DNS
server that serves DKIM keys comes from tests/conftest.py; one instance for
the whole run, so the product and the tests see the same records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clamd import ClamdServer, require_clamd


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[ClamdServer]:
    """One clamd for the run, with the EICAR signature."""
    server = ClamdServer(require_clamd())
    server.start()
    yield server
    server.cleanup()
