"""dictionary_attack at RCPT (SPEC §3, step 1).

Failed recipients (unknown_recipient, recipient_verification) are counted
per session by the ingress and per client IP over ten minutes in JetStream;
a client past the threshold on either count is refused and disconnected.
"""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject

KIND = "badrcpt"
WINDOW = 600


async def dictionary_attack(ctx: Context) -> Found:
    threshold = ctx.settings.dictionary_threshold
    in_session = ctx.request.session.failed_recipients
    if in_session > threshold:
        return Reject(detail=f"{in_session} failed recipients in this session")
    recent = await ctx.tools.events.count(KIND, ctx.client)
    if recent > threshold:
        return Reject(detail=f"{recent} failed recipients in 10 minutes")
    return PASS


async def record_failure(ctx: Context) -> None:
    await ctx.tools.events.record(KIND, ctx.client, WINDOW)
