"""Address rules at RCPT: bounce_recipients and restricted_characters."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject

# SPEC §3 step 3: characters that route mail in old syntaxes (%-hack,
# bang paths) or smuggle a second address.
_RESTRICTED = frozenset("@%!/|")


async def bounce_recipients(ctx: Context) -> Found:
    """A null sender is a bounce, and a bounce has one recipient (RFC 3464)."""
    if ctx.sender or not ctx.request.recipients:
        return PASS
    return Reject(detail="null sender with a second recipient")


async def restricted_characters(ctx: Context) -> Found:
    local = ctx.recipient.rpartition("@")[0]
    if local.startswith(".") or _RESTRICTED.intersection(local):
        return Reject(detail=f"local part {local!r}")
    return PASS


async def approved(ctx: Context) -> Found:
    """Step 7: approved clients and senders skip RBL, rDNS, sender
    verification and SPF."""
    ctx.approved = bool(
        ctx.lists.ip_in("approved_ips", ctx.client)
        or (ctx.sender and ctx.lists.address_in("approved_senders", ctx.sender))
    )
    return PASS
