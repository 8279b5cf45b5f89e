"""The content service: end-of-DATA verdicts, in the queue group `content`.

Scanning is CPU work, so this is the service that scales out: every replica
joins the same queue group and NATS spreads the messages among them.
"""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from services.content.context import Context
from services.content.stages import DATA_STEPS
from shared import metrics
from shared.bodies import Bodies
from shared.bus import CONTENT_GROUP, Bus, stage_subject
from shared.evaluate import evaluate
from shared.lists import seed_defaults
from shared.logs import session_id
from shared.messages import Outcome, StageRequest, Verdict, WireError
from shared.rules import Stage
from shared.service import start_health, stop_health
from shared.settings import Environment
from shared.store import ensure_store
from shared.watch import StoreView

log = logging.getLogger(__name__)


class Content:
    def __init__(self, env: Environment) -> None:
        self.env = env

    async def start(self) -> None:
        self.bus = await Bus.connect(self.env.nats_url, "perimeter-content")
        await ensure_store(self.bus.js, self.env.js_replicas)
        await seed_defaults(self.bus.js)
        self.view = StoreView(self.bus.js)
        await self.view.start()
        self.bodies = Bodies(self.bus)
        await self.bodies.start()
        subject = stage_subject(Stage.DATA)
        await self.bus.serve(subject, CONTENT_GROUP, self._answer)
        self._health = await start_health(self.env, lambda: self.bus.connected)

    async def stop(self) -> None:
        await stop_health(self._health)
        await self.view.stop()
        await self.bus.close()

    async def _answer(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            request = StageRequest.decode(msg.data)
        except WireError:
            log.warning("unreadable request on %s", msg.subject)
            await msg.respond(Verdict(Outcome.TEMPFAIL).encode())
            return
        session_id.set(request.session.id)
        verdict = await self.verdict(request)
        await msg.respond(verdict.encode())
        metrics.STAGE_SECONDS.labels(stage="data").observe(
            time.perf_counter() - started
        )

    async def verdict(self, request: StageRequest) -> Verdict:
        message = request.body or b""
        if request.body_ref:
            message = await self.bodies.get(request.body_ref)
        ctx = Context(request, message, self.view.lists, self.view.settings)
        verdict = await evaluate(DATA_STEPS, ctx, ctx.settings, "data")
        verdict.results.update(ctx.results)
        return verdict
