"""Answering stage requests: decode, decide, reply, whatever happens.

A worker that fails to decide still answers, with a temporary failure, so
the client hears 451 4.3.0 at once instead of after the whole time budget;
the detail goes to the log, never to the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from shared import metrics
from shared.logs import session_id
from shared.messages import Check, Outcome, Result, StageRequest, Verdict, WireError

log = logging.getLogger(__name__)

Decide = Callable[[StageRequest], Awaitable[Verdict]]


async def answer(msg: Msg, decide: Decide) -> None:
    started = time.perf_counter()
    try:
        request = StageRequest.decode(msg.data)
    except WireError:
        log.warning("unreadable request on %s", msg.subject)
        await msg.respond(Verdict(Outcome.TEMPFAIL).encode())
        return
    session_id.set(request.session.id)
    try:
        verdict = await decide(request)
    except Exception:
        log.exception("%s verdict failed", request.stage.value)
        ms = (time.perf_counter() - started) * 1000
        check = Check(request.stage.value, Result.ERROR, ms, "internal error")
        verdict = Verdict(Outcome.TEMPFAIL, checks=[check])
    await msg.respond(verdict.encode())
    elapsed = time.perf_counter() - started
    metrics.STAGE_SECONDS.labels(stage=request.stage.value).observe(elapsed)
