"""`python -m services.admin`: the admin API on PERIMETER_ADMIN_LISTEN."""

from __future__ import annotations

import logging
import sys

import uvicorn

from services.admin.app import create_app
from services.admin.auth import parse_tokens
from shared import logs
from shared.settings import Environment, split_hostport

log = logging.getLogger("services.admin")


def main() -> int:
    logs.setup("admin")
    env = Environment()
    if not parse_tokens(env.admin_token):
        log.error("PERIMETER_ADMIN_TOKEN is not set; refusing to start")
        return 2
    host, port = split_hostport(env.admin_listen, 8080)
    log.info("admin API listening on %s:%d", host, port)
    uvicorn.run(create_app(env), host=host, port=port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
