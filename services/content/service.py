"""The content service: end-of-DATA verdicts, in the queue group `content`.

Scanning is CPU work, so this is the service that scales out: every replica
joins the same queue group and NATS spreads the messages among them. A
replica that dies or stalls with a message in hand never answers; the
ingress's DATA budget runs out and the client gets 451 4.3.0, so no message
is accepted unscanned.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from services.content.antivirus import Clamd, ClamdUnavailable
from services.content.context import Context, Scanners
from services.content.dkim import resolver_txt_lookup
from services.content.stages import DATA_STEPS
from shared.bodies import Bodies
from shared.bus import CONTENT_GROUP, Bus, stage_subject
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

# How long the start-up PING may take before clamd is reported silent.
_PING_SECONDS = 2.0


class Content:
    def __init__(self, env: Environment) -> None:
        self.env = env

    async def start(self) -> None:
        self.resolver = Resolver(self.env.nameservers())
        clamd = await _clamd(self.env)
        self.scanners = Scanners(clamd, resolver_txt_lookup(self.resolver))
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
        await self.resolver.aclose()

    async def _answer(self, msg: Msg) -> None:
        await answer(msg, self.verdict)

    async def verdict(self, request: StageRequest) -> Verdict:
        # Every rule reads this same object; none copies it whole.
        message = request.body or b""
        if request.body_ref:
            try:
                message = await self.bodies.get(request.body_ref)
            except NotFoundError:
                # The ingress dropped it: its budget ran out, nobody waits.
                log.warning("body %s is gone; no verdict", request.body_ref)
                return Verdict(Outcome.TEMPFAIL)
        view = self.view
        ctx = Context(request, message, view.lists, view.settings, self.scanners)
        verdict = await evaluate(DATA_STEPS, ctx, ctx.settings, "data")
        verdict.results.update(ctx.results)
        return verdict


async def _clamd(env: Environment) -> Clamd | None:
    """The clamd of PERIMETER_CLAMD; None, with the one warning SPEC §7
    asks for, when it is unset. A clamd that does not answer yet is only
    reported: scans get 451 until it does."""
    if not env.clamd:
        log.warning("PERIMETER_CLAMD is not set: antivirus scanning is off")
        return None
    clamd = Clamd(env.clamd)
    try:
        async with asyncio.timeout(_PING_SECONDS):
            await clamd.ping()
    except (ClamdUnavailable, TimeoutError) as exc:
        log.warning("clamd at %s does not answer yet: %s", clamd.address, exc)
    else:
        log.info("antivirus scans with clamd at %s", clamd.address)
    return clamd
