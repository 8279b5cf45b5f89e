"""Logging set-up: every line carries the SMTP session id it belongs to.

The id lives in a ContextVar, so each asyncio task of a session logs it
without passing it around (STYLE: one INFO line per transaction outcome).
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar

session_id: ContextVar[str] = ContextVar("session_id", default="-")

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(session)s] %(message)s"


class _SessionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session = session_id.get()
        return True


def setup(service: str) -> None:
    """Log to stdout at PERIMETER_LOG_LEVEL (INFO by default)."""
    handler = logging.StreamHandler()
    handler.addFilter(_SessionFilter())
    handler.setFormatter(logging.Formatter(f"{service} {_FORMAT}"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("PERIMETER_LOG_LEVEL", "INFO").upper())
    # The libraries below log every connection at INFO; that is wire detail.
    for noisy in ("mail.log", "nats", "aiosmtplib", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
