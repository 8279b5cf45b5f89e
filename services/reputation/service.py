"""The reputation service: connect, HELO, AUTH, MAIL and RCPT verdicts.

Replicas answer in the NATS queue group `reputation`, so any number of them
share the work; what must agree across them lives in JetStream.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from services.reputation import auth
from services.reputation.context import Context
from services.reputation.events import Events
from services.reputation.recipients import RecipientCallout
from services.reputation.senders import SenderCallout
from services.reputation.stages import STAGES
from services.reputation.tools import Tools
from shared.bus import REPUTATION_GROUP, Bus, stage_subject
from shared.dns import Resolver
from shared.evaluate import evaluate
from shared.lists import seed_defaults
from shared.messages import Outcome, StageRequest, Verdict
from shared.responder import answer
from shared.rules import Stage
from shared.service import start_health, stop_health
from shared.settings import Environment
from shared.store import ensure_store
from shared.watch import StoreView

log = logging.getLogger(__name__)


class Reputation:
    def __init__(self, env: Environment) -> None:
        self.env = env

    async def start(self) -> None:
        self.bus = await Bus.connect(self.env.nats_url, "perimeter-reputation")
        await ensure_store(self.bus.js, self.env.js_replicas)
        await seed_defaults(self.bus.js)
        self.view = StoreView(self.bus.js)
        await self.view.start()
        self.tools = self._tools()
        await self.tools.events.start()
        for stage in STAGES:
            await self.bus.serve(stage_subject(stage), REPUTATION_GROUP, self._answer)
        self._health = await start_health(self.env, lambda: self.bus.connected)

    def _tools(self) -> Tools:
        resolver = Resolver(self.env.nameservers())
        hostname = self.env.hostname
        return Tools(
            resolver=resolver,
            events=Events(self.bus),
            senders=SenderCallout(
                resolver, hostname=hostname, port=self.env.callout_port
            ),
            recipients=RecipientCallout(hostname=hostname),
        )

    async def stop(self) -> None:
        await stop_health(self._health)
        await self.tools.events.stop()
        await self.view.stop()
        await self.bus.close()

    async def _answer(self, msg: Msg) -> None:
        await answer(msg, self.verdict)

    async def verdict(self, request: StageRequest) -> Verdict:
        ctx = Context(request, self.view.lists, self.view.settings, self.tools)
        steps = STAGES[request.stage]
        verdict = await evaluate(steps, ctx, ctx.settings, request.stage.value)
        verdict.results.update(ctx.results)
        if request.stage is Stage.AUTH and verdict.outcome is Outcome.PASS:
            return await auth.credentials(ctx, verdict)
        return verdict
