"""Recipient existence at RCPT (SPEC §3, step 10), by the relay domain's
`verify`: `list` asks valid_recipients, `callout` asks the route."""

from __future__ import annotations

from services.reputation.context import Context
from services.reputation.dictionary import record_failure
from services.reputation.recipients import RecipientStatus
from shared.evaluate import PASS, SKIP, Found, Reject
from shared.rules import Rule


async def unknown_recipient(ctx: Context) -> Found:
    domain = ctx.lists.relay_domain(ctx.recipient_domain)
    if domain is None or domain.verify != "list":
        return SKIP
    if ctx.lists.recipient_valid(ctx.recipient):
        return PASS
    await _count_failure(ctx, Rule.UNKNOWN_RECIPIENT)
    return Reject(detail="not in valid_recipients")


async def recipient_verification(ctx: Context) -> Found:
    """5xx from the route rejects; 4xx or no answer accepts (SPEC §3)."""
    domain = ctx.lists.relay_domain(ctx.recipient_domain)
    if domain is None or domain.verify != "callout":
        return SKIP
    result = await ctx.tools.recipients.verify(domain.route, ctx.recipient)
    if result.status is not RecipientStatus.REJECTS:
        return PASS
    await _count_failure(ctx, Rule.RECIPIENT_VERIFICATION)
    return Reject(detail=f"route answered {result.code}")


async def _count_failure(ctx: Context, rule: Rule) -> None:
    """Only a recipient actually refused counts towards dictionary_attack."""
    if ctx.settings.mode(rule) == "enforce":
        await record_failure(ctx)
