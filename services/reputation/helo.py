"""helo_required at MAIL (SPEC §3); helo_ip is the ingress's own check."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject


async def helo_required(ctx: Context) -> Found:
    if ctx.request.session.helo:
        return PASS
    return Reject(detail="MAIL before HELO/EHLO")
