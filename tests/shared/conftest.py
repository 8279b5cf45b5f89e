"""Fixtures for the shared modules' tests."""

from tests.support.dnsserver import (  # noqa: F401
    dns_server,
    dns_server_session,
    resolver,
)
