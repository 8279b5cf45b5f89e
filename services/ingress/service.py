"""The ingress service: the SMTP listener and the delivery worker."""

from __future__ import annotations

import asyncio
import logging

from services.ingress.decisions import DecisionLog
from services.ingress.delivery import Delivery
from services.ingress.gateway import Gateway
from services.ingress.relay import RelayPool
from services.ingress.smtp import GatewaySMTP
from services.ingress.spool import Spool
from services.ingress.tls import server_context
from shared.bodies import Bodies
from shared.bus import Bus
from shared.dns import Resolver
from shared.lists import seed_defaults
from shared.service import start_health, stop_health
from shared.settings import Environment, split_hostport
from shared.store import ensure_store
from shared.watch import StoreView

log = logging.getLogger(__name__)


class Ingress:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        env = self.env
        self.bus = await Bus.connect(env.nats_url, "perimeter-ingress")
        await ensure_store(self.bus.js, env.js_replicas)
        await seed_defaults(self.bus.js)
        self.view = StoreView(self.bus.js)
        await self.view.start()
        self.spool = Spool(self.bus)
        self.bodies = Bodies(self.bus)
        await self.bodies.start()
        self.decisions = DecisionLog(self.bus)
        self.decisions.start()
        self.gateway = Gateway(
            env, self.bus, self.view, self.spool, self.bodies, self.decisions
        )
        self.pool = RelayPool(env.hostname)
        self.resolver = Resolver(env.nameservers())
        self.delivery = Delivery(
            env, self.bus, self.view, self.spool, self.bodies, self.pool, self.resolver
        )
        await self.delivery.start()
        await self._listen()
        self._health = await start_health(env, lambda: self.bus.connected)

    async def _listen(self) -> None:
        tls = server_context(self.env.tls_cert, self.env.tls_key, self.env.hostname)
        host, port = split_hostport(self.env.smtp_listen, 2525)

        def session() -> GatewaySMTP:
            return GatewaySMTP(
                self.gateway,
                hostname=self.env.hostname,
                ident="ESMTP Perimeter",
                tls_context=tls,
                data_size_limit=None,
                enable_SMTPUTF8=True,
                timeout=self.view.settings.command_timeout,
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(session, host, port)
        log.info("SMTP listening on %s:%d", host, port)

    async def stop(self) -> None:
        await stop_health(self._health)
        if self._server is not None:
            self._server.close()
        for session in list(self.gateway.sessions):
            session.shut_down()
        await self.delivery.stop()
        await self.decisions.stop()
        await self.pool.close()
        await self.resolver.aclose()
        await self.view.stop()
        await self.bus.close()
