"""banned_domain at MAIL; the connect bans are the ingress's own checks."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject


async def banned_domain(ctx: Context) -> Found:
    """The sender's domain or any parent of it; the reply names the
    sender's own domain, not the entry (SPEC §2)."""
    domain = ctx.sender_domain
    if not domain:
        return PASS
    entry = ctx.lists.domain_in("banned_domains", domain)
    if entry is None:
        return PASS
    return Reject({"domain": domain}, f"banned_domains {entry.value}")
