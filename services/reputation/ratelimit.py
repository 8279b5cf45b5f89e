"""rate_limit at MAIL: messages per AUTH user, or else per client IP."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, SKIP, Found, Reject
from shared.settings import seconds

KIND = "rate"


async def rate_limit(ctx: Context) -> Found:
    if _exempt(ctx):
        return SKIP
    user = ctx.request.session.user
    key = f"user:{user}" if user else f"ip:{ctx.client}"
    limit = ctx.settings.rate_limit
    window = seconds(limit.period)
    sent = await ctx.tools.events.record_and_count(KIND, key, window)
    if sent <= limit.messages:
        return PASS
    values = {"limit": str(limit.messages), "period": limit.period}
    return Reject(values, f"{sent} messages from {key} in {limit.period}")


def _exempt(ctx: Context) -> bool:
    """SPEC §5: approved clients and senders, and the exemptions list."""
    lists = ctx.lists
    user = ctx.request.session.user
    return bool(
        lists.ip_in("ratelimit_exemptions", ctx.client)
        or (user and lists.user_in("ratelimit_exemptions", user))
        or lists.ip_in("approved_ips", ctx.client)
        or (ctx.sender and lists.address_in("approved_senders", ctx.sender))
    )
