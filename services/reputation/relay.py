"""Relay control at RCPT: SPEC §3 steps 4 to 6."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import ACCEPT, PASS, Found, Reject


async def postmaster(ctx: Context) -> Found:
    """Step 4: postmaster@ a relay domain is always accepted (RFC 5321
    §4.5.1)."""
    local = ctx.recipient.rpartition("@")[0].lower()
    if local == "postmaster" and ctx.lists.relay_domain(ctx.recipient_domain):
        return ACCEPT
    return PASS


async def trusted_client(ctx: Context) -> Found:
    """Step 5: relay networks and authenticated users relay anywhere."""
    if ctx.request.session.user:
        return ACCEPT
    if ctx.lists.ip_in("relay_networks", ctx.client):
        return ACCEPT
    return PASS


async def relay(ctx: Context) -> Found:
    """Step 6: other clients may only send to the relay domains."""
    if ctx.lists.relay_domain(ctx.recipient_domain):
        return PASS
    return Reject(detail=f"{ctx.recipient_domain} is not a relay domain")
